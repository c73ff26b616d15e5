//! The hub: local fan-out. It owns this process's subscribers per channel
//! and hands each publication the [`Log`] announces to every subscriber's
//! [`Outbox`], in offset order: written straight to a parked connection's
//! socket when the message is isolated, queued in a burst.
//!
//! There is one hub per process and one fan-out implementation, whatever
//! the log: a storage backend implements [`Log`] only, and the hub hears of
//! every append, this node's or another's, through [`Appended`].
//!
//! Subscribing registers first and reads the log second. A publication is
//! readable before the log announces it, so it is either in the read or
//! announced to the new subscriber, or both: the catch-up may overlap live
//! delivery, never leave a hole, and [`crate::Session`] drops the overlap.

pub mod outbox;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::auth::Policy;
use crate::channel::{ChannelName, EventName};
use crate::clock::{Clock, Millis, SystemClock};
use crate::cursor::Position;
use crate::error::Error;
use crate::log::{Appended, Catchup, Log, StartAt};
use crate::publication::{Data, Publication};
use crate::sync::{self, lock, Mutex, SHARDS};

pub use outbox::{DirectSink, Drained, Outbox, OutboxEvent, PushOutcome, Sent};

/// Identifies one subscribing connection within this process.
pub type SubscriberId = u64;

/// A connection as fan-out sees it: where to put its events.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Unique among this process's live connections.
    pub id: SubscriberId,
    /// Where fan-out puts its events.
    pub outbox: Arc<Outbox>,
}

/// The default of [`HubConfig::direct_gap_ms`].
pub const DIRECT_GAP_MS: Millis = 10;

/// How a [`Hub`] fans out.
#[derive(Clone)]
pub struct HubConfig {
    /// A message published less than this long after the previous one's
    /// fan-out ended, when the previous one also followed its predecessor
    /// that closely, goes through the connections' queues (so bursts
    /// coalesce); otherwise it is written straight to parked connections.
    /// 0: always straight; `Millis::MAX`: never. Default [`DIRECT_GAP_MS`].
    pub direct_gap_ms: Millis,
    /// Time for the burst rule; a [`crate::ManualClock`] in tests.
    pub clock: Arc<dyn Clock>,
    /// Who may subscribe, publish and send, and each namespace's rules;
    /// every connection of the hub decides by it.
    pub policy: Arc<Policy>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            direct_gap_ms: DIRECT_GAP_MS,
            clock: Arc::new(SystemClock),
            policy: Arc::new(Policy::open()),
        }
    }
}

/// Local fan-out over a [`Log`].
pub struct Hub {
    log: Arc<dyn Log>,
    fanout: Arc<Fanout>,
}

/// The subscriber sets; what the log's announcements reach. Apart from
/// [`Hub`] so that the log holds this and not the hub (which holds the log).
struct Fanout {
    config: HubConfig,
    shards: Vec<Mutex<HashMap<ChannelName, Arc<Mutex<Local>>>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// One channel's subscribers in this process.
#[derive(Default)]
struct Local {
    subscribers: HashMap<SubscriberId, Arc<Outbox>>,
    /// When the last message's fan-out ended (for the direct-write decision).
    last_publish: Option<Millis>,
    /// Whether the last message followed its predecessor within the gap.
    short_gap: bool,
    /// Set when the sweeper dropped this entry from the map; holders retry.
    removed: bool,
}

impl Hub {
    /// A hub fed by `log`'s announcements.
    pub fn new(log: Arc<dyn Log>, config: HubConfig) -> Self {
        let fanout = Arc::new(Fanout {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        });
        log.watch(fanout.clone());
        Hub { log, fanout }
    }

    /// Who may do what on its channels.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.fanout.config.policy
    }

    /// The hub's time (token expiry, the burst rule).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.fanout.config.clock
    }

    /// The log it fans out from.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Appends to the log; fan-out follows from the log's announcement.
    pub async fn publish(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error> {
        self.log.append(channel, event, data).await
    }

    /// Registers `subscriber` for live publications of `channel` and returns
    /// what it missed since `start`. Live events may overlap the returned
    /// messages; [`crate::Session`] drops the duplicates by offset. On an
    /// error, or if the caller gives up while the log is read, nothing stays
    /// registered.
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        start: StartAt,
        subscriber: &Subscriber,
    ) -> Result<Catchup, Error> {
        self.fanout.add(channel, subscriber);
        let registered = Registered {
            fanout: &self.fanout,
            channel,
            id: subscriber.id,
        };
        let catchup = self.log.read(channel, start, usize::MAX).await?;
        std::mem::forget(registered);
        Ok(catchup)
    }

    /// Stops fan-out to `subscriber` on `channel`. Idempotent, and never
    /// waits: it runs when a connection is dropped.
    pub fn unsubscribe(&self, channel: &ChannelName, subscriber: SubscriberId) {
        self.fanout.remove(channel, subscriber);
    }

    /// Reads history without subscribing, at most `limit` publications.
    pub async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error> {
        self.log.read(channel, start, limit).await
    }

    /// Periodic upkeep: the log expires history and forgets idle channels
    /// nobody here subscribes to; empty subscriber sets are dropped.
    pub async fn sweep(&self) {
        let fanout = &self.fanout;
        self.log
            .sweep(&|channel| fanout.subscriber_count(channel) > 0)
            .await;
        fanout.sweep();
    }

    /// Number of subscribers on `channel` here (for metrics and tests).
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.fanout.subscriber_count(channel)
    }

    /// The subscribers on `channel` here, oldest connection first (for
    /// tests and diagnostics).
    pub fn subscribers(&self, channel: &ChannelName) -> Vec<Subscriber> {
        let Some(local) = self.fanout.get(channel) else {
            return Vec::new();
        };
        let mut all: Vec<Subscriber> = lock(&local)
            .subscribers
            .iter()
            .map(|(id, outbox)| Subscriber {
                id: *id,
                outbox: outbox.clone(),
            })
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }
}

/// Undoes a registration whose subscribe did not complete (an error, or a
/// caller that stopped waiting for the read).
struct Registered<'a> {
    fanout: &'a Fanout,
    channel: &'a ChannelName,
    id: SubscriberId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.fanout.remove(self.channel, self.id);
    }
}

impl Fanout {
    fn shard(&self, channel: &ChannelName) -> &Mutex<HashMap<ChannelName, Arc<Mutex<Local>>>> {
        &self.shards[sync::shard(self.hasher.hash_one(channel))]
    }

    fn get(&self, channel: &ChannelName) -> Option<Arc<Mutex<Local>>> {
        lock(self.shard(channel)).get(channel).cloned()
    }

    fn add(&self, channel: &ChannelName, subscriber: &Subscriber) {
        loop {
            let local = lock(self.shard(channel))
                .entry(channel.clone())
                .or_default()
                .clone();
            let mut local = lock(&local);
            if local.removed {
                continue;
            }
            local
                .subscribers
                .insert(subscriber.id, subscriber.outbox.clone());
            return;
        }
    }

    fn remove(&self, channel: &ChannelName, subscriber: SubscriberId) {
        if let Some(local) = self.get(channel) {
            let mut local = lock(&local);
            local.subscribers.remove(&subscriber);
            if local.subscribers.is_empty() && local.subscribers.capacity() > 8 {
                local.subscribers.shrink_to_fit();
            }
        }
    }

    fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.get(channel)
            .map_or(0, |local| lock(&local).subscribers.len())
    }

    fn sweep(&self) {
        for shard in &self.shards {
            lock(shard).retain(|_, local| {
                let mut local = lock(local);
                local.removed = local.subscribers.is_empty();
                !local.removed
            });
        }
    }
}

impl Appended for Fanout {
    fn appended(&self, p: &Arc<Publication>) {
        let Some(local) = self.get(&p.channel) else {
            return;
        };
        let mut local = lock(&local);
        let now = self.config.clock.now();
        // An isolated message is written straight to parked sockets (one
        // write each, no wake-up); in a burst messages go through the
        // queues, where those that pile up leave in one write. A burst is
        // two short gaps in a row: one alone is more often a publisher that
        // fell behind its schedule, or a fan-out that ran long, and queueing
        // a lone message coalesces nothing and costs a wake-up per subscriber.
        let short = local
            .last_publish
            .is_some_and(|t| now.saturating_sub(t) < self.config.direct_gap_ms);
        let direct = !(short && local.short_gap);
        local.short_gap = short;
        // The log announces a channel's appends in offset order, and this
        // lock keeps them in that order into every outbox.
        for outbox in local.subscribers.values() {
            if direct {
                outbox.offer(p);
            } else {
                outbox.push(OutboxEvent::Message(p.clone()));
            }
        }
        // Measured from the end of fan-out: a publisher that sends its next
        // message as soon as this one is done is bursting.
        local.last_publish = Some(if direct { self.config.clock.now() } else { now });
    }

    fn lost(&self, channel: &ChannelName, position: Position) {
        let Some(local) = self.get(channel) else {
            return;
        };
        let local = lock(&local);
        for outbox in local.subscribers.values() {
            outbox.push(OutboxEvent::Reset {
                channel: channel.clone(),
                position: position.clone(),
            });
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
