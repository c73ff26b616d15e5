//! `publish`: acknowledged publishes a second, and their latency, with no
//! subscriber — what a durable store costs the one who publishes.
//!
//! N keep-alive connections each send one publish, wait for its answer,
//! and send the next (a closed loop: the server sets the pace). Messages
//! are numbered from one shared counter, message `i` going to channel
//! `CHANNEL-(i mod --channels)`, until `--messages` are sent or
//! `--timeout` is up. The latency of a publish is from writing its request
//! to reading its whole answer; only acknowledged ones (2xx, or a Redis
//! value) count in the rate and the percentiles.
//!
//! Three ways to publish, the same payload (`--size` bytes, a JSON string):
//! pushgate's `POST /api/publish` with `{"channel","data"}` (`--url`), the
//! payload as a plain POST body (`--pub-url`, nchan's `/pub?id={channel}`),
//! or Redis `XADD CHANNEL MAXLEN ~ N * data PAYLOAD` (`--redis`).
//!
//! Every connection is open before the clock starts. The report gives the
//! generator's CPU next to the server's (`--server-pid`), so a reader can
//! see which of the two set the pace.

mod report;
pub mod resp;

pub use report::{CpuUse, PublishReport};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use tokio::sync::Barrier;
use tokio::time::{timeout_at, Instant};

use crate::error::{BenchError, ErrorKind};
use crate::histogram::Histogram;
use crate::http::HttpConn;
use crate::marker;
use crate::proc_stats::{self, SelfUsage};
use crate::publisher::{build_request, PublishPlan};
use crate::report::{ratio, ErrorCount};
use crate::stats::ErrorSamples;
use crate::target::{loopback_ip, parse_loopback_url, Target};

/// Answers to a publish are small; a larger one means something is off.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Base URL of a pushgate server: publish with POST /api/publish
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub url: String,

    /// Another HTTP server: POST the payload as the body to this URL, where
    /// `{channel}` is replaced by the channel (nchan: /pub?id={channel})
    #[arg(long, value_name = "URL", conflicts_with = "redis")]
    pub pub_url: Option<String>,

    /// Redis at this loopback address: `XADD CHANNEL MAXLEN ~ N * data
    /// PAYLOAD` (N: --redis-maxlen)
    #[arg(long, value_name = "HOST:PORT")]
    pub redis: Option<String>,

    /// With --redis: the length each stream is trimmed to (as pushgate's history_size)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub redis_maxlen: u64,

    /// Keep-alive connections publishing at once, each waiting for its
    /// answer before the next request
    #[arg(long, short = 'c', default_value_t = 1)]
    pub connections: usize,

    /// Publishes in total, over all connections
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub messages: u64,

    /// Payload size in bytes (a JSON string, quotes included)
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub size: usize,

    /// Channel names: CHANNEL-0, CHANNEL-1, …
    #[arg(long, default_value = "bench")]
    pub channel: String,

    /// Channels the messages are spread over, round robin; 0: as many as
    /// connections
    #[arg(long, default_value_t = 0)]
    pub channels: usize,

    /// Server process to read the CPU time of (from /proc/PID)
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Hard limit on the run, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,

    /// Generator worker threads (1 = a current-thread runtime)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Where and how publishes go.
#[derive(Debug, Clone)]
enum Wire {
    /// pushgate's `/api/publish`, or a plain POST (`PublishPlan::plain`).
    Http(PublishPlan),
    Redis {
        addr: SocketAddr,
        maxlen: u64,
    },
}

/// Validated flags.
#[derive(Debug, Clone)]
struct Plan {
    wire: Wire,
    protocol: &'static str,
    target: String,
    connections: usize,
    messages: u64,
    size: usize,
    channel: String,
    channels: usize,
    server_pid: Option<u32>,
    timeout: Duration,
    threads: usize,
}

fn check(ok: bool, msg: &str) -> Result<(), BenchError> {
    if ok {
        Ok(())
    } else {
        Err(BenchError::config(msg))
    }
}

impl Plan {
    fn from_args(a: &PublishArgs) -> Result<Plan, BenchError> {
        check(
            (1..=10_000).contains(&a.connections),
            "--connections must be between 1 and 10,000",
        )?;
        check(
            (1..=1_000_000_000).contains(&a.messages),
            "--messages must be between 1 and 1,000,000,000",
        )?;
        check(
            (1..=1_000_000).contains(&a.size),
            "--size must be between 1 and 1,000,000 bytes",
        )?;
        check(
            a.channels <= 1_000_000,
            "--channels must be at most 1,000,000",
        )?;
        check(
            (1..=86_400).contains(&a.timeout),
            "--timeout must be between 1 and 86400 seconds",
        )?;
        check(
            (1..=64).contains(&a.threads),
            "--threads must be between 1 and 64",
        )?;
        check(!a.channel.is_empty(), "--channel must not be empty")?;
        let http = |target: Target, plain: bool| PublishPlan {
            target,
            plain,
            publishers: a.connections,
            rate: 0.0,
            size: a.size,
            tls: None,
            source: None,
        };
        let (wire, protocol, target) = if let Some(addr) = &a.redis {
            let parsed: SocketAddr = addr.parse().map_err(|_| {
                BenchError::config(format!("--redis wants HOST:PORT with an IP, not {addr:?}"))
            })?;
            if loopback_ip(&parsed.ip().to_string()).is_none() {
                return Err(BenchError::new(
                    ErrorKind::NotLoopback,
                    format!("--redis {addr}: only loopback addresses are allowed"),
                ));
            }
            let wire = Wire::Redis {
                addr: parsed,
                maxlen: a.redis_maxlen,
            };
            (wire, "redis", format!("redis://{addr}"))
        } else if let Some(url) = &a.pub_url {
            let t = parse_loopback_url(url)?;
            (Wire::Http(http(t, true)), "plain", url.clone())
        } else {
            let t = parse_loopback_url(&a.url)?;
            check(
                !t.path_and_query.contains('?'),
                "--url is a base URL; it must not have a query",
            )?;
            let path = format!("{}/api/publish", t.base_path());
            let label = format!("{}/api/publish", a.url.trim_end_matches('/'));
            let t = t.with_path(t.scheme, path);
            (Wire::Http(http(t, false)), "pushgate", label)
        };
        if let Wire::Http(p) = &wire {
            check(
                !p.target.tls,
                "publish speaks plain HTTP only: use an http:// URL",
            )?;
        }
        Ok(Plan {
            wire,
            protocol,
            target,
            connections: a.connections,
            messages: a.messages,
            size: a.size,
            channel: a.channel.clone(),
            channels: if a.channels == 0 {
                a.connections
            } else {
                a.channels
            },
            server_pid: a.server_pid,
            timeout: Duration::from_secs(a.timeout),
            threads: a.threads,
        })
    }
}

/// Runs a `publish` benchmark on a runtime of its own, blocking the calling
/// thread (not for use inside a Tokio runtime).
pub fn run_blocking(args: &PublishArgs) -> Result<PublishReport, BenchError> {
    let plan = Plan::from_args(args)?;
    let rt = crate::runtime(plan.threads)?;
    let result = rt.block_on(execute(plan));
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// What one connection did.
struct ConnOutcome {
    latency: Histogram,
    acked: u64,
    errors: u64,
    last_answer: Option<Instant>,
    timed_out: bool,
}

async fn execute(plan: Plan) -> Result<PublishReport, BenchError> {
    let deadline = Instant::now() + plan.timeout;
    let server_pid = plan.server_pid;
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    // Rare, so one lock for all connections.
    let errors = Arc::new(Mutex::new(ErrorSamples::default()));
    // Every connection is open (or has failed) before the clock starts.
    let ready = Arc::new(Barrier::new(plan.connections + 1));
    let run_id = crate::runner::random_run_id();
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        tasks.push(tokio::spawn(publish_loop(
            plan.clone(),
            run_id,
            next.clone(),
            errors.clone(),
            ready.clone(),
            deadline,
        )));
    }
    ready.wait().await;
    let start = Instant::now();
    let usage_start = SelfUsage::now();
    let server_before = server_pid.map(proc_stats::sample).transpose()?;
    let mut latency = Histogram::new();
    let (mut acked, mut failed, mut timed_out) = (0, 0, false);
    let mut end = start;
    for task in tasks {
        let Ok(o) = task.await else {
            return Err(BenchError::new(
                ErrorKind::Internal,
                "a publisher task panicked",
            ));
        };
        latency.merge(&o.latency);
        acked += o.acked;
        failed += o.errors;
        timed_out |= o.timed_out;
        end = end.max(o.last_answer.unwrap_or(start));
    }
    let usage_end = SelfUsage::now();
    let secs = (end - start).as_secs_f64();
    let generator = CpuUse::new(
        std::process::id(),
        usage_end.cpu_us().saturating_sub(usage_start.cpu_us()),
        acked,
        secs,
    );
    let server = match (server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = proc_stats::sample(pid)?;
            Some(CpuUse::new(
                pid,
                after.cpu_us.saturating_sub(before.cpu_us),
                acked,
                secs,
            ))
        }
        _ => None,
    };
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).list();
    Ok(PublishReport {
        protocol: plan.protocol,
        target: plan.target.clone(),
        connections: plan.connections,
        channels: plan.channels,
        payload_bytes: plan.size,
        messages_requested: plan.messages,
        acked,
        errors: failed,
        secs,
        acked_per_sec: ratio(acked as f64, secs),
        latency_us: latency.summary_us(),
        server,
        generator,
        generator_threads: plan.threads,
        error_samples: errors
            .into_iter()
            .map(|(message, count)| ErrorCount { message, count })
            .collect(),
        timed_out,
    })
}

/// A publisher connection of either wire.
enum Conn {
    Http(HttpConn),
    Redis(resp::RespConn),
}

impl Conn {
    async fn open(wire: &Wire) -> Result<Conn, BenchError> {
        Ok(match wire {
            Wire::Http(p) => Conn::Http(HttpConn::connect(None, p.target.addr, None).await?),
            Wire::Redis { addr, .. } => Conn::Redis(resp::RespConn::connect(*addr).await?),
        })
    }

    /// Sends `request` and reads its answer: `Ok(true)` when the connection
    /// stays usable, `Ok(false)` when the server ends it after this answer.
    async fn publish(&mut self, request: &[u8]) -> Result<bool, BenchError> {
        match self {
            Conn::Http(c) => {
                c.send(request).await?;
                let answer = c.read_response(MAX_ANSWER).await?;
                if !(200..300).contains(&answer.head.status) {
                    let body = &answer.body[..answer.body.len().min(200)];
                    return Err(BenchError::new(
                        ErrorKind::Http,
                        format!(
                            "answered {}: {}",
                            answer.head.status_line(),
                            String::from_utf8_lossy(body)
                        ),
                    ));
                }
                Ok(answer.head.keep_alive)
            }
            Conn::Redis(c) => match c.call(request).await? {
                resp::Reply::Value => Ok(true),
                resp::Reply::Null => Err(BenchError::new(
                    ErrorKind::Http,
                    "Redis answered a null reply to XADD",
                )),
                resp::Reply::Error(e) => Err(BenchError::new(
                    ErrorKind::Http,
                    format!("Redis answered -{e}"),
                )),
            },
        }
    }
}

/// Writes the request for message `seq` into `out`.
fn build(out: &mut Vec<u8>, plan: &Plan, run_id: u32, seq: u64, payload: &mut Vec<u8>) {
    let channel = format!("{}-{}", plan.channel, seq % plan.channels as u64);
    let sent_ns = marker::unix_nanos();
    match &plan.wire {
        Wire::Http(p) => build_request(out, p, run_id, seq, sent_ns, &channel),
        Wire::Redis { maxlen, .. } => {
            payload.clear();
            marker::write_payload(payload, run_id, seq, sent_ns, plan.size);
            resp::xadd(out, &channel, *maxlen, "data", payload);
        }
    }
}

async fn publish_loop(
    plan: Arc<Plan>,
    run_id: u32,
    next: Arc<AtomicU64>,
    errors: Arc<Mutex<ErrorSamples>>,
    ready: Arc<Barrier>,
    deadline: Instant,
) -> ConnOutcome {
    let mut out = ConnOutcome {
        latency: Histogram::new(),
        acked: 0,
        errors: 0,
        last_answer: None,
        timed_out: false,
    };
    let fail = |out: &mut ConnOutcome, e: &BenchError| {
        out.errors += 1;
        errors.lock().unwrap_or_else(|e| e.into_inner()).record(e);
    };
    // A failed connection is tried again (and its error counted) by the
    // first publish.
    let mut conn = timeout_at(deadline, Conn::open(&plan.wire))
        .await
        .ok()
        .and_then(Result::ok);
    ready.wait().await;
    let (mut request, mut payload) = (Vec::new(), Vec::new());
    loop {
        if Instant::now() >= deadline {
            out.timed_out = next.load(Relaxed) < plan.messages;
            break;
        }
        let seq = next.fetch_add(1, Relaxed);
        if seq >= plan.messages {
            break;
        }
        build(&mut request, &plan, run_id, seq, &mut payload);
        let sent = Instant::now();
        let attempt = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(Conn::open(&plan.wire).await?),
            };
            c.publish(&request).await
        };
        match timeout_at(deadline, attempt).await {
            Ok(Ok(keep)) => {
                let now = Instant::now();
                out.latency.record((now - sent).as_nanos() as u64);
                out.acked += 1;
                out.last_answer = Some(now);
                if !keep {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                fail(&mut out, &e);
                conn = None;
            }
            Err(_) => {
                out.timed_out = true;
                break;
            }
        }
    }
    out
}
