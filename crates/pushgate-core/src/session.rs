//! A connection's subscription state: where each channel stands, which live
//! events are duplicates of a catch-up, and the cursor to resume from.
//!
//! The same logic serves every transport, so "exactly once, in order" is
//! decided here and only here.

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::ChannelName;
use crate::cursor::{Cursor, Position, Positions, Since, Standing};
use crate::error::{Error, ErrorKind};
use crate::hub::outbox::{DirectSink, Outbox, OutboxEvent};
use crate::hub::LiveEvent;
use crate::log::{Catchup, StartAt};
use crate::publication::Publication;

/// What to send for one event the outbox produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    /// Send this message.
    Message(Arc<Publication>),
    /// Tell the client to reload state for `channel`; it now stands at `position`.
    Reset {
        /// The channel to reload.
        channel: ChannelName,
        /// Where the client stands once it has.
        position: Position,
    },
    /// A `join`, `leave` or `signal` of a subscribed channel: sent as it
    /// is, with no cursor (it has no offset and moves nothing).
    Live(Arc<LiveEvent>),
}

/// A connection's subscriptions: for each channel, the last offset
/// delivered (or skipped over by a reset).
#[derive(Debug, Default)]
pub struct Session {
    subs: Positions,
    /// A `u32`, not a `usize`: it keeps the session, held by every idle
    /// connection, 8 bytes smaller.
    max_subscriptions: u32,
    /// The positions are lent to the outbox (see [`Session::park`]).
    parked: bool,
    /// The connection is no member of its channels' presence and hears no
    /// join/leave: a poll request, which is no held connection. Here,
    /// beside `parked`, where it costs no memory.
    no_presence: bool,
}

impl Session {
    /// A session with no subscriptions that allows at most `max_subscriptions`.
    pub fn new(max_subscriptions: usize) -> Self {
        Session {
            subs: Positions::new(),
            max_subscriptions: u32::try_from(max_subscriptions).unwrap_or(u32::MAX),
            parked: false,
            no_presence: false,
        }
    }

    /// Keeps the connection out of presence: it joins no member list and
    /// join/leave events are dropped.
    pub fn leave_presence_out(&mut self) {
        self.no_presence = true;
    }

    /// Whether the connection takes part in presence.
    pub fn takes_part_in_presence(&self) -> bool {
        !self.no_presence
    }

    /// Lends the positions to `outbox`, so that fan-out may write the next
    /// messages through `sink` and move them along (see [`Outbox::park`]).
    /// The session must not be used again before [`Session::unpark`].
    pub fn park(&mut self, outbox: &Outbox, sink: &Arc<dyn DirectSink>) -> bool {
        if !self.parked {
            self.parked = outbox.park(sink, &mut self.subs);
        }
        self.parked
    }

    /// Takes the positions back, as fan-out left them; returns the unwritten
    /// end of a frame fan-out began, to be written before anything else.
    pub fn unpark(&mut self, outbox: &Outbox) -> Option<Bytes> {
        if !std::mem::take(&mut self.parked) {
            return None;
        }
        outbox.unpark(&mut self.subs)
    }

    fn subs(&self) -> &Positions {
        debug_assert!(!self.parked, "a parked session's positions are lent out");
        &self.subs
    }

    fn subs_mut(&mut self) -> &mut Positions {
        debug_assert!(!self.parked, "a parked session's positions are lent out");
        &mut self.subs
    }

    /// Whether it follows `channel`.
    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.subs().iter().any(|s| s.channel == *channel)
    }

    /// The channels it follows, oldest subscription first.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.subs().iter().map(|s| &s.channel)
    }

    /// How many channels it follows.
    pub fn len(&self) -> usize {
        self.subs().len()
    }

    /// Whether it follows none.
    pub fn is_empty(&self) -> bool {
        self.subs().is_empty()
    }

    /// Checks that `channel` may be subscribed now.
    pub fn check_subscribe(&self, channel: &ChannelName) -> Result<(), Error> {
        if self.is_subscribed(channel) {
            return Err(Error::new(
                ErrorKind::AlreadySubscribed,
                format!("already subscribed to {channel}"),
            ));
        }
        if self.subs().len() >= self.max_subscriptions as usize {
            return Err(Error::new(
                ErrorKind::TooManySubscriptions,
                format!(
                    "a connection may hold at most {} subscriptions",
                    self.max_subscriptions
                ),
            ));
        }
        Ok(())
    }

    /// Records a completed subscription at the position it starts from and
    /// returns the catch-up as events to pass through [`Session::accept`] one
    /// by one, so that a per-event cursor (SSE `id:`) is exact at every step.
    pub fn subscribed(&mut self, catchup: Catchup) -> Vec<OutboxEvent> {
        let channel = catchup.channel;
        let top = catchup.position;
        if catchup.reset {
            self.subs_mut().push(Standing {
                channel: channel.clone(),
                epoch: top.epoch.clone(),
                offset: top.offset,
            });
            return vec![OutboxEvent::Reset {
                channel,
                position: top,
            }];
        }
        let start = catchup
            .messages
            .first()
            .map_or(top.offset, |first| first.offset - 1);
        self.subs_mut().push(Standing {
            channel,
            epoch: top.epoch,
            offset: start,
        });
        catchup
            .messages
            .into_iter()
            .map(OutboxEvent::Message)
            .collect()
    }

    /// Stops following `channel`: its later events are dropped. The caller
    /// unsubscribes from the hub too.
    pub fn unsubscribe(&mut self, channel: &ChannelName) -> Result<(), Error> {
        let subs = self.subs_mut();
        let before = subs.len();
        subs.retain(|s| s.channel != *channel);
        if subs.len() == before {
            return Err(Error::new(
                ErrorKind::NotSubscribed,
                format!("not subscribed to {channel}"),
            ));
        }
        Ok(())
    }

    /// Decides what a live event becomes: nothing (a duplicate of the catch-up,
    /// or a channel no longer subscribed), the message, or a reset first.
    pub fn accept(&mut self, event: OutboxEvent, out: &mut Vec<Emit>) {
        self.accept_with(event, |e| out.push(e));
    }

    /// [`Session::accept`], handing each emit to `out`.
    pub fn accept_with(&mut self, event: OutboxEvent, mut out: impl FnMut(Emit)) {
        match event {
            OutboxEvent::Message(p) => {
                let Some(sub) = self.subs_mut().iter_mut().find(|s| s.channel == p.channel) else {
                    return;
                };
                if p.epoch == sub.epoch {
                    if p.offset <= sub.offset {
                        return;
                    }
                    if p.offset == sub.offset + 1 {
                        sub.offset = p.offset;
                        out(Emit::Message(p));
                        return;
                    }
                }
                // A new epoch or a hole: the backend lost something. Never hide it.
                sub.epoch = p.epoch.clone();
                sub.offset = p.offset;
                out(Emit::Reset {
                    channel: p.channel.clone(),
                    position: Position::new(p.epoch.clone(), p.offset - 1),
                });
                out(Emit::Message(p));
            }
            OutboxEvent::Reset { channel, position } => {
                let Some(sub) = self.subs_mut().iter_mut().find(|s| s.channel == channel) else {
                    return;
                };
                sub.epoch = position.epoch.clone();
                sub.offset = position.offset;
                out(Emit::Reset { channel, position });
            }
            OutboxEvent::Live(event) => {
                if !self.no_presence && self.is_subscribed(&event.channel) {
                    out(Emit::Live(event));
                }
            }
        }
    }

    /// The cursor covering every subscribed channel.
    pub fn cursor(&self) -> Cursor {
        let mut c = Cursor::new();
        for s in self.subs() {
            c.set(s.channel.clone(), Position::new(s.epoch.clone(), s.offset));
        }
        c
    }

    /// Writes the cursor text into `out`, reusing its buffer; for per-event SSE ids.
    pub fn encode_cursor(&self, out: &mut String) {
        out.clear();
        for (i, s) in self.subs().iter().enumerate() {
            if i > 0 {
                out.push('~');
            }
            crate::cursor::encode_entry(out, &s.channel, &Position::new(s.epoch.clone(), s.offset));
        }
    }
}

/// Where a subscription to `channel` starts, given the request's `since`.
pub fn start_at(since: &Since, channel: &ChannelName) -> StartAt {
    match since {
        Since::Now => StartAt::Now,
        Since::Earliest => StartAt::Earliest,
        Since::Cursor(c) => c
            .get(channel)
            .map_or(StartAt::Now, |p| StartAt::After(p.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Data, Epoch};

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn publ(c: &str, e: &str, o: u64) -> Arc<Publication> {
        Arc::new(Publication::new(
            ch(c),
            Epoch::new(e).unwrap(),
            o,
            None,
            Data::json("0").unwrap(),
            0,
        ))
    }

    fn offsets(e: &[Emit]) -> Vec<String> {
        e.iter()
            .map(|e| match e {
                Emit::Message(p) => format!("m{}", p.offset),
                Emit::Reset { position, .. } => format!("r{}", position.offset),
                Emit::Live(e) => e.kind.name().to_string(),
            })
            .collect()
    }

    fn catchup(c: &str, e: &str, top: u64, msgs: Vec<Arc<Publication>>, reset: bool) -> Catchup {
        Catchup {
            channel: ch(c),
            position: Position::new(Epoch::new(e).unwrap(), top),
            messages: msgs,
            reset,
            truncated: false,
        }
    }

    #[test]
    fn live_duplicates_of_catchup_are_dropped() {
        let mut s = Session::new(10);
        let mut out = Vec::new();
        let first = s.subscribed(catchup(
            "a",
            "e",
            3,
            vec![publ("a", "e", 2), publ("a", "e", 3)],
            false,
        ));
        assert_eq!(
            s.cursor().get(&ch("a")).unwrap().offset,
            1,
            "stands before the catch-up"
        );
        for ev in first {
            s.accept(ev, &mut out);
        }
        for o in [2, 3, 4, 5] {
            s.accept(OutboxEvent::Message(publ("a", "e", o)), &mut out);
        }
        assert_eq!(offsets(&out), vec!["m2", "m3", "m4", "m5"]);
        assert_eq!(s.cursor().get(&ch("a")).unwrap().offset, 5);
    }

    #[test]
    fn epoch_change_or_hole_resets_before_delivering() {
        let mut s = Session::new(10);
        s.subscribed(catchup("a", "e", 1, vec![], false));
        let mut out = Vec::new();
        s.accept(OutboxEvent::Message(publ("a", "e", 3)), &mut out);
        s.accept(OutboxEvent::Message(publ("a", "f", 1)), &mut out);
        assert_eq!(offsets(&out), vec!["r2", "m3", "r0", "m1"]);
    }

    #[test]
    fn reset_catchup_and_limits() {
        let mut s = Session::new(1);
        let mut e = Vec::new();
        for ev in s.subscribed(catchup("a", "e", 9, vec![], true)) {
            s.accept(ev, &mut e);
        }
        assert_eq!(offsets(&e), vec!["r9"]);
        assert_eq!(
            s.check_subscribe(&ch("a")).unwrap_err().kind(),
            ErrorKind::AlreadySubscribed
        );
        assert_eq!(
            s.check_subscribe(&ch("b")).unwrap_err().kind(),
            ErrorKind::TooManySubscriptions
        );
        s.unsubscribe(&ch("a")).unwrap();
        assert_eq!(
            s.unsubscribe(&ch("a")).unwrap_err().kind(),
            ErrorKind::NotSubscribed
        );
        let mut out = Vec::new();
        s.accept(OutboxEvent::Message(publ("a", "e", 10)), &mut out);
        assert!(
            out.is_empty(),
            "events of a dropped subscription are ignored"
        );
    }

    #[test]
    fn cursor_text_matches_cursor_encode() {
        let mut s = Session::new(10);
        s.subscribed(catchup("a", "e", 1, vec![], false));
        s.subscribed(catchup("b", "f", 2, vec![], false));
        let mut text = String::new();
        s.encode_cursor(&mut text);
        assert_eq!(text, s.cursor().encode());
    }

    #[test]
    fn start_positions() {
        let mut c = Cursor::new();
        c.set(ch("a"), Position::new(Epoch::new("e").unwrap(), 4));
        let since = Since::Cursor(c);
        assert!(matches!(start_at(&since, &ch("a")), StartAt::After(p) if p.offset == 4));
        assert_eq!(start_at(&since, &ch("b")), StartAt::Now);
        assert_eq!(start_at(&Since::Earliest, &ch("b")), StartAt::Earliest);
    }
}
