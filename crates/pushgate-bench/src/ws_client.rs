//! The client half of WebSocket (RFC 6455) that a subscriber needs: the
//! upgrade handshake, parsing the server's unmasked frames, and sending masked
//! Pong and Close frames.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;

use crate::error::{BenchError, ErrorKind};
use crate::http;
use crate::marker;
use crate::net;
use crate::stats::Subscriber;
use crate::target::Target;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted; bounds what one connection can make us buffer.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        self as u8 >= 8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: &'a [u8],
}

/// Parses one server frame at the start of `buf`: the frame and its length on
/// the wire, or `None` when `buf` does not hold all of it yet.
pub fn parse_frame(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Frame<'_>, usize)>, BenchError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(BenchError::protocol(
            "WebSocket frame with RSV bits set, but no extension was negotiated",
        ));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f)
        .ok_or_else(|| BenchError::protocol(format!("reserved WebSocket opcode {}", b0 & 0x0f)))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 != 0 {
        // RFC 6455 §5.1: a client must fail the connection on a masked server frame.
        return Err(BenchError::protocol(
            "masked WebSocket frame from the server",
        ));
    }
    let (len, header) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(BenchError::protocol(
                        "64-bit frame length with the top bit set",
                    ));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(BenchError::protocol(
            "fragmented or oversized WebSocket control frame",
        ));
    }
    if len > max_payload as u64 {
        return Err(BenchError::protocol(format!(
            "WebSocket frame of {len} bytes exceeds the {max_payload}-byte limit"
        )));
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload: &buf[header..total],
        },
        total,
    )))
}

/// Appends a client frame: always masked (RFC 6455 §5.3), always FIN.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// What a connection must react to.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A complete text or binary message.
    Message(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>),
}

/// Turns the byte stream into events, keeping only an unfinished frame or
/// fragmented message between reads.
#[derive(Debug, Default)]
pub struct WsDecoder {
    pending: Vec<u8>,
    fragments: Option<Vec<u8>>,
    /// `Some` once a Close frame arrived, with its status code if it had one.
    closed: Option<Option<u16>>,
}

impl WsDecoder {
    pub fn new(pending: Vec<u8>) -> Self {
        WsDecoder {
            pending,
            ..Self::default()
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The status code of the server's Close frame, if it sent one with a code.
    pub fn close_code(&self) -> Option<u16> {
        self.closed.flatten()
    }

    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(WsEvent<'_>),
    ) -> Result<(), BenchError> {
        let WsDecoder {
            pending,
            fragments,
            closed,
        } = self;
        if closed.is_some() {
            return Ok(());
        }
        net::feed_with_pending(pending, input, |buf| {
            let mut used = 0;
            while let Some((frame, n)) = parse_frame(&buf[used..], MAX_MESSAGE)? {
                used += n;
                match frame.opcode {
                    Opcode::Text | Opcode::Binary => {
                        if fragments.is_some() {
                            return Err(BenchError::protocol(
                                "new WebSocket message inside a fragmented one",
                            ));
                        }
                        if frame.fin {
                            on_event(WsEvent::Message(frame.payload));
                        } else {
                            *fragments = Some(frame.payload.to_vec());
                        }
                    }
                    Opcode::Continuation => {
                        let Some(msg) = fragments.as_mut() else {
                            return Err(BenchError::protocol(
                                "WebSocket continuation frame without a message to continue",
                            ));
                        };
                        if msg.len() + frame.payload.len() > MAX_MESSAGE {
                            return Err(BenchError::protocol(format!(
                                "fragmented WebSocket message exceeds {MAX_MESSAGE} bytes"
                            )));
                        }
                        msg.extend_from_slice(frame.payload);
                        if frame.fin {
                            let msg = fragments.take().unwrap_or_default();
                            on_event(WsEvent::Message(&msg));
                        }
                    }
                    Opcode::Ping => on_event(WsEvent::Ping(frame.payload)),
                    Opcode::Pong => {}
                    Opcode::Close => {
                        let code = match frame.payload {
                            [] => None,
                            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                            [_] => {
                                return Err(BenchError::protocol(
                                    "one-byte WebSocket close payload",
                                ))
                            }
                        };
                        *closed = Some(code);
                        on_event(WsEvent::Close(code));
                        // Nothing after a Close frame is meaningful.
                        return Ok(buf.len());
                    }
                }
            }
            Ok(used)
        })
    }
}

/// Cheap PRNG for masking keys and handshake nonces. Masking exists to stop
/// attacker-chosen bytes from looking like HTTP to intermediaries; our
/// payloads are our own and travel over loopback, so unpredictability against
/// an adversary is not needed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// What runs on top of the WebSocket, and so what "subscribed" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    /// pushgate: the server's `{"type":"subscribed",…}` messages.
    Pushgate,
    /// Any other server that subscribes on connect: the completed handshake.
    Plain,
    /// Socket.IO v4 on a WebSocket-only Engine.IO connection: the server's
    /// namespace connect (`40…`) answering ours.
    SocketIo,
}

/// What a Socket.IO connection must do about one Engine.IO/Socket.IO packet
/// (one WebSocket message) that carried no marker.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketIoStep {
    /// Send this text message.
    Reply(&'static [u8]),
    /// The namespace accepted us.
    Connected,
    /// The namespace refused us (`44…`) or Engine.IO closed (`1`).
    Refused,
    Ignore,
}

/// Engine.IO v4 packet types are one digit; Socket.IO's follow inside a `4`
/// (message) packet: `0` open → we connect to `/` with `40`; `2` ping → `3`
/// pong; `40…` connected; `44…` connect error; `42[…]` events (searched for
/// the marker before this is asked).
pub fn socketio_step(msg: &[u8]) -> SocketIoStep {
    match msg {
        [b'0', ..] => SocketIoStep::Reply(b"40"),
        [b'2'] => SocketIoStep::Reply(b"3"),
        [b'4', b'0', ..] => SocketIoStep::Connected,
        [b'4', b'4', ..] | [b'1', ..] => SocketIoStep::Refused,
        _ => SocketIoStep::Ignore,
    }
}

/// Subscribes over WebSocket and reads until the connection ends.
pub async fn run(
    target: &Target,
    source: Option<IpAddr>,
    sub: &mut Subscriber,
    mode: WsMode,
    seed: u64,
) -> Result<(), BenchError> {
    let mut stream = net::connect(target.addr, source)
        .await
        .map_err(|e| BenchError::new(ErrorKind::Connect, format!("connect: {e}")))?;
    let mut rng = XorShift::new(seed);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = STANDARD.encode(nonce);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path_and_query, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| BenchError::io("sending WebSocket handshake", e))?;
    drop(request);
    let mut pending = Vec::new();
    let head = http::read_head(&mut stream, &mut pending).await?;
    check_handshake(&head, &key)?;
    sub.connected();
    if mode == WsMode::Plain {
        sub.mark_subscribed();
    }

    let mut decoder = WsDecoder::new(Vec::new());
    let mut out = Vec::new();
    let mut refused = false;
    let mut handle = |data: &[u8], sub: &mut Subscriber, out: &mut Vec<u8>| {
        let now = marker::unix_nanos();
        decoder.feed(data, |event| match event {
            WsEvent::Message(msg) => {
                if sub.on_message(msg, now) {
                    return;
                }
                match mode {
                    WsMode::Pushgate if is_subscribed_ack(msg) => sub.ack(),
                    WsMode::SocketIo => match socketio_step(msg) {
                        SocketIoStep::Reply(text) => {
                            write_client_frame(out, Opcode::Text, text, rng.mask())
                        }
                        SocketIoStep::Connected => sub.mark_subscribed(),
                        SocketIoStep::Refused => refused = true,
                        SocketIoStep::Ignore => {}
                    },
                    _ => {}
                }
            }
            WsEvent::Ping(payload) => write_client_frame(out, Opcode::Pong, payload, rng.mask()),
            WsEvent::Close(code) => {
                // Echo the status code, as RFC 6455 §5.5.1 suggests.
                let code = code.map(u16::to_be_bytes);
                let body: &[u8] = match &code {
                    Some(b) => b,
                    None => &[],
                };
                write_client_frame(out, Opcode::Close, body, rng.mask());
            }
        })?;
        if refused {
            return Err(BenchError::new(
                ErrorKind::Connect,
                "the Socket.IO server refused the connection or closed it",
            ));
        }
        Ok::<bool, BenchError>(decoder.is_closed())
    };
    // Frames that arrived together with the handshake response.
    let mut closed = handle(&pending, sub, &mut out)?;
    drop(pending);
    loop {
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| BenchError::io("sending WebSocket control frame", e))?;
            net::trim(&mut out);
        }
        if closed {
            // Kept distinct per code: pushgate's 4000 (fell behind) and 4001
            // (idle) mean different things for a benchmark.
            let code = decoder
                .close_code()
                .map_or("no code".into(), |c| format!("code {c}"));
            return Err(BenchError::new(
                ErrorKind::Connect,
                format!("server closed the WebSocket ({code})"),
            ));
        }
        closed = match net::read_with(&mut stream, |data| handle(data, sub, &mut out)).await {
            Ok(Some(r)) => r?,
            Ok(None) => {
                return Err(BenchError::new(
                    ErrorKind::Connect,
                    "server closed the TCP connection without a WebSocket Close",
                ))
            }
            Err(e) => return Err(BenchError::io("reading WebSocket", e)),
        };
    }
}

fn check_handshake(head: &http::ResponseHead, key: &str) -> Result<(), BenchError> {
    if head.status != 101 {
        return Err(BenchError::new(
            ErrorKind::Http,
            format!("WebSocket upgrade answered {}", head.status_line()),
        ));
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        return Err(BenchError::protocol(
            "101 response without Upgrade: websocket and Connection: Upgrade",
        ));
    }
    if head.ws_accept.as_deref() != Some(accept_key(key).as_str()) {
        return Err(BenchError::protocol(
            "wrong Sec-WebSocket-Accept in the 101 response",
        ));
    }
    Ok(())
}

fn is_subscribed_ack(msg: &[u8]) -> bool {
    memchr::memmem::find(msg, br#""type":"subscribed""#).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(len as u8);
        } else if len <= 0xffff {
            f.push(126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn events(decoder: &mut WsDecoder, input: &[u8]) -> Result<Vec<String>, BenchError> {
        let mut out = Vec::new();
        decoder.feed(input, |e| {
            out.push(match e {
                WsEvent::Message(m) => format!("msg:{}", m.len()),
                WsEvent::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                WsEvent::Close(c) => format!("close:{c:?}"),
            })
        })?;
        Ok(out)
    }

    #[test]
    fn lengths_7_16_and_64_bit() {
        for len in [0usize, 125, 126, 65535, 65536, 70000] {
            let payload = vec![b'a'; len];
            let wire = server_frame(true, 1, &payload);
            let (frame, n) = parse_frame(&wire, MAX_MESSAGE).unwrap().unwrap();
            assert_eq!(n, wire.len());
            assert_eq!(frame.payload.len(), len);
            assert!(frame.fin);
            assert_eq!(frame.opcode, Opcode::Text);
            // Every proper prefix is incomplete, never an error.
            for cut in [0, 1, 2, 3, 9, wire.len() - 1] {
                if cut < wire.len() {
                    assert!(parse_frame(&wire[..cut], MAX_MESSAGE).unwrap().is_none());
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_with_control_frames_between_fragments() {
        let mut wire = server_frame(true, 1, br#"{"type":"subscribed"}"#);
        wire.extend(server_frame(false, 1, &[b'x'; 200]));
        wire.extend(server_frame(true, 9, b"hb"));
        wire.extend(server_frame(false, 0, &[b'y'; 70_000]));
        wire.extend(server_frame(true, 10, b""));
        wire.extend(server_frame(true, 0, b"end"));
        wire.extend(server_frame(true, 2, b"bin"));
        wire.extend(server_frame(true, 8, &1001u16.to_be_bytes()));
        wire.extend(server_frame(true, 1, b"after close"));
        for step in [1, 7, 1000, wire.len()] {
            let mut d = WsDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(events(&mut d, piece).unwrap());
            }
            assert_eq!(
                got,
                vec![
                    "msg:21",
                    "ping:hb",
                    "msg:70203",
                    "msg:3",
                    "close:Some(1001)"
                ],
                "step {step}"
            );
            assert!(d.is_closed());
            assert!(d.pending.is_empty());
        }
    }

    #[test]
    fn protocol_violations() {
        let bad = [
            vec![0x81 | 0x40, 0],                       // RSV1
            vec![0x83, 0],                              // reserved opcode
            vec![0x81, 0x80, 0, 0, 0, 0],               // masked
            vec![0x09, 0],                              // fragmented ping
            server_frame(true, 9, &[0; 126]),           // oversized ping
            vec![0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], // 64-bit top bit
        ];
        for wire in bad {
            assert!(parse_frame(&wire, MAX_MESSAGE).is_err(), "{wire:?}");
        }
        assert!(parse_frame(&server_frame(true, 1, &[0; 100]), 99).is_err());
        let mut d = WsDecoder::default();
        assert!(events(&mut d, &server_frame(true, 0, b"x")).is_err());
        let mut d = WsDecoder::default();
        let mut wire = server_frame(false, 1, b"a");
        wire.extend(server_frame(true, 1, b"b"));
        assert!(events(&mut d, &wire).is_err());
        let mut d = WsDecoder::default();
        assert!(events(&mut d, &server_frame(true, 8, b"x")).is_err());
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        let mask = [1, 2, 3, 4];
        write_client_frame(&mut out, Opcode::Pong, b"hello", mask);
        assert_eq!(out[0], 0x8a);
        assert_eq!(out[1], 0x80 | 5);
        assert_eq!(&out[2..6], &mask);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(unmasked, b"hello");

        let mut big = Vec::new();
        write_client_frame(&mut big, Opcode::Binary, &[0; 300], mask);
        assert_eq!(&big[..4], &[0x82, 0x80 | 126, 1, 44]);
        assert_eq!(big.len(), 4 + 4 + 300);
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_subscribed_ack(
            br#"{"type":"subscribed","channel":"a","epoch":"e","offset":0}"#
        ));
        assert!(!is_subscribed_ack(br#"{"type":"message"}"#));
    }

    #[test]
    fn socketio_packets() {
        let open = br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(socketio_step(open), SocketIoStep::Reply(b"40"));
        assert_eq!(socketio_step(b"2"), SocketIoStep::Reply(b"3"));
        assert_eq!(socketio_step(br#"40{"sid":"b"}"#), SocketIoStep::Connected);
        assert_eq!(
            socketio_step(br#"44{"message":"no"}"#),
            SocketIoStep::Refused
        );
        assert_eq!(socketio_step(b"1"), SocketIoStep::Refused);
        assert_eq!(socketio_step(br#"42["message","x"]"#), SocketIoStep::Ignore);
        assert_eq!(socketio_step(b""), SocketIoStep::Ignore);
    }
}
