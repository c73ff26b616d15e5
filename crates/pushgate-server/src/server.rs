//! The server: binds, runs the accept loop (each socket goes to the HTTP/1.1
//! front, `crate::http1`), sweeps, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgate_core::hub::Cluster;
use pushgate_core::{Hub, HubConfig, Log, MemoryLog};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::Error;
use crate::state::AppState;
use crate::tls::Tls;

pub struct Server {
    listener: TcpListener,
    /// The plain-HTTP listener that redirects to https (`tls_redirect`).
    redirect: Option<TcpListener>,
    state: Arc<AppState>,
}

impl Server {
    /// Binds the listening socket with the in-memory log, the durable
    /// store when `data_dir` is set (its counts in `/metrics`), or the
    /// Redis broker when `broker_url` is.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        if let Some(url) = &config.broker_url {
            config.validate()?;
            let tls_ca = match &config.broker_tls_ca {
                Some(file) => Some(std::fs::read(file).map_err(|e| {
                    Error::config(format!("broker_tls_ca: cannot read {file}: {e}"))
                })?),
                None => None,
            };
            let redis = crate::redis_broker::RedisLog::open(
                crate::redis_broker::RedisConfig {
                    url: url.clone(),
                    prefix: config.broker_prefix.clone(),
                    timeout: config.broker_timeout,
                    presence_ttl: config.broker_presence_ttl,
                    tls_ca,
                },
                config.memory_log(),
            )?;
            let redis = Arc::new(redis);
            let stats = redis.stats();
            let server = Self::assemble(config, redis.clone(), Some(redis.clone())).await?;
            server.state.metrics.watch_broker(stats);
            server.state.health.watch_broker(redis);
            return Ok(server);
        }
        let Some(dir) = &config.data_dir else {
            let log = Arc::new(MemoryLog::new(config.memory_log()));
            return Self::with_log(config, log).await;
        };
        let store = open_store(&config, std::path::Path::new(dir))?;
        let stats = store.stats();
        let dir = std::path::PathBuf::from(dir);
        let server = Self::with_log(config, Arc::new(store)).await?;
        server.state.metrics.watch_store(stats.clone());
        server.state.health.watch_store(dir, stats);
        Ok(server)
    }

    /// Binds the listening socket with history kept by `log`.
    pub async fn with_log(config: Config, log: Arc<dyn Log>) -> Result<Self, Error> {
        Self::assemble(config, log, None).await
    }

    /// Binds the listening socket with history kept by `log`, as a node
    /// of `cluster` when there is one.
    async fn assemble(
        config: Config,
        log: Arc<dyn Log>,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let policy = config.policy()?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key, config.http2)?),
            _ => None,
        };
        let listener = listen(config.listen).map_err(|e| Error::bind(config.listen, e))?;
        let redirect = match config.tls_redirect {
            Some(addr) => Some(listen(addr).map_err(|e| Error::bind(addr, e))?),
            None => None,
        };
        let hub = Hub::new(
            log,
            HubConfig {
                direct_gap_ms: config.direct_write_gap.as_millis() as u64,
                policy: Arc::new(policy),
                rtc: Arc::new(config.rtc()),
                cluster,
                ..Default::default()
            },
        );
        Ok(Server {
            listener,
            redirect,
            state: AppState::serving(config, Arc::new(hub), tls),
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

    /// The address of the redirecting listener, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then shuts down gracefully:
    /// WebSockets are closed with 1012, event streams end, waiting
    /// long-polls are answered, and this returns when they are gone or
    /// after `shutdown_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            listener,
            redirect,
            state,
        } = self;
        let addr = listener.local_addr().map_err(Error::io)?;
        let redirect_addr = redirect.as_ref().and_then(|l| l.local_addr().ok());
        log_start(&state, addr, redirect_addr);

        let mut background = tokio::task::JoinSet::new();
        background.spawn(sweeper(state.clone()));
        background.spawn(crate::health::run(state.clone()));
        if state.hub.cluster().is_some() {
            background.spawn(renew_presence(state.clone()));
        }
        if state.config.demo {
            background.spawn(crate::demo::clock(state.clone()));
        }
        if state.tls.is_some() {
            background.spawn(reload_on_sighup(state.clone()));
        }
        if let Some(redirect) = redirect {
            background.spawn(crate::redirect::run(redirect, addr.port()));
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
            give_up_on_silent_peers(&stream, state.config.ws_idle_timeout);
            tokio::spawn(crate::accept::serve(stream, peer, state.clone()));
        }
        // Graceful shutdown: stop accepting (the listener is dropped here),
        // tell every connection to end, and wait for them, within a deadline.
        drop(listener);
        background.abort_all();
        let open = state.metrics.open_total();
        tracing::info!(open, "shutting down: closing connections");
        state.registry.shut_down_all();
        let deadline = state.config.shutdown_timeout;
        let closed = tokio::time::timeout(deadline, state.metrics.all_closed()).await;
        // The other nodes hear this one's members leave now, not when
        // their listings expire.
        if let Some(cluster) = state.hub.cluster() {
            let _ = tokio::time::timeout(state.config.broker_timeout, cluster.flush()).await;
        }
        // Last: what was appended while connections ended is on disk, and
        // the next start knows this stop was clean.
        state.hub.log().close();
        match closed {
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
/// The durable log in `dir`, with what it held put back.
fn open_store(
    config: &Config,
    dir: &std::path::Path,
) -> Result<crate::store::disk_log::DiskLog, Error> {
    use crate::store::disk_log::{DiskLog, SyncMode};
    use crate::store::Sync;
    let mode = match config.sync {
        Sync::Always => SyncMode::Always,
        Sync::Interval => SyncMode::Interval(config.sync_interval),
        Sync::Never => SyncMode::Never,
    };
    let started = std::time::Instant::now();
    let (log, recovered) = DiskLog::open(
        dir,
        config.memory_log(),
        mode,
        crate::store::segments::SEGMENT_SIZE,
    )?;
    if let Some((file, bytes)) = &recovered.torn {
        tracing::warn!(
            file = %file.display(),
            bytes,
            "dropped the end of a write a crash cut short (it was never acknowledged)"
        );
    }
    if recovered.renewed_epochs {
        tracing::warn!(
            "the last stop was a crash, with sync = interval or never: messages acknowledged \
             before it may be lost, so every channel goes on in a new epoch (clients reset \
             rather than skip them)"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        sync = config.sync.name(),
        ms = started.elapsed().as_millis() as u64,
        "history store opened"
    );
    Ok(log)
}

/// The one line that says at start what this server is: its version, where
/// it listens, where history lives, the broker, how clients and the API are
/// authenticated, the demo. Then a warning for each thing left open.
fn log_start(state: &AppState, addr: SocketAddr, redirect: Option<SocketAddr>) {
    let c = &state.config;
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    let store = match (&c.broker_url, &c.data_dir) {
        (Some(_), _) => "redis (the broker's)".to_owned(),
        (None, Some(dir)) => match c.sync {
            crate::store::Sync::Interval => {
                format!("disk {dir} (sync every {:?})", c.sync_interval)
            }
            sync => format!("disk {dir} (sync {})", sync.name()),
        },
        (None, None) => "memory".to_owned(),
    };
    let broker = c.broker_url.as_deref().map_or("none".to_owned(), |url| {
        format!(
            "{} (prefix {})",
            crate::redis_broker::without_password(url),
            c.broker_prefix
        )
    });
    let keys: Vec<String> = [
        c.auth_secret.as_ref().map(|_| "HS256 secret".to_owned()),
        c.auth_public_key
            .as_ref()
            .map(|p| format!("public key {p}")),
        c.auth_jwks.as_ref().map(|p| format!("JWKS {p}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let auth = if state.hub.policy().checks_tokens() {
        format!("tokens checked with {}", keys.join(", "))
    } else {
        "off (every channel open)".to_owned()
    };
    let api = if c.api_key.is_some() {
        "api key"
    } else {
        "loopback only"
    };
    let demo = match (c.demo, c.demo_tokens) {
        (false, _) => "off".to_owned(),
        (true, false) => format!("{scheme}://{addr}/"),
        (true, true) => format!("{scheme}://{addr}/ with demo tokens"),
    };
    let webrtc = (!c.ice_servers.is_empty()).then(|| {
        let turn = match (&c.turn_secret, &c.turn_username) {
            (Some(_), _) => "TURN credentials per client",
            (None, Some(_)) => "fixed TURN credentials",
            (None, None) => "no TURN credentials",
        };
        format!("{} ICE servers, {turn}", c.ice_servers.len())
    });
    tracing::info!(
        %addr,
        version = env!("CARGO_PKG_VERSION"),
        tls = state.tls.is_some(),
        redirect = redirect.map(|a| format!("http://{a}")),
        http2 = c.http2,
        store,
        broker,
        auth,
        api,
        demo,
        webrtc,
        max_connections = state.limiter.max_total(),
        "pushgate listening"
    );
    if c.api_key.is_none() {
        tracing::warn!("no API key configured: /api/* answers loopback clients only (set --api-key to publish from elsewhere)");
    }
    if !state.hub.policy().checks_tokens() {
        tracing::warn!(
            "auth: no key configured — every channel is open to anyone (see docs/security.md)"
        );
    } else if c.demo_tokens {
        tracing::warn!(
            "auth: demo tokens are on: anyone can get a token at /demo/token (never in production)"
        );
    }
}

/// Pending connections the kernel may queue before `accept`. The usual
/// default (128) overflows in a reconnect storm: after a restart every
/// client comes back at once, and a dropped SYN costs a client a 1 s retry.
const LISTEN_BACKLOG: u32 = 4096;

/// A peer that vanishes without a FIN or a reset (a pulled cable, a
/// sleeping laptop) leaves sent data unacknowledged; the kernel then
/// retransmits for up to 15 minutes before it gives up. Every held
/// connection sends a heartbeat at least every `stream_ping_interval` or
/// `ws_ping_interval`, so with `TCP_USER_TIMEOUT` at `idle` (the same
/// limit the stall rule applies to writes) such a connection fails within
/// a heartbeat and `idle`, and leaves presence and its rooms. Linux only:
/// elsewhere the stall rule and the WebSocket idle timeout remain.
fn give_up_on_silent_peers(stream: &tokio::net::TcpStream, idle: Duration) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(idle));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, idle);
}

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

/// Reloads the TLS certificate and key on SIGHUP (a certbot renew hook
/// sends it): new handshakes use the new files, open connections keep
/// theirs, and a broken file leaves the old certificate serving.
async fn reload_on_sighup(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(tls) = &state.tls else { return };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: the certificate will not be reloaded");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(cert = tls.cert_path(), "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "TLS certificate NOT reloaded: still serving the previous one"
            ),
        }
    }
}

/// Expires history and forgets idle channels.
/// Keeps this node's members listed in the cluster's presence, which
/// forgets those not renewed within `broker_presence_ttl`.
async fn renew_presence(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.config.broker_presence_ttl / 3);
    loop {
        tick.tick().await;
        state.hub.renew_presence().await;
    }
}

async fn sweeper(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        state.hub.sweep().await;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_give_up_on_a_silent_peer_after_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            None,
            "the kernel's default"
        );
        give_up_on_silent_peers(&stream, Duration::from_secs(60));
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(60))
        );
    }
}
