//! The follower's pub/sub connection, whichever Redis it is: one Redis
//! (or Sentinel's master) through redis-rs's split `PubSub`, or a Redis
//! Cluster through its cluster connection, whose sharded subscriptions
//! (`SSUBSCRIBE`: each channel on its own shard) arrive as RESP3 pushes.
//!
//! A dropped connection — to the one Redis, or to any shard — ends the
//! feed: the follower makes a new one, subscribes everything again and
//! catches everything up. (A cluster's client resubscribes by itself, but
//! not reliably enough to count on.) A confirmation of a subscription the
//! follower did not ask for, or a subscription a shard drops by itself
//! (its slot moved to another shard), is its cue to subscribe that
//! channel again — on the shard that has it now — and catch it up.

use std::collections::HashMap;

use futures_util::future::join_all;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::Inner;

/// What the feed brings.
pub(super) enum Event {
    /// A message on a pub/sub channel.
    Message(String, Vec<u8>),
    /// A cluster subscribed this channel again by itself (a shard's
    /// connection was made again): what was published meanwhile must be
    /// read from history.
    Resubscribed(String),
    /// A shard dropped this subscription by itself (its slot moved to
    /// another shard): subscribe again, then catch up.
    Dropped(String),
    /// The connection is gone: make another, catch everything up.
    Ended,
}

pub(super) enum Feed {
    One {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    Cluster {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Confirmations of our own (un)subscriptions still to come, by
        /// channel: the others are the cluster's doing.
        expected: HashMap<Vec<u8>, (u32, u32)>,
    },
}

impl Feed {
    pub(super) async fn connect(log: &Inner) -> RedisResult<Feed> {
        if log.link.is_cluster() {
            let (conn, pushes) = log.link.cluster_feed().await?;
            return Ok(Feed::Cluster {
                conn,
                pushes,
                expected: HashMap::new(),
            });
        }
        let (sink, stream) = log.link.client().await?.get_async_pubsub().await?.split();
        Ok(Feed::One { sink, stream })
    }

    /// Subscribes the node's own channels (signals, disconnects): plain
    /// pub/sub, which a cluster carries to every shard.
    pub(super) async fn subscribe_own(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Feed::One { sink, .. } => sink.subscribe(topics).await,
            Feed::Cluster { conn, .. } => conn.subscribe(topics).await,
        }
    }

    /// Subscribes channels' pub/sub channels; returns once confirmed.
    pub(super) async fn subscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Feed::One { sink, .. } => sink.subscribe(topics).await,
            Feed::Cluster { conn, expected, .. } => on_shards(conn, expected, topics, true).await,
        }
    }

    pub(super) async fn unsubscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Feed::One { sink, .. } => sink.unsubscribe(topics).await,
            Feed::Cluster { conn, expected, .. } => on_shards(conn, expected, topics, false).await,
        }
    }

    pub(super) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Feed::One { sink, .. } => sink.ping::<Value>().await.map(drop),
            Feed::Cluster { conn, .. } => redis::cmd("PING")
                .query_async::<Value>(conn)
                .await
                .map(drop),
        }
    }

    /// The next event. Cancel-safe: nothing is awaited but the next
    /// message.
    pub(super) async fn next(&mut self) -> Event {
        match self {
            Feed::One { stream, .. } => match stream.next().await {
                Some(msg) => Event::Message(
                    msg.get_channel_name().to_owned(),
                    msg.get_payload_bytes().to_vec(),
                ),
                None => Event::Ended,
            },
            Feed::Cluster {
                pushes, expected, ..
            } => loop {
                let Some(push) = pushes.recv().await else {
                    return Event::Ended;
                };
                // A shard's connection dropped. The client would subscribe
                // again by itself, but not always to everything (measured:
                // after CLIENT KILL on every shard, some channels never
                // came back): a new feed subscribes all, and catches up.
                if push.kind == PushKind::Disconnection {
                    return Event::Ended;
                }
                let mut data = push.data.into_iter();
                let topic = match data.next() {
                    Some(Value::BulkString(t)) => t,
                    _ => continue,
                };
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        let (Ok(topic), Some(Value::BulkString(payload))) =
                            (String::from_utf8(topic), data.next())
                        else {
                            continue;
                        };
                        return Event::Message(topic, payload);
                    }
                    kind @ (PushKind::SSubscribe | PushKind::SUnsubscribe) => {
                        let subscribed = kind == PushKind::SSubscribe;
                        if confirms(expected, &topic, subscribed) {
                            continue;
                        }
                        let Ok(topic) = String::from_utf8(topic) else {
                            continue;
                        };
                        return match subscribed {
                            true => Event::Resubscribed(topic),
                            false => Event::Dropped(topic),
                        };
                    }
                    _ => {}
                }
            },
        }
    }
}

/// `SSUBSCRIBE` (or `SUNSUBSCRIBE`) each topic, noting the confirmation
/// to come as ours; one call per topic, each may be on another shard.
async fn on_shards(
    conn: &ClusterConnection,
    expected: &mut HashMap<Vec<u8>, (u32, u32)>,
    topics: &[String],
    subscribe: bool,
) -> RedisResult<()> {
    for t in topics {
        let (subs, unsubs) = expected.entry(t.as_bytes().to_vec()).or_default();
        *if subscribe { subs } else { unsubs } += 1;
    }
    let calls = topics.iter().map(|t| {
        let mut conn = conn.clone();
        async move {
            match subscribe {
                true => conn.ssubscribe(t).await,
                false => conn.sunsubscribe(t).await,
            }
        }
    });
    join_all(calls).await.into_iter().collect()
}

/// Whether a (un)subscription's confirmation is one of ours, which it
/// then no longer expects.
fn confirms(expected: &mut HashMap<Vec<u8>, (u32, u32)>, topic: &[u8], subscribed: bool) -> bool {
    let Some(pending) = expected.get_mut(topic) else {
        return false;
    };
    let count = if subscribed {
        &mut pending.0
    } else {
        &mut pending.1
    };
    let ours = *count > 0;
    *count = count.saturating_sub(1);
    if *pending == (0, 0) {
        expected.remove(topic);
    }
    ours
}
