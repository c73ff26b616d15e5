//! What all connections of a run count together, and the small state each
//! subscriber connection keeps to feed it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedSemaphorePermit;

use crate::error::BenchError;
use crate::histogram::Histogram;
use crate::marker::{self, Found, Marker};

/// Which channels exist, who subscribes to which, and where each message goes.
///
/// Message `seq` is published to channel `seq % total_channels`. With
/// `distinct`, connection `i` owns channels `i*K .. i*K+K` ("personal
/// notifications"); with `spread` S > 1, connection `i` subscribes to channel
/// `i mod S` alone (S groups of equal size, so that several generator
/// processes with the same S share the same channels); otherwise every
/// connection subscribes to the same `K`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub base: String,
    pub connections: usize,
    pub channels_per_conn: usize,
    pub distinct: bool,
    /// Channels the connections are spread over, one each; 0 or 1: off.
    pub spread: usize,
}

impl Layout {
    pub fn total_channels(&self) -> usize {
        if self.distinct {
            self.connections * self.channels_per_conn
        } else if self.spread > 1 {
            self.spread
        } else {
            self.channels_per_conn
        }
    }

    pub fn subscribers_per_channel(&self) -> u64 {
        if self.distinct {
            1
        } else if self.spread > 1 {
            (self.connections / self.spread) as u64
        } else {
            self.connections as u64
        }
    }

    pub fn channel_name(&self, channel: usize) -> String {
        if self.total_channels() == 1 {
            self.base.clone()
        } else {
            format!("{}-{channel}", self.base)
        }
    }

    /// Global indices of the channels connection `conn` subscribes to.
    pub fn channels_of(&self, conn: usize) -> std::ops::Range<usize> {
        let k = self.channels_per_conn;
        if self.distinct {
            conn * k..conn * k + k
        } else if self.spread > 1 {
            let c = conn % self.spread;
            c..c + 1
        } else {
            0..k
        }
    }

    pub fn channel_of_seq(&self, seq: u64) -> usize {
        (seq % self.total_channels() as u64) as usize
    }

    /// Position of `channel` among `conn`'s channels, if it subscribes to it.
    pub fn local_index(&self, conn: usize, channel: usize) -> Option<usize> {
        let range = self.channels_of(conn);
        range.contains(&channel).then(|| channel - range.start)
    }
}

/// Up to this many distinct error messages are kept, with counts.
const MAX_ERROR_KINDS: usize = 8;

/// Distinct error messages with how often each happened; past
/// `MAX_ERROR_KINDS` of them, the rest are counted together.
#[derive(Debug, Default)]
pub struct ErrorSamples {
    pub samples: Vec<(String, u64)>,
    pub other: u64,
}

impl ErrorSamples {
    pub fn record(&mut self, err: &BenchError) {
        let text = err.to_string();
        if let Some(slot) = self.samples.iter_mut().find(|(m, _)| *m == text) {
            slot.1 += 1;
        } else if self.samples.len() < MAX_ERROR_KINDS {
            self.samples.push((text, 1));
        } else {
            self.other += 1;
        }
    }

    /// Every message with its count, then "(other errors)" if there were more.
    pub fn list(&self) -> Vec<(String, u64)> {
        let mut out = self.samples.clone();
        if self.other > 0 {
            out.push(("(other errors)".into(), self.other));
        }
        out
    }
}

/// Counters shared by all tasks of a run. Atomics are updated with `Relaxed`:
/// they are independent tallies read for progress and at the end.
#[derive(Debug)]
pub struct Shared {
    pub run_id: u32,
    pub layout: Layout,
    /// `subscribed` acks a pushgate connection waits for (one per channel).
    pub acks_needed: u32,
    pub messages: u64,
    pub connected: AtomicU64,
    pub subscribed: AtomicU64,
    /// Connections that ended before being subscribed.
    pub failed: AtomicU64,
    /// Connections that ended after being subscribed.
    pub dropped: AtomicU64,
    pub published: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Publishes the server accepted, in total and per `seq`.
    pub accepted: AtomicU64,
    pub published_ok: Box<[AtomicBool]>,
    pub per_seq: Box<[AtomicU32]>,
    /// Every delivery of one of our messages, duplicates included.
    pub delivered: AtomicU64,
    /// Deliveries that were not in excess of a message's subscriber count.
    pub delivered_good: AtomicU64,
    pub out_of_order: AtomicU64,
    /// Our messages arriving on a connection not subscribed to their channel.
    pub misrouted: AtomicU64,
    /// Markers of other runs (replayed history) and other noise.
    pub foreign: AtomicU64,
    pub first_publish_ns: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    /// WebSocket connections whose server accepted permessage-deflate.
    pub ws_deflate_negotiated: AtomicU64,
    /// Compressed WebSocket messages inflated, over all connections.
    pub ws_deflate_messages: AtomicU64,
    latency: Mutex<Histogram>,
    errors: Mutex<ErrorSamples>,
}

impl Shared {
    pub fn new(run_id: u32, layout: Layout, acks_needed: u32, messages: u64) -> Self {
        let m = messages as usize;
        Shared {
            run_id,
            layout,
            acks_needed,
            messages,
            connected: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            published_ok: (0..m).map(|_| AtomicBool::new(false)).collect(),
            per_seq: (0..m).map(|_| AtomicU32::new(0)).collect(),
            delivered: AtomicU64::new(0),
            delivered_good: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            first_publish_ns: AtomicU64::new(u64::MAX),
            last_delivery_ns: AtomicU64::new(0),
            ws_deflate_negotiated: AtomicU64::new(0),
            ws_deflate_messages: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new()),
            errors: Mutex::new(ErrorSamples::default()),
        }
    }

    pub fn record_error(&self, err: &BenchError) {
        lock(&self.errors).record(err);
    }

    pub fn error_samples(&self) -> Vec<(String, u64)> {
        lock(&self.errors).list()
    }

    pub fn first_error(&self) -> Option<String> {
        lock(&self.errors).samples.first().map(|(m, _)| m.clone())
    }

    pub fn latency(&self) -> Histogram {
        lock(&self.latency).clone()
    }

    /// Deliveries we expect: every successfully published message, once per subscriber of its channel.
    pub fn expected_deliveries(&self) -> u64 {
        self.accepted.load(Relaxed) * self.layout.subscribers_per_channel()
    }

    /// A receive-only run: every message counts as published (by another
    /// process, which reports its own errors).
    pub fn assume_all_published(&self) {
        for ok in self.published_ok.iter() {
            ok.store(true, Relaxed);
        }
        self.accepted.store(self.messages, Relaxed);
        self.published.store(self.messages, Relaxed);
    }

    /// (missing, duplicates) from the per-message counts.
    pub fn missing_and_duplicates(&self) -> (u64, u64) {
        let want = self.layout.subscribers_per_channel();
        let mut missing = 0;
        let mut dups = 0;
        for (count, ok) in self.per_seq.iter().zip(self.published_ok.iter()) {
            let got = u64::from(count.load(Relaxed));
            let expect = if ok.load(Relaxed) { want } else { 0 };
            missing += expect.saturating_sub(got);
            dups += got.saturating_sub(want);
        }
        (missing, dups)
    }
}

/// A poisoned lock only means another task panicked mid-update of a tally;
/// the numbers are still the best we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One subscriber connection's view: a few words, whatever the transport.
pub struct Subscriber {
    shared: Arc<Shared>,
    conn: u32,
    acks: u32,
    subscribed: bool,
    /// Per subscribed channel: highest `seq + 1` seen, for the order check.
    last: Box<[u32]>,
    /// Held while connecting so only `--connect-concurrency` handshakes run at once.
    permit: Option<OwnedSemaphorePermit>,
}

impl Subscriber {
    pub fn new(shared: Arc<Shared>, conn: usize, permit: Option<OwnedSemaphorePermit>) -> Self {
        let k = if shared.messages > 0 {
            shared.layout.channels_per_conn
        } else {
            0
        };
        Subscriber {
            shared,
            conn: conn as u32,
            acks: 0,
            subscribed: false,
            last: vec![0; k].into_boxed_slice(),
            permit,
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn conn(&self) -> usize {
        self.conn as usize
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    pub fn connected(&self) {
        self.shared.connected.fetch_add(1, Relaxed);
    }

    /// A server's "subscribed" acknowledgement for one channel.
    pub fn ack(&mut self) {
        self.acks += 1;
        if self.acks >= self.shared.acks_needed {
            self.mark_subscribed();
        }
    }

    pub fn mark_subscribed(&mut self) {
        if !self.subscribed {
            self.subscribed = true;
            self.permit = None;
            self.shared.subscribed.fetch_add(1, Relaxed);
        }
    }

    /// One message (frame, event, line); returns whether it carried one of our markers.
    pub fn on_message(&mut self, data: &[u8], now_ns: u64) -> bool {
        match marker::find(data, self.shared.run_id) {
            Found::Ours(m) => {
                self.deliver(m, now_ns);
                true
            }
            Found::Foreign => {
                self.shared.foreign.fetch_add(1, Relaxed);
                true
            }
            Found::Nothing => false,
        }
    }

    /// A body holding any number of messages (a long-poll response).
    pub fn on_batch(&mut self, data: &[u8], now_ns: u64) {
        let run = self.shared.run_id;
        let foreign = marker::for_each(data, run, |m| self.deliver(m, now_ns));
        if foreign > 0 {
            self.shared.foreign.fetch_add(foreign, Relaxed);
        }
    }

    fn deliver(&mut self, m: Marker, now_ns: u64) {
        let sh = &*self.shared;
        if m.seq >= sh.messages {
            sh.foreign.fetch_add(1, Relaxed);
            return;
        }
        let channel = sh.layout.channel_of_seq(m.seq);
        let Some(local) = sh.layout.local_index(self.conn as usize, channel) else {
            sh.misrouted.fetch_add(1, Relaxed);
            return;
        };
        let before = sh.per_seq[m.seq as usize].fetch_add(1, Relaxed);
        sh.delivered.fetch_add(1, Relaxed);
        sh.last_delivery_ns.fetch_max(now_ns, Relaxed);
        // A receive-only run learns when publishing began from the markers
        // (a plain load first: this is rarely a new minimum).
        if m.sent_ns < sh.first_publish_ns.load(Relaxed) {
            sh.first_publish_ns.fetch_min(m.sent_ns, Relaxed);
        }
        // Excess copies are counted as duplicates at the end; keeping them out of
        // the order check and the latencies stops one fault from counting twice.
        if u64::from(before) >= sh.layout.subscribers_per_channel() {
            return;
        }
        sh.delivered_good.fetch_add(1, Relaxed);
        // seq < messages <= u32::MAX - 1 (checked when the run is configured).
        let mark = (m.seq + 1) as u32;
        let last = &mut self.last[local];
        if mark < *last {
            sh.out_of_order.fetch_add(1, Relaxed);
        } else {
            *last = mark;
        }
        lock(&sh.latency).record(now_ns.saturating_sub(m.sent_ns));
    }

    /// Books the end of this connection: failed before subscribing, or dropped after.
    pub fn finish(&mut self, result: Result<(), BenchError>) {
        if let Err(e) = &result {
            self.shared.record_error(e);
        }
        if self.subscribed {
            self.shared.dropped.fetch_add(1, Relaxed);
        } else {
            self.shared.failed.fetch_add(1, Relaxed);
        }
        self.permit = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(distinct: bool) -> Layout {
        Layout {
            base: "b".into(),
            connections: 3,
            channels_per_conn: 2,
            distinct,
            spread: 0,
        }
    }

    #[test]
    fn layouts() {
        let shared = layout(false);
        assert_eq!(shared.total_channels(), 2);
        assert_eq!(shared.subscribers_per_channel(), 3);
        assert_eq!(shared.channels_of(2), 0..2);
        assert_eq!(shared.local_index(2, 1), Some(1));
        let distinct = layout(true);
        assert_eq!(distinct.total_channels(), 6);
        assert_eq!(distinct.channels_of(1), 2..4);
        assert_eq!(distinct.channel_of_seq(9), 3);
        assert_eq!(distinct.local_index(1, 3), Some(1));
        assert_eq!(distinct.local_index(0, 3), None);
        assert_eq!(distinct.channel_name(5), "b-5");
        let single = Layout {
            channels_per_conn: 1,
            ..layout(false)
        };
        assert_eq!(single.channel_name(0), "b");
        let spread = Layout {
            connections: 6,
            channels_per_conn: 1,
            spread: 3,
            ..layout(false)
        };
        assert_eq!(spread.total_channels(), 3);
        assert_eq!(spread.subscribers_per_channel(), 2);
        assert_eq!(spread.channels_of(4), 1..2);
        assert_eq!(spread.channel_of_seq(7), 1);
        assert_eq!(spread.local_index(4, 1), Some(0));
        assert_eq!(spread.local_index(4, 2), None);
        assert_eq!(spread.channel_name(2), "b-2");
    }

    fn payload(run: u32, seq: u64, sent: u64) -> Vec<u8> {
        let mut v = Vec::new();
        marker::write_payload(&mut v, run, seq, sent, 0);
        v
    }

    #[test]
    fn counts_duplicates_order_and_misroutes() {
        let shared = Arc::new(Shared::new(7, layout(true), 1, 12));
        for seq in 0..12 {
            shared.published_ok[seq].store(true, Relaxed);
        }
        shared.accepted.store(12, Relaxed);
        // Connection 1 owns channels 2 and 3: seqs 2, 3, 8, 9.
        let mut sub = Subscriber::new(shared.clone(), 1, None);
        assert!(sub.on_message(&payload(7, 3, 100), 1100));
        assert!(sub.on_message(&payload(7, 9, 100), 1200));
        assert!(sub.on_message(&payload(7, 3, 100), 1300)); // duplicate
        assert!(sub.on_message(&payload(7, 8, 100), 1400));
        assert!(sub.on_message(&payload(7, 2, 100), 1500)); // 2 after 8 on channel 2
        assert!(sub.on_message(&payload(7, 0, 100), 1500)); // channel 0: not ours
        assert!(sub.on_message(&payload(8, 0, 100), 1500)); // other run
        assert!(!sub.on_message(b"{\"type\":\"subscribed\"}", 1500));
        assert_eq!(shared.delivered.load(Relaxed), 5);
        assert_eq!(shared.delivered_good.load(Relaxed), 4);
        assert_eq!(shared.out_of_order.load(Relaxed), 1);
        assert_eq!(shared.misrouted.load(Relaxed), 1);
        assert_eq!(shared.foreign.load(Relaxed), 1);
        assert_eq!(shared.expected_deliveries(), 12);
        // 12 expected, 4 distinct ones arrived, 1 duplicate.
        assert_eq!(shared.missing_and_duplicates(), (8, 1));
        let lat = shared.latency();
        assert_eq!(lat.count(), 4);
        assert_eq!(lat.quantile(1.0), 1400);
        assert_eq!(shared.last_delivery_ns.load(Relaxed), 1500);
    }

    #[test]
    fn acks_and_accounting() {
        let shared = Arc::new(Shared::new(1, layout(false), 2, 0));
        let mut sub = Subscriber::new(shared.clone(), 0, None);
        sub.ack();
        assert!(!sub.is_subscribed());
        sub.ack();
        assert!(sub.is_subscribed());
        sub.mark_subscribed();
        assert_eq!(shared.subscribed.load(Relaxed), 1);
        sub.finish(Err(BenchError::protocol("x")));
        let mut other = Subscriber::new(shared.clone(), 1, None);
        other.finish(Err(BenchError::protocol("x")));
        assert_eq!(shared.dropped.load(Relaxed), 1);
        assert_eq!(shared.failed.load(Relaxed), 1);
        assert_eq!(
            shared.error_samples(),
            vec![("protocol error: x".to_string(), 2)]
        );
    }
}
