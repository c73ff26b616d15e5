//! Live events: what fan-out hands a connection besides the channel's
//! messages. A `join` or `leave` of a channel with join/leave events, and a
//! WebRTC `signal` relayed to one member of a room. Each is encoded once,
//! has no offset, is never in history, and moves no cursor.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::auth::UserId;
use crate::channel::ChannelName;
use crate::json::{self, SafeJson};

use super::SubscriberId;

/// What a live event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    /// A connection subscribed.
    Join,
    /// A connection unsubscribed or was dropped.
    Leave,
    /// Another member of a room signals this connection.
    Signal,
}

impl LiveKind {
    /// `join`, `leave` or `signal`: the event's `type`, and its SSE event name.
    pub fn name(self) -> &'static str {
        match self {
            LiveKind::Join => "join",
            LiveKind::Leave => "leave",
            LiveKind::Signal => "signal",
        }
    }
}

/// A live event as script-safe JSON text, encoded once for every recipient.
#[derive(Debug, PartialEq, Eq)]
pub struct LiveEvent {
    /// What it says.
    pub kind: LiveKind,
    /// The channel (the room, for a signal) it belongs to: a connection
    /// that is no longer subscribed to it does not get it.
    pub channel: ChannelName,
    json: Bytes,
}

impl LiveEvent {
    /// `{"type":"join","channel":C,"user":"alice","client":"12"}`: `client`
    /// (of `user`, `None`: anonymous) joined or left `channel`.
    pub fn presence(
        change: LiveKind,
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
        LiveEvent {
            kind: change,
            channel,
            json: Bytes::from(out),
        }
    }

    /// `{"type":"signal","room":R,"from":"12","user":U,"data":D}`: what
    /// member `from` (of `user`) of `room` sends one other member.
    pub fn signal(
        room: ChannelName,
        from: SubscriberId,
        user: Option<&UserId>,
        data: &SafeJson,
    ) -> Self {
        let mut out = String::with_capacity(64 + data.as_str().len());
        out.push_str("{\"type\":\"signal\",\"room\":");
        json::push_string(&mut out, room.as_str());
        let _ = write!(out, ",\"from\":\"{from}\",\"user\":");
        push_user(&mut out, user);
        out.push_str(",\"data\":");
        out.push_str(data.as_str());
        out.push('}');
        LiveEvent {
            kind: LiveKind::Signal,
            channel: room,
            json: Bytes::from(out),
        }
    }

    /// The event as script-safe JSON text.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
}

/// A user id as JSON: a string, or `null` for an anonymous connection.
pub(crate) fn push_user(out: &mut String, user: Option<&UserId>) {
    match user {
        Some(u) => json::push_string(out, u),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn events_encode_as_documented() {
        let ch = ChannelName::new("chat:a").unwrap();
        let ev = LiveEvent::presence(
            LiveKind::Join,
            ch.clone(),
            Some(&Arc::from("<al\"ice>")),
            12,
        );
        let v: serde_json::Value = serde_json::from_slice(ev.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"join","channel":"chat:a","user":"<al\"ice>","client":"12"})
        );
        assert!(!std::str::from_utf8(ev.json()).unwrap().contains('<'));
        let ev = LiveEvent::presence(LiveKind::Leave, ch.clone(), None, 3);
        let v: serde_json::Value = serde_json::from_slice(ev.json()).unwrap();
        assert_eq!(v["user"], serde_json::Value::Null);
        assert_eq!(v["type"], "leave");

        let data = SafeJson::parse(br#"{"sdp":"v=0\r\n<x>"}"#).unwrap();
        let room = ChannelName::new("room:r").unwrap();
        let ev = LiveEvent::signal(room.clone(), 7, None, &data);
        assert_eq!((ev.kind, &ev.channel), (LiveKind::Signal, &room));
        let text = std::str::from_utf8(ev.json()).unwrap();
        assert!(!text.contains('<'), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"signal","room":"room:r","from":"7","user":null,
                "data":{"sdp":"v=0\r\n<x>"}})
        );
    }
}
