//! The HTTP/1.1 front: reads each request head itself and serves the
//! long-lived GET endpoints (`/ws`, `/sse`, `/stream`, `/iframe`, `/poll`,
//! `/longpoll`) directly on the socket; everything else — request bodies,
//! HTTP/1.0, odd requests, the API — goes to hyper with the bytes read so far.
//!
//! Why: an idle connection is the unit of cost of a push server. Through
//! hyper an idle SSE connection kept hyper's 8 KiB read buffer and 8 KiB
//! write buffer for its whole life (about 13 KiB RSS each, measured); here
//! it keeps only the socket, its `EventStream` and one small task. The same
//! handlers build the responses on both paths, so behaviour is identical;
//! only the serialisation of the head and the chunked framing differ.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::cors;
use crate::prefix_io::PrefixIo;
use crate::routes::{self, SUBSCRIBE_PATHS};
use crate::shared_tcp::SharedTcp;
use crate::state::AppState;
use crate::transport::stream::EventStream;
use crate::transport::ws;
use crate::web::Body;
use pushgate_core::wire::chunked;
use pushgate_core::DirectSink;

/// A request head must arrive within this time (slow-loris defence).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A head still incomplete at this size goes to hyper, which has the final
/// say on limits (a complete larger head read at once stays with the front).
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

enum Next {
    KeepAlive,
    Close,
    Upgrade(Box<ws::Upgrade>),
    /// The head of an event stream was written; pump it.
    Stream(Box<EventStream>),
}

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let parts = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buf)).await
        {
            Ok(Ok(Some(Head::Ours(parts, len)))) => {
                buf.drain(..len);
                parts
            }
            Ok(Ok(Some(Head::Hyper))) => break,
            // Closed, failed, or too slow: nothing to answer.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
        };
        if buf.is_empty() {
            // Idle connections must not keep the head buffer.
            buf = Vec::new();
        }
        // Boxed, like the WebSocket and hyper futures below: handling a
        // request needs far more state than an idle stream, and a task's
        // allocation is the size of its largest state, for its whole life.
        match Box::pin(serve_one(&mut stream, &mut buf, *parts, &state)).await {
            Ok(Next::KeepAlive) => continue,
            Ok(Next::Stream(mut events)) => {
                drop(buf);
                let stream = SharedTcp::new(stream, events.direct_wire(), &state.metrics);
                let direct = stream.direct_sink();
                pump(stream, &mut events, direct, &state).await;
                return;
            }
            Ok(Next::Upgrade(up)) => {
                let res = ws::switching_protocols(&up);
                if stream
                    .write_all(&encode_head(&res, None, true))
                    .await
                    .is_ok()
                {
                    let stream = SharedTcp::new(stream, Some(up.direct_wire()), &state.metrics);
                    let direct = stream.direct_sink();
                    let io = PrefixIo::new(prefix(buf), stream);
                    // A task of its own, and this one ends: the WebSocket loop is
                    // the largest state, and nothing of the front is needed any more.
                    tokio::spawn(ws::run(state, io, *up, direct));
                }
                return;
            }
            Ok(Next::Close) | Err(_) => return,
        }
    }
    // Boxed: hyper's connection state is large and only hyper's connections need it.
    Box::pin(crate::server::serve_hyper(
        PrefixIo::new(prefix(buf), stream),
        peer,
        state,
    ))
    .await;
}

/// Bytes already read, without keeping an empty buffer's allocation alive.
fn prefix(buf: Vec<u8>) -> Bytes {
    if buf.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(buf)
    }
}

/// What the front makes of a request head.
#[derive(Debug)]
pub enum Head {
    /// A request the front serves, and the length of its head in the buffer.
    Ours(Box<Parts>, usize),
    /// Anything else: hyper serves the connection from here on.
    Hyper,
}

/// Decides on the bytes read so far; `None`: the head is incomplete and
/// still under the size limit, read more. Pure, so it can be fuzzed.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Some(match ours(&req) {
            Some(parts) => Head::Ours(Box::new(parts), len),
            None => Head::Hyper,
        }),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
        // Malformed or huge: hyper answers with the right status.
        _ => Some(Head::Hyper),
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Head>> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf) {
                return Ok(Some(head));
            }
        }
        buf.reserve(1024);
        if tokio::io::AsyncReadExt::read_buf(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// The head as `Parts` when the front serves it: HTTP/1.1 GET of a
/// subscribing endpoint, without a body.
fn ours(req: &httparse::Request<'_, '_>) -> Option<Parts> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let path = req.path?;
    let route = path.split('?').next().unwrap_or("");
    if route != "/ws" && route != "/echo" && !SUBSCRIBE_PATHS.contains(&route) {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let has_body = (name == header::CONTENT_LENGTH && h.value != b"0")
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT;
        if has_body {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let mut builder = Request::builder().method(Method::GET).uri(path);
    *builder.headers_mut()? = headers;
    Some(builder.body(()).ok()?.into_parts().0)
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

async fn serve_one(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parts: Parts,
    state: &Arc<AppState>,
) -> io::Result<Next> {
    let keep_alive = !wants_close(&parts.headers);
    let res = if let Some(mode) = routes::websocket_mode(&state.config, parts.uri.path()) {
        match cors::guard(&state.config, &parts.headers)
            .and_then(|()| ws::check(state, &parts, mode))
        {
            Ok(up) => return Ok(Next::Upgrade(Box::new(up))),
            Err(res) => res,
        }
    } else if parts.uri.path() == "/echo" {
        routes::not_found("/echo")
    } else {
        // A long-poll waits here: give up at once if the client leaves.
        // Boxed for the same reason as the WebSocket loop: it is only alive
        // while a request is handled, not while a stream idles.
        let mut handler = Box::pin(routes::subscribe(state, &parts));
        let res = poll_fn(|cx| {
            if let Poll::Ready(res) = handler.as_mut().poll(cx) {
                return Poll::Ready(Some(res));
            }
            watch_peer(stream, cx, Some(buf)).map(|()| None)
        })
        .await;
        match res {
            Some(res) => res,
            None => return Ok(Next::Close),
        }
    };
    let (parts, body) = res.into_parts();
    let res = Response::from_parts(parts, ());
    match body {
        Body::Full(data) => {
            let data = data.unwrap_or_default();
            let mut out = encode_head(&res, Some(data.len()), keep_alive);
            out.extend_from_slice(&data);
            stream.write_all(&out).await?;
            Ok(if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            })
        }
        Body::Stream(events) => {
            stream.write_all(&encode_head(&res, None, false)).await?;
            Ok(Next::Stream(events))
        }
    }
}

/// Ready when the peer closed (or broke) its side. What it sends meanwhile
/// is kept in `keep` (a pipelined next request), up to a bound, or, without
/// `keep`, discarded (nothing a client sends on a stream matters).
fn watch_peer(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut keep: Option<&mut Vec<u8>>,
) -> Poll<()> {
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {
                let read = match keep.as_deref_mut() {
                    Some(buf) if buf.len() >= MAX_HEAD => return Poll::Ready(()),
                    Some(buf) => {
                        buf.reserve(1024);
                        stream.try_read_buf(buf)
                    }
                    None => stream.try_read(&mut [0u8; 256]),
                };
                match read {
                    Ok(0) => return Poll::Ready(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(()),
                }
            }
        }
    }
}

/// Writes an event stream as chunked transfer encoding until the stream
/// ends, the client leaves, or the client stops reading.
async fn pump(
    mut stream: SharedTcp,
    events: &mut EventStream,
    direct: Option<Arc<dyn DirectSink>>,
    state: &AppState,
) {
    enum Out {
        Chunk(Bytes),
        /// The tail of a chunk fan-out began: already framed.
        Raw(Bytes),
        End,
        PeerGone,
    }
    loop {
        let next = poll_fn(|cx| {
            if let Some(rest) = events.unpark() {
                return Poll::Ready(Out::Raw(rest));
            }
            if let Poll::Ready(chunk) = events.poll_next(cx) {
                return Poll::Ready(chunk.map_or(Out::End, Out::Chunk));
            }
            if watch_peer(stream.tcp(), cx, None).is_ready() {
                return Poll::Ready(Out::PeerGone);
            }
            if let Some(sink) = &direct {
                // Waiting with nothing to write: fan-out may write for us.
                events.park(sink);
            }
            Poll::Pending
        })
        .await;
        let mut size = [0u8; 20];
        let (chunk, framed) = match next {
            Out::Chunk(chunk) => (chunk, true),
            Out::Raw(rest) => (rest, false),
            Out::End => {
                let _ = stream.write_all(b"0\r\n\r\n").await;
                return;
            }
            Out::PeerGone => return,
        };
        let n = if framed {
            chunked::size_line(chunk.len(), &mut size)
        } else {
            0
        };
        let tail: &[u8] = if framed { b"\r\n" } else { b"" };
        let mut slices = [
            IoSlice::new(&size[..n]),
            IoSlice::new(&chunk),
            IoSlice::new(tail),
        ];
        let write = write_all_vectored(&mut stream, &mut slices);
        // A client that stopped reading blocks the write; its outbox
        // overflowing, or the idle timeout, ends it (it resumes from its cursor).
        tokio::select! {
            biased;
            written = tokio::time::timeout(state.config.ws_idle_timeout, write) => match written {
                Ok(Ok(())) => {}
                _ => return,
            },
            () = poll_fn(|cx| events.poll_overflowed(cx)) => return,
        }
    }
}

async fn write_all_vectored(
    stream: &mut SharedTcp,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The status line and headers. `len`: `Content-Length`; `None` on a
/// non-101 response: chunked.
fn encode_head<B>(res: &Response<B>, len: Option<usize>, keep_alive: bool) -> Vec<u8> {
    let status = res.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        match len {
            Some(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_head_decides() {
        let head = b"GET /sse?channel=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: e\r\n\r\nnext";
        let Some(Head::Ours(parts, len)) = parse_head(head) else {
            panic!("not ours")
        };
        assert_eq!(len, head.len() - 4);
        assert_eq!(parts.uri.path(), "/sse");
        assert_eq!(parts.headers["last-event-id"], "e");
        // Incomplete: read more, until the limit.
        assert!(parse_head(&head[..20]).is_none());
        let mut huge = b"GET /sse HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD, b'a');
        assert!(matches!(parse_head(&huge), Some(Head::Hyper)));
        for other in [
            &b"POST /sse HTTP/1.1\r\n\r\n"[..],
            b"GET /sse HTTP/1.0\r\n\r\n",
            b"GET /api HTTP/1.1\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x00garbage\r\n\r\n",
        ] {
            assert!(matches!(parse_head(other), Some(Head::Hyper)), "{other:?}");
        }
    }
}
