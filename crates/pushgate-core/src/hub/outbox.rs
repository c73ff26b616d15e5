//! A connection's bounded send queue, filled by fan-out, drained by a transport.
//!
//! It holds no buffer while empty (an idle connection costs one small
//! allocation here) and never grows past its capacity: a subscriber that falls
//! behind is marked overflowed, further pushes are dropped, and its transport
//! closes it with a "resume with your cursor" signal. Nothing is lost silently:
//! the client's cursor still points before the first dropped message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::channel::ChannelName;
use crate::cursor::{Position, Positions};
use crate::publication::Publication;
use crate::sync::{self, Mutex, MutexGuard};

/// Writes a message straight to a connection's socket from fan-out, while
/// the connection's task waits with nothing to write (it is *parked*). An
/// isolated message then costs one `write(2)` on the publisher's thread, as
/// in the bare-socket floor, instead of a task wake-up, a scheduler round
/// and a write.
pub trait DirectSink: Send + Sync {
    /// Writes the message's frame without blocking.
    fn try_send(&self, p: &Publication) -> Sent;
}

/// What [`DirectSink::try_send`] managed.
#[derive(Debug)]
pub enum Sent {
    /// The whole frame.
    All,
    /// Nothing (the socket is full or failed): queue the message instead.
    Nothing,
    /// Part of it: these bytes must go out before anything else.
    Part(Bytes),
}

/// What fan-out hands a connection.
#[derive(Debug, Clone)]
pub enum OutboxEvent {
    /// A publication of a subscribed channel; may repeat one the catch-up
    /// delivered ([`crate::Session`] drops those).
    Message(Arc<Publication>),
    /// The backend lost messages of this channel (e.g. it restarted): the
    /// connection must tell its client to reload state.
    Reset {
        /// The channel that lost messages.
        channel: ChannelName,
        /// Where the channel stands now.
        position: Position,
    },
    /// A join or leave of a channel with join/leave events, or a signal
    /// relayed in a room. Live only: always queued (never written by
    /// [`Outbox::offer`]), no offset, and the session's positions ignore it.
    Live(Arc<super::LiveEvent>),
}

/// What became of an event handed to an [`Outbox`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PushOutcome {
    /// Queued; the connection's task is woken if it waits.
    Queued,
    /// Written straight to the parked connection's socket.
    Written,
    /// The queue was full: this connection is now overflowed and must close.
    Overflowed,
    /// Already overflowed or closed; the event was dropped.
    Dropped,
}

/// Why a drain ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Drained {
    /// Events were moved into the caller's buffer.
    Events,
    /// The subscriber fell behind its queue capacity.
    Overflowed,
    /// The server is shutting down and everything queued was delivered:
    /// end the connection with a "reconnect" signal.
    ShutDown,
    /// The application disconnected the connection's user
    /// ([`crate::Hub::disconnect`]): end it at once, with a "do not
    /// reconnect with this token" signal.
    Disconnected,
}

/// A connection's bounded queue between fan-out and its transport, and its
/// positions while parked (see the module docs and [`Outbox::park`]).
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<OutboxEvent>,
    waker: Option<Waker>,
    overflowed: bool,
    shut_down: bool,
    disconnected: bool,
    /// Set while parked. Kept inline with `positions` rather than boxed: at
    /// 10,000 subscribers every pointer fan-out follows is a cache miss.
    sink: Option<Arc<dyn DirectSink>>,
    /// The connection's positions while it is parked: lent by its session,
    /// moved here and back, never copied, so fan-out's direct writes and the
    /// session never disagree on where the connection stands.
    positions: Positions,
    /// The unwritten end of a frame a direct write began.
    leftover: Option<Bytes>,
    /// Messages fan-out wrote itself, for the connection's closing log line.
    direct_writes: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("overflowed", &self.overflowed)
            .field("shut_down", &self.shut_down)
            .field("disconnected", &self.disconnected)
            .field("parked", &self.sink.is_some())
            .field("positions", &self.positions)
            .finish()
    }
}

impl State {
    /// Writes `p` through the parked connection's sink when it is the next
    /// message of one of its channels and nothing is queued before it.
    fn try_direct(&mut self, p: &Publication) -> bool {
        if !self.queue.is_empty() || self.shut_down || self.disconnected || self.leftover.is_some()
        {
            return false;
        }
        let Some(sink) = &self.sink else {
            return false;
        };
        // Channel names and epochs usually share the publication's `Arc`
        // (the broker hands out its own), so these compare pointers.
        let Some(pos) = self.positions.iter_mut().find(|s| s.channel == p.channel) else {
            return false;
        };
        if pos.offset + 1 != p.offset || pos.epoch != p.epoch {
            // A duplicate, a gap or a new epoch: the session decides.
            return false;
        }
        match sink.try_send(p) {
            Sent::All => {}
            Sent::Nothing => return false,
            Sent::Part(rest) => self.leftover = Some(rest),
        }
        pos.offset = p.offset;
        self.direct_writes += 1;
        true
    }
}

impl Outbox {
    /// An empty outbox that overflows past `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Outbox {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Messages fan-out has written straight to the connection's socket.
    pub fn direct_writes(&self) -> u64 {
        self.lock().direct_writes
    }

    /// Events it holds before the connection overflows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Queues `event` and wakes the connection: for what must not be written
    /// from fan-out (resets, messages in a burst).
    pub fn push(&self, event: OutboxEvent) -> PushOutcome {
        let st = self.lock();
        self.enqueue(st, event)
    }

    /// Writes the message straight to the socket when the connection is
    /// parked and it is the next message (see [`DirectSink`]); queues it
    /// otherwise. Takes a reference: a direct write needs no clone.
    pub fn offer(&self, p: &Arc<Publication>) -> PushOutcome {
        let mut st = self.lock();
        if st.overflowed {
            return PushOutcome::Dropped;
        }
        if !st.try_direct(p) {
            return self.enqueue(st, OutboxEvent::Message(p.clone()));
        }
        if st.leftover.is_some() {
            // The connection must finish the frame before anything else.
            let waker = st.waker.take();
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
        }
        PushOutcome::Written
    }

    fn enqueue(&self, mut st: MutexGuard<'_, State>, event: OutboxEvent) -> PushOutcome {
        if st.overflowed || st.disconnected {
            return PushOutcome::Dropped;
        }
        let outcome = if st.queue.len() >= self.capacity {
            st.overflowed = true;
            st.queue = VecDeque::new();
            PushOutcome::Overflowed
        } else {
            st.queue.push_back(event);
            PushOutcome::Queued
        };
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        outcome
    }

    /// Moves every queued event into `out`, or registers the waker and returns
    /// `Pending` when there is none.
    pub fn poll_drain(&self, cx: &mut Context<'_>, out: &mut Vec<OutboxEvent>) -> Poll<Drained> {
        let mut st = self.lock();
        if st.overflowed {
            return Poll::Ready(Drained::Overflowed);
        }
        if st.disconnected {
            return Poll::Ready(Drained::Disconnected);
        }
        if st.queue.is_empty() {
            if st.shut_down {
                return Poll::Ready(Drained::ShutDown);
            }
            if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        out.extend(st.queue.drain(..));
        if st.queue.capacity() > 64 {
            // A burst grew the buffer; give the memory back while idle.
            st.queue = VecDeque::new();
        }
        Poll::Ready(Drained::Events)
    }

    /// Ready once the subscriber has overflowed; otherwise registers the
    /// waker (every push wakes it), without draining. Lets a transport that
    /// is blocked writing to a full socket still notice at once that it fell
    /// behind, instead of only when the write completes or times out.
    pub fn poll_overflowed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.overflowed {
            return Poll::Ready(());
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Lets fan-out write this connection's next messages itself, through
    /// `sink`, while the connection waits with nothing to write. Takes the
    /// connection's `positions` (leaving them empty) until
    /// [`Outbox::unpark`] gives them back, moved along by what fan-out
    /// wrote. Refused (returns `false`, `positions` untouched) when
    /// something is queued: the connection has work to do.
    pub fn park(&self, sink: &Arc<dyn DirectSink>, positions: &mut Positions) -> bool {
        let mut st = self.lock();
        if st.sink.is_some()
            || !st.queue.is_empty()
            || st.overflowed
            || st.shut_down
            || st.disconnected
            || st.leftover.is_some()
        {
            return false;
        }
        st.sink = Some(sink.clone());
        std::mem::swap(&mut st.positions, positions);
        true
    }

    /// Ends parking: moves the positions back into `positions` and returns
    /// the unwritten end of a frame a direct write began, to write first.
    /// Does nothing when not parked.
    pub fn unpark(&self, positions: &mut Positions) -> Option<Bytes> {
        let mut st = self.lock();
        st.sink.take()?;
        std::mem::swap(&mut st.positions, positions);
        st.positions.clear();
        st.leftover.take()
    }

    /// Tells the connection to end once what is queued is delivered
    /// (graceful shutdown); wakes it.
    pub fn shut_down(&self) {
        let waker = {
            let mut st = self.lock();
            st.shut_down = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Tells the connection to end now: its user was disconnected by the
    /// application. What is queued is dropped (the client's cursor stands
    /// before it); wakes the connection.
    pub fn disconnect(&self) {
        let waker = {
            let mut st = self.lock();
            st.disconnected = true;
            st.queue = VecDeque::new();
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`Outbox::disconnect`] was called.
    pub fn is_disconnected(&self) -> bool {
        self.lock().disconnected
    }

    /// Takes what is queued without waiting.
    pub fn try_drain(&self, out: &mut Vec<OutboxEvent>) -> Option<Drained> {
        let mut st = self.lock();
        if st.overflowed {
            return Some(Drained::Overflowed);
        }
        if st.disconnected {
            return Some(Drained::Disconnected);
        }
        if st.queue.is_empty() {
            return None;
        }
        out.extend(st.queue.drain(..));
        Some(Drained::Events)
    }

    /// Current queue length (for metrics and tests).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the connection fell behind and must close (see [`Drained::Overflowed`]).
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Data, Epoch};
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn msg(o: u64) -> OutboxEvent {
        OutboxEvent::Message(Arc::new(Publication::new(
            ChannelName::new("c").unwrap(),
            Epoch::new("e").unwrap(),
            o,
            None,
            Data::json("0").unwrap(),
            0,
        )))
    }

    #[test]
    fn wakes_and_drains_in_order() {
        let ob = Outbox::new(4);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(ob.poll_drain(&mut cx, &mut out).is_pending());
        assert_eq!(ob.push(msg(1)), PushOutcome::Queued);
        assert_eq!(ob.push(msg(2)), PushOutcome::Queued);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            ob.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::Events)
        );
        let offs: Vec<u64> = out
            .iter()
            .map(|e| match e {
                OutboxEvent::Message(p) => p.offset,
                _ => 0,
            })
            .collect();
        assert_eq!(offs, vec![1, 2]);
    }

    #[test]
    fn shut_down_ends_after_the_queue_is_delivered() {
        let ob = Outbox::new(4);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert!(ob.poll_drain(&mut cx, &mut out).is_pending());
        ob.push(msg(1));
        ob.shut_down();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            ob.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::Events)
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            ob.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::ShutDown)
        );
    }

    #[test]
    fn overflow_is_sticky_and_frees_the_queue() {
        let ob = Outbox::new(2);
        assert_eq!(ob.push(msg(1)), PushOutcome::Queued);
        assert_eq!(ob.push(msg(2)), PushOutcome::Queued);
        assert_eq!(ob.push(msg(3)), PushOutcome::Overflowed);
        assert_eq!(ob.push(msg(4)), PushOutcome::Dropped);
        assert_eq!(ob.len(), 0);
        let mut out = Vec::new();
        assert_eq!(ob.try_drain(&mut out), Some(Drained::Overflowed));
        assert!(out.is_empty());
    }

    #[test]
    fn poll_overflowed_wakes_on_push_and_never_drains() {
        let ob = Outbox::new(1);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(ob.poll_overflowed(&mut cx).is_pending());
        assert_eq!(ob.push(msg(1)), PushOutcome::Queued);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(ob.poll_overflowed(&mut cx).is_pending());
        assert_eq!(ob.len(), 1, "polling for overflow leaves events queued");
        assert_eq!(ob.push(msg(2)), PushOutcome::Overflowed);
        assert!(ob.poll_overflowed(&mut cx).is_ready());
    }
}

/// The parking protocol against a model: whatever mix of direct writes
/// (whole, partial, refused), queued pushes, duplicates and connection
/// wake-ups, the client receives every offset exactly once, in order, and
/// bytes of a partial frame come before anything else.
#[cfg(test)]
mod direct_tests {
    use super::*;
    use crate::log::Catchup;
    use crate::session::{Emit, Session};
    use crate::{Data, Epoch};
    use proptest::prelude::*;
    use std::sync::Mutex as StdMutex;

    /// What the client got, in wire order: (offset, whole?) — a partial
    /// write puts the offset on the wire and its tail must come next.
    #[derive(Default)]
    struct Wire {
        got: Vec<(u64, bool)>,
        script: Vec<u8>,
        /// Messages the sink took, whole or in part.
        took: u64,
    }

    struct Sink(StdMutex<Wire>);

    impl DirectSink for Sink {
        fn try_send(&self, p: &Publication) -> Sent {
            let mut w = self.0.lock().unwrap();
            let pick = if w.script.is_empty() {
                0
            } else {
                w.script.remove(0)
            };
            match pick % 3 {
                0 => {
                    w.got.push((p.offset, true));
                    w.took += 1;
                    Sent::All
                }
                1 => Sent::Nothing,
                _ => {
                    w.got.push((p.offset, false));
                    w.took += 1;
                    Sent::Part(Bytes::from(p.offset.to_string()))
                }
            }
        }
    }

    fn publication(offset: u64) -> Arc<Publication> {
        Arc::new(Publication::new(
            ChannelName::new("c").unwrap(),
            Epoch::new("e").unwrap(),
            offset,
            None,
            Data::json("0").unwrap(),
            0,
        ))
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Publish the next message, straight to the socket if allowed.
        Publish { direct: bool },
        /// Fan-out delivers an old message again (a catch-up overlap).
        Duplicate,
        /// The connection's task runs.
        Wake,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<bool>().prop_map(|direct| Op::Publish { direct }),
            1 => Just(Op::Duplicate),
            2 => Just(Op::Wake),
        ]
    }

    proptest! {
        #[test]
        fn exactly_once_in_order(ops in proptest::collection::vec(op(), 1..60),
                                 script in proptest::collection::vec(any::<u8>(), 0..60)) {
            let outbox = Outbox::new(1000);
            let wire = Arc::new(Sink(StdMutex::new(Wire { got: Vec::new(), script, took: 0 })));
            let sink: Arc<dyn DirectSink> = wire.clone();
            let mut session = Session::new(8);
            let top = Position::new(Epoch::new("e").unwrap(), 0);
            session.subscribed(Catchup {
                channel: ChannelName::new("c").unwrap(),
                position: top,
                messages: vec![],
                reset: false,
                truncated: false,
            });
            let mut next = 0u64;
            // The task: finish a partial frame, deliver what is queued, park.
            let run_task = |session: &mut Session, outbox: &Outbox| {
                if let Some(rest) = session.unpark(outbox) {
                    let off: u64 = std::str::from_utf8(&rest).unwrap().parse().unwrap();
                    let mut w = wire.0.lock().unwrap();
                    // The tail of the partial frame must be the very next bytes.
                    assert_eq!(w.got.last(), Some(&(off, false)));
                    w.got.pop();
                    w.got.push((off, true));
                }
                let mut events = Vec::new();
                outbox.try_drain(&mut events);
                for e in events {
                    session.accept_with(e, |emit| {
                        if let Emit::Message(p) = emit {
                            wire.0.lock().unwrap().got.push((p.offset, true));
                        }
                    });
                }
                session.park(outbox, &sink);
            };
            for op in ops {
                match op {
                    Op::Publish { direct } => {
                        next += 1;
                        let p = publication(next);
                        if direct { outbox.offer(&p); } else { outbox.push(OutboxEvent::Message(p)); }
                    }
                    Op::Duplicate if next > 0 => {
                        outbox.offer(&publication(next));
                    }
                    Op::Duplicate => {}
                    Op::Wake => run_task(&mut session, &outbox),
                }
            }
            run_task(&mut session, &outbox);
            let got = wire.0.lock().unwrap().got.clone();
            let want: Vec<(u64, bool)> = (1..=next).map(|o| (o, true)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(outbox.direct_writes(), wire.0.lock().unwrap().took);
        }
    }

    #[test]
    fn parking_is_refused_with_work_queued() {
        let outbox = Outbox::new(10);
        let sink: Arc<dyn DirectSink> = Arc::new(Sink(StdMutex::new(Wire::default())));
        outbox.push(OutboxEvent::Message(publication(1)));
        let mut positions = Positions::new();
        assert!(!outbox.park(&sink, &mut positions));
        assert!(outbox.unpark(&mut positions).is_none());
    }
}
