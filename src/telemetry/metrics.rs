//! The task's metrics, taken from its final record: one set of data points per task, each
//! carrying the tenant, so a dashboard can sum CPU-seconds and GiB-seconds per tenant.
//! Semantic-convention names where one exists (`process.cpu.time`), `task_agent.*`
//! otherwise. Reading the record is pure; [`record`] hands the values to the SDK.

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::report::Record;

/// Bucket bounds, in seconds, for task and phase durations: from a quick fetch to a day.
const DURATION_BOUNDS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
    86400.0,
];

/// What one task used and how it ended, as the metrics report it.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub status: &'static str,
    /// The error kind when the task did not succeed (`error.type`).
    pub error_type: Option<String>,
    pub task_seconds: f64,
    pub phases: Vec<(String, f64)>,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub peak_memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Peak memory × the time the command ran: what the task held, at most.
    pub peak_byte_seconds: f64,
    /// Soft limit × the time the command ran: what the task had reserved.
    pub limit_byte_seconds: Option<f64>,
    /// The snapshot's archive size and how the cache served it.
    pub snapshot: Option<(u64, &'static str)>,
    /// Bytes and files moved by the inputs and outputs phases: (direction, bytes, files).
    pub transfers: Vec<(&'static str, u64, u64)>,
}

impl Usage {
    pub fn from_record(record: &Record) -> Usage {
        let seconds = |millis: u64| millis as f64 / 1000.0;
        let phase = |name: &str| record.durations_ms.get(name).copied().map(seconds);
        let ran = phase("process").unwrap_or(0.0);
        let resources = &record.resources;
        Usage {
            status: record.status.as_str(),
            error_type: record.error.as_ref().map(|e| e.kind.clone()),
            task_seconds: phase("total").unwrap_or(0.0),
            phases: record
                .durations_ms
                .iter()
                .filter(|(name, _)| name.as_str() != "total")
                .map(|(name, millis)| (name.clone(), seconds(*millis)))
                .collect(),
            cpu_user_seconds: seconds(resources.cpu_user_ms),
            cpu_system_seconds: seconds(resources.cpu_system_ms),
            peak_memory_bytes: resources.peak_memory_bytes,
            memory_limit_bytes: resources.memory_limit_bytes,
            peak_byte_seconds: resources.peak_memory_bytes as f64 * ran,
            limit_byte_seconds: resources.memory_limit_bytes.map(|limit| limit as f64 * ran),
            snapshot: record
                .snapshot
                .as_ref()
                .map(|s| (s.bytes, s.cache.as_str())),
            transfers: [("input", &record.inputs), ("output", &record.outputs)]
                .into_iter()
                .filter_map(|(direction, list)| {
                    list.as_ref().map(|list| {
                        (
                            direction,
                            list.iter().map(|a| a.bytes).sum(),
                            list.iter().map(|a| a.files).sum(),
                        )
                    })
                })
                .collect(),
        }
    }
}

/// The try's usage so far, which the periodic exports read: refreshed about once a second
/// while the command runs and once more at the end.
#[derive(Debug, Clone, Default)]
pub struct UsageFeed(std::sync::Arc<std::sync::Mutex<Option<crate::usage::Usage>>>);

impl UsageFeed {
    pub fn set(&self, usage: &crate::usage::Usage) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(usage.clone());
        }
    }

    fn read(&self, pick: impl Fn(&crate::usage::Usage) -> f64) -> Option<f64> {
        self.0.lock().ok().and_then(|slot| slot.as_ref().map(pick))
    }
}

/// Observable counters of the try's CPU and memory so far, exported at every periodic
/// collection, so a try killed outright has still reported what it used until then.
pub fn observe_usage(meter: &Meter, feed: &UsageFeed, base: &[KeyValue]) {
    let observed = [
        (
            "task_agent.usage.cpu_time",
            "s",
            "CPU time of the try so far, user + system",
            (|u: &crate::usage::Usage| u.cpu_seconds) as fn(&crate::usage::Usage) -> f64,
        ),
        (
            "task_agent.usage.memory_time",
            "GiBy.s",
            "Resident memory of the task integrated over time, so far",
            |u: &crate::usage::Usage| u.memory_gib_seconds,
        ),
    ];
    for (name, unit, description, pick) in observed {
        let feed = feed.clone();
        let attributes = base.to_vec();
        meter
            .f64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                if let Some(value) = feed.read(pick) {
                    observer.observe(value, &attributes);
                }
            })
            .build();
    }
}

/// Records `usage` with `meter`; `base` (the tenant) goes on every data point.
pub fn record(meter: &Meter, usage: &Usage, base: &[KeyValue]) {
    let with =
        |extra: &[KeyValue]| -> Vec<KeyValue> { base.iter().chain(extra).cloned().collect() };
    let status = KeyValue::new("task_agent.status", usage.status);

    let mut outcome = vec![status.clone()];
    if let Some(kind) = &usage.error_type {
        outcome.push(KeyValue::new("error.type", kind.clone()));
    }
    meter
        .u64_counter("task_agent.tasks")
        .with_unit("{task}")
        .with_description("Tasks ended, by status")
        .build()
        .add(1, &with(&outcome));
    meter
        .f64_histogram("task_agent.task.duration")
        .with_unit("s")
        .with_description("Time from the agent's start to the task's end")
        .with_boundaries(DURATION_BOUNDS.to_vec())
        .build()
        .record(usage.task_seconds, &with(&[status]));
    let phases = meter
        .f64_histogram("task_agent.phase.duration")
        .with_unit("s")
        .with_description("Time spent in each phase of the task")
        .with_boundaries(DURATION_BOUNDS.to_vec())
        .build();
    for (phase, seconds) in &usage.phases {
        phases.record(
            *seconds,
            &with(&[KeyValue::new("task_agent.phase", phase.clone())]),
        );
    }

    let cpu = meter
        .f64_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time of the command's processes")
        .build();
    cpu.add(
        usage.cpu_user_seconds,
        &with(&[KeyValue::new("cpu.mode", "user")]),
    );
    cpu.add(
        usage.cpu_system_seconds,
        &with(&[KeyValue::new("cpu.mode", "system")]),
    );

    meter
        .u64_gauge("task_agent.memory.peak")
        .with_unit("By")
        .with_description("Peak summed RSS of the command's processes")
        .build()
        .record(usage.peak_memory_bytes, base);
    meter
        .f64_counter("task_agent.memory.peak_byte_seconds")
        .with_unit("By.s")
        .with_description("Peak memory multiplied by the time the command ran")
        .build()
        .add(usage.peak_byte_seconds, base);
    if let (Some(limit), Some(byte_seconds)) = (usage.memory_limit_bytes, usage.limit_byte_seconds)
    {
        meter
            .u64_gauge("task_agent.memory.limit")
            .with_unit("By")
            .with_description("The soft memory limit the command ran under")
            .build()
            .record(limit, base);
        meter
            .f64_counter("task_agent.memory.limit_byte_seconds")
            .with_unit("By.s")
            .with_description("Soft memory limit multiplied by the time the command ran")
            .build()
            .add(byte_seconds, base);
    }

    if let Some((bytes, cache)) = usage.snapshot {
        let cache = [KeyValue::new("task_agent.snapshot.cache", cache)];
        meter
            .u64_counter("task_agent.snapshot.size")
            .with_unit("By")
            .with_description("Size of the snapshot archives used, by cache use")
            .build()
            .add(bytes, &with(&cache));
        meter
            .u64_counter("task_agent.snapshot.fetches")
            .with_unit("{snapshot}")
            .with_description("Snapshots unpacked, by cache use (hit, miss, off)")
            .build()
            .add(1, &with(&cache));
    }

    for (direction, bytes, files) in &usage.transfers {
        let direction = [KeyValue::new("task_agent.transfer.direction", *direction)];
        meter
            .u64_counter("task_agent.transfer.size")
            .with_unit("By")
            .with_description("Bytes of declared inputs fetched and outputs published")
            .build()
            .add(*bytes, &with(&direction));
        meter
            .u64_counter("task_agent.transfer.files")
            .with_unit("{file}")
            .with_description("Files of declared inputs fetched and outputs published")
            .build()
            .add(*files, &with(&direction));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::TaskIdentity;
    use crate::report::{ErrorInfo, Status};
    use crate::snapshot::{CacheUse, Report};

    #[test]
    fn usage_comes_from_the_final_record() {
        let mut record =
            Record::provisional("2026-11-26T13:00:00.000Z".into(), TaskIdentity::default());
        record.status = Status::OomKilled;
        record.error = Some(ErrorInfo {
            kind: "memory_limit".into(),
            message: "over".into(),
        });
        for (phase, millis) in [
            ("prepare", 2),
            ("snapshot", 1500),
            ("process", 4000),
            ("total", 5600),
        ] {
            record.durations_ms.insert(phase.into(), millis);
        }
        record.resources.peak_memory_bytes = 1 << 30;
        record.resources.memory_limit_bytes = Some(2 << 30);
        record.resources.cpu_user_ms = 3250;
        record.resources.cpu_system_ms = 500;
        record.snapshot = Some(Report {
            source: "file:///s.tar.gz".into(),
            sha256: "0".repeat(64),
            bytes: 4096,
            files: 3,
            cache: CacheUse::Hit,
        });

        let usage = Usage::from_record(&record);
        assert_eq!(usage.status, "oom_killed");
        assert_eq!(usage.error_type.as_deref(), Some("memory_limit"));
        assert_eq!(usage.task_seconds, 5.6);
        assert_eq!(
            usage.phases,
            vec![
                ("prepare".to_string(), 0.002),
                ("process".to_string(), 4.0),
                ("snapshot".to_string(), 1.5)
            ]
        );
        assert_eq!(usage.cpu_user_seconds, 3.25);
        assert_eq!(usage.cpu_system_seconds, 0.5);
        // 1 GiB held for the 4 s the command ran; 2 GiB reserved for as long.
        assert_eq!(usage.peak_byte_seconds, 4.0 * (1u64 << 30) as f64);
        assert_eq!(usage.limit_byte_seconds, Some(8.0 * (1u64 << 30) as f64));
        assert_eq!(usage.snapshot, Some((4096, "hit")));
    }

    #[test]
    fn a_task_that_never_ran_used_no_memory_time() {
        let mut record =
            Record::provisional("2026-11-26T13:00:00.000Z".into(), TaskIdentity::default());
        record.status = Status::AgentError;
        record.resources.memory_limit_bytes = Some(1 << 30);
        record.durations_ms.insert("total".into(), 10);
        let usage = Usage::from_record(&record);
        assert_eq!(usage.peak_byte_seconds, 0.0);
        assert_eq!(usage.limit_byte_seconds, Some(0.0));
        assert_eq!(usage.snapshot, None);
        assert!(usage.phases.is_empty());
    }
}
