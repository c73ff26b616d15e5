//! The HTTP/1.1 front: reads each request head itself and serves the
//! long-lived GET endpoints (`/ws`, `/sse`, `/stream`, `/iframe`, `/poll`,
//! `/longpoll`) and the `Content-Length` POSTs of `/api/publish` and
//! `/command` directly on the socket; everything else — chunked bodies,
//! `Expect`, HTTP/1.0, odd requests, the other endpoints — goes to hyper
//! with the bytes read so far, and hyper keeps that connection.
//!
//! Why: an idle connection is the unit of cost of a push server. Through
//! hyper an idle SSE connection kept hyper's 8 KiB read buffer and 8 KiB
//! write buffer for its whole life (about 13 KiB RSS each, measured); here
//! it keeps only the socket, its `EventStream` and one small task. Publishes
//! are the other hot path: a publisher's keep-alive connection served here
//! skips hyper's per-request dispatch (see docs/benchmarks.md). The same
//! handlers build the responses on both paths, so behaviour is identical;
//! only the serialisation of the head and the chunked framing differ.

use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use pushgate_core::DirectSink;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::accept::Client;
use crate::admission;
use crate::api;
use crate::dispatch;
use crate::linger;
use crate::metrics::{Limit, Metrics, Protocol};
use crate::prefix_io::PrefixIo;
use crate::routes::{self, Endpoint, Front};
use crate::shared_tcp::{DirectWire, SharedTcp};
use crate::state::AppState;
use crate::tls::TlsStream;
use crate::transport::delivery_loop;
use crate::transport::event_stream::EventStream;
use crate::transport::ws;
use crate::web::{Body, RequestBody};

/// A head still incomplete at this size goes to hyper (the fuzzed decision
/// of [`parse_head`]); `max_head_size` refuses heads before that.
pub const MAX_HEAD: usize = 16 * 1024;
/// The first bytes of an HTTP/2 connection (RFC 9113 §3.4): a client with
/// prior knowledge (h2c) starts with them.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_HEADERS: usize = 64;

/// A client connection the front serves: a plain TCP socket, or TLS over
/// one. The front reads heads and bodies through it and writes whole
/// answers; a connection that goes on streaming or upgrades becomes its
/// [`Conn::Stream`].
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// What the connection is once it streams events or speaks WebSocket.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The connection as it streams, and the sink fan-out may write to it
    /// through (with `wire`, how fan-out frames messages for it). Only a
    /// plaintext socket has one: TLS records are sealed in order by a single
    /// writer, so fan-out cannot write between the task's records.
    fn into_stream(
        self,
        wire: Option<DirectWire>,
        metrics: &Arc<Metrics>,
    ) -> (Self::Stream, Option<Arc<dyn DirectSink>>);

    /// The connection turned out to speak `p` (h2c), for the gauges.
    fn speaks(&mut self, _metrics: &Arc<Metrics>, _p: Protocol) {}
}

impl Conn for Client<TcpStream> {
    type Stream = SharedTcp;

    fn into_stream(
        self,
        wire: Option<DirectWire>,
        metrics: &Arc<Metrics>,
    ) -> (SharedTcp, Option<Arc<dyn DirectSink>>) {
        let shared = SharedTcp::new(self.io, wire, metrics, self.slot);
        let direct = shared.direct_sink();
        (shared, direct)
    }

    fn speaks(&mut self, metrics: &Arc<Metrics>, p: Protocol) {
        self.slot.speaks(metrics, p);
    }
}

/// TLS: fan-out cannot write between the task's records, so no sink.
impl Conn for Client<Box<TlsStream<TcpStream>>> {
    type Stream = Self;

    fn into_stream(
        self,
        _: Option<DirectWire>,
        _: &Arc<Metrics>,
    ) -> (Self, Option<Arc<dyn DirectSink>>) {
        (self, None)
    }
}

enum Next {
    KeepAlive,
    Close,
    Upgrade(Box<ws::Upgrade>),
    /// The head of an event stream was written; run it on the socket.
    Stream(Box<EventStream>),
}

pub async fn serve<C: Conn>(mut stream: C, peer: SocketAddr, state: Arc<AppState>) {
    let mut buf: Vec<u8> = Vec::new();
    let config = &state.config;
    let mut first = true;
    loop {
        let read = read_head(
            &mut stream,
            &mut buf,
            config.max_head_size,
            first && config.http2,
        );
        let (parts, body) = match tokio::time::timeout(config.head_timeout, read).await {
            Ok(Ok(Read::Head(Head::Ours { parts, head, body }))) => {
                buf.drain(..head);
                (parts, body)
            }
            Ok(Ok(Read::Head(Head::Hyper))) => break,
            Ok(Ok(Read::H2c)) => {
                stream.speaks(&state.metrics, Protocol::H2c);
                let io = PrefixIo::new(prefix(buf), stream);
                return Box::pin(crate::http2::serve(io, peer, state)).await;
            }
            Ok(Ok(Read::TooLarge)) => {
                state.metrics.limited(Limit::HeadSize);
                let e = pushgate_core::Error::new(
                    pushgate_core::ErrorKind::TooLarge,
                    format!(
                        "request head larger than {} bytes (max_head_size)",
                        config.max_head_size
                    ),
                );
                let mut res = crate::web::error(&e);
                *res.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                let _ = refuse(&mut stream, res).await;
                return;
            }
            // Closed or failed: nothing to answer.
            Ok(Ok(Read::Closed)) | Ok(Err(_)) => return,
            // Too slow: a partial head is a slow (or slow-loris) client; an
            // idle keep-alive connection just ends.
            Err(_) => {
                if !buf.is_empty() {
                    state.metrics.limited(Limit::HeadTimeout);
                }
                return;
            }
        };
        first = false;
        if buf.is_empty() {
            // Idle connections must not keep the head buffer.
            buf = Vec::new();
        }
        // Boxed, like the WebSocket and hyper futures below: handling a
        // request needs far more state than an idle stream, and a task's
        // allocation is the size of its largest state, for its whole life.
        // Apart, so that a task holds only the state of the request it runs.
        let next = if parts.method == Method::POST {
            Box::pin(serve_post(
                &mut stream,
                &mut buf,
                *parts,
                body,
                peer,
                &state,
            ))
            .await
        } else {
            Box::pin(serve_one(&mut stream, &mut buf, *parts, peer, &state)).await
        };
        match next {
            Ok(Next::KeepAlive) => continue,
            Ok(Next::Stream(mut events)) => {
                drop(buf);
                let (stream, direct) = stream.into_stream(events.direct_wire(), &state.metrics);
                // A task of its own, and this one ends, as for a WebSocket:
                // an idle stream then holds only its loop's state, not the
                // front's (a task's allocation is the size of its largest
                // state, for its whole life).
                tokio::spawn(async move {
                    events
                        .run(&state, stream, direct, delivery_loop::Wire::Chunked)
                        .await
                });
                return;
            }
            Ok(Next::Upgrade(up)) => {
                let res = ws::switching_protocols(&up);
                if stream
                    .write_all(&encode_head(&res, None, true))
                    .await
                    .is_ok()
                {
                    let (stream, direct) =
                        stream.into_stream(Some(up.direct_wire()), &state.metrics);
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
    Box::pin(crate::hyper_conn::serve(
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
    /// A request the front serves: its head, the head's length in the
    /// buffer, and the length of the body that follows (`Content-Length`).
    Ours {
        parts: Box<Parts>,
        head: usize,
        body: usize,
    },
    /// Anything else: hyper serves the connection from here on.
    Hyper,
}

/// Decides on the bytes read so far; `None`: the head is incomplete and
/// still under the size limit, read more. Pure, so it can be fuzzed.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head)) => Some(match ours(&req) {
            Some((parts, body)) => Head::Ours {
                parts: Box::new(parts),
                head,
                body,
            },
            None => Head::Hyper,
        }),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
        // Malformed or huge: hyper answers with the right status.
        _ => Some(Head::Hyper),
    }
}

/// What reading a request head gave.
enum Read {
    Head(Head),
    /// The HTTP/2 preface: a client with prior knowledge.
    H2c,
    /// Larger than `max_head_size`.
    TooLarge,
    /// The client closed the connection.
    Closed,
}

/// Reads until a head is complete. `h2c`: the connection's first bytes may
/// be the HTTP/2 preface.
async fn read_head<C: Conn>(
    stream: &mut C,
    buf: &mut Vec<u8>,
    max: usize,
    h2c: bool,
) -> io::Result<Read> {
    loop {
        if !buf.is_empty() {
            let preface = &H2_PREFACE[..buf.len().min(H2_PREFACE.len())];
            let maybe_h2c = h2c && buf.starts_with(preface);
            if maybe_h2c && buf.len() >= H2_PREFACE.len() {
                return Ok(Read::H2c);
            }
            if !maybe_h2c {
                match parse_head(buf) {
                    Some(Head::Ours { head, .. }) if head > max => return Ok(Read::TooLarge),
                    Some(head) => return Ok(Read::Head(head)),
                    None if buf.len() >= max => return Ok(Read::TooLarge),
                    None => {}
                }
            }
        }
        if read_some(stream, buf).await? == 0 {
            return Ok(Read::Closed);
        }
    }
}

/// Reads what has arrived into `buf`, which grows by only that much.
async fn read_some<C: Conn>(stream: &mut C, buf: &mut Vec<u8>) -> io::Result<usize> {
    poll_fn(|cx| poll_read_into(stream, cx, buf)).await
}

thread_local! {
    /// Where reads land before what arrived is copied to the connection's
    /// buffer: one per worker thread, zeroed once. Reading into the buffer
    /// itself needs a reservation per request, and 1 KiB is glibc's "large"
    /// size, each of which consolidated the allocator's free lists; a stack
    /// array is zeroed on every read (both measured on the publish path).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; 16 * 1024].into_boxed_slice());
}

/// One read appended to `buf`.
fn poll_read_into<C: Conn>(
    stream: &mut C,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|chunk| {
        let mut read = ReadBuf::new(chunk);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// The head as `Parts`, and the length of the body, when the front serves
/// it: an HTTP/1.1 GET without a body of a [`Front::Get`] route, or a POST
/// to a [`Front::Post`] route with one plain decimal `Content-Length`.
fn ours(req: &httparse::Request<'_, '_>) -> Option<(Parts, usize)> {
    if req.version != Some(1) {
        return None;
    }
    let path = req.path?;
    let route = routes::find(path.split('?').next().unwrap_or(""))?;
    let method = match (req.method?, route.front) {
        ("GET", Front::Get) => Method::GET,
        ("POST", Front::Post) => Method::POST,
        _ => return None,
    };
    let mut length = None;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::EXPECT {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            // A repeat, a list or a sign is hyper's to judge (RFC 9112 §6.3).
            if length.is_some() || h.value.is_empty() || h.value.len() > 12 {
                return None;
            }
            if !h.value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            length = std::str::from_utf8(h.value).ok()?.parse::<usize>().ok();
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let body = match (&method, length) {
        (&Method::GET, None | Some(0)) => 0,
        (&Method::POST, Some(n)) => n,
        _ => return None,
    };
    let mut builder = Request::builder().method(method).uri(path);
    *builder.headers_mut()? = headers;
    Some((builder.body(()).ok()?.into_parts().0, body))
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

/// Reads until `buf` holds `len` bytes; false if the peer closed first.
async fn read_body<C: Conn>(stream: &mut C, buf: &mut Vec<u8>, len: usize) -> io::Result<bool> {
    while buf.len() < len {
        if read_some(stream, buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Serves a POST of a [`Front::Post`] route: reads its `Content-Length`
/// body, then admission and the same handler as hyper's path.
async fn serve_post<C: Conn>(
    stream: &mut C,
    buf: &mut Vec<u8>,
    parts: Parts,
    body: usize,
    peer: SocketAddr,
    state: &Arc<AppState>,
) -> io::Result<Next> {
    let keep_alive = !wants_close(&parts.headers);
    let max = state.config.max_message_size;
    // Announced too large: refused before any of it is read (after
    // admission, as on hyper's path), and the connection ends.
    let bytes = if body > max {
        None
    } else {
        match tokio::time::timeout(api::BODY_TIMEOUT, read_body(stream, buf, body)).await {
            Ok(Ok(true)) => Some(if buf.len() == body {
                Bytes::from(std::mem::take(buf))
            } else {
                let bytes = Bytes::copy_from_slice(&buf[..body]);
                buf.drain(..body);
                bytes
            }),
            Ok(Ok(false)) | Ok(Err(_)) => return Ok(Next::Close),
            Err(_) => {
                state.metrics.limited(Limit::HeadTimeout);
                let res = crate::web::error(&api::body_timed_out());
                return refuse(stream, res).await;
            }
        }
    };
    let too_large = bytes.is_none();
    let res = match admission::admit(
        state,
        peer,
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
    ) {
        Ok(admitted) => {
            let mut res = match bytes {
                Some(bytes) => {
                    let req = Request::from_parts(parts, RequestBody::Read(bytes));
                    dispatch::post(state, &admitted, peer, req).await
                }
                None => {
                    state.metrics.limited(Limit::MessageSize);
                    crate::web::error(&api::body_too_large(max))
                }
            };
            admitted.finish(&mut res);
            res
        }
        Err(rejected) => rejected.into_response(),
    };
    if too_large {
        refuse(stream, res).await
    } else {
        respond(stream, res, keep_alive).await
    }
}

/// Answers a request whose body is left unread (too large, too slow), and
/// ends the connection, lingering so that the answer reaches a client still
/// sending (`crate::linger`).
async fn refuse<C: Conn>(stream: &mut C, res: Response<Body>) -> io::Result<Next> {
    respond(stream, res, false).await?;
    linger::linger_close(stream, linger::LINGER).await;
    Ok(Next::Close)
}

async fn serve_one<C: Conn>(
    stream: &mut C,
    buf: &mut Vec<u8>,
    mut parts: Parts,
    peer: SocketAddr,
    state: &Arc<AppState>,
) -> io::Result<Next> {
    let keep_alive = !wants_close(&parts.headers);
    let uri = &parts.uri;
    let admitted = match admission::admit(
        state,
        peer,
        &parts.method,
        uri.path(),
        uri.query(),
        &parts.headers,
    ) {
        Ok(admitted) => admitted,
        Err(rejected) => return respond(stream, rejected.into_response(), keep_alive).await,
    };
    // Connections say where they come from (`/api/connections`).
    parts.extensions.insert(crate::web::Peer(peer));
    let res = if let Endpoint::WebSocket | Endpoint::Echo = admitted.route().endpoint {
        match ws::check(state, &admitted, &parts) {
            Ok(up) => return Ok(Next::Upgrade(Box::new(up))),
            Err(rejected) => rejected.into_response(),
        }
    } else {
        // A long-poll waits here: give up at once if the client leaves.
        // Boxed for the same reason as the WebSocket loop: it is only alive
        // while a request is handled, not while a stream idles.
        let mut handler = Box::pin(dispatch::subscribe(state, &admitted, &parts));
        let res = poll_fn(|cx| {
            if let Poll::Ready(res) = handler.as_mut().poll(cx) {
                return Poll::Ready(Some(res));
            }
            watch_peer(stream, cx, buf).map(|()| None)
        })
        .await;
        match res {
            Some(mut res) => {
                admitted.finish(&mut res);
                res
            }
            None => return Ok(Next::Close),
        }
    };
    respond(stream, res, keep_alive).await
}

/// Writes a response: a complete one, head and body in one write, or the
/// head of an event stream, which runs on the socket from then on.
async fn respond<C: Conn>(
    stream: &mut C,
    res: Response<Body>,
    keep_alive: bool,
) -> io::Result<Next> {
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
/// is kept in `keep` (a pipelined next request), up to a bound.
fn watch_peer<C: Conn>(stream: &mut C, cx: &mut Context<'_>, keep: &mut Vec<u8>) -> Poll<()> {
    loop {
        if keep.len() >= MAX_HEAD {
            return Poll::Ready(());
        }
        match poll_read_into(stream, cx, keep) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
        }
    }
}

/// The status line and headers. `len`: `Content-Length`, and room for
/// that body after the head (both leave in one `write`); `None` on a
/// non-101 response: chunked.
fn encode_head<B>(res: &Response<B>, len: Option<usize>, keep_alive: bool) -> Vec<u8> {
    let status = res.status();
    let mut out = Vec::with_capacity(256 + len.unwrap_or(0));
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
            Some(n) => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
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
    use std::time::Duration;

    /// Any byte stream can be served, as TLS is: without fan-out's direct
    /// writes, which only a plaintext socket allows.
    impl Conn for tokio::io::DuplexStream {
        type Stream = Self;

        fn into_stream(
            self,
            _: Option<DirectWire>,
            _: &Arc<Metrics>,
        ) -> (Self, Option<Arc<dyn DirectSink>>) {
            (self, None)
        }
    }

    /// Reads until `want` has arrived; what came, as text.
    async fn read_until(client: &mut tokio::io::DuplexStream, want: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk))
                .await
                .expect("the answer in time")
                .unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn the_front_serves_any_byte_stream_not_only_a_tcp_socket() {
        let log = Arc::new(pushgate_core::MemoryLog::new(Default::default()));
        let hub = Arc::new(pushgate_core::Hub::new(log, Default::default()));
        let state = AppState::new(crate::Config::default(), hub.clone());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let publish = |n: u64| {
            let hub = hub.clone();
            async move {
                let channel = pushgate_core::ChannelName::new("d").unwrap();
                let data = pushgate_core::Data::json(&n.to_string()).unwrap();
                hub.publish(channel, None, data).await.unwrap();
            }
        };
        publish(1).await;

        // A keep-alive poll, then an event stream, on one connection.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(server, peer, state.clone()));
        client
            .write_all(b"GET /poll?channel=d&since=earliest HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let poll = read_until(&mut client, "\"cursor\"").await;
        assert!(poll.starts_with("HTTP/1.1 200 OK\r\n"), "{poll}");
        assert!(poll.contains(r#""offset":1"#), "{poll}");
        client
            .write_all(b"GET /stream?channel=d HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_until(&mut client, r#""type":"subscribed""#).await;
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        // Live messages come through the delivery loop, chunked.
        publish(2).await;
        let live = read_until(&mut client, r#""offset":2"#).await;
        assert!(live.contains(r#""data":2}"#), "{live}");
    }

    #[test]
    fn parse_head_decides() {
        let head = b"GET /sse?channel=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: e\r\n\r\nnext";
        let Some(Head::Ours {
            parts,
            head: len,
            body: 0,
        }) = parse_head(head)
        else {
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

    #[test]
    fn parse_head_takes_posts_with_a_plain_length() {
        let head = b"POST /api/publish HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"channel\":";
        let Some(Head::Ours {
            parts,
            head: len,
            body,
        }) = parse_head(head)
        else {
            panic!("not ours")
        };
        assert_eq!(
            (parts.method, len, body),
            (Method::POST, head.len() - 11, 12)
        );
        assert!(matches!(
            parse_head(b"POST /command HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            Some(Head::Ours { body: 0, .. })
        ));
        // Everything else about a body is hyper's to judge or refuse.
        for other in [
            &b"POST /api/publish HTTP/1.1\r\n\r\n"[..],
            b"POST /api/publish HTTP/1.0\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/history HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
            b"POST /api/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /command HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
        ] {
            assert!(matches!(parse_head(other), Some(Head::Hyper)), "{other:?}");
        }
    }
}
