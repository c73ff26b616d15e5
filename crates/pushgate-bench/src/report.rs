//! The result of a run, as a readable table or one JSON object.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::histogram::{HistogramDump, LatencySummary};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub transport: &'static str,
    /// The subscribe URL (pattern) used.
    pub target: String,
    /// Plain mode (another server, matched by payload marker only).
    pub plain: bool,
    pub connections: ConnReport,
    /// With `--ws-deflate`: how far permessage-deflate was actually in use.
    pub ws_deflate: Option<WsDeflateReport>,
    pub fanout: Option<FanoutReport>,
    pub server: Option<ServerReport>,
    pub generator: GeneratorReport,
    /// Distinct error messages with how often each happened.
    pub errors: Vec<ErrorCount>,
    /// `--timeout` cut the run short; numbers cover what happened until then.
    pub timed_out: bool,
    /// Ctrl-C stopped publishing early.
    pub interrupted: bool,
    pub elapsed_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnReport {
    pub requested: u64,
    /// Handshake completed (101 / 200).
    pub established: u64,
    pub subscribed: u64,
    /// Ended before being subscribed.
    pub failed: u64,
    /// Ended after being subscribed.
    pub dropped: u64,
    pub setup_secs: f64,
    pub setup_per_sec: f64,
    pub channels: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WsDeflateReport {
    /// Connections whose handshake completed (each offered the extension).
    pub connections: u64,
    /// Connections whose server accepted permessage-deflate.
    pub negotiated: u64,
    /// Compressed messages received and inflated. Servers may send small
    /// messages uncompressed, so this can be below the messages received.
    pub compressed_messages: u64,
}

impl WsDeflateReport {
    /// The summary row: what was negotiated, and a warning when not everywhere.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "deflate negotiated on {} of {} connections, {} compressed messages received",
            self.negotiated, self.connections, self.compressed_messages
        );
        if self.negotiated < self.connections {
            let _ = write!(
                s,
                "  [WARNING: the server declined permessage-deflate on {} connections]",
                self.connections - self.negotiated
            );
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub messages_requested: u64,
    pub published: u64,
    pub publish_errors: u64,
    pub payload_bytes: u64,
    pub rate_target: f64,
    pub publish_secs: f64,
    pub publish_rate: f64,
    pub subscribers_per_channel: u64,
    pub deliveries_expected: u64,
    /// Every delivery of one of this run's messages, duplicates included.
    pub deliveries_received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub misrouted: u64,
    /// Markers of other runs and other noise that was ignored.
    pub foreign: u64,
    /// First publish to last delivery.
    pub delivery_secs: f64,
    pub deliveries_per_sec: f64,
    pub latency_us: LatencySummary,
    /// The run's id (8 hex digits), shared by the processes of one `--run-id` run.
    pub run_id: String,
    /// Wall clock (Unix ns) of the first publish (in a receive-only run: the
    /// earliest send time among the messages received) and of the last
    /// delivery; 0 when there was none. Several processes' figures combine.
    pub first_publish_unix_ns: u64,
    pub last_delivery_unix_ns: u64,
    /// With `--run-id`: the latency histogram (ns), to merge with the other
    /// processes' before taking quantiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_histogram_ns: Option<HistogramDump>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    pub rss_before: u64,
    /// fanout: once all subscribers were in, before publishing.
    pub rss_subscribed: Option<u64>,
    pub rss_after: u64,
    /// (RSS once subscribed − RSS before) / subscribed connections; may be negative.
    pub per_connection_bytes: f64,
    /// utime + stime of the server at the start, once subscribed (fanout) and at the end.
    pub cpu_before_us: u64,
    pub cpu_subscribed_us: Option<u64>,
    pub cpu_after_us: u64,
    /// What `cpu_us` covers: "setup" (idle: start to end) or "publish"
    /// (fanout: subscribed to end).
    pub cpu_phase: &'static str,
    pub cpu_us: u64,
    pub cpu_us_per_delivery: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratorReport {
    pub threads: usize,
    pub cpu_user_us: u64,
    pub cpu_sys_us: u64,
    /// fanout: generator CPU during publish and delivery, per delivery.
    pub cpu_us_per_delivery: Option<f64>,
    pub max_rss_bytes: u64,
    pub rss_per_connection_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

/// `x / y`, or 0 when `y` is 0, for rates that may have nothing to divide by.
pub fn ratio(x: f64, y: f64) -> f64 {
    if y > 0.0 {
        x / y
    } else {
        0.0
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// JSON or the table, with a trailing newline.
    pub fn render(&self, json: bool) -> String {
        if json {
            self.to_json() + "\n"
        } else {
            self.to_string()
        }
    }
}

fn bytes(n: f64) -> String {
    let a = n.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn secs_us(us: u64) -> String {
    format!("{:.2} s", us as f64 / 1e6)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&str, String)> = Vec::new();
        let c = &self.connections;
        rows.push((
            "run",
            format!(
                "{} over {}{} to {}{}",
                self.mode,
                self.transport,
                if self.plain { " (plain)" } else { "" },
                self.target,
                match (self.timed_out, self.interrupted) {
                    (true, _) => "  [TIMED OUT]",
                    (false, true) => "  [INTERRUPTED]",
                    _ => "",
                }
            ),
        ));
        rows.push((
            "connections",
            format!(
                "{} requested, {} subscribed, {} failed, {} dropped; {} channel(s)",
                c.requested, c.subscribed, c.failed, c.dropped, c.channels
            ),
        ));
        rows.push((
            "setup",
            format!("{:.2} s, {} conn/s", c.setup_secs, count(c.setup_per_sec)),
        ));
        if let Some(d) = &self.ws_deflate {
            rows.push(("ws deflate", d.summary()));
        }
        if let Some(fo) = &self.fanout {
            rows.push((
                "published",
                format!(
                    "{} of {} ({} errors) in {:.2} s = {} msg/s (target {}), payload {} B",
                    fo.published,
                    fo.messages_requested,
                    fo.publish_errors,
                    fo.publish_secs,
                    count(fo.publish_rate),
                    if fo.rate_target > 0.0 {
                        count(fo.rate_target)
                    } else {
                        "max".into()
                    },
                    fo.payload_bytes
                ),
            ));
            rows.push((
                "deliveries",
                format!(
                    "{} expected, {} received, {} missing, {} duplicates, {} out of order, {} misrouted, {} foreign",
                    fo.deliveries_expected,
                    fo.deliveries_received,
                    fo.missing,
                    fo.duplicates,
                    fo.out_of_order,
                    fo.misrouted,
                    fo.foreign
                ),
            ));
            rows.push((
                "throughput",
                format!(
                    "{} deliveries/s (first publish -> last delivery {:.2} s)",
                    count(fo.deliveries_per_sec),
                    fo.delivery_secs
                ),
            ));
            let l = &fo.latency_us;
            rows.push((
                "latency (us)",
                format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}  (n={})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
                ),
            ));
        }
        if let Some(s) = &self.server {
            let mut rss = format!("before {}", bytes(s.rss_before as f64));
            if let Some(sub) = s.rss_subscribed {
                let _ = write!(rss, ", subscribed {}", bytes(sub as f64));
            }
            let _ = write!(
                rss,
                ", after {}; {} per connection",
                bytes(s.rss_after as f64),
                bytes(s.per_connection_bytes)
            );
            rows.push(("server rss", rss));
            let mut cpu = format!("{} during {}", secs_us(s.cpu_us), s.cpu_phase);
            if let Some(per) = s.cpu_us_per_delivery {
                let _ = write!(cpu, ", {per:.3} us/delivery");
            }
            rows.push(("server cpu", cpu));
            rows.push(("server pid", s.pid.to_string()));
        }
        let g = &self.generator;
        let mut gen = format!(
            "cpu {} user + {} sys, max rss {} ({} per connection), {} thread(s)",
            secs_us(g.cpu_user_us),
            secs_us(g.cpu_sys_us),
            bytes(g.max_rss_bytes as f64),
            bytes(g.rss_per_connection_bytes),
            g.threads
        );
        if let Some(per) = g.cpu_us_per_delivery {
            let _ = write!(gen, ", {per:.3} us/delivery");
        }
        rows.push(("generator", gen));
        rows.push(("elapsed", format!("{:.2} s", self.elapsed_secs)));
        for e in &self.errors {
            rows.push(("error", format!("{} x {}", e.count, e.message)));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            writeln!(f, "{k:<width$}  {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(2048.0), "2.0 KiB");
        assert_eq!(bytes(-3.0 * 1024.0 * 1024.0), "-3.0 MiB");
        assert_eq!(count(1_500_000.0), "1.50M");
        assert_eq!(count(25_000.0), "25.0k");
        assert_eq!(count(999.4), "999");
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }

    #[test]
    fn deflate_summary_warns_when_declined() {
        let all = WsDeflateReport {
            connections: 200,
            negotiated: 200,
            compressed_messages: 4000,
        };
        assert_eq!(
            all.summary(),
            "deflate negotiated on 200 of 200 connections, 4000 compressed messages received"
        );
        let none = WsDeflateReport {
            negotiated: 0,
            compressed_messages: 0,
            ..all
        };
        assert!(none
            .summary()
            .ends_with("[WARNING: the server declined permessage-deflate on 200 connections]"));
    }
}
