//! The WebSocket receiver (frames, fragmentation, UTF-8, close frames,
//! permessage-deflate) on arbitrary client bytes split at arbitrary points,
//! and permessage-deflate negotiation on arbitrary offers.
//!
//! Properties: however the bytes are split across reads the same events and
//! the same violation come out; every text message is UTF-8; no message is
//! larger than the limit (compressed or not); nothing follows a close frame
//! or a violation. An agreed offer names permessage-deflate, and its window
//! is within 9..=15 and within what the client asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate_core::websocket::deflate::{negotiate, DeflateConfig};
use pushgate_core::websocket::{Deflate, Incoming, Receiver, Violation};

const MAX: usize = 4096;

fn run(chunks: &[&[u8]]) -> (Vec<Incoming>, Option<Violation>) {
    let deflate = Deflate {
        window_bits: 15,
        min_size: 0,
    };
    let mut r = Receiver::new(MAX, Some(deflate));
    let mut out = Vec::new();
    for c in chunks {
        if let Err(v) = r.feed(c, &mut out) {
            return (out, Some(v));
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (whole, error) = run(&[rest]);
    for (i, m) in whole.iter().enumerate() {
        match m {
            Incoming::Text(t) => {
                assert!(std::str::from_utf8(t).is_ok());
                assert!(t.len() <= MAX);
            }
            Incoming::Binary(b) => assert!(b.len() <= MAX),
            Incoming::Ping(p) | Incoming::Pong(p) => assert!(p.len() <= 125),
            Incoming::Close(_) => assert_eq!(i, whole.len() - 1, "nothing after a close"),
        }
    }
    if let Some(v) = error {
        assert!(matches!(v.code, 1002 | 1007 | 1009), "{v:?}");
    }
    // The same bytes in three reads, cut where the input says.
    let a = usize::from(cut) % (rest.len() + 1);
    let b = a + (rest.len() - a) / 2;
    let split = run(&[&rest[..a], &rest[a..b], &rest[b..]]);
    assert_eq!(split, (whole, error));

    if let Ok(offer) = std::str::from_utf8(rest) {
        let config = DeflateConfig {
            enabled: true,
            server_max_window_bits: 12,
            min_size: 0,
        };
        if let Some((agreed, answer)) = negotiate([offer], &config) {
            assert!((9..=12).contains(&agreed.window_bits));
            assert!(answer.starts_with(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ));
            assert!(offer.to_ascii_lowercase().contains("permessage-deflate"));
        }
    }
});
