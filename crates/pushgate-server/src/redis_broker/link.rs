//! How a node reaches Redis: straight (`redis://`, `rediss://`), through
//! Sentinel (`redis+sentinel://`), which names the master of a service —
//! and, after a failover, the new one — or as a Redis Cluster
//! (`redis+cluster://`), whose client routes each channel's keys to their
//! shard. Commands go over one multiplexed connection (one per shard for a
//! cluster), dropped at its first failure and made again on the next call:
//! through Sentinel, to whichever master it names then. A demoted master
//! refuses writes (`READONLY`), which is such a failure.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::{mpsc, Mutex};

/// Where the Redis is.
enum Source {
    Direct(redis::Client),
    Sentinel(Mutex<SentinelClient>),
    /// A Redis Cluster: its client, and its seeds, to make the follower's
    /// own client (with a push receiver) from.
    Cluster(ClusterClient, Seeds),
}

/// A command connection: to one Redis, or to a cluster's shards.
#[derive(Clone)]
pub(super) enum Conn {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The node's way to Redis, and its command connection.
pub(super) struct Link {
    source: Source,
    /// The connection, and how many were made before it (so that a
    /// failure on an old one does not drop a new one).
    conn: Mutex<(u64, Option<Conn>)>,
    timeout: Duration,
}

/// The scheme of a Sentinel URL.
const SENTINEL: &str = "redis+sentinel://";
/// The scheme of a Redis Cluster URL, and of one over TLS.
const CLUSTER: &str = "redis+cluster://";
const CLUSTER_TLS: &str = "rediss+cluster://";

impl Link {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…`, or
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`
    /// (the password is the master's).
    /// `ca`: PEM certificates to trust for TLS instead of the system's
    /// roots (a private CA's).
    pub(super) fn open(url: &str, timeout: Duration, ca: Option<Vec<u8>>) -> Result<Link, String> {
        let source = if let Some(rest) = url.strip_prefix(SENTINEL) {
            Source::Sentinel(Mutex::new(sentinel(rest)?))
        } else if url.starts_with(CLUSTER) || url.starts_with(CLUSTER_TLS) {
            let seeds = Seeds::parse(url, ca)?;
            Source::Cluster(cluster(&seeds, timeout, None)?, seeds)
        } else {
            let client = match ca {
                Some(ca) => redis::Client::build_with_tls(url, certificates(ca)),
                None => redis::Client::open(url),
            };
            Source::Direct(client.map_err(|e| e.to_string())?)
        };
        Ok(Link {
            source,
            conn: Mutex::new((0, None)),
            timeout,
        })
    }

    /// Whether it is a Redis Cluster: announcements are then sharded
    /// (`SPUBLISH`, `SSUBSCRIBE`).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(..))
    }

    /// A client of the Redis to use now: through Sentinel, its master.
    /// Not for a cluster (see [`Link::cluster_feed`]).
    pub(super) async fn client(&self) -> RedisResult<redis::Client> {
        match &self.source {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Source::Cluster(..) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no single client",
            ))),
        }
    }

    /// A cluster connection whose pub/sub messages, and the confirmations
    /// of its (re)subscriptions, arrive on the receiver (RESP3 pushes).
    pub(super) async fn cluster_feed(
        &self,
    ) -> RedisResult<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let Source::Cluster(_, seeds) = &self.source else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a cluster",
            )));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let client = cluster(seeds, self.timeout, Some(tx)).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "cluster", e))
        })?;
        Ok((client.get_async_connection().await?, rx))
    }

    /// The command connection (made now if there is none), and its number
    /// for [`Link::failed`].
    pub(super) async fn conn(&self) -> RedisResult<(u64, Conn)> {
        let mut slot = self.conn.lock().await;
        if let (n, Some(conn)) = &*slot {
            return Ok((*n, conn.clone()));
        }
        let conn = match &self.source {
            Source::Cluster(client, _) => Conn::Cluster(client.get_async_connection().await?),
            _ => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let client = self.client().await?;
                Conn::One(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        };
        slot.0 += 1;
        slot.1 = Some(conn.clone());
        Ok((slot.0, conn))
    }

    /// Connection `n` failed a call: the next call makes a new one.
    pub(super) async fn failed(&self, n: u64) {
        let mut slot = self.conn.lock().await;
        if slot.0 == n {
            slot.1 = None;
        }
    }
}

fn certificates(ca: Vec<u8>) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca),
    }
}

/// A cluster's seed nodes, as URLs, and the CA to trust over TLS.
pub(super) struct Seeds {
    urls: Vec<String>,
    ca: Option<Vec<u8>>,
}

impl Seeds {
    /// `redis+cluster://[user:password@]host:port[,host:port…]`, or
    /// `rediss+cluster://…` over TLS.
    fn parse(url: &str, ca: Option<Vec<u8>>) -> Result<Seeds, String> {
        let form = "write redis+cluster://[user:password@]host:port[,host:port…] \
                    (rediss+cluster:// over TLS)";
        let (scheme, rest) = match url.strip_prefix(CLUSTER_TLS) {
            Some(rest) => ("rediss", rest),
            None => ("redis", url.strip_prefix(CLUSTER).unwrap_or(url)),
        };
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() || hosts.contains('/') {
            return Err(format!("seed nodes and nothing else: {form}"));
        }
        let auth = userinfo.map_or(String::new(), |u| format!("{u}@"));
        let urls = hosts
            .split(',')
            .map(|h| format!("{scheme}://{auth}{h}"))
            .collect();
        Ok(Seeds { urls, ca })
    }
}

/// A cluster client, which sends pushes to `pushes` (RESP3) when there
/// is one.
fn cluster(
    seeds: &Seeds,
    timeout: Duration,
    pushes: Option<mpsc::UnboundedSender<PushInfo>>,
) -> Result<ClusterClient, String> {
    let mut builder = ClusterClientBuilder::new(seeds.urls.clone())
        .connection_timeout(timeout)
        .response_timeout(timeout);
    if let Some(ca) = &seeds.ca {
        builder = builder.certs(certificates(ca.clone()));
    }
    if let Some(tx) = pushes {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    builder.build().map_err(|e| e.to_string())
}

/// `[user:password@]host:port[,host:port…]/service[/db]`.
fn sentinel(rest: &str) -> Result<SentinelClient, String> {
    let form = "write redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]";
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("no service name: {form}"))?;
    let (service, db) = match path.split_once('/') {
        Some((s, db)) => (
            s,
            db.parse::<i64>()
                .map_err(|_| format!("{db:?} is no database number: {form}"))?,
        ),
        None => (path, 0),
    };
    if service.is_empty() || hosts.is_empty() {
        return Err(format!(
            "a sentinel address and a service name are needed: {form}"
        ));
    }
    let sentinels: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
    let mut info = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(userinfo) = userinfo {
        let (user, password) = userinfo.split_once(':').unwrap_or(("", userinfo));
        if !user.is_empty() {
            info = info.set_username(user);
        }
        if !password.is_empty() {
            info = info.set_password(password);
        }
    }
    SentinelClient::build(
        sentinels,
        service,
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(info)),
        SentinelServerType::Master,
    )
    .map_err(|e| format!("{e}: {form}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_with_the_form_in_the_error() {
        let t = Duration::from_secs(1);
        let open = |url: &str| Link::open(url, t, None);
        assert!(open("redis://127.0.0.1:6379/2").is_ok());
        assert!(open("redis+sentinel://a:26379,b:26380/mymaster").is_ok());
        assert!(open("redis+sentinel://:pw@a:26379/mymaster/3").is_ok());
        assert!(open("redis+cluster://a:7000,b:7001").is_ok());
        assert!(open("rediss+cluster://u:p@a:7000").is_ok());
        let e = open("redis+cluster://a:7000/2").err().unwrap();
        assert!(e.contains("redis+cluster://"), "{e}");
        for bad in [
            "redis+sentinel://a:26379",
            "redis+sentinel://a:26379/",
            "redis+sentinel:///svc",
            "redis+sentinel://a:26379/svc/x",
        ] {
            let e = open(bad).err().unwrap_or_else(|| panic!("{bad} opened"));
            assert!(e.contains("redis+sentinel://"), "{bad}: {e}");
        }
    }
}
