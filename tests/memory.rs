//! The memory watch, end to end: a real child that allocates past `--memory-limit` is
//! stopped and reported as `oom_killed`; one that stays under it is left alone; one that
//! ignores SIGTERM is killed after the short memory grace.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::Task;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Runs `task-agent run OPTIONS -- python3 -c SCRIPT` (no shell in between, so the agent's
/// signals reach Python itself) and returns the output and how long it took.
fn run_python(task: &Task, options: &[&str], script: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = task
        .command()
        .args(options)
        .args(["--", "python3", "-c", script])
        .output()
        .expect("task-agent runs");
    (output, started.elapsed())
}

/// Allocates and touches 20 MiB chunks up to 1 GiB over about 4 s, then idles: without the
/// memory watch it would end `succeeded`, and even a child the agent stops only with the
/// SIGKILL (2 s after crossing 100 MiB) never gets near the end.
const HOG: &str = r#"
import sys, time
chunks = []
for i in range(50):
    chunks.append(b"\x01" * (20 << 20))
    time.sleep(0.08)
print("allocated 1 GiB and was not stopped", flush=True)
time.sleep(2)
"#;

/// The agent exited with `code`; its stderr and the record explain it if not.
#[track_caller]
fn assert_exit_code_with_record(output: &Output, record: &Value, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}\nrecord: {record:#}",
        common::stderr(output)
    );
}

fn peak(record: &Value) -> u64 {
    record["resources"]["peak_memory_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak_memory_bytes in {record:#}"))
}

#[test]
fn a_child_over_the_memory_limit_is_stopped_as_oom_killed() {
    let task = Task::new();
    let (output, took) = run_python(&task, &["--memory-limit", "100Mi"], HOG);
    let record = task.record();
    assert_exit_code_with_record(&output, &record, 137);
    assert!(
        !common::stdout(&output).contains("was not stopped"),
        "the child reached 1 GiB: {record:#}"
    );
    assert_eq!(record["status"], "oom_killed", "{record:#}");
    assert_eq!(record["exit_code"], 137);
    assert_eq!(record["error"]["kind"], "memory_limit", "{record:#}");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100.0 MiB"),
        "the message should name the limit: {record:#}"
    );
    assert_eq!(record["retryable"], false);
    assert_eq!(record["resources"]["memory_limit_bytes"], 100 * MIB);
    assert!(
        peak(&record) >= 100 * MIB,
        "peak {} is below the 100 MiB limit that was crossed: {record:#}",
        peak(&record)
    );
    // Stopped within the 2 s memory grace at the latest: far sooner than the hog's own
    // allocate-then-idle time of about 6 s.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn a_child_under_the_memory_limit_is_left_alone() {
    let task = Task::new();
    let (output, _) = run_python(
        &task,
        &["--memory-limit", "200Mi"],
        r#"
import time
data = b"\x01" * (20 << 20)
time.sleep(0.5)
print("done", len(data), flush=True)
"#,
    );
    let record = task.record();
    assert_exit_code_with_record(&output, &record, 0);
    assert_eq!(common::stdout(&output), format!("done {}\n", 20 * MIB));
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["child_exit_code"], 0);
    assert_eq!(record["signal"], Value::Null);
    assert_eq!(record["error"], Value::Null);
    assert_eq!(record["resources"]["memory_limit_bytes"], 200 * MIB);
    let peak = peak(&record);
    assert!(
        peak > 20 * MIB,
        "peak {peak} does not show the 20 MiB the child held: {record:#}"
    );
    assert!(peak < 200 * MIB, "peak {peak} is implausible: {record:#}");
}

#[test]
fn the_peak_is_recorded_without_a_limit_too() {
    let task = Task::new();
    let (output, _) = run_python(
        &task,
        &[],
        "import time; data = b'x' * (30 << 20); time.sleep(0.3)",
    );
    let record = task.record();
    assert_eq!(output.status.code(), Some(0), "{record:#}");
    assert_eq!(record["status"], "succeeded");
    // Memory is watched (and the peak kept) even with no limit to enforce.
    assert!(peak(&record) > 30 * MIB, "{record:#}");
}

#[test]
fn the_limit_applies_to_the_whole_process_tree() {
    // Four processes of ~40 MiB each: none crosses 100 MiB alone, together they do.
    let task = Task::new();
    let started = Instant::now();
    let output = task.run_sh(
        &["--memory-limit", "100Mi"],
        r#"
for i in 1 2 3 4; do
    python3 -c 'import time; data = b"\x01" * (40 << 20); time.sleep(6)' &
done
wait
echo "the tree was not stopped"
"#,
    );
    let took = started.elapsed();
    let record = task.record();
    assert_eq!(output.status.code(), Some(137), "{record:#}");
    assert_eq!(record["status"], "oom_killed", "{record:#}");
    assert_eq!(record["error"]["kind"], "memory_limit");
    assert!(!common::stdout(&output).contains("not stopped"));
    assert!(peak(&record) >= 100 * MIB, "{record:#}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn a_hog_stopped_for_memory_gets_sigterm_first_and_dies_of_it() {
    // Python's default SIGTERM action ends it at once, long before the 2 s memory grace; only
    // a child that never saw the SIGTERM would be left to the SIGKILL.
    let task = Task::new();
    let (output, took) = run_python(&task, &["--memory-limit", "100Mi"], HOG);
    let record = task.record();
    assert_eq!(output.status.code(), Some(137), "{record:#}");
    assert_eq!(record["status"], "oom_killed", "{record:#}");
    assert_eq!(
        record["signal"], "SIGTERM",
        "the child should have died of the SIGTERM: {record:#}"
    );
    assert!(
        took < Duration::from_millis(1900),
        "took {took:?}: the child outlived the SIGTERM"
    );
}

#[test]
fn a_memory_hog_that_ignores_sigterm_is_killed_after_the_short_grace() {
    let task = Task::new();
    let script = format!(
        r#"
import signal, sys
def ignore(signum, frame):
    sys.stderr.write("ignoring SIGTERM\n")
    sys.stderr.flush()
signal.signal(signal.SIGTERM, ignore)
{HOG}
"#
    );
    // A long --grace must not delay the kill: memory keeps growing while a task shuts down.
    let (output, took) = run_python(
        &task,
        &["--memory-limit", "100Mi", "--grace", "60s"],
        &script,
    );
    let record = task.record();
    assert_exit_code_with_record(&output, &record, 137);
    assert_eq!(record["status"], "oom_killed", "{record:#}");
    assert_eq!(record["error"]["kind"], "memory_limit", "{record:#}");
    assert_eq!(record["signal"], "SIGKILL", "{record:#}");
    assert_eq!(record["child_exit_code"], Value::Null);
    assert!(peak(&record) >= 100 * MIB, "{record:#}");
    assert_eq!(record["resources"]["memory_limit_bytes"], 100 * MIB);
    let tail: Vec<&str> = record["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tail.contains(&"ignoring SIGTERM"),
        "SIGTERM should come first: {record:#}"
    );
    assert!(
        took >= Duration::from_millis(1800),
        "killed after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(9), "took {took:?}");
}
