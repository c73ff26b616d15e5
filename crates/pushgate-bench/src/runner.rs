//! One run from validated flags to report: set up subscribers, (publish,)
//! measure, tear down. Every wait here is bounded by the run's deadline.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use crate::cli::{BenchArgs, BenchCommand, CommonArgs, Peer, Transport};
use crate::error::{BenchError, ErrorKind};
use crate::h2_client::{self, H2Pool};
use crate::histogram::LatencySummary;
use crate::marker;
use crate::proc_stats::{self, ProcSample, SelfUsage};
use crate::publisher::{self, PublishPlan};
use crate::report::{
    ratio, ConnReport, ErrorCount, FanoutReport, GeneratorReport, Report, ServerReport,
    WsDeflateReport,
};
use crate::stats::{Layout, Shared, Subscriber};
use crate::target::{self, parse_loopback_url, percent_encode, Scheme, SourceAddrs, Target};
use crate::tls::{TlsClient, Trust};
use crate::ws_client::WsMode;
use crate::{longpoll_client, sse_client, ws_client};

const MAX_CONNECTIONS: usize = 1_000_000;
/// Bounded so the per-message counters stay small (5 bytes per message).
const MAX_MESSAGES: u64 = 50_000_000;
/// Descriptors beyond the subscribers: stdio, epoll, publishers, /proc reads.
const FD_RESERVE: u64 = 64;

#[derive(Debug, Clone)]
enum Kind {
    Idle,
    Fanout {
        messages: u64,
        drain: Duration,
        publish: Box<PublishPlan>,
        role: Role,
    },
}

/// Which part of a fan-out run this process plays (several processes may
/// share one run: `--run-id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Subscribe, publish and count: the whole run.
    Both,
    /// Subscribe and count what another process publishes.
    Receive,
    /// Only publish.
    Publish,
}

/// Validated flags.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    kind: Kind,
    transport: Transport,
    plain: bool,
    /// Plain mode: the protocol on top of WebSocket.
    peer: Peer,
    /// pushgate: the base URL; plain: the `--sub-url` pattern.
    sub_base: Target,
    label: String,
    layout: Layout,
    server_pid: Option<u32>,
    pub(crate) timeout: Duration,
    pub(crate) threads: usize,
    /// `--run-id`: shared with other processes; none: a random one.
    run_id: Option<u32>,
    connect_concurrency: usize,
    sources: SourceAddrs,
    poll_timeout: u64,
    /// The client token every subscriber presents (`token=`).
    token: Option<String>,
    /// WebSocket: offer permessage-deflate.
    ws_deflate: bool,
    /// `--tls`: every connection (subscribers and publishers) over TLS.
    tls: Option<TlsClient>,
    /// SSE over this many HTTP/2 connections; 0: one HTTP/1.1 connection each.
    h2_connections: usize,
    quiet: bool,
    settle: Duration,
}

fn secs(v: f64, flag: &str) -> Result<Duration, BenchError> {
    if v.is_finite() && (0.0..=86_400.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(BenchError::config(format!(
            "{flag} must be between 0 and 86400 seconds"
        )))
    }
}

fn check(ok: bool, msg: &str) -> Result<(), BenchError> {
    if ok {
        Ok(())
    } else {
        Err(BenchError::config(msg))
    }
}

impl Plan {
    pub(crate) fn from_args(args: &BenchArgs) -> Result<Plan, BenchError> {
        let c: &CommonArgs = args.common();
        let publish_only = matches!(&args.command, BenchCommand::Fanout(a) if a.publish_only);
        // A publishing process opens no subscriber, whatever --connections says.
        let connections = if publish_only { 0 } else { c.connections };
        check(
            publish_only || (1..=MAX_CONNECTIONS).contains(&connections),
            "--connections must be between 1 and 1,000,000",
        )?;
        let spread = c.channels.unwrap_or(0);
        check(
            c.channels.is_none() || (1..=1_000_000).contains(&spread),
            "--channels must be between 1 and 1,000,000",
        )?;
        check(
            spread <= 1 || (c.channels_per_conn == 1 && connections % spread == 0),
            "--channels N gives each connection one channel, and needs --connections to be a multiple of N",
        )?;
        check(
            (1..=256).contains(&c.channels_per_conn),
            "--channels-per-conn must be between 1 and 256",
        )?;
        check(
            (1..=64).contains(&c.threads),
            "--threads must be between 1 and 64",
        )?;
        check(
            (1..=86_400).contains(&c.timeout),
            "--timeout must be between 1 and 86400 seconds",
        )?;
        check(
            c.connect_concurrency >= 1,
            "--connect-concurrency must be at least 1",
        )?;
        check(
            (1..=3600).contains(&c.poll_timeout),
            "--poll-timeout must be between 1 and 3600 seconds",
        )?;
        check(!c.channel.is_empty(), "--channel must not be empty")?;

        let plain = c.sub_url.is_some();
        let (sub_base, transport, label) = match &c.sub_url {
            Some(url) => {
                check(
                    c.channels_per_conn == 1,
                    "--sub-url subscribes to one channel per connection; drop --channels-per-conn",
                )?;
                let t = parse_loopback_url(url)?;
                let transport = match t.scheme {
                    Scheme::Ws => Transport::Ws,
                    Scheme::Http if c.transport == Transport::LongPoll => Transport::LongPoll,
                    // An http:// subscribe URL is read as an endless stream (SSE or lines).
                    Scheme::Http => Transport::Sse,
                };
                check(
                    c.peer == Peer::Plain || transport == Transport::Ws,
                    "--peer socketio needs a ws:// --sub-url",
                )?;
                (t, transport, url.clone())
            }
            None => {
                check(
                    c.peer == Peer::Plain,
                    "--peer is for plain mode; add --sub-url",
                )?;
                let t = parse_loopback_url(&c.url)?;
                check(
                    !t.path_and_query.contains('?'),
                    "--url is a base URL; it must not have a query",
                )?;
                let label = format!("{}/{}", c.url.trim_end_matches('/'), c.transport.as_str());
                (t, c.transport, label)
            }
        };
        check(
            !c.ws_deflate || transport == Transport::Ws,
            "--ws-deflate is for WebSocket subscribers (-t ws, or a ws:// --sub-url)",
        )?;
        let h2_connections = c.h2_connections.unwrap_or(0);
        check(
            c.h2_connections.is_none() || (1..=connections).contains(&h2_connections),
            "--h2-connections must be between 1 and --connections",
        )?;
        check(
            h2_connections == 0 || transport == Transport::Sse,
            "--h2-connections is for SSE subscribers (-t sse, or an http:// --sub-url)",
        )?;
        let layout = Layout {
            base: c.channel.clone(),
            connections,
            channels_per_conn: c.channels_per_conn,
            distinct: c.distinct_channels,
            spread,
        };
        let per_source = c
            .conns_per_source
            .unwrap_or_else(target::default_per_source);
        let sources = SourceAddrs::new(sub_base.addr, per_source, connections, c.source_ip)?;
        let pub_url_tls = match &args.command {
            BenchCommand::Fanout(a) => a.pub_url.as_deref().map(parse_loopback_url).transpose()?,
            BenchCommand::Idle(_) => None,
        }
        .map(|t| t.tls);
        check(
            c.tls || pub_url_tls.is_none_or(|tls| tls == sub_base.tls),
            "--sub-url and --pub-url must both use TLS (https://, wss://) or both not; or give --tls",
        )?;
        let tls = if c.tls || sub_base.tls {
            let trust = match (&c.tls_ca, c.tls_insecure) {
                (Some(path), _) => Trust::CaFile(path.clone()),
                (None, true) => Trust::Insecure,
                (None, false) => {
                    return Err(BenchError::config(
                        "TLS needs --tls-ca FILE (the certificate to trust) or --tls-insecure",
                    ))
                }
            };
            let host = sub_base.authority.rsplit_once(':').map_or(
                sub_base.authority.as_str(),
                |(h, p)| {
                    if p.contains(']') {
                        sub_base.authority.as_str()
                    } else {
                        h
                    }
                },
            );
            Some(TlsClient::new(&trust, host)?)
        } else {
            check(
                c.tls_ca.is_none() && !c.tls_insecure,
                "--tls-ca and --tls-insecure are for TLS; add --tls",
            )?;
            None
        };

        let mut run_id = None;
        let (kind, settle) = match &args.command {
            BenchCommand::Idle(a) => (Kind::Idle, secs(a.settle, "--settle")?),
            BenchCommand::Fanout(a) => {
                check(
                    (1..=MAX_MESSAGES).contains(&a.messages),
                    "--messages must be between 1 and 50,000,000",
                )?;
                check(
                    a.rate.is_finite() && a.rate >= 0.0,
                    "--rate must be 0 (back to back) or a positive number",
                )?;
                check(a.size <= 16 * 1024 * 1024, "--size must be at most 16 MiB")?;
                check(
                    (1..=64).contains(&a.publishers),
                    "--publishers must be between 1 and 64",
                )?;
                let publish_target = match (&a.pub_url, plain) {
                    (Some(url), true) => parse_loopback_url(url)?,
                    // Never used: another process publishes.
                    (None, true) if a.receive_only => {
                        sub_base.with_path(Scheme::Http, "/".into())
                    }
                    (None, true) => {
                        return Err(BenchError::config(
                            "plain mode (--sub-url) needs --pub-url to publish to",
                        ))
                    }
                    (Some(_), false) => {
                        return Err(BenchError::config(
                            "--pub-url is for plain mode; add --sub-url, or drop it to use pushgate's /api/publish",
                        ))
                    }
                    (None, false) => sub_base.with_path(
                        Scheme::Http,
                        format!("{}/api/publish", sub_base.base_path()),
                    ),
                };
                check(
                    publish_target.scheme == Scheme::Http,
                    "--pub-url must be an http:// or https:// URL",
                )?;
                let publish = PublishPlan {
                    target: publish_target,
                    plain,
                    publishers: a.publishers.min(layout.total_channels()),
                    rate: a.rate,
                    size: a.size,
                    tls: tls.clone(),
                    source: sources.for_connection(0),
                };
                if let Some(hex) = &a.run_id {
                    let id = (hex.len() == 8)
                        .then(|| u32::from_str_radix(hex, 16).ok())
                        .flatten()
                        .ok_or_else(|| {
                            BenchError::config("--run-id must be 8 hex digits, e.g. 0badcafe")
                        })?;
                    run_id = Some(id);
                }
                let role = match (a.receive_only, a.publish_only) {
                    (true, _) => Role::Receive,
                    (_, true) => Role::Publish,
                    _ => Role::Both,
                };
                let kind = Kind::Fanout {
                    messages: a.messages,
                    drain: secs(a.drain, "--drain")?,
                    publish: Box::new(publish),
                    role,
                };
                (kind, secs(a.settle, "--settle")?)
            }
        };
        Ok(Plan {
            kind,
            transport,
            plain,
            peer: c.peer,
            sub_base,
            label,
            layout,
            server_pid: c.server_pid,
            timeout: Duration::from_secs(c.timeout),
            threads: c.threads,
            run_id,
            connect_concurrency: c.connect_concurrency,
            sources,
            poll_timeout: c.poll_timeout,
            token: c.token.clone(),
            ws_deflate: c.ws_deflate,
            tls,
            h2_connections,
            quiet: c.quiet,
            settle,
        })
    }

    /// File descriptors the run needs: one per subscriber, plus publishers and slack.
    fn fds_needed(&self) -> u64 {
        let publishers = match &self.kind {
            Kind::Fanout {
                role: Role::Receive,
                ..
            }
            | Kind::Idle => 0,
            Kind::Fanout { publish, .. } => publish.publishers as u64,
        };
        self.layout.connections as u64 + publishers + FD_RESERVE
    }

    fn acks_needed(&self) -> u32 {
        self.layout.channels_per_conn as u32
    }

    /// The subscribe URL of connection `conn`.
    pub(crate) fn sub_target(&self, conn: usize) -> Target {
        let channels = self.layout.channels_of(conn);
        if self.plain {
            let mut name = String::new();
            percent_encode(&self.layout.channel_name(channels.start), &mut name);
            let path = self.sub_base.path_and_query.replace("{channel}", &name);
            return self.sub_base.with_path(self.sub_base.scheme, path);
        }
        let (endpoint, scheme) = match self.transport {
            Transport::Ws => ("ws", Scheme::Ws),
            Transport::Sse => ("sse", Scheme::Http),
            Transport::LongPoll => ("longpoll", Scheme::Http),
        };
        let mut path = format!("{}/{endpoint}?", self.sub_base.base_path());
        for (i, c) in channels.enumerate() {
            if i > 0 {
                path.push('&');
            }
            path.push_str("channel=");
            percent_encode(&self.layout.channel_name(c), &mut path);
        }
        if let Some(token) = &self.token {
            path.push_str("&token=");
            percent_encode(token, &mut path);
        }
        self.sub_base.with_path(scheme, path)
    }
}

async fn subscriber_task(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    h2: Option<Arc<H2Pool>>,
    conn: usize,
    source: Option<IpAddr>,
    permit: OwnedSemaphorePermit,
) {
    let target = plan.sub_target(conn);
    let seed = (u64::from(shared.run_id) << 32) ^ (conn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut sub = Subscriber::new(shared, conn, Some(permit));
    let tls = plan.tls.as_ref();
    let result = match plan.transport {
        Transport::Ws => {
            let mode = match (plan.plain, plan.peer) {
                (false, _) => WsMode::Pushgate,
                (true, Peer::Plain) => WsMode::Plain,
                (true, Peer::SocketIo) => WsMode::SocketIo,
            };
            ws_client::run(tls, &target, source, &mut sub, mode, seed, plan.ws_deflate).await
        }
        Transport::Sse => match &h2 {
            // Boxed, so that its larger future does not widen every task.
            Some(pool) => {
                Box::pin(h2_client::run_sse(
                    pool, conn, &target, &mut sub, plan.plain,
                ))
                .await
            }
            None => sse_client::run(tls, &target, source, &mut sub, plan.plain).await,
        },
        Transport::LongPoll if plan.plain => {
            longpoll_client::run_plain(tls, &target, source, &mut sub).await
        }
        Transport::LongPoll => {
            longpoll_client::run(tls, &target, source, &mut sub, plan.poll_timeout).await
        }
    };
    sub.finish(result);
}

const PHASE_CONNECT: u8 = 0;
const PHASE_SETTLE: u8 = 1;
const PHASE_PUBLISH: u8 = 2;
const PHASE_DRAIN: u8 = 3;

async fn progress(
    shared: Arc<Shared>,
    phase: Arc<AtomicU8>,
    start: Instant,
    tty: bool,
    printed: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let n = shared.layout.connections;
        let name = match phase.load(Relaxed) {
            PHASE_CONNECT => "connecting",
            PHASE_SETTLE => "settling",
            PHASE_PUBLISH => "publishing",
            _ => "draining",
        };
        let mut line = format!(
            "[{:>5.1}s {name}] subscribed {}/{n} failed {} dropped {}",
            start.elapsed().as_secs_f64(),
            shared.subscribed.load(Relaxed),
            shared.failed.load(Relaxed),
            shared.dropped.load(Relaxed),
        );
        if shared.messages > 0 {
            line.push_str(&format!(
                " | published {}/{} | delivered {}/{}",
                shared.published.load(Relaxed),
                shared.messages,
                shared.delivered_good.load(Relaxed),
                shared.expected_deliveries(),
            ));
        }
        if tty {
            eprint!("\r{line}\x1b[K");
            printed.store(true, Relaxed);
        } else {
            eprintln!("{line}");
        }
    }
}

/// Receive-only: tells the caller where the run is (`ready N` once N are
/// subscribed, `done N` after N deliveries), then waits for its word to go
/// on: a line on stdin, or its end.
async fn await_line(word: &str, n: u64, deadline: Instant) -> Result<(), BenchError> {
    use std::io::Write as _;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{word} {n}")
            .and_then(|()| out.flush())
            .map_err(|e| BenchError::io("writing on stdout", e))?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread: a blocking read of stdin is all it does; it is left
    // behind if the deadline comes first.
    std::thread::Builder::new()
        .name("go-line".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        })
        .map_err(|e| BenchError::io("spawning the stdin reader", e))?;
    tokio::select! {
        _ = rx => Ok(()),
        _ = sleep_until(deadline) => Err(BenchError::new(
            ErrorKind::Timeout,
            format!("--timeout ran out waiting for a line on stdin after `{word}`"),
        )),
    }
}

pub(crate) fn random_run_id() -> u32 {
    let mut rng =
        ws_client::XorShift::new(marker::unix_nanos() ^ u64::from(std::process::id()) << 40);
    rng.next_u64();
    rng.next_u64() as u32
}

fn sample(pid: Option<u32>) -> Result<Option<ProcSample>, BenchError> {
    pid.map(proc_stats::sample).transpose()
}

/// Samples after the start are best effort: a server that died mid-run
/// still leaves a report worth having, with the failure listed in it.
fn sample_late(shared: &Shared, pid: Option<u32>) -> Option<ProcSample> {
    sample(pid).unwrap_or_else(|e| {
        shared.record_error(&e);
        None
    })
}

/// Ends the `\r`-updated progress line however the run ends, so a report or
/// an error message starts on a fresh line.
struct ProgressLine {
    printed: Arc<AtomicBool>,
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        if self.printed.load(Relaxed) {
            eprintln!();
        }
    }
}

/// Runs `plan` on the current runtime.
pub(crate) async fn execute(plan: Plan) -> Result<Report, BenchError> {
    let started = Instant::now();
    let deadline = started + plan.timeout;
    proc_stats::raise_nofile(plan.fds_needed())?;
    let messages = match &plan.kind {
        Kind::Fanout { messages, .. } => *messages,
        Kind::Idle => 0,
    };
    let role = match &plan.kind {
        Kind::Fanout { role, .. } => *role,
        Kind::Idle => Role::Both,
    };
    let shared = Arc::new(Shared::new(
        plan.run_id.unwrap_or_else(random_run_id),
        plan.layout.clone(),
        plan.acks_needed(),
        messages,
    ));
    let plan = Arc::new(plan);
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(PHASE_CONNECT));
    let halted = || stop.load(Relaxed) || Instant::now() >= deadline;

    let mut background = JoinSet::new();
    let tty = std::io::stderr().is_terminal();
    let progress_line = ProgressLine {
        printed: Arc::new(AtomicBool::new(false)),
    };
    if !plan.quiet {
        background.spawn(progress(
            shared.clone(),
            phase.clone(),
            started,
            tty,
            progress_line.printed.clone(),
        ));
    }
    {
        let stop = stop.clone();
        background.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: finishing early (Ctrl-C again to quit at once)");
                stop.store(true, Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    let usage_start = SelfUsage::now();
    let server_before = sample(plan.server_pid)?;
    let gen_rss_before = proc_stats::self_rss_bytes().unwrap_or(0);

    // Subscribers, at most `connect_concurrency` handshakes at a time.
    let n = plan.layout.connections;
    let h2 = (plan.h2_connections > 0).then(|| {
        Arc::new(H2Pool::new(
            plan.h2_connections,
            plan.sub_base.addr,
            plan.sources,
            plan.tls.clone(),
        ))
    });
    let mut conns = JoinSet::new();
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency));
    let setup_start = Instant::now();
    let mut spawned = 0u64;
    for i in 0..n {
        let permit = tokio::select! {
            p = gate.clone().acquire_owned() => p.map_err(|_| BenchError::new(ErrorKind::Internal, "connection gate closed"))?,
            _ = sleep_until(deadline) => break,
        };
        if stop.load(Relaxed) {
            break;
        }
        let source = plan.sources.for_connection(i);
        conns.spawn(subscriber_task(
            plan.clone(),
            shared.clone(),
            h2.clone(),
            i,
            source,
            permit,
        ));
        spawned += 1;
    }
    while shared.subscribed.load(Relaxed) + shared.failed.load(Relaxed) < spawned && !halted() {
        sleep(Duration::from_millis(10)).await;
    }
    let setup = setup_start.elapsed();
    let subscribed = shared.subscribed.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    let first_error = || {
        shared
            .first_error()
            .map_or(String::new(), |e| format!("; first error: {e}"))
    };
    // A publishing process (--publish-only) has no subscriber to wait for.
    if n > 0 && (subscribed + failed < n as u64 || subscribed == 0) {
        let waiting = spawned.saturating_sub(subscribed + failed);
        let (kind, why) = if stop.load(Relaxed) {
            (ErrorKind::Timeout, "interrupted")
        } else if halted() {
            (ErrorKind::Timeout, "--timeout ran out")
        } else {
            (ErrorKind::Connect, "every connection failed")
        };
        return Err(BenchError::new(
            kind,
            format!(
                "{why} after {:.1} s: {subscribed} of {n} connections subscribed, \
                 {failed} failed, {waiting} still waiting for the server{}",
                setup.as_secs_f64(),
                first_error()
            ),
        ));
    }

    phase.store(PHASE_SETTLE, Relaxed);
    let settle_until = (Instant::now() + plan.settle).min(deadline);
    while n > 0 && Instant::now() < settle_until && !stop.load(Relaxed) {
        sleep(Duration::from_millis(50).min(settle_until - Instant::now())).await;
    }
    if role == Role::Receive {
        await_line("ready", subscribed, deadline).await?;
        shared.assume_all_published();
    }
    let server_subscribed = sample_late(&shared, plan.server_pid);
    let gen_rss_subscribed = proc_stats::self_rss_bytes().unwrap_or(0);
    let usage_subscribed = SelfUsage::now();

    let mut fanout = None;
    let mut timed_out = false;
    let mut server_after = server_subscribed;
    let mut usage_after = usage_subscribed;
    if let Kind::Fanout {
        messages,
        drain,
        publish,
        ..
    } = &plan.kind
    {
        phase.store(PHASE_PUBLISH, Relaxed);
        let publish = Arc::new(PublishPlan::clone(publish));
        let pub_start = Instant::now();
        let mut pubs = JoinSet::new();
        // Another process publishes for a receive-only one.
        let publishers = if role == Role::Receive {
            0
        } else {
            publish.publishers
        };
        for p in 0..publishers {
            pubs.spawn(publisher::run_publisher(
                p,
                publish.clone(),
                shared.clone(),
                pub_start,
                deadline,
                stop.clone(),
            ));
        }
        loop {
            tokio::select! {
                next = pubs.join_next() => if next.is_none() { break },
                // A publish stuck on a silent server must not outlive the deadline.
                _ = sleep_until(deadline) => { pubs.abort_all(); break; }
            }
        }
        let publish_secs = pub_start.elapsed().as_secs_f64();

        phase.store(PHASE_DRAIN, Relaxed);
        let expected = shared.expected_deliveries();
        let mut seen = shared.delivered.load(Relaxed);
        let mut last_change = Instant::now();
        loop {
            if shared.delivered_good.load(Relaxed) >= expected {
                break;
            }
            // Ctrl-C stops publishing but still lets in-flight deliveries arrive.
            if Instant::now() >= deadline || last_change.elapsed() >= *drain {
                break;
            }
            sleep(Duration::from_millis(5)).await;
            let now_seen = shared.delivered.load(Relaxed);
            if now_seen != seen {
                seen = now_seen;
                last_change = Instant::now();
            }
        }
        server_after = sample_late(&shared, plan.server_pid);
        usage_after = SelfUsage::now();
        timed_out = Instant::now() >= deadline;

        let published = shared.published.load(Relaxed);
        let publish_errors = shared.publish_errors.load(Relaxed);
        let (missing, duplicates) = shared.missing_and_duplicates();
        let good = shared.delivered_good.load(Relaxed);
        let first = shared.first_publish_ns.load(Relaxed);
        let last = shared.last_delivery_ns.load(Relaxed);
        let delivery_secs = if last > first && first != u64::MAX {
            (last - first) as f64 / 1e9
        } else {
            0.0
        };
        let mut payload = Vec::new();
        marker::write_payload(
            &mut payload,
            shared.run_id,
            messages - 1,
            marker::unix_nanos(),
            publish.size,
        );
        let histogram = shared.latency();
        let latency: LatencySummary = histogram.summary_us();
        fanout = Some(FanoutReport {
            messages_requested: *messages,
            published,
            publish_errors,
            payload_bytes: payload.len() as u64,
            rate_target: publish.rate,
            publish_secs,
            publish_rate: ratio(published as f64, publish_secs),
            subscribers_per_channel: shared.layout.subscribers_per_channel(),
            deliveries_expected: expected,
            deliveries_received: shared.delivered.load(Relaxed),
            missing,
            duplicates,
            out_of_order: shared.out_of_order.load(Relaxed),
            misrouted: shared.misrouted.load(Relaxed),
            foreign: shared.foreign.load(Relaxed),
            delivery_secs,
            deliveries_per_sec: ratio(good as f64, delivery_secs),
            latency_us: latency,
            run_id: format!("{:08x}", shared.run_id),
            first_publish_unix_ns: if first == u64::MAX { 0 } else { first },
            last_delivery_unix_ns: last,
            latency_histogram_ns: plan.run_id.map(|_| histogram.dump()),
        });
    }

    // Receive-only: the caller reads every process's CPU time before any of
    // them closes its connections (closing costs the servers too).
    if role == Role::Receive && Instant::now() < deadline {
        let good = shared.delivered_good.load(Relaxed);
        if let Err(e) = await_line("done", good, deadline).await {
            shared.record_error(&e);
        }
    }

    // Everything measured: close all connections (aborting a task drops its socket).
    conns.abort_all();
    if let Some(pool) = &h2 {
        pool.close();
    }
    background.abort_all();
    drop(progress_line);

    let deliveries = fanout
        .as_ref()
        .map(|f| f.deliveries_expected.saturating_sub(f.missing));
    let server = match (
        server_before,
        server_subscribed,
        server_after,
        plan.server_pid,
    ) {
        (Some(before), Some(sub), Some(after), Some(pid)) => {
            let cpu_subscribed = fanout.is_some().then_some(sub.cpu_us);
            let (cpu_phase, cpu_us, rss_subscribed) = if fanout.is_some() {
                (
                    "publish",
                    after.cpu_us.saturating_sub(sub.cpu_us),
                    Some(sub.rss_bytes),
                )
            } else {
                ("setup", after.cpu_us.saturating_sub(before.cpu_us), None)
            };
            Some(ServerReport {
                pid,
                rss_before: before.rss_bytes,
                rss_subscribed,
                rss_after: after.rss_bytes,
                per_connection_bytes: (sub.rss_bytes as f64 - before.rss_bytes as f64)
                    / subscribed as f64,
                cpu_before_us: before.cpu_us,
                cpu_subscribed_us: cpu_subscribed,
                cpu_after_us: after.cpu_us,
                cpu_phase,
                cpu_us,
                cpu_us_per_delivery: deliveries
                    .filter(|d| *d > 0)
                    .map(|d| cpu_us as f64 / d as f64),
            })
        }
        _ => None,
    };
    let usage_end = SelfUsage::now();
    let generator = GeneratorReport {
        threads: plan.threads,
        cpu_user_us: usage_end.user_us.saturating_sub(usage_start.user_us),
        cpu_sys_us: usage_end.sys_us.saturating_sub(usage_start.sys_us),
        cpu_us_per_delivery: deliveries.filter(|d| *d > 0).map(|d| {
            usage_after
                .cpu_us()
                .saturating_sub(usage_subscribed.cpu_us()) as f64
                / d as f64
        }),
        max_rss_bytes: usage_end.max_rss_bytes,
        rss_per_connection_bytes: (gen_rss_subscribed as f64 - gen_rss_before as f64)
            / subscribed as f64,
    };
    Ok(Report {
        mode: if fanout.is_some() { "fanout" } else { "idle" },
        transport: match (plan.plain, plan.transport, plan.peer) {
            (true, Transport::Sse, _) => "http-stream",
            (true, Transport::Ws, Peer::SocketIo) => "socketio",
            _ => plan.transport.as_str(),
        },
        target: plan.label.clone(),
        plain: plan.plain,
        connections: ConnReport {
            requested: n as u64,
            established: shared.connected.load(Relaxed),
            subscribed,
            failed: shared.failed.load(Relaxed),
            dropped: shared.dropped.load(Relaxed),
            setup_secs: setup.as_secs_f64(),
            setup_per_sec: ratio(subscribed as f64, setup.as_secs_f64()),
            channels: plan.layout.total_channels() as u64,
        },
        ws_deflate: plan.ws_deflate.then(|| WsDeflateReport {
            connections: shared.connected.load(Relaxed),
            negotiated: shared.ws_deflate_negotiated.load(Relaxed),
            compressed_messages: shared.ws_deflate_messages.load(Relaxed),
        }),
        fanout,
        server,
        generator,
        errors: shared
            .error_samples()
            .into_iter()
            .map(|(message, count)| ErrorCount { message, count })
            .collect(),
        timed_out,
        interrupted: stop.load(Relaxed),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn plan(args: &[&str]) -> Result<Plan, BenchError> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|e| BenchError::config(e.to_string()))?;
        Plan::from_args(&BenchArgs {
            command: cli.command,
        })
    }

    #[test]
    fn subscribe_urls() {
        let p = plan(&["idle", "--url", "http://127.0.0.1:7070/", "-c", "3"]).unwrap();
        let t = p.sub_target(2);
        assert_eq!(t.scheme, Scheme::Ws);
        assert_eq!(t.path_and_query, "/ws?channel=bench");

        let p = plan(&[
            "fanout",
            "-t",
            "longpoll",
            "--url",
            "http://localhost:1/pg",
            "-c",
            "3",
            "--distinct-channels",
            "--channels-per-conn",
            "2",
            "--channel",
            "n#",
        ])
        .unwrap();
        assert_eq!(
            p.sub_target(1).path_and_query,
            "/pg/longpoll?channel=n%23-2&channel=n%23-3"
        );
        let Kind::Fanout { publish, .. } = &p.kind else {
            panic!("fanout")
        };
        assert_eq!(publish.target.path_and_query, "/pg/api/publish");
        assert_eq!(publish.publishers, 2);

        let p = plan(&[
            "fanout",
            "--sub-url",
            "ws://127.0.0.1:8080/sub/{channel}",
            "--pub-url",
            "http://127.0.0.1:8080/pub/{channel}",
            "--distinct-channels",
            "-c",
            "2",
        ])
        .unwrap();
        assert!(p.plain);
        assert_eq!(p.sub_target(1).path_and_query, "/sub/bench-1");

        let p = plan(&[
            "idle",
            "-t",
            "longpoll",
            "--sub-url",
            "http://127.0.0.1:8080/sub?id={channel}",
        ])
        .unwrap();
        assert_eq!(p.transport, Transport::LongPoll);
        let p = plan(&[
            "idle",
            "--sub-url",
            "http://127.0.0.1:8080/sub?id={channel}",
        ])
        .unwrap();
        assert_eq!(p.transport, Transport::Sse);
        let p = plan(&[
            "idle",
            "--peer",
            "socketio",
            "--sub-url",
            "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket&channel={channel}",
        ])
        .unwrap();
        assert_eq!(p.peer, Peer::SocketIo);
    }

    #[test]
    fn shared_runs() {
        let p = plan(&[
            "fanout",
            "--run-id",
            "0BadCafe",
            "--receive-only",
            "-c",
            "6",
            "--channels",
            "3",
            "--source-ip",
            "127.0.2.1",
        ])
        .unwrap();
        assert_eq!(p.run_id, Some(0x0bad_cafe));
        assert_eq!(p.layout.total_channels(), 3);
        assert_eq!(p.sub_target(4).path_and_query, "/ws?channel=bench-1");
        assert_eq!(
            p.sources.for_connection(5),
            Some("127.0.2.1".parse().unwrap())
        );
        assert_eq!(p.fds_needed(), 6 + FD_RESERVE);
        let Kind::Fanout { role, publish, .. } = &p.kind else {
            panic!("fanout")
        };
        assert_eq!(*role, Role::Receive);
        assert_eq!(publish.source, Some("127.0.2.1".parse().unwrap()));
        // Plain mode: a receiving process needs no --pub-url.
        let p = plan(&[
            "fanout",
            "--run-id",
            "00000001",
            "--receive-only",
            "--sub-url",
            "ws://127.0.1.1:8080/sub?id={channel}",
        ])
        .unwrap();
        assert!(p.plain);

        // A publishing process opens no subscriber, whatever -c says.
        let p = plan(&[
            "fanout",
            "--run-id",
            "00000001",
            "--publish-only",
            "-c",
            "500",
            "--channels",
            "4",
        ])
        .unwrap();
        assert_eq!(p.layout.connections, 0);
        assert_eq!(p.layout.total_channels(), 4);
        let Kind::Fanout { role, publish, .. } = &p.kind else {
            panic!("fanout")
        };
        assert_eq!(*role, Role::Publish);
        assert_eq!(publish.publishers, 2);
        assert!(p.run_id.is_some());

        let kind = |args: &[&str]| plan(args).unwrap_err().kind();
        assert_eq!(kind(&["fanout", "--receive-only"]), ErrorKind::Config);
        assert_eq!(
            kind(&["fanout", "--run-id", "abc", "--receive-only"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["fanout", "--run-id", "0000000g", "--publish-only"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&[
                "fanout",
                "--run-id",
                "00000001",
                "--publish-only",
                "--receive-only"
            ]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "-c", "6", "--channels", "4"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "--channels", "2", "--distinct-channels"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "--source-ip", "10.0.0.1"]),
            ErrorKind::NotLoopback
        );
    }

    #[test]
    fn tls_and_http2() {
        let p = plan(&[
            "fanout",
            "--url",
            "https://localhost:8443",
            "--tls-insecure",
        ])
        .unwrap();
        assert!(p.tls.is_some());
        assert_eq!(p.sub_target(0).scheme, Scheme::Ws);
        let Kind::Fanout { publish, .. } = &p.kind else {
            panic!("fanout")
        };
        assert!(publish.tls.is_some());
        assert_eq!(publish.target.addr, "127.0.0.1:8443".parse().unwrap());
        // --tls on an http:// URL: the same port, spoken over TLS.
        let p = plan(&["idle", "--tls", "--tls-insecure", "--url", "http://[::1]:9"]).unwrap();
        assert!(p.tls.is_some());
        let p = plan(&["idle", "-t", "sse", "-c", "1000", "--h2-connections", "10"]).unwrap();
        assert_eq!(p.h2_connections, 10);
        assert!(p.tls.is_none());
        let p = plan(&[
            "fanout",
            "--tls-insecure",
            "--sub-url",
            "wss://127.0.0.1/s?id={channel}",
            "--pub-url",
            "https://127.0.0.1/p?id={channel}",
        ])
        .unwrap();
        assert!(p.tls.is_some() && p.plain);
        assert!(plan(&["idle"]).unwrap().tls.is_none());
    }

    #[test]
    fn rejects_bad_combinations() {
        let kind = |args: &[&str]| plan(args).unwrap_err().kind();
        assert_eq!(
            kind(&["idle", "--url", "http://10.1.2.3:7070"]),
            ErrorKind::NotLoopback
        );
        assert_eq!(kind(&["idle", "-c", "0"]), ErrorKind::Config);
        assert_eq!(
            kind(&["fanout", "--pub-url", "http://127.0.0.1/p"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["fanout", "--sub-url", "ws://127.0.0.1/s"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&[
                "fanout",
                "--sub-url",
                "ws://127.0.0.1/s",
                "--pub-url",
                "http://8.8.8.8/"
            ]),
            ErrorKind::NotLoopback
        );
        assert_eq!(kind(&["fanout", "--rate", "-1"]), ErrorKind::Config);
        assert_eq!(kind(&["idle", "--peer", "socketio"]), ErrorKind::Config);
        assert_eq!(
            kind(&[
                "idle",
                "--peer",
                "socketio",
                "--sub-url",
                "http://127.0.0.1/s"
            ]),
            ErrorKind::Config
        );
        assert_eq!(kind(&["fanout", "-m", "0"]), ErrorKind::Config);
        assert_eq!(
            kind(&["idle", "-t", "sse", "--ws-deflate"]),
            ErrorKind::Config
        );
        assert!(plan(&["idle", "--ws-deflate"]).unwrap().ws_deflate);
        assert_eq!(kind(&["idle", "--tls"]), ErrorKind::Config);
        assert_eq!(
            kind(&["idle", "--url", "https://127.0.0.1:1"]),
            ErrorKind::Config
        );
        assert_eq!(kind(&["idle", "--tls-insecure"]), ErrorKind::Config);
        assert_eq!(
            kind(&["idle", "--tls", "--tls-ca", "/nonexistent/ca.pem"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&[
                "fanout",
                "--tls-insecure",
                "--sub-url",
                "wss://127.0.0.1/s",
                "--pub-url",
                "http://127.0.0.1/p"
            ]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "-t", "sse", "-c", "10", "--h2-connections", "11"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "-t", "sse", "--h2-connections", "0"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "-t", "longpoll", "--h2-connections", "1"]),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&["idle", "--url", "http://[::1]:1", "-c", "30000"]),
            ErrorKind::Config
        );
    }
}
