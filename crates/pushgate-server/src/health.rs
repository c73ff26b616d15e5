//! Health that tells the truth: `GET /livez` answers while the process
//! runs; `GET /readyz` (and its alias `/healthz`) answers 200 only while
//! the node can serve — its store writable, its broker reachable **and its
//! subscription delivering**, and it is not stopping — and 503 naming the
//! failing check otherwise.
//!
//! The checks that need I/O run every [`PROBE_EVERY`] in a task of their
//! own ([`run`]); a request reads their last results, so a load balancer
//! polling `/readyz` costs nothing and cannot pile probes onto Redis. The
//! broker's probe is an end-to-end publication through the node's own
//! pub/sub subscription: a node whose publishes succeed while its
//! subscription hears nothing (left on a demoted master after a failover,
//! a silently dead socket) is not ready.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::redis_broker::{BrokerStats, RedisLog};
use crate::state::AppState;
use crate::store::StoreStats;
use crate::web::{self as h, Body};

/// How often the store and the broker are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// A probe result older than this counts as failed: the probing task is
/// stuck (a store write that hangs) or gone.
const STALE_AFTER: Duration = Duration::from_secs(15);

/// The file written, synced and removed to check that the data directory
/// takes writes.
const PROBE_FILE: &str = ".readyz-probe";

/// One check's answer.
#[derive(Debug, Clone)]
struct Checked {
    ok: bool,
    detail: String,
    at: Instant,
}

#[derive(Default)]
pub struct Health {
    store: OnceLock<(PathBuf, Arc<StoreStats>)>,
    broker: OnceLock<(Arc<RedisLog>, Arc<BrokerStats>)>,
    last_store: Mutex<Option<Checked>>,
    last_broker: Mutex<Option<Checked>>,
}

impl Health {
    /// Checks the durable store in `dir` too.
    pub fn watch_store(&self, dir: PathBuf, stats: Arc<StoreStats>) {
        let _ = self.store.set((dir, stats));
    }

    /// Checks the Redis broker too.
    pub fn watch_broker(&self, log: Arc<RedisLog>) {
        let stats = log.stats();
        let _ = self.broker.set((log, stats));
    }

    fn has_probes(&self) -> bool {
        self.store.get().is_some() || self.broker.get().is_some()
    }
}

/// One line of the answer.
struct Line {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// The checks as they stand.
fn report(state: &AppState, now: Instant) -> Vec<Line> {
    let health = &state.health;
    let mut lines = Vec::new();
    let last =
        |slot: &Mutex<Option<Checked>>| slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let judge = |name, checked: Option<Checked>, extra: Option<String>| {
        let (ok, detail) = match (checked, extra) {
            (_, Some(failing)) => (false, failing),
            (None, None) => (false, "not checked yet".to_owned()),
            (Some(c), None) if now.saturating_duration_since(c.at) > STALE_AFTER => (
                false,
                format!(
                    "the last check finished {} s ago (it should run every {} s)",
                    now.saturating_duration_since(c.at).as_secs(),
                    PROBE_EVERY.as_secs()
                ),
            ),
            (Some(c), None) => (c.ok, c.detail),
        };
        Line { name, ok, detail }
    };
    if let Some((_, stats)) = health.store.get() {
        let failed = stats.failed.load(Relaxed).then(|| {
            "a write or sync to the data directory failed: publishes are refused until a restart"
                .to_owned()
        });
        lines.push(judge("store", last(&health.last_store), failed));
    }
    if let Some((_, stats)) = health.broker.get() {
        let down = (!stats.up.load(Relaxed))
            .then(|| "the pub/sub connection to Redis is down; reconnecting".to_owned());
        lines.push(judge("broker", last(&health.last_broker), down));
    }
    let stopping = state.registry.is_shutting_down();
    lines.push(Line {
        name: "shutdown",
        ok: !stopping,
        detail: if stopping {
            "the server is stopping".to_owned()
        } else {
            "serving".to_owned()
        },
    });
    lines
}

/// `GET /readyz` and `GET /healthz`.
pub fn readyz(state: &AppState) -> Response<Body> {
    let lines = report(state, Instant::now());
    let ready = lines.iter().all(|l| l.ok);
    state.metrics.set_ready(ready);
    let mut out = String::from("{\"status\":");
    out.push_str(if ready { "\"ok\"" } else { "\"unavailable\"" });
    if !ready {
        out.push_str(",\"failing\":[");
        for (i, l) in lines.iter().filter(|l| !l.ok).enumerate() {
            let _ = write!(out, "{}\"{}\"", if i > 0 { "," } else { "" }, l.name);
        }
        out.push(']');
    }
    out.push_str(",\"checks\":[");
    for (i, l) in lines.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"name\":\"{}\",\"ok\":{},\"detail\":",
            if i > 0 { "," } else { "" },
            l.name,
            l.ok
        );
        pushgate_core::json::push_string(&mut out, &l.detail);
        out.push('}');
    }
    out.push_str("]}");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    h::json(status, out)
}

/// `GET /livez`: the process runs and answers.
pub fn livez() -> Response<Body> {
    h::json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
}

/// Probes the store and the broker every [`PROBE_EVERY`], for as long as
/// the server runs; logs when readiness changes.
pub async fn run(state: Arc<AppState>) {
    if !state.health.has_probes() {
        return;
    }
    let mut was_ready = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let health = &state.health;
        if let Some((dir, _)) = health.store.get() {
            let checked = probe_store(dir.clone()).await;
            *health
                .last_store
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(checked);
        }
        if let Some((log, _)) = health.broker.get() {
            let checked = match log.probe().await {
                Ok(took) => Checked {
                    ok: true,
                    detail: format!(
                        "a probe came back through the Redis subscription in {:.1} ms",
                        took.as_secs_f64() * 1e3
                    ),
                    at: Instant::now(),
                },
                Err(e) => Checked {
                    ok: false,
                    detail: e.message().to_owned(),
                    at: Instant::now(),
                },
            };
            *health
                .last_broker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(checked);
        }
        let lines = report(&state, Instant::now());
        let ready = lines.iter().all(|l| l.ok);
        state.metrics.set_ready(ready);
        if was_ready != Some(ready) {
            let failing: Vec<String> = lines
                .iter()
                .filter(|l| !l.ok)
                .map(|l| format!("{}: {}", l.name, l.detail))
                .collect();
            match (was_ready, ready) {
                (_, true) => tracing::info!("ready: every check passes"),
                (None, false) => {
                    tracing::info!(failing = %failing.join("; "), "not ready yet")
                }
                (Some(_), false) => {
                    tracing::warn!(failing = %failing.join("; "), "not ready")
                }
            }
            was_ready = Some(ready);
        }
    }
}

/// Writes, syncs and removes a small file in the data directory.
async fn probe_store(dir: PathBuf) -> Checked {
    let started = Instant::now();
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let path = dir.join(PROBE_FILE);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(b"ok")?;
        f.sync_data()?;
        drop(f);
        std::fs::remove_file(&path)
    });
    let result = match tokio::time::timeout(STALE_AFTER, written).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "a write did not finish within {} s",
            STALE_AFTER.as_secs()
        )),
    };
    match result {
        Ok(()) => Checked {
            ok: true,
            detail: format!(
                "the data directory took a write and a sync in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
            at: Instant::now(),
        },
        Err(why) => Checked {
            ok: false,
            detail: format!("the data directory does not take writes: {why}"),
            at: Instant::now(),
        },
    }
}
