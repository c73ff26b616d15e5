//! Frame headers (RFC 6455 §5.2): parsing what clients send, building what
//! the server sends.

use bytes::{BufMut, Bytes, BytesMut};

use super::Violation;

/// What a frame carries (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// The next fragment of a text or binary message.
    Continuation,
    /// A UTF-8 text message, or its first fragment.
    Text,
    /// A binary message, or its first fragment.
    Binary,
    /// Starts or answers the closing handshake.
    Close,
    /// Asks the peer for a pong.
    Ping,
    /// Answers a ping (or is an unasked-for heartbeat).
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, and allowed
    /// between the fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client frame's header, checked for what RFC 6455 forbids regardless of
/// state (the receiver checks fragmentation and extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: "compressed" under permessage-deflate.
    pub rsv1: bool,
    /// What it carries.
    pub opcode: OpCode,
    /// The masking key, for [`apply_mask`].
    pub mask: [u8; 4],
    /// Payload length in bytes.
    pub len: u64,
}

/// The longest header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// Parses a client frame header from the start of `buf`: `Ok(None)` when
/// more bytes are needed, else the header and its length in bytes.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(Violation::protocol("reserved bits RSV2/RSV3 set"));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(Violation::protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(Violation::protocol("client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let len = u64::from_be_bytes(n);
                if len >> 63 != 0 {
                    return Err(Violation::protocol("payload length has its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(Violation::protocol(
            "control frames must not be fragmented or longer than 125 bytes",
        ));
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let header = Header {
        fin,
        rsv1: b0 & 0x40 != 0,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len,
    };
    Ok(Some((header, at + 4)))
}

/// Unmasks (or masks) `data` in place; `offset` is the position of `data[0]`
/// within the frame's payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = [0u8; 4];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

/// Writes an unmasked, final server frame header.
pub fn put_header(out: &mut BytesMut, opcode: OpCode, rsv1: bool, len: usize) {
    out.put_u8(0x80 | if rsv1 { 0x40 } else { 0 } | opcode.bits());
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(n);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// A whole server frame: header and payload in one buffer, ready to be
/// written to any number of sockets.
pub fn server_frame(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut out, opcode, rsv1, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (cut to fit the 125-byte limit
/// on a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    server_frame(OpCode::Close, false, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_header(&frame).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.len, n), (true, OpCode::Text, 5, 6));
        let mut payload = frame[n..].to_vec();
        apply_mask(&mut payload, h.mask, 0);
        assert_eq!(payload, b"Hello");
        // Unmasking in pieces gives the same result.
        let mut split = frame[n..].to_vec();
        let (a, b) = split.split_at_mut(3);
        apply_mask(a, h.mask, 0);
        apply_mask(b, h.mask, 3);
        assert_eq!(split, b"Hello");
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let full = [0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4];
        for i in 0..full.len() {
            assert_eq!(parse_header(&full[..i]), Ok(None), "prefix {i}");
        }
        let (h, n) = parse_header(&full).unwrap().unwrap();
        assert_eq!((h.len, n), (256, 8));
    }

    #[test]
    fn refusals() {
        let code = |b: &[u8]| parse_header(b).unwrap_err().code;
        assert_eq!(code(&[0x81, 0x05]), 1002); // unmasked
        assert_eq!(code(&[0x83, 0x80]), 1002); // reserved data opcode
        assert_eq!(code(&[0x8B, 0x80]), 1002); // reserved control opcode
        assert_eq!(code(&[0xA1, 0x80]), 1002); // RSV2
        assert_eq!(code(&[0x09, 0x80]), 1002); // fragmented ping
        assert_eq!(code(&[0x89, 0xFE, 0, 126]), 1002); // ping over 125
        assert_eq!(code(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]), 1002);
    }

    #[test]
    fn server_frames() {
        assert_eq!(&server_frame(OpCode::Text, false, b"hi")[..], b"\x81\x02hi");
        let f = server_frame(OpCode::Binary, true, &[0u8; 300]);
        assert_eq!(&f[..4], &[0xC2, 126, 0x01, 0x2C]);
        let f = server_frame(OpCode::Binary, false, &vec![0u8; 70_000]);
        assert_eq!(&f[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        let long = "é".repeat(100);
        let c = close_frame(1000, &long);
        assert_eq!(c[1] as usize, c.len() - 2);
        assert!(c.len() - 2 <= 125);
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }
}
