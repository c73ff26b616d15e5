//! Rooms: channels whose namespace has `signal = true`. Membership is
//! presence (a room's members are its presence), and the hub relays a
//! WebRTC `signal` from one member to another under the same lock that
//! adds and removes members: a signal reaches its target only while both
//! are in the room, and a refused one reaches nobody.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::auth::UserId;
use crate::channel::ChannelName;
use crate::error::{Error, ErrorKind};
use crate::json::{self, SafeJson};
use crate::sync::lock;

use super::live::LiveEvent;
use super::presence::{push_members, Member};
use super::{Hub, OutboxEvent, SubscriberId};

/// What a connection learns when it joins a room, in its `subscribed`
/// reply: who it is, the others already there, and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomJoin {
    /// Its own id, as the other members see it.
    pub client: SubscriberId,
    /// The key that proves `client` when it signals over `POST /command`.
    pub client_key: String,
    /// The other members when it joined, sorted by id: with the `join` and
    /// `leave` events that follow the reply, exactly the room.
    pub members: Vec<Member>,
    /// The `iceServers` of an `RTCConfiguration`, as JSON.
    pub ice_servers: String,
}

impl RoomJoin {
    /// Appends `,"room":{"client":…,"client_key":…,"members":[…],"ice_servers":[…]}`.
    pub fn push_field(&self, out: &mut String) {
        let _ = write!(out, ",\"room\":{{\"client\":\"{}\"", self.client);
        out.push_str(",\"client_key\":");
        json::push_string(out, &self.client_key);
        out.push_str(",\"members\":");
        push_members(out, &self.members);
        out.push_str(",\"ice_servers\":");
        out.push_str(&self.ice_servers);
        out.push('}');
    }
}

impl Hub {
    /// Whether `channel` is a room.
    pub fn is_room(&self, channel: &ChannelName) -> bool {
        self.policy().rules(channel).signal
    }

    /// What connection `client` (of `user`) learns on joining a room whose
    /// other members were `members`.
    pub fn room_join(
        &self,
        client: SubscriberId,
        user: Option<&UserId>,
        members: Vec<Member>,
    ) -> RoomJoin {
        RoomJoin {
            client,
            client_key: self.keys.key(client),
            members,
            ice_servers: self
                .rtc()
                .ice_servers_json(client, user, self.clock().now() / 1000),
        }
    }

    /// Whether `key` proves connection `client` (see [`RoomJoin::client_key`]).
    pub fn check_client_key(&self, client: SubscriberId, key: &str) -> bool {
        self.keys.check(client, key)
    }

    /// Relays `data` from member `from` of `room` to member `to`: queued
    /// for `to` alone as `{"type":"signal","room","from","user","data"}`.
    /// Refused, and delivered to nobody, unless both are members now.
    pub fn signal(
        &self,
        room: &ChannelName,
        from: SubscriberId,
        to: SubscriberId,
        data: &SafeJson,
    ) -> Result<(), Error> {
        if !self.is_room(room) {
            return Err(Error::bad_request(format!(
                "channel {} is not a room (its namespace has signal = false)",
                quoted(room)
            )));
        }
        let local = self.fanout.get(room);
        let local = local.as_ref().map(|l| lock(l));
        let members = local.as_ref().and_then(|l| l.members.as_deref());
        let Some(user) = members.and_then(|m| m.get(&from)) else {
            return Err(Error::new(
                ErrorKind::NotInRoom,
                format!(
                    "client {from} is not in room {}: join it (subscribe on a WebSocket, SSE, NDJSON or iframe connection) first",
                    quoted(room)
                ),
            ));
        };
        let target = (to != from)
            .then(|| members.and_then(|m| m.get(&to)))
            .flatten()
            .and_then(|_| local.as_ref()?.subscribers.get(&to));
        let Some(outbox) = target else {
            return Err(Error::new(
                ErrorKind::UnknownClient,
                format!("no other client {to} in room {}", quoted(room)),
            ));
        };
        let event = LiveEvent::signal(room.clone(), from, user.as_ref(), data);
        outbox.push(OutboxEvent::Live(Arc::new(event)));
        Ok(())
    }
}

fn quoted(channel: &ChannelName) -> String {
    let mut out = String::new();
    json::push_string(&mut out, channel.as_str());
    out
}
