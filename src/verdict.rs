//! From what happened to the child to what the record says: status, exit code, whether a
//! retry may help, and a message a DAG author can act on.

use crate::error::exit;
use crate::report::{ErrorInfo, Outcome, Status};
use crate::supervise::signals;
use crate::supervise::{ChildExit, MemoryMeasure, StopReason, Supervised};
use crate::units::format_bytes;

pub fn verdict(run: &Supervised) -> Outcome {
    let (child_exit_code, signal) = match run.exit {
        ChildExit::Code(code) => (Some(code), None),
        ChildExit::Signal(number) => (None, Some(signals::name(number))),
    };
    let how_it_ended = match run.exit {
        ChildExit::Code(code) => format!("it exited with code {code}"),
        ChildExit::Signal(number) => format!("it ended by {}", signals::name(number)),
    };
    let outcome = |status, exit_code, retryable, kind: &str, message: String| Outcome {
        status,
        exit_code,
        child_exit_code,
        signal: signal.clone(),
        retryable,
        error: Some(ErrorInfo {
            kind: kind.to_string(),
            message,
        }),
    };
    match &run.stop {
        Some(StopReason::Terminated) => outcome(
            Status::Terminated,
            exit::TERMINATED,
            true,
            "terminated",
            format!(
                "task-agent received SIGTERM (pod deleted or evicted) and stopped the command; {how_it_ended}"
            ),
        ),
        Some(StopReason::TimedOut { timeout }) => outcome(
            Status::TimedOut,
            exit::TIMED_OUT,
            false,
            "timed_out",
            format!(
                "the command ran longer than its timeout of {} and was stopped; {how_it_ended}; raise --timeout or make the task faster",
                humantime::format_duration(*timeout)
            ),
        ),
        Some(StopReason::MemoryExceeded { used, limit, what }) => {
            let measured = match what {
                MemoryMeasure::ProcessTree => format!(
                    "the command's processes used {} together, over the memory limit of {}",
                    format_bytes(*used),
                    format_bytes(*limit)
                ),
                MemoryMeasure::Cgroup => format!(
                    "the container's working set (memory plus tmpfs files) reached {}, over {} (the container limit less the agent's headroom)",
                    format_bytes(*used),
                    format_bytes(*limit)
                ),
            };
            outcome(
                Status::OomKilled,
                exit::OOM_KILLED,
                false,
                "memory_limit",
                format!(
                    "{measured}; it was stopped and {how_it_ended}; use a larger size class or reduce the task's memory use"
                ),
            )
        }
        None if run.kernel_oom => outcome(
            Status::OomKilled,
            exit::OOM_KILLED,
            false,
            "oom_kill",
            format!(
                "the kernel's OOM killer killed the command (peak {}); use a larger size class or reduce the task's memory use",
                format_bytes(run.peak_memory_bytes)
            ),
        ),
        None => match run.exit {
            ChildExit::Code(0) => Outcome {
                status: Status::Succeeded,
                exit_code: 0,
                child_exit_code,
                signal: None,
                retryable: false,
                error: None,
            },
            ChildExit::Code(code) => outcome(
                Status::Failed,
                code,
                false,
                "exit_code",
                format!("the command exited with code {code}"),
            ),
            ChildExit::Signal(number) => outcome(
                Status::Failed,
                128 + number,
                false,
                "signal",
                format!(
                    "the command was killed by {} from outside task-agent",
                    signals::name(number)
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ran(exit: ChildExit, stop: Option<StopReason>) -> Supervised {
        Supervised {
            exit,
            stop,
            kernel_oom: false,
            peak_memory_bytes: 10 << 20,
            cpu_user_ms: 0,
            cpu_system_ms: 0,
            log_tail: Vec::new(),
        }
    }

    #[test]
    fn the_childs_code_passes_through() {
        let ok = verdict(&ran(ChildExit::Code(0), None));
        assert_eq!(
            (ok.status, ok.exit_code, ok.error),
            (Status::Succeeded, 0, None)
        );
        let failed = verdict(&ran(ChildExit::Code(3), None));
        assert_eq!((failed.status, failed.exit_code), (Status::Failed, 3));
        assert_eq!(failed.child_exit_code, Some(3));
        assert!(!failed.retryable);
    }

    #[test]
    fn a_foreign_signal_is_128_plus_n() {
        let out = verdict(&ran(ChildExit::Signal(libc::SIGSEGV), None));
        assert_eq!((out.status, out.exit_code), (Status::Failed, 139));
        assert_eq!(out.signal.as_deref(), Some("SIGSEGV"));
        assert_eq!(out.child_exit_code, None);
    }

    #[test]
    fn stop_reasons_win_over_the_exit() {
        let timeout = StopReason::TimedOut {
            timeout: Duration::from_secs(5),
        };
        let out = verdict(&ran(ChildExit::Signal(libc::SIGKILL), Some(timeout)));
        assert_eq!(
            (out.status, out.exit_code, out.retryable),
            (Status::TimedOut, 124, false)
        );
        assert!(out.error.unwrap().message.contains("5s"));

        let out = verdict(&ran(ChildExit::Code(0), Some(StopReason::Terminated)));
        assert_eq!(
            (out.status, out.exit_code, out.retryable),
            (Status::Terminated, 143, true)
        );

        let memory = StopReason::MemoryExceeded {
            used: 300 << 20,
            limit: 256 << 20,
            what: MemoryMeasure::ProcessTree,
        };
        let out = verdict(&ran(ChildExit::Signal(libc::SIGTERM), Some(memory)));
        assert_eq!((out.status, out.exit_code), (Status::OomKilled, 137));
        assert!(out.error.unwrap().message.contains("256.0 MiB"));
    }

    #[test]
    fn a_kernel_oom_kill_is_reported_as_such() {
        let mut run = ran(ChildExit::Signal(libc::SIGKILL), None);
        run.kernel_oom = true;
        let out = verdict(&run);
        assert_eq!((out.status, out.exit_code), (Status::OomKilled, 137));
        assert_eq!(out.error.unwrap().kind, "oom_kill");
    }
}
