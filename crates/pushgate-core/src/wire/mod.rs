//! Pure encoders from core types to transport wire formats. Transports call
//! these; nothing here touches a socket.

pub mod iframe;
pub mod ndjson;
pub mod poll;
pub mod sse;

use crate::delivery::End;

/// The heartbeat object of the streams a page reads (NDJSON lines, iframe
/// calls; SSE names its event `ping` instead).
pub const PING_JSON: &[u8] = b"{\"type\":\"ping\"}";

/// What an event stream the server ends says last, so that its client
/// knows what to do: `lifetime` (the stream's lifetime is over: reopen at
/// once from the cursor), `behind` (it fell behind its queue: the same),
/// `shutdown` (the server stops: reconnect with backoff). A stalled stream
/// cannot be told anything.
pub fn end_json(end: End) -> Option<&'static [u8]> {
    match end {
        End::Idle => Some(br#"{"type":"end","reason":"lifetime"}"#),
        End::FellBehind => Some(br#"{"type":"end","reason":"behind"}"#),
        End::ShutDown => Some(br#"{"type":"end","reason":"shutdown"}"#),
        End::Expired => Some(br#"{"type":"end","reason":"expired"}"#),
        End::Disconnected => Some(br#"{"type":"end","reason":"disconnected"}"#),
        End::Stalled => None,
    }
}
