//! Resident memory and CPU time of a process, read from `/proc` (Linux).

use std::io;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports
/// utime/stime in USER_HZ, which is 100 on every architecture it exports to
/// user space; reading it with sysconf would need a libc call.
const CLK_TCK: f64 = 100.0;

/// One reading of a process's memory and CPU counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// `VmRSS`: resident memory now, in bytes.
    pub rss_bytes: u64,
    /// `VmHWM`: peak resident memory since the process started, in bytes.
    pub hwm_bytes: u64,
    /// User + system CPU time so far, in seconds.
    pub cpu_seconds: f64,
}

/// Reads the counters of process `pid` (`None` = this process).
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}: no {what}"));
    Ok(ProcSample {
        rss_bytes: status_kb(&status, "VmRSS:").ok_or_else(|| bad("VmRSS"))? * 1024,
        hwm_bytes: status_kb(&status, "VmHWM:").ok_or_else(|| bad("VmHWM"))? * 1024,
        cpu_seconds: stat_cpu_seconds(&stat).ok_or_else(|| bad("utime/stime"))?,
    })
}

/// The value of a `Key:   123 kB` line of `/proc/<pid>/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The command
/// name (field 2) is in parentheses and may hold spaces, so fields are
/// counted from the last `)`: state is the first after it, utime the 12th.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLK_TCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kb(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes);
    }
}
