//! WebSocket at `GET /ws` (RFC 6455, RFC 7692): JSON commands in, replies and
//! messages out.
//!
//! The codec is pushgate's own and sans-IO ([`pushgate_core::websocket`]),
//! and the connection's delivery is the core's state machine, driven by the
//! one delivery loop (`super::delivery_loop`); this module says what a
//! WebSocket's frames are (`WsFraming`) and what its client may send
//! (`WsPeer`), and closes. A published message's frame is built once and
//! every subscriber writes the same bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use pushgate_core::delivery::{Delivery, End, Framing};
use pushgate_core::protocol::{encode_reset, Reply};
use pushgate_core::session::{Emit, Session};
use pushgate_core::websocket::{deflate, frame, Deflate, Incoming, OpCode, Receiver, Violation};
use pushgate_core::{DirectSink, Principal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::delivery_loop::{self, Ended, Peer, Socket, Wire};
use super::ws_handshake;
use crate::access_log::{Close, Tracked};
use crate::admission::{self, Admitted, Rejection};
use crate::error::close;
use crate::linger;
use crate::metrics::{Limit, Transport};
use crate::registry::Meta;
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
    /// What `/api/connections` says of it (and the access log: its peer).
    meta: Meta,
    /// A refused token: the socket opens only to say so and close. Boxed:
    /// rare.
    refused: Option<Box<pushgate_core::Error>>,
}

impl Upgrade {
    /// How fan-out frames this connection's messages when it writes them.
    pub fn direct_wire(&self) -> DirectWire {
        DirectWire::Ws(self.deflate)
    }
}

/// Validates an admitted upgrade request and negotiates extensions.
pub fn check(state: &AppState, admitted: &Admitted, req: &Parts) -> Result<Upgrade, Rejection> {
    let mode = match admitted.route().endpoint {
        Endpoint::WebSocket => Mode::Commands,
        Endpoint::Echo => Mode::Echo,
        _ => return Err(Rejection::not_found(req.uri.path())),
    };
    let accept = ws_handshake::accept_key(&req.method, &req.headers)?;
    let query = parse_subscribe_query(req.uri.query(), &[], state.config.max_subscriptions)?;
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
        meta: Meta::now(Transport::Ws, admitted.peer()),
        refused: admitted.refused_token().cloned().map(Box::new),
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
        Err(rejected) => return rejected.into_response(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return web::error(&pushgate_core::Error::bad_request(
            "this connection cannot be upgraded",
        ));
    };
    let res = switching_protocols(&up);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(state, TokioIo::new(upgraded), Box::new(up), None).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    res
}

/// The value of `b`, its allocation freed now (moving out of a box in
/// place would keep the allocation until the end of the scope).
#[allow(clippy::boxed_local)] // the box is what this frees
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Runs one WebSocket connection after the 101 was sent. With `direct`
/// (the front's connections), fan-out writes isolated messages to the
/// socket itself while the connection waits with nothing to write.
pub async fn run<S: Io>(
    state: Arc<AppState>,
    mut io: S,
    up: Box<Upgrade>,
    direct: Option<Arc<dyn DirectSink>>,
) {
    // Taken apart, the handshake's answer dropped and the principal given
    // to the connection: only what later awaits need stays in this future,
    // which lives as long as the connection (memory per idle connection).
    // Boxed, and unboxed at once: an async fn keeps its arguments for its
    // whole life, so a box keeps 8 bytes there instead of the whole upgrade.
    let Upgrade {
        deflate,
        query,
        mode,
        principal,
        meta,
        refused,
        accept,
        extensions,
    } = unbox(up);
    drop((accept, extensions));
    let mut tracked = Tracked::open(&state.metrics, Transport::Ws, meta.peer(), &principal);
    let expiry = admission::deadline(&state, &principal);
    let conn = state.connection(&principal);
    drop(principal);
    let _registered = state.registry.register(conn.id(), conn.outbox(), meta);
    let config = &state.config;
    let timing = state.ws_timing.clone();
    let framing = WsFraming {
        deflate,
        commands: mode == Mode::Commands,
    };
    let mut delivery = Delivery::new(conn, framing, timing, Instant::now().into_std());
    let mut peer = WsPeer {
        rx: Receiver::new(config.max_message_size, deflate),
        mode,
        got: Vec::new(),
        violation: None,
    };
    let mut socket = Socket::new(&mut io, Wire::Raw);
    // One closing handshake (one await of `close`) for every way out: each
    // await point's state is part of this future, which lives as long as
    // the connection.
    let (frame, then) = match refused {
        Some(refused) => {
            // Browsers cannot read a refused handshake; they can read this.
            let code = crate::error::close_code(refused.kind());
            let reason = refused.kind().code();
            tracked.close_with_code(Close::Refused, code);
            delivery.reply(
                &Reply::Error(*refused),
                None,
                Vec::new(),
                Instant::now().into_std(),
            );
            (frame::close_frame(code, reason), Then::AwaitClose)
        }
        None => {
            delivery.expire_at(expiry);
            for channel in query.channels {
                let (reply, events) = match delivery
                    .connection_mut()
                    .subscribe(channel, &query.since)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        state.note_refusal(&e, tracked.peer());
                        (Reply::Error(e), Vec::new())
                    }
                };
                delivery.reply(&reply, None, events, Instant::now().into_std());
            }
            tracked.delivered(delivery.take_delivered());
            let ended = delivery_loop::run(
                &state,
                &mut delivery,
                &mut socket,
                &mut peer,
                direct.as_ref(),
                &mut tracked,
            )
            .await;
            let end = match &ended {
                Ended::Delivery(end) => Some(*end),
                _ => None,
            };
            let (frame, then) = match ended {
                Ended::Delivery(End::FellBehind) => {
                    state.metrics.dropped_slow(Transport::Ws);
                    tracing::info!("websocket subscriber fell behind; closing so it resumes");
                    let reason = "fell behind: reconnect and resume from your cursor";
                    (frame::close_frame(close::RESUME, reason), Then::AwaitClose)
                }
                Ended::Delivery(End::ShutDown) => {
                    let reason = "server restarting: reconnect and resume from your cursor";
                    (frame::close_frame(close::RESTART, reason), Then::AwaitClose)
                }
                Ended::Delivery(End::Idle) => {
                    let reason = "idle timeout: nothing received, not even a pong";
                    (frame::close_frame(close::IDLE, reason), Then::AwaitClose)
                }
                Ended::Delivery(End::Expired) => {
                    let reason = "token expired: reconnect with a fresh token";
                    (
                        frame::close_frame(close::TOKEN_EXPIRED, reason),
                        Then::AwaitClose,
                    )
                }
                Ended::Delivery(End::Disconnected) => {
                    let reason =
                        "disconnected by the application: do not reconnect with this token";
                    (
                        frame::close_frame(close::DISCONNECTED, reason),
                        Then::AwaitClose,
                    )
                }
                Ended::Peer(Closing::Reply(frame)) => (frame, Then::Close),
                Ended::Peer(Closing::Violation(v)) => {
                    if v.code == pushgate_core::websocket::close::TOO_BIG {
                        state.metrics.limited(Limit::MessageSize);
                    }
                    tracked.close_with_code(Close::Violation, v.code);
                    (frame::close_frame(v.code, v.reason), Then::Discard)
                }
                // The peer is gone or unresponsive: just drop the socket.
                Ended::Delivery(End::Stalled) => return tracked.close(Close::Stalled),
                Ended::Gone => return tracked.close(Close::Client),
            };
            match end {
                Some(end) => tracked.close_with_code(end.into(), closing_code(&frame)),
                None => tracked.close(Close::Client),
            }
            (frame, then)
        }
    };
    // The closing handshake from the server's side: what is queued and the
    // close frame, then the end of what this connection sends. A client
    // still sending must not meet a closed socket, whose reset can destroy
    // the close frame (`crate::linger`): the server half-closes and reads
    // until the client's close frame or end of stream, and so closes the
    // TCP connection first (RFC 6455 §7.1.1).
    delivery.send(frame, Instant::now().into_std());
    if !socket.flush(&mut delivery, CLOSING).await {
        return;
    }
    // Nothing more goes out: leave the hub now rather than after lingering.
    drop(delivery);
    if then == Then::Close || peer.rx.saw_close() {
        // The client sent its close frame, and nothing after it.
        return;
    }
    // After a violation the receiver cannot find the client's close frame
    // in what follows: everything is dropped until the end of stream.
    let mut parse = then == Then::AwaitClose;
    linger::linger_close_until(socket.io, linger::LINGER, |bytes| {
        if !parse {
            return false;
        }
        peer.got.clear();
        match peer.rx.feed(bytes, &mut peer.got) {
            Ok(()) => peer.got.iter().any(|i| matches!(i, Incoming::Close(_))),
            Err(_) => {
                parse = false;
                false
            }
        }
    })
    .await;
}

/// The status code of a close frame the server made (2 bytes after a
/// 2-byte header, as `frame::close_frame` writes them).
fn closing_code(frame: &Bytes) -> u16 {
    match frame.get(2..4) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 1005,
    }
}

/// The most a closing connection spends writing its last frames.
const CLOSING: Duration = Duration::from_secs(2);

/// What follows the server's close frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The client began the closing handshake: close the socket.
    Close,
    /// Wait for the client's close frame (or its end of stream).
    AwaitClose,
    /// The client broke the protocol: drop what it sends until it ends.
    Discard,
}

/// How the client ended a connection.
enum Closing {
    /// It began the closing handshake: send this answer and close.
    Reply(Bytes),
    /// It broke the protocol: close with this code.
    Violation(Violation),
}

/// A WebSocket's frames.
struct WsFraming {
    deflate: Option<Deflate>,
    /// `/ws` rather than `/echo`.
    commands: bool,
}

const PING: Bytes = Bytes::from_static(&[0x89, 0x00]);

/// On `/ws`, a Ping and a `{"type":"ping"}` text frame in one write.
/// Browsers answer the Ping by themselves (the server's proof of life) but
/// hide it from the page; the text frame is what a page's watchdog sees.
/// `/echo` sends the Ping alone: a conformance client expects no data it
/// did not send.
const COMMANDS_HEARTBEAT: Bytes = Bytes::from_static(b"\x89\x00\x81\x0f{\"type\":\"ping\"}");

impl WsFraming {
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
}

impl Framing for WsFraming {
    /// Messages: the shared, pre-built frame; a reset: a small text frame.
    fn emit(&mut self, _: &Session, emit: &Emit) -> Bytes {
        match emit {
            Emit::Message(p) => p.ws_frame_for(self.deflate.as_ref()).clone(),
            Emit::Reset { channel, position } => {
                self.data_frame(OpCode::Text, encode_reset(channel, position).as_bytes())
            }
            Emit::Live(e) => self.data_frame(OpCode::Text, e.json()),
        }
    }

    fn reply(&mut self, json: &str) -> Bytes {
        self.data_frame(OpCode::Text, json.as_bytes())
    }

    fn heartbeat(&mut self) -> Bytes {
        if self.commands {
            COMMANDS_HEARTBEAT
        } else {
            PING
        }
    }
}

/// What a WebSocket client sends: commands (or, on `/echo`, anything to
/// send back), pings, and the close.
struct WsPeer {
    rx: Receiver,
    mode: Mode,
    /// Complete messages not acted on yet.
    got: Vec<Incoming>,
    /// A protocol violation after them: the connection ends once they are
    /// answered.
    violation: Option<Violation>,
}

impl Peer<WsFraming> for WsPeer {
    type End = Closing;

    fn feed(&mut self, bytes: &[u8]) -> bool {
        if let Err(v) = self.rx.feed(bytes, &mut self.got) {
            self.violation = Some(v);
        }
        !self.got.is_empty()
    }

    async fn act(
        &mut self,
        state: &AppState,
        delivery: &mut Delivery<WsFraming>,
        from: std::net::SocketAddr,
    ) -> Result<(), Closing> {
        for incoming in std::mem::take(&mut self.got) {
            let now = Instant::now().into_std();
            match incoming {
                Incoming::Text(t) if self.mode == Mode::Echo => {
                    let f = delivery.framing().data_frame(OpCode::Text, &t);
                    delivery.send(f, now);
                }
                Incoming::Binary(b) if self.mode == Mode::Echo => {
                    let f = delivery.framing().data_frame(OpCode::Binary, &b);
                    delivery.send(f, now);
                }
                Incoming::Text(t) => {
                    // Boxed: command handling is rare and its state large; the
                    // loop's state is held for the connection's life.
                    Box::pin(command(state, delivery, &t, from)).await;
                }
                Incoming::Binary(_) => {
                    let e = pushgate_core::Error::bad_request(
                        "commands are JSON text frames, not binary",
                    );
                    delivery.reply(&Reply::Error(e), None, Vec::new(), now);
                }
                Incoming::Ping(p) => {
                    delivery.send(frame::server_frame(OpCode::Pong, false, &p), now)
                }
                Incoming::Pong(_) => {}
                Incoming::Close(code) => {
                    // §5.5.1: answer with the same status code.
                    let answer = match code {
                        Some((code, _)) => frame::close_frame(code, ""),
                        None => frame::server_frame(OpCode::Close, false, &[]),
                    };
                    return Err(Closing::Reply(answer));
                }
            }
        }
        // Whatever came before the bad frame is answered; then it closes.
        match self.violation.take() {
            Some(v) => Err(Closing::Violation(v)),
            None => Ok(()),
        }
    }
}

async fn command(
    state: &AppState,
    delivery: &mut Delivery<WsFraming>,
    bytes: &[u8],
    from: std::net::SocketAddr,
) {
    let (reply, id, events) = match super::decode(state, bytes) {
        Ok(req) => {
            let id = req.id.clone();
            let (reply, events) = super::execute(state, delivery.connection_mut(), req, from).await;
            // Only an accepted `auth` changes the token, and so its expiry.
            if let Reply::Authed { .. } = reply {
                let deadline = admission::deadline(state, delivery.connection().principal());
                delivery.expire_at(deadline);
            }
            (reply, id, events)
        }
        Err(rejected) => {
            state.metrics.command(false);
            (Reply::Error(rejected.error), rejected.id, Vec::new())
        }
    };
    delivery.reply(&reply, id.as_ref(), events, Instant::now().into_std());
}
