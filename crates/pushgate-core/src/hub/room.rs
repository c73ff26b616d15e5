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
use super::{Fanout, Hub, OutboxEvent, RelayedSignal, SubscriberId};
use crate::rtc::ClientKeys;

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
            client_key: self.client_keys().key(client),
            members,
            ice_servers: self
                .rtc()
                .ice_servers_json(client, user, self.clock().now() / 1000),
        }
    }

    /// Whether `key` proves connection `client` (see [`RoomJoin::client_key`]).
    pub fn check_client_key(&self, client: SubscriberId, key: &str) -> bool {
        self.client_keys().check(client, key)
    }

    /// The cluster's keys, the same on every node (a member may signal
    /// over `POST /command` to any node), else this process's own.
    fn client_keys(&self) -> ClientKeys {
        self.cluster()
            .and_then(|c| c.client_keys())
            .unwrap_or_else(|| self.keys.clone())
    }

    /// Relays `data` from member `from` of `room` to member `to`: queued
    /// for `to` alone as `{"type":"signal","room","from","user","data"}`.
    /// Refused, and delivered to nobody, unless both are members now. In a
    /// cluster either may be on another node: there, membership is the
    /// cluster's list, checked when the signal is sent and again by the
    /// node that delivers it.
    pub async fn signal(
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
        let not_in_room = || {
            Error::new(
                ErrorKind::NotInRoom,
                format!(
                    "client {from} is not in room {}: join it (subscribe on a WebSocket, SSE, NDJSON or iframe connection) first",
                    quoted(room)
                ),
            )
        };
        let unknown = || {
            Error::new(
                ErrorKind::UnknownClient,
                format!("no other client {to} in room {}", quoted(room)),
            )
        };
        if self.is_here(from) && self.is_here(to) {
            return match self.fanout.members_now(room, from, to) {
                Err(Absent::From) => Err(not_in_room()),
                Err(Absent::To) => Err(unknown()),
                Ok(user) => {
                    let delivered = self
                        .fanout
                        .deliver_signal(room, from, user.as_ref(), to, data);
                    delivered.then_some(()).ok_or_else(unknown)
                }
            };
        }
        let cluster = self
            .cluster()
            .expect("ids of other nodes come with a cluster");
        let user = match self.is_here(from) {
            true => self.fanout.member(room, from),
            false => cluster.member(room, from).await?,
        };
        let user = user.ok_or_else(not_in_room)?;
        if to == from {
            return Err(unknown());
        }
        if self.is_here(to) {
            let delivered = self
                .fanout
                .deliver_signal(room, from, user.as_ref(), to, data);
            return delivered.then_some(()).ok_or_else(unknown);
        }
        cluster.member(room, to).await?.ok_or_else(unknown)?;
        cluster
            .relay(RelayedSignal {
                room: room.clone(),
                from,
                user,
                to,
                data: data.clone(),
            })
            .await
    }
}

/// Which end of a signal is no member.
pub(super) enum Absent {
    From,
    To,
}

impl Fanout {
    /// Member `id`'s user when it is a member of `room` here.
    pub(super) fn member(&self, room: &ChannelName, id: SubscriberId) -> Option<Option<UserId>> {
        let local = self.get(room)?;
        let local = lock(&local);
        local.members.as_deref()?.get(&id).cloned()
    }

    /// `from`'s user when both `from` and another `to` are members of
    /// `room` here.
    fn members_now(
        &self,
        room: &ChannelName,
        from: SubscriberId,
        to: SubscriberId,
    ) -> Result<Option<UserId>, Absent> {
        let local = self.get(room).ok_or(Absent::From)?;
        let local = lock(&local);
        let members = local.members.as_deref().ok_or(Absent::From)?;
        let user = members.get(&from).ok_or(Absent::From)?;
        if to == from || !members.contains_key(&to) {
            return Err(Absent::To);
        }
        Ok(user.clone())
    }

    /// Queues the signal for `to` if it is a member of `room` here now,
    /// under the lock that adds and removes members; whether it was.
    pub(super) fn deliver_signal(
        &self,
        room: &ChannelName,
        from: SubscriberId,
        user: Option<&UserId>,
        to: SubscriberId,
        data: &SafeJson,
    ) -> bool {
        let Some(local) = self.get(room) else {
            return false;
        };
        let local = lock(&local);
        let member = local
            .members
            .as_deref()
            .is_some_and(|m| m.contains_key(&to));
        let Some(outbox) = local.subscribers.get(&to).filter(|_| member) else {
            return false;
        };
        let event = LiveEvent::signal(room.clone(), from, user, data);
        outbox.push(OutboxEvent::Live(Arc::new(event)));
        true
    }
}

fn quoted(channel: &ChannelName) -> String {
    let mut out = String::new();
    json::push_string(&mut out, channel.as_str());
    out
}
