//! The [`Log`] contract as one test suite, generic over the implementation:
//! the memory log runs it, and so must every storage backend (a disk log, a
//! Redis log), unchanged.
//!
//! ```no_run
//! # use pushgate_core::log::{conformance, MemoryLog, MemoryLogConfig};
//! # async fn demo() {
//! // In an async test of the backend's crate, against a fresh, empty store:
//! conformance::check(|history_size| {
//!     MemoryLog::new(MemoryLogConfig { history_size, ..Default::default() })
//! })
//! .await;
//! # }
//! ```
//!
//! Every check panics with a message naming the rule that failed. A check
//! that waits (for the listener of a log whose announcements arrive over a
//! network) waits for the event itself, so the caller bounds the whole run
//! with its own timeout. Failures of the store itself (an unreachable
//! server) are the backend's own tests to provoke: the contract there is
//! an [`crate::ErrorKind::Unavailable`] error, never a silent success.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures_util::future::join_all;

use super::{Appended, Log, StartAt};
use crate::channel::ChannelName;
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::publication::{Data, Publication};

/// Runs every check. `new_log(history_size)` returns a fresh, empty log
/// that keeps at most `history_size` publications per channel (and keeps
/// them for at least a minute).
pub async fn check<L: Log>(new_log: impl Fn(usize) -> L) {
    offsets_are_gapless_from_one_per_channel(&new_log(100)).await;
    reads_return_what_was_appended(&new_log(100)).await;
    reads_after_a_position_and_limits(&new_log(100)).await;
    epoch_rules(&new_log(100)).await;
    reads_across_a_trim(&new_log(3)).await;
    concurrent_appends_get_distinct_offsets(&new_log(1000)).await;
    the_listener_hears_every_append_in_order(&new_log(100)).await;
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("a valid channel name")
}

async fn append(log: &impl Log, ch: &str, n: u64) -> Arc<Publication> {
    log.append(
        channel(ch),
        None,
        Data::json(&n.to_string()).expect("a number is JSON"),
    )
    .await
    .unwrap_or_else(|e| panic!("append to {ch} failed: {e}"))
}

async fn read(log: &impl Log, ch: &str, start: StartAt, limit: usize) -> super::Catchup {
    log.read(&channel(ch), start, limit)
        .await
        .unwrap_or_else(|e| panic!("read of {ch} failed: {e}"))
}

fn offsets(messages: &[Arc<Publication>]) -> Vec<u64> {
    messages.iter().map(|p| p.offset).collect()
}

/// Offsets are 1, 2, 3, … per channel, in one epoch, and channels do not
/// share a sequence.
pub async fn offsets_are_gapless_from_one_per_channel(log: &impl Log) {
    let first = append(log, "conf-a", 1).await;
    assert_eq!(first.offset, 1, "a new channel's first offset is 1");
    for n in 2..=5 {
        let p = append(log, "conf-a", n).await;
        assert_eq!(p.offset, n, "offsets follow each other without gaps");
        assert_eq!(p.epoch, first.epoch, "appends keep the channel's epoch");
        assert_eq!(p.channel, channel("conf-a"));
    }
    assert_eq!(
        append(log, "conf-b", 1).await.offset,
        1,
        "each channel counts on its own"
    );
}

/// A read gives back the appended publications, byte for byte, in order,
/// and the channel's top.
pub async fn reads_return_what_was_appended(log: &impl Log) {
    let mut appended = Vec::new();
    for n in 1..=4 {
        appended.push(append(log, "conf-read", n).await);
    }
    let c = read(log, "conf-read", StartAt::Earliest, 100).await;
    assert!(!c.reset && !c.truncated, "{c:?}");
    assert_eq!(
        c.position,
        appended[3].position(),
        "the top is the last append"
    );
    assert_eq!(c.channel, channel("conf-read"));
    assert_eq!(c.messages.len(), 4);
    for (got, sent) in c.messages.iter().zip(&appended) {
        assert_eq!(got.position(), sent.position());
        assert_eq!(got.json(), sent.json(), "a read returns the same bytes");
    }
    let now = read(log, "conf-read", StartAt::Now, 100).await;
    assert!(now.messages.is_empty() && !now.reset);
    assert_eq!(now.position.offset, 4);
}

/// `After(p)` returns exactly what follows `p`; `limit` truncates and says so.
pub async fn reads_after_a_position_and_limits(log: &impl Log) {
    let mut last = None;
    for n in 1..=6 {
        last = Some(append(log, "conf-after", n).await);
    }
    let epoch = last.expect("appended").epoch.clone();
    let after = |o: u64| StartAt::After(Position::new(epoch.clone(), o));
    let c = read(log, "conf-after", after(2), 100).await;
    assert_eq!(offsets(&c.messages), [3, 4, 5, 6]);
    assert!(!c.reset && !c.truncated);
    let c = read(log, "conf-after", after(2), 2).await;
    assert_eq!(offsets(&c.messages), [3, 4], "limit caps the read");
    assert!(c.truncated, "a capped read says more follow");
    assert_eq!(c.next_position().offset, 4, "the reader resumes after 4");
    let c = read(log, "conf-after", after(6), 100).await;
    assert!(c.messages.is_empty() && !c.reset, "nothing after the top");
    let c = read(log, "conf-after", StartAt::Earliest, 3).await;
    assert_eq!(offsets(&c.messages), [1, 2, 3]);
    assert!(c.truncated);
}

/// A channel's epoch is stable from its first read on; another epoch or a
/// position beyond the top is a reset; offset 0 is valid in any epoch.
pub async fn epoch_rules(log: &impl Log) {
    let fresh = read(log, "conf-epoch", StartAt::Now, 100).await;
    assert_eq!(
        fresh.position.offset, 0,
        "a channel without state stands at 0"
    );
    let p = append(log, "conf-epoch", 1).await;
    assert_eq!(
        p.epoch, fresh.position.epoch,
        "the first append continues the epoch a reader was given"
    );
    append(log, "conf-epoch", 2).await;
    let other = Epoch::new("conformanceOther").expect("a valid epoch");
    let c = read(
        log,
        "conf-epoch",
        StartAt::After(Position::new(other.clone(), 1)),
        100,
    )
    .await;
    assert!(c.reset, "a position in another epoch is a reset");
    assert!(c.messages.is_empty(), "a reset carries no messages");
    assert_eq!(c.position.offset, 2, "a reset still gives the top");
    let c = read(
        log,
        "conf-epoch",
        StartAt::After(Position::new(other, 0)),
        100,
    )
    .await;
    assert!(!c.reset, "offset 0 is before anything, in any epoch");
    assert_eq!(offsets(&c.messages), [1, 2]);
    let c = read(
        log,
        "conf-epoch",
        StartAt::After(Position::new(p.epoch.clone(), 3)),
        100,
    )
    .await;
    assert!(c.reset, "a position beyond the top is a reset");
}

/// With history trimmed to the newest 3, reads that need a trimmed
/// publication are resets; reads within what is kept are not.
pub async fn reads_across_a_trim(log: &impl Log) {
    let mut epoch = None;
    for n in 1..=5 {
        epoch = Some(append(log, "conf-trim", n).await.epoch.clone());
    }
    let epoch = epoch.expect("appended");
    let after = |o: u64| StartAt::After(Position::new(epoch.clone(), o));
    let c = read(log, "conf-trim", after(1), 100).await;
    assert!(c.reset, "2 was trimmed: resuming after 1 would skip it");
    let c = read(log, "conf-trim", after(2), 100).await;
    assert!(!c.reset, "3, 4 and 5 are kept");
    assert_eq!(offsets(&c.messages), [3, 4, 5]);
    let c = read(log, "conf-trim", after(0), 100).await;
    assert!(c.reset, "offset 0 needs offset 1, which was trimmed");
    let c = read(log, "conf-trim", StartAt::Earliest, 100).await;
    assert_eq!(
        offsets(&c.messages),
        [3, 4, 5],
        "earliest is the oldest kept"
    );
    assert!(!c.reset);
}

/// Appends racing on one channel get distinct, gapless offsets, and a read
/// returns them in offset order.
pub async fn concurrent_appends_get_distinct_offsets(log: &impl Log) {
    const N: u64 = 200;
    let appends = (1..=N).map(|n| append(log, "conf-race", n));
    let mut got: Vec<u64> = join_all(appends).await.iter().map(|p| p.offset).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "offsets 1..={N}, once each"
    );
    let c = read(log, "conf-race", StartAt::Earliest, 1000).await;
    assert_eq!(offsets(&c.messages), (1..=N).collect::<Vec<_>>());
}

/// What a listener was told, and the waker of whoever waits for more.
#[derive(Default)]
struct Heard {
    offsets: Vec<(ChannelName, u64)>,
    waiter: Option<Waker>,
}

#[derive(Default)]
struct Recorder(Mutex<Heard>);

impl Appended for Recorder {
    fn appended(&self, p: &Arc<Publication>) {
        let mut heard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        heard.offsets.push((p.channel.clone(), p.offset));
        if let Some(w) = heard.waiter.take() {
            w.wake();
        }
    }

    fn lost(&self, _: &ChannelName, _: Position) {}
}

/// The listener hears of every append to a channel followed, per channel
/// in offset order.
pub async fn the_listener_hears_every_append_in_order(log: &impl Log) {
    let recorder = Arc::new(Recorder::default());
    log.watch(recorder.clone());
    for name in ["conf-heard-a", "conf-heard-b"] {
        log.follow(&channel(name))
            .await
            .unwrap_or_else(|e| panic!("follow {name} failed: {e}"));
    }
    const N: u64 = 50;
    let appends = (1..=N).flat_map(|n| {
        [
            append(log, "conf-heard-a", n),
            append(log, "conf-heard-b", n),
        ]
    });
    join_all(appends).await;
    // A remote log announces asynchronously: wait until everything came.
    poll_fn(|cx| {
        let mut heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner());
        if heard.offsets.len() as u64 >= 2 * N {
            return Poll::Ready(());
        }
        heard.waiter = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    let heard = recorder.0.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["conf-heard-a", "conf-heard-b"] {
        let got: Vec<u64> = heard
            .offsets
            .iter()
            .filter(|(c, _)| c.as_str() == name)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            got,
            (1..=N).collect::<Vec<_>>(),
            "{name}: every append heard once, in offset order"
        );
    }
}
