//! The client half of WebSocket (RFC 6455) that a subscriber needs: the
//! upgrade handshake, parsing the server's unmasked frames, and sending masked
//! Pong and Close frames.
//!
//! With `--ws-deflate` the client also offers permessage-deflate (RFC 7692)
//! and inflates the server's compressed messages. It never compresses what it
//! sends (pongs, closes, Socket.IO replies), which the extension allows.
//! Inflating stays cheap: the output buffer is one per worker thread, and so
//! is the decompressor when the server resets its context for every message
//! (`server_no_context_takeover`, what pushgate does); only with context
//! takeover does a connection own a decompressor, created at its first
//! compressed message.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::{Decompress, FlushDecompress, Status};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;

use crate::error::{BenchError, ErrorKind};
use crate::http;
use crate::marker;
use crate::net;
use crate::stats::Subscriber;
use crate::target::Target;
use crate::tls::{self, TlsClient};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted; bounds what one connection can make us buffer.
/// For a compressed message it bounds both the compressed and the inflated size.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub const DEFLATE_EXTENSION: &str = "permessage-deflate";

/// What `--ws-deflate` offers. No context takeover on the client side, as the
/// client never compresses; `client_max_window_bits` only tells the server it
/// may pick a smaller window for the (non-existent) client-to-server direction.
pub const DEFLATE_OFFER: &str =
    "permessage-deflate; client_no_context_takeover; client_max_window_bits";

/// RFC 7692 §7.2.2: the sender strips this tail from each compressed message
/// and the receiver appends it before inflating.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

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
    /// RSV1: under permessage-deflate, the message this frame starts is compressed.
    pub rsv1: bool,
    pub opcode: Opcode,
    pub payload: &'a [u8],
}

/// Parses one server frame at the start of `buf`: the frame and its length on
/// the wire, or `None` when `buf` does not hold all of it yet.
///
/// `deflate` says whether permessage-deflate was negotiated: only then may
/// RSV1 be set, and only on the first frame of a text or binary message
/// (RFC 7692 §6). RSV2 and RSV3 are always an error.
pub fn parse_frame(
    buf: &[u8],
    max_payload: usize,
    deflate: bool,
) -> Result<Option<(Frame<'_>, usize)>, BenchError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(BenchError::protocol(
            "WebSocket frame with RSV2 or RSV3 set, but no extension defines them",
        ));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f)
        .ok_or_else(|| BenchError::protocol(format!("reserved WebSocket opcode {}", b0 & 0x0f)))?;
    let rsv1 = b0 & 0x40 != 0;
    if rsv1 && !deflate {
        return Err(BenchError::protocol(
            "WebSocket frame with RSV1 set, but permessage-deflate was not negotiated",
        ));
    }
    if rsv1 && !matches!(opcode, Opcode::Text | Opcode::Binary) {
        return Err(BenchError::protocol(
            "WebSocket frame with RSV1 set on a continuation or control frame",
        ));
    }
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
            rsv1,
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
    /// A complete text or binary message, inflated if it was compressed.
    Message(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>),
}

/// What the server agreed to in its permessage-deflate answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server compresses every message with an empty window, so each one
    /// inflates on its own; without it the connection keeps one decompressor.
    pub server_no_context_takeover: bool,
    /// The window the server compresses with. Informational: a 2^15 window
    /// inflates whatever a smaller one compressed.
    pub server_max_window_bits: u8,
}

/// Checks the server's `Sec-WebSocket-Extensions` answer against what was
/// offered: `Some` when it accepted permessage-deflate. An extension that was
/// not offered (RFC 6455 §4.1), or an unknown, repeated or invalid parameter
/// (RFC 7692 §5, §7.1), fails the connection.
pub fn parse_extensions(
    answer: Option<&str>,
    offered: bool,
) -> Result<Option<DeflateParams>, BenchError> {
    let mut agreed = None;
    let elements = answer.unwrap_or_default().split(',').map(str::trim);
    for ext in elements.filter(|e| !e.is_empty()) {
        let mut parts = ext.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !offered || !name.eq_ignore_ascii_case(DEFLATE_EXTENSION) {
            return Err(BenchError::protocol(format!(
                "the server answered with WebSocket extension {name:?}, which was not offered"
            )));
        }
        if agreed.is_some() {
            return Err(BenchError::protocol(
                "the server accepted permessage-deflate twice",
            ));
        }
        let mut params = DeflateParams {
            server_no_context_takeover: false,
            server_max_window_bits: 15,
        };
        let mut seen = [false; 4];
        for param in parts {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    (k.trim(), Some(unquoted.unwrap_or(v)))
                }
                None => (param, None),
            };
            let bad = || {
                BenchError::protocol(format!(
                    "bad permessage-deflate parameter {param:?} in the server's answer"
                ))
            };
            let is = |name: &str| key.eq_ignore_ascii_case(name);
            let slot = match value {
                None if is("server_no_context_takeover") => {
                    params.server_no_context_takeover = true;
                    0
                }
                None if is("client_no_context_takeover") => 1,
                Some(v) if is("server_max_window_bits") => {
                    params.server_max_window_bits = window_bits(v).ok_or_else(bad)?;
                    2
                }
                // Allowed because the offer had client_max_window_bits.
                Some(v) if is("client_max_window_bits") => {
                    window_bits(v).ok_or_else(bad)?;
                    3
                }
                _ => return Err(bad()),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(BenchError::protocol(format!(
                    "permessage-deflate parameter {key:?} repeated in the server's answer"
                )));
            }
        }
        agreed = Some(params);
    }
    Ok(agreed)
}

/// RFC 7692 §7.1.2: a decimal integer from 8 to 15 without leading zeros.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// How compressed messages are inflated on one connection.
#[derive(Debug, Default)]
enum Inflate {
    /// permessage-deflate was not negotiated: RSV1 is a protocol error.
    #[default]
    Off,
    /// `server_no_context_takeover`: every message is a DEFLATE stream of its
    /// own, inflated by this thread's shared decompressor after a reset.
    PerMessage,
    /// Context takeover: a message may refer back into earlier ones, so the
    /// connection keeps its own decompressor, created at the first
    /// compressed message so that idle connections do not pay for it.
    Takeover(Option<Decompress>),
}

/// What the connections of one worker thread share for inflating. Borrowed
/// only inside one synchronous `feed`, never across an await.
#[derive(Default)]
struct InflateScratch {
    /// The decompressor of every `Inflate::PerMessage` connection.
    shared: Option<Decompress>,
    /// The inflated message; keeps its capacity for the next one.
    out: Vec<u8>,
}

thread_local! {
    static INFLATE_SCRATCH: RefCell<InflateScratch> = RefCell::new(InflateScratch::default());
}

/// Inflates one complete compressed message (RFC 7692 §7.2.2) and hands it on.
fn inflate_message(
    inflate: &mut Inflate,
    data: &[u8],
    limit: usize,
    on_event: &mut impl FnMut(WsEvent<'_>),
) -> Result<(), BenchError> {
    INFLATE_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let InflateScratch { shared, out } = &mut *scratch;
        let (d, takeover) = match inflate {
            Inflate::Off => {
                return Err(BenchError::new(
                    ErrorKind::Internal,
                    "compressed WebSocket message without permessage-deflate",
                ))
            }
            Inflate::PerMessage => {
                let d = shared.get_or_insert_with(|| Decompress::new(false));
                d.reset(false);
                (d, false)
            }
            Inflate::Takeover(d) => (d.get_or_insert_with(|| Decompress::new(false)), true),
        };
        out.clear();
        let mut ended = inflate_into(d, data, out, limit)?;
        if !ended {
            ended = inflate_into(d, &DEFLATE_TAIL, out, limit)?;
        }
        if ended && takeover {
            // A final block (BFINAL) ended the DEFLATE stream; whatever comes
            // next starts a new one.
            d.reset(false);
        }
        on_event(WsEvent::Message(out));
        Ok(())
    })
}

/// Feeds all of `input` to `d`, appending to `out` but never past `limit`
/// bytes. Returns whether the DEFLATE stream ended (a final block).
fn inflate_into(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, BenchError> {
    loop {
        if out.len() == out.capacity() {
            // Doubling, but at most to one byte past the limit: reaching that
            // byte is what tells an oversized message from one that fits.
            let grow = out.len().max(4096).min(limit + 1 - out.len());
            out.reserve(grow);
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|e| {
                BenchError::protocol(format!("invalid compressed WebSocket message: {e}"))
            })?;
        if out.len() > limit {
            return Err(BenchError::protocol(format!(
                "compressed WebSocket message inflates to more than {limit} bytes"
            )));
        }
        let consumed = (d.total_in() - in_before) as usize;
        let progressed = consumed > 0 || d.total_out() > out_before;
        input = &input[consumed..];
        let room = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(true),
            // All input taken and room to spare: nothing more is pending.
            _ if input.is_empty() && room => return Ok(false),
            _ if !progressed && room => {
                return Err(BenchError::protocol(
                    "invalid compressed WebSocket message: the decompressor is stuck",
                ))
            }
            _ => {}
        }
    }
}

/// Turns the byte stream into events, keeping only an unfinished frame or
/// fragmented message between reads.
#[derive(Debug)]
pub struct WsDecoder {
    pending: Vec<u8>,
    /// The payload so far of a fragmented message; emptied (and released if
    /// large) once the message is complete.
    fragments: Vec<u8>,
    /// `Some(compressed)` while a fragmented message is incomplete.
    fragmented: Option<bool>,
    inflate: Inflate,
    /// Compressed messages inflated so far.
    compressed: u64,
    /// Largest frame, message and inflated message accepted.
    max_message: usize,
    /// `Some` once a Close frame arrived, with its status code if it had one.
    closed: Option<Option<u16>>,
}

impl Default for WsDecoder {
    fn default() -> Self {
        WsDecoder {
            pending: Vec::new(),
            fragments: Vec::new(),
            fragmented: None,
            inflate: Inflate::Off,
            compressed: 0,
            max_message: MAX_MESSAGE,
            closed: None,
        }
    }
}

impl WsDecoder {
    pub fn new(pending: Vec<u8>) -> Self {
        WsDecoder {
            pending,
            ..Self::default()
        }
    }

    /// Accepts compressed messages as the server's permessage-deflate answer
    /// agreed; `None` keeps RSV1 a protocol error.
    pub fn with_deflate(mut self, params: Option<DeflateParams>) -> Self {
        self.inflate = match params {
            None => Inflate::Off,
            Some(p) if p.server_no_context_takeover => Inflate::PerMessage,
            Some(_) => Inflate::Takeover(None),
        };
        self
    }

    /// Lowers the size limit for frames, messages and inflated messages.
    pub fn with_max_message(mut self, max: usize) -> Self {
        self.max_message = max.min(MAX_MESSAGE);
        self
    }

    /// Compressed messages inflated so far.
    pub fn compressed_messages(&self) -> u64 {
        self.compressed
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
            fragmented,
            inflate,
            compressed,
            max_message,
            closed,
        } = self;
        if closed.is_some() {
            return Ok(());
        }
        let max = *max_message;
        let deflate = !matches!(inflate, Inflate::Off);
        net::feed_with_pending(pending, input, |buf| {
            let mut used = 0;
            while let Some((frame, n)) = parse_frame(&buf[used..], max, deflate)? {
                used += n;
                match frame.opcode {
                    Opcode::Text | Opcode::Binary => {
                        if fragmented.is_some() {
                            return Err(BenchError::protocol(
                                "new WebSocket message inside a fragmented one",
                            ));
                        }
                        if !frame.fin {
                            fragments.extend_from_slice(frame.payload);
                            *fragmented = Some(frame.rsv1);
                        } else if frame.rsv1 {
                            *compressed += 1;
                            inflate_message(inflate, frame.payload, max, &mut on_event)?;
                        } else {
                            on_event(WsEvent::Message(frame.payload));
                        }
                    }
                    Opcode::Continuation => {
                        let Some(is_compressed) = *fragmented else {
                            return Err(BenchError::protocol(
                                "WebSocket continuation frame without a message to continue",
                            ));
                        };
                        if fragments.len() + frame.payload.len() > max {
                            return Err(BenchError::protocol(format!(
                                "fragmented WebSocket message exceeds {max} bytes"
                            )));
                        }
                        fragments.extend_from_slice(frame.payload);
                        if frame.fin {
                            *fragmented = None;
                            if is_compressed {
                                *compressed += 1;
                                inflate_message(inflate, fragments, max, &mut on_event)?;
                            } else {
                                on_event(WsEvent::Message(fragments));
                            }
                            net::trim(fragments);
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

/// Subscribes over WebSocket and reads until the connection ends. With
/// `deflate`, offers permessage-deflate and counts in the run's totals whether
/// the server accepted it and how many compressed messages arrived.
pub async fn run(
    tls: Option<&TlsClient>,
    target: &Target,
    source: Option<IpAddr>,
    sub: &mut Subscriber,
    mode: WsMode,
    seed: u64,
    deflate: bool,
) -> Result<(), BenchError> {
    let mut stream = tls::connect(tls, target.addr, source).await?;
    let mut rng = XorShift::new(seed);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = STANDARD.encode(nonce);
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n",
        target.path_and_query, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| BenchError::io("sending WebSocket handshake", e))?;
    drop(request);
    let mut pending = Vec::new();
    let head = http::read_head(&mut stream, &mut pending).await?;
    let agreed = check_handshake(&head, &key, deflate)?;
    sub.connected();
    if agreed.is_some() {
        sub.shared().ws_deflate_negotiated.fetch_add(1, Relaxed);
    }
    if mode == WsMode::Plain {
        sub.mark_subscribed();
    }

    let mut decoder = WsDecoder::new(Vec::new()).with_deflate(agreed);
    let mut out = Vec::new();
    let mut refused = false;
    let mut handle = |data: &[u8], sub: &mut Subscriber, out: &mut Vec<u8>| {
        let now = marker::unix_nanos();
        let compressed_before = decoder.compressed_messages();
        let fed = decoder.feed(data, |event| match event {
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
        });
        // One shared update per read, not per message.
        let compressed = decoder.compressed_messages() - compressed_before;
        if compressed > 0 {
            sub.shared()
                .ws_deflate_messages
                .fetch_add(compressed, Relaxed);
        }
        fed?;
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

/// Checks the 101 answer; returns the permessage-deflate parameters if the
/// server accepted the extension (only possible when `offered`).
fn check_handshake(
    head: &http::ResponseHead,
    key: &str,
    offered: bool,
) -> Result<Option<DeflateParams>, BenchError> {
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
    parse_extensions(head.ws_extensions.as_deref(), offered)
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
            let (frame, n) = parse_frame(&wire, MAX_MESSAGE, false).unwrap().unwrap();
            assert_eq!(n, wire.len());
            assert_eq!(frame.payload.len(), len);
            assert!(frame.fin);
            assert_eq!(frame.opcode, Opcode::Text);
            // Every proper prefix is incomplete, never an error.
            for cut in [0, 1, 2, 3, 9, wire.len() - 1] {
                if cut < wire.len() {
                    assert!(parse_frame(&wire[..cut], MAX_MESSAGE, false)
                        .unwrap()
                        .is_none());
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
            vec![0x81 | 0x20, 0],                       // RSV2
            vec![0x81 | 0x10, 0],                       // RSV3
            vec![0x83, 0],                              // reserved opcode
            vec![0x81, 0x80, 0, 0, 0, 0],               // masked
            vec![0x09, 0],                              // fragmented ping
            server_frame(true, 9, &[0; 126]),           // oversized ping
            vec![0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], // 64-bit top bit
        ];
        for wire in bad {
            assert!(parse_frame(&wire, MAX_MESSAGE, false).is_err(), "{wire:?}");
        }
        assert!(parse_frame(&server_frame(true, 1, &[0; 100]), 99, false).is_err());
        let mut d = WsDecoder::default();
        assert!(events(&mut d, &server_frame(true, 0, b"x")).is_err());
        let mut d = WsDecoder::default();
        let mut wire = server_frame(false, 1, b"a");
        wire.extend(server_frame(true, 1, b"b"));
        assert!(events(&mut d, &wire).is_err());
        let mut d = WsDecoder::default();
        assert!(events(&mut d, &server_frame(true, 8, b"x")).is_err());
    }

    /// A server frame with RSV1 set: the first frame of a compressed message.
    fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = server_frame(fin, opcode, payload);
        f[0] |= 0x40;
        f
    }

    const NO_TAKEOVER: DeflateParams = DeflateParams {
        server_no_context_takeover: true,
        server_max_window_bits: 15,
    };
    const TAKEOVER: DeflateParams = DeflateParams {
        server_no_context_takeover: false,
        server_max_window_bits: 15,
    };

    fn deflating(params: DeflateParams) -> WsDecoder {
        WsDecoder::default().with_deflate(Some(params))
    }

    /// The messages (as text) and other events `input` gives, fed in pieces of `step`.
    fn messages(
        decoder: &mut WsDecoder,
        input: &[u8],
        step: usize,
    ) -> Result<Vec<String>, BenchError> {
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            decoder.feed(piece, |e| {
                out.push(match e {
                    WsEvent::Message(m) => String::from_utf8_lossy(m).into_owned(),
                    WsEvent::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                    WsEvent::Close(c) => format!("close:{c:?}"),
                })
            })?;
        }
        Ok(out)
    }

    /// What a server with `c` sends for `data`: DEFLATE, sync-flushed, with
    /// the `00 00 ff ff` tail removed (RFC 7692 §7.2.1).
    fn compress(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let start = c.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len());
            }
            let done = (c.total_in() - start) as usize;
            c.compress_vec(&data[done..], &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&DEFLATE_TAIL));
        out.truncate(out.len() - DEFLATE_TAIL.len());
        out
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed, in one frame, next to
    /// uncompressed messages (servers skip small ones), under both modes.
    #[test]
    fn deflate_hello_in_one_frame() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut wire = compressed_frame(true, 1, &hello);
        wire.extend(server_frame(true, 1, b"plain"));
        wire.extend(compressed_frame(true, 2, &hello));
        assert_eq!(&wire[..2], &[0xc1, 0x07]);
        for params in [NO_TAKEOVER, TAKEOVER] {
            for step in [1, 3, wire.len()] {
                let mut d = deflating(params);
                let got = messages(&mut d, &wire, step).unwrap();
                assert_eq!(got, ["Hello", "plain", "Hello"], "{params:?} step {step}");
                assert_eq!(d.compressed_messages(), 2);
            }
        }
    }

    /// RFC 7692 §7.2.3.2–5: context takeover (the second "Hello" is a
    /// back-reference into the first), a stored block, BFINAL, two blocks.
    #[test]
    fn deflate_rfc_examples() {
        let first = compressed_frame(true, 1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut wire = first.clone();
        wire.extend(compressed_frame(true, 1, &[0xf2, 0x00, 0x11, 0x00, 0x00]));
        let mut d = deflating(TAKEOVER);
        assert_eq!(messages(&mut d, &wire, 1).unwrap(), ["Hello", "Hello"]);
        // Without context takeover the second message cannot be inflated.
        let mut d = deflating(NO_TAKEOVER);
        let err = messages(&mut d, &wire, wire.len()).unwrap_err();
        assert!(err.to_string().contains("invalid compressed"), "{err}");

        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let two_blocks = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        for params in [NO_TAKEOVER, TAKEOVER] {
            let mut wire = compressed_frame(true, 1, &stored);
            wire.extend(compressed_frame(true, 1, &bfinal));
            // After BFINAL a new stream starts, with or without takeover.
            wire.extend(first.clone());
            wire.extend(compressed_frame(true, 1, &two_blocks));
            let mut d = deflating(params);
            assert_eq!(
                messages(&mut d, &wire, 2).unwrap(),
                ["Hello", "Hello", "Hello", "Hello"],
                "{params:?}"
            );
        }
    }

    /// RFC 7692 §7.2.3.1 fragmented: RSV1 on the first frame only, with a
    /// ping between the fragments.
    #[test]
    fn deflate_fragmented_message() {
        let mut wire = compressed_frame(false, 1, &[0xf2, 0x48, 0xcd]);
        wire.extend(server_frame(true, 9, b"hb"));
        wire.extend(server_frame(true, 0, &[0xc9, 0xc9, 0x07, 0x00]));
        assert_eq!(&wire[..2], &[0x41, 0x03]);
        wire.extend(server_frame(false, 1, b"pl"));
        wire.extend(server_frame(true, 0, b"ain"));
        for params in [NO_TAKEOVER, TAKEOVER] {
            for step in [1, 5, wire.len()] {
                let mut d = deflating(params);
                assert_eq!(
                    messages(&mut d, &wire, step).unwrap(),
                    ["ping:hb", "Hello", "plain"],
                    "{params:?} step {step}"
                );
                assert_eq!(d.compressed_messages(), 1);
            }
        }
    }

    #[test]
    fn deflate_rsv1_on_continuation_is_an_error() {
        let mut wire = compressed_frame(false, 1, &[0xf2, 0x48, 0xcd]);
        wire.extend(compressed_frame(true, 0, &[0xc9, 0xc9, 0x07, 0x00]));
        let mut d = deflating(NO_TAKEOVER);
        let err = messages(&mut d, &wire, wire.len()).unwrap_err();
        assert!(err.to_string().contains("continuation"), "{err}");
        // Nor on control frames.
        let mut d = deflating(NO_TAKEOVER);
        assert!(messages(&mut d, &compressed_frame(true, 9, b"hb"), 64).is_err());
        // RSV2/RSV3 stay errors with deflate.
        let mut rsv2 = server_frame(true, 1, b"x");
        rsv2[0] |= 0x20;
        assert!(messages(&mut deflating(TAKEOVER), &rsv2, 64).is_err());
    }

    #[test]
    fn deflate_rsv1_without_negotiation_is_an_error() {
        let wire = compressed_frame(true, 1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut d = WsDecoder::default();
        let err = messages(&mut d, &wire, wire.len()).unwrap_err();
        assert!(err.to_string().contains("not negotiated"), "{err}");
        let mut d = WsDecoder::default().with_deflate(None);
        assert!(messages(&mut d, &wire, 1).is_err());
    }

    #[test]
    fn deflate_size_limit_and_garbage() {
        let data = vec![b'a'; 100_000];
        let packed = compress(
            &mut flate2::Compress::new(flate2::Compression::default(), false),
            &data,
        );
        assert!(packed.len() < 1000);
        let wire = compressed_frame(true, 1, &packed);
        let mut d = deflating(NO_TAKEOVER).with_max_message(100_000);
        assert_eq!(
            messages(&mut d, &wire, wire.len()).unwrap()[0].len(),
            100_000
        );
        let mut d = deflating(NO_TAKEOVER).with_max_message(99_999);
        let err = messages(&mut d, &wire, wire.len()).unwrap_err();
        assert!(
            err.to_string().contains("inflates to more than 99999"),
            "{err}"
        );

        // Not DEFLATE (block type 3 is reserved).
        let mut d = deflating(TAKEOVER);
        assert!(messages(&mut d, &compressed_frame(true, 1, &[0xff, 0xff]), 64).is_err());
    }

    /// A stream of messages from one compressor with context takeover, some
    /// large and incompressible, some too small to compress (sent plain),
    /// some fragmented: every one arrives intact.
    #[test]
    fn deflate_context_takeover_stream() {
        let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut rng = XorShift::new(7);
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for i in 0..40usize {
            let len = [10, 300, 5_000, 200_000][i % 4];
            let msg: Vec<u8> = if i % 8 == 3 {
                (0..len)
                    .map(|_| b'a' + (rng.next_u64() % 26) as u8)
                    .collect()
            } else {
                format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(len)).into_bytes()
            };
            if msg.len() < 64 {
                wire.extend(server_frame(true, 1, &msg));
            } else {
                let packed = compress(&mut c, &msg);
                if i % 3 == 0 {
                    let (a, b) = packed.split_at(packed.len() / 2);
                    wire.extend(compressed_frame(false, 1, a));
                    wire.extend(server_frame(true, 0, b));
                } else {
                    wire.extend(compressed_frame(true, 1, &packed));
                }
            }
            want.push(String::from_utf8(msg).unwrap());
        }
        for step in [1000, 65536] {
            let mut d = deflating(TAKEOVER);
            assert_eq!(messages(&mut d, &wire, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn deflate_negotiation_answers() {
        let ok = |answer: Option<&str>| parse_extensions(answer, true).unwrap();
        assert_eq!(ok(None), None);
        assert_eq!(ok(Some("")), None);
        assert_eq!(ok(Some("permessage-deflate")), Some(TAKEOVER));
        assert_eq!(
            ok(Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )),
            Some(NO_TAKEOVER)
        );
        assert_eq!(
            ok(Some(
                "Permessage-Deflate ; Server_No_Context_Takeover;server_max_window_bits=\"10\"; client_max_window_bits=9"
            )),
            Some(DeflateParams {
                server_no_context_takeover: true,
                server_max_window_bits: 10
            })
        );
        let bad = [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate;",
        ];
        for answer in bad {
            assert!(parse_extensions(Some(answer), true).is_err(), "{answer}");
        }
        // An extension in the answer that was never offered.
        assert!(parse_extensions(Some("permessage-deflate"), false).is_err());
        assert_eq!(parse_extensions(None, false).unwrap(), None);
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
