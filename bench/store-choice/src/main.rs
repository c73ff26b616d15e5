//! bench/store-choice: the three ways issue 14 could keep history on disk,
//! under the workload pushgate gives them — many small appends that must be
//! durable before they are acknowledged, with group commit — and a restart
//! that reads everything back.
//!
//! Engines: `wal` (an append-only segment file of checksummed records, one
//! `fdatasync` per group: what pushgate would write itself), `redb` (a
//! B-tree, one write transaction of `Durability::Immediate` per group),
//! `fjall` (an LSM tree, one write batch persisted with `SyncAll` per group).
//! The group commit is the same for all three: publishers hand their record
//! to one committer thread, which takes everything waiting, stores it,
//! syncs once, and answers them all.
//!
//!   cargo run --release -- [--dir DIR] [--appends 20000] [--restart-channels 1000] [--per-channel 1000]
//!
//! Writes only below DIR (default: a fresh directory under /tmp); removes it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 200;

trait Store: Send {
    /// Stores the records (channel, offset, payload) and makes them durable.
    fn commit(&mut self, batch: &[(u32, u64, Vec<u8>)], sync: bool);
    /// Reopens what `dir` holds and reads every record; returns how many.
    fn reopen_and_scan(dir: &Path) -> usize
    where
        Self: Sized;
}

// -- wal ----------------------------------------------------------------------

struct Wal {
    file: std::fs::File,
    buf: Vec<u8>,
    at: u64,
}

/// A segment's size, set when it is created (as fjall does its journal's):
/// appends inside it do not change the file's size, so `fdatasync` has no
/// size to write. The tail stays zeros, which recovery reads as the end.
const SEGMENT: u64 = 256 * 1024 * 1024;

impl Wal {
    fn open(dir: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("segment-0.log"))
            .unwrap();
        file.set_len(SEGMENT).unwrap();
        file.sync_all().unwrap();
        Wal {
            file,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl Store for Wal {
    fn commit(&mut self, batch: &[(u32, u64, Vec<u8>)], sync: bool) {
        self.buf.clear();
        for (channel, offset, payload) in batch {
            let len = 4 + 8 + payload.len();
            let start = self.buf.len();
            self.buf.extend_from_slice(&(len as u32).to_le_bytes());
            self.buf.extend_from_slice(&[0; 4]);
            self.buf.extend_from_slice(&channel.to_le_bytes());
            self.buf.extend_from_slice(&offset.to_le_bytes());
            self.buf.extend_from_slice(payload);
            let crc = crc32fast::hash(&self.buf[start + 8..]);
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        std::os::unix::fs::FileExt::write_all_at(&self.file, &self.buf, self.at).unwrap();
        self.at += self.buf.len() as u64;
        if sync {
            self.file.sync_data().unwrap();
        }
    }

    fn reopen_and_scan(dir: &Path) -> usize {
        let bytes = std::fs::read(dir.join("segment-0.log")).unwrap();
        let (mut at, mut n) = (0, 0);
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break; // the preallocated, never written tail
            }
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let body = &bytes[at + 8..at + 8 + len];
            assert_eq!(crc32fast::hash(body), crc);
            n += 1;
            at += 8 + len;
        }
        n
    }
}

// -- redb ---------------------------------------------------------------------

const TABLE: redb::TableDefinition<'static, (u32, u64), &[u8]> =
    redb::TableDefinition::new("history");

struct Redb(redb::Database);

impl Store for Redb {
    fn commit(&mut self, batch: &[(u32, u64, Vec<u8>)], sync: bool) {
        let mut tx = self.0.begin_write().unwrap();
        if !sync {
            tx.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for (channel, offset, payload) in batch {
                table
                    .insert((*channel, *offset), payload.as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn reopen_and_scan(dir: &Path) -> usize {
        use redb::{ReadableDatabase, ReadableTable};
        let db = redb::Database::open(dir.join("history.redb")).unwrap();
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|r| r.unwrap().1.value().len())
            .filter(|l| *l > 0)
            .count()
    }
}

// -- fjall --------------------------------------------------------------------

struct Fjall {
    db: fjall::Database,
    history: fjall::Keyspace,
}

fn key(channel: u32, offset: u64) -> [u8; 12] {
    let mut k = [0; 12];
    k[..4].copy_from_slice(&channel.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

impl Store for Fjall {
    fn commit(&mut self, batch: &[(u32, u64, Vec<u8>)], sync: bool) {
        let mut b = self.db.batch();
        if sync {
            b = b.durability(Some(fjall::PersistMode::SyncData));
        }
        for (channel, offset, payload) in batch {
            b.insert(&self.history, key(*channel, *offset), payload.as_slice());
        }
        b.commit().unwrap();
    }

    fn reopen_and_scan(dir: &Path) -> usize {
        let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
        let history = db
            .keyspace("history", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        history.iter().count()
    }
}

fn open(engine: &str, dir: &Path) -> Box<dyn Store> {
    match engine {
        "wal" => Box::new(Wal::open(dir)),
        "redb" => Box::new(Redb(
            redb::Database::create(dir.join("history.redb")).unwrap(),
        )),
        "fjall" => {
            let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
            let history = db
                .keyspace("history", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            Box::new(Fjall { db, history })
        }
        _ => unreachable!(),
    }
}

fn scan(engine: &str, dir: &Path) -> usize {
    match engine {
        "wal" => Wal::reopen_and_scan(dir),
        "redb" => Redb::reopen_and_scan(dir),
        "fjall" => Fjall::reopen_and_scan(dir),
        _ => unreachable!(),
    }
}

type Request = ((u32, u64, Vec<u8>), mpsc::Sender<()>);

/// `publishers` threads append `total` records in all, each waiting for
/// its acknowledgement (durable) before the next. Returns appends/s and
/// the p50 and p99 latency.
fn durable_appends(
    engine: &str,
    dir: &Path,
    publishers: usize,
    total: usize,
) -> (f64, Duration, Duration) {
    let (tx, rx) = mpsc::channel::<Request>();
    let mut store = open(engine, dir);
    let committer = std::thread::spawn(move || {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut groups = 0usize;
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some((record, ack)) = next {
                batch.push(record);
                acks.push(ack);
                next = rx.try_recv().ok();
            }
            store.commit(&batch, true);
            groups += 1;
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            batch.clear();
        }
        groups
    });
    let each = total / publishers;
    let started = Instant::now();
    let workers: Vec<_> = (0..publishers)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(each);
                let (ack_tx, ack_rx) = mpsc::channel();
                for i in 0..each {
                    let t = Instant::now();
                    tx.send((
                        (p as u32, i as u64 + 1, vec![b'x'; PAYLOAD]),
                        ack_tx.clone(),
                    ))
                    .unwrap();
                    ack_rx.recv().unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    drop(tx);
    let mut lat: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let groups = committer.join().unwrap();
    lat.sort();
    eprintln!(
        "  {engine} x{publishers}: {groups} syncs for {} appends",
        lat.len()
    );
    (
        lat.len() as f64 / elapsed.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
    )
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        // Blocks in use, not the length: a preallocated segment is sparse.
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
        };
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut base = std::env::temp_dir().join(format!("store-choice-{}", std::process::id()));
    let (mut appends, mut channels, mut per_channel) = (20_000usize, 1_000u32, 1_000u64);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value");
        match a.as_str() {
            "--dir" => base = PathBuf::from(value()),
            "--appends" => appends = value().parse().unwrap(),
            "--restart-channels" => channels = value().parse().unwrap(),
            "--per-channel" => per_channel = value().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let engines = ["wal", "redb", "fjall"];
    println!(
        "durable appends ({PAYLOAD}-byte records, acknowledged after the sync; group commit):"
    );
    println!("| engine | publishers | appends/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for publishers in [1, 50] {
        for engine in engines {
            let dir = base.join(format!("{engine}-{publishers}"));
            std::fs::create_dir_all(&dir).unwrap();
            let n = if publishers == 1 {
                appends / 4
            } else {
                appends
            };
            let (rate, p50, p99) = durable_appends(engine, &dir, publishers, n);
            println!(
                "| {engine} | {publishers} | {rate:.0} | {:.2} ms | {:.2} ms |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let records = channels as u64 * per_channel;
    println!("\nrestart: {channels} channels x {per_channel} messages ({records} records), then reopen and read all back:");
    println!("| engine | load (no sync) | reopen + read all | disk per message |");
    println!("|---|---|---|---|");
    for engine in engines {
        let dir = base.join(format!("{engine}-restart"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        {
            let mut store = open(engine, &dir);
            let mut batch = Vec::with_capacity(1000);
            for offset in 1..=per_channel {
                for channel in 0..channels {
                    batch.push((channel, offset, vec![b'y'; PAYLOAD]));
                    if batch.len() == 1000 {
                        store.commit(&batch, false);
                        batch.clear();
                    }
                }
            }
            store.commit(&batch, true);
        }
        let load = t.elapsed();
        // Reopening after a drop: what a restart sees (the OS page cache
        // still holds the files; a cold cache adds the disk's read time).
        let t = Instant::now();
        let n = scan(engine, &dir);
        let reopen = t.elapsed();
        assert_eq!(n as u64, records, "{engine} read back {n}");
        let size = dir_size(&dir);
        println!(
            "| {engine} | {:.1} s | {:.2} s | {:.0} bytes |",
            load.as_secs_f64(),
            reopen.as_secs_f64(),
            size as f64 / records as f64
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let _ = std::fs::remove_dir_all(&base);
}
