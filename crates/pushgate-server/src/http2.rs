//! HTTP/2: over TLS when ALPN chose `h2`, and with prior knowledge (h2c) on
//! a plain port. Every request passes the same admission and handlers as
//! on HTTP/1.1; an event stream runs the same delivery loop, on an HTTP/2
//! stream instead of a socket ([`StreamIo`]).
//!
//! Why the h2 crate rather than hyper's HTTP/2 server (which is built on
//! it): hyper polls a response body only while the stream has send
//! capacity, so a client that stops reading would never be seen to fall
//! behind, and its stream would hang on without heartbeats. Driving each
//! stream ourselves keeps HTTP/1.1's guarantees — the slow-consumer cut,
//! the stall timeout, heartbeats — with the flow-control window as the
//! socket: a stream's unsent bytes are bounded by `SEND_BUFFER`, as a
//! socket's are by the kernel's buffer.
//!
//! The library's own defences against HTTP/2 abuse are set here and tested
//! (tests/it/http2.rs): concurrent streams, header list size (which also
//! bounds CONTINUATION floods), rapid reset (pending-accept and local-error
//! reset limits). An idle connection (no open stream) is closed after
//! `head_timeout`, as an idle HTTP/1.1 keep-alive connection is.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::dispatch;
use crate::metrics::Limit;
use crate::state::AppState;
use crate::transport::delivery_loop::Wire;
use crate::web::{Body, RequestBody};

/// What a client may send on one stream before the server reads it: a
/// request body is read at once, so a window the size of the largest body
/// lets it arrive in one go.
const STREAM_WINDOW: u32 = 64 * 1024;
/// What a client may send on all of a connection's streams together.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes queued on one stream beyond what the client's window lets out:
/// a stream's equivalent of a socket's send buffer. Past it a write waits,
/// as on a full socket, and the delivery's stall and overflow rules apply.
const SEND_BUFFER: usize = 64 * 1024;
/// Streams the client reset before the server accepted them, at once
/// (h2's rapid-reset defence, CVE-2023-44487): past it, GOAWAY.
const PENDING_RESETS: usize = 20;
/// Streams the server had to reset for the client's errors, per connection.
const LOCAL_ERROR_RESETS: usize = 256;

/// Serves an HTTP/2 connection until the client is done, it misbehaves, or
/// it idles for `head_timeout` with no stream open.
pub async fn serve<I>(io: I, peer: SocketAddr, state: Arc<AppState>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &state.config;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(config.http2_max_streams.min(u32::MAX as usize) as u32)
        .max_header_list_size(config.max_head_size.min(u32::MAX as usize) as u32)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS));
    let idle = config.head_timeout;
    let mut conn = match tokio::time::timeout(idle, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.limited(Limit::HeadTimeout);
            return;
        }
    };
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let mut closing = false;
    loop {
        let accepted = tokio::select! {
            accepted = conn.accept() => accepted,
            () = state.registry.shutting_down(), if !closing => {
                // Tell the client to open nothing new; the streams end as
                // every connection's do (the registry tells them).
                conn.graceful_shutdown();
                closing = true;
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                continue;
            }
            () = &mut idle_timer => {
                if closing {
                    // GOAWAY sent a while ago and still not done: a peer
                    // that reads nothing (a SETTINGS or PING flood that
                    // never takes its ACKs) is dropped.
                    return;
                }
                if conn.has_streams() {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                } else {
                    // Finish what is in flight, accept nothing new.
                    conn.graceful_shutdown();
                    closing = true;
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                continue;
            }
        };
        match accepted {
            Some(Ok((req, respond))) => {
                idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle);
                tokio::spawn(serve_stream(state.clone(), peer, req, respond));
            }
            Some(Err(e)) => {
                if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) || e.is_go_away() && e.is_library()
                {
                    state.metrics.limited(Limit::Http2Abuse);
                }
                tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
                return;
            }
            None => return,
        }
    }
}

/// One request: admission and the handler, as on HTTP/1.1, then the answer
/// on the stream.
async fn serve_stream(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (mut parts, body) = req.into_parts();
    // Same-origin checks compare Origin with Host; HTTP/2 carries it as
    // `:authority`.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, host);
        }
    }
    let req = Request::from_parts(parts, RequestBody::H2(H2Body(body)));
    // A long-poll waits here: give up at once if the client resets the
    // stream. Boxed and gone before the answer is sent: an event stream
    // then runs for hours in this task, which would otherwise keep the
    // handlers' state (a task's allocation is its largest state's size).
    let res = {
        let mut route = Box::pin(dispatch::route(state.clone(), peer, req));
        poll_fn(|cx| {
            if let Poll::Ready(Ok(res)) = route.as_mut().poll(cx) {
                return Poll::Ready(Some(res));
            }
            respond.poll_reset(cx).map(|_| None)
        })
        .await
    };
    if let Some(res) = res {
        let _ = send(&mut respond, res, &state).await;
    }
}

/// An HTTP/2 request body as an `http_body::Body`, so that the handlers
/// read it with the same limits as any other. What is read is handed back
/// to the client's window at once: the handler bounds the total.
pub struct H2Body(RecvStream);

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        match ready!(self.0.poll_data(cx)) {
            Some(Ok(data)) => {
                let _ = self.0.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2); HTTP/1.1 handlers may set them.
const CONNECTION_SPECIFIC: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
];

/// Sends a response: a complete body, or an event stream run on the stream
/// until it ends.
async fn send(
    respond: &mut SendResponse<Bytes>,
    res: Response<Body>,
    state: &Arc<AppState>,
) -> Result<(), h2::Error> {
    let (mut parts, body) = res.into_parts();
    for name in &CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // A WebSocket upgrade has no meaning here (RFC 8441 is not offered).
        parts.status = StatusCode::BAD_REQUEST;
    }
    match body {
        Body::Full(data) => {
            let data = data.unwrap_or_default();
            let head = Response::from_parts(parts, ());
            let mut stream = respond.send_response(head, data.is_empty())?;
            if !data.is_empty() {
                // A client that takes nothing is given up on, as a stalled socket is.
                let limit = state.config.ws_idle_timeout;
                let _ = tokio::time::timeout(limit, send_all(&mut stream, data)).await;
            }
            Ok(())
        }
        Body::Stream(mut events) => {
            let head = Response::from_parts(parts, ());
            let stream = respond.send_response(head, false)?;
            events
                .run(state, StreamIo::new(stream), None, Wire::Raw)
                .await;
            Ok(())
        }
    }
}

/// Sends `data` and ends the stream, as the client's window lets it out.
async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let n = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(n) => n?,
            None => return Ok(()),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n.min(data.len()));
        stream.send_data(chunk, data.is_empty())?;
    }
    Ok(())
}

/// An HTTP/2 response stream as the byte stream the delivery loop writes
/// to. A write takes what the stream's send buffer has room for (the
/// client's window and `SEND_BUFFER`) and waits when it has none, as a
/// full socket does. Reading never yields bytes (the request was read
/// whole); it ends when the client resets the stream, which is how an
/// HTTP/2 client leaves.
pub struct StreamIo {
    stream: SendStream<Bytes>,
    ended: bool,
}

impl StreamIo {
    fn new(stream: SendStream<Bytes>) -> Self {
        StreamIo {
            stream,
            ended: false,
        }
    }

    /// Room for up to `want` bytes; ready with how much there is.
    fn poll_room(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            let room = self.stream.capacity();
            if room > 0 {
                return Poll::Ready(Ok(room.min(want)));
            }
            self.stream.reserve_capacity(want.min(SEND_BUFFER));
            match ready!(self.stream.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }
}

impl AsyncRead for StreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Ready (nothing read: the end) once the client reset the stream.
        ready!(self.stream.poll_reset(cx)).ok();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Gathers what fits into one DATA frame's worth of bytes.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        let room = ready!(self.poll_room(cx, want))?;
        let mut out = BytesMut::with_capacity(room);
        for b in bufs {
            let take = (room - out.len()).min(b.len());
            out.extend_from_slice(&b[..take]);
            if out.len() == room {
                break;
            }
        }
        let n = out.len();
        self.stream
            .send_data(out.freeze(), false)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ends the response (an empty DATA frame with END_STREAM).
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            self.stream
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}
