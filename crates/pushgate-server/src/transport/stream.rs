//! A streaming HTTP response body fed by a connection's outbox, shared by the
//! streaming HTTP transports (SSE now; NDJSON and iframe use the same seam).
//!
//! No task per connection: hyper polls this body, the body polls the outbox.
//! While idle it holds the connection state, one timer and nothing else.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use pushgate_core::outbox::Drained;
use pushgate_core::session::Emit;
use pushgate_core::{Connection, OutboxEvent};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::metrics::{ConnectionGuard, Metrics, Transport};

/// How one streaming transport turns events into bytes.
pub trait Encoder: Send + 'static {
    /// Appends the wire form of `emit` to `out`. `conn` is the state after
    /// the emit was accepted (its cursor includes it).
    fn encode(&mut self, conn: &Connection, emit: &Emit, out: &mut Vec<u8>);

    /// The same for a lone emit, where sharing pre-built bytes is possible.
    fn encode_one(&mut self, conn: &Connection, emit: &Emit) -> Bytes {
        let mut out = Vec::new();
        self.encode(conn, emit, &mut out);
        Bytes::from(out)
    }

    /// The keep-alive chunk.
    fn ping(&self) -> Bytes;
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
}

impl EventStream {
    pub fn new(
        conn: Connection,
        encoder: Box<dyn Encoder>,
        first: Bytes,
        ping_every: Duration,
        metrics: Arc<Metrics>,
        transport: Transport,
    ) -> Self {
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let open = metrics.connection(transport);
        EventStream {
            conn: Some(conn),
            encoder,
            first: Some(first),
            ping,
            metrics,
            transport,
            _open: open,
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let mut events: Vec<OutboxEvent> = Vec::new();
        match conn.outbox().clone().poll_drain(cx, &mut events) {
            Poll::Ready(Drained::Overflowed) => {
                self.metrics.dropped_slow(self.transport);
                tracing::info!(
                    transport = self.transport.label(),
                    "subscriber fell behind; ending stream so it resumes"
                );
                self.finish();
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
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                // Only duplicates: poll again so the waker is registered.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
        if self.ping.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(self.encoder.ping()))));
        }
        Poll::Pending
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            let cleanup = conn.into_cleanup();
            if !cleanup.is_empty() {
                // Unsubscribing is async (remote brokers); a body ends in Drop.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(cleanup.run());
                }
            }
        }
    }
}

/// Runs events through the session and encodes what must be sent; `None`
/// when everything was a duplicate.
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

impl Drop for EventStream {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        EventStream::poll_frame(self.get_mut(), cx)
    }
}
