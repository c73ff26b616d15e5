//! The in-memory log: one history ring per channel, in this process.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::record::Record;
use super::{Appended, Catchup, Log, StartAt};
use crate::channel::{ChannelName, EventName};
use crate::clock::{Clock, Millis, SystemClock};
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::error::Error;
use crate::history::{History, Replay};
use crate::namespace::Namespaces;
use crate::publication::{Data, Publication};
use crate::sync::{self, lock, Mutex, SHARDS};

/// Retention of [`MemoryLog`].
#[derive(Clone)]
pub struct MemoryLogConfig {
    /// Publications kept per channel (default 1000).
    pub history_size: usize,
    /// How long a publication stays in history (default 10 minutes); also
    /// how long an unused channel with empty history keeps its epoch.
    pub history_ttl_ms: Millis,
    /// Time for expiry and idleness; a [`crate::ManualClock`] in tests.
    pub clock: Arc<dyn Clock>,
    /// Namespaces whose rules set their own history size or TTL, which
    /// then replace the two above for their channels.
    pub namespaces: Arc<Namespaces>,
}

impl Default for MemoryLogConfig {
    fn default() -> Self {
        MemoryLogConfig {
            history_size: 1000,
            history_ttl_ms: 10 * 60 * 1000,
            clock: Arc::new(SystemClock),
            namespaces: Arc::default(),
        }
    }
}

impl MemoryLogConfig {
    /// The history size and TTL of `channel`: its namespace's, else the
    /// log's.
    pub fn retention(&self, channel: &ChannelName) -> (usize, Millis) {
        let rules = self.namespaces.rules(channel);
        (
            rules.history_size.unwrap_or(self.history_size),
            rules
                .history_ttl
                .map_or(self.history_ttl_ms, |t| t.as_millis() as Millis),
        )
    }
}

/// Channels as a sharded map of per-channel locks. An append assigns the
/// offset, keeps the publication and tells the listener under its channel's
/// lock, so the listener hears of a channel's appends in offset order.
pub struct MemoryLog {
    config: MemoryLogConfig,
    shards: Vec<Mutex<HashMap<ChannelName, Arc<Mutex<ChannelState>>>>>,
    hasher: std::collections::hash_map::RandomState,
    listener: OnceLock<Arc<dyn Appended>>,
}

struct ChannelState {
    /// Shared by every publication and catch-up of the channel.
    name: ChannelName,
    epoch: Epoch,
    /// The newest readable offset.
    top: u64,
    /// The newest offset given out: above `top` while reserved publications
    /// wait to be made readable ([`MemoryLog::reserve`]).
    reserved: u64,
    history: History,
    last_activity: Millis,
    /// Set when the sweeper dropped this state from the map; holders retry.
    removed: bool,
}

impl MemoryLog {
    /// An empty log; give it to [`crate::Hub::new`].
    pub fn new(config: MemoryLogConfig) -> Self {
        MemoryLog {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            listener: OnceLock::new(),
        }
    }

    fn shard(
        &self,
        channel: &ChannelName,
    ) -> &Mutex<HashMap<ChannelName, Arc<Mutex<ChannelState>>>> {
        &self.shards[sync::shard(self.hasher.hash_one(channel))]
    }

    /// Runs `f` on the live state of `channel`, creating it on demand.
    fn with_channel<R>(
        &self,
        channel: &ChannelName,
        mut f: impl FnMut(&mut ChannelState, Millis) -> R,
    ) -> R {
        loop {
            let state = {
                let mut shard = lock(self.shard(channel));
                shard
                    .entry(channel.clone())
                    .or_insert_with(|| {
                        let (size, ttl) = self.config.retention(channel);
                        Arc::new(Mutex::new(ChannelState {
                            name: channel.clone(),
                            epoch: Epoch::random(),
                            top: 0,
                            reserved: 0,
                            history: History::new(size, ttl),
                            last_activity: self.config.clock.now(),
                            removed: false,
                        }))
                    })
                    .clone()
            };
            let mut st = lock(&state);
            if st.removed {
                continue;
            }
            let now = self.config.clock.now();
            st.last_activity = now;
            st.history.expire(now);
            return f(&mut st, now);
        }
    }

    /// Number of channels with state (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// The lowest offset `channel` still keeps: every one below it has been
    /// trimmed (by count or age), and all of them when the channel is gone
    /// (`u64::MAX`). For a durable log deciding what storage may drop; it
    /// does not count as activity.
    pub fn first_kept(&self, channel: &ChannelName) -> u64 {
        let Some(state) = lock(self.shard(channel)).get(channel).cloned() else {
            return u64::MAX;
        };
        let mut st = lock(&state);
        if st.removed {
            return u64::MAX;
        }
        st.history.expire(self.config.clock.now());
        st.history.oldest_offset().unwrap_or(st.top + 1)
    }

    /// Gives a publication the channel's next offset without making it
    /// readable: for a durable log, which stores it first and then calls
    /// [`MemoryLog::commit`]. `enqueue` runs under the channel's lock, so
    /// what it queues is in offset order.
    pub fn reserve(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
        enqueue: impl FnOnce(&Arc<Publication>),
    ) -> Arc<Publication> {
        self.offset_and(channel, event, data, enqueue, false)
    }

    /// [`Log::append`], with `enqueue` run under the channel's lock once
    /// the publication has its offset: for a durable log that makes
    /// publications readable at once and stores them after (its records
    /// then queue in offset order).
    pub fn append_with(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
        enqueue: impl FnOnce(&Arc<Publication>),
    ) -> Arc<Publication> {
        self.offset_and(channel, event, data, enqueue, true)
    }

    /// Under the channel's lock: the next offset, `enqueue`, and when
    /// `now_readable`, history and the announcement.
    fn offset_and(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
        enqueue: impl FnOnce(&Arc<Publication>),
        now_readable: bool,
    ) -> Arc<Publication> {
        let mut data = Some(data);
        let mut enqueue = Some(enqueue);
        let listener = self.listener.get();
        self.with_channel(&channel, |st, now| {
            let p = assign(st, event.clone(), data.take().expect("runs once"), now);
            (enqueue.take().expect("runs once"))(&p);
            if now_readable {
                readable(st, p.clone(), now, listener);
            }
            p
        })
    }

    /// Makes a reserved publication readable and announces it. A
    /// channel's reservations are committed in offset order.
    pub fn commit(&self, p: &Arc<Publication>) {
        let listener = self.listener.get();
        self.with_channel(&p.channel, |st, now| {
            debug_assert_eq!(
                st.epoch, p.epoch,
                "a channel with a reservation keeps its epoch"
            );
            readable(st, p.clone(), now, listener);
        });
    }

    /// Puts back a publication read from storage at start, before any
    /// append: the channel takes its epoch and offset, and keeps it within
    /// its retention (time is the publication's own). A publication of
    /// another epoch starts the channel over in that epoch; one that does
    /// not follow the newest (records lost) empties its history, so a read
    /// across the hole answers `reset`; one already held is ignored.
    pub fn restore(&self, record: Record) {
        let Record {
            time,
            channel,
            epoch,
            offset,
            event,
            data,
        } = record;
        let mut data = Some(data);
        self.with_channel(&channel, |st, now| {
            if st.epoch != epoch || offset != st.top + 1 {
                if st.epoch == epoch && offset <= st.top {
                    return;
                }
                let (size, ttl) = self.config.retention(&st.name);
                st.history = History::new(size, ttl);
                st.epoch = epoch.clone();
            }
            st.top = offset;
            st.reserved = offset;
            let p = Publication::new(
                st.name.clone(),
                st.epoch.clone(),
                offset,
                event.clone(),
                data.take().expect("with_channel runs its closure once"),
                time,
            );
            st.history.push(Arc::new(p), now);
        });
    }
}

/// The channel's next offset, for a publication that is not readable yet.
fn assign(
    st: &mut ChannelState,
    event: Option<EventName>,
    data: Data,
    now: Millis,
) -> Arc<Publication> {
    st.reserved += 1;
    Arc::new(Publication::new(
        st.name.clone(),
        st.epoch.clone(),
        st.reserved,
        event,
        data,
        now,
    ))
}

/// Keeps `p` and announces it, still under the channel's lock: the
/// listener hears of a channel's appends in offset order, each once it is
/// readable.
fn readable(
    st: &mut ChannelState,
    p: Arc<Publication>,
    now: Millis,
    listener: Option<&Arc<dyn Appended>>,
) {
    st.top = p.offset;
    st.history.push(p.clone(), now);
    if let Some(listener) = listener {
        listener.appended(&p);
    }
}

fn catchup(st: &ChannelState, start: &StartAt, limit: usize) -> Catchup {
    let position = Position::new(st.epoch.clone(), st.top);
    let answer = |messages: Vec<Arc<Publication>>, truncated: bool, reset: bool| Catchup {
        channel: st.name.clone(),
        position: position.clone(),
        messages,
        reset,
        truncated,
    };
    match start {
        StartAt::Now => answer(Vec::new(), false, false),
        StartAt::Earliest => {
            let messages = st.history.oldest(limit);
            let more = st.history.len() > messages.len();
            answer(messages, more, false)
        }
        StartAt::After(pos) => {
            // Offset 0 is "before anything": valid in any epoch as long as
            // nothing has been trimmed since offset 1.
            let same_epoch = pos.epoch == st.epoch || pos.offset == 0;
            if !same_epoch || pos.offset > st.top {
                return answer(Vec::new(), false, true);
            }
            match st.history.after(pos.offset, st.top, limit) {
                Replay::Complete(messages) => {
                    let wanted = st.top - pos.offset;
                    let more = (messages.len() as u64) < wanted;
                    answer(messages, more, false)
                }
                Replay::Gap => answer(Vec::new(), false, true),
            }
        }
    }
}

#[async_trait]
impl Log for MemoryLog {
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error> {
        Ok(self.append_with(channel, event, data, |_| {}))
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error> {
        Ok(self.with_channel(channel, |st, _| catchup(st, &start, limit)))
    }

    fn watch(&self, listener: Arc<dyn Appended>) {
        let _ = self.listener.set(listener);
    }

    async fn sweep(&self, in_use: &(dyn for<'c> Fn(&'c ChannelName) -> bool + Sync)) {
        let now = self.config.clock.now();
        for shard in &self.shards {
            lock(shard).retain(|name, state| {
                let mut st = lock(state);
                st.history.expire(now);
                // `in_use` is asked under the channel's lock: a subscriber
                // registers before it reads, so it is either seen here or
                // reads the fresh state that replaces this one.
                let forget = st.history.is_empty()
                    && st.reserved == st.top
                    && now.saturating_sub(st.last_activity) >= st.history.ttl_ms()
                    && !in_use(name);
                if forget {
                    st.removed = true;
                }
                !forget
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn log(size: usize, ttl: Millis) -> (MemoryLog, ManualClock) {
        let clock = ManualClock::new(1_000);
        let log = MemoryLog::new(MemoryLogConfig {
            history_size: size,
            history_ttl_ms: ttl,
            clock: Arc::new(clock.clone()),
            ..Default::default()
        });
        (log, clock)
    }

    async fn publish(log: &MemoryLog, c: &str, n: u64) -> Arc<Publication> {
        log.append(ch(c), None, Data::json(&n.to_string()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_log_conformance_suite() {
        super::super::conformance::check(|history_size| {
            MemoryLog::new(MemoryLogConfig {
                history_size,
                ..Default::default()
            })
        })
        .await;
    }

    #[tokio::test]
    async fn catchups_and_publications_share_the_logs_channel_name() {
        let (log, _) = log(10, 60_000);
        publish(&log, "a", 1).await;
        // Each call passes its own copy of the name; the log answers with
        // one allocation, so fan-out compares names by pointer.
        let c = log.read(&ch("a"), StartAt::Now, 0).await.unwrap();
        let p = publish(&log, "a", 2).await;
        assert_eq!(c.channel.as_str().as_ptr(), p.channel.as_str().as_ptr());
    }

    #[tokio::test]
    async fn a_namespace_keeps_its_own_history_size_and_ttl() {
        use crate::namespace::{Namespace, Rules};
        let clock = ManualClock::new(1_000);
        let short = Rules {
            history_size: Some(2),
            history_ttl: Some(std::time::Duration::from_millis(100)),
            ..Rules::open()
        };
        let log = MemoryLog::new(MemoryLogConfig {
            history_size: 10,
            history_ttl_ms: 60_000,
            clock: Arc::new(clock.clone()),
            namespaces: Arc::new(Namespaces::new(
                Rules::open(),
                Rules::open(),
                vec![Namespace::new("short", short).unwrap()],
            )),
        });
        for n in 1..=4 {
            publish(&log, "short:a", n).await;
            publish(&log, "long", n).await;
        }
        let oldest = |c: &str| {
            let log = &log;
            let c = ch(c);
            async move {
                let r = log.read(&c, StartAt::Earliest, 100).await.unwrap();
                r.messages.iter().map(|p| p.offset).collect::<Vec<_>>()
            }
        };
        assert_eq!(oldest("short:a").await, [3, 4], "two kept");
        assert_eq!(oldest("long").await, [1, 2, 3, 4]);
        clock.advance(150);
        assert_eq!(oldest("short:a").await, Vec::<u64>::new(), "expired");
        assert_eq!(oldest("long").await.len(), 4);
        // An idle channel of the namespace is forgotten after its own TTL.
        clock.advance(150);
        log.sweep(&|_| false).await;
        assert_eq!(log.channel_count(), 1, "only `long` is left");
    }

    #[tokio::test]
    async fn ttl_expiry_then_sweep_changes_epoch() {
        let (log, clock) = log(10, 1_000);
        let p1 = publish(&log, "a", 1).await;
        clock.advance(1_500);
        let c = log
            .read(
                &ch("a"),
                StartAt::After(Position::new(p1.epoch.clone(), 0)),
                10,
            )
            .await
            .unwrap();
        assert!(c.reset, "message 1 expired, so a reader from 0 missed it");
        clock.advance(1_500);
        log.sweep(&|_| false).await;
        assert_eq!(log.channel_count(), 0);
        let p = publish(&log, "a", 2).await;
        assert_eq!(p.offset, 1);
        assert_ne!(p.epoch, p1.epoch);
    }

    #[tokio::test]
    async fn channels_in_use_keep_their_epoch_through_sweeps() {
        let (log, clock) = log(10, 1_000);
        let p1 = publish(&log, "a", 1).await;
        clock.advance(10_000);
        log.sweep(&|c| c.as_str() == "a").await;
        assert_eq!(log.channel_count(), 1);
        let p2 = publish(&log, "a", 2).await;
        assert_eq!((p2.offset, &p2.epoch), (2, &p1.epoch));
    }

    /// Records what the log announces.
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<u64>>);

    impl Appended for Heard {
        fn appended(&self, p: &Arc<Publication>) {
            self.0.lock().unwrap().push(p.offset);
        }
        fn lost(&self, _: &ChannelName, _: Position) {}
    }

    fn offsets(c: &Catchup) -> Vec<u64> {
        c.messages.iter().map(|p| p.offset).collect()
    }

    #[tokio::test]
    async fn a_reserved_publication_is_readable_and_announced_only_once_committed() {
        let (log, _) = log(10, 60_000);
        let heard = Arc::new(Heard::default());
        log.watch(heard.clone());
        let mut queued = Vec::new();
        let data = |n: u64| Data::json(&n.to_string()).unwrap();
        let r1 = log.reserve(ch("a"), None, data(1), |p| queued.push(p.offset));
        let r2 = log.reserve(ch("a"), None, data(2), |p| queued.push(p.offset));
        assert_eq!(queued, [1, 2], "queued in offset order, under the lock");
        let read = log.read(&ch("a"), StartAt::Earliest, 10).await.unwrap();
        assert_eq!((read.position.offset, offsets(&read)), (0, vec![]));
        assert!(heard.0.lock().unwrap().is_empty());
        // Not even a reader at the top can see past what is readable.
        let top = Position::new(r1.epoch.clone(), 1);
        assert!(
            log.read(&ch("a"), StartAt::After(top), 10)
                .await
                .unwrap()
                .reset
        );

        log.commit(&r1);
        let read = log.read(&ch("a"), StartAt::Earliest, 10).await.unwrap();
        assert_eq!((read.position.offset, offsets(&read)), (1, vec![1]));
        log.commit(&r2);
        assert_eq!(*heard.0.lock().unwrap(), [1, 2]);
        // An append continues after them.
        assert_eq!(publish(&log, "a", 3).await.offset, 3);
    }

    #[tokio::test]
    async fn a_channel_waiting_for_a_commit_is_never_forgotten() {
        let (log, clock) = log(0, 0);
        let r = log.reserve(ch("a"), None, Data::json("1").unwrap(), |_| {});
        clock.advance(1_000);
        log.sweep(&|_| false).await;
        assert_eq!(log.channel_count(), 1, "the reservation keeps its epoch");
        log.commit(&r);
        let read = log.read(&ch("a"), StartAt::Now, 0).await.unwrap();
        assert_eq!((&read.position.epoch, read.position.offset), (&r.epoch, 1));
    }

    fn stored(epoch: &str, offset: u64, time: Millis) -> Record {
        Record {
            time,
            channel: ch("a"),
            epoch: Epoch::new(epoch).unwrap(),
            offset,
            event: None,
            data: Data::json(&offset.to_string()).unwrap(),
        }
    }

    #[tokio::test]
    async fn first_kept_follows_trimming_by_count_and_age_and_forgetting() {
        let (log, clock) = log(3, 1_000);
        let news = ch("news");
        assert_eq!(log.first_kept(&news), u64::MAX, "never seen");
        for n in 1..=5 {
            log.append(news.clone(), None, Data::json(&n.to_string()).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(log.first_kept(&news), 3, "a history of three");
        clock.advance(1_001);
        assert_eq!(log.first_kept(&news), 6, "all expired: nothing kept");
        log.sweep(&|_| false).await;
        assert_eq!(log.first_kept(&news), u64::MAX, "forgotten");
    }

    #[tokio::test]
    async fn restored_records_keep_their_epoch_offsets_and_retention() {
        let (log, clock) = log(3, 60_000);
        let now = clock.now();
        for offset in 1..=5 {
            log.restore(stored("E", offset, now - 1_000 + offset));
        }
        log.restore(stored("E", 4, now)); // copied forward twice: ignored
        let at = |o| StartAt::After(Position::new(Epoch::new("E").unwrap(), o));
        let read = log.read(&ch("a"), at(2), 10).await.unwrap();
        assert_eq!(
            (read.reset, offsets(&read)),
            (false, vec![3, 4, 5]),
            "3 kept"
        );
        assert!(
            log.read(&ch("a"), at(1), 10).await.unwrap().reset,
            "trimmed"
        );
        let p = publish(&log, "a", 6).await;
        assert_eq!((p.epoch.as_str(), p.offset), ("E", 6));

        // Older than the TTL: the position stands, the messages are gone.
        let (log, clock) = self::log(10, 60_000);
        clock.advance(100_000);
        log.restore(stored("E", 1, clock.now() - 70_000));
        let read = log.read(&ch("a"), at(0), 10).await.unwrap();
        assert!(read.reset && read.position.offset == 1);
        assert!(!log.read(&ch("a"), at(1), 10).await.unwrap().reset);

        // A hole (records lost): no read crosses it; a new epoch starts over.
        let (log, clock) = self::log(10, 60_000);
        for offset in [1, 2, 5, 6] {
            log.restore(stored("E", offset, clock.now()));
        }
        assert!(log.read(&ch("a"), at(2), 10).await.unwrap().reset);
        let read = log.read(&ch("a"), at(5), 10).await.unwrap();
        assert_eq!((read.reset, offsets(&read)), (false, vec![6]));
        log.restore(stored("F", 1, clock.now()));
        let read = log.read(&ch("a"), StartAt::Earliest, 10).await.unwrap();
        assert_eq!(
            (read.position.epoch.as_str(), offsets(&read)),
            ("F", vec![1])
        );
    }
}
