//! The durable log: [`MemoryLog`]'s rings serve every read, and every
//! append is also a record in the segment files, written by one committer
//! thread that groups whatever is waiting into one write and one sync.
//!
//! With `SyncMode::Always` an append gets its offset at once (under the
//! channel's lock, which also queues its record, so records are in offset
//! order) but becomes readable, is announced to subscribers, and is
//! acknowledged only after the sync that made it durable: no client ever
//! sees a message a crash could take back. `Interval` and `Never` make it
//! readable at once and let the committer sync every interval, or leave it
//! to the kernel.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pushgate_core::log::record::{Record, MAX_WRITE};
use pushgate_core::log::{Appended, Catchup, Log, StartAt};
use pushgate_core::{
    ChannelName, Data, Error as CoreError, ErrorKind, EventName, MemoryLog, MemoryLogConfig,
    Publication,
};

use super::segments::{Recovered, Segments};
use crate::error::Error;

/// When appends are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Before each is acknowledged (group commit: concurrent ones share a sync).
    Always,
    /// At most this long after each; a crash loses what came since the last sync.
    Interval(Duration),
    /// When the kernel writes it back (about 30 s on Linux).
    Never,
}

struct Job {
    record: Vec<u8>,
    /// `Always`: made readable by the committer once durable; then `done`.
    reserved: Option<Arc<Publication>>,
    done: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// See the module docs.
pub struct DiskLog {
    /// Held for the log's life: one server per data directory.
    _lock: std::fs::File,
    memory: Arc<MemoryLog>,
    mode: SyncMode,
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    failed: Arc<AtomicBool>,
    committer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DiskLog {
    /// Opens the store in `dir` and puts back what it holds. `segment_size`:
    /// see [`super::segments::SEGMENT_SIZE`].
    pub fn open(
        dir: &Path,
        config: MemoryLogConfig,
        mode: SyncMode,
        segment_size: u64,
    ) -> Result<(DiskLog, Recovered), Error> {
        let lock = lock(dir)?;
        let (segments, mut recovered) = Segments::open(dir, segment_size)?;
        let memory = Arc::new(MemoryLog::new(config));
        for record in std::mem::take(&mut recovered.records) {
            memory.restore(record);
        }
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let committer = {
            let memory = memory.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("pushgate-store".into())
                .spawn(move || commit_loop(rx, segments, memory, mode, failed))
                .map_err(Error::io)?
        };
        Ok((
            DiskLog {
                _lock: lock,
                memory,
                mode,
                jobs: std::sync::Mutex::new(Some(tx)),
                failed,
                committer: std::sync::Mutex::new(Some(committer)),
            },
            recovered,
        ))
    }

    /// Writes and syncs everything queued, then stops the committer.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(c) = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = c.join();
        }
    }

    fn unavailable() -> CoreError {
        CoreError::new(
            ErrorKind::Unavailable,
            "the history store cannot write to its data directory (see the server's log); \
             nothing more is acknowledged until it is restarted",
        )
    }
}

/// Takes `dir`'s lock file: two servers writing one directory would
/// interleave their records.
fn lock(dir: &Path) -> Result<std::fs::File, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::config(format!("data_dir: cannot create {}: {e}", dir.display())))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::config(format!("data_dir: cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::config(format!(
            "data_dir: {} is in use by another pushgate: one server per data directory",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::config(format!(
            "data_dir: cannot lock {}: {e}",
            path.display()
        ))),
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(
    jobs: mpsc::Receiver<Job>,
    mut segments: Segments,
    memory: Arc<MemoryLog>,
    mode: SyncMode,
    failed: Arc<AtomicBool>,
) {
    let mut buf = Vec::new();
    let mut group: Vec<Job> = Vec::new();
    let mut next: Option<Job> = None;
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => {
                let wait = match (mode, unsynced_since) {
                    (SyncMode::Interval(every), Some(since)) => {
                        every.saturating_sub(since.elapsed())
                    }
                    _ => Duration::from_secs(3600),
                };
                match jobs.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if unsynced_since.take().is_some() && segments.sync().is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        buf.clear();
        buf.extend_from_slice(&first.record);
        group.push(first);
        while let Ok(job) = jobs.try_recv() {
            if buf.len() + job.record.len() > MAX_WRITE {
                next = Some(job);
                break;
            }
            buf.extend_from_slice(&job.record);
            group.push(job);
        }
        let sync = match mode {
            SyncMode::Always => true,
            SyncMode::Interval(every) => {
                let since = *unsynced_since.get_or_insert_with(Instant::now);
                since.elapsed() >= every
            }
            SyncMode::Never => false,
        };
        let ok = !failed.load(Ordering::SeqCst) && segments.append(&buf, sync).is_ok();
        if !ok {
            if !failed.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    "the history store could not write or sync its data directory: \
                     appends are refused from now on (restart once the disk is fixed)"
                );
            }
        } else if sync {
            unsynced_since = None;
        }
        for job in group.drain(..) {
            if ok {
                if let Some(p) = &job.reserved {
                    memory.commit(p);
                }
            }
            if let Some(done) = job.done {
                let _ = done.send(ok);
            }
        }
    }
    let _ = segments.sync();
}

#[async_trait]
impl Log for DiskLog {
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, CoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(Self::unavailable());
        }
        let Some(jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(Self::unavailable());
        };
        let stored = data.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let enqueue = |p: &Arc<Publication>| {
            let mut record = Vec::with_capacity(64 + p.json().len());
            Record {
                time: p.time,
                channel: p.channel.clone(),
                epoch: p.epoch.clone(),
                offset: p.offset,
                event: p.event.clone(),
                data: stored,
            }
            .encode(&mut record);
            let always = self.mode == SyncMode::Always;
            let _ = jobs.send(Job {
                record,
                reserved: always.then(|| p.clone()),
                done: always.then_some(tx),
            });
        };
        match self.mode {
            SyncMode::Always => {
                let p = self.memory.reserve(channel, event, data, enqueue);
                match rx.await {
                    Ok(true) => Ok(p),
                    _ => Err(Self::unavailable()),
                }
            }
            // Readable at once: offset, record and announcement under one
            // lock, so concurrent appends to a channel stay in order.
            SyncMode::Interval(_) | SyncMode::Never => {
                Ok(self.memory.append_with(channel, event, data, enqueue))
            }
        }
    }

    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, CoreError> {
        self.memory.read(channel, start, limit).await
    }

    fn watch(&self, listener: Arc<dyn Appended>) {
        self.memory.watch(listener);
    }

    async fn sweep(&self, in_use: &(dyn for<'c> Fn(&'c ChannelName) -> bool + Sync)) {
        self.memory.sweep(in_use).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("pushgate-disklog-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_log_conformance_suite_in_every_sync_mode() {
        let dir = TempDir::new("conformance");
        let n = std::sync::atomic::AtomicUsize::new(0);
        for mode in [
            SyncMode::Always,
            SyncMode::Interval(Duration::from_millis(5)),
            SyncMode::Never,
        ] {
            pushgate_core::log::conformance::check(|history_size| {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let config = MemoryLogConfig {
                    history_size,
                    ..Default::default()
                };
                DiskLog::open(&dir.0.join(i.to_string()), config, mode, 1 << 20)
                    .unwrap()
                    .0
            })
            .await;
        }
    }

    #[test]
    fn one_server_per_data_directory() {
        let dir = TempDir::new("lock");
        let open = || {
            DiskLog::open(
                &dir.0,
                MemoryLogConfig::default(),
                SyncMode::Always,
                1 << 20,
            )
        };
        let first = open().unwrap();
        let e = open().err().unwrap().to_string();
        assert!(e.contains("is in use by another pushgate"), "{e}");
        drop(first);
        assert!(open().is_ok(), "free again once the first is gone");
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_there_after_a_reopen_in_the_same_epoch() {
        let dir = TempDir::new("reopen");
        let open = || {
            DiskLog::open(
                &dir.0,
                MemoryLogConfig::default(),
                SyncMode::Always,
                1 << 20,
            )
            .unwrap()
            .0
        };
        let ch = ChannelName::new("news").unwrap();
        let log = open();
        let mut last = None;
        for n in 1..=5 {
            last = Some(
                log.append(ch.clone(), None, Data::json(&n.to_string()).unwrap())
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        drop(log);
        let log = open();
        let after2 = pushgate_core::Position::new(last.epoch.clone(), 2);
        let read = log.read(&ch, StartAt::After(after2), 10).await.unwrap();
        assert!(!read.reset, "the same epoch after a restart");
        let offsets: Vec<u64> = read.messages.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        let next = log
            .append(ch.clone(), None, Data::json("6").unwrap())
            .await
            .unwrap();
        assert_eq!((&next.epoch, next.offset), (&last.epoch, 6));
    }
}
