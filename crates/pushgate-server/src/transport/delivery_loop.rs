//! The one delivery loop: moves bytes and time between a socket and a
//! connection's [`Delivery`] (the state machine in the core), for WebSocket
//! and for the event streams the HTTP/1.1 front serves.
//!
//! Each turn it finishes a frame fan-out began, writes what waits (and,
//! while a write is blocked, notices a subscriber that fell behind), or
//! else takes what the outbox holds and what the peer sent, and wakes at
//! the delivery's next deadline. With nothing to write it parks, so that
//! fan-out writes isolated messages straight to the socket. What differs
//! between transports is only the [`Peer`] (what the client may send) and
//! the [`Wire`] (chunked framing or not).

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use pushgate_core::delivery::{Delivery, End, Framing};
use pushgate_core::hub::Drained;
use pushgate_core::{DirectSink, OutboxEvent};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::access_log::Tracked;
use crate::chunked;
use crate::state::AppState;

/// What a transport does with what its client sends.
pub trait Peer<F: Framing>: Send {
    /// How the client ended the connection (a WebSocket close, a protocol
    /// violation).
    type End: Send;

    /// Bytes that arrived, taken at once (no read buffer is kept); what
    /// they hold waits for [`Peer::act`]. True when the client said
    /// something (a whole message, not just bytes of one): it is alive.
    fn feed(&mut self, bytes: &[u8]) -> bool;

    /// Acts on what was fed: answers, commands against the hub. `Err`: the
    /// connection must end, after what came before is answered.
    /// `from` is the client's address, for the warnings of refusals.
    fn act(
        &mut self,
        state: &AppState,
        delivery: &mut Delivery<F>,
        from: SocketAddr,
    ) -> impl Future<Output = Result<(), Self::End>> + Send;
}

/// A client that never speaks: what it sends is read and dropped (nothing
/// a client sends on an event stream matters), and its end of the stream
/// ending is the only sign the loop takes from it.
pub struct Silent;

impl<F: Framing> Peer<F> for Silent {
    type End = std::convert::Infallible;

    fn feed(&mut self, _: &[u8]) -> bool {
        false
    }

    async fn act(
        &mut self,
        _: &AppState,
        _: &mut Delivery<F>,
        _: SocketAddr,
    ) -> Result<(), Self::End> {
        Ok(())
    }
}

/// How the bytes of a delivery go on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// As they are (WebSocket frames).
    Raw,
    /// As HTTP/1.1 chunks (an event stream's response body).
    Chunked,
}

/// How a loop ended.
pub enum Ended<E> {
    /// The delivery ended itself (fell behind, shut down, idle, stalled).
    Delivery(End),
    /// The client ended it.
    Peer(E),
    /// The socket closed or failed.
    Gone,
}

/// Frames per vectored write.
const MAX_SLICES: usize = 64;
/// Bytes read per call; a connection holds no read buffer between reads.
const READ_CHUNK: usize = 8 * 1024;

enum Wake {
    Written(std::io::Result<()>),
    Drained(Drained),
    /// Bytes were read (`0`: the client closed); whether it said something.
    Read(std::io::Result<(usize, bool)>),
    Timeout,
}

/// The socket and how it frames what goes on it.
pub struct Socket<'a, S> {
    pub io: &'a mut S,
    pub wire: Wire,
    /// Leading entries of the delivery's queue already framed for the wire.
    framed: usize,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Socket<'a, S> {
    pub fn new(io: &'a mut S, wire: Wire) -> Self {
        Socket {
            io,
            wire,
            framed: 0,
        }
    }

    /// Writes what waits, as much per system call as the kernel takes;
    /// ready when everything went out.
    fn poll_write<F: Framing>(
        &mut self,
        cx: &mut Context<'_>,
        delivery: &mut Delivery<F>,
    ) -> Poll<std::io::Result<()>> {
        while !delivery.pending().is_empty() {
            self.frame(delivery);
            let out = delivery.pending();
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.framed.min(MAX_SLICES);
            for (slice, bytes) in slices.iter_mut().zip(out.iter().take(n)) {
                *slice = IoSlice::new(bytes);
            }
            let mut written =
                ready!(Pin::new(&mut *self.io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let Some(front) = out.front_mut() else { break };
                if written >= front.len() {
                    written -= front.len();
                    out.pop_front();
                    self.framed -= 1;
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
            delivery.written();
        }
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    /// Frames the front of the queue for the wire when nothing framed waits.
    fn frame<F: Framing>(&mut self, delivery: &mut Delivery<F>) {
        if self.framed > 0 {
            return;
        }
        let out = delivery.pending();
        match self.wire {
            Wire::Raw => self.framed = out.len(),
            Wire::Chunked => {
                // One chunk around as many entries as one write takes.
                let n = out.len().min(MAX_SLICES - 2);
                let len: usize = out.iter().take(n).map(Bytes::len).sum();
                let mut size = [0u8; 20];
                let size_len = chunked::size_line(len, &mut size);
                out.insert(n, Bytes::from_static(b"\r\n"));
                out.push_front(Bytes::copy_from_slice(&size[..size_len]));
                self.framed = n + 2;
            }
        }
    }

    /// Reads what arrived into a buffer on the stack and feeds it to `peer`.
    fn poll_read<F: Framing, P: Peer<F>>(
        &mut self,
        cx: &mut Context<'_>,
        peer: &mut P,
    ) -> Poll<std::io::Result<(usize, bool)>> {
        // On the stack for the duration of one poll only, and never zeroed:
        // most polls find nothing to read.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut buf);
        ready!(Pin::new(&mut *self.io).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        let spoke = !got.is_empty() && peer.feed(got);
        Poll::Ready(Ok((got.len(), spoke)))
    }

    /// Writes what waits, within `limit` (a closing connection's last words).
    pub async fn flush<F: Framing>(&mut self, delivery: &mut Delivery<F>, limit: Duration) -> bool {
        let write = poll_fn(|cx| self.poll_write(cx, delivery));
        matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
    }
}

/// Runs the delivery until it, the client or the socket ends it.
pub async fn run<S, F, P>(
    state: &AppState,
    delivery: &mut Delivery<F>,
    socket: &mut Socket<'_, S>,
    peer: &mut P,
    direct: Option<&Arc<dyn DirectSink>>,
    tracked: &mut Tracked,
) -> Ended<P::End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Framing,
    P: Peer<F>,
{
    let ended = deliver(state, delivery, socket, peer, direct, tracked).await;
    // Parked no more: fan-out's direct writes are all counted.
    tracked.direct_writes(delivery.connection().outbox());
    ended
}

async fn deliver<S, F, P>(
    state: &AppState,
    delivery: &mut Delivery<F>,
    socket: &mut Socket<'_, S>,
    peer: &mut P,
    direct: Option<&Arc<dyn DirectSink>>,
    tracked: &mut Tracked,
) -> Ended<P::End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Framing,
    P: Peer<F>,
{
    // Kept across turns, as its capacity is: a burst drains into it at
    // every turn, and a fresh one would be an allocation per turn.
    let mut events: Vec<OutboxEvent> = Vec::new();
    // One timer for every deadline the delivery has (heartbeat, idle, stall).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        if let Some(end) = delivery.end() {
            return Ended::Delivery(end);
        }
        let wake = poll_fn(|cx| {
            if delivery.unpark() {
                // The tail of a frame fan-out began: already framed.
                socket.framed += 1;
            }
            if delivery.has_pending() {
                if let Poll::Ready(r) = socket.poll_write(cx, delivery) {
                    return Poll::Ready(Wake::Written(r));
                }
                delivery.blocked(|| Instant::now().into_std());
                // Blocked on a slow reader: its outbox keeps filling, and
                // reading waits so that answers cannot pile up here.
                let outbox = delivery.connection().outbox();
                if outbox.poll_overflowed(cx).is_ready() {
                    return Poll::Ready(Wake::Drained(Drained::Overflowed));
                }
            } else {
                let outbox = delivery.connection().outbox();
                if let Poll::Ready(d) = outbox.poll_drain(cx, &mut events) {
                    return Poll::Ready(Wake::Drained(d));
                }
                if let Poll::Ready(r) = socket.poll_read(cx, peer) {
                    return Poll::Ready(Wake::Read(r));
                }
            }
            if let Some(at) = delivery.poll_timeout().map(Instant::from_std) {
                // Handling a deadline always moves it (or ends the delivery),
                // so a timer that fired is never polled again unchanged.
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timeout);
                }
            }
            if let Some(sink) = direct {
                // Waiting with nothing to write: fan-out may write for us.
                delivery.park(sink);
            }
            Poll::Pending
        })
        .await;
        // The clock is read only where a deadline moves: at 10,000
        // subscribers in a burst, reads per turn were measurable.
        let now = || Instant::now().into_std();
        match wake {
            Wake::Written(Ok(())) => {}
            Wake::Written(Err(_)) | Wake::Read(Err(_)) | Wake::Read(Ok((0, _))) => {
                return Ended::Gone
            }
            Wake::Drained(Drained::Events) => {
                // One clock read for the latency and, on a stream, the
                // heartbeat the write postpones.
                let at = now();
                state
                    .metrics
                    .observe_latency(tracked.transport(), &events, at);
                delivery.deliver(events.drain(..), || at);
                tracked.delivered(delivery.take_delivered());
            }
            Wake::Drained(d) => delivery.drained(d),
            Wake::Read(Ok((_, spoke))) => {
                if spoke {
                    delivery.received(now());
                }
                let acted = peer.act(state, delivery, tracked.peer()).await;
                tracked.delivered(delivery.take_delivered());
                if let Err(end) = acted {
                    return Ended::Peer(end);
                }
            }
            Wake::Timeout => delivery.handle_timeout(now()),
        }
    }
}
