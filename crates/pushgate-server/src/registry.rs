//! The live connections, so that a shutdown can reach every one of them,
//! and `GET /api/connections` can say what each is.
//!
//! Each long-lived connection (WebSocket, event stream, waiting long-poll)
//! registers its outbox for as long as it lives, under its connection id,
//! with its [`Meta`]; shutting down marks every outbox, which wakes its
//! connection through the path it already polls. Weak references: the
//! registry never keeps a connection alive. A short poll holds no
//! connection and is not registered.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pushgate_core::hub::SubscriberId;
use pushgate_core::Outbox;

use crate::metrics::Transport;

const SHARDS: usize = 16;

/// What `GET /api/connections` says of a connection. Kept compact (24
/// bytes: the peer as an IPv6 or IPv4-mapped address and a port, the time
/// in whole seconds) since every idle connection holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    ip: Ipv6Addr,
    port: u16,
    transport: Transport,
    /// When it opened, in seconds since the Unix epoch.
    since: u32,
}

impl Meta {
    /// A connection of `transport` from `peer`, opened now.
    pub fn now(transport: Transport, peer: SocketAddr) -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ip = match peer {
            SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
            SocketAddr::V6(a) => *a.ip(),
        };
        Meta {
            ip,
            port: peer.port(),
            transport,
            since: u32::try_from(since).unwrap_or(u32::MAX),
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The peer's address (an IPv4 one as it connected).
    pub fn peer(&self) -> SocketAddr {
        match self.ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, self.port)),
            None => SocketAddr::from((self.ip, self.port)),
        }
    }

    /// When it opened, in seconds since the Unix epoch.
    pub fn since(&self) -> u64 {
        u64::from(self.since)
    }
}

/// Live connections by id.
type Shard = HashMap<SubscriberId, (Weak<Outbox>, Meta)>;

#[derive(Default)]
pub struct Registry {
    shards: [Mutex<Shard>; SHARDS],
    shutting_down: AtomicBool,
    /// Woken when the shutdown begins (connections that hold no outbox of
    /// their own, such as an HTTP/2 connection, wait on it).
    shutdown: tokio::sync::Notify,
}

/// Keeps a connection registered until dropped.
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
}

impl Registry {
    /// Registers connection `id` (unique among this node's) until the
    /// returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: SubscriberId,
        outbox: &Arc<Outbox>,
        meta: Meta,
    ) -> Registration {
        let key = id;
        self.shard(key).insert(key, (Arc::downgrade(outbox), meta));
        // A connection that arrives during shutdown ends at once.
        if self.shutting_down.load(Ordering::SeqCst) {
            outbox.shut_down();
        }
        Registration {
            registry: self.clone(),
            key,
        }
    }

    /// What connection `id` is, while it lives.
    pub fn get(&self, id: SubscriberId) -> Option<Meta> {
        let shard = self.shard(id);
        let (outbox, meta) = shard.get(&id)?;
        (outbox.strong_count() > 0).then_some(*meta)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Ready once the shutdown has begun.
    pub async fn shutting_down(&self) {
        let notified = self.shutdown.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.shutting_down.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    /// Tells every registered connection to end.
    pub fn shut_down_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.notify_waiters();
        for shard in &self.shards {
            let outboxes: Vec<Weak<Outbox>> = shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|(w, _)| w.clone())
                .collect();
            for outbox in outboxes.iter().filter_map(Weak::upgrade) {
                outbox.shut_down();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.shard(self.key).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use pushgate_core::hub::Drained;
    use std::task::{Context, Poll, Waker};

    fn meta() -> Meta {
        Meta::now(Transport::Ws, "127.0.0.1:80".parse().unwrap())
    }

    #[test]
    fn meta_keeps_the_peer_and_transport_in_few_bytes() {
        for peer in ["192.0.2.7:5000", "[2001:db8::1]:443", "[::1]:9"] {
            let m = Meta::now(Transport::Sse, peer.parse().unwrap());
            assert_eq!(m.peer().to_string(), peer);
            assert_eq!(m.transport(), Transport::Sse);
        }
        assert!(meta().since() > 1_700_000_000);
        assert_eq!(std::mem::size_of::<Meta>(), 24);
    }

    #[test]
    fn registers_shuts_down_and_forgets() {
        let reg = Arc::new(Registry::default());
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        let a = Outbox::new(4);
        let r = reg.register(1, &a, meta());
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(1).map(|m| m.transport()), Some(Transport::Ws));
        assert_eq!(reg.get(2), None);
        assert!(a.poll_drain(&mut cx, &mut out).is_pending());
        reg.shut_down_all();
        assert_eq!(
            a.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::ShutDown)
        );
        let late = Outbox::new(4);
        let _r2 = reg.register(2, &late, meta());
        assert_eq!(
            late.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::ShutDown)
        );
        drop(r);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(1), None, "forgotten when its connection ends");
    }
}
