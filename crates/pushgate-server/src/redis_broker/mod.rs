//! The Redis broker (`--broker redis://…`): a [`Log`] that several nodes
//! share, so that a client resumes on any node.
//!
//! Per channel, three names that share a hash tag (one Cluster slot):
//! `{P:C}:m`, a hash with the epoch and the newest offset; `{P:C}:s`, a
//! stream of the kept publications, entry id = offset; `{P:C}`, the pub/sub
//! channel appends are announced on (P: the prefix, C: the channel). One
//! Lua script appends (offset, stream, announcement at once: offsets are
//! gapless and ordered across nodes), another reads. A node follows, on
//! one pub/sub connection, the channels its own clients hold
//! ([`follow`]), and fills from the stream whatever a dropped connection
//! made it miss. Commands share one multiplexed connection, which
//! reconnects by itself; while Redis is unreachable every call fails with
//! `unavailable` (a publish answers 503, never acknowledged unstored).

mod cluster;
mod feed;
mod follow;
mod link;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pushgate_core::hub::cluster::Surveys;
use pushgate_core::hub::{Inbound, Responder};
use pushgate_core::log::shared::{self, answer, encode_body, first_wanted};
use pushgate_core::log::{Appended, Catchup, Log, StartAt};
use pushgate_core::publication::{Data, Publication};
use pushgate_core::rtc::ClientKeys;
use pushgate_core::{ChannelName, Epoch, ErrorKind, EventName, MemoryLogConfig, Millis, Position};
use tokio::sync::{mpsc, watch};

use crate::error::Error;

/// How long a channel's state (epoch, newest offset) outlives its last
/// use: at least this, and at least twice its history TTL. Nodes renew it
/// for the channels they follow ([`follow`]), so subscribers of an idle
/// channel keep their epoch.
const STATE_TTL_MS: Millis = 24 * 3600 * 1000;

/// What the broker has been through, for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// The pub/sub connection is up and everything followed subscribed.
    pub up: AtomicBool,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub catch_ups: AtomicU64,
    pub resets: AtomicU64,
    /// Channels followed.
    pub channels: AtomicU64,
}

/// The Redis log of one node.
pub struct RedisLog {
    inner: Arc<Inner>,
    /// The channels this node follows, each with whether its pub/sub
    /// subscription is confirmed; the follower task owns the rest.
    followed: Mutex<HashMap<ChannelName, watch::Receiver<bool>>>,
    /// To the follower task, which ends when this is dropped.
    follower: mpsc::UnboundedSender<follow::Command>,
}

struct Inner {
    link: link::Link,
    prefix: String,
    /// History size and TTL per channel (the namespaces').
    retention: MemoryLogConfig,
    timeout: Duration,
    append: redis::Script,
    read: redis::Script,
    presence_add: redis::Script,
    presence_remove: redis::Script,
    presence_read: redis::Script,
    presence_member: redis::Script,
    /// Lists this node among the live ones, and reads them (surveys).
    nodes: redis::Script,
    listener: OnceLock<Arc<dyn Appended>>,
    /// This node's number: the high bits of its connections' ids.
    node: u64,
    /// Where other nodes' joins, leaves, signals and disconnects go.
    inbound: OnceLock<Arc<dyn Inbound>>,
    /// The cluster's `client_key` secret, read from Redis on connecting.
    client_keys: OnceLock<ClientKeys>,
    /// How long a member stays listed unless its node renews it.
    presence_ttl: Duration,
    stats: Arc<BrokerStats>,
    /// Leaves sent but not answered yet, and who waits for them all.
    leaving: AtomicU64,
    left: tokio::sync::Notify,
    /// What this node answers to other nodes' surveys.
    responder: OnceLock<Arc<dyn Responder>>,
    /// This node's surveys waiting for answers.
    surveys: Surveys,
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` (TLS).
    pub url: String,
    /// Begins every key and pub/sub channel: nodes that share it form one
    /// cluster; another prefix on the same Redis is another.
    pub prefix: String,
    /// How long one Redis call may take before it fails as `unavailable`.
    pub timeout: Duration,
    /// How long a member stays listed in presence unless its node renews
    /// it (every third of this): a crashed node's members drop out after it.
    pub presence_ttl: Duration,
    /// PEM certificates to trust for `rediss://` instead of the system's
    /// roots (a private CA's).
    pub tls_ca: Option<Vec<u8>>,
}

impl RedisLog {
    /// A log over the Redis at `config.url`. Checks the URL, and does not
    /// wait for Redis: until it answers, calls fail as `unavailable` and
    /// the node keeps trying. Must run inside a tokio runtime.
    pub fn open(config: RedisConfig, retention: MemoryLogConfig) -> Result<Self, Error> {
        let link = link::Link::open(&config.url, config.timeout, config.tls_ca).map_err(|e| {
            Error::config(format!(
                "broker: {e}; the URL is redis://[user:password@]host[:port][/db], \
                 rediss://… for TLS, redis+sentinel://host:port[,host:port…]/service[/db] \
                 or redis+cluster://host:port[,host:port…] (rediss+cluster:// for TLS)"
            ))
        })?;
        let (follower, commands) = mpsc::unbounded_channel();
        let with_common =
            |script: &str| redis::Script::new(&format!("{}\n{script}", include_str!("common.lua")));
        let inner = Arc::new(Inner {
            link,
            prefix: config.prefix,
            retention,
            timeout: config.timeout,
            append: with_common(include_str!("append.lua")),
            read: with_common(include_str!("read.lua")),
            presence_add: with_common(include_str!("presence_add.lua")),
            presence_remove: with_common(include_str!("presence_remove.lua")),
            presence_read: with_common(include_str!("presence_read.lua")),
            presence_member: with_common(include_str!("presence_member.lua")),
            nodes: with_common(include_str!("nodes.lua")),
            listener: OnceLock::new(),
            // 16 random bits: two nodes of one cluster share a number once
            // in 65,535 pairs; connection ids stay below 2^56.
            node: u64::from(rand::random::<u16>().max(1)),
            inbound: OnceLock::new(),
            client_keys: OnceLock::new(),
            presence_ttl: config.presence_ttl,
            stats: Arc::default(),
            leaving: AtomicU64::new(0),
            left: tokio::sync::Notify::new(),
            responder: OnceLock::new(),
            surveys: Surveys::default(),
        });
        tokio::spawn(follow::run(inner.clone(), commands));
        Ok(RedisLog {
            inner,
            followed: Mutex::new(HashMap::new()),
            follower,
        })
    }
}

impl RedisLog {
    /// Its counts, for `/metrics`.
    pub fn stats(&self) -> Arc<BrokerStats> {
        self.inner.stats.clone()
    }

    /// Whether this node follows `channel` (its clients hold it).
    fn follows(&self, channel: &ChannelName) -> bool {
        self.followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(channel)
    }
}

impl Inner {
    /// The pub/sub channel of `channel`; its keys add `:m` and `:s`.
    fn topic(&self, channel: &ChannelName) -> String {
        format!("{{{}:{}}}", self.prefix, channel.as_str())
    }

    fn keys(&self, channel: &ChannelName) -> (String, String) {
        let topic = self.topic(channel);
        (format!("{topic}:m"), format!("{topic}:s"))
    }

    /// Runs `script` within the timeout; any failure is `unavailable`.
    async fn call<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, pushgate_core::Error> {
        let (n, mut conn) = self.connected(what).await?;
        let result = self.timed(what, invocation.invoke_async(&mut conn)).await;
        self.check(n, result).await
    }

    /// Runs `cmd` within the timeout; any failure is `unavailable`.
    async fn command<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, pushgate_core::Error> {
        let (n, mut conn) = self.connected(what).await?;
        let result = self.timed(what, cmd.query_async(&mut conn)).await;
        self.check(n, result).await
    }

    async fn connected(&self, what: &str) -> Result<(u64, link::Conn), pushgate_core::Error> {
        self.timed(what, self.link.conn()).await
    }

    /// Drops the connection after a failure, so the next call makes
    /// another (after a failover, to the new master).
    async fn check<T>(
        &self,
        n: u64,
        result: Result<T, pushgate_core::Error>,
    ) -> Result<T, pushgate_core::Error> {
        if result.is_err() {
            self.link.failed(n).await;
        }
        result
    }

    async fn timed<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, pushgate_core::Error> {
        let failed = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => unavailable(what, e.to_string()),
            Err(_) => unavailable(what, format!("no answer within {:?}", self.timeout)),
        };
        self.stats.errors.fetch_add(1, Relaxed);
        Err(failed)
    }

    /// The cluster's `client_key` secret: made by the first node that
    /// asks, read by the others.
    async fn load_client_keys(&self) -> Result<(), pushgate_core::Error> {
        if self.client_keys.get().is_some() {
            return Ok(());
        }
        let mine: [u8; 32] = rand::random();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.secret_key())
            .arg(&mine[..])
            .arg("NX")
            .arg("GET");
        let theirs: Option<Vec<u8>> = self.command("read the cluster's secret", &cmd).await?;
        let secret = match theirs {
            None => mine,
            Some(bytes) => bytes
                .try_into()
                .map_err(|_| unavailable("read the cluster's secret", "it is not 32 bytes"))?,
        };
        let _ = self.client_keys.set(ClientKeys::from_secret(secret));
        Ok(())
    }

    /// How a script announces on a channel's pub/sub channel: sharded in
    /// a cluster, so that only the channel's shard carries it.
    fn publish_command(&self) -> &'static str {
        if self.link.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn state_ttl(&self, channel: &ChannelName) -> Millis {
        STATE_TTL_MS.max(2 * self.retention.retention(channel).1)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, pushgate_core::Error> {
        let (meta, stream) = self.keys(channel);
        let (size, ttl) = self.retention.retention(channel);
        let first = first_wanted(&start).map_or(String::new(), |o| o.to_string());
        // One beyond the limit says whether more follow; history bounds it.
        let count = limit.min(size).saturating_add(1);
        let mut invocation = self.read.key(&meta);
        invocation
            .key(&stream)
            .arg(Epoch::random().as_str())
            .arg(first)
            .arg(count)
            .arg(ttl)
            .arg(self.state_ttl(channel));
        let reply: Vec<Vec<u8>> = self.call("read", invocation).await?;
        let bad = || {
            unavailable(
                "read",
                "Redis answered with something that is not pushgate's",
            )
        };
        let mut fields = reply.into_iter();
        let epoch = fields
            .next()
            .and_then(|e| Epoch::new(std::str::from_utf8(&e).ok()?).ok())
            .ok_or_else(bad)?;
        let top = fields.next().and_then(|t| number(&t)).ok_or_else(bad)?;
        let mut fetched = Vec::with_capacity(fields.len() / 3);
        while let (Some(offset), Some(time), Some(body)) =
            (fields.next(), fields.next(), fields.next())
        {
            let p = number(&offset)
                .zip(number(&time))
                .and_then(|(offset, time)| {
                    shared::decode_body(channel.clone(), epoch.clone(), offset, time, &body)
                });
            fetched.push(Arc::new(p.ok_or_else(bad)?));
        }
        Ok(answer(
            channel.clone(),
            Position::new(epoch, top),
            &start,
            fetched,
            limit,
        ))
    }
}

/// `url` with its password, if any, replaced by `***`: for logs.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn unavailable(what: &str, why: impl std::fmt::Display) -> pushgate_core::Error {
    pushgate_core::Error::new(
        ErrorKind::Unavailable,
        format!("the broker (Redis) is unavailable: {what} failed: {why}; try again"),
    )
}

#[async_trait]
impl Log for RedisLog {
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, pushgate_core::Error> {
        let inner = &self.inner;
        let (meta, stream) = inner.keys(&channel);
        let (size, ttl) = inner.retention.retention(&channel);
        let body = encode_body(event.as_ref(), &data);
        let mut invocation = inner.append.key(&meta);
        invocation
            .key(&stream)
            .key(inner.topic(&channel))
            .arg(Epoch::random().as_str())
            .arg(&body)
            .arg(size)
            .arg(ttl)
            .arg(inner.state_ttl(&channel))
            .arg(inner.publish_command());
        let (offset, epoch, time): (u64, String, u64) = inner.call("publish", invocation).await?;
        let epoch = Epoch::new(&epoch)
            .map_err(|_| unavailable("publish", "Redis answered with an invalid epoch"))?;
        Ok(Arc::new(Publication::new(
            channel, epoch, offset, event, data, time,
        )))
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, pushgate_core::Error> {
        self.inner.read(channel, start, limit).await
    }

    fn watch(&self, listener: Arc<dyn Appended>) {
        let _ = self.inner.listener.set(listener);
    }

    async fn follow(&self, channel: &ChannelName) -> Result<(), pushgate_core::Error> {
        let inner = &self.inner;
        let mut ready = {
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            followed
                .entry(channel.clone())
                .or_insert_with(|| {
                    let (tx, rx) = watch::channel(false);
                    let topic = inner.topic(channel);
                    let _ = self
                        .follower
                        .send(follow::Command::Follow(topic, channel.clone(), tx));
                    rx
                })
                .clone()
        };
        let confirmed = matches!(
            tokio::time::timeout(inner.timeout, ready.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        match confirmed {
            true => Ok(()),
            false => Err(unavailable(
                "subscribe",
                format!(
                    "Redis did not confirm the subscription within {:?}",
                    inner.timeout
                ),
            )),
        }
    }

    fn unfollow(&self, channel: &ChannelName) {
        let removed = self
            .followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(channel);
        if removed.is_some() {
            let topic = self.inner.topic(channel);
            let _ = self.follower.send(follow::Command::Unfollow(topic));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn logs_show_no_password() {
        assert_eq!(without_password("redis://h:6379/2"), "redis://h:6379/2");
        assert_eq!(
            without_password("redis://:s3cr@t@h:6379"),
            "redis://:***@h:6379"
        );
        assert_eq!(without_password("rediss://me:pw@h"), "rediss://me:***@h");
    }
}
