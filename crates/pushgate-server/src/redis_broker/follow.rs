//! The follower: one task, one pub/sub connection, for the channels this
//! node's clients hold. It subscribes a channel on its first local
//! subscriber and unsubscribes after the sweep drops its last; it hands the
//! hub each announcement in offset order ([`Followed`] says which are new),
//! and when the connection drops — or an announcement shows a gap — it
//! reads what was missed from the stream, so a Redis blip loses nothing:
//! the subscribers get the gap filled, or a `reset` when history no longer
//! covers it.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushgate_core::hub::cluster::{self, Delivered};
use pushgate_core::log::shared::{decode_live, Followed, Live};
use pushgate_core::{ChannelName, Publication, StartAt};
use tokio::sync::{mpsc, watch};

use super::feed::{Event, Feed};
use super::Inner;

/// What the log asks of the follower: each carries the channel's topic
/// (its pub/sub channel, what a message names).
pub(super) enum Command {
    /// Subscribe, then say so on the sender.
    Follow(String, ChannelName, watch::Sender<bool>),
    Unfollow(String),
}

/// How often the pub/sub connection is pinged: a connection that died
/// without a word (a half-open socket) is found within this and the
/// timeout, then replaced and caught up. Also how soon a catch-up Redis
/// failed is tried again.
const PING_EVERY: Duration = Duration::from_secs(5);

/// How often the followed channels' state TTL is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3600);

/// Publications per catch-up read.
const CATCH_UP_BATCH: usize = 1000;

/// Channels per SUBSCRIBE, and per pipeline of renewals.
const BATCH: usize = 500;

/// One followed channel.
struct Channel {
    name: ChannelName,
    ready: watch::Sender<bool>,
    /// Where the hub's subscribers were announced up to; `None` until the
    /// subscription is first confirmed.
    followed: Option<Followed>,
    /// A gap not filled yet: the connection dropped, or Redis failed the
    /// catch-up read.
    behind: bool,
}

/// By topic.
type Channels = HashMap<String, Channel>;

/// Runs until the log is dropped (its command sender with it).
pub(super) async fn run(log: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut channels = Channels::new();
    let mut delay = Duration::ZERO;
    let mut was_down = false;
    loop {
        // After a failure, wait (backing off), taking commands meanwhile.
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => take(&mut channels, cmd),
                    None => return,
                },
            }
        }
        log.stats.channels.store(channels.len() as u64, Relaxed);
        delay = (delay * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let mut feed = match tokio::time::timeout(log.timeout, Feed::connect(&log)).await {
            Ok(Ok(feed)) => feed,
            failed => {
                if !was_down {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", log.timeout),
                    };
                    tracing::warn!(error = %why, "broker: cannot reach Redis; retrying");
                    was_down = true;
                }
                continue;
            }
        };
        // The node's own pub/sub channels first: signals, disconnects.
        let own = [log.node_topic(log.node), log.all_topic()];
        if timed(&log, feed.subscribe_own(&own)).await.is_err()
            || log.load_client_keys().await.is_err()
            || log.live_nodes(true).await.is_err()
        {
            continue;
        }
        // Everything followed is subscribed again; what was followed
        // before is caught up from where it was.
        for ch in channels.values_mut() {
            ch.behind = ch.followed.is_some();
        }
        let topics: Vec<String> = channels.keys().cloned().collect();
        if subscribe(&log, &mut feed, &mut channels, &topics)
            .await
            .is_err()
        {
            continue;
        }
        log.stats.up.store(true, Relaxed);
        if was_down {
            log.stats.reconnects.fetch_add(1, Relaxed);
            tracing::info!(
                channels = channels.len(),
                "broker: Redis is back; caught up"
            );
        }
        delay = Duration::ZERO;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let (mut new, mut gone) = (Vec::new(), Vec::new());
                    let mut next = Some(cmd);
                    // Take what else waits, to subscribe in one round trip.
                    while let Some(cmd) = next.take() {
                        match &cmd {
                            Command::Follow(topic, ..) => new.push(topic.clone()),
                            Command::Unfollow(topic) => gone.push(topic.clone()),
                        }
                        take(&mut channels, cmd);
                        if new.len() + gone.len() < BATCH {
                            next = commands.try_recv().ok();
                        }
                    }
                    gone.retain(|t| !channels.contains_key(t));
                    new.retain(|t| channels.contains_key(t));
                    log.stats.channels.store(channels.len() as u64, Relaxed);
                    if !gone.is_empty() && timed(&log, feed.unsubscribe(&gone)).await.is_err() {
                        break;
                    }
                    if subscribe(&log, &mut feed, &mut channels, &new).await.is_err() {
                        break;
                    }
                }
                event = feed.next() => match event {
                    Event::Message(topic, payload) => {
                        on_message(&log, &mut channels, &topic, &payload).await;
                    }
                    Event::Resubscribed(topic) => {
                        if let Some(ch) = channels.get_mut(&topic) {
                            catch_up(&log, ch).await;
                        }
                    }
                    Event::Dropped(topic) => {
                        if channels.contains_key(&topic)
                            && subscribe(&log, &mut feed, &mut channels, &[topic]).await.is_err()
                        {
                            break;
                        }
                    }
                    Event::Ended => break,
                },
                _ = ping.tick() => {
                    if timed(&log, feed.ping()).await.is_err() {
                        break;
                    }
                    for ch in channels.values_mut().filter(|c| c.behind) {
                        catch_up(&log, ch).await;
                    }
                    if renewed.elapsed() >= RENEW_EVERY {
                        renewed = Instant::now();
                        renew(&log, &channels).await;
                    }
                }
            }
        }
        log.stats.up.store(false, Relaxed);
        tracing::warn!("broker: lost the Redis pub/sub connection; reconnecting");
        was_down = true;
    }
}

/// Applies a command to the table (no Redis call).
fn take(channels: &mut Channels, cmd: Command) {
    match cmd {
        Command::Follow(topic, name, ready) => {
            let ch = Channel {
                name,
                ready,
                followed: None,
                behind: false,
            };
            channels.insert(topic, ch);
        }
        Command::Unfollow(topic) => {
            channels.remove(&topic);
        }
    }
}

async fn timed<T>(
    log: &Inner,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ()> {
    match tokio::time::timeout(log.timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(()),
    }
}

/// Subscribes `topics` (in the table) and says where each stands: a
/// channel new to this node at its current top, one followed before
/// caught up from where it was.
async fn subscribe(
    log: &Inner,
    feed: &mut Feed,
    channels: &mut Channels,
    topics: &[String],
) -> Result<(), ()> {
    for chunk in topics.chunks(BATCH) {
        timed(log, feed.subscribe(chunk)).await?;
        for topic in chunk {
            let Some(ch) = channels.get_mut(topic) else {
                continue;
            };
            if ch.followed.is_some() {
                catch_up(log, ch).await;
            } else {
                // The hub reads the channel after this: announcing from
                // its current top on leaves no hole.
                let top = log.read(&ch.name, StartAt::Now, 0).await.map_err(|_| ())?;
                ch.followed = Some(Followed::new(top.position));
            }
            let _ = ch.ready.send(true);
        }
    }
    Ok(())
}

async fn on_message(log: &Arc<Inner>, channels: &mut Channels, topic: &str, payload: &[u8]) {
    let notice = payload.first() == Some(&b'{');
    let Some(ch) = channels.get_mut(topic) else {
        // The node's own channels carry notices only.
        if notice {
            tell(log, None, payload);
        }
        return; // else: unsubscribed since
    };
    if notice {
        tell(log, Some(&ch.name), payload);
        return;
    }
    let Some(p) = decode_live(ch.name.clone(), payload) else {
        tracing::warn!(
            topic,
            "broker: an announcement that is not pushgate's; ignored"
        );
        return;
    };
    let Some(followed) = ch.followed.as_mut() else {
        return;
    };
    match followed.live(&p) {
        Live::Next => announce(log, &Arc::new(p)),
        Live::Old => {}
        Live::Gap => {
            catch_up(log, ch).await;
            let next = ch.followed.as_mut().map(|f| f.live(&p));
            if next == Some(Live::Next) {
                announce(log, &Arc::new(p));
            }
        }
    }
}

/// A join, leave, signal, disconnect or survey from another node.
fn tell(log: &Arc<Inner>, channel: Option<&ChannelName>, payload: &[u8]) {
    let Some(inbound) = log.inbound.get() else {
        return;
    };
    match cluster::deliver(&**inbound, channel, payload) {
        Ok(Delivered::Done) => {}
        Ok(Delivered::Asked { id, from, question }) => log.answer(id, from, question),
        Ok(Delivered::Answered { id, node, answer }) => log.surveys.answered(id, node, answer),
        Err(why) => tracing::warn!(
            why,
            "broker: a notice from another node that is not pushgate's; ignored"
        ),
    }
}

fn announce(log: &Inner, p: &Arc<Publication>) {
    if let Some(listener) = log.listener.get() {
        listener.appended(p);
    }
}

/// Reads and announces what a followed channel missed; when Redis fails
/// the read, leaves it `behind`, to be tried again.
async fn catch_up(log: &Inner, ch: &mut Channel) {
    let Some(followed) = ch.followed.as_mut() else {
        return;
    };
    ch.behind = true;
    log.stats.catch_ups.fetch_add(1, Relaxed);
    loop {
        let Ok(read) = log.read(&ch.name, followed.start(), CATCH_UP_BATCH).await else {
            return;
        };
        let more = read.truncated;
        match followed.caught_up(read) {
            Ok(missed) => missed.iter().for_each(|p| announce(log, p)),
            Err(position) => {
                log.stats.resets.fetch_add(1, Relaxed);
                if let Some(listener) = log.listener.get() {
                    listener.lost(&ch.name, position);
                }
                break;
            }
        }
        if !more {
            break;
        }
    }
    ch.behind = false;
}

/// Renews the state TTL of every followed channel, so that its
/// subscribers keep their epoch however long it stays idle.
async fn renew(log: &Inner, channels: &Channels) {
    let names: Vec<&ChannelName> = channels.values().map(|c| &c.name).collect();
    for chunk in names.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for name in chunk {
            pipe.pexpire(log.keys(name).0, log.state_ttl(name) as i64)
                .ignore();
        }
        let Ok(Ok((n, mut conn))) = tokio::time::timeout(log.timeout, log.link.conn()).await else {
            return;
        };
        if timed(log, pipe.query_async::<()>(&mut conn)).await.is_err() {
            log.link.failed(n).await;
        }
    }
}
