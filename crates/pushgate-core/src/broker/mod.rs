//! The broker: history and fan-out behind one async seam.
//!
//! Every call is async and fallible because the next implementations (Redis, a
//! durable embedded store) talk to something remote. [`MemoryBroker`] is the
//! single-node default.

mod memory;

use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::{ChannelName, EventName};
use crate::cursor::Position;
use crate::error::Error;
use crate::outbox::Outbox;
use crate::publication::{Data, Publication};

pub use memory::{MemoryBroker, MemoryBrokerConfig};

/// Identifies one subscribing connection within this process.
pub type SubscriberId = u64;

/// A connection as fan-out sees it: where to put its events.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: SubscriberId,
    pub outbox: Arc<Outbox>,
}

/// Where a read or subscription starts in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only what is published from now on.
    Now,
    /// From the oldest retained publication.
    Earliest,
    /// Exactly after this position.
    After(Position),
}

/// The answer to a read or a subscription: where the channel is, and what the
/// caller missed since its start position.
#[derive(Debug, Clone, PartialEq)]
pub struct Catchup {
    /// The channel, as the broker holds it. Keeping this name (rather than
    /// the caller's equal copy) lets fan-out compare names by pointer.
    pub channel: ChannelName,
    /// The channel's epoch and newest offset at the time of the call.
    pub position: Position,
    /// Missed publications, oldest first; empty when `reset`.
    pub messages: Vec<Arc<Publication>>,
    /// The start position could not be honoured (history trimmed or expired,
    /// or the epoch changed): the caller must tell its client to reload state.
    pub reset: bool,
    /// More publications follow the last of `messages` than `limit` allowed.
    pub truncated: bool,
}

impl Catchup {
    /// Where a reader stands after consuming this catch-up.
    pub fn next_position(&self) -> Position {
        match self.messages.last() {
            Some(last) if self.truncated => last.position(),
            _ => self.position.clone(),
        }
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the next offset, stores the publication in history, then fans
    /// it out to the channel's subscribers in offset order.
    async fn publish(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error>;

    /// Registers `subscriber` for live publications of `channel` and returns
    /// what it missed since `start`. Live events may overlap the returned
    /// messages; [`crate::Session`] drops the duplicates by offset.
    async fn subscribe(
        &self,
        channel: &ChannelName,
        start: StartAt,
        subscriber: &Subscriber,
    ) -> Result<Catchup, Error>;

    /// Stops fan-out to `subscriber` on `channel`. Idempotent, and never
    /// waits: it runs when a connection is dropped, so a remote backend does
    /// its remote part (e.g. leaving a pub/sub channel) in the background.
    fn unsubscribe(&self, channel: &ChannelName, subscriber: SubscriberId);

    /// Reads history without subscribing, at most `limit` publications.
    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error>;

    /// Periodic upkeep: expire history, forget idle channels. Cheap to call.
    async fn sweep(&self) {}
}
