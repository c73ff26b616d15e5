//! Presence: who is subscribed to a channel whose namespace turns it on
//! (`presence = true`), and the `join`/`leave` events of namespaces with
//! `join_leave = true`.
//!
//! A channel without presence keeps nothing here (its member map is never
//! allocated) and its fan-out does not look at it. A member is added and
//! removed under the same lock as its subscription, so presence never lists
//! a connection fan-out no longer reaches: a dropped connection unsubscribes,
//! and so leaves, however it died.

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;

use crate::auth::UserId;
use crate::channel::ChannelName;
use crate::json;

use super::SubscriberId;

/// The members of one channel: each subscribing connection and its user
/// (`None`: anonymous).
pub(super) type Members = HashMap<SubscriberId, Option<UserId>>;

/// Whether a connection came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It subscribed.
    Join,
    /// It unsubscribed or was dropped.
    Leave,
}

impl Change {
    /// `join` or `leave`: the event's `type`, and its SSE event name.
    pub fn name(self) -> &'static str {
        match self {
            Change::Join => "join",
            Change::Leave => "leave",
        }
    }
}

/// A `join` or `leave` event, encoded once for every subscriber:
/// `{"type":"join","channel":C,"user":"alice","client":"12"}`. Live only: no
/// offset, never in history, and it does not move a session's cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Join or leave.
    pub change: Change,
    /// The channel it happened on.
    pub channel: ChannelName,
    json: Bytes,
}

impl PresenceEvent {
    /// The event of `client` (of `user`, `None`: anonymous) joining or
    /// leaving `channel`.
    pub fn new(
        change: Change,
        channel: ChannelName,
        user: Option<&UserId>,
        client: SubscriberId,
    ) -> Self {
        let mut out = String::with_capacity(64);
        out.push_str("{\"type\":\"");
        out.push_str(change.name());
        out.push_str("\",\"channel\":");
        json::push_string(&mut out, channel.as_str());
        out.push_str(",\"user\":");
        push_user(&mut out, user);
        let _ = write!(out, ",\"client\":\"{client}\"}}");
        PresenceEvent {
            change,
            channel,
            json: Bytes::from(out),
        }
    }

    /// The event as script-safe JSON text.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
}

fn push_user(out: &mut String, user: Option<&UserId>) {
    match user {
        Some(u) => json::push_string(out, u),
        None => out.push_str("null"),
    }
}

/// Who is subscribed to a channel here: the answer to `presence` and
/// `GET /api/presence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The channel.
    pub channel: ChannelName,
    /// Each user present, sorted by id, with its connections' ids (oldest first).
    pub users: Vec<(UserId, Vec<SubscriberId>)>,
    /// Connections without a user (counted, not listed).
    pub anonymous: usize,
}

impl Presence {
    pub(super) fn of(channel: ChannelName, members: Option<&Members>) -> Self {
        let mut by_user: HashMap<&UserId, Vec<SubscriberId>> = HashMap::new();
        let mut anonymous = 0;
        for (id, user) in members.into_iter().flatten() {
            match user {
                Some(u) => by_user.entry(u).or_default().push(*id),
                None => anonymous += 1,
            }
        }
        let mut users: Vec<(UserId, Vec<SubscriberId>)> = by_user
            .into_iter()
            .map(|(u, mut ids)| {
                ids.sort_unstable();
                (u.clone(), ids)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        Presence {
            channel,
            users,
            anonymous,
        }
    }

    /// Appends `"channel":C,"users":[{"user":"alice","clients":["12"]}],"anonymous":N`
    /// (no braces: the `presence` reply and the API body wrap it).
    pub fn push_fields(&self, out: &mut String) {
        out.push_str("\"channel\":");
        json::push_string(out, self.channel.as_str());
        out.push_str(",\"users\":[");
        for (i, (user, clients)) in self.users.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"user\":");
            json::push_string(out, user);
            out.push_str(",\"clients\":[");
            for (j, c) in clients.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{c}\"");
            }
            out.push_str("]}");
        }
        let _ = write!(out, "],\"anonymous\":{}", self.anonymous);
    }

    /// The body of `GET /api/presence`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push('{');
        self.push_fields(&mut out);
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn events_and_lists_encode_as_documented() {
        let ch = ChannelName::new("chat:a").unwrap();
        let ev = PresenceEvent::new(Change::Join, ch.clone(), Some(&Arc::from("<al\"ice>")), 12);
        let v: serde_json::Value = serde_json::from_slice(ev.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"join","channel":"chat:a","user":"<al\"ice>","client":"12"})
        );
        assert!(!std::str::from_utf8(ev.json()).unwrap().contains('<'));
        let ev = PresenceEvent::new(Change::Leave, ch.clone(), None, 3);
        let v: serde_json::Value = serde_json::from_slice(ev.json()).unwrap();
        assert_eq!(v["user"], serde_json::Value::Null);
        assert_eq!(v["type"], "leave");

        let mut m = Members::new();
        m.insert(17, Some(Arc::from("bob")));
        m.insert(12, Some(Arc::from("alice")));
        m.insert(20, Some(Arc::from("alice")));
        m.insert(3, None);
        let p = Presence::of(ch, Some(&m));
        let v: serde_json::Value = serde_json::from_str(&p.encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel":"chat:a","users":[
                {"user":"alice","clients":["12","20"]},
                {"user":"bob","clients":["17"]}],"anonymous":1})
        );
    }
}
