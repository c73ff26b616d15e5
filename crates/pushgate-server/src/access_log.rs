//! What an operator reads in the log, with `tracing` fields:
//!
//! - a line when a client connection opens and one when it closes
//!   (transport, peer, user, and at the close its duration, why it ended
//!   and how many messages it was written) — at `info` for the long-lived
//!   transports, at `debug` for polls and long-polls, which are requests;
//! - a line per server API request (method, path, status, duration);
//! - a `warn` per refusal (token, permission, API key, origin, admin) and
//!   per request or connection a limit refused, with the reason, at most
//!   [`WARNINGS_PER_SECOND`] a second in all so that an attack cannot flood
//!   the log; the next line says how many were left out.
//!
//! Every line's target is `pushgate::access`, so `RUST_LOG` can raise or
//! lower them apart from the rest (docs/operations.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pushgate_core::auth::User;
use pushgate_core::{Outbox, Principal};

use crate::metrics::{ConnectionGuard, Limit, Metrics, Refusal, Transport};

/// The target of every line of this module.
pub const TARGET: &str = "pushgate::access";

/// Most refusal warnings written in one second.
pub const WARNINGS_PER_SECOND: u32 = 10;

/// Why a connection ended, as its closing line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Still open (a guard dropped before anyone said: a panic, or a path
    /// that forgot to say; reads as `unknown`).
    Open,
    /// The client closed it or went away.
    Client,
    /// It fell behind its queue (a slow consumer), and resumes from its cursor.
    FellBehind,
    /// The server is stopping.
    ShutDown,
    /// Nothing was heard from the client for the idle timeout (or a stream
    /// reached its lifetime).
    Idle,
    /// Nothing could be written for the stall timeout.
    Stalled,
    /// Its token expired.
    Expired,
    /// The application disconnected its user.
    Disconnected,
    /// The client broke the protocol (a bad frame, a message too large).
    Violation,
    /// Its token was refused when it opened.
    Refused,
    /// A request (poll, long-poll) answered.
    Answered,
}

impl Close {
    pub fn label(self) -> &'static str {
        match self {
            Close::Open => "unknown",
            Close::Client => "client_closed",
            Close::FellBehind => "fell_behind",
            Close::ShutDown => "shutdown",
            Close::Idle => "idle",
            Close::Stalled => "stalled",
            Close::Expired => "expired",
            Close::Disconnected => "disconnected",
            Close::Violation => "protocol_violation",
            Close::Refused => "token_refused",
            Close::Answered => "answered",
        }
    }
}

impl From<pushgate_core::delivery::End> for Close {
    fn from(end: pushgate_core::delivery::End) -> Self {
        use pushgate_core::delivery::End;
        match end {
            End::FellBehind => Close::FellBehind,
            End::ShutDown => Close::ShutDown,
            End::Idle => Close::Idle,
            End::Stalled => Close::Stalled,
            End::Expired => Close::Expired,
            End::Disconnected => Close::Disconnected,
        }
    }
}

/// A client connection, counted in the metrics and logged when it opens
/// and closes. Small (64 bytes: memory per idle connection is a headline
/// figure): the peer as 18 bytes, the opening as milliseconds since the
/// process started.
pub struct Tracked {
    gauge: ConnectionGuard,
    user: Option<Arc<User>>,
    /// The peer's address, IPv4 as IPv4-mapped IPv6.
    ip: [u8; 16],
    port: u16,
    opened_ms: u64,
    /// Messages written: by the connection's task, and by fan-out's direct
    /// writes once its delivery loop ends ([`Tracked::direct_writes`]).
    delivered: u32,
    close: Close,
    /// The WebSocket close code sent, when one was.
    code: Option<u16>,
}

/// When the process started, which connections' opening is counted from.
fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn ms_since_start() -> u64 {
    process_start().elapsed().as_millis() as u64
}

impl Tracked {
    /// Opens the count of a connection of `transport` from `peer`, as `principal`.
    pub fn open(
        metrics: &Arc<Metrics>,
        transport: Transport,
        peer: SocketAddr,
        principal: &Principal,
    ) -> Self {
        let user = principal.user().cloned();
        let ip = match peer.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        let t = Tracked {
            gauge: metrics.connection(transport),
            user,
            ip: ip.octets(),
            port: peer.port(),
            opened_ms: ms_since_start(),
            delivered: 0,
            close: Close::Open,
            code: None,
        };
        if t.is_request() {
            tracing::debug!(target: TARGET, transport = transport.label(), peer = %peer, user = t.user_id(), "request opened");
        } else {
            tracing::info!(target: TARGET, transport = transport.label(), peer = %peer, user = t.user_id(), "connection opened");
        }
        t
    }

    pub fn transport(&self) -> Transport {
        self.gauge.transport()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.gauge.metrics()
    }

    pub fn peer(&self) -> SocketAddr {
        let ip = std::net::Ipv6Addr::from(self.ip);
        match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, self.port)),
            None => SocketAddr::from((ip, self.port)),
        }
    }

    fn is_request(&self) -> bool {
        matches!(self.transport(), Transport::Poll | Transport::LongPoll)
    }

    fn user_id(&self) -> &str {
        self.user.as_deref().map_or("-", |u| &u.id)
    }

    /// `n` messages written by the connection's task.
    pub fn delivered(&mut self, n: u64) {
        if n > 0 {
            self.gauge.metrics().delivered(self.transport(), n);
            self.delivered = self.delivered.saturating_add(n as u32);
        }
    }

    /// Adds, for the closing line, the messages fan-out wrote straight to
    /// the socket (`outbox`'s count), once nothing more can be written so.
    pub fn direct_writes(&mut self, outbox: &Outbox) {
        self.delivered = self.delivered.saturating_add(outbox.direct_writes() as u32);
    }

    /// Why it ends (the first reason given stands).
    pub fn close(&mut self, why: Close) {
        if self.close == Close::Open {
            self.close = why;
        }
    }

    /// Why it ends, and the WebSocket close code sent.
    pub fn close_with_code(&mut self, why: Close, code: u16) {
        if self.close == Close::Open {
            self.close = why;
            self.code = Some(code);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let transport = self.transport().label();
        let duration_ms = ms_since_start().saturating_sub(self.opened_ms);
        let peer = self.peer();
        let reason = self.close.label();
        let code = self.code.map(|c| c as i64).unwrap_or(-1);
        if self.is_request() {
            tracing::debug!(target: TARGET, transport, peer = %peer, user = self.user_id(), duration_ms, reason, delivered = self.delivered, "request closed");
        } else if self.code.is_some() {
            tracing::info!(target: TARGET, transport, peer = %peer, user = self.user_id(), duration_ms, reason, code, delivered = self.delivered, "connection closed");
        } else {
            tracing::info!(target: TARGET, transport, peer = %peer, user = self.user_id(), duration_ms, reason, delivered = self.delivered, "connection closed");
        }
    }
}

/// A server API request answered.
pub fn api_request(method: &str, path: &str, status: u16, took: Duration, peer: SocketAddr) {
    tracing::info!(
        target: TARGET,
        method,
        path,
        status,
        duration_ms = took.as_secs_f64() * 1e3,
        peer = %peer,
        "api request"
    );
}

/// The process's refusal warnings: one allowance for all of them, as the
/// log they would flood is one.
static WARNINGS: Refusals = Refusals {
    window: Mutex::new(Window {
        start: None,
        written: 0,
    }),
    suppressed: AtomicU64::new(0),
};

/// Counts a refusal for `why` of a caller at `peer` and warns of it,
/// unless this second's warnings are spent.
pub fn refused(metrics: &Metrics, why: Refusal, peer: SocketAddr, detail: &str) {
    metrics.refused(why);
    if let Some(suppressed) = WARNINGS.admit(Instant::now()) {
        let detail: String = detail.chars().take(200).collect();
        tracing::warn!(target: TARGET, reason = why.label(), peer = %peer, detail, suppressed, "refused");
    }
}

/// Warns that a limit refused a request, a command or a connection (the
/// caller counts it), unless this second's warnings are spent.
pub fn limited(limit: Limit, peer: Option<SocketAddr>) {
    if let Some(suppressed) = WARNINGS.admit(Instant::now()) {
        match peer {
            Some(peer) => {
                tracing::warn!(target: TARGET, limit = limit.label(), peer = %peer, suppressed, "refused by a limit")
            }
            None => {
                tracing::warn!(target: TARGET, limit = limit.label(), suppressed, "refused by a limit")
            }
        }
    }
}

/// A rate limit on warnings: at most [`WARNINGS_PER_SECOND`] a second.
#[derive(Default)]
struct Refusals {
    window: Mutex<Window>,
    /// Left out since the last line written.
    suppressed: AtomicU64,
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    written: u32,
}

impl Refusals {
    /// Whether a line may be written at `now`, and how many were left out
    /// before it.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        match w.start {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {
                if w.written >= WARNINGS_PER_SECOND {
                    self.suppressed.fetch_add(1, Relaxed);
                    return None;
                }
                w.written += 1;
            }
            _ => {
                w.start = Some(now);
                w.written = 1;
            }
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_warnings_are_limited_per_second_and_say_what_was_left_out() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let written: Vec<Option<u64>> = (0..15).map(|_| r.admit(t0)).collect();
        assert_eq!(
            written.iter().filter(|w| w.is_some()).count(),
            WARNINGS_PER_SECOND as usize
        );
        assert!(written[..10].iter().all(|w| *w == Some(0)));
        assert_eq!(r.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            r.admit(t0 + Duration::from_secs(1)),
            Some(6),
            "the next second's first line says how many were left out"
        );
        assert_eq!(r.admit(t0 + Duration::from_secs(1)), Some(0));
    }

    #[test]
    fn a_connection_is_counted_while_tracked() {
        let metrics = Arc::new(Metrics::default());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut t = Tracked::open(&metrics, Transport::Sse, peer, &Principal::Anonymous);
        assert_eq!(metrics.open_connections(Transport::Sse), 1);
        t.delivered(3);
        t.close(Close::Idle);
        t.close(Close::Client);
        assert_eq!(t.close, Close::Idle, "the first reason stands");
        drop(t);
        assert_eq!(metrics.open_connections(Transport::Sse), 0);
        assert_eq!(metrics.delivered_count(), 3);
    }

    #[test]
    fn a_connection_record_is_small_and_keeps_its_peer() {
        let metrics = Arc::new(Metrics::default());
        for peer in ["192.0.2.7:5000", "[2001:db8::1]:443"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let t = Tracked::open(&metrics, Transport::Ws, peer, &Principal::Anonymous);
            assert_eq!(t.peer(), peer);
        }
        assert!(std::mem::size_of::<Tracked>() <= 64);
    }
}
