//! `--data-dir`, on the real binary: a server killed with SIGKILL and
//! started again on the same directory answers a cursor from before in the
//! same epoch — exactly the messages after it, no `reset` — and a second
//! server on a directory in use is refused.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

const STEP: Duration = Duration::from_secs(20);

/// The server process; killed (by its PID) when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn line(&self, want: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no log line with {want:?}"));
            if line.contains(want) {
                return line;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc { child, lines }
}

fn start(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let proc = spawn(dir, extra);
    let line = proc.line("pushgate listening");
    let port: u16 = line
        .split("addr=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (proc, format!("http://127.0.0.1:{port}"))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn publish(http: &reqwest::Client, url: &str, n: u64) -> Value {
    let res = http
        .post(format!("{url}/api/publish"))
        .json(&json!({"channel": "news", "data": n}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_server_killed_with_sigkill_resumes_every_cursor_in_the_same_epoch() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("pushgate-durable-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let http = reqwest::Client::new();

    let (mut first, url) = start(&dir.0, &[]);
    let mut acked = Vec::new();
    for n in 1..=5 {
        acked.push(publish(&http, &url, n).await);
    }
    let epoch = acked[0]["epoch"].as_str().unwrap().to_string();
    assert!(acked.iter().all(|a| a["epoch"] == epoch.as_str()));

    // A second server on the same directory is refused, and says why.
    let second = spawn(&dir.0, &[]);
    second.line("is in use by another pushgate");

    first.child.kill().unwrap(); // SIGKILL: no shutdown, no final sync
    first.child.wait().unwrap();

    let (_again, url) = start(&dir.0, &[]);
    let channel = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("news");
    let res = http
        .get(format!("{url}/poll?channel=news&since={channel}.{epoch}.2"))
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
    let dir = TempDir(
        std::env::temp_dir().join(format!("pushgate-durable-interval-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let http = reqwest::Client::new();
    let interval = ["--sync", "interval"];

    let (mut first, url) = start(&dir.0, &interval);
    let epoch = publish(&http, &url, 1).await["epoch"].clone();
    // SIGTERM: a graceful stop syncs and marks the store clean.
    let term = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
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
    let line = third.line("pushgate listening");
    let port: u16 = line
        .split("addr=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let p = publish(&http, &format!("http://127.0.0.1:{port}"), 3).await;
    assert_ne!(p["epoch"], epoch);
    // 2 survived if the committer wrote it before the kill (the kernel keeps
    // what was written; only a sync makes it survive a power cut), not
    // otherwise: either way offsets go on, in the new epoch.
    let offset = p["offset"].as_u64().unwrap();
    assert!(offset == 2 || offset == 3, "{p}");
}
