//! What every request handler shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pushgate_core::delivery::Timing;
use pushgate_core::{Connection, Error, Hub, Limits, Principal};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;

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
    next_subscriber: AtomicU64,
}

impl AppState {
    pub fn new(config: Config, hub: Arc<Hub>) -> Arc<Self> {
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
        Arc::new(AppState {
            config,
            hub,
            ws_timing,
            stream_timing,
            iframe_timing,
            metrics: Arc::new(Metrics::default()),
            registry: Arc::new(Registry::default()),
            next_subscriber: AtomicU64::new(1),
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            outbox_capacity: self.config.outbox_capacity,
            max_subscriptions: self.config.max_subscriptions,
        }
    }

    /// Counts `e` in `/metrics` under the limit that refused it, if a limit
    /// did (`rate_limited`, `too_deep`).
    pub fn count_limited(&self, e: &Error) {
        if let Some(limit) = crate::error::limit_of(e.kind()) {
            self.metrics.limited(limit);
        }
    }

    /// A new client connection of `principal`, with a process-unique
    /// subscriber id.
    pub fn connection(&self, principal: &Principal) -> Connection {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        Connection::new(self.hub.clone(), id, self.limits(), principal.clone())
    }
}
