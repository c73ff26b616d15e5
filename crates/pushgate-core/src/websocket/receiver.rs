//! The receiving half of a server-side WebSocket: bytes in, whole messages out.

use bytes::Bytes;

use super::deflate::{self, Deflate};
use super::frame::{self, apply_mask, Header, OpCode, MAX_HEADER};
use super::{close, Violation};

/// What a client sent, once a frame or message is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message, valid UTF-8.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong: the answer to the server's ping, or a heartbeat.
    Pong(Bytes),
    /// The closing handshake began: the code, if any, and the reason.
    Close(Option<(u16, String)>),
}

/// Turns a client's bytes into [`Incoming`] events, enforcing RFC 6455 and
/// the message size limit. It holds no buffer while the connection is idle:
/// payload is unmasked straight into the message it belongs to, and only a
/// header split across reads (at most 14 bytes) or a control frame's
/// payload (at most 125) waits in between.
#[derive(Debug)]
pub struct Receiver {
    max_message: usize,
    deflate: bool,
    /// Bytes of a header split across reads, or a control frame's payload.
    pending: Vec<u8>,
    frame: Option<InFrame>,
    message: Option<Box<Message>>,
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: Header,
    /// Payload bytes read so far.
    read: u64,
}

#[derive(Debug)]
struct Message {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Text only: how many leading bytes of `data` are known-good UTF-8.
    valid: usize,
}

impl Message {
    /// Fails fast on invalid UTF-8 in plain text, as soon as the bytes
    /// that prove it arrive (a sequence cut at the end may still complete).
    fn check_utf8(&mut self, last: bool) -> Result<(), Violation> {
        if !self.text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => self.valid = self.data.len(),
            Err(e) if e.error_len().is_none() && !last => self.valid += e.valid_up_to(),
            Err(_) => return Err(Violation::invalid_data("text is not valid UTF-8")),
        }
        Ok(())
    }
}

impl Receiver {
    /// `deflate`: whether permessage-deflate was negotiated (RSV1 allowed).
    pub fn new(max_message: usize, deflate: Option<Deflate>) -> Self {
        Receiver {
            max_message,
            deflate: deflate.is_some(),
            pending: Vec::new(),
            frame: None,
            message: None,
            closed: false,
        }
    }

    /// Whether the client sent a close frame (valid or not): it will send
    /// nothing more, so the server must not wait for one.
    pub fn saw_close(&self) -> bool {
        self.closed
    }

    /// Feeds bytes read from the socket; complete events are appended to
    /// `out`. After a violation or a close frame the receiver takes nothing more.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Incoming>) -> Result<(), Violation> {
        while !input.is_empty() && !self.closed {
            let Some(mut f) = self.frame else {
                input = self.read_header(input)?;
                if let Some(f) = self.frame {
                    if f.header.len == 0 {
                        self.finish_frame(f.header, out)?;
                    }
                }
                continue;
            };
            let want = usize::try_from(f.header.len - f.read).unwrap_or(usize::MAX);
            let (now, rest) = input.split_at(want.min(input.len()));
            input = rest;
            let offset = (f.read % 4) as usize;
            let dest = if f.header.opcode.is_control() {
                &mut self.pending
            } else {
                // The message exists: read_header made it.
                match self.message.as_deref_mut() {
                    Some(m) => &mut m.data,
                    None => return Err(Violation::protocol("payload without a message")),
                }
            };
            let start = dest.len();
            dest.extend_from_slice(now);
            apply_mask(&mut dest[start..], f.header.mask, offset);
            f.read += now.len() as u64;
            let done = f.read == f.header.len;
            self.frame = Some(f);
            if let (false, Some(m)) = (f.header.opcode.is_control(), self.message.as_deref_mut()) {
                m.check_utf8(done && f.header.fin)?;
            }
            if done {
                self.finish_frame(f.header, out)?;
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Reads (part of) a header; returns the input left.
    fn read_header<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], Violation> {
        let first = self.pending.first().or(input.first()).copied();
        let read = self.parse_header(input);
        if read.is_err() && first.is_some_and(|b| b & 0x0F == 0x8) {
            // A malformed close frame still began the closing handshake.
            self.closed = true;
        }
        read
    }

    fn parse_header<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], Violation> {
        let parsed = if self.pending.is_empty() {
            frame::parse_header(input)?
        } else {
            let had = self.pending.len();
            let take = (MAX_HEADER - had).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            match frame::parse_header(&self.pending)? {
                Some((h, n)) => Some((h, n - had)),
                None => {
                    return Ok(&input[take..]);
                }
            }
        };
        let Some((header, used)) = parsed else {
            self.pending.extend_from_slice(input);
            return Ok(&[]);
        };
        self.pending.clear();
        self.start_frame(header)?;
        Ok(&input[used..])
    }

    fn start_frame(&mut self, h: Header) -> Result<(), Violation> {
        if h.rsv1
            && (!self.deflate || matches!(h.opcode, OpCode::Continuation) || h.opcode.is_control())
        {
            return Err(Violation::protocol(
                "RSV1 set without permessage-deflate, or on a continuation or control frame",
            ));
        }
        match h.opcode {
            OpCode::Text | OpCode::Binary if self.message.is_some() => {
                return Err(Violation::protocol(
                    "a new message began before the fragmented one ended",
                ));
            }
            OpCode::Text | OpCode::Binary => {
                self.check_size(0, h.len)?;
                self.message = Some(Box::new(Message {
                    text: h.opcode == OpCode::Text,
                    compressed: h.rsv1,
                    data: Vec::with_capacity(h.len as usize),
                    valid: 0,
                }));
            }
            OpCode::Continuation => {
                let Some(m) = self.message.as_deref_mut() else {
                    return Err(Violation::protocol("continuation frame without a message"));
                };
                let have = m.data.len();
                self.check_size(have, h.len)?;
                if let Some(m) = self.message.as_deref_mut() {
                    m.data.reserve(h.len as usize);
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {}
        }
        self.frame = Some(InFrame { header: h, read: 0 });
        Ok(())
    }

    fn check_size(&self, have: usize, more: u64) -> Result<(), Violation> {
        if (have as u64).saturating_add(more) > self.max_message as u64 {
            return Err(Violation::too_big("message too big"));
        }
        Ok(())
    }

    fn finish_frame(&mut self, h: Header, out: &mut Vec<Incoming>) -> Result<(), Violation> {
        self.frame = None;
        match h.opcode {
            OpCode::Ping => out.push(Incoming::Ping(take(&mut self.pending))),
            OpCode::Pong => out.push(Incoming::Pong(take(&mut self.pending))),
            OpCode::Close => {
                self.closed = true;
                let payload = std::mem::take(&mut self.pending);
                out.push(Incoming::Close(parse_close(&payload)?));
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if let Some(m) = self.message.as_deref_mut() {
                    m.check_utf8(h.fin)?;
                }
                if h.fin {
                    if let Some(m) = self.message.take() {
                        out.push(self.complete(*m)?);
                    }
                }
            }
        }
        Ok(())
    }

    fn complete(&self, m: Message) -> Result<Incoming, Violation> {
        let data = if m.compressed {
            deflate::decompress(&m.data, self.max_message)?
        } else {
            m.data
        };
        if m.text {
            if m.compressed && std::str::from_utf8(&data).is_err() {
                return Err(Violation::invalid_data("text is not valid UTF-8"));
            }
            Ok(Incoming::Text(Bytes::from(data)))
        } else {
            Ok(Incoming::Binary(Bytes::from(data)))
        }
    }
}

fn take(v: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::take(v))
}

/// RFC 6455 §5.5.1 and §7.4: an empty body, or a valid code and UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("close frame with a one-byte body")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close::is_valid(code) {
                return Err(Violation::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| Violation::invalid_data("close reason is not valid UTF-8"))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        let start = f.len();
        f.extend_from_slice(payload);
        apply_mask(&mut f[start..], mask, 0);
        f
    }

    fn feed_all(r: &mut Receiver, bytes: &[u8]) -> Result<Vec<Incoming>, Violation> {
        let mut out = Vec::new();
        r.feed(bytes, &mut out)?;
        Ok(out)
    }

    fn plain() -> Receiver {
        Receiver::new(1000, None)
    }

    #[test]
    fn messages_fragments_and_controls() {
        let mut bytes = client(0x81, b"hello");
        bytes.extend(client(0x02, b"ab"));
        bytes.extend(client(0x89, b"ping")); // control between fragments
        bytes.extend(client(0x80, b"cd"));
        bytes.extend(client(0x8A, b""));
        bytes.extend(client(0x88, &[0x03, 0xE8, b'o', b'k']));
        let out = feed_all(&mut plain(), &bytes).unwrap();
        assert_eq!(
            out,
            vec![
                Incoming::Text(Bytes::from_static(b"hello")),
                Incoming::Ping(Bytes::from_static(b"ping")),
                Incoming::Binary(Bytes::from_static(b"abcd")),
                Incoming::Pong(Bytes::new()),
                Incoming::Close(Some((1000, "ok".into()))),
            ]
        );
    }

    #[test]
    fn violations() {
        let code = |bytes: Vec<u8>| feed_all(&mut plain(), &bytes).unwrap_err().code;
        assert_eq!(code(client(0x80, b"x")), 1002); // continuation first
        assert_eq!(
            code([client(0x01, b"a"), client(0x81, b"b")].concat()),
            1002
        );
        assert_eq!(code(client(0xC1, b"x")), 1002); // RSV1 without deflate
        assert_eq!(code(client(0x81, &[0xff])), 1007);
        assert_eq!(code(client(0x88, &[3])), 1002);
        let mut r = plain();
        assert!(r
            .feed(&client(0x88, &[0x03, 0xED]), &mut Vec::new())
            .is_err());
        assert!(
            r.saw_close(),
            "an invalid close frame still ends the client's side"
        );
        assert_eq!(code(client(0x88, &[0x03, 0xED])), 1002); // 1005
        assert_eq!(code(client(0x88, &[0x03, 0xE8, 0xff])), 1007);
        assert_eq!(code(client(0x82, &[0; 1001])), 1009);
        assert_eq!(
            code([client(0x02, &[0; 600]), client(0x80, &[0; 600])].concat()),
            1009
        );
    }

    #[test]
    fn utf8_fails_fast_inside_a_frame() {
        // The invalid byte arrives while the frame is still incomplete.
        let mut payload = b"abc".to_vec();
        payload.extend_from_slice(&[0xce, 0xba, 0xf4, 0x90, 0x80, 0x80, b'z', b'z']);
        let bytes = client(0x81, &payload);
        let mut r = plain();
        let mut out = Vec::new();
        assert!(r.feed(&bytes[..12], &mut out).is_ok());
        assert_eq!(r.feed(&bytes[12..14], &mut out).unwrap_err().code, 1007);
        // A character split across fragments is fine.
        let euro = "€".as_bytes();
        let bytes = [client(0x01, &euro[..1]), client(0x80, &euro[1..])].concat();
        assert_eq!(
            feed_all(&mut plain(), &bytes).unwrap(),
            vec![Incoming::Text(Bytes::from_static(euro))]
        );
        // …but not cut off at the end of the message.
        assert_eq!(
            feed_all(&mut plain(), &client(0x81, &euro[..2]))
                .unwrap_err()
                .code,
            1007
        );
    }

    #[test]
    fn compressed_messages() {
        let d = Deflate {
            window_bits: 15,
            min_size: 0,
        };
        let mut r = Receiver::new(1000, Some(d));
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut bytes = client(0xC1, &hello);
        // Fragmented: RSV1 on the first frame only.
        bytes.extend(client(0x41, &hello[..3]));
        bytes.extend(client(0x80, &hello[3..]));
        let out = feed_all(&mut r, &bytes).unwrap();
        assert_eq!(out, vec![Incoming::Text(Bytes::from_static(b"Hello")); 2]);
        let mut r = Receiver::new(1000, Some(d));
        assert_eq!(
            feed_all(
                &mut r,
                &[client(0x41, &hello[..3]), client(0xC0, &hello[3..])].concat()
            )
            .unwrap_err()
            .code,
            1002
        );
        let mut r = Receiver::new(1000, Some(d));
        assert_eq!(feed_all(&mut r, &client(0xC9, b"")).unwrap_err().code, 1002);
    }

    #[test]
    fn idle_receiver_holds_no_buffer() {
        let mut r = plain();
        feed_all(&mut r, &client(0x81, b"hi")).unwrap();
        assert_eq!(r.pending.capacity(), 0);
        assert!(r.message.is_none() && r.frame.is_none());
    }

    proptest! {
        /// However the bytes are split across reads, the same events come out.
        #[test]
        fn any_split(cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let mut bytes = client(0x81, "héllo wörld".as_bytes());
            bytes.extend(client(0x02, &[1; 130]));
            bytes.extend(client(0x89, b"p"));
            bytes.extend(client(0x80, &[2; 3]));
            let whole = feed_all(&mut plain(), &bytes).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % bytes.len()).collect();
            cuts.sort_unstable();
            let mut r = plain();
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                r.feed(&bytes[at..c.max(at)], &mut out).unwrap();
                at = c.max(at);
            }
            prop_assert_eq!(out, whole);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = Receiver::new(100, Some(Deflate { window_bits: 15, min_size: 0 }));
            let _ = r.feed(&bytes, &mut Vec::new());
        }
    }
}
