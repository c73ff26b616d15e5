//! A streaming HTTP response fed by a connection's outbox, shared by the
//! streaming HTTP transports: SSE, NDJSON (`/stream`) and the hidden iframe.
//!
//! The stream is the core's delivery state machine with the transport's
//! framing. On the HTTP/1.1 front the one delivery loop drives it on the
//! socket (`EventStream::run`); on hyper's path hyper polls it as a
//! response body. Either way no task of its own: while idle it holds the
//! connection's state, one timer and nothing else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use pushgate_core::cursor::Since;
use pushgate_core::delivery::{Delivery, End, Framing, Timing};
use pushgate_core::hub::Drained;
use pushgate_core::publication::Encoding;
use pushgate_core::session::Session;
use pushgate_core::{ChannelName, DirectSink, Error, OutboxEvent};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::delivery_loop::{self, Ended, Silent, Socket, Wire};
use crate::access_log::{Close, Tracked};
use crate::admission::Admitted;
use crate::metrics::Transport;
use crate::registry::{Meta, Registration};
use crate::shared_tcp::DirectWire;
use crate::state::AppState;

/// What a streaming transport adds to its framing for an HTTP response.
pub trait Encoder: Framing + Send + 'static {
    fn content_type(&self) -> &'static str;

    /// The first bytes of the response.
    fn preamble(&self, state: &AppState) -> Bytes;

    /// When the stream sends heartbeats, and how long it may live.
    fn timing(&self, state: &AppState) -> Arc<Timing> {
        state.stream_timing.clone()
    }

    /// For fan-out's direct writes: a live message's bytes as one HTTP/1.1
    /// chunk, when they are the same for every such stream (`None`: they
    /// depend on this stream, e.g. a multi-channel SSE id).
    fn shared(&self, _session: &Session) -> Option<&'static Encoding> {
        None
    }
}

/// Subscribes to every channel from `since`, then returns a stream that
/// starts with the encoder's preamble, the `subscribed` replies and the
/// catch-up, and continues live (`crate::web::event_stream` makes it a
/// response).
pub async fn open(
    state: Arc<AppState>,
    caller: &Admitted,
    channels: Vec<ChannelName>,
    since: Since,
    encoder: Box<dyn Encoder>,
    transport: Transport,
) -> Result<EventStream, Error> {
    if channels.is_empty() {
        return Err(Error::bad_request(
            "give at least one channel: ?channel=NAME",
        ));
    }
    let principal = caller.principal();
    let mut tracked = Tracked::open(&state.metrics, transport, caller.peer(), principal);
    let timing = encoder.timing(&state);
    let now = Instant::now().into_std();
    let mut delivery = Delivery::new(state.connection(principal), encoder, timing, now);
    // The stream ends with `expired` when its token does.
    delivery.expire_at(crate::admission::deadline(&state, principal));
    let preamble = delivery.framing().preamble(&state);
    if !preamble.is_empty() {
        delivery.send(preamble, now);
    }
    // Every reply first, then every catch-up: the ids of a multi-channel
    // stream's catch-up then cover all of its channels.
    let mut catchup: Vec<OutboxEvent> = Vec::new();
    for channel in channels {
        let (reply, events) = delivery
            .connection_mut()
            .subscribe(channel, &since)
            .await
            .inspect_err(|e| state.note_refusal(e, caller.peer()))?;
        delivery.reply(&reply, None, Vec::new(), now);
        catchup.extend(events);
    }
    delivery.deliver(catchup, || now);
    delivery.caught_up(now);
    tracked.delivered(delivery.take_delivered());
    let outbox = delivery.connection().outbox().clone();
    let id = delivery.connection().id();
    Ok(EventStream {
        delivery,
        tracked,
        timer: None,
        _registered: state
            .registry
            .register(id, &outbox, Meta::now(transport, caller.peer())),
    })
}

pub struct EventStream {
    delivery: Delivery<Box<dyn Encoder>>,
    /// Counted and logged as a connection, with the transport.
    tracked: Tracked,
    /// On hyper's path, the delivery's next deadline (the front's loop
    /// keeps its own); made on first use.
    timer: Option<(Pin<Box<Sleep>>, std::time::Instant)>,
    _registered: Registration,
}

impl EventStream {
    /// The response's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        self.delivery.framing().content_type()
    }

    /// How fan-out may write this stream's messages itself: when their
    /// bytes are shared.
    pub fn direct_wire(&self) -> Option<DirectWire> {
        let session = self.delivery.connection().session();
        let chunk = self.delivery.framing().shared(session)?;
        Some(DirectWire::Chunk(chunk, self.tracked.transport()))
    }

    fn fell_behind(&mut self) {
        let t = self.tracked.transport();
        self.tracked.metrics().dropped_slow(t);
        self.tracked.close(Close::FellBehind);
    }

    /// Runs the stream on `io`, whose response head was written, until the
    /// stream ends, the client leaves, or the client stops reading:
    /// chunked on an HTTP/1.1 socket, raw on an HTTP/2 stream.
    pub async fn run<S>(
        &mut self,
        state: &AppState,
        mut io: S,
        direct: Option<Arc<dyn DirectSink>>,
        wire: Wire,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut socket = Socket::new(&mut io, wire);
        let ended = delivery_loop::run(
            state,
            &mut self.delivery,
            &mut socket,
            &mut Silent,
            direct.as_ref(),
            &mut self.tracked,
        )
        .await;
        match ended {
            Ended::Delivery(End::FellBehind) => self.fell_behind(),
            Ended::Delivery(
                end @ (End::ShutDown | End::Idle | End::Expired | End::Disconnected),
            ) => self.tracked.close(end.into()),
            // Gone, or not reading: nothing more can be said.
            Ended::Delivery(End::Stalled) => return self.tracked.close(Close::Stalled),
            Ended::Gone | Ended::Peer(_) => return self.tracked.close(Close::Client),
        }
        // What is queued, the farewell, then the end of the body; a client
        // that reads resumes from its cursor either way.
        let limit = Duration::from_secs(2);
        if socket.flush(&mut self.delivery, limit).await {
            let end = async {
                match wire {
                    Wire::Chunked => socket.io.write_all(b"0\r\n\r\n").await,
                    Wire::Raw => socket.io.shutdown().await,
                }
            };
            let _ = tokio::time::timeout(limit, end).await;
        }
    }

    /// The next piece of the body on hyper's path; `None` when the stream ended.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let outbox = self.delivery.connection().outbox().clone();
        loop {
            let now = Instant::now().into_std();
            if let Some(bytes) = self.delivery.pending().pop_front() {
                // hyper takes it: as good as written.
                self.delivery.written();
                return Poll::Ready(Some(bytes));
            }
            match self.delivery.end() {
                Some(End::FellBehind) => {
                    self.fell_behind();
                    return Poll::Ready(None);
                }
                Some(end) => {
                    self.tracked.close(end.into());
                    return Poll::Ready(None);
                }
                None => {}
            }
            let mut events = Vec::new();
            match outbox.poll_drain(cx, &mut events) {
                Poll::Ready(Drained::Events) => {
                    let t = self.tracked.transport();
                    self.tracked.metrics().observe_latency(t, &events, now);
                    self.delivery.deliver(events, || now);
                    self.tracked.delivered(self.delivery.take_delivered());
                    continue;
                }
                Poll::Ready(d) => {
                    self.delivery.drained(d);
                    continue;
                }
                Poll::Pending => {}
            }
            let Some(at) = self.delivery.poll_timeout() else {
                return Poll::Pending;
            };
            let timer = match &mut self.timer {
                Some((sleep, set)) if *set == at => sleep,
                slot => {
                    let sleep = Box::pin(tokio::time::sleep_until(Instant::from_std(at)));
                    &mut slot.insert((sleep, at)).0
                }
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.timer = None;
            self.delivery.handle_timeout(now);
        }
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .poll_next(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
