//! `pushgate-bench`: a lean, loopback-only load generator for pushgate (and,
//! in "plain" mode, other push servers).
//!
//! * `idle` opens N subscribers and reports the server's RSS per connection.
//! * `fanout` also publishes M messages and reports delivery rate, loss,
//!   duplicates, order and publish→delivery latency, plus CPU per delivery.
//! * `publish` ([`publish_load`]) has no subscribers: it reports acknowledged
//!   publishes a second and their latency on N connections, to pushgate,
//!   to another HTTP server (a plain POST) or to Redis (`XADD`).
//!
//! One run may span several processes (`fanout --run-id`): one
//! `--publish-only`, the others `--receive-only`, each with its subscribers
//! on its own source addresses (`--source-ip`) and, if need be, its own
//! node; they meet through `ready`/`done` lines on stdout and a line on
//! stdin each, and their JSON reports (absolute times, latency histograms)
//! combine. `bench/scale-out` drives them against several pushgate nodes.
//!
//! Plain mode (`--sub-url`, `--pub-url`) measures other servers: a `ws://`
//! URL is a WebSocket that subscribes on connect, an `http://` URL an endless
//! stream (SSE or lines) or, with `-t longpoll`, an nchan-style long-poll
//! (`Last-Modified`/`Etag` sent back); `--peer socketio` speaks Socket.IO v4
//! over the WebSocket. Messages are recognised by the marker the generator
//! puts in every payload, whatever the server's envelope. `bench/compare`
//! drives it against pushgate, the peers in `bench/peers` and the baseline.
//!
//! The generator must never be the bottleneck, so it speaks WebSocket, SSE and
//! long-poll itself over raw `TcpStream`s, keeps almost no per-connection
//! memory (see [`net`]), and runs on one thread unless `--threads` says more.
//!
//! `--tls` (or `https://`/`wss://` URLs) puts every connection over rustls
//! ([`tls`]); `--h2-connections N` carries SSE subscribers as streams of N
//! HTTP/2 connections ([`h2_client`], h2c without TLS).
//!
//! Library use: [`run`] from any async context, or [`run_blocking`] from a
//! plain thread. Both run the generator on its own runtime and thread, sized
//! by `--threads`, so the caller's runtime neither limits nor disturbs it.

mod cli;
mod error;
pub mod h2_client;
pub mod histogram;
pub mod http;
pub mod longpoll_client;
pub mod marker;
pub mod net;
pub mod proc_stats;
pub mod publish_load;
pub mod publisher;
mod report;
mod runner;
pub mod sse_client;
pub mod stats;
pub mod target;
pub mod tls;
pub mod ws_client;

pub use cli::{BenchArgs, BenchCommand, CommonArgs, FanoutArgs, IdleArgs, Peer, Transport};
pub use error::{BenchError, ErrorKind};
pub use report::{
    ConnReport, ErrorCount, FanoutReport, GeneratorReport, Report, ServerReport, WsDeflateReport,
};

use std::time::Duration;

/// Slack past `--timeout` for tearing down before the run is declared stuck.
const HARD_STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs a benchmark and returns its report.
///
/// The generator gets a dedicated thread and runtime, so this works from any
/// async context, whatever that runtime's flavour.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pushgate-bench".into())
        .spawn(move || {
            let _ = tx.send(run_blocking(args));
        })
        .map_err(|e| BenchError::io("spawning the generator thread", e))?;
    rx.await
        .map_err(|_| BenchError::new(ErrorKind::Internal, "the generator thread panicked"))?
}

/// Like [`run`], blocking the calling thread. Must not be called from inside
/// a Tokio runtime (use [`run`] there).
pub fn run_blocking(args: BenchArgs) -> Result<Report, BenchError> {
    let plan = runner::Plan::from_args(&args)?;
    let rt = runtime(plan.threads)?;
    let hard_stop = plan.timeout + HARD_STOP_GRACE;
    let result = rt.block_on(async move {
        tokio::time::timeout(hard_stop, runner::execute(plan))
            .await
            .unwrap_or_else(|_| {
                Err(BenchError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the run did not finish within --timeout plus {} s",
                        HARD_STOP_GRACE.as_secs()
                    ),
                ))
            })
    });
    // Aborted connection tasks are dropped here; their sockets close with them.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The generator's runtime: one thread, or `threads` workers.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, BenchError> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("building the generator runtime", e))
}
