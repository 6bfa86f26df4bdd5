//! Every way a snapshot fetch can fail. Messages name the source without its query and
//! the archive entry at fault, and say what to do; none carries a credential.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot {location} has sha256 {actual}, but {expected} was expected; the workdir was left empty. Publish the snapshot again or pin the digest `task-agent publish` printed"
    )]
    Integrity {
        location: String,
        expected: String,
        actual: String,
    },

    #[error(
        "snapshot {location}: entry `{entry}` {reason}; the archive was refused and the workdir left empty"
    )]
    Unsafe {
        location: String,
        entry: String,
        reason: String,
    },

    #[error(
        "snapshot {location} is not a valid tar or tar.gz archive: {detail}; rebuild it with `task-agent pack`"
    )]
    Corrupt { location: String, detail: String },

    #[error(
        "snapshot {location} was not found ({detail}); check the path and that it was published"
    )]
    NotFound { location: String, detail: String },

    #[error("access to snapshot {location} was denied ({detail}); {fix}")]
    Denied {
        location: String,
        detail: String,
        fix: &'static str,
    },

    #[error("snapshot {location} could not be fetched: {detail}")]
    Unavailable { location: String, detail: String },

    #[error(
        "cannot write the snapshot into {path}: {error}; give --workdir a writable, empty directory"
    )]
    Workdir { path: String, error: io::Error },

    #[error("the snapshot fetch was cancelled")]
    Cancelled,
}

impl SnapshotError {
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotError::Integrity { .. } => "snapshot_integrity",
            SnapshotError::Unsafe { .. } => "snapshot_unsafe",
            SnapshotError::Corrupt { .. } => "snapshot_corrupt",
            SnapshotError::NotFound { .. } => "snapshot_not_found",
            SnapshotError::Denied { .. } => "snapshot_denied",
            SnapshotError::Unavailable { .. } => "snapshot_unavailable",
            SnapshotError::Workdir { .. } => "snapshot_workdir",
            SnapshotError::Cancelled => "snapshot_cancelled",
        }
    }
}
