//! The live connections, so that a shutdown can reach every one of them.
//!
//! Each long-lived connection (WebSocket, event stream, waiting long-poll)
//! registers its outbox for as long as it lives; shutting down marks every
//! outbox, which wakes its connection through the path it already polls.
//! Weak references: the registry never keeps a connection alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pushgate_core::Outbox;

const SHARDS: usize = 16;

#[derive(Default)]
pub struct Registry {
    shards: [Mutex<HashMap<u64, Weak<Outbox>>>; SHARDS],
    next: AtomicU64,
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
    pub fn register(self: &Arc<Self>, outbox: &Arc<Outbox>) -> Registration {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(key).insert(key, Arc::downgrade(outbox));
        // A connection that arrives during shutdown ends at once.
        if self.shutting_down.load(Ordering::SeqCst) {
            outbox.shut_down();
        }
        Registration {
            registry: self.clone(),
            key,
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Outbox>>> {
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

    /// Whether the shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
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
                .cloned()
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

    #[test]
    fn registers_shuts_down_and_forgets() {
        let reg = Arc::new(Registry::default());
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        let a = Outbox::new(4);
        let r = reg.register(&a);
        assert_eq!(reg.len(), 1);
        assert!(a.poll_drain(&mut cx, &mut out).is_pending());
        reg.shut_down_all();
        assert_eq!(
            a.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::ShutDown)
        );
        let late = Outbox::new(4);
        let _r2 = reg.register(&late);
        assert_eq!(
            late.poll_drain(&mut cx, &mut out),
            Poll::Ready(Drained::ShutDown)
        );
        drop(r);
        assert_eq!(reg.len(), 1);
    }
}
