//! Server-Sent Events framing (WHATWG HTML §9.2).
//!
//! Every field we write is known to hold no CR or LF: message JSON is compact
//! (see [`crate::json`]), cursors, channel and event names have closed
//! alphabets. So each event is one `data:` line.

use bytes::Bytes;

use crate::publication::{Encoding, Publication};

/// `retry:` first, so browsers reconnect after `retry_ms` rather than their default.
pub fn preamble(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// The event of a message for a stream of its channel alone, whose id is
/// the message's own position: the same bytes for every such stream.
pub static SINGLE: Encoding = Encoding::new("sse", |p| message_event(p, &p.cursor_entry()));

/// One message: `id: <cursor>`, `event: <name or "message">`, `data: <json>`.
pub fn message_event(p: &Publication, id: &str) -> Bytes {
    let name = p.event.as_ref().map_or("message", |e| e.as_str());
    event(name, Some(id), p.json())
}

/// Any event with a JSON payload (`subscribed`, `reset`, `error`).
pub fn event(name: &str, id: Option<&str>, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + name.len() + id.map_or(0, str::len) + 24);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The heartbeat: an event named `ping` with empty data. A comment would
/// be shorter, but `EventSource` hides comments from the page, whose
/// watchdog must see it; spaces left out, the bytes matter on idle streams.
pub const PING: &[u8] = b"event:ping\ndata:\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, Data, Epoch, EventName};

    #[test]
    fn message_event_layout() {
        let p = Publication::new(
            ChannelName::new("a").unwrap(),
            Epoch::new("e").unwrap(),
            3,
            Some(EventName::new("tick").unwrap()),
            Data::json("\"x\\ny\"").unwrap(),
            0,
        );
        let ev = p.encoded(&SINGLE);
        let text = std::str::from_utf8(ev).unwrap();
        assert_eq!(
            text,
            "id: YQ.e.3\nevent: tick\ndata: {\"type\":\"message\",\"channel\":\"a\",\"offset\":3,\"epoch\":\"e\",\"event\":\"tick\",\"data\":\"x\\ny\"}\n\n"
        );
    }
}
