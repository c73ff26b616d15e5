//! The per-channel history ring: bounded in count and in age.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::clock::Millis;
use crate::publication::Publication;

/// The newest `capacity` publications of one channel that are younger than
/// `ttl_ms`. Offsets in the ring are consecutive; the oldest are dropped first.
#[derive(Debug)]
pub struct History {
    ring: VecDeque<Arc<Publication>>,
    capacity: usize,
    ttl_ms: Millis,
}

/// What [`History::after`] can say about a position.
#[derive(Debug, PartialEq)]
pub enum Replay {
    /// Every publication after the position, oldest first (may be empty).
    Complete(Vec<Arc<Publication>>),
    /// Some publications after the position are gone (trimmed or expired).
    Gap,
}

impl History {
    /// An empty ring; a `capacity` of 0 keeps nothing (history off).
    pub fn new(capacity: usize, ttl_ms: Millis) -> Self {
        History {
            ring: VecDeque::new(),
            capacity,
            ttl_ms,
        }
    }

    /// How long a publication is kept.
    pub fn ttl_ms(&self) -> Millis {
        self.ttl_ms
    }

    /// Publications retained.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Appends `p`, whose offset must follow the newest retained one.
    pub fn push(&mut self, p: Arc<Publication>, now: Millis) {
        debug_assert!(self
            .ring
            .back()
            .is_none_or(|last| last.offset + 1 == p.offset));
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(p);
        self.expire(now);
    }

    /// Drops publications older than the TTL.
    pub fn expire(&mut self, now: Millis) {
        while let Some(front) = self.ring.front() {
            if now.saturating_sub(front.time) >= self.ttl_ms {
                self.ring.pop_front();
            } else {
                break;
            }
        }
        if self.ring.is_empty() && self.ring.capacity() > 16 {
            self.ring.shrink_to_fit();
        }
    }

    /// Offset of the oldest retained publication.
    pub fn oldest_offset(&self) -> Option<u64> {
        self.ring.front().map(|p| p.offset)
    }

    /// Every retained publication after `offset`, given the channel's newest
    /// offset `top` (retained or not). `Gap` when any of them is gone.
    pub fn after(&self, offset: u64, top: u64, limit: usize) -> Replay {
        if offset >= top {
            return Replay::Complete(Vec::new());
        }
        let first_wanted = offset + 1;
        match self.oldest_offset() {
            Some(oldest) if oldest <= first_wanted => {
                let skip = (first_wanted - oldest) as usize;
                Replay::Complete(self.ring.iter().skip(skip).take(limit).cloned().collect())
            }
            _ => Replay::Gap,
        }
    }

    /// The oldest retained publications, up to `limit`.
    pub fn oldest(&self, limit: usize) -> Vec<Arc<Publication>> {
        self.ring.iter().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, Data, Epoch};
    use proptest::prelude::*;

    fn p(offset: u64, time: Millis) -> Arc<Publication> {
        Arc::new(Publication::new(
            ChannelName::new("c").unwrap(),
            Epoch::new("e").unwrap(),
            offset,
            None,
            Data::json("1").unwrap(),
            time,
        ))
    }

    fn offsets(r: Replay) -> Option<Vec<u64>> {
        match r {
            Replay::Complete(v) => Some(v.iter().map(|p| p.offset).collect()),
            Replay::Gap => None,
        }
    }

    #[test]
    fn trims_by_count() {
        let mut h = History::new(3, 1_000);
        for o in 1..=5 {
            h.push(p(o, 0), 0);
        }
        assert_eq!(h.oldest_offset(), Some(3));
        assert_eq!(offsets(h.after(2, 5, 100)), Some(vec![3, 4, 5]));
        assert_eq!(offsets(h.after(1, 5, 100)), None);
        assert_eq!(offsets(h.after(5, 5, 100)), Some(vec![]));
    }

    #[test]
    fn trims_by_age() {
        let mut h = History::new(10, 100);
        h.push(p(1, 0), 0);
        h.push(p(2, 50), 50);
        h.expire(120);
        assert_eq!(h.oldest_offset(), Some(2));
        h.expire(150);
        assert!(h.is_empty());
        assert_eq!(offsets(h.after(1, 2, 100)), None);
        assert_eq!(offsets(h.after(2, 2, 100)), Some(vec![]));
    }

    proptest! {
        /// After any sequence of appends and clock moves, `after(k)` is either
        /// exactly k+1..=top (up to limit) or a gap, and a gap only when some
        /// of those offsets is really gone.
        #[test]
        fn after_is_exact_or_gap(
            cap in 0usize..20,
            ttl in 1u64..50,
            steps in proptest::collection::vec(0u64..10, 1..60),
            k in 0u64..80,
            limit in 1usize..30,
        ) {
            let mut h = History::new(cap, ttl);
            let mut now = 0;
            let mut top = 0;
            for dt in steps {
                now += dt;
                top += 1;
                h.push(p(top, now), now);
            }
            h.expire(now);
            match offsets(h.after(k, top, limit)) {
                Some(got) => {
                    let want: Vec<u64> = (k + 1..=top).take(limit).collect();
                    prop_assert_eq!(got, want);
                }
                None => {
                    prop_assert!(k < top);
                    prop_assert!(h.oldest_offset().is_none_or(|o| o > k + 1));
                }
            }
            prop_assert!(h.len() <= cap);
            if let Some(o) = h.oldest_offset() {
                prop_assert!(now - h.ring.front().unwrap().time < ttl);
                prop_assert_eq!(o + h.len() as u64 - 1, top);
            }
        }
    }
}
