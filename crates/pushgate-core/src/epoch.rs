//! The epoch: an id that changes whenever a channel's history is lost.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{Error, ErrorKind};

/// Longest epoch, in characters.
pub const MAX_EPOCH_LEN: usize = 32;

/// 1–32 characters of the base64url alphabet (`A-Z a-z 0-9 - _`), so an epoch
/// can stand in a cursor, a URL or an SSE id without escaping.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A fresh random epoch (64 random bits, 11 characters).
    pub fn random() -> Self {
        let bytes: [u8; 8] = rand::random();
        Epoch(Arc::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks an epoch a client sent. Clients send epochs only inside cursors,
    /// so a bad one is an [`ErrorKind::InvalidCursor`].
    pub fn new(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= MAX_EPOCH_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::new(
                ErrorKind::InvalidCursor,
                "epoch must be 1-32 characters of A-Z a-z 0-9 - _",
            ));
        }
        Ok(Epoch(Arc::from(s)))
    }

    /// The epoch as it appears in cursors and replies.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_epochs_are_valid_and_differ() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        assert_eq!(Epoch::new(a.as_str()).unwrap(), a);
    }
}
