//! The inputs phase: before the command starts, every declared input is downloaded,
//! streamed through its sha256 and checked against the digest its producer recorded. Each
//! lands under a temporary name beside its path and is renamed into place only when whole
//! and verified, so a failed input leaves nothing behind.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::digest::{FileDigest, tree_digest};
use super::error::ArtifactError;
use super::spec::InputSpec;
use super::{Artifact, Kind, Location, resolve};
use crate::snapshot::blob::{Connection, Download, take_failure};
use crate::snapshot::error::SnapshotError;
use crate::snapshot::paths;
use crate::snapshot::progress::Progress;
use crate::snapshot::source::Source;
use crate::snapshot::stream::hex;
use crate::snapshot::{self, Budget, Transfer};

/// Downloads and verifies every input; returns what the record says of them.
pub fn fetch(
    specs: &[InputSpec],
    workdir: &Path,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<Vec<Artifact>, ArtifactError> {
    let mut fetched = Vec::with_capacity(specs.len());
    for spec in specs {
        let started = Instant::now();
        let path = resolve(workdir, &spec.path);
        let artifact = if spec.archive {
            fetch_archive(spec, &path, transfer, cancel)?
        } else if spec.folder {
            fetch_folder(spec, &path, transfer, cancel)?
        } else {
            fetch_file(spec, &path, transfer, cancel)?
        };
        artifact.log_moved(started, "input fetched");
        fetched.push(artifact);
    }
    Ok(fetched)
}

fn declared(spec: &InputSpec) -> String {
    spec.path.display().to_string()
}

fn write_error(spec: &InputSpec) -> impl Fn(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::InputWrite {
        path: declared(spec),
        source,
    }
}

/// A sibling name for the download in progress.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}", std::process::id()));
    path.with_file_name(name)
}

fn check_digest(spec: &InputSpec, uri: &str, actual: &str) -> Result<(), ArtifactError> {
    match &spec.sha256 {
        Some(expected) if expected != actual => Err(ArtifactError::InputIntegrity {
            path: declared(spec),
            uri: uri.to_string(),
            expected: expected.clone(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

fn fetch_file(
    spec: &InputSpec,
    path: &Path,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<Artifact, ArtifactError> {
    let uri = spec.source.shown();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(write_error(spec))?;
    }
    let temp = temporary(path);
    let result = download_to(&spec.source, &temp, transfer, cancel)
        .map_err(|e| input_failure(spec, &uri, e))
        .and_then(|(sha256, bytes)| {
            check_digest(spec, &uri, &sha256)?;
            fs::rename(&temp, path).map_err(write_error(spec))?;
            Ok(Artifact {
                path: declared(spec),
                uri: uri.clone(),
                kind: Kind::File,
                bytes,
                files: 1,
                sha256,
            })
        });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Why a download to a file stopped.
enum DownloadFailure {
    Remote(SnapshotError),
    Write(io::Error),
}

fn input_failure(spec: &InputSpec, uri: &str, failure: DownloadFailure) -> ArtifactError {
    match failure {
        DownloadFailure::Remote(error) => ArtifactError::input(&declared(spec), uri, error),
        DownloadFailure::Write(source) => ArtifactError::InputWrite {
            path: declared(spec),
            source,
        },
    }
}

/// Opens one blob (or local file) for reading, with progress lines for a long transfer.
fn open(
    location: &Location,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<Box<dyn io::Read>, SnapshotError> {
    let what = format!("input {}", location.shown());
    match location {
        Location::Blob(blob) => {
            let download = Download::start(blob, transfer, cancel)?;
            let total = download.total;
            Ok(Box::new(Progress::of(what, download, Some(total))))
        }
        Location::Local(path) => {
            let file = File::open(path).map_err(|e| snapshot::local_error(path, e))?;
            let total = file.metadata().ok().map(|m| m.len());
            Ok(Box::new(Progress::of(what, file, total)))
        }
    }
}

/// Streams one blob (or local file) into a new file at `target`; returns its sha256 and
/// size.
fn download_to(
    location: &Location,
    target: &Path,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<(String, u64), DownloadFailure> {
    let mut source = open(location, transfer, cancel).map_err(DownloadFailure::Remote)?;
    let mut file = File::create(target).map_err(DownloadFailure::Write)?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DownloadFailure::Remote(take_failure(&e).unwrap_or(
                    SnapshotError::Unavailable {
                        location: location.shown(),
                        detail: e.to_string(),
                    },
                )));
            }
        };
        hasher.update(&buffer[..n]);
        bytes += n as u64;
        file.write_all(&buffer[..n])
            .map_err(DownloadFailure::Write)?;
    }
    file.sync_all().map_err(DownloadFailure::Write)?;
    Ok((hex(&hasher.finalize()), bytes))
}

/// A `.tar.gz` blob unpacked into the directory `path` by the snapshot extractor, with
/// its safety rules and budgets.
fn fetch_archive(
    spec: &InputSpec,
    path: &Path,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<Artifact, ArtifactError> {
    let uri = spec.source.shown();
    fs::create_dir_all(path).map_err(write_error(spec))?;
    let source = match &spec.source {
        Location::Blob(blob) => Source::Blob(blob.clone()),
        Location::Local(path) => Source::Local(path.clone()),
    };
    let request = snapshot::Request {
        source,
        sha256: spec.sha256.clone(),
        cache_dir: None,
        budget: Budget::default(),
        transfer: *transfer,
    };
    let report = snapshot::fetch(&request, path, cancel)
        .map_err(|e| ArtifactError::input(&declared(spec), &uri, e))?;
    Ok(Artifact {
        path: declared(spec),
        uri,
        kind: Kind::Archive,
        bytes: report.bytes,
        files: report.files,
        sha256: report.sha256,
    })
}

/// Every blob under a folder URI, into the directory `path` with the layout kept.
fn fetch_folder(
    spec: &InputSpec,
    path: &Path,
    transfer: &Transfer,
    cancel: &AtomicBool,
) -> Result<Artifact, ArtifactError> {
    let uri = spec.source.shown();
    let names =
        list(&spec.source, transfer).map_err(|e| ArtifactError::input(&declared(spec), &uri, e))?;
    if names.is_empty() {
        return Err(ArtifactError::InputNotFound {
            path: declared(spec),
            uri,
            detail: "nothing under this folder".into(),
        });
    }
    let budget = Budget::default();
    let temp = temporary(path);
    let result = (|| {
        let mut digests = Vec::with_capacity(names.len());
        for relative in &names {
            // Blob names are the producer's, so as hostile as archive entries.
            let checked =
                paths::entry_path(relative.as_bytes(), budget.max_path_bytes, budget.max_depth)
                    .ok()
                    .flatten()
                    .ok_or_else(|| ArtifactError::InputUnsafe {
                        path: declared(spec),
                        uri: uri.clone(),
                        detail: format!("`{relative}` would land outside {}", declared(spec)),
                    })?;
            let normalized: Vec<&str> = checked
                .iter()
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect();
            let target = temp.join(normalized.join("/"));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(write_error(spec))?;
            }
            let (sha256, bytes) =
                download_to(&spec.source.child(relative), &target, transfer, cancel)
                    .map_err(|e| input_failure(spec, &uri, e))?;
            digests.push(FileDigest {
                relative: normalized.join("/"),
                sha256,
                bytes,
            });
        }
        let sha256 = tree_digest(&digests);
        check_digest(spec, &uri, &sha256)?;
        // An empty directory at the path (made by the image, say) gives way; anything
        // else there is kept and the input refused.
        let _ = fs::remove_dir(path);
        fs::rename(&temp, path).map_err(write_error(spec))?;
        Ok(Artifact {
            path: declared(spec),
            uri: uri.clone(),
            kind: Kind::Directory,
            bytes: digests.iter().map(|d| d.bytes).sum(),
            files: digests.len() as u64,
            sha256,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

/// The names under a folder location, relative to it and sorted: the blobs under a blob
/// prefix, or the regular files under a local directory.
fn list(folder: &Location, transfer: &Transfer) -> Result<Vec<String>, SnapshotError> {
    let blob = match folder {
        Location::Blob(blob) => blob,
        Location::Local(path) => {
            let files = super::outputs::walk(path).map_err(|e| snapshot::local_error(path, e))?;
            return Ok(files.into_iter().map(|(relative, _, _)| relative).collect());
        }
    };
    let connection = Connection::open(blob, transfer)?;
    let container = connection.container_client()?;
    let prefix = blob.blob_name();
    let options = azure_storage_blob::models::BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.clone()),
        ..Default::default()
    };
    let runtime = crate::snapshot::blob::runtime(&connection.shown)?;
    let classify = |error: azure_core::Error| connection.failure(&error);
    let mut names = runtime.block_on(async {
        let mut names = Vec::new();
        let mut pages = container
            .list_blobs(Some(options))
            .map_err(classify)?
            .into_pages();
        while let Some(page) = pages.try_next().await.map_err(classify)? {
            let page = page.into_model().map_err(classify)?;
            names.extend(page.blob_items.into_iter().filter_map(|item| item.name));
        }
        Ok::<_, SnapshotError>(names)
    })?;
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| name.strip_prefix(&prefix).unwrap_or(&name).to_string())
        .collect())
}
