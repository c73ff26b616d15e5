//! The cluster seam: what a hub shares with the other nodes of a cluster
//! besides the log — presence, join/leave, WebRTC signals between members
//! on different nodes, and disconnecting a user everywhere. A single node
//! has no [`Cluster`]; with `--broker` the Redis broker is one.
//!
//! The hub calls out through [`Cluster`] and hears back through
//! [`Inbound`], which its fan-out implements: the events other nodes send
//! reach this node's connections exactly as local ones do.
//!
//! A **survey** asks every live node one [`Question`] and gathers their
//! answers ([`Cluster::survey`]): what the server API reports of the whole
//! cluster (channels, nodes, a user's connections). Each node answers
//! through its [`Responder`], which the server plugs in, so facts only the
//! server knows (connections' transports and addresses) can answer. A node
//! that does not answer within [`SURVEY_TIMEOUT`] is named missing; the
//! survey still answers.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::listing::ChannelQuery;
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

    /// Sets what this node answers to surveys (the server's facts).
    fn answer_with(&self, responder: Arc<dyn Responder>);

    /// Puts `question` to every live node, this one included, and gathers
    /// their answers until all answered or [`SURVEY_TIMEOUT`] passed.
    async fn survey(&self, question: &Question) -> Result<Survey, Error>;
}

/// How long a survey waits for the other nodes' answers.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a survey asks every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "q", rename_all = "lowercase")]
pub enum Question {
    /// Its page of channels with subscribers.
    Channels(ChannelQuery),
    /// Its version, uptime and counts.
    Info,
    /// The live connections of a user.
    Connections {
        /// The user's id.
        user: String,
    },
}

/// The answering side of a survey: what this node says to a question.
pub trait Responder: Send + Sync {
    /// This node's answer, as JSON.
    fn answer(&self, question: &Question) -> serde_json::Value;
}

/// The answers of a survey, by node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    /// Each node's answer, by node number.
    pub answers: Vec<(u64, serde_json::Value)>,
    /// The live nodes that did not answer in time.
    pub missing: Vec<u64>,
}

/// The surveys of a node that wait for answers (no I/O: the caller
/// sends the question and hands over the answers that come back).
#[derive(Default)]
pub struct Surveys {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Gathering>>,
}

#[derive(Default)]
struct Gathering {
    /// The nodes still to answer.
    waiting: BTreeSet<u64>,
    answers: Vec<(u64, serde_json::Value)>,
    waker: Option<Waker>,
}

impl Surveys {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Gathering>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new survey waiting for `nodes`; its id.
    pub fn start(&self, nodes: impl IntoIterator<Item = u64>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let gathering = Gathering {
            waiting: nodes.into_iter().collect(),
            ..Default::default()
        };
        self.pending().insert(id, gathering);
        id
    }

    /// Node `node`'s answer to survey `id` (ignored when the survey is
    /// over or did not wait for that node).
    pub fn answered(&self, id: u64, node: u64, answer: serde_json::Value) {
        let mut pending = self.pending();
        let Some(g) = pending.get_mut(&id) else {
            return;
        };
        if g.waiting.remove(&node) {
            g.answers.push((node, answer));
            if g.waiting.is_empty() {
                if let Some(w) = g.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Ready once every node survey `id` waits for answered.
    pub fn poll_complete(&self, id: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = self.pending();
        match pending.get_mut(&id) {
            Some(g) if !g.waiting.is_empty() => {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// [`Surveys::poll_complete`] as a future.
    pub async fn complete(&self, id: u64) {
        std::future::poll_fn(|cx| self.poll_complete(id, cx)).await
    }

    /// Ends survey `id`: the answers so far, with `own` (this node's), by
    /// node, and the nodes that did not answer.
    pub fn finish(&self, id: u64, own: (u64, serde_json::Value)) -> Survey {
        let g = self.pending().remove(&id).unwrap_or_default();
        let mut answers = g.answers;
        answers.push(own);
        answers.sort_by_key(|(node, _)| *node);
        Survey {
            answers,
            missing: g.waiting.into_iter().collect(),
        }
    }
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
    /// A survey's question, to every node.
    Ask {
        id: u64,
        from: u64,
        question: Question,
    },
    /// A node's answer, to the node that asked.
    Answer {
        id: u64,
        node: u64,
        answer: serde_json::Value,
    },
}

/// A survey's question as the text nodes exchange: `id` of node `from`.
pub fn encode_ask(id: u64, from: u64, question: &Question) -> String {
    serde_json::to_string(&Notice::Ask {
        id,
        from,
        question: question.clone(),
    })
    .expect("a notice serializes")
}

/// Node `node`'s answer to survey `id` as the text nodes exchange.
pub fn encode_answer(id: u64, node: u64, answer: serde_json::Value) -> String {
    serde_json::to_string(&Notice::Answer { id, node, answer }).expect("a notice serializes")
}

/// What [`deliver`] leaves to the cluster: the survey notices.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// Handed to the hub.
    Done,
    /// Node `from` asks `question` in its survey `id`.
    Asked {
        /// The survey, among the asking node's.
        id: u64,
        /// The asking node, where the answer goes.
        from: u64,
        /// What it asks.
        question: Question,
    },
    /// Node `node` answered survey `id`.
    Answered {
        /// The survey, among this node's.
        id: u64,
        /// The node that answered.
        node: u64,
        /// Its answer.
        answer: serde_json::Value,
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
/// channel whose announcements carried it (for a join or leave). A
/// survey's notice is returned for the cluster to handle. Text that is no
/// notice is an `Err` the caller logs.
pub fn deliver(
    inbound: &dyn Inbound,
    channel: Option<&ChannelName>,
    text: &[u8],
) -> Result<Delivered, &'static str> {
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
        (Notice::Ask { id, from, question }, None) => {
            return Ok(Delivered::Asked { id, from, question })
        }
        (Notice::Answer { id, node, answer }, None) => {
            return Ok(Delivered::Answered { id, node, answer })
        }
        (Notice::Ask { .. } | Notice::Answer { .. }, Some(_)) => {
            return Err("a survey notice on a channel")
        }
    }
    Ok(Delivered::Done)
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

    #[test]
    fn survey_notices_round_trip_and_are_left_to_the_cluster() {
        let heard = Heard::default();
        let q = Question::Connections {
            user: "al\"ice".into(),
        };
        let asked = deliver(&heard, None, encode_ask(4, 9, &q).as_bytes()).unwrap();
        assert_eq!(
            asked,
            Delivered::Asked {
                id: 4,
                from: 9,
                question: q
            }
        );
        let page = Question::Channels(
            ChannelQuery::new(Some("chat:*"), None, 5, super::super::listing::Order::Name).unwrap(),
        );
        let text = encode_ask(1, 2, &page);
        assert!(matches!(
            deliver(&heard, None, text.as_bytes()),
            Ok(Delivered::Asked { question, .. }) if question == page
        ));
        let answer = serde_json::json!({"x": [1]});
        let back = encode_answer(4, 3, answer.clone());
        assert_eq!(
            deliver(&heard, None, back.as_bytes()),
            Ok(Delivered::Answered {
                id: 4,
                node: 3,
                answer
            })
        );
        let ch = ChannelName::new("a").unwrap();
        assert!(deliver(&heard, Some(&ch), back.as_bytes()).is_err());
        assert!(heard.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_survey_completes_when_every_node_answered_and_names_the_missing() {
        let surveys = Surveys::default();
        let mut cx = Context::from_waker(Waker::noop());
        let id = surveys.start([2, 3]);
        assert!(surveys.poll_complete(id, &mut cx).is_pending());
        surveys.answered(id, 3, serde_json::json!(3));
        surveys.answered(id, 7, serde_json::json!(7)); // not asked
        surveys.answered(id + 1, 2, serde_json::json!(0)); // another survey
        assert!(surveys.poll_complete(id, &mut cx).is_pending());
        let partial = surveys.finish(id, (1, serde_json::json!(1)));
        assert_eq!(
            partial.answers,
            [(1, serde_json::json!(1)), (3, serde_json::json!(3))]
        );
        assert_eq!(partial.missing, [2]);
        let id = surveys.start([2]);
        surveys.answered(id, 2, serde_json::json!(2));
        assert!(surveys.poll_complete(id, &mut cx).is_ready());
        assert!(surveys
            .finish(id, (1, serde_json::json!(1)))
            .missing
            .is_empty());
        assert!(
            surveys.pending().is_empty(),
            "finished surveys are forgotten"
        );
    }
}
