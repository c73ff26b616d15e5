//! Newline-delimited JSON: one object per line. Message JSON holds no raw
//! newline (see [`crate::json`]), so a line is always one object.

use bytes::Bytes;

use crate::publication::Encoding;

/// A message's line, the same for every stream.
pub static LINE: Encoding = Encoding::new("ndjson", |p| line(p.json()));

/// `json` as one line.
pub fn line(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 1);
    out.extend_from_slice(json);
    out.push(b'\n');
    Bytes::from(out)
}

/// The heartbeat line: a client's watchdog counts it as a sign of life,
/// and otherwise skips `ping` objects.
pub const PING: &[u8] = b"{\"type\":\"ping\"}\n";
