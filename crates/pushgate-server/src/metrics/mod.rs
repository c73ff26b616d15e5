//! Counters for `/metrics` (Prometheus text format).
//!
//! Labels are bounded: per transport and per outcome, never per channel.

mod latency;
mod process;

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
    /// `/longpoll`; its connection gauge counts requests in progress.
    LongPoll,
    /// `/poll`; its connection gauge, too, counts requests in progress.
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

/// The abuse limits, as metric labels: each refusal is counted under the
/// limit that refused it (docs/configuration.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections`: every connection the server holds.
    Connections,
    /// `max_connections_per_ip`.
    ConnectionsPerIp,
    /// `client_publish_rate` / `client_publish_burst`.
    PublishRate,
    /// `max_json_depth`.
    JsonDepth,
    /// `max_message_size` (a body or a WebSocket message too large).
    MessageSize,
    /// `max_head_size`: a request head too large.
    HeadSize,
    /// `head_timeout`: a request head (or body) too slow to arrive.
    HeadTimeout,
    /// `tls_handshake_timeout`, or a handshake that failed.
    TlsHandshake,
    /// HTTP/2 connections ended for abuse (floods, resets, too many streams).
    Http2Abuse,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::PublishRate,
        Limit::JsonDepth,
        Limit::MessageSize,
        Limit::HeadSize,
        Limit::HeadTimeout,
        Limit::TlsHandshake,
        Limit::Http2Abuse,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::PublishRate => "publish_rate",
            Limit::JsonDepth => "json_depth",
            Limit::MessageSize => "message_size",
            Limit::HeadSize => "head_size",
            Limit::HeadTimeout => "head_timeout",
            Limit::TlsHandshake => "tls_handshake",
            Limit::Http2Abuse => "http2_abuse",
        }
    }
}

/// How a client connection speaks HTTP, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0) in plain text.
    Http1,
    /// HTTP/1.1 over TLS.
    Http1Tls,
    /// HTTP/2 with prior knowledge on a plain port (h2c).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Http1,
        Protocol::Http1Tls,
        Protocol::H2c,
        Protocol::H2,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http1Tls => "http1_tls",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }
}

/// Where a publication came from, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The server API (`/api/publish`, batch, broadcast).
    Api,
    /// A client's `publish` command (WebSocket, `POST /command`).
    Client,
    /// The demo's clock.
    Demo,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Api, Source::Client, Source::Demo];

    pub fn label(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Client => "client",
            Source::Demo => "demo",
        }
    }
}

/// Why a caller was refused, as a metric label (`pushgate_auth_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A client's token: malformed, badly signed, expired, or missing where required.
    Token,
    /// A valid caller without the right: a channel its token does not allow.
    Permission,
    /// The server API's key: missing or wrong, or not loopback without one.
    ApiKey,
    /// A page of a foreign origin acting or opening a WebSocket.
    Origin,
    /// The admin dashboard's login.
    Admin,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Token,
        Refusal::Permission,
        Refusal::ApiKey,
        Refusal::Origin,
        Refusal::Admin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Permission => "permission",
            Refusal::ApiKey => "api_key",
            Refusal::Origin => "origin",
            Refusal::Admin => "admin",
        }
    }
}

/// A server API request's status, by class.
fn status_class(status: u16) -> usize {
    match status {
        200..=299 => 0,
        400..=499 => 1,
        _ => 2,
    }
}

const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

pub struct Metrics {
    connections: [AtomicI64; N],
    connections_total: [AtomicU64; N],
    /// Deliveries a connection's task wrote.
    delivered: [AtomicU64; N],
    /// Deliveries fan-out wrote itself (see `DirectSink`).
    delivered_direct: [AtomicU64; N],
    dropped_slow: [AtomicU64; N],
    limited: [AtomicU64; Limit::ALL.len()],
    /// Open TCP connections by how they speak HTTP, and all ever accepted.
    http_connections: [AtomicI64; Protocol::ALL.len()],
    http_connections_total: [AtomicU64; Protocol::ALL.len()],
    published: [AtomicU64; Source::ALL.len()],
    publish_errors: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    /// Server API requests by route (its place in `routes::ROUTES`) and
    /// status class.
    api_requests: Box<[[AtomicU64; 3]]>,
    latency: latency::Latency,
    /// 1 while `/readyz` passes.
    ready: std::sync::atomic::AtomicBool,
    started: f64,
    signals: AtomicU64,
    signal_errors: AtomicU64,
    commands: AtomicU64,
    command_errors: AtomicU64,
    /// Woken whenever a connection closes; graceful shutdown waits on it.
    closed: tokio::sync::Notify,
    /// The durable store's counts, with `--data-dir`.
    store: std::sync::OnceLock<Arc<crate::store::StoreStats>>,
    /// The Redis broker's counts, with `--broker`.
    broker: std::sync::OnceLock<Arc<crate::redis_broker::BrokerStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: Default::default(),
            connections_total: Default::default(),
            delivered: Default::default(),
            delivered_direct: Default::default(),
            dropped_slow: Default::default(),
            limited: Default::default(),
            http_connections: Default::default(),
            http_connections_total: Default::default(),
            published: Default::default(),
            publish_errors: Default::default(),
            refusals: Default::default(),
            api_requests: crate::routes::ROUTES
                .iter()
                .map(|_| Default::default())
                .collect(),
            latency: Default::default(),
            ready: Default::default(),
            started: process::now_unix_secs(),
            signals: Default::default(),
            signal_errors: Default::default(),
            commands: Default::default(),
            command_errors: Default::default(),
            closed: Default::default(),
            store: Default::default(),
            broker: Default::default(),
        }
    }
}

impl Metrics {
    /// Shows the Redis broker's counts too.
    pub fn watch_broker(&self, stats: Arc<crate::redis_broker::BrokerStats>) {
        let _ = self.broker.set(stats);
    }

    /// Shows the durable store's counts too.
    pub fn watch_store(&self, stats: Arc<crate::store::StoreStats>) {
        let _ = self.store.set(stats);
    }

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

    /// A request, command or connection refused by `limit`: counted, and
    /// a (rate-limited) warning.
    pub fn limited(&self, limit: Limit) {
        self.limited[limit as usize].fetch_add(1, Relaxed);
        crate::access_log::limited(limit, None);
    }

    /// The same, of a client at `peer`.
    pub fn limited_from(&self, limit: Limit, peer: std::net::SocketAddr) {
        self.limited[limit as usize].fetch_add(1, Relaxed);
        crate::access_log::limited(limit, Some(peer));
    }

    pub fn limited_count(&self, limit: Limit) -> u64 {
        self.limited[limit as usize].load(Relaxed)
    }

    /// Counts a TCP connection speaking `p` for as long as the guard lives.
    pub fn http_connection(self: &Arc<Self>, p: Protocol) -> ProtocolGuard {
        self.http_connections[p as usize].fetch_add(1, Relaxed);
        self.http_connections_total[p as usize].fetch_add(1, Relaxed);
        ProtocolGuard {
            metrics: self.clone(),
            p,
        }
    }

    pub fn open_http_connections(&self, p: Protocol) -> i64 {
        self.http_connections[p as usize].load(Relaxed)
    }

    pub fn published(&self, source: Source) {
        self.published[source as usize].fetch_add(1, Relaxed);
    }

    /// Publications accepted so far, from every source (`/api/info`).
    pub fn published_count(&self) -> u64 {
        self.published.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// A caller refused for `why`.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Relaxed);
    }

    /// A server API request to `route` answered `status`.
    pub fn api_request(&self, route: &'static crate::routes::Route, status: u16) {
        if let Some(i) = crate::routes::ROUTES
            .iter()
            .position(|r| std::ptr::eq(r, route))
        {
            self.api_requests[i][status_class(status)].fetch_add(1, Relaxed);
        }
    }

    /// `n` messages written on `t` after `took` since this node had them.
    pub fn delivery_latency(&self, t: Transport, took: std::time::Duration, n: u64) {
        self.latency.observe(t, took, n);
    }

    /// The latency of the messages among `events`, which are written on
    /// `t` at `now` (the caller's one clock read for the batch).
    pub fn observe_latency(
        &self,
        t: Transport,
        events: &[pushgate_core::OutboxEvent],
        now: std::time::Instant,
    ) {
        self.latency.observe_all(
            t,
            events.iter().filter_map(|e| match e {
                pushgate_core::OutboxEvent::Message(p) => {
                    Some(now.saturating_duration_since(p.made))
                }
                _ => None,
            }),
        );
    }

    /// Whether `/readyz` passes, for `pushgate_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Messages delivered so far, on every transport, by connections and
    /// by fan-out (`/api/info`).
    pub fn delivered_count(&self) -> u64 {
        self.delivered
            .iter()
            .chain(&self.delivered_direct)
            .map(|c| c.load(Relaxed))
            .sum()
    }

    pub fn publish_error(&self) {
        self.publish_errors.fetch_add(1, Relaxed);
    }

    /// A WebRTC signal relayed (`ok`) or refused.
    pub fn signal(&self, ok: bool) {
        let counter = if ok {
            &self.signals
        } else {
            &self.signal_errors
        };
        counter.fetch_add(1, Relaxed);
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
        let _ = writeln!(
            out,
            "# HELP pushgate_build_info The running build: its version.\n\
             # TYPE pushgate_build_info gauge\n\
             pushgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        series(
            &mut out,
            "pushgate_ready",
            "gauge",
            "1 while /readyz passes (the store writable, the broker's subscription delivering), else 0.",
            u64::from(self.ready.load(Relaxed)),
        );
        let _ = writeln!(
            out,
            "# HELP pushgate_messages_published_total Messages accepted for publishing, by where they came from.\n\
             # TYPE pushgate_messages_published_total counter"
        );
        for s in Source::ALL {
            let _ = writeln!(
                out,
                "pushgate_messages_published_total{{source=\"{}\"}} {}",
                s.label(),
                self.published[s as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pushgate_auth_refusals_total Callers refused: a bad or missing token, a channel not allowed, a wrong API key, a foreign origin, an admin login.\n\
             # TYPE pushgate_auth_refusals_total counter"
        );
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "pushgate_auth_refusals_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refusals[r as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pushgate_api_requests_total Server API requests, by endpoint and status class.\n\
             # TYPE pushgate_api_requests_total counter"
        );
        let api = crate::routes::ROUTES
            .iter()
            .enumerate()
            .filter(|(_, r)| r.auth == crate::routes::Auth::Api);
        for (i, route) in api {
            let name = route.path.trim_start_matches("/api/");
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "pushgate_api_requests_total{{endpoint=\"{name}\",status=\"{class}\"}} {}",
                    self.api_requests[i][c].load(Relaxed)
                );
            }
        }
        self.latency.render(
            &mut out,
            "pushgate_delivery_latency_seconds",
            "From when this node had a message (published here, or heard from the broker) to its write to a client's socket.",
        );
        single(
            &mut out,
            "pushgate_publish_errors_total",
            "Publish requests that failed.",
            self.publish_errors.load(Relaxed),
        );
        single(
            &mut out,
            "pushgate_signals_relayed_total",
            "WebRTC signals relayed from one member of a room to another.",
            self.signals.load(Relaxed),
        );
        single(
            &mut out,
            "pushgate_signal_errors_total",
            "WebRTC signals refused (sender or target not in the room, too large, too fast).",
            self.signal_errors.load(Relaxed),
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
        let _ = writeln!(
            out,
            "# HELP pushgate_limited_total Requests, commands and connections refused by a limit.\n\
             # TYPE pushgate_limited_total counter"
        );
        for l in Limit::ALL {
            let _ = writeln!(
                out,
                "pushgate_limited_total{{limit=\"{}\"}} {}",
                l.label(),
                self.limited[l as usize].load(Relaxed)
            );
        }
        if let Some(store) = self.store.get() {
            for (name, kind, help, v) in [
                (
                    "pushgate_store_records_written_total",
                    "counter",
                    "Publications written to the durable store (--data-dir).",
                    store.records.load(Relaxed),
                ),
                (
                    "pushgate_store_writes_total",
                    "counter",
                    "Writes to the store's segment files; each holds every publication that was waiting.",
                    store.writes.load(Relaxed),
                ),
                (
                    "pushgate_store_syncs_total",
                    "counter",
                    "fdatasync calls: with sync = always, records written over syncs is how many publications share one (group commit).",
                    store.syncs.load(Relaxed),
                ),
                (
                    "pushgate_store_bytes_written_total",
                    "counter",
                    "Bytes written to the store's segment files.",
                    store.bytes.load(Relaxed),
                ),
                (
                    "pushgate_store_segments",
                    "gauge",
                    "Segment files on disk.",
                    store.segments.load(Relaxed),
                ),
                (
                    "pushgate_store_failed",
                    "gauge",
                    "1 once a write or sync to the data directory failed: publishes are refused until a restart.",
                    u64::from(store.failed.load(Relaxed)),
                ),
            ] {
                series(&mut out, name, kind, help, v);
            }
        }
        if let Some(broker) = self.broker.get() {
            for (name, kind, help, v) in [
                (
                    "pushgate_broker_up",
                    "gauge",
                    "1 while the node's pub/sub connection to Redis is up and subscribed (--broker).",
                    u64::from(broker.up.load(Relaxed)),
                ),
                (
                    "pushgate_broker_errors_total",
                    "counter",
                    "Redis calls that failed or timed out (each answered unavailable, or retried).",
                    broker.errors.load(Relaxed),
                ),
                (
                    "pushgate_broker_reconnects_total",
                    "counter",
                    "Times the pub/sub connection to Redis was made again after it dropped.",
                    broker.reconnects.load(Relaxed),
                ),
                (
                    "pushgate_broker_catch_ups_total",
                    "counter",
                    "Channels read from history to fill a gap in their announcements (a dropped connection, a missed message).",
                    broker.catch_ups.load(Relaxed),
                ),
                (
                    "pushgate_broker_resets_total",
                    "counter",
                    "Gaps history no longer covered: the channel's subscribers were told to reset.",
                    broker.resets.load(Relaxed),
                ),
                (
                    "pushgate_broker_channels",
                    "gauge",
                    "Channels this node follows in Redis (those its clients hold).",
                    broker.channels.load(Relaxed),
                ),
            ] {
                series(&mut out, name, kind, help, v);
            }
        }
        for (name, kind, help, values) in [
            (
                "pushgate_http_connections",
                "gauge",
                "Open TCP connections, by protocol (an HTTP/2 connection carries many requests and streams).",
                &self.http_connections.each(),
            ),
            (
                "pushgate_http_connections_total",
                "counter",
                "TCP connections accepted, by protocol.",
                &self.http_connections_total.each(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (p, v) in Protocol::ALL.iter().zip(values.iter()) {
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {v}", p.label());
            }
        }
        process::render(&mut out, self.started);
        out
    }
}

/// Every counter of an array, read.
trait Each {
    fn each(&self) -> Vec<i64>;
}

impl<const K: usize> Each for [AtomicI64; K] {
    fn each(&self) -> Vec<i64> {
        self.iter().map(|v| v.load(Relaxed)).collect()
    }
}

impl<const K: usize> Each for [AtomicU64; K] {
    fn each(&self) -> Vec<i64> {
        self.iter().map(|v| v.load(Relaxed) as i64).collect()
    }
}

pub struct ProtocolGuard {
    metrics: Arc<Metrics>,
    p: Protocol,
}

impl Drop for ProtocolGuard {
    fn drop(&mut self) {
        self.metrics.http_connections[self.p as usize].fetch_sub(1, Relaxed);
    }
}

pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    t: Transport,
}

impl ConnectionGuard {
    pub fn transport(&self) -> Transport {
        self.t
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.t.index()].fetch_sub(1, Relaxed);
        self.metrics.closed.notify_waiters();
    }
}

/// One unlabelled series with its `# HELP` and `# TYPE` lines.
fn series(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
    );
}
