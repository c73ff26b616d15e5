//! A connection's bounded send queue, filled by fan-out, drained by a transport.
//!
//! It holds no buffer while empty (an idle connection costs one small
//! allocation here) and never grows past its capacity: a subscriber that falls
//! behind is marked overflowed, further pushes are dropped, and its transport
//! closes it with a "resume with your cursor" signal. Nothing is lost silently:
//! the client's cursor still points before the first dropped message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::channel::ChannelName;
use crate::cursor::Position;
use crate::publication::Publication;

/// What fan-out hands a connection.
#[derive(Debug, Clone)]
pub enum OutboxEvent {
    Message(Arc<Publication>),
    /// The backend lost messages of this channel (e.g. it restarted): the
    /// connection must tell its client to reload state.
    Reset {
        channel: ChannelName,
        position: Position,
    },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PushOutcome {
    Queued,
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
}

#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<OutboxEvent>,
    waker: Option<Waker>,
    overflowed: bool,
    shut_down: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Outbox {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, event: OutboxEvent) -> PushOutcome {
        let mut st = self.lock();
        if st.overflowed {
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

    /// Takes what is queued without waiting.
    pub fn try_drain(&self, out: &mut Vec<OutboxEvent>) -> Option<Drained> {
        let mut st = self.lock();
        if st.overflowed {
            return Some(Drained::Overflowed);
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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
            Data::Json("0".into()),
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
