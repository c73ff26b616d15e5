//! Process numbers: the server's RSS and CPU time from `/proc/PID`, the
//! generator's own usage, and the file-descriptor limit.

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho, RLIM_INFINITY};
use nix::unistd::{sysconf, SysconfVar};
use serde::Serialize;

use crate::error::{BenchError, ErrorKind};

/// One reading of another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime. `/proc` counts in clock ticks (10 ms on usual kernels),
    /// so only differences over seconds are meaningful.
    pub cpu_us: u64,
}

pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| {
            BenchError::new(
                ErrorKind::Proc,
                format!("cannot read /proc/{pid}/{file} (is --server-pid right?): {e}"),
            )
        })
    };
    let status = read("status")?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("zombie"))
    {
        return Err(BenchError::new(
            ErrorKind::Proc,
            format!("server process {pid} has exited"),
        ));
    }
    let stat = read("stat")?;
    let rss_bytes = parse_vm_rss(&status).ok_or_else(|| {
        BenchError::new(ErrorKind::Proc, format!("no VmRSS in /proc/{pid}/status"))
    })?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| {
        BenchError::new(ErrorKind::Proc, format!("cannot parse /proc/{pid}/stat"))
    })?;
    Ok(ProcSample {
        rss_bytes,
        cpu_us: ticks * 1_000_000 / clock_ticks_per_second(),
    })
}

/// `VmRSS:   1234 kB` → bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_kb(status, "VmRSS:")
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        // USER_HZ is 100 on every mainstream Linux architecture.
        _ => 100,
    }
}

/// The generator's own resource usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SelfUsage {
    pub user_us: u64,
    pub sys_us: u64,
    pub max_rss_bytes: u64,
}

impl SelfUsage {
    pub fn now() -> SelfUsage {
        let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
            return SelfUsage::default();
        };
        let us = |t: nix::sys::time::TimeVal| {
            (t.tv_sec().max(0) as u64) * 1_000_000 + t.tv_usec().max(0) as u64
        };
        SelfUsage {
            user_us: us(u.user_time()),
            sys_us: us(u.system_time()),
            // Linux reports ru_maxrss in KiB.
            max_rss_bytes: u.max_rss().max(0) as u64 * 1024,
        }
    }

    pub fn cpu_us(&self) -> u64 {
        self.user_us + self.sys_us
    }
}

/// The generator's current RSS.
pub fn self_rss_bytes() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks that `needed`
/// descriptors fit. Returns the limit now in force.
pub fn raise_nofile(needed: u64) -> Result<u64, BenchError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| BenchError::new(ErrorKind::FdLimit, format!("getrlimit: {e}")))?;
    // An unlimited hard limit cannot be the soft NOFILE limit (the kernel caps it
    // at fs.nr_open), so ask only for what we need then.
    let want = if hard == RLIM_INFINITY {
        soft.max(needed)
    } else {
        hard
    };
    if want > soft {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(|e| {
            BenchError::new(
                ErrorKind::FdLimit,
                format!("cannot raise the open-file limit from {soft} to {want}: {e}"),
            )
        })?;
    }
    let limit = want.max(soft);
    if needed > limit {
        return Err(BenchError::new(
            ErrorKind::FdLimit,
            format!(
                "this run needs about {needed} file descriptors but RLIMIT_NOFILE allows {limit} \
                 per process (hard limit {hard}, which an unprivileged process cannot raise); \
                 lower --connections, or run several generator processes side by side"
            ),
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tpushgate\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);

        let stat = "1234 (push gate) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 50";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1234 (x) S 1 2"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(self_rss_bytes().unwrap() > 0);
        let usage = SelfUsage::now();
        assert!(usage.max_rss_bytes > 0);
        let missing = sample(u32::MAX).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Proc);
    }
}
