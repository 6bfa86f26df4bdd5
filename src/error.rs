//! Every way the agent itself can fail, and the one table that maps each of them to the
//! record's `status`, the process exit code and the `retryable` flag.

use std::io;
use std::path::PathBuf;

use crate::report::Status;

/// Exit codes the agent uses for its own failures (BSD `sysexits.h` where one fits).
pub mod exit {
    pub const USAGE: i32 = 64;
    pub const DATA: i32 = 65;
    pub const NOT_FOUND: i32 = 66;
    pub const UNAVAILABLE: i32 = 69;
    pub const INTERNAL: i32 = 70;
    pub const PERMISSION: i32 = 77;
    pub const TIMED_OUT: i32 = 124;
    pub const NOT_EXECUTABLE: i32 = 126;
    pub const COMMAND_NOT_FOUND: i32 = 127;
    pub const OOM_KILLED: i32 = 137;
    pub const TERMINATED: i32 = 143;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),

    #[error(
        "command `{command}` was not found (searched PATH={path}); install it in the image, or give its full path"
    )]
    CommandNotFound { command: String, path: String },

    #[error("command `{command}` could not be executed: {reason}; {fix}")]
    CommandNotExecutable {
        command: String,
        reason: String,
        fix: &'static str,
    },

    /// Starting the command failed at `step`, for a reason that is not the command file.
    #[error("cannot start command `{command}`: {step} failed: {source}; {fix}")]
    Spawn {
        command: String,
        step: String,
        fix: &'static str,
        #[source]
        source: io::Error,
    },

    /// A path the agent must prepare (workdir, result file, return-value directory).
    #[error("cannot {action} {path}: {source}; {fix}", path = path.display())]
    Path {
        action: &'static str,
        path: PathBuf,
        fix: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "the return value in {path} is not valid JSON: {detail}; write one JSON document there (for example `json.dump(value, f)`)", path = path.display()
    )]
    ReturnValueInvalid { path: PathBuf, detail: String },

    #[error("cannot read the return value {path}: {source}", path = path.display())]
    ReturnValueUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),

    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),

    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),

    #[error("cannot upload the return value to {destination}: {detail}")]
    ReturnUpload { destination: String, detail: String },

    #[error("internal error: {0}; this is a bug in task-agent, please report it with this message")]
    Internal(String),
}

/// How a failure is reported: the record's `status` and `error.kind`, the exit code, and
/// whether Airflow should spend a retry on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    pub status: Status,
    pub kind: &'static str,
    pub exit_code: i32,
    pub retryable: bool,
}

impl AgentError {
    pub fn disposition(&self) -> Disposition {
        use AgentError::*;
        let (status, kind, exit_code, retryable) = match self {
            Usage(_) => (Status::AgentError, "usage", exit::USAGE, false),
            CommandNotFound { .. } => (
                Status::AgentError,
                "command_not_found",
                exit::COMMAND_NOT_FOUND,
                false,
            ),
            CommandNotExecutable { .. } => (
                Status::AgentError,
                "command_not_executable",
                exit::NOT_EXECUTABLE,
                false,
            ),
            Spawn { source, .. } if is_resource_shortage(source) => {
                (Status::AgentError, "spawn", exit::UNAVAILABLE, true)
            }
            Spawn { .. } => (Status::AgentError, "spawn", exit::INTERNAL, false),
            Path { source, .. } if is_permission(source) => (
                Status::AgentError,
                "permission_denied",
                exit::PERMISSION,
                false,
            ),
            Path { .. } => (Status::AgentError, "io", exit::INTERNAL, false),
            ReturnValueInvalid { .. } => {
                (Status::Failed, "return_value_invalid", exit::DATA, false)
            }
            ReturnValueUnreadable { .. } => {
                (Status::Failed, "return_value_unreadable", exit::DATA, false)
            }
            Snapshot(error) => {
                use crate::snapshot::SnapshotError as S;
                let (exit_code, retryable) = match error {
                    S::Integrity { .. } | S::Unsafe { .. } | S::Corrupt { .. } => {
                        (exit::DATA, false)
                    }
                    S::NotFound { .. } => (exit::NOT_FOUND, false),
                    S::Denied { .. } => (exit::PERMISSION, false),
                    S::Unavailable { .. } => (exit::UNAVAILABLE, true),
                    S::Workdir { error, .. } if is_permission(error) => (exit::PERMISSION, false),
                    S::Workdir { .. } => (exit::INTERNAL, false),
                    S::Cancelled => (exit::TERMINATED, true),
                };
                (Status::AgentError, error.kind(), exit_code, retryable)
            }
            Secret(error) => {
                use crate::secrets::SecretError as S;
                let (exit_code, retryable) = match error {
                    S::NotFound { .. } | S::Local { .. } => (exit::NOT_FOUND, false),
                    S::Denied { .. } | S::IdentityRefused { .. } | S::PolicyDenied { .. } => {
                        (exit::PERMISSION, false)
                    }
                    S::Unavailable { .. } => (exit::UNAVAILABLE, true),
                    S::File { error, .. } if is_permission(error) => (exit::PERMISSION, false),
                    S::File { .. } => (exit::INTERNAL, false),
                };
                (Status::AgentError, error.kind(), exit_code, retryable)
            }
            Artifact(error) => {
                use crate::artifacts::ArtifactError as A;
                let (exit_code, retryable) = match error {
                    A::OutputMissing { .. } | A::InputNotFound { .. } => (exit::NOT_FOUND, false),
                    A::InputIntegrity { .. } | A::InputUnsafe { .. } => (exit::DATA, false),
                    A::OutputUnavailable { .. } | A::InputUnavailable { .. } => {
                        (exit::UNAVAILABLE, true)
                    }
                    A::OutputDenied { .. } | A::InputDenied { .. } | A::PolicyDenied { .. } => {
                        (exit::PERMISSION, false)
                    }
                    A::OutputUnreadable { source, .. } | A::InputWrite { source, .. }
                        if is_permission(source) =>
                    {
                        (exit::PERMISSION, false)
                    }
                    A::OutputUnreadable { .. } | A::InputWrite { .. } => (exit::INTERNAL, false),
                };
                // The command succeeded but did not write what it promised: the task's fault.
                let status = match error {
                    A::OutputMissing { .. } => Status::Failed,
                    _ => Status::AgentError,
                };
                (status, error.kind(), exit_code, retryable)
            }
            ReturnUpload { .. } => (Status::AgentError, "return_upload", exit::UNAVAILABLE, true),
            Internal(_) => (Status::AgentError, "internal", exit::INTERNAL, false),
        };
        Disposition {
            status,
            kind,
            exit_code,
            retryable,
        }
    }
}

fn is_permission(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

fn is_resource_shortage(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_problems_map_to_77_and_others_to_70() {
        let denied = AgentError::Path {
            action: "create the workdir",
            path: "/workspace".into(),
            fix: "pass --workdir",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.disposition().exit_code, exit::PERMISSION);
        assert_eq!(denied.disposition().kind, "permission_denied");
        let other = AgentError::Path {
            action: "create the workdir",
            path: "/workspace".into(),
            fix: "pass --workdir",
            source: io::Error::other("disk on fire"),
        };
        assert_eq!(other.disposition().exit_code, exit::INTERNAL);
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let again = AgentError::Spawn {
            command: "x".into(),
            step: "creating its process (fork)".into(),
            fix: "wait",
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert!(again.disposition().retryable);
        assert_eq!(again.disposition().exit_code, exit::UNAVAILABLE);
        assert!(!AgentError::Usage("bad".into()).disposition().retryable);
        let missing = AgentError::CommandNotFound {
            command: "nope".into(),
            path: "/bin".into(),
        };
        assert_eq!(missing.disposition().exit_code, 127);
        assert!(!missing.disposition().retryable);
    }

    #[test]
    fn an_invalid_return_value_fails_the_task_not_the_agent() {
        let err = AgentError::ReturnValueInvalid {
            path: "/airflow/xcom/return.json".into(),
            detail: "expected value at line 1 column 1".into(),
        };
        let d = err.disposition();
        assert_eq!(d.status, Status::Failed);
        assert_eq!(d.kind, "return_value_invalid");
        assert!(err.to_string().contains("/airflow/xcom/return.json"));
    }
}
