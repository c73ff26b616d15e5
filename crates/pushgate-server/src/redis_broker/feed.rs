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
            Feed::Cluster { conn, expected, .. } => {
                for t in topics {
                    expected.entry(t.as_bytes().to_vec()).or_default().0 += 1;
                }
                // One call per channel: each may be on another shard.
                let calls = topics.iter().map(|t| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(t).await }
                });
                join_all(calls).await.into_iter().collect()
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        match self {
            Feed::One { sink, .. } => sink.unsubscribe(topics).await,
            Feed::Cluster { conn, expected, .. } => {
                for t in topics {
                    expected.entry(t.as_bytes().to_vec()).or_default().1 += 1;
                }
                let calls = topics.iter().map(|t| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(t).await }
                });
                join_all(calls).await.into_iter().collect()
            }
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
                    PushKind::SSubscribe => {
                        let ours = expected.get_mut(&topic).is_some_and(|e| {
                            let was = e.0 > 0;
                            e.0 = e.0.saturating_sub(1);
                            was
                        });
                        forget_settled(expected, &topic);
                        if !ours {
                            if let Ok(topic) = String::from_utf8(topic) {
                                return Event::Resubscribed(topic);
                            }
                        }
                    }
                    PushKind::SUnsubscribe => {
                        let ours = expected.get_mut(&topic).is_some_and(|e| {
                            let was = e.1 > 0;
                            e.1 = e.1.saturating_sub(1);
                            was
                        });
                        forget_settled(expected, &topic);
                        if !ours {
                            if let Ok(topic) = String::from_utf8(topic) {
                                return Event::Dropped(topic);
                            }
                        }
                    }
                    _ => {}
                }
            },
        }
    }
}

fn forget_settled(expected: &mut HashMap<Vec<u8>, (u32, u32)>, topic: &[u8]) {
    if expected.get(topic) == Some(&(0, 0)) {
        expected.remove(topic);
    }
}
