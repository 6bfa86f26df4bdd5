//! Checks that several test files make of the agent's exit and its record.

use std::process::{ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;

use super::Task;
use super::agent::Agent;

/// The agent exited with `code`; its stderr explains it if not.
#[track_caller]
pub fn assert_exit_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        super::stderr(output)
    );
}

#[track_caller]
pub fn assert_error_kind(record: &Value, kind: &str) {
    assert_eq!(record["error"]["kind"], kind, "{record:#}");
}

/// The record of a child that exited with `code` on its own terms, however the agent was
/// signalled: a plain failure.
#[track_caller]
pub fn assert_failed_with_exit_code(record: &Value, code: i32) {
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["exit_code"], code);
    assert_eq!(record["child_exit_code"], code);
    assert_eq!(record["signal"], Value::Null);
    assert_error_kind(record, "exit_code");
}

/// The record of a child that caught the SIGTERM passed on to it and exited 0: the task
/// still counts as terminated (and may be retried), not as a success.
#[track_caller]
pub fn assert_terminated_by_forwarded_sigterm(record: &Value) {
    assert_eq!(record["status"], "terminated", "{record:#}");
    assert_eq!(record["exit_code"], 143);
    assert_eq!(record["child_exit_code"], 0);
    assert_eq!(record["retryable"], true);
    assert_eq!(record["signal"], Value::Null);
    assert_error_kind(record, "terminated");
}

/// How the agent ends, run with `--grace 1s`, when SIGTERM reaches it and its child ignores
/// that: it exits 143 once the grace has passed, having SIGKILLed the child, and the record
/// says `terminated` (retryable). `after` is the time from the SIGTERM to the agent's exit,
/// which must be under `limit`.
#[track_caller]
pub fn assert_terminated_after_the_grace(
    task: &Task,
    agent: &Agent,
    status: ExitStatus,
    after: Duration,
    limit: Duration,
) {
    assert_eq!(status.code(), Some(143), "{}", agent.log());
    let record = task.record();
    assert_eq!(record["status"], "terminated", "{record:#}");
    assert_eq!(record["exit_code"], 143);
    assert_eq!(record["retryable"], true);
    assert_eq!(record["signal"], "SIGKILL");
    assert_eq!(record["child_exit_code"], Value::Null);
    assert_error_kind(&record, "terminated");
    assert!(
        after >= Duration::from_millis(900),
        "killed {after:?} after SIGTERM, before the grace"
    );
    assert!(after < limit, "took {after:?}");
}
