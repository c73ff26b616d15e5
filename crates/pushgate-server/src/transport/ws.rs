//! WebSocket at `GET /ws` (RFC 6455, RFC 7692): JSON commands in, replies and
//! messages out.
//!
//! The codec is pushgate's own and sans-IO ([`pushgate_core::websocket`]);
//! this module moves bytes. A published message's frame is built once and
//! every subscriber writes the same bytes; whatever is queued for a socket
//! goes out in one vectored write.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::request::Parts;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use pushgate_core::hub::Drained;
use pushgate_core::protocol::{self, encode_reset, Reply};
use pushgate_core::session::Emit;
use pushgate_core::websocket::{deflate, frame, Deflate, Incoming, OpCode, Receiver, Violation};
use pushgate_core::{Connection, DirectSink, OutboxEvent, Principal};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior};

use super::ws_handshake;
use crate::admission::{Admitted, Rejection};
use crate::error::close;
use crate::metrics::Transport;
use crate::routes::Endpoint;
use crate::shared_tcp::DirectWire;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body, SubscribeQuery};

/// What the codec runs on: a hyper upgrade, or the socket the HTTP front
/// (`crate::http1`) kept for itself.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What a WebSocket connection does with the frames it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/ws`: JSON commands.
    Commands,
    /// `/echo` (`--echo`, for conformance testing): every data message is
    /// sent back as it came, through the same loop, codec and limits as `/ws`.
    Echo,
}

/// An accepted upgrade request: what the 101 says and what the connection
/// starts with.
#[derive(Debug)]
pub struct Upgrade {
    accept: String,
    /// The `Sec-WebSocket-Extensions` answer, when permessage-deflate was agreed.
    extensions: Option<String>,
    deflate: Option<Deflate>,
    query: SubscribeQuery,
    mode: Mode,
    principal: Principal,
}

impl Upgrade {
    /// How fan-out frames this connection's messages when it writes them.
    pub fn direct_wire(&self) -> DirectWire {
        DirectWire::Ws(self.deflate)
    }
}

/// Validates an admitted upgrade request and negotiates extensions.
pub fn check(
    state: &AppState,
    admitted: &Admitted,
    req: &Parts,
) -> Result<Upgrade, Response<Body>> {
    let Endpoint::WebSocket(mode) = admitted.route().endpoint else {
        return Err(Rejection::not_found(req.uri.path()).into_response());
    };
    let accept = ws_handshake::accept_key(&req.method, &req.headers)?;
    let query = parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions)
        .map_err(|e| web::error(&e))?;
    let offers = req
        .headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (deflate, extensions) = match deflate::negotiate(offers, &state.config.deflate()) {
        Some((d, answer)) => (Some(d), Some(answer)),
        None => (None, None),
    };
    Ok(Upgrade {
        accept,
        extensions,
        deflate,
        query,
        mode,
        principal: admitted.principal().clone(),
    })
}

/// The 101 response completing the handshake.
pub fn switching_protocols(up: &Upgrade) -> Response<Body> {
    ws_handshake::switching_protocols(&up.accept, up.extensions.as_deref())
}

/// The hyper path: answer 101 and run the connection once hyper hands over the socket.
pub async fn handle(
    state: Arc<AppState>,
    admitted: &Admitted,
    req: Request<crate::web::RequestBody>,
) -> Response<Body> {
    let (mut parts, _) = req.into_parts();
    let up = match check(&state, admitted, &parts) {
        Ok(ok) => ok,
        Err(res) => return res,
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return web::error(&pushgate_core::Error::bad_request(
            "this connection cannot be upgraded",
        ));
    };
    let res = switching_protocols(&up);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(state, TokioIo::new(upgraded), up, None).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    res
}

/// Runs one WebSocket connection after the 101 was sent. With `direct`
/// (the front's connections), fan-out writes isolated messages to the
/// socket itself while the connection waits with nothing to write.
pub async fn run<S: Io>(
    state: Arc<AppState>,
    io: S,
    up: Upgrade,
    direct: Option<Arc<dyn DirectSink>>,
) {
    let _open = state.metrics.connection(Transport::Ws);
    let mut ws = Socket {
        rx: Receiver::new(state.config.max_message_size, up.deflate),
        io,
        out: VecDeque::new(),
        deflate: up.deflate,
        direct,
    };
    let mut conn = state.connection(&up.principal);
    let _registered = state.registry.register(conn.outbox());
    let end = serve(&state, &mut ws, &mut conn, up.query, up.mode).await;
    drop(conn);
    let (frame, await_reply) = match end {
        End::Close(code, reason) => (frame::close_frame(code, reason), true),
        End::Reply(frame) => (frame, false),
        End::Drop => return,
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(frame, await_reply)).await;
}

/// How a connection ends.
enum End {
    /// The server fails or ends it: send a close frame with this code and
    /// reason, then wait for the client's.
    Close(u16, &'static str),
    /// The client began the closing handshake: send this answer and close.
    Reply(Bytes),
    /// The peer is gone or unresponsive: just drop the socket.
    Drop,
}

impl From<Violation> for End {
    fn from(v: Violation) -> Self {
        End::Close(v.code, v.reason)
    }
}

/// The socket with the codec's state: what remains of an idle connection
/// is this, the outbox and the subscriptions.
struct Socket<S> {
    io: S,
    rx: Receiver,
    /// Frames waiting to be written, oldest first.
    out: VecDeque<Bytes>,
    deflate: Option<Deflate>,
    /// What fan-out writes through while this connection is parked.
    direct: Option<Arc<dyn DirectSink>>,
}

const PING: Bytes = Bytes::from_static(&[0x89, 0x00]);
/// Frames per vectored write.
const MAX_SLICES: usize = 64;
/// Bytes read per call; a connection holds no read buffer between reads.
const READ_CHUNK: usize = 8 * 1024;

enum Read {
    /// Bytes were read; complete frames, if any, were appended.
    Data,
    Eof,
    Violation(Violation),
}

impl<S: Io> Socket<S> {
    /// A data frame for this connection's own traffic (command replies,
    /// echoes), compressed when deflate was agreed and the message is worth it.
    fn data_frame(&self, op: OpCode, payload: &[u8]) -> Bytes {
        if let Some(d) = self.deflate.filter(|d| d.wants(payload.len())) {
            let packed = deflate::compress(payload, d.window_bits);
            if packed.len() < payload.len() {
                return frame::server_frame(op, true, &packed);
            }
        }
        frame::server_frame(op, false, payload)
    }

    fn push_text(&mut self, text: &str) {
        let f = self.data_frame(OpCode::Text, text.as_bytes());
        self.out.push_back(f);
    }

    /// Writes queued frames, as many per system call as the kernel takes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.out.len().min(MAX_SLICES);
            for (slice, frame) in slices.iter_mut().zip(&self.out) {
                *slice = IoSlice::new(frame);
            }
            let mut written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let Some(front) = self.out.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.out.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        if self.out.capacity() > MAX_SLICES {
            self.out = VecDeque::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, got: &mut Vec<Incoming>) -> Poll<Read> {
        // On the stack for the duration of one poll only, and never zeroed:
        // most polls find nothing to read.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut buf);
        match ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb)) {
            Err(_) => Poll::Ready(Read::Eof),
            Ok(()) if rb.filled().is_empty() => Poll::Ready(Read::Eof),
            Ok(()) => Poll::Ready(match self.rx.feed(rb.filled(), got) {
                Ok(()) => Read::Data,
                Err(v) => Read::Violation(v),
            }),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// The closing handshake from the server's side: send the close frame,
    /// then read until the client's close frame (or end of stream) so that
    /// the server closes the TCP connection first (RFC 6455 §7.1.1).
    async fn close(&mut self, frame: Bytes, await_reply: bool) {
        self.out.push_back(frame);
        if self.flush().await.is_err() || !await_reply || self.rx.saw_close() {
            return;
        }
        let mut got = Vec::new();
        loop {
            match poll_fn(|cx| self.poll_read(cx, &mut got)).await {
                Read::Data if got.iter().any(|i| matches!(i, Incoming::Close(_))) => return,
                Read::Data => got.clear(),
                Read::Eof | Read::Violation(_) => return,
            }
        }
    }
}

enum Wake {
    Outbox(Drained),
    Read(Read),
    Written(std::io::Result<()>),
    PingDue,
    Idle,
}

async fn serve<S: Io>(
    state: &AppState,
    ws: &mut Socket<S>,
    conn: &mut Connection,
    query: SubscribeQuery,
    mode: Mode,
) -> End {
    let outbox = conn.outbox().clone();
    for channel in query.channels {
        let (reply, events) = match conn.subscribe(channel, &query.since).await {
            Ok(r) => r,
            Err(e) => (Reply::Error(e), Vec::new()),
        };
        ws.push_text(&reply.encode(None));
        accept_all(state, ws, conn, events);
    }
    let mut events: Vec<OutboxEvent> = Vec::new();

    // One timer for silence and stalled writes alike: a peer that neither
    // sends nor reads for `ws_idle_timeout` is gone.
    let idle_for = state.config.ws_idle_timeout;
    let idle = tokio::time::sleep(idle_for);
    tokio::pin!(idle);
    let ping_every = state.config.ws_ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut got: Vec<Incoming> = Vec::new();

    loop {
        let wake = poll_fn(|cx| {
            if let Some(rest) = conn.unpark() {
                ws.out.push_front(rest);
            }
            if !ws.out.is_empty() {
                if let Poll::Ready(r) = ws.poll_write(cx) {
                    return Poll::Ready(Wake::Written(r));
                }
                // Blocked on a slow reader: its outbox keeps filling, and
                // reading waits so that answers cannot pile up here.
                if outbox.poll_overflowed(cx).is_ready() {
                    return Poll::Ready(Wake::Outbox(Drained::Overflowed));
                }
            } else {
                if let Poll::Ready(d) = outbox.poll_drain(cx, &mut events) {
                    return Poll::Ready(Wake::Outbox(d));
                }
                if let Poll::Ready(r) = ws.poll_read(cx, &mut got) {
                    return Poll::Ready(Wake::Read(r));
                }
            }
            if ping.poll_tick(cx).is_ready() {
                return Poll::Ready(Wake::PingDue);
            }
            if std::future::Future::poll(idle.as_mut(), cx).is_ready() {
                return Poll::Ready(Wake::Idle);
            }
            if let (true, Some(sink)) = (ws.out.is_empty(), &ws.direct) {
                // Waiting with nothing to write: fan-out may write for us.
                conn.park(sink);
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Written(Ok(())) => {}
            Wake::Written(Err(_)) | Wake::Read(Read::Eof) => return End::Drop,
            Wake::Outbox(Drained::Events) => accept_all(state, ws, conn, events.drain(..)),
            Wake::Outbox(Drained::Overflowed) => return fell_behind(state),
            Wake::Outbox(Drained::ShutDown) => {
                return End::Close(
                    close::RESTART,
                    "server restarting: reconnect and resume from your cursor",
                );
            }
            Wake::Read(Read::Violation(v)) => {
                // Whatever came before the bad frame is still answered.
                if let Some(end) = act(state, ws, conn, mode, &mut got).await {
                    return end;
                }
                return v.into();
            }
            Wake::Read(Read::Data) => {
                if !got.is_empty() {
                    idle.as_mut().reset(Instant::now() + idle_for);
                }
                if let Some(end) = act(state, ws, conn, mode, &mut got).await {
                    return end;
                }
            }
            Wake::PingDue => ws.out.push_back(PING),
            Wake::Idle => {
                return End::Close(
                    close::IDLE,
                    "idle timeout: nothing received, not even a pong",
                );
            }
        }
    }
}

/// Acts on what the client sent; `Some` ends the connection.
async fn act<S: Io>(
    state: &AppState,
    ws: &mut Socket<S>,
    conn: &mut Connection,
    mode: Mode,
    got: &mut Vec<Incoming>,
) -> Option<End> {
    for incoming in got.drain(..) {
        match incoming {
            Incoming::Text(t) if mode == Mode::Echo => {
                let f = ws.data_frame(OpCode::Text, &t);
                ws.out.push_back(f);
            }
            Incoming::Binary(b) if mode == Mode::Echo => {
                let f = ws.data_frame(OpCode::Binary, &b);
                ws.out.push_back(f);
            }
            Incoming::Text(t) => {
                // Boxed: command handling is rare and its state large; this
                // loop's state is held for the connection's life.
                Box::pin(command(state, ws, conn, &t)).await;
            }
            Incoming::Binary(_) => {
                let e =
                    pushgate_core::Error::bad_request("commands are JSON text frames, not binary");
                ws.push_text(&Reply::Error(e).encode(None));
            }
            Incoming::Ping(p) => ws
                .out
                .push_back(frame::server_frame(OpCode::Pong, false, &p)),
            Incoming::Pong(_) => {}
            Incoming::Close(code) => {
                // §5.5.1: answer with the same status code.
                let answer = match code {
                    Some((code, _)) => frame::close_frame(code, ""),
                    None => frame::server_frame(OpCode::Close, false, &[]),
                };
                return Some(End::Reply(answer));
            }
        }
    }
    None
}

async fn command<S: Io>(state: &AppState, ws: &mut Socket<S>, conn: &mut Connection, bytes: &[u8]) {
    let (reply, id, events) = match protocol::decode(bytes) {
        Ok(req) => {
            let id = req.id.clone();
            let (reply, events) = super::execute(state, conn, req).await;
            (reply, id, events)
        }
        Err(rejected) => {
            state.metrics.command(false);
            (Reply::Error(rejected.error), rejected.id, Vec::new())
        }
    };
    ws.push_text(&reply.encode(id.as_ref()));
    accept_all(state, ws, conn, events);
}

/// Queues the frames for delivered events: shared, pre-built frames for
/// messages, a small text frame for a `reset`.
fn accept_all<S: Io>(
    state: &AppState,
    ws: &mut Socket<S>,
    conn: &mut Connection,
    events: impl IntoIterator<Item = OutboxEvent>,
) {
    let mut delivered = 0;
    conn.accept_each(events, |emit| match emit {
        Emit::Message(p) => {
            delivered += 1;
            ws.out
                .push_back(p.ws_frame_for(ws.deflate.as_ref()).clone());
        }
        Emit::Reset { channel, position } => ws.push_text(&encode_reset(&channel, &position)),
    });
    state.metrics.delivered(Transport::Ws, delivered);
}

/// Counts and ends a subscriber whose outbox overflowed.
fn fell_behind(state: &AppState) -> End {
    state.metrics.dropped_slow(Transport::Ws);
    tracing::info!("websocket subscriber fell behind; closing so it resumes");
    End::Close(
        close::RESUME,
        "fell behind: reconnect and resume from your cursor",
    )
}
