//! Counters for `/metrics` (Prometheus text format).
//!
//! Labels are bounded: per transport and per outcome, never per channel.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The transports, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Sse,
    /// `/stream`: NDJSON.
    Stream,
    Iframe,
    /// `/longpoll`; its connection gauge counts requests waiting for a message.
    LongPoll,
    /// `/poll`.
    Poll,
}

impl Transport {
    pub const ALL: [Transport; 6] = [
        Transport::Ws,
        Transport::Sse,
        Transport::Stream,
        Transport::Iframe,
        Transport::LongPoll,
        Transport::Poll,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::Iframe => "iframe",
            Transport::LongPoll => "longpoll",
            Transport::Poll => "poll",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const N: usize = Transport::ALL.len();

#[derive(Default)]
pub struct Metrics {
    connections: [AtomicI64; N],
    connections_total: [AtomicU64; N],
    /// Deliveries a connection's task wrote.
    delivered: [AtomicU64; N],
    /// Deliveries fan-out wrote itself (see `DirectSink`).
    delivered_direct: [AtomicU64; N],
    dropped_slow: [AtomicU64; N],
    published: AtomicU64,
    publish_errors: AtomicU64,
    commands: AtomicU64,
    command_errors: AtomicU64,
    /// Woken whenever a connection closes; graceful shutdown waits on it.
    closed: tokio::sync::Notify,
}

impl Metrics {
    /// Counts a connection for as long as the guard lives.
    pub fn connection(self: &Arc<Self>, t: Transport) -> ConnectionGuard {
        self.connections[t.index()].fetch_add(1, Relaxed);
        self.connections_total[t.index()].fetch_add(1, Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
            t,
        }
    }

    pub fn delivered(&self, t: Transport, n: u64) {
        self.delivered[t.index()].fetch_add(n, Relaxed);
    }

    /// A delivery fan-out wrote straight to a parked connection's socket.
    pub fn delivered_direct(&self, t: Transport) {
        self.delivered_direct[t.index()].fetch_add(1, Relaxed);
    }

    pub fn dropped_slow(&self, t: Transport) {
        self.dropped_slow[t.index()].fetch_add(1, Relaxed);
    }

    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }

    pub fn publish_error(&self) {
        self.publish_errors.fetch_add(1, Relaxed);
    }

    pub fn command(&self, ok: bool) {
        self.commands.fetch_add(1, Relaxed);
        if !ok {
            self.command_errors.fetch_add(1, Relaxed);
        }
    }

    pub fn open_connections(&self, t: Transport) -> i64 {
        self.connections[t.index()].load(Relaxed)
    }

    /// Open connections of every transport.
    pub fn open_total(&self) -> i64 {
        self.connections.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Waits until no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open_total() <= 0 {
                return;
            }
            closed.await;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let per_transport =
            |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(usize) -> String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for t in Transport::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{transport=\"{}\"}} {}",
                        t.label(),
                        f(t.index())
                    );
                }
            };
        per_transport(
            &mut out,
            "pushgate_connections",
            "gauge",
            "Open client connections.",
            &|i| self.connections[i].load(Relaxed).to_string(),
        );
        per_transport(
            &mut out,
            "pushgate_connections_total",
            "counter",
            "Client connections accepted.",
            &|i| self.connections_total[i].load(Relaxed).to_string(),
        );
        per_transport(
            &mut out,
            "pushgate_messages_delivered_total",
            "counter",
            "Messages written to subscribers.",
            &|i| {
                (self.delivered[i].load(Relaxed) + self.delivered_direct[i].load(Relaxed))
                    .to_string()
            },
        );
        per_transport(
            &mut out,
            "pushgate_messages_delivered_direct_total",
            "counter",
            "Of the messages delivered, those fan-out wrote straight to a waiting socket \
             (no task wake-up); the rest went through the connection's queue.",
            &|i| self.delivered_direct[i].load(Relaxed).to_string(),
        );
        per_transport(
            &mut out,
            "pushgate_subscribers_dropped_total",
            "counter",
            "Subscribers disconnected because they fell behind their send queue.",
            &|i| self.dropped_slow[i].load(Relaxed).to_string(),
        );
        let single = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        single(
            &mut out,
            "pushgate_messages_published_total",
            "Messages accepted for publishing.",
            self.published.load(Relaxed),
        );
        single(
            &mut out,
            "pushgate_publish_errors_total",
            "Publish requests that failed.",
            self.publish_errors.load(Relaxed),
        );
        single(
            &mut out,
            "pushgate_commands_total",
            "Client commands handled.",
            self.commands.load(Relaxed),
        );
        single(
            &mut out,
            "pushgate_command_errors_total",
            "Client commands answered with an error.",
            self.command_errors.load(Relaxed),
        );
        out
    }
}

pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    t: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.t.index()].fetch_sub(1, Relaxed);
        self.metrics.closed.notify_waiters();
    }
}
