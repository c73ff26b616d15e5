//! What every log shared by several nodes (Redis) needs, sans IO: how a
//! publication is stored and announced as bytes, how a range the store
//! returned answers a read, and where a node stands in a channel it
//! follows — so that a blip in its live feed is filled from history, in
//! offset order, and nothing is announced twice.
//!
//! A stored publication is a *body* — `kind u8 (b'j' JSON, b'b' binary) |
//! event length u8 | event | data` — with its offset, epoch and time kept
//! beside it by the store. A live announcement is the body behind a text
//! header the store's script writes: `<offset>:<epoch>:<time>:<body>`.

use std::sync::Arc;

use bytes::Bytes;

use super::{Catchup, StartAt};
use crate::channel::{ChannelName, EventName};
use crate::clock::Millis;
use crate::cursor::Position;
use crate::epoch::Epoch;
use crate::json::SafeJson;
use crate::publication::{Data, Publication};

/// A publication's body as a shared log stores it.
pub fn encode_body(event: Option<&EventName>, data: &Data) -> Vec<u8> {
    let event = event.map_or("", |e| e.as_str());
    let (kind, bytes) = match data {
        Data::Json(json) => (b'j', json.as_str().as_bytes()),
        Data::Binary(raw) => (b'b', &raw[..]),
    };
    let mut out = Vec::with_capacity(2 + event.len() + bytes.len());
    out.push(kind);
    out.push(u8::try_from(event.len()).expect("event names are at most 255 bytes"));
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The publication a stored body makes, or `None` when the bytes are not
/// one (another program's key, damage): the caller reports it.
pub fn decode_body(
    channel: ChannelName,
    epoch: Epoch,
    offset: u64,
    time: Millis,
    body: &[u8],
) -> Option<Publication> {
    let (&kind, rest) = body.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let (event, data) = rest.split_at_checked(usize::from(len))?;
    let event = match event {
        [] => None,
        e => Some(EventName::new(std::str::from_utf8(e).ok()?).ok()?),
    };
    let data = match kind {
        b'j' => Data::Json(SafeJson::parse(data).ok()?),
        b'b' => Data::Binary(Bytes::copy_from_slice(data)),
        _ => return None,
    };
    Some(Publication::new(channel, epoch, offset, event, data, time))
}

/// The publication a live announcement carries.
pub fn decode_live(channel: ChannelName, bytes: &[u8]) -> Option<Publication> {
    let mut fields = bytes.splitn(4, |b| *b == b':');
    let mut number = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    let offset = number()?;
    let epoch = Epoch::new(std::str::from_utf8(fields.next()?).ok()?).ok()?;
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    decode_body(channel, epoch, offset, time, fields.next()?)
}

/// The first offset a store reads to answer a read from `start`: `None`
/// for none at all (`Now`), `Some(0)` for its oldest.
pub fn first_wanted(start: &StartAt) -> Option<u64> {
    match start {
        StartAt::Now => None,
        StartAt::Earliest => Some(0),
        StartAt::After(p) => Some(p.offset + 1),
    }
}

/// Answers a read from `start` with what the store holds: the channel at
/// `top`, and `fetched`, its publications from [`first_wanted`] on, oldest
/// first, at most `limit + 1` of them (the one beyond the limit says more
/// follow). The rules are [`super::MemoryLog`]'s.
pub fn answer(
    channel: ChannelName,
    top: Position,
    start: &StartAt,
    mut fetched: Vec<Arc<Publication>>,
    limit: usize,
) -> Catchup {
    let reset = match start {
        StartAt::Now => {
            fetched.clear();
            false
        }
        StartAt::Earliest => false,
        // Offset 0 is "before anything": valid in any epoch as long as
        // nothing has been trimmed since offset 1.
        StartAt::After(p) => {
            let same_epoch = p.epoch == top.epoch || p.offset == 0;
            !same_epoch
                || p.offset > top.offset
                || (p.offset < top.offset
                    && fetched.first().map(|m| m.offset) != Some(p.offset + 1))
        }
    };
    if reset {
        fetched.clear();
    }
    let truncated = fetched.len() > limit;
    fetched.truncate(limit);
    Catchup {
        channel,
        position: top,
        messages: fetched,
        reset,
        truncated,
    }
}

/// Where a node stands in a channel it follows: the last publication it
/// announced. Live announcements come over a connection that may drop
/// some; this decides what each one means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    at: Position,
}

/// What a live announcement means to a [`Followed`] channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// The next one: announce it (the position moved on).
    Next,
    /// Already announced (by a catch-up that overlapped): drop it.
    Old,
    /// Something came between, or the epoch changed: catch up from
    /// [`Followed::start`] before this one.
    Gap,
}

impl Followed {
    /// A channel whose newest publication, when the node began to follow
    /// it, was at `at` (offset 0 for one without any).
    pub fn new(at: Position) -> Self {
        Followed { at }
    }

    /// The last position announced.
    pub fn position(&self) -> &Position {
        &self.at
    }

    /// Classifies a live announcement, and moves on past it when it is
    /// the next.
    pub fn live(&mut self, p: &Publication) -> Live {
        let same_epoch = p.epoch == self.at.epoch;
        if same_epoch && p.offset <= self.at.offset {
            return Live::Old;
        }
        // A channel that had nothing when followed may begin in any epoch.
        if p.offset == self.at.offset + 1 && (same_epoch || self.at.offset == 0) {
            self.at = p.position();
            return Live::Next;
        }
        Live::Gap
    }

    /// Where a catch-up reads from.
    pub fn start(&self) -> StartAt {
        StartAt::After(self.at.clone())
    }

    /// Takes a catch-up read from [`Followed::start`]: the publications to
    /// announce, in order, or `Err(position)` when history cannot fill the
    /// gap (trimmed, or lost with its epoch), so the channel's readers must
    /// reset to `position`. When `c.truncated`, read again.
    pub fn caught_up(&mut self, c: Catchup) -> Result<Vec<Arc<Publication>>, Position> {
        if c.reset {
            self.at = c.position.clone();
            return Err(c.position);
        }
        let at = self.at.offset;
        self.at = c.next_position();
        Ok(c.messages.into_iter().filter(|m| m.offset > at).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch() -> ChannelName {
        ChannelName::new("shared").unwrap()
    }

    fn epoch(s: &str) -> Epoch {
        Epoch::new(s).unwrap()
    }

    fn publication(e: &str, offset: u64) -> Arc<Publication> {
        Arc::new(Publication::new(
            ch(),
            epoch(e),
            offset,
            None,
            Data::json(&offset.to_string()).unwrap(),
            1_000,
        ))
    }

    #[test]
    fn bodies_and_announcements_round_trip() {
        let event = EventName::new("greet").unwrap();
        for (event, data) in [
            (None, Data::json(r#"{"a":"b:c"}"#).unwrap()),
            (Some(&event), Data::Binary(Bytes::from_static(b"\0\xff:"))),
        ] {
            let body = encode_body(event, &data);
            let p = decode_body(ch(), epoch("E1"), 7, 99, &body).unwrap();
            assert_eq!((p.offset, p.time, p.event.as_ref()), (7, 99, event));
            let mut live = b"7:E1:99:".to_vec();
            live.extend_from_slice(&body);
            let q = decode_live(ch(), &live).unwrap();
            assert_eq!(q.json(), p.json());
            assert_eq!(q.position(), p.position());
        }
        for bad in [&b""[..], b"x\0{}", b"j\x05ab", b"j\0{", b"j\x01!{}"] {
            assert!(
                decode_body(ch(), epoch("E"), 1, 0, bad).is_none(),
                "{bad:?}"
            );
        }
        for bad in [
            &b"1:E1:5"[..],
            b"x:E1:5:j\0{}",
            b"1:E!:5:j\0{}",
            b"1:E1:-5:j\0{}",
        ] {
            assert!(decode_live(ch(), bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn answers_follow_the_memory_logs_rules() {
        let top = Position::new(epoch("E"), 5);
        let kept = |from: u64| (from..=5).map(|o| publication("E", o)).collect::<Vec<_>>();
        let after = |e: &str, o| StartAt::After(Position::new(epoch(e), o));
        let offsets = |c: &Catchup| c.messages.iter().map(|m| m.offset).collect::<Vec<_>>();
        // Within what is kept.
        let c = answer(ch(), top.clone(), &after("E", 2), kept(3), 100);
        assert_eq!(
            (offsets(&c), c.reset, c.truncated),
            (vec![3, 4, 5], false, false)
        );
        let c = answer(ch(), top.clone(), &after("E", 2), kept(3), 2);
        assert_eq!((offsets(&c), c.truncated), (vec![3, 4], true));
        // Trimmed: the store's oldest is past what the reader needs.
        assert!(answer(ch(), top.clone(), &after("E", 1), kept(3), 100).reset);
        assert!(answer(ch(), top.clone(), &after("X", 0), kept(3), 100).reset);
        assert!(!answer(ch(), top.clone(), &after("X", 0), kept(1), 100).reset);
        // Another epoch, beyond the top, at the top.
        assert!(answer(ch(), top.clone(), &after("X", 2), kept(3), 100).reset);
        assert!(answer(ch(), top.clone(), &after("E", 6), vec![], 100).reset);
        let c = answer(ch(), top.clone(), &after("E", 5), vec![], 100);
        assert!(!c.reset && c.messages.is_empty());
        // Now and earliest.
        assert!(answer(ch(), top.clone(), &StartAt::Now, kept(1), 100)
            .messages
            .is_empty());
        let c = answer(ch(), top, &StartAt::Earliest, kept(3), 100);
        assert_eq!(offsets(&c), [3, 4, 5]);
    }

    #[test]
    fn a_followed_channel_takes_the_next_drops_the_old_and_sees_gaps() {
        let mut f = Followed::new(Position::new(epoch("E"), 2));
        assert_eq!(f.live(&publication("E", 2)), Live::Old);
        assert_eq!(f.live(&publication("E", 3)), Live::Next);
        assert_eq!(f.live(&publication("E", 5)), Live::Gap);
        assert_eq!(f.live(&publication("F", 4)), Live::Gap, "another epoch");
        assert_eq!(f.position().offset, 3);
        // A catch-up announces only what is new, and may need another read.
        let c = Catchup {
            channel: ch(),
            position: Position::new(epoch("E"), 9),
            messages: (2..=6).map(|o| publication("E", o)).collect(),
            reset: false,
            truncated: true,
        };
        let got = f.caught_up(c).unwrap();
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(f.position().offset, 6);
        assert_eq!(f.live(&publication("E", 5)), Live::Old);
        // History could not fill it: reset to the top.
        let lost = Catchup {
            channel: ch(),
            position: Position::new(epoch("F"), 40),
            messages: vec![],
            reset: true,
            truncated: false,
        };
        assert_eq!(f.caught_up(lost), Err(Position::new(epoch("F"), 40)));
        assert_eq!(f.live(&publication("F", 41)), Live::Next);
        // A channel with nothing when followed starts in any epoch.
        let mut fresh = Followed::new(Position::new(epoch("E"), 0));
        assert_eq!(fresh.live(&publication("G", 1)), Live::Next);
        assert_eq!(fresh.position(), &Position::new(epoch("G"), 1));
    }

    proptest! {
        /// Whatever the live feed drops, repeats or reorders, announcing
        /// `Next`s and filling every `Gap` from the store gives each
        /// offset once, in order.
        #[test]
        fn gaps_filled_from_the_store_announce_each_offset_once_in_order(
            feed in proptest::collection::vec(1u64..40, 0..80),
            start in 0u64..5,
        ) {
            let mut f = Followed::new(Position::new(epoch("E"), start));
            let mut announced = Vec::new();
            let top = feed.iter().copied().max().unwrap_or(0).max(start);
            for offset in feed {
                let p = publication("E", offset);
                match f.live(&p) {
                    Live::Next => announced.push(offset),
                    Live::Old => {}
                    Live::Gap => {
                        // The store holds everything up to the newest sent.
                        let read = answer(
                            ch(),
                            Position::new(epoch("E"), offset.max(f.position().offset)),
                            &f.start(),
                            (f.position().offset + 1..=offset).map(|o| publication("E", o)).collect(),
                            usize::MAX,
                        );
                        let more = f.caught_up(read).expect("nothing was trimmed");
                        announced.extend(more.iter().map(|m| m.offset));
                        prop_assert_eq!(f.live(&p), Live::Old);
                    }
                }
            }
            let want: Vec<u64> = (start + 1..=announced.last().copied().unwrap_or(start)).collect();
            prop_assert_eq!(&announced, &want);
            prop_assert!(announced.last().copied().unwrap_or(start) <= top);
        }
    }
}
