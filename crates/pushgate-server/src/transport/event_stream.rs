//! A streaming HTTP response fed by a connection's outbox, shared by the
//! streaming HTTP transports: SSE, NDJSON (`/stream`) and the hidden iframe.
//!
//! No task of its own: the connection's task (`crate::http1::pump`, or hyper
//! on its path) polls this body, and the body polls the outbox. While idle it
//! holds the connection state, one timer and nothing else.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use pushgate_core::cursor::Since;
use pushgate_core::hub::Drained;
use pushgate_core::publication::Encoding;
use pushgate_core::session::Emit;
use pushgate_core::{ChannelName, Connection, DirectSink, Error, OutboxEvent, Principal};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::metrics::{ConnectionGuard, Metrics, Transport};
use crate::registry::Registration;
use crate::shared_tcp::DirectWire;
use crate::state::AppState;

/// How one streaming transport turns events into bytes.
pub trait Encoder: Send + 'static {
    fn content_type(&self) -> &'static str;

    /// The first bytes of the response.
    fn preamble(&self, state: &AppState) -> Bytes;

    /// Appends a reply (`subscribed`) to `out`.
    fn reply(&mut self, json: &str, out: &mut Vec<u8>);

    /// Appends the wire form of `emit` to `out`. `conn` is the state after
    /// the emit was accepted (its cursor includes it).
    fn encode(&mut self, conn: &Connection, emit: &Emit, out: &mut Vec<u8>);

    /// The same for a lone emit, where sharing pre-built bytes is possible.
    fn encode_one(&mut self, conn: &Connection, emit: &Emit) -> Bytes {
        let mut out = Vec::new();
        self.encode(conn, emit, &mut out);
        Bytes::from(out)
    }

    /// For fan-out's direct writes: how to find a live message's bytes,
    /// framed as one HTTP/1.1 chunk, when they are the same for every such
    /// stream (`None`: they depend on this stream, e.g. a multi-channel SSE id).
    fn shared(&self, _conn: &Connection) -> Option<&'static Encoding> {
        None
    }

    /// Appended once the catch-up is written.
    fn after_catchup(&mut self, _conn: &Connection, _out: &mut Vec<u8>) {}

    /// The keep-alive chunk.
    fn ping(&self) -> Bytes;
}

/// Subscribes to every channel from `since`, then returns a stream that
/// starts with the encoder's preamble, the `subscribed` replies and the
/// catch-up, and continues live (`crate::web::event_stream` makes it a
/// response).
pub async fn open(
    state: Arc<AppState>,
    principal: &Principal,
    channels: Vec<ChannelName>,
    since: Since,
    mut encoder: Box<dyn Encoder>,
    transport: Transport,
) -> Result<EventStream, Error> {
    if channels.is_empty() {
        return Err(Error::bad_request(
            "give at least one channel: ?channel=NAME",
        ));
    }
    let mut conn = state.connection(principal);
    let mut first = encoder.preamble(&state).to_vec();
    let mut catchup: Vec<OutboxEvent> = Vec::new();
    for channel in channels {
        match conn.subscribe(channel, &since).await {
            Ok((reply, events)) => {
                encoder.reply(&reply.encode(None), &mut first);
                catchup.extend(events);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(bytes) = encode_events(&mut conn, &mut *encoder, catchup, &state.metrics, transport)
    {
        first.extend_from_slice(&bytes);
    }
    encoder.after_catchup(&conn, &mut first);

    Ok(EventStream::new(
        conn,
        encoder,
        Bytes::from(first),
        &state,
        transport,
    ))
}

pub struct EventStream {
    conn: Option<Connection>,
    encoder: Box<dyn Encoder>,
    /// Bytes to send before anything else (preamble and catch-up).
    first: Option<Bytes>,
    ping: Interval,
    metrics: Arc<Metrics>,
    transport: Transport,
    _open: ConnectionGuard,
    _registered: Registration,
}

impl EventStream {
    fn new(
        conn: Connection,
        encoder: Box<dyn Encoder>,
        first: Bytes,
        state: &AppState,
        transport: Transport,
    ) -> Self {
        let every = state.config.stream_ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let conn_outbox = &conn.outbox().clone();
        EventStream {
            conn: Some(conn),
            encoder,
            first: Some(first),
            ping,
            metrics: state.metrics.clone(),
            transport,
            _open: state.metrics.connection(transport),
            _registered: state.registry.register(conn_outbox),
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        self.encoder.content_type()
    }

    /// How fan-out may write this stream's messages itself: when their
    /// bytes are shared.
    pub fn direct_wire(&self) -> Option<DirectWire> {
        let chunk = self.encoder.shared(self.conn.as_ref()?)?;
        Some(DirectWire::Chunk(chunk, self.transport))
    }

    /// See [`Connection::park`]; only with nothing left to send first.
    pub fn park(&mut self, sink: &Arc<dyn DirectSink>) {
        if let (None, Some(conn)) = (&self.first, &mut self.conn) {
            conn.park(sink);
        }
    }

    /// See [`Connection::unpark`]: bytes to write before anything else.
    pub fn unpark(&mut self) -> Option<Bytes> {
        self.conn.as_mut()?.unpark()
    }

    /// Ready when the subscriber fell behind while a write was blocked;
    /// counts it as dropped.
    pub fn poll_overflowed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(conn) = self.conn.as_ref() else {
            return Poll::Ready(());
        };
        let ready = conn.outbox().poll_overflowed(cx);
        if ready.is_ready() {
            self.fell_behind();
        }
        ready
    }

    fn fell_behind(&mut self) {
        self.metrics.dropped_slow(self.transport);
        tracing::info!(
            transport = self.transport.label(),
            "subscriber fell behind; ending stream so it resumes"
        );
        // Dropping the connection unsubscribes it.
        self.conn = None;
    }

    /// The next chunk to write; `None` when the stream ended.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let mut events: Vec<OutboxEvent> = Vec::new();
            match conn.outbox().clone().poll_drain(cx, &mut events) {
                Poll::Ready(Drained::ShutDown) => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Drained::Overflowed) => {
                    self.fell_behind();
                    return Poll::Ready(None);
                }
                Poll::Ready(Drained::Events) => {
                    if let Some(bytes) = encode_events(
                        conn,
                        &mut *self.encoder,
                        events,
                        &self.metrics,
                        self.transport,
                    ) {
                        self.ping.reset();
                        return Poll::Ready(Some(bytes));
                    }
                    // Only duplicates: poll again, which registers the waker.
                }
                Poll::Pending => break,
            }
        }
        if self.ping.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(self.encoder.ping()));
        }
        Poll::Pending
    }
}

/// Runs events through the session and encodes what must be sent; `None`
/// when everything was a duplicate. A lone emit goes out as shared bytes.
pub fn encode_events(
    conn: &mut Connection,
    encoder: &mut dyn Encoder,
    events: Vec<OutboxEvent>,
    metrics: &Metrics,
    transport: Transport,
) -> Option<Bytes> {
    let mut emits = Vec::with_capacity(2);
    let mut out: Vec<u8> = Vec::new();
    let mut single: Option<Bytes> = None;
    let mut delivered = 0;
    for event in events {
        emits.clear();
        conn.accept(event, &mut emits);
        for emit in &emits {
            if matches!(emit, Emit::Message(_)) {
                delivered += 1;
            }
            if single.is_none() && out.is_empty() {
                single = Some(encoder.encode_one(conn, emit));
            } else {
                if let Some(s) = single.take() {
                    out.extend_from_slice(&s);
                }
                encoder.encode(conn, emit, &mut out);
            }
        }
    }
    metrics.delivered(transport, delivered);
    match single {
        Some(s) => Some(s),
        None if out.is_empty() => None,
        None => Some(Bytes::from(out)),
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
