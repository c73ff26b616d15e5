//! The cursor: a URL-safe position per channel, the same on every transport.
//!
//! Text form (documented in `docs/protocol.md`):
//!
//! ```text
//! cursor = entry *( "~" entry )
//! entry  = base64url(channel) "." epoch "." offset
//! ```
//!
//! `base64url` is RFC 4648 §5 without padding, the epoch is base64url characters
//! already, the offset is decimal. Every character is unreserved in a URL and
//! legal in an SSE `id:`. The empty string is the empty cursor. The special
//! value `earliest` (see [`Since`]) means "from the oldest retained message".

use std::fmt::{self, Write as _};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};

use crate::channel::{ChannelName, MAX_CHANNEL_LEN};
use crate::epoch::Epoch;
use crate::error::{Error, ErrorKind};

/// Longest accepted cursor text.
pub const MAX_CURSOR_LEN: usize = 16 * 1024;
/// Most channels one cursor may name.
pub const MAX_CURSOR_ENTRIES: usize = 256;

/// A position in one channel: the last offset seen, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history lifetime `offset` counts in.
    pub epoch: Epoch,
    /// The last offset seen; 0 is before the first message.
    pub offset: u64,
}

impl Position {
    /// Offset `offset` of `epoch`.
    pub fn new(epoch: Epoch, offset: u64) -> Self {
        Position { epoch, offset }
    }
}

/// Where a connection stands in one of its channels: the last offset it
/// received (or was reset to), in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The channel subscribed to.
    pub channel: ChannelName,
    /// The epoch followed: a message of another one means history was lost.
    pub epoch: Epoch,
    /// The last offset delivered, or reset to.
    pub offset: u64,
}

/// A connection's standings. Most connections follow one channel: it is
/// kept inline, so fan-out finds it without following another pointer.
pub type Positions = smallvec::SmallVec<[Standing; 1]>;

/// Positions in several channels, at most one per channel, in insertion order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    entries: Vec<(ChannelName, Position)>,
}

impl Cursor {
    /// The empty cursor: every channel starts now.
    pub fn new() -> Self {
        Cursor::default()
    }

    /// Whether it names no channel.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many channels it names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where `channel` resumes; `None` when the cursor does not name it.
    pub fn get(&self, channel: &ChannelName) -> Option<&Position> {
        self.entries
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, p)| p)
    }

    /// Sets the position of `channel`, adding it if absent.
    pub fn set(&mut self, channel: ChannelName, position: Position) {
        match self.entries.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, p)) => *p = position,
            None => self.entries.push((channel, position)),
        }
    }

    /// Forgets `channel`, which then starts now.
    pub fn remove(&mut self, channel: &ChannelName) {
        self.entries.retain(|(c, _)| c != channel);
    }

    /// Every channel with its position, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelName, &Position)> {
        self.entries.iter().map(|(c, p)| (c, p))
    }

    /// Parses the text form. Never panics; every failure is `InvalidCursor` or `TooLarge`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("cursor is longer than {MAX_CURSOR_LEN} bytes"),
            ));
        }
        let mut cursor = Cursor::new();
        if text.is_empty() {
            return Ok(cursor);
        }
        for (i, entry) in text.split('~').enumerate() {
            if i >= MAX_CURSOR_ENTRIES {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("cursor names more than {MAX_CURSOR_ENTRIES} channels"),
                ));
            }
            let (channel, position) = parse_entry(entry).map_err(|why| {
                Error::new(
                    ErrorKind::InvalidCursor,
                    format!(
                        "cursor entry {} is malformed: {why}; use a cursor the server gave you",
                        i + 1
                    ),
                )
            })?;
            if cursor.get(&channel).is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidCursor,
                    format!("cursor names channel {channel} twice"),
                ));
            }
            cursor.entries.push((channel, position));
        }
        Ok(cursor)
    }

    /// The text form; `Cursor::parse(&c.encode()) == Ok(c)`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.entries.len() * 32);
        for (i, (channel, position)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push('~');
            }
            encode_entry(&mut out, channel, position);
        }
        out
    }
}

/// Appends one `channel.epoch.offset` entry; also used to build single-channel
/// SSE ids without a `Cursor` allocation.
pub fn encode_entry(out: &mut String, channel: &ChannelName, position: &Position) {
    URL_SAFE_NO_PAD.encode_string(channel.as_str(), out);
    out.push('.');
    out.push_str(position.epoch.as_str());
    out.push('.');
    let _ = write!(out, "{}", position.offset);
}

fn parse_entry(entry: &str) -> Result<(ChannelName, Position), &'static str> {
    let mut parts = entry.split('.');
    let (Some(ch), Some(ep), Some(off), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected channel.epoch.offset");
    };
    // Decoded on the stack: every long-poll and resume parses a cursor, and
    // `decode` allocates with calloc, which glibc serves without its
    // per-thread cache (measured: 3 % of a 10,000-long-poll fan-out).
    let mut raw = [0u8; MAX_CHANNEL_LEN];
    let len = match URL_SAFE_NO_PAD.decode_slice(ch, &mut raw) {
        Ok(len) => len,
        Err(DecodeSliceError::OutputSliceTooSmall) => return Err("channel name is not valid"),
        Err(DecodeSliceError::DecodeError(_)) => return Err("channel is not base64url"),
    };
    let name = std::str::from_utf8(&raw[..len]).map_err(|_| "channel is not UTF-8")?;
    let channel = ChannelName::new(name).map_err(|_| "channel name is not valid")?;
    let epoch = Epoch::new(ep).map_err(|_| "epoch is not valid")?;
    if off.is_empty() || !off.bytes().all(|b| b.is_ascii_digit()) {
        return Err("offset is not a decimal number");
    }
    let offset = off.parse::<u64>().map_err(|_| "offset is out of range")?;
    Ok((channel, Position { epoch, offset }))
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Where a request wants to start, as given by `since` or `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Since {
    /// No `since`: live messages only, from the current position.
    #[default]
    Now,
    /// `since=earliest`: from the oldest message still retained, on every channel.
    Earliest,
    /// Exactly after these positions; channels the cursor does not name start now.
    Cursor(Cursor),
}

/// The keyword for [`Since::Earliest`].
pub const EARLIEST: &str = "earliest";

impl Since {
    /// Parses a `since` value; an empty string means no `since`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "" => Ok(Since::Now),
            EARLIEST => Ok(Since::Earliest),
            _ => Cursor::parse(text).map(Since::Cursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn known_encoding() {
        let mut c = Cursor::new();
        c.set(ch("news"), Position::new(Epoch::new("abc").unwrap(), 42));
        c.set(ch("chat"), Position::new(Epoch::new("x_y-z").unwrap(), 7));
        assert_eq!(c.encode(), "bmV3cw.abc.42~Y2hhdA.x_y-z.7");
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
    }

    #[test]
    fn the_longest_channel_name_round_trips_and_a_longer_one_is_refused() {
        let mut c = Cursor::new();
        let longest = "x".repeat(MAX_CHANNEL_LEN);
        c.set(ch(&longest), Position::new(Epoch::new("e").unwrap(), 1));
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        let longer = URL_SAFE_NO_PAD.encode("x".repeat(MAX_CHANNEL_LEN + 1));
        let err = Cursor::parse(&format!("{longer}.e.1")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCursor);
        assert!(
            err.to_string().contains("channel name is not valid"),
            "{err}"
        );
        let err = Cursor::parse("!!.e.1").unwrap_err();
        assert!(err.to_string().contains("not base64url"), "{err}");
    }

    #[test]
    fn set_replaces() {
        let mut c = Cursor::new();
        let e = Epoch::new("e").unwrap();
        c.set(ch("a"), Position::new(e.clone(), 1));
        c.set(ch("a"), Position::new(e.clone(), 2));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&ch("a")).unwrap().offset, 2);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "x",
            "bmV3cw.abc",
            "bmV3cw.abc.",
            "bmV3cw.abc.-1",
            "bmV3cw.abc.1.2",
            "bmV3cw..1",
            "!!!.abc.1",
            "bmV3cw.abc.99999999999999999999999",
            "bmV3cw.abc.1~bmV3cw.abc.2",
            "~",
            "bmV3cw.a+c.1",
        ] {
            let err = Cursor::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidCursor, "{bad:?}");
        }
        let huge = "a".repeat(MAX_CURSOR_LEN + 1);
        assert_eq!(
            Cursor::parse(&huge).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
    }

    #[test]
    fn since_keywords() {
        assert_eq!(Since::parse("").unwrap(), Since::Now);
        assert_eq!(Since::parse("earliest").unwrap(), Since::Earliest);
        assert!(matches!(
            Since::parse("bmV3cw.abc.4").unwrap(),
            Since::Cursor(_)
        ));
    }

    fn channel_strategy() -> impl Strategy<Value = ChannelName> {
        "[A-Za-z0-9_.:@/=+#$!~*-]{1,40}".prop_map(|s| ChannelName::new(&s).unwrap())
    }

    fn epoch_strategy() -> impl Strategy<Value = Epoch> {
        "[A-Za-z0-9_-]{1,32}".prop_map(|s| Epoch::new(&s).unwrap())
    }

    proptest! {
        #[test]
        fn roundtrip(entries in proptest::collection::vec((channel_strategy(), epoch_strategy(), any::<u64>()), 0..20)) {
            let mut c = Cursor::new();
            for (ch, ep, off) in entries {
                c.set(ch, Position::new(ep, off));
            }
            let text = c.encode();
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)));
            prop_assert_eq!(Cursor::parse(&text).unwrap(), c);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Cursor::parse(&s);
            let _ = Since::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_valid(s in "[A-Za-z0-9._~-]{0,200}") {
            if let Ok(c) = Cursor::parse(&s) {
                // Whatever parses re-encodes to something that parses to the same cursor.
                prop_assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
            }
        }
    }
}
