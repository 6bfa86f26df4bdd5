//! The outputs phase: after the command exits 0, every declared output is uploaded, then
//! the manifest `ARTIFACTS/_manifest.json` is written last, as the marker that the set is
//! complete. Everything goes under the try's own prefix, so nothing another try or task
//! reads is ever overwritten or half-written.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::digest::{FileDigest, tree_digest};
use super::error::ArtifactError;
use super::spec::OutputSpec;
use super::upload::{Failure, Uploader, read_block};
use super::{Artifact, Kind, Location, ManifestRef, local, resolve};
use crate::snapshot::blob::Connection;
use crate::snapshot::progress::Progress;
use crate::snapshot::source::BlobLocation;
use crate::snapshot::stream::hex;

/// Files at most this large go up as one Put Blob each, many at once.
const SMALL_FILE: u64 = 1 << 20;
/// Small files in flight at once.
const SMALL_FILES_IN_FLIGHT: usize = 16;
/// The manifest's name under the artifacts prefix.
pub const MANIFEST: &str = "_manifest.json";

/// What the outputs phase reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub outputs: Vec<Artifact>,
    pub manifest: ManifestRef,
}

/// Uploads `specs` (paths relative to `workdir` or absolute) and then the manifest.
pub fn publish(
    specs: &[OutputSpec],
    artifacts: &Location,
    workdir: &Path,
    uploader: &Uploader,
    cancel: &AtomicBool,
) -> Result<Published, ArtifactError> {
    let manifest_location = artifacts.child(MANIFEST);
    let shown_manifest = manifest_location.shown();
    let mut blobs = Blobs {
        uploader,
        root: None,
    };
    let mut outputs = Vec::new();
    for spec in specs {
        let declared = spec.path.display().to_string();
        let path = resolve(workdir, &spec.path);
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if spec.optional {
                    tracing::info!(path = %declared, "optional output not written; skipped");
                    continue;
                }
                return Err(ArtifactError::OutputMissing { path: declared });
            }
            Err(source) => {
                return Err(ArtifactError::OutputUnreadable {
                    path: declared,
                    source,
                });
            }
        };
        if !metadata.is_dir() && !metadata.is_file() {
            return Err(ArtifactError::OutputUnreadable {
                path: declared,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is neither a regular file nor a directory",
                ),
            });
        }
        let destination = spec
            .destination
            .clone()
            .unwrap_or_else(|| artifacts.child(&format!("files/{}", path.display())));
        let started = Instant::now();
        let artifact = match &destination {
            Location::Blob(blob) if metadata.is_dir() && spec.archive => {
                upload_archive(&mut blobs, &path, &declared, blob)?
            }
            Location::Blob(blob) if metadata.is_dir() => {
                upload_directory(&mut blobs, &path, &declared, blob)?
            }
            Location::Blob(blob) => upload_file(&mut blobs, &path, &declared, blob)?,
            Location::Local(target) => {
                let kind = match (metadata.is_dir(), spec.archive) {
                    (false, _) => Kind::File,
                    (true, false) => Kind::Directory,
                    (true, true) => Kind::Archive,
                };
                local::store(&path, kind, target)
                    .map(|stored| stored.artifact(&declared, &destination))
                    .map_err(|failure| local::output_error(failure, &declared, &destination))?
            }
        };
        artifact.log_moved(started, "output stored");
        outputs.push(artifact);
    }
    // A try told to stop (its record says `terminated`) must not mark its set complete.
    if cancel.load(Ordering::Relaxed) {
        return Err(ArtifactError::output(
            MANIFEST,
            &shown_manifest,
            crate::snapshot::SnapshotError::Cancelled,
        ));
    }
    let body = manifest_json(&outputs);
    let sha256 = hex(&Sha256::digest(&body));
    let bytes = body.len() as u64;
    match &manifest_location {
        Location::Blob(blob) => {
            let connection = blobs.connect(blob, MANIFEST)?;
            uploader
                .put_whole(&connection, body, &sha256)
                .map_err(|failure| explain(failure, MANIFEST, &shown_manifest))?;
        }
        Location::Local(target) => local::write_whole(target, &body)
            .map_err(|failure| local::output_error(failure, MANIFEST, &manifest_location))?,
    }
    Ok(Published {
        outputs,
        manifest: ManifestRef {
            uri: shown_manifest,
            sha256,
            bytes,
        },
    })
}

/// The connections of one phase: the first opens with the credential, the others reuse
/// its pipeline, so many blobs cost one token.
struct Blobs<'a> {
    uploader: &'a Uploader,
    root: Option<Arc<Connection>>,
}

impl Blobs<'_> {
    fn connect(
        &mut self,
        destination: &BlobLocation,
        declared: &str,
    ) -> Result<Arc<Connection>, ArtifactError> {
        let connected = match &self.root {
            Some(root) => root.for_blob(destination).map(Arc::new),
            None => self.uploader.connect(destination),
        };
        let connection =
            connected.map_err(|e| ArtifactError::output(declared, destination.url.as_str(), e))?;
        self.root.get_or_insert_with(|| Arc::clone(&connection));
        Ok(connection)
    }
}

/// The manifest: every output in the record's shape.
pub fn manifest_json(outputs: &[Artifact]) -> Vec<u8> {
    let manifest = serde_json::json!({ "version": 1, "outputs": outputs });
    serde_json::to_vec_pretty(&manifest).unwrap_or_default()
}

/// The error for output `declared` that the agent cannot read.
fn unreadable(declared: &str) -> impl Fn(io::Error) -> ArtifactError + Copy + '_ {
    move |source| ArtifactError::OutputUnreadable {
        path: declared.to_string(),
        source,
    }
}

fn explain(failure: Failure, declared: &str, uri: &str) -> ArtifactError {
    match failure {
        Failure::Read(source) => unreadable(declared)(source),
        Failure::Remote(error) => ArtifactError::output(declared, uri, error),
    }
}

fn upload_file(
    blobs: &mut Blobs,
    path: &Path,
    declared: &str,
    destination: &BlobLocation,
) -> Result<Artifact, ArtifactError> {
    let uploader = blobs.uploader;
    let shown = destination.url.to_string();
    let connection = blobs.connect(destination, declared)?;
    let file = File::open(path).map_err(unreadable(declared))?;
    let total = file.metadata().ok().map(|m| m.len());
    let mut file = Progress::of(format!("output {declared}"), file, total);
    let sent = uploader
        .stream(&connection, &mut file)
        .map_err(|failure| explain(failure, declared, &shown))?;
    Ok(Artifact {
        path: declared.to_string(),
        uri: shown,
        kind: Kind::File,
        bytes: sent.bytes,
        files: 1,
        sha256: sent.sha256,
    })
}

/// A directory as one blob per file under the destination folder.
fn upload_directory(
    blobs: &mut Blobs,
    dir: &Path,
    declared: &str,
    destination: &BlobLocation,
) -> Result<Artifact, ArtifactError> {
    let uploader = blobs.uploader;
    let unreadable = unreadable(declared);
    let files = walk(dir).map_err(unreadable)?;
    let mut digests = Vec::with_capacity(files.len());
    let mut in_flight = std::collections::VecDeque::new();
    for (relative, path, size) in &files {
        let location = destination.child(relative);
        let shown = location.url.to_string();
        let connection = blobs.connect(&location, declared)?;
        if *size <= SMALL_FILE {
            let mut file = File::open(path).map_err(unreadable)?;
            let body = read_block(&mut file, usize::try_from(*size).unwrap_or(0) + 1)
                .map_err(unreadable)?;
            let sha256 = hex(&Sha256::digest(&body));
            digests.push(FileDigest {
                relative: relative.clone(),
                sha256: sha256.clone(),
                bytes: body.len() as u64,
            });
            in_flight.push_back((
                uploader.spawn_put(&connection, body, &sha256),
                connection,
                shown,
            ));
            if in_flight.len() >= SMALL_FILES_IN_FLIGHT
                && let Some((handle, connection, shown)) = in_flight.pop_front()
            {
                uploader
                    .settle(&connection, handle)
                    .map_err(|failure| explain(failure, declared, &shown))?;
            }
        } else {
            let mut file = File::open(path).map_err(unreadable)?;
            let sent = uploader
                .stream(&connection, &mut file)
                .map_err(|failure| explain(failure, declared, &shown))?;
            digests.push(FileDigest {
                relative: relative.clone(),
                sha256: sent.sha256,
                bytes: sent.bytes,
            });
        }
    }
    while let Some((handle, connection, shown)) = in_flight.pop_front() {
        uploader
            .settle(&connection, handle)
            .map_err(|failure| explain(failure, declared, &shown))?;
    }
    Ok(Artifact {
        path: declared.to_string(),
        uri: folder_uri(destination),
        kind: Kind::Directory,
        bytes: digests.iter().map(|d| d.bytes).sum(),
        files: digests.len() as u64,
        sha256: tree_digest(&digests),
    })
}

/// A directory packed as `task-agent pack` packs, streamed through a pipe into one blob.
fn upload_archive(
    blobs: &mut Blobs,
    dir: &Path,
    declared: &str,
    destination: &BlobLocation,
) -> Result<Artifact, ArtifactError> {
    let uploader = blobs.uploader;
    let shown = destination.url.to_string();
    let unreadable = unreadable(declared);
    let files = walk(dir).map_err(unreadable)?.len() as u64;
    let connection = blobs.connect(destination, declared)?;
    let (reader, writer) = io::pipe().map_err(unreadable)?;
    let source = dir.to_path_buf();
    let packer = std::thread::Builder::new()
        .name("pack".into())
        .spawn(move || crate::snapshot::pack::pack_into(&source, writer))
        .map_err(unreadable)?;
    let mut reader = Progress::of(format!("output {declared}"), reader, None);
    let sent = uploader.stream(&connection, &mut reader);
    // The packer ends once its writer is closed or the reader gone.
    drop(reader);
    let packed = packer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the packing thread panicked")));
    let sent = sent.map_err(|failure| explain(failure, declared, &shown))?;
    packed.map_err(unreadable)?;
    Ok(Artifact {
        path: declared.to_string(),
        uri: shown,
        kind: Kind::Archive,
        bytes: sent.bytes,
        files,
        sha256: sent.sha256,
    })
}

/// The folder URI a directory output is read back from: with its trailing `/`.
fn folder_uri(destination: &BlobLocation) -> String {
    let text = destination.url.to_string();
    if text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    }
}

/// The regular files under `dir`: (relative `/`-path, path, size), sorted by relative
/// path. Symlinks are not followed (the task's links may point anywhere); other special
/// files are left out; both with a warning.
pub fn walk(dir: &Path) -> io::Result<Vec<(String, PathBuf, u64)>> {
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, current)) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has a name that is not UTF-8, which a blob name cannot hold; rename it",
                        entry.path().display()
                    ),
                ));
            };
            let relative = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push((relative, entry.path()));
            } else if metadata.is_file() {
                files.push((relative, entry.path(), metadata.size()));
            } else {
                tracing::warn!(path = %entry.path().display(), "left out of the output: not a regular file or directory (symlinks are not followed)");
            }
        }
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(files)
}
