//! The in-memory log: one history ring per channel, in this process.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

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
    top: u64,
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
        let mut data = Some(data);
        let listener = self.listener.get();
        Ok(self.with_channel(&channel, |st, now| {
            st.top += 1;
            let p = Arc::new(Publication::new(
                st.name.clone(),
                st.epoch.clone(),
                st.top,
                event.clone(),
                data.take().expect("with_channel runs its closure once"),
                now,
            ));
            st.history.push(p.clone(), now);
            // Still under the channel's lock: the listener hears of this
            // channel's appends in offset order, each once it is readable.
            if let Some(listener) = listener {
                listener.appended(&p);
            }
            p
        }))
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
}
