//! How a node reaches Redis: straight (`redis://`, `rediss://`), or
//! through Sentinel (`redis+sentinel://`), which names the master of a
//! service — and, after a failover, the new one. Commands go over one
//! multiplexed connection, dropped at its first failure and made again on
//! the next call: through Sentinel, to whichever master it names then. A
//! demoted master refuses writes (`READONLY`), which is such a failure.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::Mutex;

/// Where the Redis is.
enum Source {
    Direct(redis::Client),
    Sentinel(Mutex<SentinelClient>),
}

/// The node's way to Redis, and its command connection.
pub(super) struct Link {
    source: Source,
    /// The connection, and how many were made before it (so that a
    /// failure on an old one does not drop a new one).
    conn: Mutex<(u64, Option<MultiplexedConnection>)>,
    timeout: Duration,
}

/// The scheme of a Sentinel URL.
const SENTINEL: &str = "redis+sentinel://";

impl Link {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…`, or
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`
    /// (the password is the master's).
    pub(super) fn open(url: &str, timeout: Duration) -> Result<Link, String> {
        let source = match url.strip_prefix(SENTINEL) {
            Some(rest) => Source::Sentinel(Mutex::new(sentinel(rest)?)),
            None => Source::Direct(redis::Client::open(url).map_err(|e| e.to_string())?),
        };
        Ok(Link {
            source,
            conn: Mutex::new((0, None)),
            timeout,
        })
    }

    /// A client of the Redis to use now: through Sentinel, its master.
    pub(super) async fn client(&self) -> RedisResult<redis::Client> {
        match &self.source {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }

    /// The command connection (made now if there is none), and its number
    /// for [`Link::failed`].
    pub(super) async fn conn(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut slot = self.conn.lock().await;
        if let (n, Some(conn)) = &*slot {
            return Ok((*n, conn.clone()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client()
            .await?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
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
        assert!(Link::open("redis://127.0.0.1:6379/2", t).is_ok());
        assert!(Link::open("redis+sentinel://a:26379,b:26380/mymaster", t).is_ok());
        assert!(Link::open("redis+sentinel://:pw@a:26379/mymaster/3", t).is_ok());
        for bad in [
            "redis+sentinel://a:26379",
            "redis+sentinel://a:26379/",
            "redis+sentinel:///svc",
            "redis+sentinel://a:26379/svc/x",
        ] {
            let e = Link::open(bad, t)
                .err()
                .unwrap_or_else(|| panic!("{bad} opened"));
            assert!(e.contains("redis+sentinel://"), "{bad}: {e}");
        }
    }
}
