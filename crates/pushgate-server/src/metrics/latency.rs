//! The delivery latency histogram: from when this node had a message (it
//! was published here, or heard from the broker) to its write to a
//! client's socket, per transport.
//!
//! Written on every delivery path, so it is sharded: each worker thread
//! adds to its own cache line, and a scrape sums the shards. A delivery
//! costs one subtraction, a bucket search and three relaxed adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Transport;

/// Upper bounds of the buckets, in seconds (the last, `+Inf`, is implied).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUCKETS: usize = BOUNDS.len() + 1;
const TRANSPORTS: usize = Transport::ALL.len();
const SHARDS: usize = 8;

/// The bounds in nanoseconds, for the search.
const BOUNDS_NS: [u64; 14] = {
    let mut out = [0u64; 14];
    let mut i = 0;
    while i < BOUNDS.len() {
        out[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Per transport: the count in each bucket (not cumulative), the sum in
    /// nanoseconds.
    buckets: [[AtomicU64; BUCKETS]; TRANSPORTS],
    sum_ns: [AtomicU64; TRANSPORTS],
}

#[derive(Default)]
pub struct Latency {
    shards: [Shard; SHARDS],
}

thread_local! {
    /// This thread's shard; threads are numbered as they first observe.
    static SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Relaxed) as usize % SHARDS
    };
}

impl Latency {
    /// `n` deliveries on `t` that each took `took`.
    pub fn observe(&self, t: Transport, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&b| b < ns);
        let shard = &self.shards[SHARD.with(|s| *s)];
        let t = t as usize;
        shard.buckets[t][bucket].fetch_add(n, Relaxed);
        shard.sum_ns[t].fetch_add(ns.saturating_mul(n), Relaxed);
    }

    /// Every delivery in `took` (each message's wait) on `t`, added once
    /// per bucket touched: a burst's batch costs a few adds, not three per
    /// message.
    pub fn observe_all(&self, t: Transport, took: impl Iterator<Item = Duration>) {
        let mut counts = [0u64; BUCKETS];
        let mut sum_ns = 0u64;
        let mut any = false;
        for d in took {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            counts[BOUNDS_NS.partition_point(|&b| b < ns)] += 1;
            sum_ns = sum_ns.saturating_add(ns);
            any = true;
        }
        if !any {
            return;
        }
        let shard = &self.shards[SHARD.with(|s| *s)];
        let t = t as usize;
        for (bucket, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            shard.buckets[t][bucket].fetch_add(*n, Relaxed);
        }
        shard.sum_ns[t].fetch_add(sum_ns, Relaxed);
    }

    /// The Prometheus histogram `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for t in Transport::ALL {
            let i = t as usize;
            let label = t.label();
            let mut cumulative = 0u64;
            for b in 0..BUCKETS {
                cumulative += self
                    .shards
                    .iter()
                    .map(|s| s.buckets[i][b].load(Relaxed))
                    .sum::<u64>();
                let le = BOUNDS.get(b).map_or("+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{transport=\"{label}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum_ns: u64 = self.shards.iter().map(|s| s.sum_ns[i].load(Relaxed)).sum();
            let _ = writeln!(
                out,
                "{name}_sum{{transport=\"{label}\"}} {}\n{name}_count{{transport=\"{label}\"}} {cumulative}",
                sum_ns as f64 / 1e9
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_count_cumulatively() {
        let l = Latency::default();
        l.observe(Transport::Ws, Duration::from_micros(300), 2);
        l.observe(Transport::Ws, Duration::from_millis(1), 1); // on a bound: le="0.001"
        l.observe(Transport::Ws, Duration::from_secs(60), 1);
        l.observe(Transport::Sse, Duration::from_millis(30), 0);
        l.observe_all(
            Transport::Stream,
            [
                Duration::from_micros(100),
                Duration::from_millis(3),
                Duration::from_micros(200),
            ]
            .into_iter(),
        );
        l.observe_all(Transport::Iframe, std::iter::empty());
        let mut out = String::new();
        l.render(&mut out, "x", "help");
        let has = |line: &str| assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        has("x_bucket{transport=\"ws\",le=\"0.0005\"} 2");
        has("x_bucket{transport=\"ws\",le=\"0.001\"} 3");
        has("x_bucket{transport=\"ws\",le=\"10\"} 3");
        has("x_bucket{transport=\"ws\",le=\"+Inf\"} 4");
        has("x_count{transport=\"ws\"} 4");
        has("x_sum{transport=\"ws\"} 60.0016");
        has("x_count{transport=\"sse\"} 0");
        has("x_bucket{transport=\"stream\",le=\"0.0005\"} 2");
        has("x_bucket{transport=\"stream\",le=\"0.0025\"} 2");
        has("x_bucket{transport=\"stream\",le=\"0.005\"} 3");
        has("x_sum{transport=\"stream\"} 0.0033");
        has("x_count{transport=\"iframe\"} 0");
    }
}
