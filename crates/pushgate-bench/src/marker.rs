//! The marker the generator embeds in every payload it publishes.
//!
//! Subscribers find it with a substring search instead of decoding the
//! server's JSON, which keeps per-delivery cost tiny and lets the same code
//! measure servers with other envelopes ("plain" mode). The payload is a JSON
//! string `"pgb:<run>:<seq>:<sent unix ns>:xxx…"`:
//!
//! * `run` (8 hex digits, random per run) tells our messages from stale ones a
//!   server may replay from an earlier run's history;
//! * `seq` identifies the message for duplicate and order checks;
//! * the send time lets the subscriber compute latency with its own clock,
//!   which is the same clock since publisher and subscribers share a process.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memmem::Finder;

pub const PREFIX: &[u8] = b"pgb:";

static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PREFIX));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub seq: u64,
    pub sent_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Ours(Marker),
    /// A well-formed marker of another run.
    Foreign,
    Nothing,
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Appends the payload JSON string, padded with `x` so the whole JSON value is
/// `size` bytes (or as short as the marker allows).
pub fn write_payload(out: &mut Vec<u8>, run: u32, seq: u64, sent_ns: u64, size: usize) {
    use std::io::Write as _;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "\"pgb:{run:08x}:{seq}:{sent_ns}:");
    let used = out.len() - start + 1;
    out.resize(out.len() + size.saturating_sub(used), b'x');
    out.push(b'"');
}

/// The length [`write_payload`] produces before padding, for reporting.
pub fn min_payload_len() -> usize {
    // Quote, prefix, run, seq and nanos of typical width, colons, quote.
    1 + PREFIX.len() + 8 + 1 + 7 + 1 + 19 + 1 + 1
}

/// The first marker in `data`: ours, another run's, or none.
pub fn find(data: &[u8], run: u32) -> Found {
    let mut found = Found::Nothing;
    for at in FINDER.find_iter(data) {
        match parse_at(&data[at + PREFIX.len()..]) {
            Some((r, m)) if r == run => return Found::Ours(m),
            Some(_) => found = Found::Foreign,
            None => {}
        }
    }
    found
}

/// Calls `f` for every marker of `run` in `data` (a long-poll batch holds several);
/// returns how many foreign markers were skipped.
pub fn for_each(data: &[u8], run: u32, mut f: impl FnMut(Marker)) -> u64 {
    let mut foreign = 0;
    for at in FINDER.find_iter(data) {
        match parse_at(&data[at + PREFIX.len()..]) {
            Some((r, m)) if r == run => f(m),
            Some(_) => foreign += 1,
            None => {}
        }
    }
    foreign
}

/// Parses `<run hex8>:<seq>:<ns>:` at the start of `s`.
fn parse_at(s: &[u8]) -> Option<(u32, Marker)> {
    let run_hex = s.get(..8)?;
    let mut run = 0u32;
    for &b in run_hex {
        let d = (b as char).to_digit(16)?;
        run = run << 4 | d;
    }
    let s = s.get(8..)?.strip_prefix(b":")?;
    let (seq, s) = parse_decimal(s)?;
    let s = s.strip_prefix(b":")?;
    let (sent_ns, s) = parse_decimal(s)?;
    s.strip_prefix(b":")?;
    Some((run, Marker { seq, sent_ns }))
}

fn parse_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut v = 0u64;
    for &b in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((v, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_size() {
        let mut out = Vec::new();
        write_payload(&mut out, 0xdead_beef, 42, 1_700_000_000_123_456_789, 100);
        assert_eq!(out.len(), 100);
        let s: String = serde_json::from_slice(&out).unwrap();
        assert!(s.starts_with("pgb:deadbeef:42:1700000000123456789:x"));
        let envelope = format!(
            r#"{{"type":"message","channel":"c","offset":1,"data":{}}}"#,
            s
        );
        assert_eq!(
            find(envelope.as_bytes(), 0xdead_beef),
            Found::Ours(Marker {
                seq: 42,
                sent_ns: 1_700_000_000_123_456_789
            })
        );
        assert_eq!(find(envelope.as_bytes(), 1), Found::Foreign);
        let mut short = Vec::new();
        write_payload(&mut short, 1, 1, 1, 0);
        assert_eq!(short, b"\"pgb:00000001:1:1:\"");
        assert!(min_payload_len() >= 40);
    }

    #[test]
    fn ignores_lookalikes() {
        assert_eq!(find(b"pgb: not a marker pgb:zz", 1), Found::Nothing);
        assert_eq!(find(b"pgb:00000001:5:7", 1), Found::Nothing);
        assert_eq!(
            find(b"pgb:0000000 pgb:00000001:5:7:", 1),
            Found::Ours(Marker { seq: 5, sent_ns: 7 })
        );
    }

    #[test]
    fn finds_every_marker_in_a_batch() {
        let body = br#"{"messages":[{"data":"pgb:0000000a:1:10:x"},{"data":"pgb:0000000b:2:20:x"},{"data":"pgb:0000000a:3:30:"}],"cursor":"c"}"#;
        let mut seen = Vec::new();
        let foreign = for_each(body, 10, |m| seen.push(m.seq));
        assert_eq!(seen, vec![1, 3]);
        assert_eq!(foreign, 1);
    }
}
