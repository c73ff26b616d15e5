//! Issue 15's chaos test, on the real binary: three `pushgate serve` nodes
//! (127.0.0.1, .2 and .3) share one durable redis-server (`--broker`).
//! Clients of all six transports each read one of a few channels and, at
//! random moments, drop their connection and resume with their cursor on a
//! random node; a publisher sends numbered messages to random nodes;
//! meanwhile one node is killed with SIGKILL and started again, and Redis is
//! killed and started again. Every client must end with every message of
//! its channel once, in offset order, with the data acknowledged at that
//! offset, and without a `reset`: history outlasts the run, and a Redis
//! with `appendfsync always` keeps whatever it acknowledged.
//!
//! `PUSHGATE_CHAOS_CLIENTS` (300), `PUSHGATE_CHAOS_MESSAGES` (10,000) and
//! `PUSHGATE_CHAOS_CHANNELS` (4) set its size; `PUSHGATE_CHAOS_SEED`
//! replays the random choices (not the timing) of an earlier run.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::Proc;

#[path = "../../pushgate-server/tests/support/redis.rs"]
mod redis_server;
use redis_server::Redis;

const NODE_IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// Concurrent publish requests.
const PUBLISHERS: usize = 4;

/// How long a connection lives before its client drops it, in ms: each
/// client moves every few seconds.
const LIFETIME_MS: (u64, u64) = (500, 8000);

/// How long the clients have, once the publisher stopped, to reach the
/// newest message of their channel.
const SETTLE: Duration = Duration::from_secs(120);

/// How long Redis stays down.
const REDIS_DOWN: Duration = Duration::from_secs(3);

/// A short-poll client's pause between two polls, in ms.
const POLL_EVERY_MS: (u64, u64) = (100, 300);

/// The pause before a client tries again after a refusal or a failure
/// (a node down, Redis down), in ms.
const BACKOFF_MS: (u64, u64) = (20, 200);

/// A long-poll's `timeout`, in ms: short, so that some long-polls end by
/// themselves (and others are dropped while they wait). A client's first
/// long-poll waits 200 ms: its answer says the client stands somewhere.
const LONGPOLL_TIMEOUT_MS: (u64, u64) = (500, 3000);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pick(rng: &mut StdRng, (low, high): (u64, u64)) -> Duration {
    Duration::from_millis(rng.gen_range(low..high))
}

/// Awaits `fut` for at most `limit`, failing the test with `what` otherwise.
async fn within<T>(what: &str, limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("chaos: timed out after {limit:?} waiting for {what}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Ws,
    Sse,
    Stream,
    Iframe,
    LongPoll,
    Poll,
}

const TRANSPORTS: [Transport; 6] = [
    Transport::Ws,
    Transport::Sse,
    Transport::Stream,
    Transport::Iframe,
    Transport::LongPoll,
    Transport::Poll,
];

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::Iframe => "iframe",
            Transport::LongPoll => "longpoll",
            Transport::Poll => "poll",
        }
    }
}

/// (epoch, offset) in one channel.
type Position = (String, u64);

/// `base64url(channel).epoch.offset`: one channel's cursor.
fn cursor(channel: &str, epoch: &str, offset: u64) -> String {
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(channel);
    format!("{name}.{epoch}.{offset}")
}

/// The position a cursor gives `channel`: (epoch, offset).
fn position_in(cursor: &str, channel: &str) -> Option<Position> {
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(channel);
    cursor.split('~').find_map(|entry| {
        let mut parts = entry.split('.');
        let (n, epoch, offset) = (parts.next()?, parts.next()?, parts.next()?);
        (n == name && parts.next().is_none())
            .then(|| Some((epoch.to_owned(), offset.parse().ok()?)))
            .flatten()
    })
}

/// What one channel was sent, and what its clients received.
struct Channel {
    name: String,
    /// The epoch of the first message any client received on it.
    epoch: OnceLock<String>,
    /// Offset → the sequence number delivered there in `epoch` (0: none
    /// yet), as the first client that received it saw it: every other
    /// client must receive the same.
    delivered: Vec<AtomicU64>,
    /// The next sequence number to publish (from 1).
    next_seq: AtomicU64,
    /// Offset → (epoch, sequence number) of each acknowledged publish.
    acked: Mutex<BTreeMap<u64, (String, u64)>>,
}

/// What the clients, the publisher and the test share.
struct Shared {
    /// Where each node listens now (`ip:port`): a restarted node comes back
    /// on a new port.
    nodes: RwLock<Vec<String>>,
    http: reqwest::Client,
    channels: Vec<Channel>,
    /// Every broken promise, one line each, naming client, channel, offset.
    failures: Mutex<Vec<String>>,
    /// Whether there is one: the test stops at once.
    failed: watch::Sender<bool>,
    /// Every `reset` a client got.
    resets: Mutex<Vec<String>>,
    /// Per client, the offset it stands at: for the report of laggards.
    progress: Vec<AtomicU64>,
}

impl Shared {
    /// A random node: (its index, its address now).
    fn pick_node(&self, rng: &mut StdRng) -> (usize, String) {
        let nodes = self.nodes.read().unwrap();
        let i = rng.gen_range(0..nodes.len());
        (i, nodes[i].clone())
    }

    fn fail(&self, what: String) {
        eprintln!("chaos: FAILURE {what}");
        self.failures.lock().unwrap().push(what);
        self.failed.send_replace(true);
    }

    /// Fails the test with the broken promises, if there are any.
    fn assert_no_failures(&self) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} broken promises; the first:\n{}",
            failures.len(),
            failures[..failures.len().min(20)].join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// Nodes

/// A node on `ip`, once it listens: its process and address.
async fn start_node(ip: &'static str, args: Vec<String>) -> (Proc, String) {
    tokio::task::spawn_blocking(move || {
        let proc = Proc::serve_on(ip, &args);
        let addr = proc.addr().to_string();
        (proc, addr)
    })
    .await
    .unwrap()
}

/// Each channel's newest position, asked of every node: they must agree.
async fn newest(shared: &Shared) -> Vec<Position> {
    let nodes = shared.nodes.read().unwrap().clone();
    let mut tops = Vec::new();
    for ch in &shared.channels {
        let mut answers = Vec::new();
        for addr in &nodes {
            let res = shared
                .http
                .get(format!("http://{addr}/poll?channel={}", ch.name))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "GET /poll on {addr}");
            let body: Value = res.json().await.unwrap();
            let cursor = body["cursor"].as_str().unwrap();
            answers.push(position_in(cursor, &ch.name).unwrap());
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "channel {}: the nodes disagree on its newest position: {answers:?}",
            ch.name
        );
        tops.push(answers.pop().unwrap());
    }
    tops
}

// ---------------------------------------------------------------------------
// The publisher

#[derive(Debug, Default, Clone, Copy)]
struct Published {
    acked: u64,
    /// Answered 503: Redis (or a node's link to it) is down.
    unavailable: u64,
    /// No answer: the node is down or died during the request. It may have
    /// been stored all the same, at an offset of its own.
    failed: u64,
}

/// Publishes numbered messages on random channels through random nodes
/// until `target` are acknowledged (by all publishers together).
async fn publish(
    shared: Arc<Shared>,
    mut rng: StdRng,
    target: u64,
    max_attempts: u64,
    attempts: Arc<AtomicU64>,
    progress: Arc<watch::Sender<Published>>,
) {
    while progress.borrow().acked < target {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(
            attempt <= max_attempts,
            "chaos: {attempt} publishes for {target} acknowledged ones: {:?}",
            *progress.borrow()
        );
        let channel = &shared.channels[rng.gen_range(0..shared.channels.len())];
        let seq = channel.next_seq.fetch_add(1, Ordering::Relaxed);
        let (_, addr) = shared.pick_node(&mut rng);
        let res = shared
            .http
            .post(format!("http://{addr}/api/publish"))
            .json(&json!({"channel": channel.name, "data": seq}))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let body = match res {
            Ok(res) if res.status() == 200 => res.json::<Value>().await.ok(),
            Ok(res) if res.status() == 503 => {
                progress.send_modify(|p| p.unavailable += 1);
                tokio::time::sleep(pick(&mut rng, BACKOFF_MS)).await;
                continue;
            }
            Ok(res) => {
                let status = res.status();
                panic!(
                    "chaos: POST /api/publish on {addr}: {status} {}",
                    res.text().await.unwrap_or_default()
                );
            }
            Err(_) => None,
        };
        // At once on another node: this one is down (or died meanwhile).
        let Some(body) = body else {
            progress.send_modify(|p| p.failed += 1);
            continue;
        };
        let (Some(epoch), Some(offset)) = (body["epoch"].as_str(), body["offset"].as_u64()) else {
            panic!("chaos: a publish answered {body}");
        };
        assert_eq!(body["channel"], channel.name.as_str(), "{body}");
        let before = channel
            .acked
            .lock()
            .unwrap()
            .insert(offset, (epoch.to_owned(), seq));
        if let Some((_, other)) = before {
            shared.fail(format!(
                "channel {} offset {offset}: acknowledged twice, for message {other} and for {seq}",
                channel.name
            ));
        }
        progress.send_modify(|p| p.acked += 1);
    }
}

/// Waits until `want` publishes are acknowledged; fails the test at once
/// if a client broke a promise or a publisher failed meanwhile.
async fn reach(
    want: u64,
    limit: Duration,
    acked: &mut watch::Receiver<Published>,
    shared: &Shared,
    publishers: &mut JoinSet<()>,
) {
    let mut failed = shared.failed.subscribe();
    within(&format!("{want} publishes acknowledged"), limit, async {
        tokio::select! {
            // In this order: the publishers also end, normally, at the target.
            biased;
            _ = failed.wait_for(|f| *f) => shared.assert_no_failures(),
            reached = acked.wait_for(|p| p.acked >= want) => {
                reached.expect("the publishers");
            }
            Some(ended) = publishers.join_next() => {
                ended.expect("a publisher");
                panic!("a publisher stopped before {want} publishes were acknowledged");
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Clients

/// What a client's task is told and tells.
struct Ctx {
    shared: Arc<Shared>,
    /// Each channel's final position, once the publisher has stopped.
    tops: watch::Receiver<Option<Arc<Vec<Position>>>>,
    stop: watch::Receiver<bool>,
    /// Its id, once it first subscribed.
    ready: mpsc::UnboundedSender<usize>,
    /// Its id, once it reached its channel's final position (or failed).
    done: mpsc::UnboundedSender<usize>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    received: u64,
    /// Connections it dropped on purpose, at a random moment.
    dropped: u64,
    /// Connections that ended or were refused: a node or Redis down, or a
    /// stream the server ended.
    ended: u64,
    resets: u64,
}

struct Client {
    id: usize,
    transport: Transport,
    channel: usize,
    /// Its channel's name.
    name: String,
    http: reqwest::Client,
    rng: StdRng,
    /// The node of its current connection.
    node: usize,
    /// Where it stands: the last message's (or reset's) position; none
    /// before the first.
    position: Option<Position>,
    /// SSE: the last `id:`, sent back as `Last-Event-ID`.
    sse_id: Option<String>,
    /// Poll and long-poll: the last answer's cursor.
    poll_cursor: Option<String>,
    /// Its channel's final position, once known: from then on it drops no
    /// connection on purpose.
    top: Option<Position>,
    said_ready: bool,
    said_done: bool,
    stats: Stats,
    /// Why its last connection ended, if one did.
    last_trouble: String,
}

/// One object the server sent (its JSON text), or the cursor after what
/// came before it (an SSE `id:`, a poll answer's `cursor`).
enum Frame {
    Json(String),
    Cursor(String),
}

enum Trouble {
    /// The connection failed, was refused or ended: connect again.
    Ended(String),
    /// The server broke its promise: the client stops, the test fails.
    Violation(String),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Conn {
    Ws(Box<Ws>),
    /// SSE, NDJSON, iframe: a response body, read line by line.
    Lines {
        body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        buf: Vec<u8>,
        /// SSE: the fields of the event being read (`id`, `data`).
        sse: (Option<String>, Option<String>),
    },
    /// Poll and long-poll: one request after another.
    Requests {
        first: bool,
    },
}

enum Outcome {
    Stop,
    /// Dropped on purpose.
    Dropped,
    Ended(String),
}

impl Client {
    fn new(id: usize, shared: &Shared, seed: u64) -> Client {
        let channel = (id / TRANSPORTS.len()) % shared.channels.len();
        Client {
            id,
            transport: TRANSPORTS[id % TRANSPORTS.len()],
            channel,
            name: shared.channels[channel].name.clone(),
            http: shared.http.clone(),
            rng: StdRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            node: 0,
            position: None,
            sse_id: None,
            poll_cursor: None,
            top: None,
            said_ready: false,
            said_done: false,
            stats: Stats::default(),
            last_trouble: String::new(),
        }
    }

    /// Who and where, for failure messages.
    fn describe(&self) -> String {
        let at = match &self.position {
            Some((epoch, offset)) => format!("at {epoch}.{offset}"),
            None => "before its first message".to_owned(),
        };
        format!(
            "client {} ({}, node {}, channel {}, {at})",
            self.id,
            self.transport.name(),
            self.node,
            self.name
        )
    }

    async fn run(mut self, mut ctx: Ctx) -> Client {
        while !*ctx.stop.borrow() {
            let (node, addr) = ctx.shared.pick_node(&mut self.rng);
            self.node = node;
            match self.session(&mut ctx, &addr).await {
                Ok(Outcome::Stop) => break,
                Ok(Outcome::Dropped) => self.stats.dropped += 1,
                Ok(Outcome::Ended(why)) => {
                    self.stats.ended += 1;
                    self.last_trouble = why;
                    let pause = pick(&mut self.rng, BACKOFF_MS);
                    tokio::select! {
                        _ = ctx.stop.changed() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(violation) => {
                    ctx.shared.fail(format!("{}: {violation}", self.describe()));
                    self.say_ready(&ctx);
                    self.say_done(&ctx);
                    break;
                }
            }
        }
        self
    }

    /// One connection (or, polling, one node's run of requests), until the
    /// client drops it, it ends, or the test stops.
    async fn session(&mut self, ctx: &mut Ctx, addr: &str) -> Result<Outcome, String> {
        let mut deadline = self
            .top
            .is_none()
            .then(|| tokio::time::Instant::now() + pick(&mut self.rng, LIFETIME_MS));
        let mut conn = None;
        enum Step {
            Tops,
            Read(Result<Vec<Frame>, Trouble>),
        }
        loop {
            let settling = self.top.is_some();
            let step = tokio::select! {
                biased;
                _ = ctx.stop.changed() => return Ok(Outcome::Stop),
                Ok(()) = ctx.tops.changed(), if !settling => Step::Tops,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => return Ok(Outcome::Dropped),
                read = self.advance(&mut conn, addr) => Step::Read(read),
            };
            let frames = match step {
                Step::Tops => {
                    let tops = ctx.tops.borrow().clone().expect("the final positions");
                    self.top = Some(tops[self.channel].clone());
                    deadline = None;
                    self.check_done(ctx);
                    continue;
                }
                Step::Read(Ok(frames)) => frames,
                Step::Read(Err(Trouble::Ended(why))) => return Ok(Outcome::Ended(why)),
                Step::Read(Err(Trouble::Violation(v))) => return Err(v),
            };
            for frame in frames {
                match self.take(frame, ctx) {
                    Ok(()) => {}
                    Err(Trouble::Ended(why)) => return Ok(Outcome::Ended(why)),
                    Err(Trouble::Violation(v)) => return Err(v),
                }
            }
        }
    }

    /// Opens the connection if there is none, else reads what comes next.
    async fn advance(
        &mut self,
        conn: &mut Option<Conn>,
        addr: &str,
    ) -> Result<Vec<Frame>, Trouble> {
        match conn {
            None => {
                *conn = Some(self.open(addr).await?);
                Ok(Vec::new())
            }
            Some(c) => self.next(c, addr).await,
        }
    }

    /// `since=…` for this client's next connection or request: where it
    /// stands (poll, long-poll: the last answer's cursor), or everything.
    fn since(&self) -> String {
        let resume = match self.transport {
            Transport::Poll | Transport::LongPoll => self.poll_cursor.clone(),
            _ => (self.position.as_ref()).map(|(epoch, offset)| cursor(&self.name, epoch, *offset)),
        };
        resume.unwrap_or_else(|| "earliest".to_owned())
    }

    async fn open(&mut self, addr: &str) -> Result<Conn, Trouble> {
        let query = format!("channel={}&since={}", self.name, self.since());
        let http = &self.http;
        let req = match self.transport {
            Transport::Ws => {
                let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}"))
                    .await
                    .map_err(|e| Trouble::Ended(format!("WebSocket handshake: {e}")))?;
                return Ok(Conn::Ws(Box::new(ws)));
            }
            Transport::Poll | Transport::LongPoll => return Ok(Conn::Requests { first: true }),
            // EventSource's way: the last id as Last-Event-ID, which the
            // server prefers to `since`.
            Transport::Sse => match &self.sse_id {
                Some(id) => http
                    .get(format!("http://{addr}/sse?channel={}", self.name))
                    .header("last-event-id", id),
                None => http.get(format!("http://{addr}/sse?{query}")),
            },
            Transport::Stream => http.get(format!("http://{addr}/stream?{query}")),
            Transport::Iframe => http.get(format!("http://{addr}/iframe?{query}&callback=cb")),
        };
        let res = req
            .send()
            .await
            .map_err(|e| Trouble::Ended(e.to_string()))?;
        check_status(&res)?;
        Ok(Conn::Lines {
            body: res.bytes_stream().boxed(),
            buf: Vec::new(),
            sse: (None, None),
        })
    }

    /// What the connection brings next (at least one frame, or trouble).
    async fn next(&mut self, conn: &mut Conn, addr: &str) -> Result<Vec<Frame>, Trouble> {
        match conn {
            Conn::Ws(ws) => loop {
                let ended = |why: String| Trouble::Ended(format!("WebSocket: {why}"));
                match ws.next().await {
                    None => return Err(ended("closed".into())),
                    Some(Err(e)) => return Err(ended(e.to_string())),
                    Some(Ok(Message::Text(text))) => {
                        return Ok(vec![Frame::Json(text.as_str().to_owned())])
                    }
                    Some(Ok(Message::Close(frame))) => return Err(ended(format!("{frame:?}"))),
                    Some(Ok(Message::Binary(_))) => {
                        return Err(Trouble::Violation("a binary frame for JSON data".into()))
                    }
                    Some(Ok(_)) => {} // ping, pong
                }
            },
            Conn::Lines { body, buf, sse } => loop {
                let chunk = match body.next().await {
                    None => return Err(Trouble::Ended("end of the response".into())),
                    Some(Err(e)) => return Err(Trouble::Ended(e.to_string())),
                    Some(Ok(chunk)) => chunk,
                };
                buf.extend_from_slice(&chunk);
                let mut frames = Vec::new();
                let mut start = 0;
                while let Some(n) = buf[start..].iter().position(|&b| b == b'\n') {
                    let line = std::str::from_utf8(&buf[start..start + n])
                        .map_err(|_| Trouble::Violation("a line that is not UTF-8".into()))?;
                    start += n + 1;
                    self.line(line, sse, &mut frames);
                }
                buf.drain(..start);
                if !frames.is_empty() {
                    return Ok(frames);
                }
            },
            Conn::Requests { first } => {
                let path = match self.transport {
                    Transport::LongPoll => {
                        let wait = match self.said_ready {
                            true => pick(&mut self.rng, LONGPOLL_TIMEOUT_MS),
                            false => Duration::from_millis(200),
                        };
                        format!("longpoll?timeout={}ms&", wait.as_millis())
                    }
                    _ => {
                        if !*first {
                            tokio::time::sleep(pick(&mut self.rng, POLL_EVERY_MS)).await;
                        }
                        "poll?".to_owned()
                    }
                };
                *first = false;
                let url = format!(
                    "http://{addr}/{path}channel={}&since={}",
                    self.name,
                    self.since()
                );
                let res = (self.http.get(url))
                    .send()
                    .await
                    .map_err(|e| Trouble::Ended(e.to_string()))?;
                check_status(&res)?;
                let body = res
                    .bytes()
                    .await
                    .map_err(|e| Trouble::Ended(e.to_string()))?;
                let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
                    let body = String::from_utf8_lossy(&body);
                    Trouble::Violation(format!("a poll answered ({e}) {body}"))
                })?;
                let mut frames: Vec<Frame> = (answer.messages.iter())
                    .map(|m| Frame::Json(m.get().to_owned()))
                    .collect();
                frames.push(Frame::Cursor(answer.cursor.to_owned()));
                Ok(frames)
            }
        }
    }

    /// One line of an SSE, NDJSON or iframe response.
    fn line(
        &self,
        line: &str,
        sse: &mut (Option<String>, Option<String>),
        frames: &mut Vec<Frame>,
    ) {
        match self.transport {
            Transport::Stream if !line.is_empty() => frames.push(Frame::Json(line.to_owned())),
            Transport::Iframe => {
                let call = line
                    .strip_prefix("<script>parent.cb(")
                    .and_then(|rest| rest.strip_suffix(");</script>"));
                if let Some(json) = call {
                    frames.push(Frame::Json(json.to_owned()));
                }
            }
            // An event ends at an empty line; its `id:` is the cursor after it.
            Transport::Sse if line.is_empty() => {
                let (id, data) = (sse.0.take(), sse.1.take());
                if let Some(data) = data.filter(|d| !d.is_empty()) {
                    frames.push(Frame::Json(data));
                }
                if let Some(id) = id {
                    frames.push(Frame::Cursor(id));
                }
            }
            Transport::Sse => {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                match field {
                    "id" => sse.0 = Some(value),
                    "data" => sse.1 = Some(value),
                    _ => {} // event, retry, comments: the data says what it is
                }
            }
            _ => {}
        }
    }

    /// Checks one frame against everything received before.
    fn take(&mut self, frame: Frame, ctx: &Ctx) -> Result<(), Trouble> {
        let text = match frame {
            Frame::Cursor(c) => return self.take_cursor(c, ctx),
            Frame::Json(text) => text,
        };
        let violation = |what: &str| Err(Trouble::Violation(format!("{what}: {text}")));
        let Ok(v) = serde_json::from_str::<Obj>(&text) else {
            return violation("not an object of the protocol with numbers for data");
        };
        if v.channel.is_some_and(|c| c != self.name) {
            return violation("another channel's");
        }
        match (v.kind, v.epoch, v.offset) {
            ("message", Some(epoch), Some(offset)) => match v.data {
                Some(seq) => self
                    .take_message(epoch, offset, seq, ctx)
                    .map_err(|what| Trouble::Violation(format!("{what}: {text}"))),
                None => violation("a message without data"),
            },
            ("reset", Some(epoch), Some(offset)) => {
                self.stats.resets += 1;
                ctx.shared
                    .resets
                    .lock()
                    .unwrap()
                    .push(format!("{}: {text}", self.describe()));
                self.position = Some((epoch.to_owned(), offset));
                self.check_done(ctx);
                Ok(())
            }
            ("message" | "reset", ..) => violation("malformed"),
            ("subscribed", ..) => {
                self.say_ready(ctx);
                Ok(())
            }
            // A subscription that needs Redis while it is down.
            ("error", ..) if v.code == Some("unavailable") => Err(Trouble::Ended(text)),
            ("error", ..) => violation("an error"),
            ("end", ..) => Err(Trouble::Ended(text)),
            _ => Ok(()), // ping, and what a client must ignore
        }
    }

    /// Checks one message: the next offset of its epoch, with the data
    /// every other client got there.
    fn take_message(
        &mut self,
        epoch: &str,
        offset: u64,
        seq: u64,
        ctx: &Ctx,
    ) -> Result<(), String> {
        match &self.position {
            None if offset != 1 => {
                return Err(format!(
                    "its first message is offset {offset}, not 1 (since=earliest, and history keeps everything): lost 1..={}",
                    offset - 1
                ))
            }
            Some((e, last)) if e == epoch && offset <= *last => {
                return Err(format!(
                    "offset {offset} after {last}: duplicated or out of order"
                ))
            }
            Some((e, last)) if e == epoch && offset > last + 1 => {
                return Err(format!(
                    "offset {offset} after {last}: lost {}..={}",
                    last + 1,
                    offset - 1
                ))
            }
            Some((e, _)) if e != epoch => {
                return Err(format!("offset {offset} in epoch {epoch} without a reset"))
            }
            _ => {}
        }
        let channel = &ctx.shared.channels[self.channel];
        if *channel.epoch.get_or_init(|| epoch.to_owned()) == epoch {
            let Some(slot) = channel.delivered.get(offset as usize) else {
                return Err(format!("offset {offset}: more than was ever published"));
            };
            if let Err(other) = slot.compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed)
            {
                if other != seq {
                    return Err(format!(
                        "offset {offset} carries message {seq}; other clients got {other} there"
                    ));
                }
            }
        }
        if let Some((top_epoch, top)) = &self.top {
            if top_epoch == epoch && offset > *top {
                return Err(format!(
                    "offset {offset}, after the publisher stopped at {top}"
                ));
            }
        }
        match &mut self.position {
            Some((_, last)) => *last = offset, // the same epoch: checked above
            None => self.position = Some((epoch.to_owned(), offset)),
        }
        self.stats.received += 1;
        ctx.shared.progress[self.id].store(offset, Ordering::Relaxed);
        self.check_done(ctx);
        Ok(())
    }

    /// The cursor the server says the client stands at must be where its
    /// messages put it: a resume from it skips nothing, repeats nothing.
    fn take_cursor(&mut self, c: String, ctx: &Ctx) -> Result<(), Trouble> {
        let Some(said) = position_in(&c, &self.name) else {
            return Err(Trouble::Violation(format!(
                "a cursor without the channel: {c}"
            )));
        };
        let expected = (self.position.clone()).unwrap_or_else(|| (said.0.clone(), 0));
        if said != expected {
            return Err(Trouble::Violation(format!(
                "the cursor {c} says {}.{}; the messages say {}.{}",
                said.0, said.1, expected.0, expected.1
            )));
        }
        match self.transport {
            Transport::Sse => self.sse_id = Some(c),
            // A poll's answer is its subscription.
            _ => {
                self.poll_cursor = Some(c);
                self.say_ready(ctx);
            }
        }
        Ok(())
    }

    fn say_ready(&mut self, ctx: &Ctx) {
        if !self.said_ready {
            self.said_ready = true;
            let _ = ctx.ready.send(self.id);
        }
    }

    fn say_done(&mut self, ctx: &Ctx) {
        if !self.said_done {
            self.said_done = true;
            let _ = ctx.done.send(self.id);
        }
    }

    fn check_done(&mut self, ctx: &Ctx) {
        let Some((epoch, top)) = &self.top else {
            return;
        };
        let reached = match &self.position {
            Some((e, o)) => e == epoch && o == top,
            None => *top == 0,
        };
        if reached {
            self.say_done(ctx);
        }
    }
}

/// The fields of a server object the clients look at (parsed without a
/// `Value`: debug builds parse the run's million objects in this test).
#[derive(serde::Deserialize)]
struct Obj<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    channel: Option<&'a str>,
    epoch: Option<&'a str>,
    offset: Option<u64>,
    /// The publisher's sequence number, in a message.
    data: Option<u64>,
    code: Option<&'a str>,
}

/// A poll's or long-poll's answer.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
    cursor: &'a str,
}

/// 200 goes on; 503 (Redis down) is a refusal to retry; anything else is
/// a broken promise.
fn check_status(res: &reqwest::Response) -> Result<(), Trouble> {
    match res.status().as_u16() {
        200 => Ok(()),
        503 => Err(Trouble::Ended(format!("{}: 503", res.url()))),
        status => Err(Trouble::Violation(format!("{}: {status}", res.url()))),
    }
}

// ---------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_across_nodes_loses_duplicates_and_reorders_nothing() {
    let clients = env_or("PUSHGATE_CHAOS_CLIENTS", 300) as usize;
    let messages = env_or("PUSHGATE_CHAOS_MESSAGES", 10_000);
    let channels = env_or("PUSHGATE_CHAOS_CHANNELS", 4).max(1) as usize;
    let seed = env_or(
        "PUSHGATE_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!(
        "chaos: {clients} clients, {messages} messages on {channels} channels; PUSHGATE_CHAOS_SEED={seed}"
    );
    let Some(mut redis) = Redis::start_durable().await else {
        return;
    };
    let began = Instant::now();
    // Refused and unanswered publishes are tried again: a bound on the
    // attempts, and so on the offsets (an unanswered one may be stored).
    let max_attempts = messages + messages / 2 + 1000;
    let history = max_attempts.max(100_000);
    // History larger than anything published, and longer than any run: a
    // resume never falls outside it.
    let args: Vec<String> = [
        "--broker",
        &redis.url(),
        "--history-size",
        &history.to_string(),
        "--history-ttl",
        "24h",
    ]
    .map(String::from)
    .to_vec();
    let started =
        futures_util::future::join_all(NODE_IPS.map(|ip| start_node(ip, args.clone()))).await;
    let (mut procs, addrs): (Vec<Proc>, Vec<String>) = started.into_iter().unzip();
    eprintln!("chaos: nodes on {addrs:?}, Redis on {}", redis.url());

    let shared = Arc::new(Shared {
        nodes: RwLock::new(addrs),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        channels: (0..channels)
            .map(|i| Channel {
                name: format!("chaos{i}"),
                epoch: OnceLock::new(),
                delivered: (0..=max_attempts).map(|_| AtomicU64::new(0)).collect(),
                next_seq: AtomicU64::new(1),
                acked: Mutex::default(),
            })
            .collect(),
        failures: Mutex::default(),
        failed: watch::channel(false).0,
        resets: Mutex::default(),
        progress: (0..clients).map(|_| AtomicU64::new(0)).collect(),
    });

    // The clients, each subscribed (from the start) before anything is
    // published: they get messages live as well as from history.
    let (tops_tx, tops_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let ctx = Ctx {
                shared: shared.clone(),
                tops: tops_rx.clone(),
                stop: stop_rx.clone(),
                ready: ready_tx.clone(),
                done: done_tx.clone(),
            };
            tokio::spawn(Client::new(id, &shared, seed).run(ctx))
        })
        .collect();
    within(
        "every client to subscribe",
        Duration::from_secs(60),
        async {
            for _ in 0..clients {
                ready_rx.recv().await;
            }
        },
    )
    .await;
    eprintln!(
        "chaos: {clients} clients subscribed after {:.1?}",
        began.elapsed()
    );

    // The publisher, and the chaos at moments it reaches.
    let progress = Arc::new(watch::channel(Published::default()).0);
    let attempts = Arc::new(AtomicU64::new(0));
    let mut publishers = JoinSet::new();
    for i in 0..PUBLISHERS {
        let rng = StdRng::seed_from_u64(!seed ^ i as u64);
        publishers.spawn(publish(
            shared.clone(),
            rng,
            messages,
            max_attempts,
            attempts.clone(),
            progress.clone(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = progress.subscribe();
    let (mut node_kills, mut redis_restarts) = (0, 0);
    // A bound, not an estimate: a debug build on 2 busy cores delivers
    // 15,000 messages a second or so, all clients together.
    let deliveries = clients as u64 * messages / channels as u64;
    let publishing = Duration::from_secs(120) + Duration::from_micros(deliveries * 200);
    let at = |percent: u64| messages * percent / 100;
    reach(at(25), publishing, &mut acked, &shared, &mut publishers).await;
    let victim = rng.gen_range(0..NODE_IPS.len());
    eprintln!(
        "chaos: SIGKILL node {victim} at {:?} ({:.1?})",
        *progress.borrow(),
        began.elapsed()
    );
    procs[victim].child.kill().unwrap();
    procs[victim].child.wait().unwrap();
    node_kills += 1;
    reach(at(40), publishing, &mut acked, &shared, &mut publishers).await;
    let (proc, addr) = start_node(NODE_IPS[victim], args.clone()).await;
    procs[victim] = proc;
    shared.nodes.write().unwrap()[victim] = addr.clone();
    eprintln!(
        "chaos: node {victim} back on {addr} ({:.1?})",
        began.elapsed()
    );
    reach(at(60), publishing, &mut acked, &shared, &mut publishers).await;
    redis.kill().await;
    let refused = progress.borrow().unavailable;
    eprintln!(
        "chaos: Redis killed at {:?} ({:.1?})",
        *progress.borrow(),
        began.elapsed()
    );
    // Down for longer than a node's reconnect backoff (at most 2 s): the
    // publishes that succeed first after the restart come before some
    // nodes have subscribed again, and those nodes must fill the gap from
    // the stream. And until the nodes have refused a few publishes.
    tokio::time::sleep(REDIS_DOWN).await;
    within(
        "publishes refused while Redis is down",
        Duration::from_secs(60),
        acked.wait_for(|p| p.unavailable >= refused + PUBLISHERS as u64),
    )
    .await
    .unwrap();
    redis.restart().await;
    redis_restarts += 1;
    eprintln!("chaos: Redis back ({:.1?})", began.elapsed());
    reach(messages, publishing, &mut acked, &shared, &mut publishers).await;
    while let Some(ended) = publishers.join_next().await {
        ended.expect("a publisher");
    }
    let published = *progress.borrow();
    let publish_time = began.elapsed();
    eprintln!("chaos: publishing done: {published:?} ({publish_time:.1?})");

    // Every client must now reach its channel's newest position, on the
    // connection it holds (no more drops on purpose) or a new one if that
    // one ends.
    let tops = newest(&shared).await;
    for (ch, (epoch, top)) in shared.channels.iter().zip(&tops) {
        for (offset, (e, seq)) in ch.acked.lock().unwrap().iter() {
            assert!(
                e == epoch && offset <= top,
                "channel {} offset {offset}: message {seq} acknowledged in {e}, but the channel stands at {epoch}.{top}",
                ch.name
            );
        }
    }
    tops_tx.send(Some(Arc::new(tops.clone()))).unwrap();
    let mut done = HashSet::new();
    let settled = tokio::time::timeout(SETTLE, async {
        while done.len() < clients {
            done.insert(done_rx.recv().await.unwrap());
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    let mut finished = Vec::new();
    for t in tasks {
        finished.push(
            within("the clients to stop", Duration::from_secs(30), t)
                .await
                .unwrap(),
        );
    }
    let duration = began.elapsed();

    for (i, p) in procs.iter().enumerate() {
        let warnings: Vec<String> = p
            .lines_so_far()
            .into_iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            // What every test node says at start.
            .filter(|l| !l.contains("no API key") && !l.contains("no key configured"))
            .collect();
        for line in warnings.iter().take(10) {
            eprintln!("chaos: node {i}: {line}");
        }
    }

    let per_transport: Vec<String> = TRANSPORTS
        .iter()
        .map(|t| {
            let n = finished.iter().filter(|c| c.transport == *t).count();
            format!("{} {n}", t.name())
        })
        .collect();
    let sum = |f: fn(&Stats) -> u64| finished.iter().map(|c| f(&c.stats)).sum::<u64>();
    eprintln!(
        "chaos: {clients} clients ({}) on {channels} channels; {} messages acknowledged \
         ({} attempts: {} refused with 503, {} without an answer); {} delivered; \
         {} reconnects ({} on purpose, {} after a failure or refusal); {node_kills} node SIGKILLed \
         and restarted; {redis_restarts} Redis restart; {} resets; publishing {publish_time:.1?}, \
         total {duration:.1?}; seed {seed}",
        per_transport.join(", "),
        published.acked,
        attempts.load(Ordering::Relaxed),
        published.unavailable,
        published.failed,
        sum(|s| s.received),
        sum(|s| s.dropped + s.ended),
        sum(|s| s.dropped),
        sum(|s| s.ended),
        sum(|s| s.resets),
    );

    shared.assert_no_failures();
    if settled.is_err() {
        let behind: Vec<String> = finished
            .iter()
            .filter(|c| !done.contains(&c.id))
            .take(20)
            .map(|c| {
                format!(
                    "{}: offset {} of {}; {:?}; last trouble: {}",
                    c.describe(),
                    shared.progress[c.id].load(Ordering::Relaxed),
                    tops[c.channel].1,
                    c.stats,
                    c.last_trouble
                )
            })
            .collect();
        panic!(
            "{} clients did not reach their channel's newest message within {SETTLE:?} after the publisher stopped; the first:\n{}",
            clients - done.len(),
            behind.join("\n")
        );
    }
    check(&shared, &tops, &finished);
}

/// After the run: no client got a `reset`; what the clients got at each
/// offset (all of a channel's clients got the same, or failed already) is
/// what was acknowledged there, and no message is at two offsets; each
/// client got every message of its channel once.
fn check(shared: &Shared, tops: &[Position], finished: &[Client]) {
    let resets = shared.resets.lock().unwrap().clone();
    assert!(
        resets.is_empty(),
        "{} resets, with history larger than the run and a durable Redis; the first:\n{}",
        resets.len(),
        resets[..resets.len().min(20)].join("\n")
    );
    for (i, ch) in shared.channels.iter().enumerate() {
        let (epoch, top) = &tops[i];
        if !finished.iter().any(|c| c.channel == i) {
            continue;
        }
        assert_eq!(
            ch.epoch.get(),
            Some(epoch),
            "channel {}: one epoch",
            ch.name
        );
        let sent = ch.next_seq.load(Ordering::Relaxed);
        let mut seen = HashSet::new();
        for offset in 1..=*top {
            let got = ch.delivered[offset as usize].load(Ordering::Relaxed);
            assert!(
                got != 0,
                "channel {} offset {offset}: no client got it",
                ch.name
            );
            assert!(
                got < sent,
                "channel {} offset {offset}: its clients got message {got}, never sent",
                ch.name
            );
            assert!(
                seen.insert(got),
                "channel {} offset {offset}: message {got} is also at another offset",
                ch.name
            );
        }
        for (offset, (_, seq)) in ch.acked.lock().unwrap().iter() {
            let got = ch.delivered[*offset as usize].load(Ordering::Relaxed);
            assert_eq!(
                got, *seq,
                "channel {} offset {offset}: acknowledged message {seq}, its clients got {got}",
                ch.name
            );
        }
    }
    for c in finished {
        let (epoch, top) = &tops[c.channel];
        let at = (c.position.clone()).unwrap_or_else(|| (epoch.clone(), 0));
        assert_eq!(
            (&at.0, at.1),
            (epoch, *top),
            "{}: ends at its channel's newest",
            c.describe()
        );
        assert_eq!(
            c.stats.received,
            *top,
            "{}: every message once",
            c.describe()
        );
    }
}

// ---------------------------------------------------------------------------
// Presence when a node dies

/// The next JSON text frame of `ws`, skipping heartbeats.
async fn next_event(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let frame = within("a WebSocket frame", Duration::from_secs(20), ws.next())
            .await
            .expect("the connection stays open")
            .expect("a frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] != "ping" {
                return v;
            }
        }
    }
}

/// A member of `room` on the node at `addr`: its socket and its id.
async fn member(
    addr: &str,
    room: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Value,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?channel={room}"))
        .await
        .expect("the node accepts a WebSocket");
    let subscribed = next_event(&mut ws).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    (ws, subscribed["room"]["client"].clone())
}

/// Members of `room` as the node at `addr` lists them.
async fn members(addr: &str, room: &str) -> Vec<Value> {
    let url = format!("http://{addr}/api/presence?channel={room}");
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["members"].as_array().cloned().unwrap_or_default()
}

/// A node killed with SIGKILL cannot say its members left: they leave
/// (with a `leave` the other nodes' members hear) once their listing
/// ends, within `broker_presence_ttl`. A node stopped with SIGTERM says
/// so before it exits.
#[tokio::test]
async fn a_dead_nodes_members_leave() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    // A member stays listed for its own node's TTL: B's short, C's longer
    // than any wait here.
    let args = |ttl: &str| {
        vec![
            format!("--broker={}", redis.url()),
            "--broker-prefix=presence".to_owned(),
            format!("--broker-presence-ttl={ttl}"),
        ]
    };
    let (_a, addr_a) = start_node(NODE_IPS[0], args("1s")).await;
    let (mut b, addr_b) = start_node(NODE_IPS[1], args("1s")).await;
    let (c, addr_c) = start_node(NODE_IPS[2], args("10m")).await;
    let (mut watcher, _) = member(&addr_a, "room:k").await;
    let (_on_b, id_b) = member(&addr_b, "room:k").await;
    let (_on_c, id_c) = member(&addr_c, "room:k").await;
    for id in [&id_b, &id_c] {
        let v = next_event(&mut watcher).await;
        assert_eq!((&v["type"], &v["client"]), (&json!("join"), id), "{v}");
    }
    assert_eq!(members(&addr_a, "room:k").await.len(), 3);

    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let v = next_event(&mut watcher).await;
    assert_eq!((&v["type"], &v["client"]), (&json!("leave"), &id_b), "{v}");
    assert_eq!(members(&addr_a, "room:k").await.len(), 2);

    // A clean stop unlists its members itself: with a 10-minute listing,
    // only the stop can make this leave come.
    c.signal("TERM");
    let v = next_event(&mut watcher).await;
    assert_eq!((&v["type"], &v["client"]), (&json!("leave"), &id_c), "{v}");
    assert_eq!(members(&addr_a, "room:k").await.len(), 1);
}
