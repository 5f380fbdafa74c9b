//! /proc helpers: PID-namespace translation, process trees, RSS, killing.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Parent pid of `pid`, from /proc/PID/status.
pub fn ppid(pid: u32) -> Option<u32> {
    status_field(pid, "PPid:")?.trim().parse().ok()
}

/// One line's value of /proc/PID/status (text after the key).
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// Resident set size of `pid` in bytes (VmRSS), None once the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let v = status_field(pid, "VmRSS:")?;
    let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// All pids currently in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every live descendant of `root` (not `root` itself), by walking PPid links.
pub fn descendants(root: u32) -> Vec<u32> {
    let pairs: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &pairs {
            if pp == parent && p != root && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Command line of `pid` with NULs turned into spaces.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

/// Host pid of the process that is `ns_pid` inside the PID namespace of `anchor_host_pid`.
pub fn host_pid_in_ns(anchor_host_pid: u32, ns_pid: u32) -> Option<u32> {
    let ns = fs::read_link(format!("/proc/{anchor_host_pid}/ns/pid")).ok()?;
    all_pids().into_iter().find(|&p| {
        let Some(nspid) = status_field(p, "NSpid:") else {
            return false;
        };
        let last = nspid.split_whitespace().last().and_then(|v| v.parse().ok());
        last == Some(ns_pid) && fs::read_link(format!("/proc/{p}/ns/pid")).ok() == Some(ns.clone())
    })
}

/// Live processes that name `needle` in their command line or their mounts (a sandbox's
/// processes bind directories from under a temp dir, so even a bare `sleep` there is found).
pub fn alive_using(needle: &str) -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter(|&p| alive(p))
        .filter_map(|p| {
            let c = cmdline(p);
            let mounts = fs::read_to_string(format!("/proc/{p}/mountinfo")).unwrap_or_default();
            (c.contains(needle) || mounts.contains(needle)).then_some((p, c))
        })
        .collect()
}

/// Whether `pid` still exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match status_field(pid, "State:") {
        Some(s) => !s.starts_with('Z'),
        None => false,
    }
}

/// SIGKILL `pid` (ignoring "no such process").
pub fn kill9(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Wait until `pid` is gone, up to `limit`; true when it is.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

/// Read a pid file (decimal, surrounding whitespace allowed).
pub fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Every process in the PID namespace of `anchor` (host pids).
pub fn pids_in_ns_of(anchor: u32) -> Vec<u32> {
    let Ok(ns) = fs::read_link(format!("/proc/{anchor}/ns/pid")) else {
        return Vec::new();
    };
    all_pids()
        .into_iter()
        .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() == Some(&ns))
        .collect()
}
