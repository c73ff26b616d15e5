//! Segment files: the durable log's records, appended to numbered files of
//! a fixed, preallocated size (`00000000000000000001.seg`, …). Preallocated
//! so that an append does not change the file's size, and `fdatasync` has
//! only the data to write (bench/store-choice: 5,400 against 3,400–4,000
//! durable appends a second). A segment is synced whole before the next is
//! begun, so at start only the last one may end in a write a crash cut
//! short; damage anywhere else stops the start with the file and the byte.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pushgate_core::log::record::{scan, Record, MAX_WRITE};
use pushgate_core::{ChannelName, Millis};

use crate::error::Error;

/// The default size of a segment file.
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

const SUFFIX: &str = ".seg";

/// The segment files of a directory, and the one being written.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    size: u64,
    /// Numbers of the files on disk, oldest first; the last is `current`.
    numbers: Vec<u64>,
    /// What each file holds, as `numbers`.
    held: Vec<Held>,
    current: File,
    /// Where the next record goes in `current`.
    at: u64,
}

/// What one segment holds, for retention: once the channels no longer
/// keep any of its records (by age or by count), it goes.
#[derive(Debug, Default)]
struct Held {
    /// The time of its newest record (0: none).
    newest: Millis,
    /// Each channel's newest offset in it.
    last: HashMap<ChannelName, u64>,
}

impl Held {
    fn add(&mut self, time: Millis, channel: &ChannelName, offset: u64) {
        self.newest = self.newest.max(time);
        let last = self.last.entry(channel.clone()).or_insert(offset);
        *last = (*last).max(offset);
    }
}

/// What a directory held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every record, oldest first.
    pub records: Vec<Record>,
    /// Bytes of an unfinished write dropped from the end of the last
    /// segment (never acknowledged: it was not synced), and that file.
    pub torn: Option<(PathBuf, usize)>,
    /// The last stop was a crash of a server that did not sync each append:
    /// every channel was given a new epoch (see `DiskLog::open`).
    pub renewed_epochs: bool,
}

impl Segments {
    /// Opens the segments of `dir` (creating it, and a first segment of
    /// `size` bytes, when there are none) and reads every record back.
    /// The end of an unfinished last write is dropped (and zeroed, so the
    /// next append starts clean); damage to anything synced is an error
    /// that names the file and the byte.
    pub fn open(dir: &Path, size: u64) -> Result<(Segments, Recovered), Error> {
        let fail = |what: &str, path: &Path, e: io::Error| {
            Error::config(format!("data_dir: cannot {what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("create", dir, e))?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fail("read", dir, e))? {
            let name = entry.map_err(|e| fail("read", dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut recovered = Recovered::default();
        let mut held = Vec::with_capacity(numbers.len());
        let mut end = 0;
        for (i, n) in numbers.iter().enumerate() {
            let path = segment_path(dir, *n);
            let bytes = std::fs::read(&path).map_err(|e| fail("read", &path, e))?;
            let last = i + 1 == numbers.len();
            let scanned = scan(&bytes, last).map_err(|d| {
                Error::config(format!(
                    "data_dir: {} is damaged at byte {}: {}. Records after it were \
                     acknowledged and would be lost: restore the file from a backup, or \
                     move it away to start without it",
                    path.display(),
                    d.at,
                    d.why
                ))
            })?;
            let mut h = Held::default();
            for r in &scanned.records {
                h.add(r.time, &r.channel, r.offset);
            }
            held.push(h);
            recovered.records.extend(scanned.records);
            if scanned.torn > 0 {
                recovered.torn = Some((path.clone(), scanned.torn));
            }
            end = scanned.end;
            if last && scanned.torn > 0 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| fail("open", &path, e))?;
                file.write_all_at(&vec![0; scanned.torn], end as u64)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| fail("write", &path, e))?;
            }
        }
        let (current, at) = match numbers.last() {
            Some(n) => {
                let path = segment_path(dir, *n);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| fail("open", &path, e))?;
                (file, end as u64)
            }
            None => {
                numbers.push(1);
                held.push(Held::default());
                let file =
                    create(dir, 1, size).map_err(|e| fail("create", &segment_path(dir, 1), e))?;
                (file, 0)
            }
        };
        Ok((
            Segments {
                dir: dir.to_path_buf(),
                size,
                numbers,
                held,
                current,
                at,
            },
            recovered,
        ))
    }

    /// Appends `bytes` (whole records, at most [`MAX_WRITE`]) to the
    /// current segment, or to a new one when they do not fit (the current
    /// one is synced first); syncs the data when `sync`. `records`: the
    /// time, channel and offset of each.
    pub fn append(
        &mut self,
        bytes: &[u8],
        records: &[(Millis, ChannelName, u64)],
        sync: bool,
    ) -> io::Result<()> {
        debug_assert!(bytes.len() <= MAX_WRITE);
        let need = bytes.len() as u64;
        if self.at + need > self.size.max(need) {
            self.current.sync_data()?;
            let next = self.numbers.last().copied().unwrap_or(0) + 1;
            self.current = create(&self.dir, next, self.size.max(need))?;
            self.numbers.push(next);
            self.held.push(Held::default());
            self.at = 0;
        }
        self.current.write_all_at(bytes, self.at)?;
        let held = self.held.last_mut().expect("the current segment");
        for (time, channel, offset) in records {
            held.add(*time, channel, *offset);
        }
        self.at += need;
        if sync {
            self.current.sync_data()?;
        }
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&self) -> io::Result<()> {
        self.current.sync_data()
    }

    /// The numbers of the segment files, oldest first.
    pub fn numbers(&self) -> &[u64] {
        &self.numbers
    }

    /// Deletes the files, but the one being written, none of whose records
    /// is kept any more: each is older than `before`, or below
    /// `first_kept(its channel)` (trimmed by count or by its channel's own
    /// age limit, or its channel forgotten). Returns how many went.
    pub fn delete_unkept(
        &mut self,
        before: Millis,
        first_kept: impl Fn(&ChannelName) -> u64,
    ) -> io::Result<usize> {
        let mut gone = 0;
        let mut i = 0;
        while i + 1 < self.numbers.len() {
            let h = &self.held[i];
            let unkept = h.newest < before
                || (!h.last.is_empty()
                    && h.last
                        .iter()
                        .all(|(channel, last)| *last < first_kept(channel)));
            if unkept {
                std::fs::remove_file(segment_path(&self.dir, self.numbers[i]))?;
                self.numbers.remove(i);
                self.held.remove(i);
                gone += 1;
            } else {
                i += 1;
            }
        }
        if gone > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(gone)
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}{SUFFIX}"))
}

/// A new, zero-filled segment, its size and its name durable.
fn create(dir: &Path, n: u64, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, n))?;
    file.set_len(size)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TempDir;
    use pushgate_core::{ChannelName, Data, Epoch};

    fn record(offset: u64) -> Record {
        Record {
            time: 1_700_000_000_000,
            channel: ChannelName::new("news").unwrap(),
            epoch: Epoch::new("E").unwrap(),
            offset,
            event: None,
            data: Data::json(&format!("{{\"n\":{offset}}}")).unwrap(),
        }
    }

    fn encoded(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for o in range {
            record(o).encode(&mut out);
        }
        out
    }

    /// What `append` is told of `encoded(range)`'s records, stamped `time`.
    fn written(
        range: std::ops::RangeInclusive<u64>,
        time: Millis,
    ) -> Vec<(Millis, ChannelName, u64)> {
        range
            .map(|o| (time, ChannelName::new("news").unwrap(), o))
            .collect()
    }

    fn offsets(r: &Recovered) -> Vec<u64> {
        r.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_come_back_across_segments_and_reopens() {
        let dir = TempDir::new("segments-reopen");
        let (mut s, r) = Segments::open(&dir.0, 1024).unwrap();
        assert!(r.records.is_empty());
        for o in 1..=60 {
            s.append(&encoded(o..=o), &written(o..=o, 0), o % 7 == 0)
                .unwrap();
        }
        s.sync().unwrap();
        assert!(s.numbers().len() > 1, "small segments: it rotated");
        drop(s);
        let (mut s, r) = Segments::open(&dir.0, 1024).unwrap();
        assert_eq!(offsets(&r), (1..=60).collect::<Vec<_>>());
        assert!(r.torn.is_none());
        // Appends continue where the records end.
        s.append(&encoded(61..=62), &written(61..=62, 0), true)
            .unwrap();
        drop(s);
        let (_, r) = Segments::open(&dir.0, 1024).unwrap();
        assert_eq!(r.records.len(), 62);
    }

    #[test]
    fn an_unfinished_last_write_is_dropped_and_the_next_append_starts_clean() {
        let dir = TempDir::new("segments-torn");
        let (mut s, _) = Segments::open(&dir.0, 64 * 1024).unwrap();
        s.append(&encoded(1..=3), &written(1..=3, 0), true).unwrap();
        let whole = encoded(4..=5);
        // A crash in the middle of the write of 4 and 5, inside 4.
        let cut = whole.len() / 4;
        s.append(&whole[..cut], &[], true).unwrap();
        drop(s);
        let (mut s, r) = Segments::open(&dir.0, 64 * 1024).unwrap();
        assert_eq!(offsets(&r), [1, 2, 3]);
        let (path, bytes) = r.torn.unwrap();
        assert!(path.ends_with("00000000000000000001.seg"));
        // Counted to its last non-zero byte: zeros are what was there.
        assert!(bytes > 0 && bytes <= cut, "{bytes} of {cut}");
        s.append(&encoded(4..=4), &written(4..=4, 0), true).unwrap();
        drop(s);
        let (_, r) = Segments::open(&dir.0, 64 * 1024).unwrap();
        assert_eq!(offsets(&r), [1, 2, 3, 4]);
        assert!(r.torn.is_none(), "the torn bytes were zeroed");
    }

    #[test]
    fn segments_whose_records_all_expired_are_deleted_but_the_current_one() {
        let dir = TempDir::new("segments-retention");
        let (mut s, _) = Segments::open(&dir.0, 1024).unwrap();
        // Records of times 1..=100 over several segments (record(o) is stamped
        // with one time; the time passed here is what retention reads).
        for o in 1..=100 {
            s.append(&encoded(o..=o), &written(o..=o, o), false)
                .unwrap();
        }
        let files = s.numbers().len();
        assert!(files > 2);
        assert_eq!(s.delete_unkept(0, |_| 0).unwrap(), 0);
        let gone = s.delete_unkept(50, |_| 0).unwrap();
        assert!(gone > 0 && gone < files, "{gone} of {files}");
        assert!(
            s.held[0].newest >= 50,
            "the oldest left holds a record of 50 or later"
        );
        let left = s.numbers().len();
        assert_eq!(s.delete_unkept(u64::MAX, |_| 0).unwrap(), left - 1);
        assert_eq!(s.numbers().len(), 1, "the segment being written stays");
        drop(s);
        // What is left reads back: the newest records, in order, to 100.
        let (_, r) = Segments::open(&dir.0, 1024).unwrap();
        let offsets = offsets(&r);
        assert!(
            offsets[0] > 50 && offsets.ends_with(&[99, 100]),
            "{offsets:?}"
        );
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn segments_whose_records_every_channel_trimmed_are_deleted_wherever_they_are() {
        let dir = TempDir::new("segments-trimmed");
        let (mut s, _) = Segments::open(&dir.0, 1024).unwrap();
        let (news, idle) = (
            ChannelName::new("news").unwrap(),
            ChannelName::new("idle").unwrap(),
        );
        // The first segment also holds a record of `idle`, which keeps it.
        let mut first = encoded(1..=1);
        Record {
            channel: idle.clone(),
            ..record(1)
        }
        .encode(&mut first);
        s.append(&first, &[(0, news.clone(), 1), (0, idle.clone(), 1)], true)
            .unwrap();
        for o in 2..=100 {
            s.append(&encoded(o..=o), &written(o..=o, 0), false)
                .unwrap();
        }
        let files = s.numbers().len();
        assert!(files > 3);
        // `news` keeps 91.. (a history of 10); `idle` keeps its 1.
        let kept = |c: &ChannelName| if *c == news { 91 } else { 1 };
        let gone = s.delete_unkept(0, kept).unwrap();
        assert!(gone > 0, "trimmed segments go though no record is old");
        assert_eq!(s.numbers()[0], 1, "the first stays for idle's record");
        assert_eq!(s.numbers().len(), files - gone);
        // Forgotten, `idle` lets the first go too.
        let kept = |c: &ChannelName| if *c == news { 91 } else { u64::MAX };
        assert_eq!(s.delete_unkept(0, kept).unwrap(), 1);
        drop(s);
        let (_, r) = Segments::open(&dir.0, 1024).unwrap();
        let offsets = offsets(&r);
        assert!(offsets[0] <= 91 && offsets.ends_with(&[100]), "{offsets:?}");
    }

    #[test]
    fn damage_to_an_older_segment_stops_the_start_and_names_the_file() {
        let dir = TempDir::new("segments-damage");
        let (mut s, _) = Segments::open(&dir.0, 1024).unwrap();
        for o in 1..=30 {
            s.append(&encoded(o..=o), &written(o..=o, 0), true).unwrap();
        }
        drop(s);
        let first = segment_path(&dir.0, 1);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let e = Segments::open(&dir.0, 1024).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("00000000000000000001.seg is damaged at byte 0"),
            "{text}"
        );
        assert!(text.contains("restore the file from a backup"), "{text}");
    }
}
