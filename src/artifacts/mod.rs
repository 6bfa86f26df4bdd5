//! Data between tasks: the inputs a task declares are downloaded before its command
//! starts, the outputs it declares are uploaded after the command succeeds, all through
//! the tenant's Blob Storage, each verified by its sha256. See docs/data-between-tasks.md.
//!
//! `spec` parses the declarations, `inputs` and `outputs` are the two phases, `upload` the
//! streaming block uploader, `local` the same on a local directory (`file://`, for runs on
//! a laptop), `digest` the digests the record gives.

pub mod digest;
pub mod error;
pub mod inputs;
pub mod local;
pub mod outputs;
pub mod policy;
pub mod spec;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use azure_core::http::Url;
use serde::Serialize;

pub use error::ArtifactError;

use crate::snapshot::source::BlobLocation;

/// Where data is kept: a blob (or folder of blobs) in Blob Storage, or a file (or
/// directory) on the local disk, named by a `file://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Blob(BlobLocation),
    /// An absolute path.
    Local(PathBuf),
}

impl Location {
    /// The URI the record gives: no SAS ever.
    pub fn shown(&self) -> String {
        match self {
            Location::Blob(blob) => blob.url.to_string(),
            Location::Local(path) => {
                let mut uri = Url::from_file_path(path)
                    .map(String::from)
                    .unwrap_or_else(|()| format!("file://{}", path.display()));
                // A folder keeps its trailing `/`, which the URL form drops.
                if path.as_os_str().as_encoded_bytes().ends_with(b"/") && !uri.ends_with('/') {
                    uri.push('/');
                }
                uri
            }
        }
    }

    /// The location `relative` below this one taken as a folder.
    pub fn child(&self, relative: &str) -> Location {
        match self {
            Location::Blob(blob) => Location::Blob(blob.child(relative)),
            Location::Local(path) => Location::Local(
                relative
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .fold(path.clone(), |path, segment| path.join(segment)),
            ),
        }
    }

    pub fn blob(&self) -> Option<&BlobLocation> {
        match self {
            Location::Blob(blob) => Some(blob),
            Location::Local(_) => None,
        }
    }
}

/// What was moved, as the record and the manifest give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    /// As declared.
    pub path: String,
    /// The blob (a folder ends in `/`), never with a SAS.
    pub uri: String,
    pub kind: Kind,
    pub bytes: u64,
    pub files: u64,
    /// A file's sha256; a directory's manifest digest; an archive blob's sha256.
    pub sha256: String,
}

impl Artifact {
    /// The log line for a transfer that began at `started`.
    pub fn log_moved(&self, started: Instant, what: &str) {
        tracing::info!(
            path = %self.path,
            uri = %self.uri,
            bytes = self.bytes,
            files = self.files,
            duration_ms = started.elapsed().as_millis() as u64,
            "{what}"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Directory,
    Archive,
}

/// The manifest blob, written last: the whole list of outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestRef {
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A declared path: relative ones are relative to the workdir, where the command runs.
pub fn resolve(workdir: &Path, declared: &Path) -> PathBuf {
    workdir.join(declared)
}
