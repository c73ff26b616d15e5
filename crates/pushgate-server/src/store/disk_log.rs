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
//! to the kernel; there the committer writes what gathered every
//! [`GATHER`] rather than being woken by each append.
//!
//! What waits for the committer is bounded ([`QUEUE_BYTES`]): an append
//! first takes its size from that budget, which the committer gives back
//! once the record is written, so publishers faster than the disk wait for
//! it (in every mode) instead of queueing without end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pushgate_core::log::record::{Record, MAX_WRITE};
use pushgate_core::log::{Appended, Catchup, Log, StartAt};
use pushgate_core::{
    ChannelName, Data, Epoch, Error as CoreError, ErrorKind, EventName, MemoryLog, MemoryLogConfig,
    Millis, Publication,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::segments::{Recovered, Segments};
use super::StoreStats;
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

/// How much may wait to be written: 8 full writes.
pub const QUEUE_BYTES: usize = 8 * MAX_WRITE;

enum Job {
    Append {
        record: Vec<u8>,
        /// Its share of [`QUEUE_BYTES`], given back once written.
        queued: OwnedSemaphorePermit,
        /// Its time, channel and offset, for retention.
        time: Millis,
        channel: ChannelName,
        offset: u64,
        /// `Always`: made readable by the committer once durable; then `done`.
        reserved: Option<Arc<Publication>>,
        done: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    /// Delete the segments no channel keeps a record of: those older than
    /// this, and those trimmed away (see `Segments::delete_unkept`).
    Expire(Millis),
}

/// See the module docs.
pub struct DiskLog {
    /// Held for the log's life: one server per data directory.
    _lock: std::fs::File,
    dir: std::path::PathBuf,
    memory: Arc<MemoryLog>,
    mode: SyncMode,
    /// The longest any channel keeps a message; older records are dead.
    max_ttl: Millis,
    clock: Arc<dyn pushgate_core::Clock>,
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    /// Bytes that may still be queued for the committer.
    queue: Arc<Semaphore>,
    queue_limit: usize,
    stats: Arc<StoreStats>,
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
        check_format(dir)?;
        let lost = last_stop_lost_appends(dir, mode)?;
        let (segments, mut recovered) = Segments::open(dir, segment_size)?;
        let max_ttl = config
            .namespaces
            .iter()
            .filter_map(|n| n.rules.history_ttl)
            .chain(config.namespaces.default_rules().history_ttl)
            .chain(config.namespaces.personal().history_ttl)
            .map(|t| t.as_millis() as Millis)
            .fold(config.history_ttl_ms, Millis::max);
        let clock = config.clock.clone();
        let memory = Arc::new(MemoryLog::new(config));
        // After a crash that may have taken back acknowledged (and
        // delivered) messages, their offsets would be given again: every
        // channel goes on in a new epoch, so that clients reset rather than
        // skip what they never saw. Its history stays, relabelled.
        let mut renamed: HashMap<(ChannelName, Epoch), Epoch> = HashMap::new();
        let records = std::mem::take(&mut recovered.records);
        recovered.renewed_epochs = lost && !records.is_empty();
        for mut record in records {
            if lost {
                record.epoch = renamed
                    .entry((record.channel.clone(), record.epoch.clone()))
                    .or_insert_with(Epoch::random)
                    .clone();
            }
            memory.restore(record);
        }
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let committer = {
            let memory = memory.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("pushgate-store".into())
                .spawn(move || commit_loop(rx, segments, memory, mode, stats))
                .map_err(Error::io)?
        };
        Ok((
            DiskLog {
                _lock: lock,
                dir: dir.to_path_buf(),
                memory,
                mode,
                max_ttl,
                clock,
                jobs: std::sync::Mutex::new(Some(tx)),
                queue: Arc::new(Semaphore::new(QUEUE_BYTES)),
                queue_limit: QUEUE_BYTES,
                stats,
                committer: std::sync::Mutex::new(Some(committer)),
            },
            recovered,
        ))
    }

    /// What the committer has done, for `/metrics`.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// Lets at most `bytes` wait for the committer (a test's small budget).
    pub fn with_queue_limit(mut self, bytes: usize) -> DiskLog {
        self.queue = Arc::new(Semaphore::new(bytes));
        self.queue_limit = bytes;
        self
    }

    /// Writes and syncs everything queued, stops the committer, and marks
    /// the stop clean (once: later calls do nothing).
    pub fn shut(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(committer) = committer else {
            return;
        };
        let _ = committer.join();
        if self.stats.failed.load(Ordering::SeqCst) {
            return;
        }
        let marked = std::fs::write(self.dir.join(CLEAN), b"")
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        if let Err(e) = marked {
            tracing::warn!(error = %e, "could not mark the history store's stop as clean");
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
        self.shut();
    }
}

/// The layout of the directory and its records, for upgrades: a later
/// pushgate that changes them reads this one's (or says it cannot), and
/// this one refuses a later one's rather than misread it.
const FORMAT: &str = "format";
const FORMAT_VERSION: &str = "pushgate-store 1";

fn check_format(dir: &Path) -> Result<(), Error> {
    let path = dir.join(FORMAT);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == FORMAT_VERSION => Ok(()),
        Ok(found) => Err(Error::config(format!(
            "data_dir: {} says {:?}: written by another version of pushgate, which this one \
             cannot read (it reads {FORMAT_VERSION:?})",
            path.display(),
            found.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{FORMAT_VERSION}\n"))
                .and_then(|()| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| {
                    Error::config(format!("data_dir: cannot write {}: {e}", path.display()))
                })
        }
        Err(e) => Err(Error::config(format!(
            "data_dir: cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Present while no server runs on the directory and the last one stopped
/// cleanly (everything synced).
const CLEAN: &str = "clean";
/// The sync mode the records were written with.
const MODE: &str = "sync-mode";

/// Reads and resets the directory's record of the last stop: whether it may
/// have lost acknowledged appends (not clean, and written without syncing
/// each). Then notes this run's `mode`, and that it has not stopped yet.
fn last_stop_lost_appends(dir: &Path, mode: SyncMode) -> Result<bool, Error> {
    let fail = |what: &str, e: std::io::Error| {
        Error::config(format!("data_dir: cannot {what} in {}: {e}", dir.display()))
    };
    let clean = dir.join(CLEAN).exists();
    let previous = std::fs::read_to_string(dir.join(MODE)).unwrap_or_default();
    let name = match mode {
        SyncMode::Always => "always",
        SyncMode::Interval(_) => "interval",
        SyncMode::Never => "never",
    };
    std::fs::write(dir.join(MODE), name).map_err(|e| fail("write sync-mode", e))?;
    if clean {
        std::fs::remove_file(dir.join(CLEAN)).map_err(|e| fail("remove clean", e))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("sync", e))?;
    Ok(!clean && matches!(previous.as_str(), "interval" | "never"))
}

fn commit_loop(
    jobs: mpsc::Receiver<Job>,
    mut segments: Segments,
    memory: Arc<MemoryLog>,
    mode: SyncMode,
    stats: Arc<StoreStats>,
) {
    let failed = &stats.failed;
    let count = |n: &std::sync::atomic::AtomicU64, by: u64| {
        n.fetch_add(by, Ordering::Relaxed);
    };
    stats
        .segments
        .store(segments.numbers().len() as u64, Ordering::Relaxed);
    let mut buf = Vec::new();
    let mut written = Vec::new();
    let mut group: Vec<(Option<Arc<Publication>>, Option<Done>, OwnedSemaphorePermit)> = Vec::new();
    let mut next: Option<Job> = None;
    let mut expire: Option<Millis> = None;
    let mut unsynced_since: Option<Instant> = None;
    let fail = |failed: &AtomicBool, what: &str, e: std::io::Error| {
        if !failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                error = %e,
                "the history store could not {what} in its data directory: appends are \
                 refused from now on (restart once the disk is fixed)"
            );
        }
    };
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
                        if unsynced_since.take().is_some() {
                            match segments.sync() {
                                Ok(()) => count(&stats.syncs, 1),
                                Err(e) => fail(failed, "sync", e),
                            }
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        buf.clear();
        written.clear();
        let mut take = |job: Job, buf: &mut Vec<u8>| match job {
            Job::Append {
                record,
                queued,
                time,
                channel,
                offset,
                reserved,
                done,
            } => {
                buf.extend_from_slice(&record);
                written.push((time, channel, offset));
                group.push((reserved, done, queued));
            }
            Job::Expire(before) => expire = Some(before),
        };
        take(first, &mut buf);
        while let Ok(job) = jobs.try_recv() {
            if let Job::Append { record, .. } = &job {
                if buf.len() + record.len() > MAX_WRITE {
                    next = Some(job);
                    break;
                }
            }
            take(job, &mut buf);
        }
        // Before the group's acknowledgements: whoever asked for it and
        // then appended sees it done.
        if let Some(before) = expire.take() {
            match segments.delete_unkept(before, |c| memory.first_kept(c)) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, "expired history deleted"),
                Err(e) => tracing::warn!(error = %e, "could not delete an expired segment"),
            }
            stats
                .segments
                .store(segments.numbers().len() as u64, Ordering::Relaxed);
        }
        if !buf.is_empty() {
            let sync = match mode {
                SyncMode::Always => true,
                SyncMode::Interval(every) => {
                    let since = *unsynced_since.get_or_insert_with(Instant::now);
                    since.elapsed() >= every
                }
                SyncMode::Never => false,
            };
            let mut ok = !failed.load(Ordering::SeqCst);
            if ok {
                if let Err(e) = segments.append(&buf, &written, sync) {
                    fail(failed, "write", e);
                    ok = false;
                } else {
                    count(&stats.records, written.len() as u64);
                    count(&stats.writes, 1);
                    count(&stats.bytes, buf.len() as u64);
                    if sync {
                        count(&stats.syncs, 1);
                        unsynced_since = None;
                    }
                }
                stats
                    .segments
                    .store(segments.numbers().len() as u64, Ordering::Relaxed);
            }
            for (reserved, done, _queued) in group.drain(..) {
                if ok {
                    if let Some(p) = &reserved {
                        memory.commit(p);
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(ok);
                }
            }
            // Nobody waits for this write: let the next appends gather
            // rather than have each wake this thread (a futex wake and a
            // context switch per publish, which cost more CPU than the
            // write; bench/durable). A crash may lose this pause's appends.
            if mode != SyncMode::Always && next.is_none() {
                std::thread::sleep(GATHER);
            }
        }
    }
    let _ = segments.sync();
}

/// How long the committer lets appends gather when nobody waits for the
/// disk (`interval`, `never`).
const GATHER: Duration = Duration::from_millis(2);

type Done = tokio::sync::oneshot::Sender<bool>;

#[async_trait]
impl Log for DiskLog {
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, CoreError> {
        if self.stats.failed.load(Ordering::SeqCst) {
            return Err(Self::unavailable());
        }
        let Some(jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(Self::unavailable());
        };
        // The record's size, near enough: what it will hold besides its
        // header, times and epoch.
        let size = match &data {
            Data::Json(json) => json.as_str().len(),
            Data::Binary(bytes) => bytes.len(),
        } + channel.as_str().len()
            + event.as_ref().map_or(0, |e| e.as_str().len())
            + 128;
        let queued = self
            .queue
            .clone()
            .acquire_many_owned(size.min(self.queue_limit) as u32)
            .await
            .map_err(|_| Self::unavailable())?;
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
            let _ = jobs.send(Job::Append {
                record,
                queued,
                time: p.time,
                channel: p.channel.clone(),
                offset: p.offset,
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

    fn close(&self) {
        self.shut();
    }

    /// Also deletes the segments none of whose records a channel keeps
    /// (by count or by age): disk use stays within what retention keeps.
    async fn sweep(&self, in_use: &(dyn for<'c> Fn(&'c ChannelName) -> bool + Sync)) {
        self.memory.sweep(in_use).await;
        let before = self.clock.now().saturating_sub(self.max_ttl);
        if let Some(jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = jobs.send(Job::Expire(before));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_log_conformance_suite_in_every_sync_mode() {
        let dir = TempDir::new("disklog-conformance");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_wait_for_the_disk_within_the_queue_budget_and_keep_their_order() {
        let dir = TempDir::new("disklog-queue");
        for mode in [SyncMode::Always, SyncMode::Never] {
            let path = dir.0.join(format!("{mode:?}"));
            let open = || {
                DiskLog::open(&path, MemoryLogConfig::default(), mode, 1 << 20)
                    .unwrap()
                    .0
                    // Room for about one small record: each append waits
                    // for the one before it to be written.
                    .with_queue_limit(200)
            };
            let log = Arc::new(open());
            let ch = ChannelName::new("news").unwrap();
            let big = format!("\"{}\"", "x".repeat(1000));
            let mut tasks = Vec::new();
            for n in 0..40 {
                let (log, ch) = (log.clone(), ch.clone());
                // Bigger than the whole budget: taken alone, not refused.
                let data = if n % 10 == 0 {
                    big.clone()
                } else {
                    n.to_string()
                };
                tasks.push(tokio::spawn(async move {
                    log.append(ch, None, Data::json(&data).unwrap())
                        .await
                        .unwrap()
                        .offset
                }));
            }
            let mut offsets = Vec::new();
            for t in tasks {
                offsets.push(t.await.unwrap());
            }
            offsets.sort();
            assert_eq!(offsets, (1..=40).collect::<Vec<u64>>(), "{mode:?}");
            drop(log);
            let log = open();
            let read = log.read(&ch, StartAt::Earliest, 100).await.unwrap();
            let stored: Vec<u64> = read.messages.iter().map(|p| p.offset).collect();
            assert_eq!(
                stored,
                (1..=40).collect::<Vec<u64>>(),
                "{mode:?}: all written, in order"
            );
        }
    }

    /// A store in `dir` with the defaults, syncing each append.
    fn open_always(dir: &std::path::Path) -> Result<(DiskLog, Recovered), Error> {
        DiskLog::open(dir, MemoryLogConfig::default(), SyncMode::Always, 1 << 20)
    }

    /// Appends each number of `range` to `ch`, acknowledged.
    async fn append_numbers(log: &DiskLog, ch: &ChannelName, range: impl Iterator<Item = u64>) {
        for n in range {
            log.append(ch.clone(), None, Data::json(&n.to_string()).unwrap())
                .await
                .unwrap();
        }
    }

    fn segment_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    }

    #[tokio::test]
    async fn segments_go_once_the_longest_ttl_has_let_their_records_go() {
        let dir = TempDir::new("disklog-retention");
        let clock = pushgate_core::ManualClock::new(1_000_000);
        let config = MemoryLogConfig {
            history_ttl_ms: 60_000,
            clock: Arc::new(clock.clone()),
            ..Default::default()
        };
        let (log, _) = DiskLog::open(&dir.0, config.clone(), SyncMode::Always, 4096).unwrap();
        let ch = ChannelName::new("news").unwrap();
        append_numbers(&log, &ch, 0..600).await;
        let before = segment_files(&dir.0);
        assert!(before > 3, "{before} segments");
        log.sweep(&|_| true).await;
        clock.advance(60_001);
        log.append(ch.clone(), None, Data::json("\"fresh\"").unwrap())
            .await
            .unwrap();
        log.sweep(&|_| true).await;
        // The committer deletes in order after the sweep's request: the
        // next acknowledged append comes after it.
        log.append(ch.clone(), None, Data::json("0").unwrap())
            .await
            .unwrap();
        let after = segment_files(&dir.0);
        assert!(after <= 2, "{after} of {before} segments left");
        drop(log);
        let (log, _) = DiskLog::open(&dir.0, config, SyncMode::Always, 4096).unwrap();
        let read = log.read(&ch, StartAt::Earliest, 1000).await.unwrap();
        assert_eq!(read.messages.len(), 2, "the two fresh ones");
        assert_eq!(read.position.offset, 602, "offsets go on");
    }

    #[tokio::test]
    async fn segments_go_once_every_channel_trimmed_their_records_by_count() {
        let dir = TempDir::new("disklog-trimmed");
        let config = MemoryLogConfig {
            history_size: 10,
            ..Default::default()
        };
        let (log, _) = DiskLog::open(&dir.0, config.clone(), SyncMode::Always, 4096).unwrap();
        let ch = ChannelName::new("news").unwrap();
        append_numbers(&log, &ch, 1..=600).await;
        let before = segment_files(&dir.0);
        assert!(before > 3, "{before} segments");
        log.sweep(&|_| true).await;
        // Deleted in order before the next acknowledged append.
        log.append(ch.clone(), None, Data::json("601").unwrap())
            .await
            .unwrap();
        let after = segment_files(&dir.0);
        assert!(
            after <= 2,
            "{after} of {before} segments left, no time passed"
        );
        drop(log);
        let (log, _) = DiskLog::open(&dir.0, config, SyncMode::Always, 4096).unwrap();
        let read = log.read(&ch, StartAt::Earliest, 100).await.unwrap();
        let offsets: Vec<u64> = read.messages.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (592..=601).collect::<Vec<u64>>(), "the last ten");
    }

    #[tokio::test]
    async fn a_crash_without_syncing_each_append_starts_new_epochs_a_clean_stop_does_not() {
        let dir = TempDir::new("disklog-epochs");
        let ch = ChannelName::new("news").unwrap();
        let open = |mode| DiskLog::open(&dir.0, MemoryLogConfig::default(), mode, 1 << 20).unwrap();
        let interval = SyncMode::Interval(Duration::from_millis(5));
        let epoch_after = |log: &DiskLog| {
            let log = log.memory.clone();
            let ch = ch.clone();
            async move {
                let read = log.read(&ch, StartAt::Earliest, 10).await.unwrap();
                let offsets: Vec<u64> = read.messages.iter().map(|p| p.offset).collect();
                (read.position.epoch, offsets)
            }
        };
        let (log, _) = open(interval);
        for n in 1..=3 {
            log.append(ch.clone(), None, Data::json(&n.to_string()).unwrap())
                .await
                .unwrap();
        }
        let (epoch, _) = epoch_after(&log).await;
        drop(log); // a clean stop: synced, marked
        let (log, recovered) = open(interval);
        assert!(!recovered.renewed_epochs);
        assert_eq!(epoch_after(&log).await, (epoch.clone(), vec![1, 2, 3]));
        drop(log);
        // A crash: the mark of a clean stop is missing.
        std::fs::remove_file(dir.0.join(CLEAN)).unwrap();
        let (log, recovered) = open(SyncMode::Always);
        assert!(recovered.renewed_epochs);
        let (renewed, offsets) = epoch_after(&log).await;
        assert_ne!(renewed, epoch, "a new epoch");
        assert_eq!(offsets, [1, 2, 3], "its history kept, relabelled");
        let p = log
            .append(ch.clone(), None, Data::json("4").unwrap())
            .await
            .unwrap();
        assert_eq!((&p.epoch, p.offset), (&renewed, 4));
        drop(log);
        // Written with sync = always, a crash costs no epoch.
        std::fs::remove_file(dir.0.join(CLEAN)).unwrap();
        let (log, recovered) = open(SyncMode::Always);
        assert!(!recovered.renewed_epochs);
        assert_eq!(epoch_after(&log).await.0, renewed);
    }

    #[tokio::test]
    async fn a_failed_write_refuses_every_later_append_and_loses_nothing_acknowledged() {
        let dir = TempDir::new("disklog-failed");
        let open = || {
            DiskLog::open(&dir.0, MemoryLogConfig::default(), SyncMode::Always, 4096)
                .unwrap()
                .0
        };
        let log = open();
        // The next segment cannot be created: its name is taken.
        let next = dir.0.join("00000000000000000002.seg");
        std::fs::create_dir(&next).unwrap();
        let ch = ChannelName::new("news").unwrap();
        let mut acked = Vec::new();
        let refused = loop {
            match log
                .append(ch.clone(), None, Data::json("\"some news\"").unwrap())
                .await
            {
                Ok(p) => acked.push(p.offset),
                Err(e) => break e,
            }
            assert!(acked.len() < 1000, "the first segment is full long before");
        };
        assert_eq!(refused.kind(), ErrorKind::Unavailable);
        assert!(log.stats().failed.load(Ordering::SeqCst));
        let again = log.append(ch.clone(), None, Data::json("1").unwrap()).await;
        assert_eq!(again.unwrap_err().kind(), ErrorKind::Unavailable);
        drop(log);
        std::fs::remove_dir(&next).unwrap();
        let log = open();
        let read = log.read(&ch, StartAt::Earliest, 1000).await.unwrap();
        let offsets: Vec<u64> = read.messages.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, acked, "everything acknowledged, nothing else");
    }

    #[test]
    fn one_server_per_data_directory() {
        let dir = TempDir::new("disklog-lock");
        let open = || open_always(&dir.0);
        let first = open().unwrap();
        let e = open().err().unwrap().to_string();
        assert!(e.contains("is in use by another pushgate"), "{e}");
        drop(first);
        assert!(open().is_ok(), "free again once the first is gone");
    }

    #[test]
    fn a_store_of_another_format_is_refused_not_misread() {
        let dir = TempDir::new("disklog-format");
        let open = || open_always(&dir.0);
        drop(open().unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.0.join(FORMAT)).unwrap(),
            "pushgate-store 1\n"
        );
        std::fs::write(dir.0.join(FORMAT), "pushgate-store 2\n").unwrap();
        let e = open().err().unwrap().to_string();
        assert!(
            e.contains("\"pushgate-store 2\"") && e.contains("written by another version"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_there_after_a_reopen_in_the_same_epoch() {
        let dir = TempDir::new("disklog-reopen");
        let open = || open_always(&dir.0).unwrap().0;
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
        let stats = log.stats();
        // One after the other: each its own write and sync.
        for n in [&stats.records, &stats.writes, &stats.syncs] {
            assert_eq!(n.load(Ordering::Relaxed), 5);
        }
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
