//! Who is on the other end: established once, at admission, and carried by
//! every [`crate::Connection`], so that grants are enforced in the core for
//! every transport alike.

/// The identity admission established for a request or a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Principal {
    /// A client that presented no credentials.
    #[default]
    Anonymous,
    /// An application backend: it presented the API key or, with no key
    /// configured, connected from a loopback address.
    Api,
}
