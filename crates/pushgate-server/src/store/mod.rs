//! The durable log behind `--data-dir`: history, offsets and epochs kept
//! on disk in segment files of `pushgate_core::log::record` records.
//! `disk_log` is the `Log`; `segments` is the file layer.

use std::sync::atomic::{AtomicBool, AtomicU64};

pub mod disk_log;
pub mod segments;

/// What the store's committer has done, for `/metrics`: records over
/// syncs is what group commit shares.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub records: AtomicU64,
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    /// Segment files on disk.
    pub segments: AtomicU64,
    /// A write or sync failed: appends are refused until a restart.
    pub failed: AtomicBool,
}

/// The `sync` setting: when appends reach the disk (see [`disk_log::SyncMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Before each publish is acknowledged (group commit).
    Always,
    /// Every `sync_interval`.
    Interval,
    /// When the kernel writes back.
    Never,
}

impl Sync {
    /// Its name in the settings.
    pub fn name(self) -> &'static str {
        match self {
            Sync::Always => "always",
            Sync::Interval => "interval",
            Sync::Never => "never",
        }
    }
}

/// A fresh directory under the system's temporary one, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(pub std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pushgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
