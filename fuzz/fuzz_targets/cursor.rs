//! `Cursor::parse` / `Since::parse` on arbitrary text (non-UTF-8 input goes
//! through lossy decoding), and `Cursor::encode` on cursors built from the
//! input.
//!
//! Properties: a parsed cursor re-encodes to text of `[A-Za-z0-9._~-]` no
//! longer than the input, which parses back to the same cursor; `Since::parse`
//! agrees with `Cursor::parse`; failures are `InvalidCursor` or `TooLarge`.
//! A cursor built with `set` round-trips through its text form unless it is
//! over the limits, when parsing says `TooLarge`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::cursor::{MAX_CURSOR_ENTRIES, MAX_CURSOR_LEN};
use pushgate_core::{ChannelName, Cursor, Epoch, ErrorKind, Position, Since};
use pushgate_fuzz::{is_cursor_char, text};

fn check_encoding(c: &Cursor) -> String {
    let enc = c.encode();
    assert!(enc.bytes().all(is_cursor_char), "{enc:?}");
    enc
}

fn parse_side(text: &str) {
    let since = Since::parse(text);
    match Cursor::parse(text) {
        Ok(c) => {
            let enc = check_encoding(&c);
            assert!(enc.len() <= text.len(), "{enc:?} longer than {text:?}");
            assert!(c.len() <= MAX_CURSOR_ENTRIES);
            assert_eq!(Cursor::parse(&enc).unwrap(), c, "{text:?} -> {enc:?}");
            let expected = match text {
                "" => Since::Now,
                _ => Since::Cursor(c),
            };
            assert_eq!(since.unwrap(), expected);
        }
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::InvalidCursor | ErrorKind::TooLarge),
                "{e:?}"
            );
            match since {
                Ok(s) => assert!(text == "earliest" && s == Since::Earliest),
                Err(e2) => assert_eq!(e2, e),
            }
        }
    }
}

/// Builds a cursor from NUL-separated (channel, epoch, offset) triples; the
/// offset is the little-endian value of its first eight bytes.
fn build_side(text: &str) {
    let mut c = Cursor::new();
    let mut parts = text.split('\0');
    while let (Some(ch), Some(ep), Some(off)) = (parts.next(), parts.next(), parts.next()) {
        let (Ok(channel), Ok(epoch)) = (ChannelName::new(ch), Epoch::new(ep)) else {
            continue;
        };
        let mut le = [0u8; 8];
        let n = off.len().min(8);
        le[..n].copy_from_slice(&off.as_bytes()[..n]);
        c.set(
            channel.clone(),
            Position::new(epoch.clone(), u64::from_le_bytes(le)),
        );
        assert_eq!(c.get(&channel).map(|p| &p.epoch), Some(&epoch));
    }
    let enc = check_encoding(&c);
    match Cursor::parse(&enc) {
        Ok(back) => assert_eq!(back, c, "{enc:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::TooLarge, "{enc:?}: {e:?}");
            assert!(c.len() > MAX_CURSOR_ENTRIES || enc.len() > MAX_CURSOR_LEN);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = text(data);
    parse_side(&text);
    build_side(&text);
});
