//! Who is on the other end: established once, at admission, and carried by
//! every [`crate::Connection`], so that grants are enforced in the core for
//! every transport alike.

use std::sync::Arc;

use crate::auth::User;

/// The identity admission established for a request or a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Principal {
    /// A client that presented no credentials.
    #[default]
    Anonymous,
    /// A client that presented a valid token.
    User(Arc<User>),
    /// An application backend: it presented the API key or, with no key
    /// configured, connected from a loopback address.
    Api,
}

impl Principal {
    /// The user, for a client with a token.
    pub fn user(&self) -> Option<&Arc<User>> {
        match self {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }

    /// When its credentials expire (seconds since the Unix epoch).
    pub fn expires(&self) -> Option<u64> {
        self.user().and_then(|u| u.expires)
    }
}
