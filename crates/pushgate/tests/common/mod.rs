//! The real binary as the tests run it: `pushgate serve` on an ephemeral
//! port of a loopback address, its log lines read as they come, ended by
//! its PID.

// Each test file uses what it needs of this.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for one thing to happen.
pub const STEP: Duration = Duration::from_secs(20);

/// A server process; killed (by its PID) when dropped.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `pushgate serve --listen 127.0.0.1:0 --no-demo ARGS`.
    pub fn serve<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Proc {
        Proc::serve_on("127.0.0.1", args)
    }

    /// Starts `pushgate serve --listen IP:0 --no-demo ARGS` (`--listen`
    /// may be given once only: ARGS must not repeat it).
    pub fn serve_on<S: AsRef<OsStr>>(ip: &str, args: impl IntoIterator<Item = S>) -> Proc {
        let listen = format!("{ip}:0");
        let first = ["--listen", &listen, "--no-demo"].map(OsStr::new);
        Proc::start(
            first
                .into_iter()
                .map(OsStr::to_owned)
                .chain(args.into_iter().map(|a| a.as_ref().to_owned())),
        )
    }

    /// Starts `pushgate serve ARGS`, nothing added.
    pub fn start<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .arg("serve")
            .args(args)
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

    /// Waits for a log line containing `want`; returns it.
    pub fn line(&self, want: &str) -> String {
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

    /// Waits for a log line containing `want`; returns every line up to
    /// and including it.
    pub fn lines_until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no log line with {want:?} in {seen:?}"));
            let found = line.contains(want);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }

    /// Waits for the listening line: the server's address.
    pub fn addr(&self) -> SocketAddr {
        let line = self.line("pushgate listening");
        line.split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Waits for the listening line: the server's port.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The log lines that came since the last look, without waiting.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Sends the signal named `name` (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET {base}/metrics`: the Prometheus text (asserting a 200).
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    let res = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// A fresh directory for this test process, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pushgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
