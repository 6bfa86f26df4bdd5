//! What a try used, measured by the agent from its start to its end: CPU seconds, memory
//! GiB-seconds and peak, the pod's requests and limits, bytes moved, network bytes. Others
//! estimate this from scrapes every minute or more; the agent sees every process of every
//! try, short ones included.
//!
//! - CPU: the container cgroup's own counter when the agent's cgroup holds only the agent
//!   at start (a pod's container: everything the task and the agent burn, forks included),
//!   else the agent's own and its task tree's process times (`getrusage` of the agent and of
//!   its reaped children, plus `/proc` for those still running).
//! - Memory: the integral of the sampled resident memory of the task tree over time.
//! - Network: the bytes counted by the network namespace's interfaces (a pod's own; on a
//!   shared host they count everything, so they are left out there).

pub mod sources;

use std::time::Instant;

use serde::Serialize;

use crate::supervise::procfs::ProcStat;
use sources::{CpuCounter, NetCounters};

/// The pod's resources as the operator requested them; any may be unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub cpu_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What the record's `usage` says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// `cgroup` or `processes`: where `cpu_seconds` comes from.
    pub cpu_source: &'static str,
    pub memory_gib_seconds: f64,
    pub peak_memory_bytes: u64,
    pub wall_seconds: f64,
    pub requests: Resources,
    pub limits: Resources,
    /// Bytes moved by the snapshot, inputs and outputs phases.
    pub bytes: Moved,
    /// The network namespace's bytes, when it is the pod's own.
    pub network: Option<Network>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Moved {
    pub snapshot: u64,
    pub inputs: u64,
    pub outputs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Measures one try; fed by the supervisor's memory samples.
pub struct Meter {
    started: Instant,
    cpu: CpuCounter,
    network: Option<NetCounters>,
    requests: Resources,
    limits: Resources,
    byte_seconds: f64,
    last_sample: Option<(Instant, u64)>,
    /// CPU ticks of the task's processes still running at the last sample.
    live_ticks: u64,
    ticks_per_second: u64,
    peak: u64,
}

impl Meter {
    /// Starts measuring now. Call it before the task's first process exists.
    pub fn start(requests: Resources, limits: Resources) -> Meter {
        let cpu = CpuCounter::start();
        let network = cpu.owns_cgroup().then(NetCounters::start).flatten();
        Meter {
            started: Instant::now(),
            cpu,
            network,
            requests,
            limits,
            byte_seconds: 0.0,
            last_sample: None,
            live_ticks: 0,
            ticks_per_second: crate::supervise::procfs::clock_ticks(),
            peak: 0,
        }
    }

    /// One sample of the task tree: its processes and their summed resident memory.
    pub fn sample(&mut self, processes: &[ProcStat], resident: u64, now: Instant) {
        // The trapezoid rule between samples; the first counts from the process start.
        let (since, before) = self.last_sample.unwrap_or((now, resident));
        let seconds = now.saturating_duration_since(since).as_secs_f64();
        self.byte_seconds += seconds * (before + resident) as f64 / 2.0;
        self.last_sample = Some((now, resident));
        self.live_ticks = processes.iter().map(|p| p.cpu_ticks).sum();
        self.peak = self.peak.max(resident);
    }

    /// The task tree has ended: no process is left running.
    pub fn ended(&mut self, now: Instant) {
        if let Some((since, before)) = self.last_sample {
            let seconds = now.saturating_duration_since(since).as_secs_f64();
            self.byte_seconds += seconds * before as f64 / 2.0;
            self.last_sample = Some((now, 0));
        }
        self.live_ticks = 0;
    }

    /// Usage so far (while the task runs) or in all (once it has ended).
    pub fn usage(&self, peak_memory_bytes: u64, bytes: Moved) -> Usage {
        let running = self.live_ticks as f64 / self.ticks_per_second as f64;
        let (cpu_seconds, cpu_source) = self.cpu.seconds(running);
        Usage {
            cpu_seconds: round(cpu_seconds, 3),
            cpu_source,
            memory_gib_seconds: round(self.byte_seconds / f64::from(1u32 << 30), 6),
            peak_memory_bytes: peak_memory_bytes.max(self.peak),
            wall_seconds: round(self.started.elapsed().as_secs_f64(), 3),
            requests: self.requests,
            limits: self.limits,
            bytes,
            network: self.network.as_ref().and_then(NetCounters::since_start),
        }
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meter() -> Meter {
        Meter {
            started: Instant::now(),
            cpu: CpuCounter::processes_only(),
            network: None,
            requests: Resources::default(),
            limits: Resources::default(),
            byte_seconds: 0.0,
            last_sample: None,
            live_ticks: 0,
            ticks_per_second: 100,
            peak: 0,
        }
    }

    #[test]
    fn memory_is_integrated_over_time_by_trapezoids() {
        let mut meter = meter();
        let t0 = Instant::now();
        let gib = 1u64 << 30;
        meter.sample(&[], gib, t0);
        meter.sample(&[], gib, t0 + Duration::from_secs(2));
        meter.sample(&[], 3 * gib, t0 + Duration::from_secs(4));
        meter.ended(t0 + Duration::from_secs(5));
        // 2 s at 1 GiB, 2 s ramping 1 → 3 GiB (4 GiB·s), then 1 s falling 3 → 0 (1.5).
        let usage = meter.usage(0, Moved::default());
        assert!((usage.memory_gib_seconds - 7.5).abs() < 1e-9, "{usage:?}");
        assert_eq!(usage.peak_memory_bytes, 3 * gib);
    }

    #[test]
    fn running_processes_count_until_they_end() {
        let mut meter = meter();
        let busy = ProcStat {
            pid: 2,
            ppid: 1,
            pgrp: 2,
            zombie: false,
            rss_pages: 0,
            cpu_ticks: 250,
        };
        meter.sample(&[busy], 0, Instant::now());
        let during = meter.usage(0, Moved::default());
        assert!(during.cpu_seconds >= 2.5, "{during:?}");
        assert_eq!(during.cpu_source, "processes");
    }
}
