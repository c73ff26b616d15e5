//! What every request handler shares.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use pushgate_core::delivery::Timing;
use pushgate_core::rate::Buckets;
use pushgate_core::{Connection, Error, Hub, Limits, Principal};

use crate::accept::Limiter;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::tls::Tls;

pub struct AppState {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Live connections, for graceful shutdown.
    pub registry: Arc<Registry>,
    /// Heartbeat and give-up times of WebSockets, shared by all of them.
    pub ws_timing: Arc<Timing>,
    /// The same for SSE and NDJSON streams.
    pub stream_timing: Arc<Timing>,
    /// The same for the hidden iframe, whose document has a lifetime.
    pub iframe_timing: Arc<Timing>,
    /// The certificate served, when the port speaks TLS.
    pub tls: Option<Tls>,
    /// Connections held, against `max_connections` and its per-IP limit.
    pub limiter: Arc<Limiter>,
    /// The publish allowance of `POST /command` clients, by address: they
    /// hold no connection whose bucket could keep it.
    command_publish_tokens: Mutex<Buckets<u64>>,
    next_subscriber: AtomicU64,
    /// When the server started (`/api/info`'s uptime).
    pub started: Instant,
}

/// Most `/command` client addresses with a publish bucket at once: 16
/// bytes each, 2.2 MB at most with the hash table's slack. A bucket is
/// forgotten once full again, `client_publish_burst / client_publish_rate`
/// seconds after its last publish (2 s by default), so this many is tens of
/// thousands of addresses publishing each second.
pub const COMMAND_CLIENTS: usize = 65_536;

/// The key of a `/command` client's publish bucket: its IPv4 address, or
/// the /64 of its IPv6 address, which one host usually holds whole and
/// could otherwise rotate through for a fresh bucket per request. (An
/// IPv4 key can equal a /64 only inside `::/32`, which is not routed.)
fn command_client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) as u64,
        },
    }
}

impl AppState {
    pub fn new(config: Config, hub: Arc<Hub>) -> Arc<Self> {
        Self::serving(config, hub, None)
    }

    /// With the TLS certificate the port serves.
    pub fn serving(config: Config, hub: Arc<Hub>, tls: Option<Tls>) -> Arc<Self> {
        let limiter = Arc::new(Limiter::new(
            Limiter::total_from(config.max_connections),
            config.max_connections_per_ip,
        ));
        let ws_timing = Arc::new(Timing {
            heartbeat: config.ws_ping_interval,
            heartbeat_after_silence: false,
            // One limit for silence and stalled writes alike: a peer that
            // neither sends nor reads for `ws_idle_timeout` is gone.
            idle: Some(config.ws_idle_timeout),
            stall: config.ws_idle_timeout,
        });
        let stream_timing = Arc::new(Timing {
            heartbeat: config.stream_ping_interval,
            heartbeat_after_silence: true,
            idle: None,
            stall: config.ws_idle_timeout,
        });
        let iframe_timing = Arc::new(Timing {
            heartbeat: config.iframe_ping_interval,
            idle: Some(config.iframe_lifetime),
            ..*stream_timing
        });
        let first_id = hub.first_id();
        let state = Arc::new(AppState {
            config,
            hub,
            ws_timing,
            stream_timing,
            iframe_timing,
            tls,
            limiter,
            metrics: Arc::new(Metrics::default()),
            registry: Arc::new(Registry::default()),
            command_publish_tokens: Mutex::new(Buckets::new(COMMAND_CLIENTS)),
            next_subscriber: AtomicU64::new(first_id),
            started: Instant::now(),
        });
        // This node's facts answer the cluster's surveys (`/api/info`, …).
        let facts = crate::api::survey::NodeFacts(Arc::downgrade(&state));
        state.hub.answer_with(Arc::new(facts));
        state
    }

    /// Reads the TLS certificate and key files again (what SIGHUP does):
    /// new handshakes use them; on error the old ones stay in use.
    pub fn reload_tls(&self) -> Result<(), crate::Error> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Err(crate::Error::config("TLS is not configured")),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            outbox_capacity: self.config.outbox_capacity,
            max_subscriptions: self.config.max_subscriptions,
        }
    }

    /// The gate of a `POST /command` publish or send from `peer` at `now`:
    /// a token from its address's bucket (see
    /// [`Connection::spend_publish_token`] for a connection's own).
    pub fn spend_command_publish_token(&self, peer: IpAddr, now: Instant) -> Result<(), Error> {
        let Some(rate) = self.hub.policy().publish_rate() else {
            return Ok(());
        };
        let mut table = self
            .command_publish_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table
            .take(command_client_key(peer), rate, now)
            .map_err(|wait| rate.refusal(wait))
    }

    /// Counts `e` in `/metrics` under the limit that refused it, if a limit
    /// did (`rate_limited`, `too_deep`).
    pub fn count_limited(&self, e: &Error) {
        if let Some(limit) = crate::error::limit_of(e.kind()) {
            self.metrics.limited(limit);
        }
    }

    /// A new client connection of `principal`, with an id unique in the
    /// cluster (this node's number in its high bits).
    pub fn connection(&self, principal: &Principal) -> Connection {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        Connection::new(self.hub.clone(), id, self.limits(), principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_client_is_its_ipv4_address_or_its_ipv6_64() {
        let key = |ip: &str| command_client_key(ip.parse().unwrap());
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
