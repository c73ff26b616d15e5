//! permessage-deflate (RFC 7692): negotiation, compression, decompression.
//!
//! pushgate always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1: a server may add both to any
//! accepted offer). Each message is then compressed on its own, so
//!
//! * a published message is compressed once and the same frame is written to
//!   every subscriber that negotiated the same window (frames of messages no
//!   longer than 512 bytes are shared by every window size);
//! * a connection keeps no compressor or decompressor between messages —
//!   an idle connection with deflate costs what one without does.
//!
//! The price is ratio on streams of small similar messages, which context
//! takeover would compress better at about 300 KB of zlib state per
//! connection; for a push server holding many idle connections that is the
//! wrong trade.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Violation;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";
/// RFC 7692 §7.1.2: window sizes are 2^8..2^15; zlib cannot compress with
/// 2^8, so pushgate never agrees to compress with less than 2^9.
pub const MIN_WINDOW_BITS: u8 = 9;
/// The largest window RFC 7692 allows.
pub const MAX_WINDOW_BITS: u8 = 15;

/// What the operator allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Offer-acceptance switch (`ws_deflate`).
    pub enabled: bool,
    /// The largest window the server compresses with (9..=15).
    pub server_max_window_bits: u8,
    /// Messages shorter than this are sent uncompressed (RSV1 clear), which
    /// RFC 7692 allows message by message.
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            min_size: 128,
        }
    }
}

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The window the server compresses with.
    pub window_bits: u8,
    /// Messages shorter than this go out uncompressed.
    pub min_size: usize,
}

impl Deflate {
    /// Whether a message of `len` bytes is worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.min_size
    }

    /// The window to compress a message of `len` bytes with so that the
    /// frame can be shared: back-references never reach further than the
    /// message is long, so a message of up to 2^9 bytes compressed with a
    /// 2^9 window is readable under every window this server agrees to.
    pub fn window_for(&self, len: usize) -> u8 {
        if len <= 1 << MIN_WINDOW_BITS {
            MIN_WINDOW_BITS
        } else {
            self.window_bits
        }
    }
}

/// Picks the first acceptable permessage-deflate offer from the values of
/// every `Sec-WebSocket-Extensions` header; returns what was agreed and the
/// response header value. Invalid offers are declined (RFC 7692 §5.1), and
/// so are offers pushgate cannot honour, e.g. `server_max_window_bits=8`.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Option<(Deflate, String)> {
    if !config.enabled {
        return None;
    }
    headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .find_map(|offer| accept(offer, config))
}

fn accept(offer: &str, config: &DeflateConfig) -> Option<(Deflate, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut server_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None; // §7: a parameter must not appear twice
        }
        seen.push(name);
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            _ => return None,
        }
    }
    let bits = match server_bits {
        Some(b) if b < MIN_WINDOW_BITS => return None,
        Some(b) => b.min(config.server_max_window_bits),
        None => config.server_max_window_bits,
    };
    let mut response =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    // §7.1.2.1: accepting a server_max_window_bits offer means answering it.
    if server_bits.is_some() || bits < MAX_WINDOW_BITS {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let agreed = Deflate {
        window_bits: bits,
        min_size: config.min_size,
    };
    Some((agreed, response))
}

fn window_bits(v: &str) -> Option<u8> {
    // §7.1.2: 1*DIGIT without leading zeros, 8..=15.
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    // zlib's state for a 2^15 window is ~300 KB: one per thread and window
    // size, reset between messages, instead of one per call.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

/// Compresses one message on its own (no context takeover): raw DEFLATE,
/// flushed to a byte boundary, without the final `00 00 ff ff` (§7.2.1).
pub fn compress(data: &[u8], window_bits: u8) -> Vec<u8> {
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let slot = &mut all[usize::from(bits - MIN_WINDOW_BITS)];
        let c = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            let before = c.total_in();
            // Cannot fail for in-memory raw deflate with room to write.
            let _ = c.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(c.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
        }
        out
    })
}

/// Decompresses one message (§7.2.2), refusing output beyond `max` bytes
/// (1009) so a small compressed message cannot become a huge one.
pub fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>, Violation> {
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    let mut d = Decompress::new(false);
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity((data.len() * 3).max(64).min(limit));
    for mut input in [data, &TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(Violation::too_big("message too big once decompressed"));
                }
                out.reserve_exact(out.len().max(64).min(limit - out.len()));
            }
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| Violation::invalid_data("invalid compressed data"))?;
            input = &input[(d.total_in() - before_in) as usize..];
            if out.len() > max {
                return Err(Violation::too_big("message too big once decompressed"));
            }
            let room = out.len() < out.capacity();
            if status == Status::StreamEnd || (input.is_empty() && room) {
                break;
            }
            if room && d.total_in() == before_in && d.total_out() == before_out {
                return Err(Violation::invalid_data("invalid compressed data"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn on() -> DeflateConfig {
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn negotiation() {
        let n = |h: &str| negotiate([h], &on()).map(|(d, r)| (d.window_bits, r));
        let base = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(n("permessage-deflate"), Some((15, base.to_string())));
        assert_eq!(
            n("permessage-deflate; client_max_window_bits"),
            Some((15, base.to_string()))
        );
        assert_eq!(
            n("permessage-deflate; server_max_window_bits=10; client_no_context_takeover"),
            Some((10, format!("{base}; server_max_window_bits=10")))
        );
        // Unacceptable first offer, acceptable fallback.
        assert_eq!(
            n("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some((15, base.to_string()))
        );
        assert_eq!(n("x-webkit-deflate-frame"), None);
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        assert_eq!(
            negotiate(["permessage-deflate"], &DeflateConfig::default()),
            None
        );
        let narrow = DeflateConfig {
            server_max_window_bits: 12,
            ..on()
        };
        assert_eq!(
            negotiate(["permessage-deflate"], &narrow).unwrap().1,
            format!("{base}; server_max_window_bits=12")
        );
    }

    #[test]
    fn rfc_example() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let c = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(decompress(&c, 100).unwrap(), b"Hello");
        assert_eq!(decompress(&c, 4).unwrap_err().code, 1009);
        assert_eq!(decompress(&[0xff, 0xff, 0xff], 100).unwrap_err().code, 1007);
    }

    #[test]
    fn bomb_is_refused() {
        let big = vec![b'a'; 10_000_000];
        let c = compress(&big, 15);
        assert!(c.len() < 20_000);
        assert_eq!(decompress(&c, 1_000_000).unwrap_err().code, 1009);
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), bits in 9u8..=15) {
            let c = compress(&data, bits);
            prop_assert_eq!(decompress(&c, data.len()).unwrap(), data);
        }

        #[test]
        fn decompress_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decompress(&data, 1000);
        }
    }
}
