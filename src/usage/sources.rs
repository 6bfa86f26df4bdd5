//! Where the usage numbers are read: the CPU cgroup's counter or process times, and the
//! network namespace's interface counters. Parsing is pure; reading is at the edges.

use std::fs;
use std::path::PathBuf;

use nix::sys::resource::{UsageWho, getrusage};

use crate::supervise::cgroup::{self, Version, stat_value};

/// Counts CPU time from the start of a try.
#[derive(Debug)]
pub enum CpuCounter {
    /// The container's own cgroup counter, which only this try uses.
    Cgroup {
        version: Version,
        dir: PathBuf,
        start_usec: u64,
    },
    /// The agent's and its task tree's process times.
    Processes,
}

impl CpuCounter {
    /// The cgroup's counter when the agent is alone in its cgroup now (as in a pod's
    /// container, before the task starts); process times otherwise (a shared cgroup, as on
    /// a developer's machine, counts everything else too).
    pub fn start() -> CpuCounter {
        let Some((version, dir)) = cgroup::detect(cgroup::CPU) else {
            return CpuCounter::Processes;
        };
        let alone = fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|text| only_me(&text, std::process::id()));
        match (alone, read_usec(version, &dir)) {
            (true, Some(start_usec)) => CpuCounter::Cgroup {
                version,
                dir,
                start_usec,
            },
            _ => CpuCounter::Processes,
        }
    }

    #[cfg(test)]
    pub fn processes_only() -> CpuCounter {
        CpuCounter::Processes
    }

    pub fn owns_cgroup(&self) -> bool {
        matches!(self, CpuCounter::Cgroup { .. })
    }

    /// CPU seconds since the start and where they come from; `running` is what the task's
    /// still running processes have used (process times only).
    pub fn seconds(&self, running: f64) -> (f64, &'static str) {
        match self {
            CpuCounter::Cgroup {
                version,
                dir,
                start_usec,
            } => match read_usec(*version, dir) {
                Some(now) => (now.saturating_sub(*start_usec) as f64 / 1e6, "cgroup"),
                None => (process_seconds() + running, "processes"),
            },
            CpuCounter::Processes => (process_seconds() + running, "processes"),
        }
    }
}

/// The agent's own CPU time and that of the children it has reaped (whose own reaped
/// children are included in theirs).
fn process_seconds() -> f64 {
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|u| {
            let seconds =
                |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            seconds(u.user_time()) + seconds(u.system_time())
        })
        .sum()
}

fn read_usec(version: Version, dir: &std::path::Path) -> Option<u64> {
    match version {
        Version::V2 => stat_value(
            &fs::read_to_string(dir.join("cpu.stat")).ok()?,
            "usage_usec",
        ),
        Version::V1 => fs::read_to_string(dir.join("cpuacct.usage"))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|nanos| nanos / 1000),
    }
}

/// `cgroup.procs` lists exactly `me`.
fn only_me(procs: &str, me: u32) -> bool {
    let pids: Vec<&str> = procs.split_whitespace().collect();
    pids == [me.to_string().as_str()]
}

/// The network namespace's byte counters at the start.
#[derive(Debug)]
pub struct NetCounters {
    start: (u64, u64),
}

impl NetCounters {
    pub fn start() -> Option<NetCounters> {
        Some(NetCounters { start: read_net()? })
    }

    pub fn since_start(&self) -> Option<super::Network> {
        let (rx, tx) = read_net()?;
        Some(super::Network {
            rx_bytes: rx.saturating_sub(self.start.0),
            tx_bytes: tx.saturating_sub(self.start.1),
        })
    }
}

fn read_net() -> Option<(u64, u64)> {
    parse_net_dev(&fs::read_to_string("/proc/net/dev").ok()?)
}

/// Received and sent bytes over every interface but loopback, from `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    let mut seen = false;
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        if let (Some(rx), Some(tx)) = (fields.first(), fields.get(8)) {
            total.0 += rx;
            total.1 += tx;
            seen = true;
        }
    }
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_sums_every_interface_but_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 9999 10 0 0 0 0 0 0 9999 10 0 0 0 0 0 0\n  eth0: 1000 5 0 0 0 0 0 0 200 3 0 0 0 0 0 0\n  eth1: 24 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), Some((1024, 206)));
        assert_eq!(parse_net_dev("header\nheader\n"), None);
    }

    #[test]
    fn a_cgroup_is_the_agents_alone_only_when_it_lists_just_the_agent() {
        assert!(only_me("42\n", 42));
        assert!(!only_me("42\n43\n", 42));
        assert!(!only_me("", 42));
    }

    #[test]
    fn process_times_grow_with_work() {
        let before = process_seconds();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_seconds() > before);
    }
}
