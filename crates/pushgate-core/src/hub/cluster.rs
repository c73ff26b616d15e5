//! The cluster seam: what a hub shares with the other nodes of a cluster
//! besides the log — presence, join/leave, WebRTC signals between members
//! on different nodes, and disconnecting a user everywhere. A single node
//! has no [`Cluster`]; with `--broker` the Redis broker is one.
//!
//! The hub calls out through [`Cluster`] and hears back through
//! [`Inbound`], which its fan-out implements: the events other nodes send
//! reach this node's connections exactly as local ones do.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::presence::Member;
use super::SubscriberId;
use crate::auth::UserId;
use crate::channel::ChannelName;
use crate::error::Error;
use crate::json::SafeJson;
use crate::rtc::ClientKeys;

/// Bits of a connection id below its node's number: a node numbers its
/// connections `node << NODE_SHIFT | n`, so ids are unique in the cluster
/// and say which node holds the connection. Ids are strings on the wire;
/// they stay below 2^56 all the same.
pub const NODE_SHIFT: u32 = 40;

/// The node that holds connection `id`.
pub fn node_of(id: SubscriberId) -> u64 {
    id >> NODE_SHIFT
}

/// What the hub asks of the other nodes. Calls that wait talk to the
/// shared store; their failures are `unavailable` errors. The others only
/// queue, and may be called under the hub's locks.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This node's number, above 0.
    fn node(&self) -> u64;

    /// Registers where other nodes' events go (the hub's fan-out).
    fn attach(&self, inbound: Arc<dyn Inbound>);

    /// The keys that prove a connection's id in its signals, the same on
    /// every node (a member may signal over `POST /command` to any node);
    /// `None` until the cluster has agreed on them.
    fn client_keys(&self) -> Option<ClientKeys>;

    /// Member `id` (of `user`) joined `channel` here: listed in the
    /// cluster's presence before this returns, and, when `announce`, a
    /// `join` to the other nodes' subscribers.
    async fn joined(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
        user: Option<&UserId>,
        announce: bool,
    ) -> Result<(), Error>;

    /// Member `id` left `channel` here (queued: may run under a lock).
    fn left(&self, channel: &ChannelName, id: SubscriberId, user: Option<&UserId>, announce: bool);

    /// Waits until the leaves queued so far are out: a node that stops
    /// cleanly unlists its members, and the other nodes' subscribers hear
    /// them leave, before it exits.
    async fn flush(&self);

    /// Every member of `channel` in the cluster, this node's included.
    /// Members whose listing ended are unlisted on the way, with a leave
    /// to every node's subscribers when `announce`.
    async fn members(&self, channel: &ChannelName, announce: bool) -> Result<Vec<Member>, Error>;

    /// Member `id`'s user when `id` (on another node) is a member of
    /// `channel` now; `None` when it is not.
    async fn member(
        &self,
        channel: &ChannelName,
        id: SubscriberId,
    ) -> Result<Option<Option<UserId>>, Error>;

    /// Hands a signal to the node of its target, `signal.to`.
    async fn relay(&self, signal: RelayedSignal) -> Result<(), Error>;

    /// Whether another node has subscribers of `channel`.
    async fn followed_elsewhere(&self, channel: &ChannelName) -> Result<bool, Error>;

    /// Tells every other node to end `user`'s connections and refuse its
    /// tokens issued until `at` (seconds).
    async fn disconnect(&self, user: &UserId, at: u64) -> Result<(), Error>;

    /// Whether this node is the one to do `job`: the first node to claim
    /// it, until `ttl_ms` has passed. For what one node of the cluster
    /// does for all (the demo's clock ticks).
    async fn claim(&self, job: &str, ttl_ms: u64) -> Result<bool, Error>;

    /// Keeps this node's members listed: the cluster forgets a member its
    /// node has not renewed for a while, which is how a crashed node's
    /// members leave (announced, on channels that announce). Called
    /// periodically with every member here.
    async fn renew(&self, members: Vec<Listed>);
}

/// A channel's members on this node, for [`Cluster::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The channel.
    pub channel: ChannelName,
    /// Whether the channel announces joins and leaves.
    pub announce: bool,
    /// Its members here.
    pub members: Vec<Member>,
}

/// What other nodes tell this one's hub.
pub trait Inbound: Send + Sync {
    /// A member on another node joined (`joined`) or left `channel`.
    fn presence(
        &self,
        channel: &ChannelName,
        joined: bool,
        id: SubscriberId,
        user: Option<&UserId>,
    );

    /// A signal for member `to` of `room`, here (dropped unless `to` is
    /// a member now).
    fn signal(&self, signal: RelayedSignal);

    /// End `user`'s connections here and refuse its tokens issued until
    /// `at`.
    fn disconnect(&self, user: &UserId, at: u64);
}

/// A signal on its way from one member of a room to another on another
/// node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedSignal {
    /// The room.
    pub room: ChannelName,
    /// The sender, a member.
    pub from: SubscriberId,
    /// The sender's user.
    pub user: Option<UserId>,
    /// The target, a member on another node.
    pub to: SubscriberId,
    /// What it says.
    pub data: SafeJson,
}

/// A message between nodes, as JSON text: a join or leave on a channel's
/// own announcements, a signal to a node, a disconnect to all.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Notice<'a> {
    Join {
        id: SubscriberId,
        #[serde(borrow)]
        user: Option<Cow<'a, str>>,
    },
    Leave {
        id: SubscriberId,
        #[serde(borrow)]
        user: Option<Cow<'a, str>>,
    },
    Signal {
        #[serde(borrow)]
        room: Cow<'a, str>,
        from: SubscriberId,
        to: SubscriberId,
        #[serde(borrow)]
        user: Option<Cow<'a, str>>,
        /// The JSON text (a string: serde's tagged enums cannot carry raw JSON).
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    Disconnect {
        #[serde(borrow)]
        user: Cow<'a, str>,
        at: u64,
    },
}

/// A join or leave as the text nodes exchange.
pub fn encode_presence(joined: bool, id: SubscriberId, user: Option<&UserId>) -> String {
    let user = user.map(|u| Cow::Borrowed(&**u));
    let notice = match joined {
        true => Notice::Join { id, user },
        false => Notice::Leave { id, user },
    };
    serde_json::to_string(&notice).expect("a notice serializes")
}

/// A relayed signal as the text nodes exchange.
pub fn encode_signal(s: &RelayedSignal) -> String {
    serde_json::to_string(&Notice::Signal {
        room: Cow::Borrowed(s.room.as_str()),
        from: s.from,
        to: s.to,
        user: s.user.as_deref().map(Cow::Borrowed),
        data: Cow::Borrowed(s.data.as_str()),
    })
    .expect("a notice serializes")
}

/// A disconnect as the text nodes exchange.
pub fn encode_disconnect(user: &UserId, at: u64) -> String {
    serde_json::to_string(&Notice::Disconnect {
        user: Cow::Borrowed(user),
        at,
    })
    .expect("a notice serializes")
}

/// Hands a notice from another node to `inbound`: `channel` is the
/// channel whose announcements carried it (for a join or leave). Text
/// that is no notice is an `Err` the caller logs.
pub fn deliver(
    inbound: &dyn Inbound,
    channel: Option<&ChannelName>,
    text: &[u8],
) -> Result<(), &'static str> {
    let notice: Notice = serde_json::from_slice(text).map_err(|_| "not a notice")?;
    let user = |u: Option<Cow<str>>| u.map(|u| UserId::from(&*u));
    match (notice, channel) {
        (Notice::Join { id, user: u }, Some(ch)) => {
            inbound.presence(ch, true, id, user(u).as_ref())
        }
        (Notice::Leave { id, user: u }, Some(ch)) => {
            inbound.presence(ch, false, id, user(u).as_ref())
        }
        (Notice::Join { .. } | Notice::Leave { .. }, None) => {
            return Err("a join or leave off its channel")
        }
        (
            Notice::Signal {
                room,
                from,
                to,
                user: u,
                data,
            },
            _,
        ) => inbound.signal(RelayedSignal {
            room: ChannelName::new(&room).map_err(|_| "a signal to an invalid room")?,
            from,
            user: user(u),
            to,
            data: SafeJson::parse(data.as_bytes()).map_err(|_| "a signal with bad data")?,
        }),
        (Notice::Disconnect { user: u, at }, _) => inbound.disconnect(&UserId::from(&*u), at),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl Inbound for Heard {
        fn presence(
            &self,
            ch: &ChannelName,
            joined: bool,
            id: SubscriberId,
            user: Option<&UserId>,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{ch} {joined} {id} {user:?}"));
        }
        fn signal(&self, s: RelayedSignal) {
            self.0.lock().unwrap().push(format!(
                "signal {} {}→{} {:?} {}",
                s.room,
                s.from,
                s.to,
                s.user,
                s.data.as_str()
            ));
        }
        fn disconnect(&self, user: &UserId, at: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("disconnect {user} {at}"));
        }
    }

    #[test]
    fn notices_round_trip_and_bad_ones_are_refused() {
        let heard = Heard::default();
        let ch = ChannelName::new("room:a").unwrap();
        let alice: UserId = Arc::from("al\"ice");
        deliver(
            &heard,
            Some(&ch),
            encode_presence(true, 1 << 40 | 7, Some(&alice)).as_bytes(),
        )
        .unwrap();
        deliver(
            &heard,
            Some(&ch),
            encode_presence(false, 9, None).as_bytes(),
        )
        .unwrap();
        let signal = RelayedSignal {
            room: ch.clone(),
            from: 3,
            user: None,
            to: 4,
            data: SafeJson::parse(br#"{"sdp":"<v=0>"}"#).unwrap(),
        };
        deliver(&heard, None, encode_signal(&signal).as_bytes()).unwrap();
        deliver(&heard, None, encode_disconnect(&alice, 99).as_bytes()).unwrap();
        assert_eq!(
            *heard.0.lock().unwrap(),
            [
                format!("room:a true {} Some(\"al\\\"ice\")", 1u64 << 40 | 7),
                "room:a false 9 None".to_owned(),
                format!("signal room:a 3→4 None {}", signal.data.as_str()),
                "disconnect al\"ice 99".to_owned(),
            ]
        );
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"{\"t\":\"join\",\"id\":-1,\"user\":null}",
        ] {
            assert!(deliver(&heard, Some(&ch), bad).is_err(), "{bad:?}");
        }
        let off_channel = encode_presence(true, 1, None);
        assert!(deliver(&heard, None, off_channel.as_bytes()).is_err());
        let bad_room = br#"{"t":"signal","room":"","from":1,"to":2,"user":null,"data":"1"}"#;
        assert!(deliver(&heard, None, bad_room).is_err());
    }
}
