//! The log: where a channel's publications get their offsets and are kept.
//!
//! A storage backend implements [`Log`] and nothing else. It assigns offsets
//! and epochs, keeps history, answers range reads, and tells one listener
//! (the [`crate::hub::Hub`]) of every append in offset order. Who is
//! subscribed, and how a message reaches a socket, are the hub's business.
//! [`MemoryLog`] is the single-node default; every implementation passes
//! the same [`conformance`] suite.

pub mod conformance;
mod memory;
pub mod record;
pub mod shared;

use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::{ChannelName, EventName};
use crate::cursor::Position;
use crate::error::Error;
use crate::publication::{Data, Publication};

pub use memory::{MemoryLog, MemoryLogConfig};

/// Where a read starts in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only what is published from now on.
    Now,
    /// From the oldest retained publication.
    Earliest,
    /// Exactly after this position.
    After(Position),
}

/// The answer to a read: where the channel is, and what the caller missed
/// since its start position.
#[derive(Debug, Clone, PartialEq)]
pub struct Catchup {
    /// The channel, as the log holds it. Keeping this name (rather than the
    /// caller's equal copy) lets fan-out compare names by pointer.
    pub channel: ChannelName,
    /// The channel's epoch and newest offset at the time of the read.
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

/// Hears of appends (see [`Log::watch`]). Called on the appender's thread,
/// possibly under the log's locks: it must not block, and must not call
/// back into the log.
pub trait Appended: Send + Sync {
    /// `p` was appended and can be read.
    fn appended(&self, p: &Arc<Publication>);

    /// The log lost publications of `channel` it had announced (a backend
    /// restarted without its data): readers must reload; the channel now
    /// stands at `position`.
    fn lost(&self, channel: &ChannelName, position: Position);
}

/// Storage of channels' publications. Every call may talk to something
/// remote, so reads and appends are async and fallible; failures come back
/// as errors of kind [`crate::ErrorKind::Unavailable`], never swallowed.
///
/// The contract, checked by [`conformance`]:
/// - offsets of a channel are 1, 2, 3, … without gaps within an epoch;
///   concurrent appends get distinct offsets;
/// - a channel's epoch changes only when its history is lost as a whole;
///   reading a channel that has no state yet gives it one (offset 0), and
///   the next append continues that epoch;
/// - a read after a position that history no longer covers (trimmed,
///   expired, another epoch, or beyond the top) answers `reset`; offset 0
///   is "before anything" in any epoch while offset 1 is still retained;
/// - [`Log::watch`]'s listener hears of every append to a channel it
///   follows ([`Log::follow`]), this node's and, for a shared log, other
///   nodes', per channel in offset order, and only once the publication
///   can be read. (A log of this process may tell it of every channel.)
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Gives the publication the channel's next offset and keeps it; returns
    /// once it can be read (and, for a durable log, is durable).
    async fn append(
        &self,
        channel: ChannelName,
        event: Option<EventName>,
        data: Data,
    ) -> Result<Arc<Publication>, Error>;

    /// At most `limit` publications after `start`, oldest first.
    async fn read(
        &self,
        channel: &ChannelName,
        start: StartAt,
        limit: usize,
    ) -> Result<Catchup, Error>;

    /// Registers the listener that hears of every append from now on. A log
    /// has one (the hub); later calls are ignored.
    fn watch(&self, listener: Arc<dyn Appended>);

    /// The hub has subscribers of `channel` from now on. Returns once the
    /// listener will hear of every later append, whichever node made it:
    /// the hub reads the channel only after this, so that a publication is
    /// in its read or announced, or both. A shared log subscribes to the
    /// channel's announcements here (and keeps following it until
    /// [`Log::unfollow`]); a log of this process hears of every append
    /// anyway.
    async fn follow(&self, channel: &ChannelName) -> Result<(), Error> {
        let _ = channel;
        Ok(())
    }

    /// The hub has no subscriber of `channel` any more. Called under the
    /// hub's lock, so that a later [`Log::follow`] comes after it: it must
    /// not block, and must not call the listener.
    fn unfollow(&self, channel: &ChannelName) {
        let _ = channel;
    }

    /// Upkeep: expire history, and forget channels that are idle, empty and
    /// not `in_use` (a channel with subscribers keeps its epoch, so they are
    /// not told to reload for nothing). Cheap to call.
    async fn sweep(&self, in_use: &(dyn for<'c> Fn(&'c ChannelName) -> bool + Sync)) {
        let _ = in_use;
    }

    /// The server is stopping: make everything appended durable, and mark
    /// the stop as clean. Appends after it fail.
    fn close(&self) {}
}
