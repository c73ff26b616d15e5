//! WebSocket (RFC 6455) and permessage-deflate (RFC 7692), sans-IO.
//!
//! Bytes in, events out: [`Receiver`] turns what a client sends into whole
//! messages, pings, pongs and closes, or a [`Violation`] naming the close code
//! to fail the connection with. [`frame`] builds server frames; a published
//! message's frame is built once ([`crate::Publication::ws_frame`]) and every
//! subscriber writes the same bytes. [`deflate`] negotiates and applies
//! permessage-deflate without context takeover, so a compressed frame is also
//! built once and shared, and an idle connection holds no compression state.
//!
//! The server side only: client frames must be masked, server frames are not.

pub mod deflate;
pub mod frame;
mod receiver;

pub use deflate::{Deflate, DeflateConfig};
pub use frame::OpCode;
pub use receiver::{Incoming, Receiver};

/// Why the server fails a connection (RFC 6455 §7.4.1), with the close code
/// and reason to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The close code to send.
    pub code: u16,
    /// The close reason to send, for whoever debugs the client.
    pub reason: &'static str,
}

impl Violation {
    /// 1002: the client broke RFC 6455.
    pub const fn protocol(reason: &'static str) -> Self {
        Violation {
            code: close::PROTOCOL_ERROR,
            reason,
        }
    }
    /// 1007: text that is not UTF-8, or data that does not inflate.
    pub const fn invalid_data(reason: &'static str) -> Self {
        Violation {
            code: close::INVALID_DATA,
            reason,
        }
    }
    /// 1009: a message over the size limit.
    pub const fn too_big(reason: &'static str) -> Self {
        Violation {
            code: close::TOO_BIG,
            reason,
        }
    }
}

/// Close codes of RFC 6455 §7.4.1 that the codec itself sends or checks.
pub mod close {
    /// The connection did what it was for.
    pub const NORMAL: u16 = 1000;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message's data does not match its type.
    pub const INVALID_DATA: u16 = 1007;
    /// A message too big to take.
    pub const TOO_BIG: u16 = 1009;

    /// Whether a peer may send `code` in a close frame: the codes RFC 6455
    /// and the IANA registry define for the wire (1004–1006 and 1015 are
    /// reserved for local use), and the ranges for libraries and applications.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
