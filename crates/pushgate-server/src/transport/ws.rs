//! WebSocket at `GET /ws` (RFC 6455): JSON commands in, replies and messages out.
//!
//! The frame codec is tokio-tungstenite (see `docs/architecture.md` for why);
//! the handshake, the loop and the close codes are ours, so the library can
//! be swapped without touching the protocol.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use pushgate_core::outbox::Drained;
use pushgate_core::protocol::{self, encode_reset, Reply};
use pushgate_core::session::Emit;
use pushgate_core::{Connection, Outbox, OutboxEvent};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::ws_handshake;
use crate::error::close;
use crate::metrics::Transport;
use crate::state::AppState;
use crate::web::{self, parse_subscribe_query, Body, SubscribeQuery};

/// What the codec runs on: a hyper upgrade, or the socket the HTTP front
/// (`crate::front`) kept for itself.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Validates an upgrade request; on success the `Sec-WebSocket-Accept` value
/// and the URL subscriptions to make once connected.
pub fn check(state: &AppState, req: &Parts) -> Result<(String, SubscribeQuery), Response<Body>> {
    let accept = ws_handshake::accept_key(&req.method, &req.headers)?;
    let query = parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions)
        .map_err(|e| web::error(&e))?;
    Ok((accept, query))
}

pub use ws_handshake::switching_protocols;

/// The hyper path: answer 101 and run the connection once hyper hands over the socket.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<hyper::body::Incoming>,
    mode: Mode,
) -> Response<Body> {
    let (mut parts, _) = req.into_parts();
    let (accept, query) = match check(&state, &parts) {
        Ok(ok) => ok,
        Err(res) => return res,
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return web::error(&pushgate_core::Error::bad_request(
            "this connection cannot be upgraded",
        ));
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(state, TokioIo::new(upgraded), query, mode).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    switching_protocols(&accept)
}

/// Settings for the frame codec: a small read buffer because most connections
/// are idle, and limits that turn oversized input into close code 1009.
fn codec_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.max(64 * 1024) * 4)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

enum Wake {
    Outbox(Drained),
    Frame(Option<Result<Message, WsError>>),
    PingDue,
    Idle,
}

/// Runs one WebSocket connection after the 101 was sent.
/// What a WebSocket connection does with the frames it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/ws`: JSON commands.
    Commands,
    /// `/echo` (`--echo`, for conformance testing): every data frame is sent
    /// back as it came, through the same loop, codec and limits as `/ws`.
    Echo,
}

pub async fn run<S: Io>(state: Arc<AppState>, io: S, query: SubscribeQuery, mode: Mode) {
    let cfg = codec_config(state.config.max_message_size);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
    let _open = state.metrics.connection(Transport::Ws);
    let mut conn = state.connection();
    let _registered = state.registry.register(conn.outbox());
    let end = serve(&state, &mut ws, &mut conn, query, mode).await;
    drop(conn);
    if let Err(End::Close(code, reason)) = end {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            Box::pin(close_with(&mut ws, code, reason)),
        )
        .await;
    }
}

/// Why the server ends a connection early.
enum End {
    /// Send a close frame with this code and reason.
    Close(u16, &'static str),
    /// The peer is gone or unresponsive: just drop the socket.
    Drop,
}

async fn close_with<S: Io>(ws: &mut WebSocketStream<S>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    if ws.close(Some(frame)).await.is_ok() {
        // Wait for the client's close frame so the server holds TIME_WAIT.
        while let Some(Ok(_)) = ws.next().await {}
    }
}

async fn serve<S: Io>(
    state: &AppState,
    ws: &mut WebSocketStream<S>,
    conn: &mut Connection,
    query: SubscribeQuery,
    mode: Mode,
) -> Result<(), End> {
    let outbox = conn.outbox().clone();
    let mut out: Vec<Message> = Vec::new();
    // One timer for both silence and stalled writes: a peer that neither
    // sends nor reads for `ws_idle_timeout` is gone.
    let idle = tokio::time::sleep(state.config.ws_idle_timeout);
    tokio::pin!(idle);
    for channel in query.channels {
        let (reply, events) = match conn.subscribe(channel, &query.since).await {
            Ok(r) => r,
            Err(e) => (Reply::Error(e), Vec::new()),
        };
        out.push(text(reply.encode(None)));
        accept_all(state, conn, events, &mut out);
    }
    send(state, ws, &mut out, &outbox, idle.as_mut()).await?;

    let ping_every = state.config.ws_ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut events: Vec<OutboxEvent> = Vec::new();

    loop {
        let wake = poll_fn(|cx| {
            if let Poll::Ready(d) = outbox.poll_drain(cx, &mut events) {
                return Poll::Ready(Wake::Outbox(d));
            }
            if let Poll::Ready(frame) = ws.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Frame(frame));
            }
            if ping.poll_tick(cx).is_ready() {
                return Poll::Ready(Wake::PingDue);
            }
            if std::future::Future::poll(idle.as_mut(), cx).is_ready() {
                return Poll::Ready(Wake::Idle);
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Outbox(Drained::Events) => {
                accept_all(state, conn, std::mem::take(&mut events), &mut out);
                send(state, ws, &mut out, &outbox, idle.as_mut()).await?;
            }
            Wake::Outbox(Drained::Overflowed) => return Err(fell_behind(state)),
            Wake::Outbox(Drained::ShutDown) => {
                return Err(End::Close(
                    close::RESTART,
                    "server restarting: reconnect and resume from your cursor",
                ));
            }
            Wake::Frame(Some(Ok(msg))) => {
                idle.as_mut()
                    .reset(Instant::now() + state.config.ws_idle_timeout);
                match msg {
                    Message::Text(_) | Message::Binary(_) if mode == Mode::Echo => {
                        out.push(msg);
                        send(state, ws, &mut out, &outbox, idle.as_mut()).await?;
                    }
                    Message::Text(t) => {
                        // Boxed: command handling is rare and its state large;
                        // this loop's state is held for the connection's life.
                        Box::pin(command(state, conn, t.as_bytes(), &mut out)).await;
                        send(state, ws, &mut out, &outbox, idle.as_mut()).await?;
                    }
                    Message::Binary(_) => {
                        let e = pushgate_core::Error::bad_request(
                            "commands are JSON text frames, not binary",
                        );
                        out.push(text(Reply::Error(e).encode(None)));
                        send(state, ws, &mut out, &outbox, idle.as_mut()).await?;
                    }
                    // tungstenite queues the Pong and the Close reply itself.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    Message::Close(_) => {
                        let _ = ws.flush().await;
                        return Ok(());
                    }
                }
            }
            Wake::Frame(Some(Err(e))) => return Err(end_for(&e)),
            Wake::Frame(None) => return Ok(()),
            Wake::PingDue => {
                out.push(Message::Ping(Bytes::new()));
                send(state, ws, &mut out, &outbox, idle.as_mut()).await?;
            }
            Wake::Idle => {
                return Err(End::Close(
                    close::IDLE,
                    "idle timeout: nothing received, not even a pong",
                ));
            }
        }
    }
}

/// How to end after a read error: RFC 6455 §7.4.1 codes for bad input,
/// nothing for a peer that is already gone.
fn end_for(e: &WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Close(1009, "message too big"),
        WsError::Utf8(_) => End::Close(1007, "text frame is not valid UTF-8"),
        WsError::Protocol(_) => End::Close(1002, "protocol error"),
        _ => End::Drop,
    }
}

async fn command(state: &AppState, conn: &mut Connection, bytes: &[u8], out: &mut Vec<Message>) {
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
    out.push(text(reply.encode(id.as_ref())));
    accept_all(state, conn, events, out);
}

fn accept_all(
    state: &AppState,
    conn: &mut Connection,
    events: Vec<OutboxEvent>,
    out: &mut Vec<Message>,
) {
    let mut emits = Vec::new();
    conn.accept_all(events, &mut emits);
    let mut delivered = 0;
    for emit in emits {
        out.push(match emit {
            Emit::Message(p) => {
                delivered += 1;
                match p.binary_frame() {
                    Some(frame) => Message::Binary(frame.clone()),
                    // Built by the core from a String, so always UTF-8.
                    None => match Utf8Bytes::try_from(p.json().clone()) {
                        Ok(t) => Message::Text(t),
                        Err(_) => continue,
                    },
                }
            }
            Emit::Reset { channel, position } => text(encode_reset(&channel, &position)),
        });
    }
    state.metrics.delivered(Transport::Ws, delivered);
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
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

/// Writes everything queued in one flush (one syscall when it fits), bounded
/// in time. A peer that stops reading blocks the write; if its outbox
/// overflows meanwhile it is cut off at once, not after the whole timeout.
async fn send<S: Io>(
    state: &AppState,
    ws: &mut WebSocketStream<S>,
    out: &mut Vec<Message>,
    outbox: &Outbox,
    idle: Pin<&mut Sleep>,
) -> Result<(), End> {
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        for m in out.drain(..) {
            ws.feed(m).await?;
        }
        ws.flush().await
    };
    tokio::select! {
        biased;
        written = write => match written {
            Ok(()) => Ok(()),
            Err(_) => Err(End::Drop),
        },
        () = poll_fn(|cx| outbox.poll_overflowed(cx)) => Err(fell_behind(state)),
        // The peer stopped reading (and sent nothing) for a whole idle period.
        () = idle => Err(End::Drop),
    }
}
