//! The durable log's records, sans IO: how one publication is written to a
//! segment file, and how a segment's bytes are read back at start, telling
//! a write a crash cut short (dropped: it was never acknowledged) from
//! damage to what was acknowledged (an error that says where).
//!
//! A record is
//!
//! ```text
//! len u32 LE | crc u32 LE (CRC-32 of body) | body (len bytes)
//! body = time u64 | offset u64 | epoch (u8 len, bytes) | channel (u8 len, bytes)
//!        | event (u8 len, bytes; 0: none) | kind u8 (0 JSON, 1 binary) | data
//! ```
//!
//! Segments are preallocated with zeros, so a `len` of 0 is the end of
//! what was written. The writer writes at most [`MAX_WRITE`] bytes at once
//! and syncs before the next write; so a crash can damage only the last
//! write, and nothing after the damage is more than `MAX_WRITE` bytes away
//! unless it was synced, which makes it an error, not a torn tail.

use bytes::Bytes;

use crate::channel::{ChannelName, EventName};
use crate::clock::Millis;
use crate::epoch::Epoch;
use crate::json::SafeJson;
use crate::publication::Data;

/// The most a writer writes between two syncs (one group commit); a
/// larger group is split. A bound on what a crash can tear.
pub const MAX_WRITE: usize = 4 * 1024 * 1024;

/// Bytes before a record's body: its length and its checksum.
pub const HEADER: usize = 8;

/// One stored publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was published (ms since the Unix epoch).
    pub time: Millis,
    /// Its channel.
    pub channel: ChannelName,
    /// The channel's epoch at publication.
    pub epoch: Epoch,
    /// Its offset in that epoch.
    pub offset: u64,
    /// The publisher's event name.
    pub event: Option<EventName>,
    /// The payload.
    pub data: Data,
}

impl Record {
    /// Appends the record, header and body, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        short(out, self.epoch.as_str());
        short(out, self.channel.as_str());
        short(out, self.event.as_ref().map_or("", |e| e.as_str()));
        match &self.data {
            Data::Json(json) => {
                out.push(0);
                out.extend_from_slice(json.as_str().as_bytes());
            }
            Data::Binary(bytes) => {
                out.push(1);
                out.extend_from_slice(bytes);
            }
        }
        let body = &out[start + HEADER..];
        let len = u32::try_from(body.len()).expect("a record is far below 4 GiB");
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(body: &[u8]) -> Option<Record> {
        let mut r = Reader(body);
        let time = r.u64()?;
        let offset = r.u64()?;
        let epoch = Epoch::new(r.short()?).ok()?;
        let channel = ChannelName::new(r.short()?).ok()?;
        let event = match r.short()? {
            "" => None,
            e => Some(EventName::new(e).ok()?),
        };
        let data = match r.byte()? {
            0 => Data::Json(SafeJson::parse(r.0).ok()?),
            1 => Data::Binary(Bytes::copy_from_slice(r.0)),
            _ => return None,
        };
        Some(Record {
            time,
            channel,
            epoch,
            offset,
            event,
            data,
        })
    }
}

/// Channel names, epochs and event names are at most 255 bytes.
fn short(out: &mut Vec<u8>, s: &str) {
    let len = u8::try_from(s.len()).expect("names are at most 255 bytes");
    out.push(len);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn short(&mut self) -> Option<&'a str> {
        let len = usize::from(self.byte()?);
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// What a segment holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Its records, in the order they were written.
    pub records: Vec<Record>,
    /// Where the next record goes: the end of the last good one.
    pub end: usize,
    /// Bytes of a write a crash cut short, dropped after `end` (0: none).
    pub torn: usize,
}

/// Why a segment cannot be trusted: the bytes at `at` are damaged and
/// something written (and synced) after them would be lost with them.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged {
    /// Where the first bad record starts.
    pub at: usize,
    /// What is wrong there.
    pub why: &'static str,
}

/// Reads a segment's records. `last`: the segment being written when the
/// server stopped, whose end a crash may have torn; in any other segment
/// (synced whole before the next was begun) every bad byte is damage.
pub fn scan(bytes: &[u8], last: bool) -> Result<Scanned, Damaged> {
    let mut records = Vec::new();
    let mut at = 0;
    let bad = loop {
        let Some(head) = bytes.get(at..at + HEADER) else {
            if bytes[at..].iter().all(|b| *b == 0) {
                break None;
            }
            break Some("a record header cut short");
        };
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 && crc == 0 {
            break None; // the preallocated zeros: the end of what was written
        }
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break Some("a record cut short");
        };
        if crc32fast::hash(body) != crc {
            break Some("a record whose checksum does not match");
        }
        let Some(record) = Record::decode(body) else {
            break Some("a record whose checksum matches but whose fields are invalid");
        };
        records.push(record);
        at += HEADER + len;
    };
    let Some(why) = bad else {
        let end = at;
        if bytes[end.min(bytes.len())..].iter().any(|b| *b != 0) {
            // Zeros, then data again: a later write landed, an earlier did not.
            return torn_or_damaged(bytes, records, end, last, "zeros where a record should be");
        }
        return Ok(Scanned {
            records,
            end,
            torn: 0,
        });
    };
    torn_or_damaged(bytes, records, at, last, why)
}

/// After the first bad byte at `at`: a torn last write, when this is the
/// last segment and nothing but zeros lies beyond one write's reach.
fn torn_or_damaged(
    bytes: &[u8],
    records: Vec<Record>,
    at: usize,
    last: bool,
    why: &'static str,
) -> Result<Scanned, Damaged> {
    let reach = at.saturating_add(MAX_WRITE).min(bytes.len());
    let beyond_clean = bytes[reach..].iter().all(|b| *b == 0);
    if !last || !beyond_clean {
        return Err(Damaged { at, why });
    }
    let written = bytes[at..reach]
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i + 1);
    Ok(Scanned {
        records,
        end: at,
        torn: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(offset: u64, data: Data) -> Record {
        Record {
            time: 1_700_000_000_000 + offset,
            channel: ChannelName::new("chat:room-1").unwrap(),
            epoch: Epoch::new("Xk3_a9Qm2Lw").unwrap(),
            offset,
            event: offset
                .is_multiple_of(2)
                .then(|| EventName::new("price").unwrap()),
            data,
        }
    }

    fn segment(records: &[Record], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.encode(&mut out);
        }
        assert!(out.len() <= size);
        out.resize(size, 0);
        out
    }

    fn some(n: u64) -> Vec<Record> {
        (1..=n)
            .map(|i| {
                let data = if i.is_multiple_of(3) {
                    Data::Binary(Bytes::from(vec![i as u8, 0, 255]))
                } else {
                    Data::json(&format!("{{\"n\":{i},\"s\":\"<x>\"}}")).unwrap()
                };
                record(i, data)
            })
            .collect()
    }

    #[test]
    fn records_read_back_as_written_up_to_the_preallocated_zeros() {
        let records = some(10);
        let bytes = segment(&records, 64 * 1024);
        let scanned = scan(&bytes, true).unwrap();
        assert_eq!(scanned.records, records);
        assert_eq!(scanned.torn, 0);
        let mut exact = Vec::new();
        for r in &records {
            r.encode(&mut exact);
        }
        assert_eq!(scanned.end, exact.len());
        // Without the zeros (a segment ending exactly at a record) too.
        assert_eq!(scan(&exact, false).unwrap().records, records);
        assert_eq!(scan(&[], true).unwrap().records, vec![]);
    }

    #[test]
    fn a_torn_last_write_is_dropped_in_the_last_segment_only() {
        let records = some(5);
        let mut whole = Vec::new();
        for r in &records {
            r.encode(&mut whole);
        }
        let mut first4 = Vec::new();
        for r in &records[..4] {
            r.encode(&mut first4);
        }
        // Every cut inside the fifth record.
        for cut in first4.len() + 1..whole.len() {
            let mut bytes = whole[..cut].to_vec();
            bytes.resize(whole.len() + 4096, 0);
            let scanned = scan(&bytes, true).unwrap();
            assert_eq!(scanned.records, records[..4], "cut at {cut}");
            assert_eq!(scanned.end, first4.len());
            assert!(scanned.torn > 0 || whole[first4.len()..cut].iter().all(|b| *b == 0));
            let e = scan(&bytes, false).unwrap_err();
            assert_eq!(e.at, first4.len(), "an older segment is never torn");
        }
    }

    #[test]
    fn damage_followed_by_synced_records_is_an_error() {
        let records = some(3);
        let mut bytes = segment(&records, 64 * 1024);
        // A flipped bit in the second record, with the third intact after it.
        let mut one = Vec::new();
        records[0].encode(&mut one);
        bytes[one.len() + 20] ^= 0x10;
        // Within one write of the end: could be a torn write, so dropped.
        assert_eq!(scan(&bytes, true).unwrap().records, records[..1]);
        // But a record further than one write away was synced: damage.
        let mut far = bytes.clone();
        far.resize(MAX_WRITE + 128 * 1024, 0);
        let mut tail = Vec::new();
        records[2].encode(&mut tail);
        let at = MAX_WRITE + 64 * 1024;
        far[at..at + tail.len()].copy_from_slice(&tail);
        let e = scan(&far, true).unwrap_err();
        assert_eq!(e.at, one.len());
        assert_eq!(e.why, "a record whose checksum does not match");
    }

    proptest! {
        #[test]
        fn any_bytes_scan_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512), last: bool) {
            let _ = scan(&bytes, last);
        }

        #[test]
        fn any_flipped_bit_is_caught(n in 1u64..6, bit in 0usize..8, pos in any::<prop::sample::Index>()) {
            let records = some(n);
            let mut bytes = Vec::new();
            for r in &records {
                r.encode(&mut bytes);
            }
            let len = bytes.len();
            let i = pos.index(len);
            bytes[i] ^= 1 << bit;
            bytes.resize(len + 64, 0);
            // The damaged record and those after it never come back altered.
            match scan(&bytes, true) {
                Ok(s) => {
                    prop_assert!(s.records.len() < records.len());
                    prop_assert_eq!(&s.records[..], &records[..s.records.len()]);
                }
                Err(e) => prop_assert!(e.at < len),
            }
        }
    }
}
