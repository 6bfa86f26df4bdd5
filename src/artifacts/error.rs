//! Every way moving a task's data can fail. Messages name the declared path and the blob
//! without any SAS, and say what to do.

use std::io;

use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "output {path} was declared but is not there after the command succeeded; write it there, or declare it optional (`#optional`)"
    )]
    OutputMissing { path: String },

    #[error(
        "cannot read output {path}: {source}; the agent's user must be able to read what the task declares"
    )]
    OutputUnreadable {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("uploading output {path} to {uri} failed: {detail}")]
    OutputUnavailable {
        path: String,
        uri: String,
        detail: String,
    },

    #[error("uploading output {path} to {uri} was denied ({detail}); {fix}")]
    OutputDenied {
        path: String,
        uri: String,
        detail: String,
        fix: &'static str,
    },

    #[error(
        "input {uri} (for {path}) was not found ({detail}); check that its producer succeeded in this run and that the blob was not removed"
    )]
    InputNotFound {
        path: String,
        uri: String,
        detail: String,
    },

    #[error(
        "input {uri} has sha256 {actual}, but its producer recorded {expected}: it changed after it was written; nothing was written to {path}"
    )]
    InputIntegrity {
        path: String,
        uri: String,
        expected: String,
        actual: String,
    },

    #[error("input {uri} (for {path}) could not be fetched: {detail}")]
    InputUnavailable {
        path: String,
        uri: String,
        detail: String,
    },

    #[error("access to input {uri} (for {path}) was denied ({detail}); {fix}")]
    InputDenied {
        path: String,
        uri: String,
        detail: String,
        fix: &'static str,
    },

    #[error("input {uri} (for {path}) was refused: {detail}; nothing was written to {path}")]
    InputUnsafe {
        path: String,
        uri: String,
        detail: String,
    },

    #[error(
        "{uri} is outside the tenant's storage (allowed: {allowed}); a task reads and writes only its own tenant's storage"
    )]
    PolicyDenied { uri: String, allowed: String },

    #[error("cannot write input {path}: {source}; give the input a path in a writable directory")]
    InputWrite {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ArtifactError {
    pub fn kind(&self) -> &'static str {
        match self {
            ArtifactError::OutputMissing { .. } => "output_missing",
            ArtifactError::OutputUnreadable { .. } => "output_unreadable",
            ArtifactError::OutputUnavailable { .. } => "output_unavailable",
            ArtifactError::OutputDenied { .. } => "output_denied",
            ArtifactError::InputNotFound { .. } => "input_not_found",
            ArtifactError::InputIntegrity { .. } => "input_integrity",
            ArtifactError::InputUnavailable { .. } => "input_unavailable",
            ArtifactError::InputDenied { .. } => "input_denied",
            ArtifactError::InputUnsafe { .. } => "input_unsafe",
            ArtifactError::InputWrite { .. } => "input_write",
            ArtifactError::PolicyDenied { .. } => "policy_denied",
        }
    }

    /// A blob failure while uploading output `path` to `uri`.
    pub fn output(path: &str, uri: &str, error: SnapshotError) -> ArtifactError {
        let (path, uri) = (path.to_string(), uri.to_string());
        match error {
            SnapshotError::Denied { detail, fix, .. } => ArtifactError::OutputDenied {
                path,
                uri,
                detail,
                fix,
            },
            SnapshotError::NotFound { detail, .. } => ArtifactError::OutputUnavailable {
                path,
                uri,
                detail: format!(
                    "{detail}: its container does not exist; create it (az storage container create) or fix the tenant's artifacts location"
                ),
            },
            other => ArtifactError::OutputUnavailable {
                path,
                uri,
                detail: short(&other),
            },
        }
    }

    /// A blob or archive failure while fetching input `path` from `uri`.
    pub fn input(path: &str, uri: &str, error: SnapshotError) -> ArtifactError {
        let (path, uri) = (path.to_string(), uri.to_string());
        match error {
            SnapshotError::NotFound { detail, .. } => {
                ArtifactError::InputNotFound { path, uri, detail }
            }
            SnapshotError::Denied { detail, fix, .. } => ArtifactError::InputDenied {
                path,
                uri,
                detail,
                fix,
            },
            SnapshotError::Integrity {
                expected, actual, ..
            } => ArtifactError::InputIntegrity {
                path,
                uri,
                expected,
                actual,
            },
            SnapshotError::Unsafe { entry, reason, .. } => ArtifactError::InputUnsafe {
                path,
                uri,
                detail: format!("entry `{entry}` {reason}"),
            },
            SnapshotError::Corrupt { detail, .. } => ArtifactError::InputUnsafe {
                path,
                uri,
                detail: format!("not a valid .tar.gz: {detail}"),
            },
            SnapshotError::Workdir { error, .. } => ArtifactError::InputWrite {
                path,
                source: error,
            },
            other => ArtifactError::InputUnavailable {
                path,
                uri,
                detail: short(&other),
            },
        }
    }
}

/// The cause of a blob error without the snapshot wording around it.
fn short(error: &SnapshotError) -> String {
    match error {
        SnapshotError::Unavailable { detail, .. } => detail.clone(),
        SnapshotError::Cancelled => "cancelled".into(),
        other => other.to_string(),
    }
}
