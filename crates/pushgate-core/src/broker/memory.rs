//! The in-memory broker: history rings and subscriber lists in this process.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Broker, Catchup, StartAt, Subscriber, SubscriberId};
use crate::channel::{ChannelName, EventName};
use crate::clock::{Clock, Millis, SystemClock};
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::error::Error;
use crate::history::{History, Replay};
use crate::outbox::{Outbox, OutboxEvent};
use crate::publication::{Data, Publication};

/// Shards of the channel map: publishes to different channels rarely contend.
const SHARDS: usize = 64;

#[derive(Clone)]
pub struct MemoryBrokerConfig {
    /// Publications kept per channel (default 1000).
    pub history_size: usize,
    /// How long a publication stays in history (default 10 minutes).
    pub history_ttl_ms: Millis,
    /// A message published less than this long after the previous one's
    /// fan-out ended, when the previous one also followed its predecessor
    /// that closely, goes through the connections' queues (so bursts
    /// coalesce); otherwise it is written straight to parked connections.
    /// 0: always straight; `Millis::MAX`: never. Default [`DIRECT_GAP_MS`].
    pub direct_gap_ms: Millis,
    pub clock: Arc<dyn Clock>,
}

impl Default for MemoryBrokerConfig {
    fn default() -> Self {
        MemoryBrokerConfig {
            history_size: 1000,
            history_ttl_ms: 10 * 60 * 1000,
            direct_gap_ms: DIRECT_GAP_MS,
            clock: Arc::new(SystemClock),
        }
    }
}

pub struct MemoryBroker {
    config: MemoryBrokerConfig,
    shards: Vec<Mutex<HashMap<ChannelName, Arc<Mutex<ChannelState>>>>>,
    hasher: std::collections::hash_map::RandomState,
}

struct ChannelState {
    /// Shared by every publication and subscriber of the channel.
    name: ChannelName,
    epoch: Epoch,
    top: u64,
    history: History,
    subscribers: HashMap<SubscriberId, Arc<Outbox>>,
    last_activity: Millis,
    /// When the last message's fan-out ended (for the direct-write decision).
    last_publish: Option<Millis>,
    /// Whether the last message followed its predecessor within the gap.
    short_gap: bool,
    /// Set when the sweeper dropped this state from the map; holders retry.
    removed: bool,
}

/// The default of [`MemoryBrokerConfig::direct_gap_ms`].
pub const DIRECT_GAP_MS: Millis = 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before anything that
    // could panic, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    pub fn new(config: MemoryBrokerConfig) -> Self {
        MemoryBroker {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(
        &self,
        channel: &ChannelName,
    ) -> &Mutex<HashMap<ChannelName, Arc<Mutex<ChannelState>>>> {
        &self.shards[(self.hasher.hash_one(channel) as usize) % SHARDS]
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
                        Arc::new(Mutex::new(ChannelState {
                            name: channel.clone(),
                            epoch: Epoch::random(),
                            top: 0,
                            history: History::new(
                                self.config.history_size,
                                self.config.history_ttl_ms,
                            ),
                            subscribers: HashMap::new(),
                            last_activity: self.config.clock.now(),
                            last_publish: None,
                            short_gap: false,
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

    /// Number of subscribers on `channel` (for metrics and tests).
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        let shard = lock(self.shard(channel));
        shard.get(channel).map_or(0, |s| lock(s).subscribers.len())
    }

    fn sweep_now(&self) {
        let now = self.config.clock.now();
        let idle = self.config.history_ttl_ms;
        for shard in &self.shards {
            lock(shard).retain(|_, state| {
                let mut st = lock(state);
                st.history.expire(now);
                let forget = st.subscribers.is_empty()
                    && st.history.is_empty()
                    && now.saturating_sub(st.last_activity) >= idle;
                if forget {
                    st.removed = true;
                }
                !forget
            });
        }
    }
}

fn catchup(st: &ChannelState, start: &StartAt, limit: usize) -> Catchup {
    let position = Position::new(st.epoch.clone(), st.top);
    let complete = |messages: Vec<Arc<Publication>>, more: bool| Catchup {
        channel: st.name.clone(),
        position: position.clone(),
        messages,
        reset: false,
        truncated: more,
    };
    match start {
        StartAt::Now => complete(Vec::new(), false),
        StartAt::Earliest => {
            let messages = st.history.oldest(limit);
            let more = st.history.len() > messages.len();
            complete(messages, more)
        }
        StartAt::After(pos) => {
            // Offset 0 is "before anything": valid in any epoch as long as
            // nothing has been trimmed since offset 1.
            let same_epoch = pos.epoch == st.epoch || pos.offset == 0;
            if !same_epoch || pos.offset > st.top {
                return Catchup {
                    channel: st.name.clone(),
                    position,
                    messages: Vec::new(),
                    reset: true,
                    truncated: false,
                };
            }
            match st.history.after(pos.offset, st.top, limit) {
                Replay::Complete(messages) => {
                    let wanted = st.top - pos.offset;
                    let more = (messages.len() as u64) < wanted;
                    complete(messages, more)
                }
                Replay::Gap => Catchup {
                    channel: st.name.clone(),
                    position,
                    messages: Vec::new(),
                    reset: true,
                    truncated: false,
                },
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error> {
        let mut data = Some(data);
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
            // An isolated message is written straight to parked sockets (one
            // write each, no wake-up); in a burst messages go through the
            // queues, where those that pile up leave in one write. A burst is
            // two short gaps in a row: one alone is more often a publisher
            // that fell behind its schedule, or a fan-out that ran long, and
            // queueing a lone message coalesces nothing and costs a wake-up
            // per subscriber.
            let short = st
                .last_publish
                .is_some_and(|t| now.saturating_sub(t) < self.config.direct_gap_ms);
            let direct = !(short && st.short_gap);
            st.short_gap = short;
            // Under the channel lock, so every subscriber sees offsets in order.
            for outbox in st.subscribers.values() {
                if direct {
                    outbox.offer(&p);
                } else {
                    outbox.push(OutboxEvent::Message(p.clone()));
                }
            }
            // Measured from the end of fan-out: a publisher that sends its
            // next message as soon as this one is done is bursting.
            st.last_publish = Some(if direct { self.config.clock.now() } else { now });
            p
        }))
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: StartAt,
        subscriber: &Subscriber,
    ) -> Result<Catchup, Error> {
        Ok(self.with_channel(channel, |st, _| {
            st.subscribers
                .insert(subscriber.id, subscriber.outbox.clone());
            catchup(st, &start, usize::MAX)
        }))
    }

    fn unsubscribe(&self, channel: &ChannelName, subscriber: SubscriberId) {
        let state = lock(self.shard(channel)).get(channel).cloned();
        if let Some(state) = state {
            let mut st = lock(&state);
            st.subscribers.remove(&subscriber);
            if st.subscribers.is_empty() && st.subscribers.capacity() > 8 {
                st.subscribers.shrink_to_fit();
            }
        }
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error> {
        Ok(self.with_channel(channel, |st, _| catchup(st, &start, limit)))
    }

    async fn sweep(&self) {
        self.sweep_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn broker(size: usize, ttl: Millis) -> (MemoryBroker, ManualClock) {
        let clock = ManualClock::new(1_000);
        let b = MemoryBroker::new(MemoryBrokerConfig {
            history_size: size,
            history_ttl_ms: ttl,
            clock: Arc::new(clock.clone()),
            ..Default::default()
        });
        (b, clock)
    }

    #[tokio::test]
    async fn isolated_messages_go_straight_to_parked_sockets_bursts_to_queues() {
        use crate::outbox::{DirectSink, Sent};
        use crate::Epoch;
        struct Count(std::sync::atomic::AtomicUsize);
        impl DirectSink for Count {
            fn try_send(&self, _: &Publication) -> Sent {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Sent::All
            }
        }
        let (b, clock) = broker(10, 60_000);
        let sub = Subscriber {
            id: 1,
            outbox: Outbox::new(16),
        };
        let c = b.subscribe(&ch("a"), StartAt::Now, &sub).await.unwrap();
        let count = Arc::new(Count(Default::default()));
        let sink: Arc<dyn DirectSink> = count.clone();
        let epoch: Epoch = c.position.epoch.clone();
        sub.outbox.park(&sink, [(ch("a"), epoch, 0)].into_iter());
        let written = || count.0.load(std::sync::atomic::Ordering::SeqCst);
        publish(&b, "a", 1).await; // the first: written
        clock.advance(DIRECT_GAP_MS - 1);
        publish(&b, "a", 2).await; // one short gap: still written
        clock.advance(DIRECT_GAP_MS);
        publish(&b, "a", 3).await; // isolated again: written
        clock.advance(DIRECT_GAP_MS - 1);
        publish(&b, "a", 4).await; // one short gap: written
        assert_eq!((written(), sub.outbox.len()), (4, 0));
        clock.advance(DIRECT_GAP_MS - 1);
        publish(&b, "a", 5).await; // the second in a row: a burst, queued
        clock.advance(1);
        publish(&b, "a", 6).await;
        assert_eq!((written(), sub.outbox.len()), (4, 2));
        let (positions, _) = sub.outbox.unpark().unwrap();
        assert_eq!(positions[0].2, 4, "fan-out recorded what it wrote");
        clock.advance(DIRECT_GAP_MS);
        publish(&b, "a", 7).await; // the burst is over
        assert!(!sub.outbox.is_empty());
    }

    #[tokio::test]
    async fn catchups_and_publications_share_the_brokers_channel_name() {
        let (b, _) = broker(10, 60_000);
        let sub = Subscriber {
            id: 1,
            outbox: Outbox::new(16),
        };
        publish(&b, "a", 1).await;
        // Each call passes its own copy of the name; the broker answers with
        // one allocation, so fan-out compares names by pointer.
        let c = b.subscribe(&ch("a"), StartAt::Now, &sub).await.unwrap();
        let p = publish(&b, "a", 2).await;
        assert_eq!(c.channel.as_str().as_ptr(), p.channel.as_str().as_ptr());
    }

    async fn publish(b: &MemoryBroker, c: &str, n: u64) -> Arc<Publication> {
        b.publish(ch(c), None, Data::Json(n.to_string()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn offsets_are_consecutive_per_channel() {
        let (b, _) = broker(10, 60_000);
        for i in 1..=3 {
            assert_eq!(publish(&b, "a", i).await.offset, i);
        }
        assert_eq!(publish(&b, "b", 0).await.offset, 1);
    }

    #[tokio::test]
    async fn subscribe_replays_after_position_and_fans_out() {
        let (b, _) = broker(10, 60_000);
        let p1 = publish(&b, "a", 1).await;
        publish(&b, "a", 2).await;
        let sub = Subscriber {
            id: 1,
            outbox: Outbox::new(16),
        };
        let c = b
            .subscribe(&ch("a"), StartAt::After(p1.position()), &sub)
            .await
            .unwrap();
        assert!(!c.reset);
        assert_eq!(
            c.messages.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(c.position.offset, 2);
        publish(&b, "a", 3).await;
        assert_eq!(sub.outbox.len(), 1);
        b.unsubscribe(&ch("a"), 1);
        publish(&b, "a", 4).await;
        assert_eq!(sub.outbox.len(), 1);
    }

    #[tokio::test]
    async fn reset_on_trim_epoch_change_and_future_offset() {
        let (b, _) = broker(2, 60_000);
        let p1 = publish(&b, "a", 1).await;
        for i in 2..=4 {
            publish(&b, "a", i).await;
        }
        let trimmed = b
            .read(&ch("a"), StartAt::After(p1.position()), 100)
            .await
            .unwrap();
        assert!(trimmed.reset);
        let other_epoch = Position::new(Epoch::new("other").unwrap(), 3);
        assert!(
            b.read(&ch("a"), StartAt::After(other_epoch), 100)
                .await
                .unwrap()
                .reset
        );
        let future = Position::new(p1.epoch.clone(), 99);
        assert!(
            b.read(&ch("a"), StartAt::After(future), 100)
                .await
                .unwrap()
                .reset
        );
    }

    #[tokio::test]
    async fn ttl_expiry_then_sweep_changes_epoch() {
        let (b, clock) = broker(10, 1_000);
        let p1 = publish(&b, "a", 1).await;
        clock.advance(1_500);
        let c = b
            .read(
                &ch("a"),
                StartAt::After(Position::new(p1.epoch.clone(), 0)),
                10,
            )
            .await
            .unwrap();
        assert!(c.reset, "message 1 expired, so a reader from 0 missed it");
        clock.advance(1_500);
        b.sweep().await;
        assert_eq!(b.channel_count(), 0);
        let p = publish(&b, "a", 2).await;
        assert_eq!(p.offset, 1);
        assert_ne!(p.epoch, p1.epoch);
    }

    #[tokio::test]
    async fn offset_zero_is_valid_in_any_epoch() {
        let (b, _) = broker(10, 60_000);
        publish(&b, "a", 1).await;
        let start = StartAt::After(Position::new(Epoch::new("old").unwrap(), 0));
        let c = b.read(&ch("a"), start, 10).await.unwrap();
        assert!(!c.reset);
        assert_eq!(c.messages.len(), 1);
    }

    #[tokio::test]
    async fn read_limit_truncates_and_next_position_follows() {
        let (b, _) = broker(10, 60_000);
        let p1 = publish(&b, "a", 1).await;
        for i in 2..=5 {
            publish(&b, "a", i).await;
        }
        let c = b
            .read(&ch("a"), StartAt::After(p1.position()), 2)
            .await
            .unwrap();
        assert!(c.truncated);
        assert_eq!(c.next_position().offset, 3);
        let c = b.read(&ch("a"), StartAt::Earliest, 100).await.unwrap();
        assert!(!c.truncated);
        assert_eq!(c.messages.len(), 5);
        assert_eq!(c.next_position().offset, 5);
    }

    #[tokio::test]
    async fn subscribed_channels_survive_sweep() {
        let (b, clock) = broker(10, 1_000);
        let sub = Subscriber {
            id: 7,
            outbox: Outbox::new(4),
        };
        b.subscribe(&ch("a"), StartAt::Now, &sub).await.unwrap();
        clock.advance(10_000);
        b.sweep().await;
        assert_eq!(b.subscriber_count(&ch("a")), 1);
    }
}
