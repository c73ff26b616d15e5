//! The sans-IO core of pushgate.
//!
//! Everything here is plain, deterministic Rust: no sockets, no HTTP types, no
//! runtime. Transports in `pushgate-server` are thin adapters that move bytes
//! between the wire and these types.
//!
//! * [`ChannelName`], [`Epoch`] and offsets name a message: every publication on a
//!   channel gets the next offset (1, 2, 3, …) and carries the channel's epoch,
//!   which changes whenever the channel's history is lost.
//! * [`Cursor`] is the URL-safe position a client presents to resume on any
//!   transport (`since=`, SSE `Last-Event-ID`).
//! * [`History`] is the per-channel ring with a size limit and a TTL.
//! * [`Publication`] is encoded once per wire format when it is published; every
//!   subscriber shares the same bytes.
//! * [`Broker`] is the async seam for history and fan-out; [`MemoryBroker`] is the
//!   single-node implementation.
//! * [`Outbox`] is a connection's bounded queue; [`Session`] is a connection's
//!   subscription state (resume, de-duplication, cursor).
//! * [`protocol`] holds client commands, replies and error codes.

pub mod broker;
pub mod channel;
pub mod clock;
pub mod connection;
pub mod cursor;
pub mod epoch;
pub mod error;
pub mod history;
pub mod json;
pub mod outbox;
pub mod protocol;
pub mod publication;
pub mod session;
pub mod websocket;
pub mod wire;

pub use broker::{
    Broker, Catchup, MemoryBroker, MemoryBrokerConfig, StartAt, Subscriber, SubscriberId,
};
pub use channel::{ChannelName, EventName};
pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use connection::{Connection, Limits};
pub use cursor::{Cursor, Position, Since};
pub use epoch::Epoch;
pub use error::{Error, ErrorKind};
pub use history::History;
pub use outbox::{DirectSink, Outbox, OutboxEvent, PushOutcome, Sent};
pub use publication::{Data, Publication};
pub use session::Session;
