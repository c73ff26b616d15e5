//! Channel and event names: validated once at the edge, cheap to clone after.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 64;

/// A channel name: 1–255 bytes of ASCII letters, digits and `_ - . : @ / = + # $ ! ~ *`.
///
/// The set is closed on purpose: names appear in SSE fields, HTML (iframe
/// transport), URLs and Redis keys, and none of these characters needs escaping
/// in a JSON string or can end an SSE line or a `<script>` element.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.:@/=+#$!~*".contains(&b)
}

impl ChannelName {
    /// Checks `name` against the rules above; the error says which one it breaks.
    pub fn new(name: &str) -> Result<Self, Error> {
        if name.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidChannel,
                "channel name is empty",
            ));
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(Error::new(
                ErrorKind::InvalidChannel,
                format!("channel name is longer than {MAX_CHANNEL_LEN} bytes"),
            ));
        }
        if let Some(bad) = name.bytes().find(|b| !is_channel_byte(*b)) {
            return Err(Error::new(
                ErrorKind::InvalidChannel,
                format!(
                    "channel name has a character outside A-Z a-z 0-9 _ - . : @ / = + # $ ! ~ * (byte 0x{bad:02x})"
                ),
            ));
        }
        Ok(ChannelName(Arc::from(name)))
    }

    /// The name as clients write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A publisher-chosen event name: 1–64 bytes of ASCII letters, digits and `_ - . :`.
///
/// It becomes the SSE `event:` field, so it must never hold a line break.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Checks `name` against the rules above.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= MAX_EVENT_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !ok {
            return Err(Error::new(
                ErrorKind::InvalidEvent,
                format!("event name must be 1-{MAX_EVENT_LEN} characters of A-Z a-z 0-9 _ - . :"),
            ));
        }
        Ok(EventName(Arc::from(name)))
    }

    /// The name as it goes into the SSE `event:` field.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_names() {
        for n in ["news", "chat:room-1", "user#42", "a/b.c", "$private", "x"] {
            assert_eq!(ChannelName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_unsafe_names() {
        let long = "a".repeat(256);
        for n in ["", "a b", "a\nb", "<script>", "a\"b", "é", long.as_str()] {
            let e = ChannelName::new(n).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidChannel, "{n:?}");
        }
    }

    #[test]
    fn event_names() {
        assert!(EventName::new("price.update").is_ok());
        assert!(EventName::new("a\nb").is_err());
        assert!(EventName::new("").is_err());
    }
}
