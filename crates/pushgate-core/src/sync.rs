//! The locks that fan-out, connections and the sweeper share: std's, or
//! loom's in the model checks (`hub::loom_tests`, run with `--cfg loom`),
//! so that loom explores every interleaving of them.
//!
//! `Arc` and `OnceLock` stay std's. loom's `Arc` cannot become an `Arc<dyn _>`
//! (unsized coercion is unstable), and reference counts are not what the
//! models check; the memory log's one `OnceLock`, its listener, is set
//! before any thread races.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Shards of the hub's and the memory log's channel maps, so that work on
/// different channels rarely contends. One in the model checks: every lock
/// is a step loom explores, and a sweep takes them all.
pub(crate) const SHARDS: usize = if cfg!(all(test, loom)) { 1 } else { 64 };

/// The shard of a channel whose name hashes to `hash`.
#[inline]
#[cfg_attr(all(test, loom), allow(clippy::modulo_one))]
pub(crate) fn shard(hash: u64) -> usize {
    hash as usize % SHARDS
}

/// Locks `m`, ignoring poison: every critical section leaves its state
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
