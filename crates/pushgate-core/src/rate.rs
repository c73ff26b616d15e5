//! How fast a client may make the server work for others (publish, send):
//! a token bucket per client, as arithmetic on instants the caller passes
//! in, so that it is tested with made-up times.
//!
//! A bucket holds `burst` tokens and gains `per_second` of them each
//! second; each action takes one, and an action that finds none is
//! refused with the time until the next. It is kept in GCRA form (the
//! "generic cell rate algorithm", the same bucket written as one number):
//! not a token count and the time it was last topped up, but the instant
//! it will be full again. That is one `u64` of nanoseconds, 8 bytes per
//! connection, with no rounding drift: every action moves that instant
//! forward by exactly one interval (`1 s / per_second`, rounded up, so the
//! bucket never allows more than its rate), and an action is allowed while
//! the instant lies at most `burst - 1` intervals ahead.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// A rate and a burst, shared by every bucket it governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u32,
    burst: u32,
    /// Nanoseconds one action costs: 1 s / `per_second`, rounded up.
    interval: u64,
    /// How far ahead of now a bucket's "full again" may lie for one more
    /// action: `burst - 1` intervals.
    tolerance: u64,
    /// Buckets keep their instant as nanoseconds after this one: 8 bytes
    /// where an `Instant` takes 16.
    origin: Instant,
}

impl Rate {
    /// `burst` actions at once (at least 1) and `per_second` on average;
    /// `None` when `per_second` is 0, which means no limit. Buckets count
    /// time from `origin`: instants before it count as `origin`.
    pub fn new(per_second: u32, burst: u32, origin: Instant) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let burst = burst.max(1);
        let interval = 1_000_000_000u64.div_ceil(u64::from(per_second));
        Some(Rate {
            per_second,
            burst,
            interval,
            tolerance: interval * u64::from(burst - 1),
            origin,
        })
    }

    /// Actions allowed per second, on average.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Actions allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The refusal of an action that must wait `wait` for its token.
    pub fn refusal(&self, wait: Duration) -> Error {
        Error::new(
            ErrorKind::RateLimited,
            format!(
                "publishing too fast: at most {} at once and {} per second \
                 (client_publish_burst, client_publish_rate); retry in {} ms",
                self.burst,
                self.per_second,
                wait.as_nanos().div_ceil(1_000_000)
            ),
        )
        .with_retry_after(wait)
    }

    /// `now` as nanoseconds after the origin (584 years fit).
    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// One client's bucket. A new one is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// When the bucket is full again, in nanoseconds after the rate's
    /// origin; at or before now: it is full.
    full_at: u64,
}

impl TokenBucket {
    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Duration> {
        let now = rate.nanos(now);
        let full_at = self.full_at.max(now);
        let ahead = full_at - now;
        if ahead > rate.tolerance {
            return Err(Duration::from_nanos(ahead - rate.tolerance));
        }
        self.full_at = full_at.saturating_add(rate.interval);
        Ok(())
    }

    /// Whether it is full at `now`: a bucket that could be forgotten and
    /// made anew without changing a decision.
    pub fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        self.full_at <= rate.nanos(now)
    }
}

/// Buckets by key, for clients that are no connection of their own (a
/// `POST /command` client, keyed by its address), at most `capacity` of
/// them. A bucket that is full again is the same as none, so when the
/// table is full those are dropped; if every bucket is still filling, a
/// new key is refused until the first of them is full (as nginx's
/// `limit_req` answers when its zone is exhausted), so that a flood from
/// many addresses can neither grow the table nor reset its own buckets.
#[derive(Debug)]
pub struct Buckets<K> {
    map: HashMap<K, TokenBucket>,
    capacity: usize,
    /// While the table is full, the earliest instant (nanoseconds after
    /// the origin) any bucket in it is full again: sweeping before then
    /// would drop nothing, and a sweep walks the whole table.
    next_sweep: u64,
}

impl<K: Hash + Eq> Buckets<K> {
    /// An empty table for at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Buckets {
            map: HashMap::new(),
            capacity: capacity.max(1),
            next_sweep: 0,
        }
    }

    /// Takes a token from `key`'s bucket at `now`, or says how long until
    /// one is there.
    pub fn take(&mut self, key: K, rate: &Rate, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = self.map.get_mut(&key) {
            return bucket.take(rate, now);
        }
        if self.map.len() >= self.capacity {
            self.sweep(rate, now)?;
        }
        let mut bucket = TokenBucket::default();
        let taken = bucket.take(rate, now);
        self.map.insert(key, bucket);
        taken
    }

    /// Drops the buckets that are full again; when none is, refuses with
    /// the time until the first one will be.
    fn sweep(&mut self, rate: &Rate, now: Instant) -> Result<(), Duration> {
        let at = rate.nanos(now);
        if at < self.next_sweep {
            return Err(Duration::from_nanos(self.next_sweep - at));
        }
        self.map.retain(|_, b| !b.is_full(rate, now));
        if self.map.len() < self.capacity {
            return Ok(());
        }
        self.next_sweep = self.map.values().map(|b| b.full_at).min().unwrap_or(at);
        Err(Duration::from_nanos(self.next_sweep.saturating_sub(at)))
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 3, t0).unwrap();
        let mut b = TokenBucket::default();
        for _ in 0..3 {
            assert_eq!(b.take(&rate, t0), Ok(()));
        }
        // Empty: the next token comes one interval (100 ms) later.
        assert_eq!(b.take(&rate, t0), Err(ms(100)));
        assert_eq!(b.take(&rate, t0 + ms(40)), Err(ms(60)));
        assert_eq!(b.take(&rate, t0 + ms(100)), Ok(()));
        assert_eq!(b.take(&rate, t0 + ms(100)), Err(ms(100)));
        // A refusal takes nothing: waiting as told is enough.
        assert_eq!(b.take(&rate, t0 + ms(200)), Ok(()));
        // Idle for long enough, the bucket is full again, and no fuller.
        assert!(b.is_full(&rate, t0 + ms(500)));
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(&rate, later), Ok(()));
        }
        assert!(b.take(&rate, later).is_err());
    }

    #[test]
    fn zero_per_second_is_no_limit_and_burst_is_at_least_one() {
        let t0 = Instant::now();
        assert_eq!(Rate::new(0, 5, t0), None);
        let rate = Rate::new(1, 0, t0).unwrap();
        assert_eq!(rate.burst(), 1);
        let mut b = TokenBucket::default();
        assert_eq!(b.take(&rate, t0), Ok(()));
        assert_eq!(b.take(&rate, t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn instants_before_the_origin_or_out_of_order_do_no_harm() {
        let early = Instant::now();
        let origin = early + ms(1000);
        let rate = Rate::new(1000, 2, origin).unwrap();
        let mut b = TokenBucket::default();
        assert!(b.take(&rate, early).is_ok());
        assert!(b.take(&rate, origin + ms(5)).is_ok());
        // Back in time: refused rather than refilled.
        assert!(b.take(&rate, origin).is_err());
        // The extremes neither panic nor overflow.
        let rate = Rate::new(u32::MAX, u32::MAX, origin).unwrap();
        let far = origin + Duration::from_secs(100 * 365 * 86_400);
        assert!(b.take(&rate, far).is_ok());
    }

    #[test]
    fn a_client_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        // 3 per second: 333,333,334 ns apart, the rounded-up interval.
        let rate = Rate::new(3, 1, t0).unwrap();
        let mut b = TokenBucket::default();
        for i in 0..10_000u32 {
            let at = t0 + Duration::from_nanos(333_333_334) * i;
            assert_eq!(b.take(&rate, at), Ok(()), "action {i}");
        }
    }

    #[test]
    fn the_table_is_bounded_and_drops_what_refilled() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 2, t0).unwrap();
        let mut table = Buckets::new(2);
        assert!(table.take("a", &rate, t0).is_ok());
        assert!(table.take("b", &rate, t0).is_ok());
        // Full of buckets still filling: a newcomer waits for the first
        // to be full (a and b each took one token: 100 ms).
        assert_eq!(table.take("c", &rate, t0 + ms(30)), Err(ms(70)));
        // Keys it knows are served as before.
        assert!(table.take("a", &rate, t0 + ms(30)).is_ok());
        assert!(table.take("a", &rate, t0 + ms(30)).is_err());
        assert_eq!(table.take("c", &rate, t0 + ms(50)), Err(ms(50)));
        // b is full again at 100 ms and goes; a (its second token not
        // back before 200 ms) stays, with one token now.
        assert!(table.take("c", &rate, t0 + ms(100)).is_ok());
        assert_eq!(table.len(), 2);
        assert!(table.take("a", &rate, t0 + ms(100)).is_ok());
        assert!(table.take("a", &rate, t0 + ms(100)).is_err());
    }

    proptest! {
        /// Over any sequence of instants, no window [t_i, t_j] holds more
        /// allowed actions than burst + rate × its length; and a refusal's
        /// wait is exact: at that instant a token is there.
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(
            per_second in 1u32..2_000,
            burst in 1u32..50,
            steps in proptest::collection::vec(0u64..50_000_000, 1..300),
        ) {
            let t0 = Instant::now();
            let rate = Rate::new(per_second, burst, t0).unwrap();
            let mut bucket = TokenBucket::default();
            let mut at = t0;
            let mut allowed: Vec<Instant> = Vec::new();
            for step in steps {
                at += Duration::from_nanos(step);
                match bucket.take(&rate, at) {
                    Ok(()) => allowed.push(at),
                    Err(wait) => {
                        let mut probe = bucket;
                        prop_assert!(probe.take(&rate, at + wait).is_ok());
                        if wait > Duration::from_nanos(1) {
                            let mut early = bucket;
                            let before = at + wait - Duration::from_nanos(1);
                            prop_assert!(early.take(&rate, before).is_err());
                        }
                    }
                }
            }
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    let elapsed = (allowed[j] - allowed[i]).as_secs_f64();
                    let bound = f64::from(burst) + f64::from(per_second) * elapsed;
                    prop_assert!((j - i + 1) as f64 <= bound + 1e-9,
                        "{} actions in {elapsed} s, bound {bound}", j - i + 1);
                }
            }
        }

        /// The table decides for a key as that key's own bucket would, as
        /// long as it has room.
        #[test]
        fn the_table_is_a_bucket_per_key(
            takes in proptest::collection::vec((0u8..4, 0u64..30), 1..200),
        ) {
            let t0 = Instant::now();
            let rate = Rate::new(50, 3, t0).unwrap();
            let mut table = Buckets::new(4);
            let mut own = [TokenBucket::default(); 4];
            let mut at = t0;
            for (key, step) in takes {
                at += ms(step);
                prop_assert_eq!(
                    table.take(key, &rate, at),
                    own[usize::from(key)].take(&rate, at)
                );
            }
        }
    }
}
