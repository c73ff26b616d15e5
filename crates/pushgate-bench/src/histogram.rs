//! A fixed-size log-linear latency histogram (the HdrHistogram layout with 128
//! sub-buckets per power of two, so any reported value is within 1/128 of the
//! true one).
//!
//! Hand-written instead of the `hdrhistogram` crate because its current
//! release needs a newer Rust than the workspace's `rust-version`, and we need
//! only record and quantile: ~60 KiB, no allocation while recording, whatever
//! the number of deliveries.

use serde::Serialize;

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` are exact; above, one group of `SUB` buckets per bit.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) as usize - SUB;
    SUB + shift as usize * SUB + sub
}

/// The largest value that lands in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = ((i - SUB) / SUB) as u32;
    let sub = ((i - SUB) % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    low + ((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value such that
    /// at least `q` of all values are at or below it, rounded up to its bucket's
    /// upper bound (never above the true maximum).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// Quantiles of nanosecond values, reported in microseconds.
    pub fn summary_us(&self) -> LatencySummary {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        LatencySummary {
            count: self.count,
            min: if self.count == 0 { 0.0 } else { us(self.min) },
            p50: us(self.quantile(0.50)),
            p90: us(self.quantile(0.90)),
            p99: us(self.quantile(0.99)),
            p999: us(self.quantile(0.999)),
            max: us(self.max),
            mean: (self.mean() / 100.0).round() / 10.0,
        }
    }
}

/// A histogram's non-empty buckets, for a caller that merges the
/// histograms of several processes (`--run-id`) before taking quantiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistogramDump {
    pub count: u64,
    /// Smallest and largest recorded values (0 and 0 when empty).
    pub min: u64,
    pub max: u64,
    /// `[upper bound, count]` of each bucket that holds values, ascending;
    /// a quantile is the bound where the running count reaches its rank,
    /// clamped to `[min, max]` (as [`Histogram::quantile`]).
    pub buckets: Vec<[u64; 2]>,
}

impl Histogram {
    pub fn dump(&self) -> HistogramDump {
        HistogramDump {
            count: self.count,
            min: if self.count == 0 { 0 } else { self.min },
            max: self.max,
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| [bucket_high(i), c])
                .collect(),
        }
    }
}

/// Latency percentiles in microseconds, rounded to 0.1 µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_monotonically() {
        let mut last = 0;
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last || v > 5000, "index not monotone at {v}");
            last = i;
            assert!(bucket_high(i) >= v, "{v} above its bucket");
            // Relative bucket width bounds the error.
            let err = (bucket_high(i) - v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / 128.0 + 1e-12, "{v}: error {err}");
        }
        assert_eq!(bucket_high(index(u64::MAX)), u64::MAX);
    }

    #[test]
    fn exact_quantiles_for_small_values() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(0.999), 100);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.mean(), 50.5);
    }

    #[test]
    fn quantiles_of_large_values_within_one_percent() {
        let mut h = Histogram::new();
        // 1 µs .. 10 ms in ns, uniformly: p50 ≈ 5 ms, p99 ≈ 9.9 ms.
        for i in 1..=10_000u64 {
            h.record(i * 1_000);
        }
        for (q, want) in [
            (0.5, 5_000_000.0),
            (0.99, 9_900_000.0),
            (0.999, 9_990_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 10_000_000);
        let s = h.summary_us();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 10_000.0);
        assert!((s.p50 - 5000.0).abs() < 50.0);
    }

    #[test]
    fn outlier_drives_only_the_tail() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(200_000);
        }
        h.record(50_000_000);
        let s = h.summary_us();
        assert!((s.p50 - 200.0).abs() < 2.0);
        assert!((s.p99 - 200.0).abs() < 2.0);
        assert!((s.p999 - 200.0).abs() < 2.0);
        assert_eq!(s.max, 50_000.0);
    }

    #[test]
    fn merge_and_empty() {
        let empty = Histogram::new();
        assert_eq!(empty.quantile(0.5), 0);
        assert_eq!(empty.summary_us().min, 0.0);
        let mut a = Histogram::new();
        a.record(10);
        let mut b = Histogram::new();
        b.record(30);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.5), 20);
        assert_eq!(a.quantile(1.0), 30);
        let d = a.dump();
        assert_eq!((d.count, d.min, d.max), (3, 10, 30));
        assert_eq!(d.buckets, vec![[10, 1], [20, 1], [30, 1]]);
        assert_eq!(empty.dump().buckets, Vec::<[u64; 2]>::new());
        assert_eq!(empty.dump().min, 0);
    }
}
