//! The client side of HTTP/1.1 that the generator needs: response heads,
//! body framing (including a streaming chunked decoder) and a keep-alive
//! request/response connection for publishing and long-polling.
//!
//! Chunked decoding is hand-written rather than taken from hyper because SSE
//! bodies are endless streams that must be decoded incrementally from a shared
//! scratch buffer without a per-connection body buffer; a byte-level state
//! machine does that in a few dozen lines and keeps no bytes between reads.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::error::{BenchError, ErrorKind};
use crate::net::{self, Stream};
use crate::tls::{self, TlsClient};

/// Longest response head accepted; real servers send a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
    /// No length: the body runs until the server closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub event_stream: bool,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_accept: Option<String>,
    /// Every `Sec-WebSocket-Extensions` value, joined with ", ".
    pub ws_extensions: Option<String>,
    /// `Last-Modified` and `Etag`, which plain long-poll sends back.
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

impl ResponseHead {
    pub fn status_line(&self) -> String {
        format!("{} {}", self.status, self.reason)
    }
}

/// Parses a complete response head at the start of `buf`, returning it and its
/// length, or `None` if more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, BenchError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(BenchError::protocol(format!(
                "malformed HTTP response head: {e}"
            )))
        }
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut head = ResponseHead {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        framing: BodyFraming::UntilClose,
        keep_alive: !http10,
        event_stream: false,
        upgrade_websocket: false,
        connection_upgrade: false,
        ws_accept: None,
        ws_extensions: None,
        last_modified: None,
        etag: None,
    };
    let mut chunked = false;
    let mut length = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= has_token(value, "chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| BenchError::protocol(format!("bad Content-Length {value:?}")))?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                head.keep_alive = false;
            }
            if has_token(value, "keep-alive") {
                head.keep_alive = true;
            }
            head.connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("content-type") {
            head.event_stream |= value
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            head.ws_accept = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            match &mut head.ws_extensions {
                Some(all) => {
                    all.push_str(", ");
                    all.push_str(value);
                }
                None => head.ws_extensions = Some(value.to_string()),
            }
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_string());
        }
    }
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::Length(0)
    } else if chunked {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else {
        BodyFraming::UntilClose
    };
    Ok(Some((head, len)))
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Reads until a whole response head is in `pending`, removes it from there and
/// returns it; body bytes that came with it stay in `pending`.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    pending: &mut Vec<u8>,
) -> Result<ResponseHead, BenchError> {
    loop {
        if let Some((head, len)) = parse_head(pending)? {
            pending.drain(..len);
            return Ok(head);
        }
        if pending.len() > MAX_HEAD {
            return Err(BenchError::protocol(format!(
                "response head longer than {MAX_HEAD} bytes"
            )));
        }
        let got = net::read_with(stream, |data| pending.extend_from_slice(data))
            .await
            .map_err(|e| BenchError::io("reading response head", e))?;
        if got.is_none() {
            return Err(BenchError::new(
                ErrorKind::Connect,
                "connection closed before a response head arrived",
            ));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size {
        value: u64,
        digits: u8,
    },
    /// Chunk extensions and the CR up to the LF that ends the size line.
    SizeLineRest {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer fields, ended by an empty line.
    Trailer {
        line_len: usize,
    },
    Done,
}

/// Incremental `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1).
///
/// It keeps only a few integers of state, so input may be split anywhere.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, passing chunk data to `out`. Returns the bytes consumed:
    /// all of `input` unless the body ended inside it.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<usize, BenchError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size { value, digits } => {
                    if let Some(d) = hex_value(b) {
                        if digits >= 15 {
                            return Err(BenchError::protocol("chunk size too large"));
                        }
                        self.state = ChunkState::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                        };
                        i += 1;
                    } else if digits == 0 {
                        return Err(BenchError::protocol(format!(
                            "chunk size line starts with byte 0x{b:02x}, not a hex digit"
                        )));
                    } else {
                        self.state = ChunkState::SizeLineRest { value };
                    }
                }
                ChunkState::SizeLineRest { value } => {
                    if b == b'\n' {
                        self.state = if value == 0 {
                            ChunkState::Trailer { line_len: 0 }
                        } else {
                            ChunkState::Data { remaining: value }
                        };
                    }
                    i += 1;
                }
                ChunkState::Data { remaining } => {
                    let avail = (input.len() - i) as u64;
                    let n = remaining.min(avail) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                }
                ChunkState::DataCr => {
                    self.state = match b {
                        b'\r' => ChunkState::DataLf,
                        // A bare LF is tolerated, as most servers' parsers do.
                        b'\n' => ChunkState::Size {
                            value: 0,
                            digits: 0,
                        },
                        _ => return Err(BenchError::protocol("chunk data not followed by CRLF")),
                    };
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BenchError::protocol("chunk data not followed by CRLF"));
                    }
                    self.state = ChunkState::Size {
                        value: 0,
                        digits: 0,
                    };
                    i += 1;
                }
                ChunkState::Trailer { line_len } => {
                    i += 1;
                    match b {
                        b'\n' if line_len == 0 => {
                            self.state = ChunkState::Done;
                            return Ok(i);
                        }
                        b'\n' => self.state = ChunkState::Trailer { line_len: 0 },
                        b'\r' => {}
                        _ => {
                            self.state = ChunkState::Trailer {
                                line_len: line_len + 1,
                            }
                        }
                    }
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug)]
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection doing one request at a time.
pub struct HttpConn {
    stream: Stream,
    pending: Vec<u8>,
}

impl HttpConn {
    /// Connects, over TLS (ALPN `http/1.1`) when `tls` is given.
    pub async fn connect(
        tls: Option<&TlsClient>,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<Self, BenchError> {
        Ok(HttpConn {
            stream: tls::connect(tls, addr, source).await?,
            pending: Vec::new(),
        })
    }

    pub async fn send(&mut self, request: &[u8]) -> Result<(), BenchError> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| BenchError::io("sending request", e))
    }

    /// Reads one whole response; bodies over `max_body` bytes are an error so a
    /// misbehaving peer cannot make the generator buffer without bound.
    pub async fn read_response(&mut self, max_body: usize) -> Result<Response, BenchError> {
        let head = read_head(&mut self.stream, &mut self.pending).await?;
        let mut body = Vec::new();
        match head.framing {
            BodyFraming::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= max_body)
                    .ok_or_else(|| too_large(max_body))?;
                while self.pending.len() < n {
                    self.read_more().await?.ok_or_else(truncated)?;
                }
                body.extend_from_slice(&self.pending[..n]);
                self.pending.drain(..n);
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let used = decoder.decode(&self.pending, |d| body.extend_from_slice(d))?;
                    self.pending.drain(..used);
                    if body.len() > max_body {
                        return Err(too_large(max_body));
                    }
                    if decoder.is_done() {
                        break;
                    }
                    self.read_more().await?.ok_or_else(truncated)?;
                }
            }
            BodyFraming::UntilClose => {
                while self.read_more().await?.is_some() {
                    if self.pending.len() > max_body {
                        return Err(too_large(max_body));
                    }
                }
                body = std::mem::take(&mut self.pending);
            }
        }
        net::trim(&mut self.pending);
        Ok(Response { head, body })
    }

    async fn read_more(&mut self) -> Result<Option<()>, BenchError> {
        let pending = &mut self.pending;
        net::read_with(&mut self.stream, |data| pending.extend_from_slice(data))
            .await
            .map_err(|e| BenchError::io("reading response", e))
    }
}

fn too_large(max: usize) -> BenchError {
    BenchError::protocol(format!("response body larger than {max} bytes"))
}

fn truncated() -> BenchError {
    BenchError::new(
        ErrorKind::Connect,
        "connection closed in the middle of a response body",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, usize, bool), BenchError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(split.max(1)) {
            let n = d.decode(piece, |b| out.extend_from_slice(b))?;
            used += n;
            if d.is_done() {
                break;
            }
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn chunked_at_every_split() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        for split in 1..body.len() {
            let (out, used, done) = decode_all(body, split).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "split {split}");
            assert!(done);
            assert_eq!(&body[used..], b"NEXT", "split {split}");
        }
    }

    #[test]
    fn chunked_trailers_and_bare_lf() {
        let body = b"3\nabc\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        let (out, used, done) = decode_all(body, 64).unwrap();
        assert_eq!(out, b"abc");
        assert!(done);
        assert_eq!(used, body.len());
    }

    #[test]
    fn chunked_stream_without_end() {
        let (out, used, done) = decode_all(b"4\r\ndata\r\n6\r\nmo", 64).unwrap();
        assert_eq!(out, b"datamo");
        assert!(!done);
        assert_eq!(used, 14);
    }

    #[test]
    fn chunked_errors() {
        assert!(decode_all(b"x\r\n", 64).is_err());
        assert!(decode_all(b"3\r\nabcX", 64).is_err());
        assert!(decode_all(b"3\r\nabc\rX", 64).is_err());
        assert!(decode_all(b"ffffffffffffffff\r\n", 64).is_err());
    }

    #[test]
    fn head_parsing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\nbody";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"body");
        assert_eq!(head.status, 200);
        assert!(head.event_stream);
        assert!(head.keep_alive);
        assert_eq!(head.framing, BodyFraming::Chunked);

        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        let (head, _) = parse_head(raw).unwrap().unwrap();
        assert!(head.upgrade_websocket && head.connection_upgrade);
        assert_eq!(head.ws_accept.as_deref(), Some("abc="));
        assert_eq!(head.ws_extensions, None);
        assert_eq!(head.framing, BodyFraming::Length(0));

        let raw = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nsec-websocket-extensions: x-other\r\n\r\n";
        let (head, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head.ws_extensions.as_deref(),
            Some("permessage-deflate; server_no_context_takeover, x-other")
        );

        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nLast-Modified: Sun, 22 Nov 2026 20:38:45 GMT\r\nEtag: 0\r\n\r\n";
        let (head, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head.last_modified.as_deref(),
            Some("Sun, 22 Nov 2026 20:38:45 GMT")
        );
        assert_eq!(head.etag.as_deref(), Some("0"));

        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n";
        let (head, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status_line(), "404 Not Found");
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert!(!head.keep_alive);

        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
