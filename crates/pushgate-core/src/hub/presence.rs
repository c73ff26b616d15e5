//! Presence: who is subscribed to a channel whose namespace turns it on
//! (`presence = true`). The `join`/`leave` events of namespaces with
//! `join_leave = true` are [`super::LiveEvent`]s.
//!
//! A channel without presence keeps nothing here (its member map is never
//! allocated) and its fan-out does not look at it. A member is added and
//! removed under the same lock as its subscription, so presence never lists
//! a connection fan-out no longer reaches: a dropped connection unsubscribes,
//! and so leaves, however it died.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::auth::UserId;
use crate::channel::ChannelName;
use crate::json;

use super::SubscriberId;

/// The members of one channel: each subscribing connection and its user
/// (`None`: anonymous).
pub(super) type Members = HashMap<SubscriberId, Option<UserId>>;

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
    /// In a room (a namespace with `signal`): every member connection,
    /// anonymous ones too, by id: what a WebRTC mesh connects to.
    pub members: Option<Vec<Member>>,
}

/// A member connection of a room and its user (`None`: anonymous).
pub type Member = (SubscriberId, Option<UserId>);

/// Every member, sorted by id.
pub(super) fn list(members: Option<&Members>) -> Vec<Member> {
    let mut all: Vec<Member> = members
        .into_iter()
        .flatten()
        .map(|(id, user)| (*id, user.clone()))
        .collect();
    all.sort_unstable_by_key(|m| m.0);
    all
}

/// Appends `[{"client":"7","user":null},…]`.
pub fn push_members(out: &mut String, members: &[Member]) {
    out.push('[');
    for (i, (id, user)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"client\":\"{id}\",\"user\":");
        super::live::push_user(out, user.as_ref());
        out.push('}');
    }
    out.push(']');
}

impl Presence {
    pub(super) fn of(channel: ChannelName, members: Option<&Members>, room: bool) -> Self {
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
            members: room.then(|| list(members)),
        }
    }

    /// Appends `"channel":C,"users":[{"user":"alice","clients":["12"]}],"anonymous":N`
    /// and, in a room, `"members":[…]` (no braces: the `presence` reply and
    /// the API body wrap it).
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
        if let Some(members) = &self.members {
            out.push_str(",\"members\":");
            push_members(out, members);
        }
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
    fn lists_encode_as_documented() {
        let ch = ChannelName::new("chat:a").unwrap();
        let mut m = Members::new();
        m.insert(17, Some(Arc::from("bob")));
        m.insert(12, Some(Arc::from("alice")));
        m.insert(20, Some(Arc::from("alice")));
        m.insert(3, None);
        let p = Presence::of(ch.clone(), Some(&m), false);
        let v: serde_json::Value = serde_json::from_str(&p.encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel":"chat:a","users":[
                {"user":"alice","clients":["12","20"]},
                {"user":"bob","clients":["17"]}],"anonymous":1})
        );
        // A room lists every member, anonymous ones too.
        let p = Presence::of(ch, Some(&m), true);
        let v: serde_json::Value = serde_json::from_str(&p.encode()).unwrap();
        assert_eq!(
            v["members"],
            serde_json::json!([{"client":"3","user":null},{"client":"12","user":"alice"},
                {"client":"17","user":"bob"},{"client":"20","user":"alice"}])
        );
    }
}
