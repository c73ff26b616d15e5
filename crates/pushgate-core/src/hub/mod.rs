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

pub mod cluster;
pub mod listing;
pub mod live;
pub mod outbox;
pub mod presence;
mod room;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use crate::auth::{personal_channel, Policy, UserId};
use crate::channel::{ChannelName, EventName};
use crate::clock::{Clock, Millis, SystemClock};
use crate::cursor::Position;
use crate::error::Error;
use crate::json::SafeJson;
use crate::log::{Appended, Catchup, Log, StartAt};
use crate::publication::{Data, Publication};
use crate::rtc::{ClientKeys, RtcConfig};
use crate::sync::{self, lock, Mutex, SHARDS};

pub use cluster::{Cluster, Inbound, Question, RelayedSignal, Responder, Survey};
pub use listing::{ChannelPage, ChannelQuery, Order};
pub use live::{LiveEvent, LiveKind};
pub use outbox::{DirectSink, Drained, Outbox, OutboxEvent, PushOutcome, Sent};
pub use presence::{Member, Presence};
pub use room::RoomJoin;

use presence::Members;

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
    /// The ICE servers and limits of rooms' WebRTC signaling.
    pub rtc: Arc<RtcConfig>,
    /// The other nodes, when this one is part of a cluster.
    pub cluster: Option<Arc<dyn Cluster>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            direct_gap_ms: DIRECT_GAP_MS,
            clock: Arc::new(SystemClock),
            policy: Arc::new(Policy::open()),
            rtc: Arc::default(),
            cluster: None,
        }
    }
}

/// Local fan-out over a [`Log`].
pub struct Hub {
    log: Arc<dyn Log>,
    fanout: Arc<Fanout>,
    /// Prove a connection's id in a room's signals over `POST /command`
    /// (a cluster's own, the same on every node, once it has them).
    keys: ClientKeys,
    /// What this node answers to surveys ([`Hub::survey`]).
    responder: std::sync::OnceLock<Arc<dyn Responder>>,
}

/// Most recipients of one direct message.
pub const MAX_RECIPIENTS: usize = 100;

/// Which recipients of a direct message had a connection here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Whose personal channel has a subscriber on this node.
    pub online: Vec<UserId>,
    /// The others: the message waits in their history.
    pub offline: Vec<UserId>,
}

/// The subscriber sets; what the log's announcements reach. Apart from
/// [`Hub`] so that the log holds this and not the hub (which holds the log).
struct Fanout {
    config: HubConfig,
    shards: Vec<Mutex<HashMap<ChannelName, Arc<Mutex<Local>>>>>,
    hasher: std::collections::hash_map::RandomState,
    /// Each user's live connections, for [`Hub::disconnect`] and
    /// [`Hub::user_connections`]. Weak: the index never keeps a
    /// connection alive.
    users: Mutex<HashMap<UserId, Vec<UserConnection>>>,
}

/// One of a user's live connections: its id and its outbox.
type UserConnection = (SubscriberId, Weak<Outbox>);

/// What [`Fanout::add`] did beyond subscribing.
struct Added {
    /// In a room: the other members here when it joined.
    room: Option<Vec<Member>>,
    /// Listed in presence; `Some(true)` with join/leave events.
    listed: Option<bool>,
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
    /// Who is subscribed, only for a channel with presence: fan-out never
    /// reads it, and other channels pay one null pointer.
    members: Option<Box<Members>>,
}

impl Hub {
    /// A hub fed by `log`'s announcements.
    pub fn new(log: Arc<dyn Log>, config: HubConfig) -> Self {
        let fanout = Arc::new(Fanout {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            users: Mutex::new(HashMap::new()),
        });
        log.watch(fanout.clone());
        if let Some(cluster) = &fanout.config.cluster {
            cluster.attach(fanout.clone());
        }
        Hub {
            log,
            fanout,
            keys: ClientKeys::random(),
            responder: std::sync::OnceLock::new(),
        }
    }

    /// This node's number in its cluster; 0 alone.
    pub fn node(&self) -> u64 {
        self.cluster().map_or(0, |c| c.node())
    }

    /// Sets what this node answers to surveys, its own and the other
    /// nodes' (the server's facts); once.
    pub fn answer_with(&self, responder: Arc<dyn Responder>) {
        if self.responder.set(responder.clone()).is_ok() {
            if let Some(cluster) = self.cluster() {
                cluster.answer_with(responder);
            }
        }
    }

    /// Asks `question` of every live node (this one alone without a
    /// cluster) through their [`Responder`]s; a node without one answers
    /// `null`.
    pub async fn survey(&self, question: &Question) -> Result<Survey, Error> {
        if let Some(cluster) = self.cluster() {
            return cluster.survey(question).await;
        }
        let answer = self
            .responder
            .get()
            .map_or(serde_json::Value::Null, |r| r.answer(question));
        Ok(Survey {
            answers: vec![(0, answer)],
            missing: Vec::new(),
        })
    }

    /// This node's page of the channels with subscribers here.
    pub fn channels(&self, query: &ChannelQuery) -> ChannelPage {
        let mut picker = query.picker();
        for shard in &self.fanout.shards {
            // Counted under the shard's lock, one channel's lock at a time:
            // bounded by the table, never held across channels' fan-outs.
            let shard = lock(shard);
            for (channel, local) in shard.iter() {
                if picker.wants(channel) {
                    picker.offer(channel, lock(local).subscribers.len() as u64);
                }
            }
        }
        picker.finish(|c| self.subscriber_count(c) as u64)
    }

    /// How many channels have subscribers here.
    pub fn channel_count(&self) -> usize {
        self.fanout
            .shards
            .iter()
            .map(|s| {
                lock(s)
                    .values()
                    .filter(|l| !lock(l).subscribers.is_empty())
                    .count()
            })
            .sum()
    }

    /// The ids of `user`'s live connections here, oldest first.
    pub fn user_connections(&self, user: &UserId) -> Vec<SubscriberId> {
        let users = lock(&self.fanout.users);
        let mut ids: Vec<SubscriberId> = users
            .get(user)
            .into_iter()
            .flatten()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The other nodes, when this one is part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.fanout.config.cluster.as_ref()
    }

    /// The id of this node's first connection: ids are unique in the
    /// cluster, and say which node holds a connection.
    pub fn first_id(&self) -> SubscriberId {
        self.cluster()
            .map_or(0, |c| c.node() << cluster::NODE_SHIFT)
            + 1
    }

    /// Whether connection `id` is held by this node.
    pub fn is_here(&self, id: SubscriberId) -> bool {
        self.fanout.is_here(id)
    }

    /// Who may do what on its channels.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.fanout.config.policy
    }

    /// The hub's time (token expiry, the burst rule).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.fanout.config.clock
    }

    /// How rooms signal: ICE servers, the size of a signal.
    pub fn rtc(&self) -> &Arc<RtcConfig> {
        &self.fanout.config.rtc
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
        self.subscribe_as(channel, start, subscriber, None)
            .await
            .map(|(catchup, _)| catchup)
    }

    /// [`Hub::subscribe`], with the connection's part in presence:
    /// `member` is `None` for one that takes none (a poll request), else
    /// `Some(user)` (`Some(None)`: anonymous). On a channel with presence
    /// a member is listed, and with join/leave the other subscribers get
    /// its `join` (and its `leave` when it unsubscribes or is dropped). In
    /// a room a member also gets the other members, as they were when it
    /// was added: every later change reaches its outbox as a join or leave.
    pub async fn subscribe_as(
        &self,
        channel: &ChannelName,
        start: StartAt,
        subscriber: &Subscriber,
        member: Option<Option<&UserId>>,
    ) -> Result<(Catchup, Option<Vec<Member>>), Error> {
        let added = self.fanout.add(channel, subscriber, member);
        let registered = Registered {
            fanout: &self.fanout,
            channel,
            id: subscriber.id,
        };
        self.log.follow(channel).await?;
        let mut room = added.room;
        if let (Some(cluster), Some(announce)) = (self.cluster(), added.listed) {
            // Listed before the room is read: of two members joining on
            // two nodes at once, each sees the other in its list or
            // hears its join (a client takes a join it knew as no news).
            let user = member.flatten();
            cluster
                .joined(channel, subscriber.id, user, announce)
                .await?;
            if let Some(local) = room.as_mut() {
                let everywhere = cluster.members(channel, announce).await?;
                local.extend(everywhere.into_iter().filter(|(id, _)| !self.is_here(*id)));
                local.sort_unstable_by_key(|m| m.0);
            }
        }
        let catchup = self.log.read(channel, start, usize::MAX).await?;
        std::mem::forget(registered);
        Ok((catchup, room))
    }

    /// Stops fan-out to `subscriber` on `channel`. Idempotent, and never
    /// waits: it runs when a connection is dropped.
    pub fn unsubscribe(&self, channel: &ChannelName, subscriber: SubscriberId) {
        self.fanout.remove(channel, subscriber);
    }

    /// Who is subscribed to `channel`, on every node; a channel whose
    /// namespace has no presence is a `bad_request`.
    pub async fn presence(&self, channel: &ChannelName) -> Result<Presence, Error> {
        let rules = self.policy().rules(channel);
        if !rules.presence {
            let mut name = String::new();
            crate::json::push_string(&mut name, channel.as_str());
            return Err(Error::bad_request(format!(
                "presence is off for channel {name} (its namespace has presence = false)"
            )));
        }
        let mut members: Members = self
            .fanout
            .get(channel)
            .and_then(|l| lock(&l).members.as_deref().cloned())
            .unwrap_or_default();
        if let Some(cluster) = self.cluster() {
            // This node's own are as fresh as can be; the others' as listed.
            let elsewhere = cluster.members(channel, rules.join_leave).await?;
            members.extend(elsewhere.into_iter().filter(|(id, _)| !self.is_here(*id)));
        }
        Ok(Presence::of(
            channel.clone(),
            Some(&members),
            self.is_room(channel),
        ))
    }

    /// Lists this node's members again with the cluster, which forgets
    /// those not renewed for a while (a crashed node's); run periodically.
    pub async fn renew_presence(&self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let listed = self
            .fanout
            .members_here()
            .into_iter()
            .map(|(channel, members)| cluster::Listed {
                announce: self.policy().rules(&channel).join_leave,
                channel,
                members,
            })
            .collect();
        cluster.renew(listed).await;
    }

    /// Appends `{"from":<from>,"data":<data>}` to each recipient's personal
    /// channel (`from`: `None` for the API). The ids are checked first: one
    /// that makes no channel name refuses the whole send.
    pub async fn send(
        &self,
        from: Option<&UserId>,
        to: &[UserId],
        event: Option<EventName>,
        data: &SafeJson,
    ) -> Result<Recipients, Error> {
        let channels = recipient_channels(to)?;
        let wrapped = Data::Json(SafeJson::direct_message(from.map(|u| &**u), data));
        let mut out = Recipients::default();
        for (user, channel) in to.iter().zip(channels) {
            self.publish(channel.clone(), event.clone(), wrapped.clone())
                .await?;
            let online = self.subscriber_count(&channel) > 0
                || match self.cluster() {
                    Some(cluster) => cluster.followed_elsewhere(&channel).await?,
                    None => false,
                };
            if online {
                out.online.push(user.clone());
            } else {
                out.offline.push(user.clone());
            }
        }
        Ok(out)
    }

    /// Remembers connection `id` (its `outbox`) as one of `user`'s.
    pub fn register_user(&self, user: &UserId, id: SubscriberId, outbox: &Arc<Outbox>) {
        let mut users = lock(&self.fanout.users);
        let list = users.entry(user.clone()).or_default();
        list.retain(|(_, w)| w.strong_count() > 0);
        list.push((id, Arc::downgrade(outbox)));
    }

    /// Forgets `outbox` (a connection of `user` that ends).
    pub fn unregister_user(&self, user: &UserId, outbox: &Arc<Outbox>) {
        let mut users = lock(&self.fanout.users);
        if let Some(list) = users.get_mut(user) {
            list.retain(|(_, w)| {
                w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(outbox))
            });
            if list.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Ends every live connection of `user` ([`Outbox::disconnect`]) and
    /// refuses its tokens issued until now ([`Policy::revoke`]), on every
    /// node. Returns how many connections this node told.
    pub async fn disconnect(&self, user: &UserId) -> Result<usize, Error> {
        let at = self.clock().now() / 1000;
        let here = self.fanout.disconnect_here(user, at);
        if let Some(cluster) = self.cluster() {
            cluster.disconnect(user, at).await?;
        }
        Ok(here)
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
        fanout.sweep(|channel| self.log.unfollow(channel));
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

/// The personal channel of each recipient, or a `bad_request`.
pub fn recipient_channels(to: &[UserId]) -> Result<Vec<ChannelName>, Error> {
    if to.is_empty() || to.len() > MAX_RECIPIENTS {
        return Err(Error::bad_request(format!(
            "\"to\" must list 1 to {MAX_RECIPIENTS} user ids"
        )));
    }
    to.iter()
        .map(|id| {
            personal_channel(id).ok_or_else(|| {
                let mut shown = String::new();
                crate::json::push_string(&mut shown, &id.chars().take(64).collect::<String>());
                Error::bad_request(format!(
                    "user id {shown} makes no valid personal channel name"
                ))
            })
        })
        .collect()
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

    /// Adds `subscriber`, and `member` to presence where the channel keeps
    /// it; in a room, returns the other members as they were.
    fn add(
        &self,
        channel: &ChannelName,
        subscriber: &Subscriber,
        member: Option<Option<&UserId>>,
    ) -> Added {
        // Read before the lock: a namespace lookup, on subscribe only.
        let rules = member.map(|_| self.config.policy.rules(channel));
        let presence = rules.is_some_and(|r| r.presence);
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
            let mut added = Added {
                room: None,
                listed: None,
            };
            if let (true, Some(user)) = (presence, member) {
                added.listed = rules.map(|r| r.join_leave);
                if rules.is_some_and(|r| r.signal) {
                    added.room = Some(presence::list(local.members.as_deref()));
                }
                local
                    .members
                    .get_or_insert_with(Default::default)
                    .insert(subscriber.id, user.cloned());
                if rules.is_some_and(|r| r.join_leave) {
                    let event = Arc::new(LiveEvent::presence(
                        LiveKind::Join,
                        channel.clone(),
                        user,
                        subscriber.id,
                    ));
                    local.tell(&event, subscriber.id);
                }
            }
            return added;
        }
    }

    fn remove(&self, channel: &ChannelName, subscriber: SubscriberId) {
        if let Some(local) = self.get(channel) {
            let mut local = lock(&local);
            local.subscribers.remove(&subscriber);
            if local.subscribers.is_empty() && local.subscribers.capacity() > 8 {
                local.subscribers.shrink_to_fit();
            }
            let Some(members) = local.members.as_mut() else {
                return;
            };
            let Some(user) = members.remove(&subscriber) else {
                return;
            };
            if members.is_empty() {
                local.members = None;
            }
            let announce = self.config.policy.rules(channel).join_leave;
            if let Some(cluster) = &self.config.cluster {
                cluster.left(channel, subscriber, user.as_ref(), announce);
            }
            if announce {
                let event = Arc::new(LiveEvent::presence(
                    LiveKind::Leave,
                    channel.clone(),
                    user.as_ref(),
                    subscriber,
                ));
                local.tell(&event, subscriber);
            }
        }
    }

    /// Whether connection `id` is held by this node.
    fn is_here(&self, id: SubscriberId) -> bool {
        self.config
            .cluster
            .as_ref()
            .is_none_or(|c| cluster::node_of(id) == c.node())
    }

    /// Every member here, by channel.
    fn members_here(&self) -> Vec<(ChannelName, Vec<Member>)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let locals: Vec<_> = lock(shard)
                .iter()
                .map(|(c, l)| (c.clone(), l.clone()))
                .collect();
            for (channel, local) in locals {
                let local = lock(&local);
                if let Some(members) = local.members.as_deref() {
                    let list = members.iter().map(|(id, u)| (*id, u.clone())).collect();
                    out.push((channel, list));
                }
            }
        }
        out
    }

    /// Ends `user`'s connections here and refuses its tokens issued until
    /// `at`; how many were told.
    fn disconnect_here(&self, user: &UserId, at: u64) -> usize {
        self.config.policy.revoke(user, at);
        let list = lock(&self.users).remove(user).unwrap_or_default();
        list.iter()
            .filter_map(|(_, w)| w.upgrade())
            .map(|outbox| outbox.disconnect())
            .count()
    }

    fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.get(channel)
            .map_or(0, |local| lock(&local).subscribers.len())
    }

    /// Drops the channels nobody here subscribes to any more, telling
    /// `unfollow` of each under the shard's lock: a subscriber that comes
    /// next makes a new entry, and follows the channel again, after it.
    fn sweep(&self, unfollow: impl Fn(&ChannelName)) {
        for shard in &self.shards {
            lock(shard).retain(|channel, local| {
                let mut local = lock(local);
                local.removed = local.subscribers.is_empty();
                if local.removed {
                    unfollow(channel);
                }
                !local.removed
            });
        }
    }
}

impl Local {
    /// Queues a join/leave for every subscriber but `except`. Through the
    /// queues, never written from here: the event has no offset, so a
    /// parked connection's positions have nothing to say about it.
    fn tell(&self, event: &Arc<LiveEvent>, except: SubscriberId) {
        for (id, outbox) in &self.subscribers {
            if *id != except {
                outbox.push(OutboxEvent::Live(event.clone()));
            }
        }
    }
}

impl Inbound for Fanout {
    fn presence(
        &self,
        channel: &ChannelName,
        joined: bool,
        id: SubscriberId,
        user: Option<&UserId>,
    ) {
        // This node's own, back from the channel's pub/sub channel: its
        // subscribers were told when it happened.
        if self.is_here(id) {
            return;
        }
        let Some(local) = self.get(channel) else {
            return;
        };
        let kind = if joined {
            LiveKind::Join
        } else {
            LiveKind::Leave
        };
        let event = Arc::new(LiveEvent::presence(kind, channel.clone(), user, id));
        lock(&local).tell(&event, id);
    }

    fn signal(&self, signal: RelayedSignal) {
        let RelayedSignal {
            room,
            from,
            user,
            to,
            data,
        } = signal;
        // Dropped when `to` left meanwhile: nobody else may get it.
        let _ = self.deliver_signal(&room, from, user.as_ref(), to, &data);
    }

    fn disconnect(&self, user: &UserId, at: u64) {
        self.disconnect_here(user, at);
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

#[cfg(test)]
mod cluster_tests;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod room_tests;
#[cfg(test)]
mod tests;
