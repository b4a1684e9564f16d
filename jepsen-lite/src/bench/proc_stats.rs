//! Per-replica resource use read from `/proc`: CPU seconds (utime + stime) and peak RSS
//! (VmHWM). Parsing is pure; the readers around it are thin.

use std::collections::BTreeMap;

/// From the text of `/proc/PID/stat`: (parent pid, utime + stime in clock ticks).
///
/// The command name (field 2) is in parentheses and may hold spaces or parentheses, so
/// the fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3), ppid (4), ..., utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// From the text of `/proc/PID/status`: VmHWM (the peak resident set) in bytes.
pub(crate) fn parse_vm_hwm(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds (user + system) `pid` has used so far; `None` when it is gone.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, ticks) = parse_stat(&text)?;
    Some(ticks as f64 / clock_ticks_per_sec())
}

/// Peak resident set of `pid` since it started, in bytes; `None` when it is gone.
pub(crate) fn peak_rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Each slot's peak RSS in bytes, in `slots` order (0 for a replica not found).
pub(crate) fn peak_rss_of(pids: &BTreeMap<usize, u32>, slots: &[usize]) -> Vec<u64> {
    slots
        .iter()
        .map(|s| pids.get(s).and_then(|p| peak_rss_bytes(*p)).unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (etcd (x) y) S 77 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 12 0";
        assert_eq!(parse_stat(text), Some((77, 281)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let text = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(text), Some(51200 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }
}
