//! Model checks of the concurrency that matters: loom runs each model under
//! every interleaving of the locks involved, where a property test case
//! sees one order.
//!
//! - fan-out writing into a connection's outbox (directly while it is
//!   parked, or queued) while the connection's task unparks, drains and
//!   parks again: exactly once, in order, a partial frame's tail first, and
//!   no event left waiting without a wake-up;
//! - the sweeper dropping an idle channel, from the hub and from the log,
//!   while a subscriber registers on it (it is registered, and gets the
//!   next publication with no reset), or while it is published to (the
//!   publication lands in the channel's live state).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p pushgate-core --release --lib loom`
//! (`scripts/test` runs it with a target directory of its own). Nothing
//! here waits: the memory log and the hub are ready at the first poll, so
//! futures are driven with `now_or_never`.

use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::FutureExt as _;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

use super::*;
use crate::clock::ManualClock;
use crate::epoch::Epoch;
use crate::log::{MemoryLog, MemoryLogConfig};
use crate::session::{Emit, Session};

fn channel() -> ChannelName {
    ChannelName::new("c").unwrap()
}

fn publication(offset: u64) -> Arc<Publication> {
    Arc::new(Publication::new(
        channel(),
        Epoch::new("e").unwrap(),
        offset,
        None,
        Data::json("0").unwrap(),
        0,
    ))
}

/// How fan-out hands a message over: offered (and then, when it goes
/// straight to the socket, how the socket takes it), or pushed to the
/// queue as in a burst.
#[derive(Debug, Clone, Copy)]
enum Handoff {
    Offer(Take),
    Push,
}

#[derive(Debug, Clone, Copy)]
enum Take {
    All,
    Nothing,
    Part,
}

use Handoff::{Offer, Push};

/// The client's socket: what it received in wire order, as (offset, whole
/// frame?). A std lock: nothing loom schedules happens while it is held,
/// and a write to a socket is one step.
struct Wire {
    got: StdMutex<Vec<(u64, bool)>>,
    /// How offsets 2, 3 and 4 are handed over.
    handoffs: [Handoff; 3],
}

impl Wire {
    fn got(&self) -> Vec<(u64, bool)> {
        self.got.lock().unwrap().clone()
    }

    fn push(&self, offset: u64) {
        self.got.lock().unwrap().push((offset, true));
    }
}

impl DirectSink for Wire {
    fn try_send(&self, p: &Publication) -> Sent {
        let mut got = self.got.lock().unwrap();
        let handoff = (p.offset as usize)
            .checked_sub(2)
            .and_then(|i| self.handoffs.get(i));
        let Some(Offer(take)) = handoff else {
            panic!(
                "{} is not the next message: not for a direct write",
                p.offset
            );
        };
        match take {
            Take::All => {
                got.push((p.offset, true));
                Sent::All
            }
            Take::Nothing => Sent::Nothing,
            Take::Part => {
                got.push((p.offset, false));
                Sent::Part(Bytes::from(p.offset.to_string()))
            }
        }
    }
}

/// Set by the connection's waker: the executor will poll the task again.
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A connection's task, polled as the WebSocket and event-stream
/// transports poll theirs.
struct Task {
    session: Session,
    outbox: Arc<Outbox>,
    wire: Arc<Wire>,
    sink: Arc<dyn DirectSink>,
    woken: Arc<Woken>,
}

impl Task {
    fn deliver(&mut self, event: OutboxEvent) {
        self.session.accept_with(event, |emit| match emit {
            Emit::Message(p) => self.wire.push(p.offset),
            Emit::Reset { .. } => panic!("no history was lost: {emit:?}"),
            Emit::Live(_) => panic!("no channel here has presence: {emit:?}"),
        });
    }

    fn poll(&mut self) {
        // The executor clears the wake-up it is answering before polling.
        self.woken.0.store(false, Ordering::SeqCst);
        if let Some(rest) = self.session.unpark(&self.outbox) {
            let offset: u64 = std::str::from_utf8(&rest).unwrap().parse().unwrap();
            let mut got = self.wire.got.lock().unwrap();
            assert_eq!(
                got.last(),
                Some(&(offset, false)),
                "a partial frame's tail is the next thing written"
            );
            *got.last_mut().unwrap() = (offset, true);
        }
        let waker = Waker::from(self.woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut events = Vec::new();
        while let Poll::Ready(drained) = self.outbox.poll_drain(&mut cx, &mut events) {
            assert_eq!(drained, Drained::Events);
            for event in events.drain(..) {
                self.deliver(event);
            }
        }
        // Waiting with nothing to write: fan-out may write for us.
        self.session.park(&self.outbox, &self.sink);
    }
}

/// The connection subscribed with a catch-up of message 1, wrote it and
/// parked. Fan-out then offers 1 again (the live announcement the catch-up
/// overlapped) and hands over 2, 3 and 4, while the connection is polled
/// twice; then it is polled once more, as it would be if it was woken.
fn parking_against_fanout(handoffs: [Handoff; 3]) {
    loom::model(move || {
        let outbox = Outbox::new(16);
        let wire = Arc::new(Wire {
            got: StdMutex::new(Vec::new()),
            handoffs,
        });
        let mut task = Task {
            session: Session::new(1),
            outbox: outbox.clone(),
            wire: wire.clone(),
            sink: wire.clone(),
            woken: Arc::new(Woken(AtomicBool::new(false))),
        };
        let catchup = task.session.subscribed(Catchup {
            channel: channel(),
            position: Position::new(Epoch::new("e").unwrap(), 1),
            messages: vec![publication(1)],
            reset: false,
            truncated: false,
        });
        for event in catchup {
            task.deliver(event);
        }
        task.poll();

        let fanout = thread::spawn(move || {
            outbox.offer(&publication(1));
            for (offset, handoff) in (2..).zip(handoffs) {
                let p = publication(offset);
                match handoff {
                    Offer(_) => outbox.offer(&p),
                    Push => outbox.push(OutboxEvent::Message(p)),
                };
            }
        });
        task.poll();
        task.poll();
        fanout.join().unwrap();

        let before = wire.got();
        let woken = task.woken.0.load(Ordering::SeqCst);
        task.poll();
        if !woken {
            assert_eq!(wire.got(), before, "work was left for a task nobody woke");
        }
        assert_eq!(wire.got(), [(1, true), (2, true), (3, true), (4, true)]);
    });
}

#[test]
fn parking_against_fanout_whole_writes_and_a_burst() {
    parking_against_fanout([Offer(Take::All), Push, Offer(Take::All)]);
}

#[test]
fn parking_against_fanout_partial_writes() {
    parking_against_fanout([Offer(Take::Part), Offer(Take::All), Offer(Take::Part)]);
}

#[test]
fn parking_against_fanout_refused_writes() {
    parking_against_fanout([Offer(Take::Nothing), Push, Offer(Take::Part)]);
}

/// A hub over a memory log, both on `clock`.
fn hub(clock: &ManualClock, history_ttl_ms: Millis) -> Arc<Hub> {
    let log = Arc::new(MemoryLog::new(MemoryLogConfig {
        history_size: 10,
        history_ttl_ms,
        clock: Arc::new(clock.clone()),
        ..Default::default()
    }));
    let config = HubConfig {
        clock: Arc::new(clock.clone()),
        ..HubConfig::default()
    };
    Arc::new(Hub::new(log, config))
}

/// A subscriber that came and went leaves an empty subscriber set; then the
/// sweeper runs while another subscribes, and once both are done the
/// channel is published to. With a history TTL of 0 every quiet channel is
/// idle at once, so the log may forget it (and its epoch) on any sweep:
/// only the subscriber registering before it reads, and the hub's answer
/// to `in_use`, keep it.
fn sweep_against_subscribe(history_ttl_ms: Millis) {
    loom::model(move || {
        let hub = hub(&ManualClock::new(1_000), history_ttl_ms);
        let subscriber = |id| Subscriber {
            id,
            outbox: Outbox::new(16),
        };
        let gone = subscriber(1);
        hub.subscribe(&channel(), StartAt::Now, &gone)
            .now_or_never()
            .unwrap()
            .unwrap();
        hub.unsubscribe(&channel(), gone.id);

        let sweeper = {
            let hub = hub.clone();
            thread::spawn(move || hub.sweep().now_or_never().unwrap())
        };
        let new = subscriber(2);
        let catchup = hub
            .subscribe(&channel(), StartAt::Now, &new)
            .now_or_never()
            .unwrap()
            .unwrap();
        sweeper.join().unwrap();

        assert_eq!(
            hub.subscriber_count(&channel()),
            1,
            "registered in the live subscriber set, not a swept one"
        );
        let p = hub
            .publish(channel(), None, Data::json("1").unwrap())
            .now_or_never()
            .unwrap()
            .unwrap();
        let mut session = Session::new(1);
        assert!(session.subscribed(catchup).is_empty());
        let mut events = Vec::new();
        new.outbox.try_drain(&mut events);
        let mut out = Vec::new();
        for event in events {
            session.accept(event, &mut out);
        }
        assert_eq!(
            out,
            [Emit::Message(p)],
            "the publication arrives, in the epoch the catch-up read: no reset"
        );
    });
}

#[test]
fn hub_sweep_against_subscribe() {
    // The log keeps the channel: only the hub's empty set is swept.
    sweep_against_subscribe(60_000);
}

#[test]
fn log_sweep_against_subscribe() {
    sweep_against_subscribe(0);
}

/// A channel nobody subscribes to has been quiet for the history TTL, and
/// is published to while the sweeper runs: the publication lands in the
/// state a later read finds, never in one the sweeper dropped.
#[test]
fn log_sweep_against_publish() {
    loom::model(|| {
        let clock = ManualClock::new(1_000);
        let hub = hub(&clock, 1_000);
        hub.read(&channel(), StartAt::Now, 0)
            .now_or_never()
            .unwrap()
            .unwrap();
        clock.advance(1_000);

        let sweeper = {
            let hub = hub.clone();
            thread::spawn(move || hub.sweep().now_or_never().unwrap())
        };
        let p = hub
            .publish(channel(), None, Data::json("1").unwrap())
            .now_or_never()
            .unwrap()
            .unwrap();
        sweeper.join().unwrap();

        let read = hub
            .read(&channel(), StartAt::Now, 0)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(
            read.position,
            p.position(),
            "the channel stands at the publication"
        );
    });
}
