//! The sans-IO core of pushgate: what a message, a position and a connection
//! are, and every decision about them.
//!
//! Everything here is plain, deterministic Rust: no sockets, no HTTP types, no
//! runtime. Transports in `pushgate-server` are thin adapters that move bytes
//! between the wire and these types, so what a client can rely on (offsets,
//! resume, exactly once in order) is decided here, once, for all of them.
//!
//! # Messages and positions
//!
//! Every publication on a channel ([`ChannelName`]) gets the next offset (1,
//! 2, 3, …) and carries the channel's [`Epoch`], which changes whenever the
//! channel's history is lost. A [`Position`] is an epoch and an offset; a
//! [`Cursor`] holds one per channel as URL-safe text, the same on every
//! transport (`since=`, SSE `Last-Event-ID`), and is all a client needs to
//! resume without loss. A [`Publication`] is encoded once per wire format when
//! it is published; every subscriber shares the same bytes.
//!
//! # The log: storage
//!
//! [`Log`] is the async seam a storage backend implements: offsets, epochs,
//! history, range reads, and announcing every append to one listener.
//! [`MemoryLog`] is the single-node log (a [`History`] ring per channel);
//! [`log::conformance`] is the contract as tests, which every backend runs.
//!
//! # The hub and the outbox: fan-out
//!
//! The [`Hub`] is the log's listener and the only fan-out: subscribers per
//! channel, offset order into every connection's [`Outbox`], a bounded queue
//! that marks a subscriber that falls behind as overflowed rather than grow.
//! A connection with nothing to write *parks*: it lends its positions to its
//! outbox, and fan-out writes an isolated message straight to its socket
//! through a [`DirectSink`] instead of waking it.
//!
//! # The session and the connection: one client
//!
//! A [`Session`] is a connection's subscriptions: where each channel stands,
//! which live events duplicate the catch-up, when to tell the client to
//! reset, and its cursor. A [`Connection`] runs the client's commands
//! ([`protocol`] decodes them and encodes the [`protocol::Reply`]) against
//! the hub and its session; [`Error`] carries a [`ErrorKind`] with a stable
//! wire code.
//!
//! # Wire formats
//!
//! [`websocket`] is the RFC 6455 codec with permessage-deflate, bytes in and
//! messages out; [`wire`] holds the encoders for SSE, NDJSON, poll bodies,
//! the iframe transport and chunked framing.
//!
//! # How a transport uses it
//!
//! One [`Hub`] per process, over a [`Log`]. Per client, a [`Connection`]
//! with a unique id: decode each command with [`protocol::decode`], run it
//! with [`Connection::execute`], send the reply, then pass the events it
//! returned (the catch-up) and every event drained from the
//! [`Connection::outbox`] through [`Connection::accept_each`], and encode
//! each [`session::Emit`] for the wire. With nothing to write, park
//! ([`Connection::park`]); unpark first thing when woken. Drop the
//! connection when the client leaves: that unsubscribes it.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! use futures_util::FutureExt as _;
//! use pushgate_core::session::Emit;
//! use pushgate_core::{protocol, ChannelName, Connection, Data, Hub, HubConfig};
//! use pushgate_core::{Limits, MemoryLog, MemoryLogConfig, Principal};
//!
//! // The memory log never waits: its futures are ready when first polled.
//! let log = Arc::new(MemoryLog::new(MemoryLogConfig::default()));
//! let hub = Arc::new(Hub::new(log, HubConfig::default()));
//! let mut conn = Connection::new(hub.clone(), 1, Limits::default(), Principal::Anonymous);
//!
//! let command = br#"{"type":"subscribe","channel":"news","id":7}"#;
//! let request = protocol::decode(command, protocol::MAX_JSON_DEPTH).expect("a valid command");
//! let id = request.id.clone();
//! let (reply, catchup) = conn.execute(request, Instant::now()).now_or_never().unwrap();
//! assert!(reply.encode(id.as_ref()).starts_with(r#"{"type":"subscribed","id":7,"#));
//! assert!(catchup.is_empty(), "a new channel has no history");
//!
//! let news = ChannelName::new("news")?;
//! let data = Data::json(r#"{"text":"hello"}"#)?;
//! hub.publish(news, None, data).now_or_never().unwrap()?;
//!
//! // Not parked, so fan-out queued the message (and woke the task).
//! let mut events = Vec::new();
//! conn.outbox().try_drain(&mut events);
//! let mut out = Vec::new();
//! conn.accept_each(events, |emit| out.push(emit));
//! let [Emit::Message(p)] = &out[..] else { panic!("{out:?}") };
//! assert_eq!(p.offset, 1);
//! assert!(p.json().ends_with(br#""data":{"text":"hello"}}"#));
//! // The cursor now resumes after offset 1, on any transport.
//! assert!(conn.session().cursor().encode().ends_with(".1"));
//! # Ok::<(), pushgate_core::Error>(())
//! ```

#![deny(missing_docs, unreachable_pub)]

pub mod auth;
pub mod channel;
pub mod clock;
pub mod connection;
pub mod cursor;
pub mod delivery;
pub mod epoch;
pub mod error;
pub mod history;
pub mod hub;
pub mod json;
pub mod log;
pub mod namespace;
pub mod principal;
pub mod protocol;
pub mod publication;
pub mod rate;
pub mod rtc;
pub mod session;
mod sync;
pub mod websocket;
pub mod wire;

pub use auth::{Policy, User};
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
pub use namespace::{Access, Namespace, Namespaces, Rules};
pub use principal::Principal;
pub use publication::{Data, Publication};
pub use session::Session;
