//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1) of one piece of a
//! streaming response: `{len:x}\r\n`, the bytes, `\r\n` — the front's
//! framing of event streams, and the shared chunks fan-out writes straight
//! to one-channel SSE and NDJSON streams.

use bytes::{BufMut, Bytes, BytesMut};
use pushgate_core::publication::Encoding;
use pushgate_core::wire::{ndjson, sse};

/// Writes `{len:x}\r\n` into `out`; returns its length.
pub fn size_line(len: usize, out: &mut [u8; 20]) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in out[..digits].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xF];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// A one-channel SSE stream's event as one chunk.
pub static SSE: Encoding = Encoding::new("sse chunk", |p| chunk(p.encoded(&sse::SINGLE)));

/// An NDJSON line as one chunk.
pub static NDJSON: Encoding = Encoding::new("ndjson chunk", |p| chunk(p.encoded(&ndjson::LINE)));

/// `data` as one chunk.
pub fn chunk(data: &[u8]) -> Bytes {
    let mut size = [0u8; 20];
    let n = size_line(data.len(), &mut size);
    let mut out = BytesMut::with_capacity(n + data.len() + 2);
    out.put_slice(&size[..n]);
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_and_chunks() {
        for len in [0usize, 1, 9, 10, 15, 16, 255, 256, 4095, 65_536, usize::MAX] {
            let mut out = [0u8; 20];
            let n = size_line(len, &mut out);
            assert_eq!(&out[..n], format!("{len:x}\r\n").as_bytes());
        }
        assert_eq!(&chunk(b"hello, world")[..], b"c\r\nhello, world\r\n");
    }
}
