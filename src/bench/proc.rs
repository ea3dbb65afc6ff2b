//! The gateway process as /proc sees it: resident memory and CPU time.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss_bytes: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

/// Reads /proc/PID/status (VmRSS) and /proc/PID/stat (utime, stime).
///
/// # Errors
/// The process is gone or /proc is unreadable.
pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let total = ticks(11) + ticks(12);
    Ok(Sample { rss_bytes: rss_kb * 1024, cpu: Duration::from_micros(total * 1_000_000 / hz) })
}

/// CPU time the process used between two samples.
pub fn cpu_between(before: Sample, after: Sample) -> Duration {
    after.cpu.saturating_sub(before.cpu)
}

/// Several processes (the nodes of a cluster) as one: RSS and CPU summed.
pub fn total(samples: &[Sample]) -> Option<Sample> {
    (!samples.is_empty()).then(|| Sample {
        rss_bytes: samples.iter().map(|s| s.rss_bytes).sum(),
        cpu: samples.iter().map(|s| s.cpu).sum(),
    })
}
