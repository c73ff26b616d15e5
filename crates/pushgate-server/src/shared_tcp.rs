//! A TCP socket shared between its connection's task and fan-out's direct
//! writes ([`pushgate_core::DirectSink`]). tokio's `TcpStream` reads and
//! writes through `&self` (`try_read`, `try_write` after readiness), so one
//! `Arc` serves both; the outbox's parking protocol guarantees they never
//! write at the same time.
//!
//! The socket and what fan-out needs to frame a message for it live in one
//! allocation: at 10,000 subscribers each pointer fan-out follows per
//! subscriber is a cache miss.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pushgate_core::publication::Encoding;
use pushgate_core::websocket::Deflate;
use pushgate_core::{DirectSink, Publication, Sent};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::accept::Slot;
use crate::metrics::{Metrics, Transport};

/// Which of a publication's shared encodings fan-out writes to a socket.
#[derive(Clone, Copy)]
pub enum DirectWire {
    /// A WebSocket frame, compressed for this window when deflate was agreed.
    Ws(Option<Deflate>),
    /// An HTTP chunk of a stream the front serves, already framed.
    Chunk(&'static Encoding, Transport),
}

pub struct Shared {
    stream: TcpStream,
    /// `None`: the connection's task alone writes.
    wire: Option<DirectWire>,
    metrics: Arc<Metrics>,
    /// The connection's place under the limits, given back when it closes.
    _slot: Slot,
}

#[derive(Clone)]
pub struct SharedTcp(Arc<Shared>);

impl SharedTcp {
    pub fn new(
        stream: TcpStream,
        wire: Option<DirectWire>,
        metrics: &Arc<Metrics>,
        slot: Slot,
    ) -> Self {
        SharedTcp(Arc::new(Shared {
            stream,
            wire,
            metrics: metrics.clone(),
            _slot: slot,
        }))
    }

    /// The sink fan-out writes through while the connection is parked, when
    /// it was given a wire format.
    pub fn direct_sink(&self) -> Option<Arc<dyn DirectSink>> {
        self.0
            .wire
            .is_some()
            .then(|| self.0.clone() as Arc<dyn DirectSink>)
    }
}

/// A direct write from fan-out: the publication's shared frame or chunk in
/// one non-blocking write, counted as a delivery when any of it went out. A
/// full or failed socket writes nothing: the connection's task then queues
/// the message, or finds the error.
impl DirectSink for Shared {
    fn try_send(&self, p: &Publication) -> Sent {
        let (bytes, transport) = match &self.wire {
            Some(DirectWire::Ws(deflate)) => (p.ws_frame_for(deflate.as_ref()), Transport::Ws),
            Some(DirectWire::Chunk(chunk, transport)) => (p.encoded(chunk), *transport),
            None => return Sent::Nothing,
        };
        // socket2's send(2) rather than tokio's `try_write`, which first
        // reads the socket's readiness from tokio's driver: one more cache
        // miss per subscriber. Harmless to tokio: the connection's own
        // writes find a full socket themselves and then wait for readiness.
        let written = match socket2::SockRef::from(&self.stream).send(bytes) {
            Ok(n) if n > 0 => n,
            _ => return Sent::Nothing,
        };
        self.metrics.delivered_direct(transport);
        self.metrics
            .delivery_latency(transport, p.made.elapsed(), 1);
        if written == bytes.len() {
            Sent::All
        } else {
            Sent::Part(bytes.slice(written..))
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.stream.poll_read_ready(cx))?;
            // Initialised only once there is something to read.
            match self.0.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side (a FIN follows what was written), as a closing
    /// connection does before it lingers (`crate::linger`); the socket
    /// itself closes when the last holder drops it. Fan-out's direct writes
    /// cannot follow: they happen only while the connection is parked, and
    /// a connection unparks before it begins to close.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.0.stream).shutdown(std::net::Shutdown::Write))
    }
}
