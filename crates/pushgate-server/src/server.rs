//! The server: binds, runs the accept loop (each socket goes to the HTTP/1.1
//! front, `crate::http1`), sweeps, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate_core::{Hub, HubConfig, Log, MemoryLog};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::Error;
use crate::state::AppState;

pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listening socket with the in-memory log.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let log = MemoryLog::new(config.memory_log());
        Self::with_log(config, Arc::new(log)).await
    }

    /// Binds the listening socket with history kept by `log`.
    pub async fn with_log(config: Config, log: Arc<dyn Log>) -> Result<Self, Error> {
        config.validate()?;
        let policy = config.policy()?;
        let listener = listen(config.listen).map_err(|e| Error::bind(config.listen, e))?;
        let hub = Hub::new(
            log,
            HubConfig {
                direct_gap_ms: config.direct_write_gap.as_millis() as u64,
                policy: Arc::new(policy),
                ..Default::default()
            },
        );
        Ok(Server {
            listener,
            state: AppState::new(config, Arc::new(hub)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully:
    /// WebSockets are closed with 1012, event streams end, waiting
    /// long-polls are answered, and this returns when they are gone or
    /// after `shutdown_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server { listener, state } = self;
        let addr = listener.local_addr().map_err(Error::io)?;
        tracing::info!(%addr, "pushgate listening");
        if state.config.api_key.is_none() {
            tracing::warn!("no API key configured: /api/* answers loopback clients only (set --api-key to publish from elsewhere)");
        }
        log_auth(&state);
        if state.config.demo {
            tracing::info!(url = %format!("http://{addr}/"), "demo page");
        }

        let mut background = tokio::task::JoinSet::new();
        background.spawn(sweeper(state.clone()));
        if state.config.demo {
            background.spawn(crate::demo::clock(state.clone()));
        }

        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(crate::http1::serve(stream, peer, state.clone()));
        }
        // Graceful shutdown: stop accepting (the listener is dropped here),
        // tell every connection to end, and wait for them, within a deadline.
        drop(listener);
        background.abort_all();
        let open = state.metrics.open_total();
        tracing::info!(open, "shutting down: closing connections");
        state.registry.shut_down_all();
        let deadline = state.config.shutdown_timeout;
        match tokio::time::timeout(deadline, state.metrics.all_closed()).await {
            Ok(()) => tracing::info!("pushgate stopped"),
            Err(_) => tracing::warn!(
                left = state.metrics.open_total(),
                "pushgate stopped with connections still open after shutdown_timeout"
            ),
        }
        Ok(())
    }
}

/// Says at start how clients are authenticated, or that they are not.
fn log_auth(state: &AppState) {
    let policy = state.hub.policy();
    if policy.checks_tokens() {
        let c = &state.config;
        let keys: Vec<&str> = [
            c.auth_secret.as_ref().map(|_| "an HMAC secret"),
            c.auth_public_key.as_deref(),
            c.auth_jwks.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let namespaces = policy.namespaces().iter().count();
        tracing::info!(
            "auth: tokens checked with {}, {namespaces} namespaces",
            keys.join(", ")
        );
        if c.demo_tokens {
            tracing::warn!("auth: demo tokens are on: anyone can get a token at /demo/token (never in production)");
        }
    } else {
        tracing::warn!(
            "auth: no key configured — every channel is open to anyone (see docs/security.md)"
        );
    }
}

/// Pending connections the kernel may queue before `accept`. The usual
/// default (128) overflows in a reconnect storm: after a restart every
/// client comes back at once, and a dropped SYN costs a client a 1 s retry.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Expires history and forgets idle channels.
async fn sweeper(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        state.hub.sweep().await;
    }
}
