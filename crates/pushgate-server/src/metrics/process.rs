//! The process's own figures, under the names Prometheus's client libraries
//! use (`process_*`), so that dashboards made for any exporter show them.
//! Read from `/proc` at scrape time: nothing is kept between scrapes.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the process started, for `process_start_time_seconds`: taken when
/// the metrics are made, at server start.
pub fn now_unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends the `process_*` series; those the system cannot give are left out.
pub fn render(out: &mut String, started: f64) {
    let mut one = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "process_start_time_seconds",
        "gauge",
        "When the process started, in seconds since the Unix epoch.",
        started.floor(),
    );
    if let Some(s) = Stat::read() {
        one(
            "process_cpu_seconds_total",
            "counter",
            "CPU time the process used, user and system, in seconds.",
            s.cpu_seconds,
        );
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory (RSS), in bytes.",
            s.rss_bytes,
        );
        one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory, in bytes.",
            s.virtual_bytes,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        one(
            "process_open_fds",
            "gauge",
            "Open file descriptors (each connection holds one).",
            dir.count() as f64,
        );
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        one(
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors (RLIMIT_NOFILE, soft).",
            soft as f64,
        );
    }
}

/// What `/proc/self/stat` says.
struct Stat {
    cpu_seconds: f64,
    rss_bytes: f64,
    virtual_bytes: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()? as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()? as f64;
        Stat::parse(&text, ticks, page)
    }

    /// Fields after the command name (which may hold spaces and brackets,
    /// so it is skipped up to its last `)`): utime and stime are the 14th
    /// and 15th fields of the line, vsize and rss the 23rd and 24th.
    fn parse(text: &str, ticks: f64, page: f64) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at the 3rd field (state).
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some(Stat {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            virtual_bytes: field(23)?,
            rss_bytes: field(24)? * page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a bracket, as a process may set.
        let line = "4242 (push gate)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100 123456789 1000 18446744073709551615";
        let s = Stat::parse(line, 100.0, 4096.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.virtual_bytes, 123_456_789.0);
        assert_eq!(s.rss_bytes, 4_096_000.0);
    }

    #[test]
    fn this_process_has_figures() {
        let mut out = String::new();
        render(&mut out, 1.0);
        for name in [
            "process_start_time_seconds 1",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(out.contains(name), "{name} in {out}");
        }
    }
}
