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
//! * [`Log`] is the async seam a storage backend implements: offsets, epochs,
//!   history, range reads, announcements of appends. [`MemoryLog`] is the
//!   single-node implementation; [`log::conformance`] is the contract as tests.
//! * [`Hub`] is local fan-out over a log: subscribers per channel, offset
//!   order, the direct-or-queue rule.
//! * [`Outbox`] is a connection's bounded queue; [`Session`] is a connection's
//!   subscription state (resume, de-duplication, cursor).
//! * [`protocol`] holds client commands, replies and error codes.

pub mod channel;
pub mod clock;
pub mod connection;
pub mod cursor;
pub mod epoch;
pub mod error;
pub mod history;
pub mod hub;
pub mod json;
pub mod log;
pub mod principal;
pub mod protocol;
pub mod publication;
pub mod session;
pub mod websocket;
pub mod wire;

pub use channel::{ChannelName, EventName};
pub use clock::{Clock, ManualClock, Millis, SystemClock};
pub use connection::{Connection, Limits};
pub use cursor::{Cursor, Position, Positions, Since, Standing};
pub use epoch::Epoch;
pub use error::{Error, ErrorKind};
pub use history::History;
pub use hub::{
    DirectSink, Hub, HubConfig, Outbox, OutboxEvent, PushOutcome, Sent, Subscriber, SubscriberId,
};
pub use log::{Appended, Catchup, Log, MemoryLog, MemoryLogConfig, StartAt};
pub use principal::Principal;
pub use publication::{Data, Publication};
pub use session::Session;
