//! `--data-dir`, on the real binary: a server killed with SIGKILL and
//! started again on the same directory answers a cursor from before in the
//! same epoch — exactly the messages after it, no `reset` — on WebSocket,
//! SSE and long-poll; the kill -9 loop loses nothing acknowledged; a second
//! server on a directory in use is refused; a torn tail is dropped and
//! damage stops the start, as docs/durability.md says.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

mod common;
use common::{Proc, TempDir, STEP};

/// A server on `dir` with `extra` flags.
fn spawn(dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![OsString::from("--data-dir"), dir.into()];
    args.extend(extra.iter().map(OsString::from));
    Proc::serve(args)
}

/// The server's base URL, once it listens.
fn base_url(proc: &Proc) -> String {
    format!("http://127.0.0.1:{}", proc.port())
}

fn start(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let proc = spawn(dir, extra);
    let url = base_url(&proc);
    (proc, url)
}

async fn publish(http: &reqwest::Client, url: &str, data: impl Into<Value>) -> Value {
    let res = http
        .post(format!("{url}/api/publish"))
        .json(&json!({"channel": "news", "data": data.into()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_server_killed_with_sigkill_resumes_every_cursor_in_the_same_epoch() {
    let dir = TempDir::new("durable-sigkill");
    let http = reqwest::Client::new();

    let (mut first, url) = start(&dir.0, &[]);
    let mut acked = Vec::new();
    for n in 1..=5 {
        acked.push(publish(&http, &url, n).await);
    }
    let epoch = acked[0]["epoch"].as_str().unwrap().to_string();
    assert!(acked.iter().all(|a| a["epoch"] == epoch.as_str()));
    let metrics = common::metrics_text(&http, &url).await;
    for line in [
        "pushgate_store_records_written_total 5",
        "pushgate_store_segments 1",
        "pushgate_store_failed 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // A second server on the same directory is refused, and says why.
    let second = spawn(&dir.0, &[]);
    second.line("is in use by another pushgate");

    first.child.kill().unwrap(); // SIGKILL: no shutdown, no final sync
    first.child.wait().unwrap();

    let (_again, url) = start(&dir.0, &[]);
    let res = http
        .get(format!(
            "{url}/poll?channel=news&since={}",
            cursor("news", &epoch, 2)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let messages = body["messages"].as_array().unwrap();
    let got: Vec<(&str, u64)> = messages
        .iter()
        .map(|m| (m["type"].as_str().unwrap(), m["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("message", 3), ("message", 4), ("message", 5)],
        "{body}"
    );
    assert!(messages.iter().all(|m| m["epoch"] == epoch.as_str()));
    let next = publish(&http, &url, 6).await;
    assert_eq!(
        (next["epoch"].as_str(), next["offset"].as_u64()),
        (Some(epoch.as_str()), Some(6))
    );
}

#[tokio::test]
async fn a_clean_stop_with_sync_interval_keeps_the_epoch_and_a_crash_renews_it() {
    let dir = TempDir::new("durable-interval");
    let http = reqwest::Client::new();
    let interval = ["--sync", "interval"];

    let (mut first, url) = start(&dir.0, &interval);
    let epoch = publish(&http, &url, 1).await["epoch"].clone();
    // SIGTERM: a graceful stop syncs and marks the store clean.
    first.signal("TERM");
    assert!(first.child.wait().unwrap().success());

    let (mut second, url) = start(&dir.0, &interval);
    let p = publish(&http, &url, 2).await;
    assert_eq!(
        (&p["epoch"], p["offset"].as_u64()),
        (&epoch, Some(2)),
        "the same epoch"
    );
    // SIGKILL with sync = interval: what was acknowledged may be lost, so
    // the next start goes on in a new epoch, and says why.
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    let third = spawn(&dir.0, &interval);
    third.line("every channel goes on in a new epoch");
    let p = publish(&http, &base_url(&third), 3).await;
    assert_ne!(p["epoch"], epoch);
    // 2 survived if the committer wrote it before the kill (the kernel keeps
    // what was written; only a sync makes it survive a power cut), not
    // otherwise: either way offsets go on, in the new epoch.
    let offset = p["offset"].as_u64().unwrap();
    assert!(offset == 2 || offset == 3, "{p}");
}

/// What one round of the kill loop sent, and what was acknowledged.
#[derive(Default)]
struct Round {
    channel: String,
    /// offset → the value published there, for each acknowledged publish.
    acked: std::collections::BTreeMap<u64, u64>,
    /// Every value sent, acknowledged or not.
    sent: std::collections::HashSet<u64>,
    epoch: Option<String>,
}

/// Reads a channel's whole history through `GET /api/history`, a page at a
/// time: (epoch, offset, value) in the order given.
async fn whole_history(
    http: &reqwest::Client,
    url: &str,
    channel: &str,
) -> Vec<(String, u64, u64)> {
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(channel);
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    loop {
        let since = match out.last() {
            Some((epoch, offset, _)) => format!("&since={name}.{epoch}.{offset}"),
            None => String::new(),
        };
        let res = http
            .get(format!(
                "{url}/api/history?channel={channel}&limit=1000{since}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let messages = body["messages"].as_array().unwrap();
        let before = out.len();
        for m in messages {
            assert_eq!(m["type"], "message", "no reset after a restart: {m}");
            out.push((
                m["epoch"].as_str().unwrap().to_string(),
                m["offset"].as_u64().unwrap(),
                m["data"].as_u64().unwrap(),
            ));
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Every acknowledged publish of `round` is in its channel's history, in
/// its epoch, at its offset; nothing is there twice, nothing unsent.
async fn check_round(http: &reqwest::Client, url: &str, round: &Round, context: &str) {
    let history = whole_history(http, url, &round.channel).await;
    let mut offsets = std::collections::BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut last = 0;
    for (epoch, offset, value) in &history {
        assert_eq!(
            Some(epoch),
            round.epoch.as_ref(),
            "{context}: the same epoch"
        );
        assert!(
            *offset > last,
            "{context}: offsets in order ({last} then {offset})"
        );
        last = *offset;
        assert!(
            round.sent.contains(value),
            "{context}: {value} was never sent"
        );
        assert!(seen.insert(*value), "{context}: {value} is there twice");
        offsets.insert(*offset, *value);
    }
    for (offset, value) in &round.acked {
        assert_eq!(
            offsets.get(offset),
            Some(value),
            "{context}: acknowledged {value} at offset {offset} is missing"
        );
    }
}

/// A small deterministic generator for the kill moments (its seed is
/// printed, and `PUSHGATE_KILL_SEED` replays one).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The kill -9 loop: publishers send as fast as they can on several
/// connections while the server is killed with SIGKILL at a random moment;
/// after each restart on the same directory every publish acknowledged in
/// any round so far is in history, in order, at its original offset, once.
/// `PUSHGATE_KILL_ROUNDS` (20) and `PUSHGATE_KILL_PUBLISHES` (10,000 per
/// round) set its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    const CONNECTIONS: u64 = 8;
    let rounds = env_or("PUSHGATE_KILL_ROUNDS", 20);
    let publishes = env_or("PUSHGATE_KILL_PUBLISHES", 10_000);
    let mut rng = env_or(
        "PUSHGATE_KILL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("kill loop: {rounds} rounds × {publishes} publishes, PUSHGATE_KILL_SEED={rng}");
    let dir = TempDir::new("killloop");
    let size = ["--history-size", "20000"];
    let check = reqwest::Client::new();
    let mut done: Vec<Round> = Vec::new();
    let (mut server, mut url) = start(&dir.0, &size);
    for r in 0..rounds {
        let kill_after = xorshift(&mut rng) % publishes;
        let channel = format!("kill-{r}");
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (killed_tx, mut killed) = tokio::sync::watch::channel(false);
        let reached = Arc::new(tokio::sync::Notify::new());
        let mut publishers = Vec::new();
        for c in 0..CONNECTIONS {
            let (url, channel, acked, reached) =
                (url.clone(), channel.clone(), acked.clone(), reached.clone());
            publishers.push(tokio::spawn(async move {
                // One keep-alive connection each.
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut sent = Vec::new();
                let mut got = Vec::new();
                let mut epoch = None;
                for i in (c..publishes).step_by(CONNECTIONS as usize) {
                    let value = r * 1_000_000 + i;
                    sent.push(value);
                    let res = http
                        .post(format!("{url}/api/publish"))
                        .json(&json!({"channel": channel, "data": value}))
                        .send()
                        .await;
                    let body: Value = match res {
                        Ok(res) if res.status() == 200 => match res.json().await {
                            Ok(body) => body,
                            Err(_) => break,
                        },
                        // The server is gone: this one is unacknowledged.
                        _ => break,
                    };
                    got.push((body["offset"].as_u64().unwrap(), value));
                    epoch = Some(body["epoch"].as_str().unwrap().to_string());
                    if acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == kill_after {
                        reached.notify_one();
                    }
                }
                (sent, got, epoch)
            }));
        }
        let killer = {
            let reached = reached.clone();
            async move {
                if kill_after > 0 {
                    reached.notified().await;
                }
            }
        };
        // Killed at its moment, or after the last publish if that comes first.
        let all_sent = async {
            let mut results = Vec::new();
            for p in publishers.iter_mut() {
                results.push(p.await.unwrap());
            }
            results
        };
        tokio::pin!(all_sent);
        let results = tokio::select! {
            () = killer => {
                server.child.kill().unwrap();
                let _ = killed_tx.send(true);
                all_sent.await
            }
            results = &mut all_sent => results,
        };
        if !*killed.borrow_and_update() {
            server.child.kill().unwrap();
        }
        server.child.wait().unwrap();
        let mut round = Round {
            channel,
            ..Round::default()
        };
        for (sent, got, epoch) in results {
            round.sent.extend(sent);
            for (offset, value) in got {
                assert!(
                    round.acked.insert(offset, value).is_none(),
                    "offset {offset} acknowledged twice"
                );
            }
            if epoch.is_some() {
                assert!(
                    round.epoch.is_none() || round.epoch == epoch,
                    "one epoch per round"
                );
                round.epoch = epoch;
            }
        }
        eprintln!(
            "round {r}: killed after {kill_after}, {} acknowledged of {} sent",
            round.acked.len(),
            round.sent.len()
        );
        done.push(round);
        (server, url) = start(&dir.0, &size);
        for (i, round) in done.iter().enumerate() {
            check_round(
                &check,
                &url,
                round,
                &format!("after restart {r}, round {i}"),
            )
            .await;
        }
    }
    drop(server);
}

/// `base64url(channel).epoch.offset`: one channel's cursor.
fn cursor(channel: &str, epoch: &str, offset: u64) -> String {
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(channel);
    format!("{name}.{epoch}.{offset}")
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_next(ws: &mut WsStream) -> Value {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a WebSocket frame")
            .expect("the WebSocket is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] != "pong" {
                return v;
            }
        }
    }
}

async fn ws_subscribe(url: &str, since: &str) -> WsStream {
    use futures_util::SinkExt;
    let ws_url = url.replacen("http://", "ws://", 1) + "/ws";
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let cmd = json!({"type": "subscribe", "channel": "news", "since": since});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        cmd.to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(ws_next(&mut ws).await["type"], "subscribed");
    ws
}

/// An SSE stream's events: (event name, id, data JSON).
struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = http.get(format!("{url}/sse?channel=news"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        let mut sse = SseReader {
            res,
            buf: String::new(),
        };
        assert_eq!(sse.next().await.0, "subscribed");
        sse
    }

    /// The next event with data (id-only blocks are skipped).
    async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = ("message".to_string(), String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    if event != "ping" {
                        return (event, id, data);
                    }
                }
                continue;
            }
            let chunk = tokio::time::timeout(STEP, self.res.chunk())
                .await
                .expect("an SSE chunk")
                .unwrap()
                .expect("the SSE stream is open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// The second test, on the real binary with SIGKILL: a client of
/// each transport that read messages 1–2 before the kill resumes with its
/// cursor on the restarted server (WebSocket `since`, SSE `Last-Event-ID`,
/// long-poll `since`) and gets exactly 3–4, published while it was away,
/// then 5 live: no `reset`, nothing twice.
#[tokio::test]
async fn every_transport_resumes_across_a_sigkill_with_no_reset() {
    let dir = TempDir::new("durable-resume");
    let http = reqwest::Client::new();
    let (mut server, url) = start(&dir.0, &[]);

    let mut ws = ws_subscribe(&url, "earliest").await;
    let mut sse = SseReader::open(&http, &url, None).await;
    let epoch = publish(&http, &url, 1).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&http, &url, 2).await;
    let mut ws_cursor = String::new();
    for offset in 1..=2 {
        let m = ws_next(&mut ws).await;
        assert_eq!(
            (&m["type"], m["offset"].as_u64()),
            (&json!("message"), Some(offset))
        );
        ws_cursor = cursor("news", m["epoch"].as_str().unwrap(), offset);
    }
    let mut sse_id = String::new();
    for offset in 1..=2 {
        let (event, id, data) = sse.next().await;
        assert_eq!(
            (event.as_str(), data["offset"].as_u64()),
            ("message", Some(offset))
        );
        sse_id = id;
    }
    let res = http
        .get(format!(
            "{url}/longpoll?channel=news&since={}",
            cursor("news", &epoch, 0)
        ))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 2, "{body}");
    let lp_cursor = body["cursor"].as_str().unwrap().to_string();

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (_server, url) = start(&dir.0, &[]);
    for n in 3..=4 {
        let p = publish(&http, &url, n).await;
        assert_eq!(
            (p["epoch"].as_str(), p["offset"].as_u64()),
            (Some(epoch.as_str()), Some(n))
        );
    }

    let mut ws = ws_subscribe(&url, &ws_cursor).await;
    let mut sse = SseReader::open(&http, &url, Some(&sse_id)).await;
    let res = http
        .get(format!("{url}/longpoll?channel=news&since={lp_cursor}"))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let missed: Vec<(&str, &str, u64)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap(),
                m["epoch"].as_str().unwrap_or(""),
                m["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        missed,
        [
            ("message", epoch.as_str(), 3),
            ("message", epoch.as_str(), 4)
        ],
        "long-poll"
    );
    let lp_cursor = body["cursor"].as_str().unwrap().to_string();
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http
                .get(format!("{url}/longpoll?channel=news&since={lp_cursor}"))
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()
        }
    });
    for offset in 3..=4 {
        let m = ws_next(&mut ws).await;
        assert_eq!(
            (
                m["type"].as_str(),
                m["epoch"].as_str(),
                m["offset"].as_u64()
            ),
            (Some("message"), Some(epoch.as_str()), Some(offset)),
            "WebSocket: {m}"
        );
        let (event, _, m) = sse.next().await;
        assert_eq!(
            (event.as_str(), m["epoch"].as_str(), m["offset"].as_u64()),
            ("message", Some(epoch.as_str()), Some(offset)),
            "SSE: {m}"
        );
    }
    publish(&http, &url, 5).await;
    assert_eq!(
        ws_next(&mut ws).await["offset"],
        5,
        "WebSocket: live after the catch-up"
    );
    assert_eq!(
        sse.next().await.2["offset"],
        5,
        "SSE: live after the catch-up"
    );
    let live = waiting.await.unwrap();
    let offsets: Vec<u64> = live["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [5], "long-poll: live after the catch-up: {live}");
}

/// The one segment file of a fresh data directory, and where its written
/// records end (the rest is preallocated zeros).
fn only_segment(dir: &Path) -> (PathBuf, usize) {
    let segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    (segments[0].clone(), end)
}

async fn offsets_in_history(http: &reqwest::Client, url: &str) -> Vec<u64> {
    whole_history(http, url, "news")
        .await
        .iter()
        .map(|(_, offset, _)| *offset)
        .collect()
}

/// docs/durability.md's start-up behaviour on a damaged store: a write cut
/// short at the end (what a crash leaves) is dropped with a warning naming
/// the file; damage before what was written last stops the start with an
/// error naming the file and the byte, and what to do about it.
#[tokio::test]
async fn a_torn_tail_is_dropped_with_a_warning_and_damage_stops_the_start() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new("durable-damage");
    let http = reqwest::Client::new();

    let (mut server, url) = start(&dir.0, &[]);
    let epoch = publish(&http, &url, 1).await["epoch"].clone();
    for n in 2..=3 {
        publish(&http, &url, n).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // A crash in the middle of a write: the start of a record, its length
    // and checksum, and part of its body.
    let (segment, end) = only_segment(&dir.0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9], end as u64)
        .unwrap();
    drop(file);
    let restarted = spawn(&dir.0, &[]);
    let warning = restarted.line("dropped the end of a write a crash cut short");
    assert!(
        warning.contains(&segment.display().to_string()) && warning.contains("bytes=11"),
        "{warning}"
    );
    let url = base_url(&restarted);
    assert_eq!(offsets_in_history(&http, &url).await, [1, 2, 3]);
    let p = publish(&http, &url, 4).await;
    assert_eq!((&p["epoch"], p["offset"].as_u64()), (&epoch, Some(4)));

    // Damage with more than one write's worth (4 MiB) after it cannot be a
    // torn write: what follows was acknowledged.
    let big = "x".repeat(60_000);
    for _ in 0..80 {
        publish(&http, &url, big.as_str()).await;
    }
    drop(restarted);
    let (segment, _) = only_segment(&dir.0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(b"!", 20).unwrap(); // inside the first record
    drop(file);
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--data-dir",
        ])
        .arg(&dir.0)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "a damaged store does not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} is damaged at byte 0", segment.display()))
            && stderr.contains("a record whose checksum does not match")
            && stderr.contains("move it away to start without it"),
        "{stderr}"
    );

    // Moved away, as the error says: the server starts without its records,
    // and the channel goes on in a new epoch (clients reset).
    std::fs::rename(&segment, dir.0.join("damaged.seg.bak")).unwrap();
    let (_server, url) = start(&dir.0, &[]);
    let p = publish(&http, &url, 5).await;
    assert_ne!(p["epoch"], epoch);
    assert_eq!(p["offset"], 1);
}
