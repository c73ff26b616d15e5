//! One connection's delivery as a state machine, in the manner of
//! quinn-proto: events, replies and the peer's signs of life go in; bytes to
//! write and a deadline come out. No socket and no runtime: the server's
//! one delivery loop moves bytes and time in and out of it for WebSocket
//! and for the event streams alike, and the tests here drive it with
//! instants they make up.
//!
//! What it decides: what each event becomes on the wire (through the
//! transport's [`Framing`]), when a heartbeat is due, when the peer counts
//! as gone (silent for [`Timing::idle`]) or stuck (a write blocked for
//! [`Timing::stall`]), and how the connection ends. What it
//! leaves to the loop: reading, writing, and running commands against the
//! hub (which may wait).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::connection::Connection;
use crate::hub::outbox::{DirectSink, Drained, OutboxEvent};
use crate::protocol::{CommandId, Reply};
use crate::session::{Emit, Session};

/// How a transport puts things on its wire.
pub trait Framing: Send {
    /// A delivered message or a reset. `session` already counts it (an SSE
    /// id is the cursor after the event).
    fn emit(&mut self, session: &Session, emit: &Emit) -> Bytes;

    /// A command's reply (`subscribed`, `published`, `error`, …), as JSON.
    fn reply(&mut self, json: &str) -> Bytes;

    /// The keep-alive that shows the client, and every proxy on the way,
    /// that the connection lives.
    fn heartbeat(&mut self) -> Bytes;

    /// Sent once the subscriptions a connection opened with, and their
    /// catch-up, are written (an SSE stream's id-only block, so that a
    /// reconnect before the first message still resumes exactly).
    fn caught_up(&mut self, _session: &Session) -> Option<Bytes> {
        None
    }

    /// The last bytes when the delivery ends for `end`, after everything
    /// queued: an event stream says why it ends (`{"type":"end",…}`), so
    /// that its client knows whether to reopen at once. `None`: nothing.
    fn farewell(&mut self, _end: End) -> Option<Bytes> {
        None
    }
}

impl<T: Framing + ?Sized> Framing for Box<T> {
    fn emit(&mut self, session: &Session, emit: &Emit) -> Bytes {
        (**self).emit(session, emit)
    }

    fn reply(&mut self, json: &str) -> Bytes {
        (**self).reply(json)
    }

    fn heartbeat(&mut self) -> Bytes {
        (**self).heartbeat()
    }

    fn caught_up(&mut self, session: &Session) -> Option<Bytes> {
        (**self).caught_up(session)
    }

    fn farewell(&mut self, end: End) -> Option<Bytes> {
        (**self).farewell(end)
    }
}

/// When a connection sends heartbeats, and when it gives up on its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A heartbeat this long after the last one (or, with
    /// `heartbeat_after_silence`, after anything was sent).
    pub heartbeat: Duration,
    /// Whatever is sent postpones the heartbeat (event streams: a message
    /// shows life as well as a ping). A WebSocket Ping asks for a Pong, the
    /// peer's sign of life, so it goes out on time regardless.
    pub heartbeat_after_silence: bool,
    /// A peer that sends nothing at all for this long is done with (`None`:
    /// never). An event stream's peer never speaks after its request, so
    /// there it is the stream's lifetime (the hidden iframe's document ends
    /// before a proxy or the browser gives up on it).
    pub idle: Option<Duration>,
    /// A write blocked this long without any progress: the peer stopped
    /// reading.
    pub stall: Duration,
}

/// Why a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The connection fell behind its outbox; its cursor still stands
    /// before the first message it missed, so it resumes without loss.
    FellBehind,
    /// The server is shutting down; everything queued was delivered first.
    ShutDown,
    /// Nothing was received for [`Timing::idle`]: on an event stream, it
    /// reached its lifetime.
    Idle,
    /// Nothing could be written for [`Timing::stall`].
    Stalled,
    /// The connection's token expired and no fresh one came in time.
    Expired,
    /// The application disconnected the connection's user
    /// (`/api/disconnect`): it must not reconnect with the same token.
    Disconnected,
}

/// A connection's delivery state.
pub struct Delivery<F> {
    conn: Connection,
    framing: F,
    /// Shared by every connection of a transport: a pointer, not 56 bytes
    /// per idle connection.
    timing: Arc<Timing>,
    /// What to write, oldest first.
    out: VecDeque<Bytes>,
    next_heartbeat: Instant,
    idle_deadline: Option<Instant>,
    /// When the connection's token expires.
    expiry: Option<Instant>,
    /// Since when a write has been blocked without progress.
    waiting_since: Option<Instant>,
    /// Messages delivered since the last [`Delivery::take_delivered`].
    delivered: u64,
    end: Option<End>,
}

impl<F: Framing> Delivery<F> {
    /// Starts delivering for `conn` at `now`.
    pub fn new(conn: Connection, framing: F, timing: Arc<Timing>, now: Instant) -> Self {
        Delivery {
            conn,
            framing,
            next_heartbeat: now + timing.heartbeat,
            idle_deadline: timing.idle.map(|d| now + d),
            expiry: None,
            timing,
            out: VecDeque::new(),
            waiting_since: None,
            delivered: 0,
            end: None,
        }
    }

    /// The connection, for commands and for the outbox.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for running a command against the hub.
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The transport's framing.
    pub fn framing(&self) -> &F {
        &self.framing
    }

    /// The opening subscriptions and their catch-up are queued: adds what
    /// the framing sends then ([`Framing::caught_up`]).
    pub fn caught_up(&mut self, now: Instant) {
        if let Some(bytes) = self.framing.caught_up(self.conn.session()) {
            self.send(bytes, now);
        }
    }

    /// Runs events (a catch-up, or what the outbox held) through the
    /// session and frames what must be sent: a lone message is usually the
    /// bytes every subscriber shares.
    /// `now` is asked only by a framing whose heartbeat waits for silence:
    /// a WebSocket in a burst reads no clock per turn.
    pub fn deliver(
        &mut self,
        events: impl IntoIterator<Item = OutboxEvent>,
        now: impl FnOnce() -> Instant,
    ) {
        let before = self.out.len();
        for event in events {
            let mut emits: SmallVec<[Emit; 2]> = SmallVec::new();
            self.conn.accept_each([event], |e| emits.push(e));
            for emit in &emits {
                if matches!(emit, Emit::Message(_)) {
                    self.delivered += 1;
                }
                let bytes = self.framing.emit(self.conn.session(), emit);
                self.out.push_back(bytes);
            }
        }
        if self.out.len() > before {
            self.queued(now);
        }
    }

    /// What the outbox said when it had no events: the connection fell
    /// behind, or the server is shutting down.
    pub fn drained(&mut self, drained: Drained) {
        match drained {
            Drained::Events => {}
            Drained::Overflowed => self.finish(End::FellBehind),
            Drained::ShutDown => self.finish(End::ShutDown),
            Drained::Disconnected => self.finish(End::Disconnected),
        }
    }

    /// A command's reply, then its events (a subscribe's catch-up).
    /// `subscribed` and `pong` announce the heartbeat interval.
    pub fn reply(
        &mut self,
        reply: &Reply,
        id: Option<&CommandId>,
        events: Vec<OutboxEvent>,
        now: Instant,
    ) {
        let json = reply.encode_announcing(id, self.timing.heartbeat);
        let bytes = self.framing.reply(&json);
        self.send(bytes, now);
        self.deliver(events, || now);
    }

    /// The connection's token expires at `at` (`None`: never): the
    /// delivery then ends with [`End::Expired`], unless a fresh token moves
    /// the deadline first.
    pub fn expire_at(&mut self, at: Option<Instant>) {
        self.expiry = at;
    }

    /// Bytes the transport makes itself (a WebSocket Pong, an echo).
    pub fn send(&mut self, bytes: Bytes, now: Instant) {
        self.out.push_back(bytes);
        self.queued(|| now);
    }

    /// The peer sent something: it is alive.
    pub fn received(&mut self, now: Instant) {
        if let Some(idle) = self.timing.idle {
            self.idle_deadline = Some(now + idle);
        }
    }

    fn queued(&mut self, now: impl FnOnce() -> Instant) {
        if self.timing.heartbeat_after_silence {
            self.next_heartbeat = now() + self.timing.heartbeat;
        }
    }

    /// When [`Delivery::handle_timeout`] must run next; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.end.is_some() {
            return None;
        }
        let stall = self.waiting_since.map(|t| t + self.timing.stall);
        [
            Some(self.next_heartbeat),
            self.idle_deadline,
            stall,
            self.expiry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on the deadlines that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.end.is_some() {
            return;
        }
        if self
            .waiting_since
            .is_some_and(|t| now >= t + self.timing.stall)
        {
            return self.finish(End::Stalled);
        }
        if self.expiry.is_some_and(|t| now >= t) {
            return self.finish(End::Expired);
        }
        if self.idle_deadline.is_some_and(|t| now >= t) {
            return self.finish(End::Idle);
        }
        if now >= self.next_heartbeat {
            let ping = self.framing.heartbeat();
            self.out.push_back(ping);
            self.next_heartbeat = now + self.timing.heartbeat;
        }
    }

    /// What waits to be written, oldest first. The loop writes from the
    /// front, removes or advances what went out, then calls
    /// [`Delivery::written`].
    pub fn pending(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.out
    }

    /// Whether anything waits to be written.
    pub fn has_pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// The socket would not take what waits: the stall clock runs from
    /// `now`, unless it already does (asked only then: a blocked write is
    /// the slow path).
    pub fn blocked(&mut self, now: impl FnOnce() -> Instant) {
        self.waiting_since.get_or_insert_with(now);
    }

    /// Some bytes went out: the stall clock stops until a write blocks again.
    pub fn written(&mut self) {
        self.waiting_since = None;
        if self.out.is_empty() && self.out.capacity() > 64 {
            // A burst grew the queue; give the memory back while idle.
            self.out = VecDeque::new();
        }
    }

    /// Ends the delivery (once; the first reason stands), queueing the
    /// framing's farewell after what waits.
    pub fn finish(&mut self, end: End) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(end);
        if let Some(bytes) = self.framing.farewell(end) {
            self.out.push_back(bytes);
        }
    }

    /// Why the delivery ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Messages delivered since the last call (for metrics).
    pub fn take_delivered(&mut self) -> u64 {
        std::mem::take(&mut self.delivered)
    }

    /// Lets fan-out write the next messages through `sink` while nothing
    /// waits to be written (see [`Connection::park`]).
    pub fn park(&mut self, sink: &Arc<dyn DirectSink>) {
        if !self.has_pending() && self.end.is_none() {
            self.conn.park(sink);
        }
    }

    /// Ends parking. True when fan-out left the unwritten end of a frame:
    /// it is now the first thing pending, already framed for the wire (the
    /// loop must not frame it again).
    pub fn unpark(&mut self) -> bool {
        let Some(rest) = self.conn.unpark() else {
            return false;
        };
        // Parked only with nothing pending, so it is first.
        self.out.push_front(rest);
        true
    }
}

#[cfg(test)]
mod tests;
