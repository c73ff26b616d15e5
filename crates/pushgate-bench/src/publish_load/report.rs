//! What `publish` reports: acknowledged publishes a second, their latency,
//! and the CPU both sides spent, as a table or one JSON object.

use std::fmt;

use serde::Serialize;

use crate::histogram::LatencySummary;
use crate::report::{ratio, ErrorCount};

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// `pushgate`, `plain` (`--pub-url`) or `redis`.
    pub protocol: &'static str,
    /// The URL, URL pattern or Redis address published to.
    pub target: String,
    pub connections: usize,
    pub channels: usize,
    /// Bytes of each payload (the JSON string, quotes included).
    pub payload_bytes: usize,
    pub messages_requested: u64,
    /// Answered with success (2xx, or a Redis value).
    pub acked: u64,
    /// Answered with a failure, or not answered (the connection failed).
    pub errors: u64,
    /// From the first request to the last answer.
    pub secs: f64,
    pub acked_per_sec: f64,
    /// Request sent to answer read, acknowledged publishes only.
    pub latency_us: LatencySummary,
    pub server: Option<CpuUse>,
    pub generator: CpuUse,
    pub generator_threads: usize,
    /// Distinct error messages with how often each happened.
    pub error_samples: Vec<ErrorCount>,
    /// `--timeout` ended the run before every message was sent.
    pub timed_out: bool,
}

/// CPU time of a process over the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    pub pid: u32,
    pub cpu_us: u64,
    pub cpu_us_per_ack: f64,
    /// CPU time / wall time: 1.0 is one core kept busy.
    pub cores: f64,
}

impl CpuUse {
    pub fn new(pid: u32, cpu_us: u64, acked: u64, secs: f64) -> Self {
        CpuUse {
            pid,
            cpu_us,
            cpu_us_per_ack: ratio(cpu_us as f64, acked as f64),
            cores: ratio(cpu_us as f64 / 1e6, secs),
        }
    }
}

impl PublishReport {
    /// JSON or the table, with a trailing newline.
    pub fn render(&self, json: bool) -> String {
        if json {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")) + "\n"
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = |c: &CpuUse| {
            format!(
                "{:.2} s = {:.2} cores, {:.1} us/publish (pid {})",
                c.cpu_us as f64 / 1e6,
                c.cores,
                c.cpu_us_per_ack,
                c.pid
            )
        };
        let l = &self.latency_us;
        let mut rows = vec![
            (
                "run",
                format!(
                    "publish ({}) to {}{}",
                    self.protocol,
                    self.target,
                    if self.timed_out { "  [TIMED OUT]" } else { "" }
                ),
            ),
            (
                "load",
                format!(
                    "{} connection(s), {} channel(s), {} B payload, {} messages",
                    self.connections, self.channels, self.payload_bytes, self.messages_requested
                ),
            ),
            (
                "acknowledged",
                format!(
                    "{} ({} errors) in {:.2} s = {:.0} publishes/s",
                    self.acked, self.errors, self.secs, self.acked_per_sec
                ),
            ),
            (
                "latency (us)",
                format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}  (n={})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
                ),
            ),
        ];
        if let Some(s) = &self.server {
            rows.push(("server cpu", cpu(s)));
        }
        rows.push((
            "generator",
            format!(
                "{}, {} thread(s)",
                cpu(&self.generator),
                self.generator_threads
            ),
        ));
        for e in &self.error_samples {
            rows.push(("error", format!("{} x {}", e.count, e.message)));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            writeln!(f, "{k:<width$}  {v}")?;
        }
        Ok(())
    }
}
