//! The snapshot phase: fetch the task's code (a tar or tar.gz in Blob Storage or on disk),
//! verify it and unpack it into the workdir, in one streaming pass.
//!
//! source (blob download or file) → [cache tee] → progress → sha256 → gunzip → budget →
//! tar → files. A failure anywhere takes back what was unpacked.

pub mod blob;
pub mod cache;
pub mod error;
pub mod extract;
pub mod gzip;
pub mod pack;
pub mod paths;
pub mod progress;
pub mod source;
pub mod stream;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use error::SnapshotError;
pub use extract::Budget;
pub use source::Source;

use cache::Cache;
use extract::{Extractor, Failure};
use stream::{FaultSlot, Hashing, StreamFault};

/// How transfers from Blob Storage behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Total time spent retrying (throttling, 5xx, broken connections) before giving up.
    pub retry_budget: Duration,
    /// Ranged reads in flight at once.
    pub parallelism: usize,
    /// Size of each ranged read.
    pub block_size: usize,
    /// A connection that delivers nothing for this long is broken: it is resumed.
    pub stall_timeout: Duration,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            retry_budget: Duration::from_secs(30),
            parallelism: 1,
            block_size: 4 << 20,
            stall_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub source: Source,
    /// The expected sha256 of the archive file, lowercase hex.
    pub sha256: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub budget: Budget,
    pub transfer: Transfer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUse {
    Hit,
    Miss,
    Off,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }
}

/// What the record says about the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Where it came from, without any query.
    pub source: String,
    pub sha256: String,
    /// Size of the archive file.
    pub bytes: u64,
    pub files: u64,
    pub cache: CacheUse,
}

/// Fetches, verifies and unpacks `request`'s snapshot into `workdir`.
pub fn fetch(
    request: &Request,
    workdir: &Path,
    cancel: &AtomicBool,
) -> Result<Report, SnapshotError> {
    let shown = request.source.to_string();
    let cache = match (&request.cache_dir, &request.sha256) {
        (Some(dir), Some(_)) => Some(Cache::new(dir)),
        (Some(_), None) => {
            tracing::info!(
                "snapshot cache not used: it is keyed by digest, so it needs --snapshot-sha256"
            );
            None
        }
        _ => None,
    };
    if let (Some(cache), Some(pin)) = (&cache, &request.sha256)
        && let Some((file, size)) = cache.lookup(pin)
    {
        tracing::info!(sha256 = %pin, "snapshot found in the cache");
        match unpack(file, Some(size), workdir, request, &shown, cancel) {
            Ok(unpacked) => return Ok(report(&shown, unpacked, CacheUse::Hit)),
            Err(SnapshotError::Cancelled) => return Err(SnapshotError::Cancelled),
            Err(error) => {
                tracing::warn!(sha256 = %pin, "the cached snapshot is damaged or was tampered with ({error}); it was removed and the snapshot is fetched again");
                cache.remove(pin);
            }
        }
    }

    let (raw, total): (Box<dyn Read + Send>, Option<u64>) = match &request.source {
        Source::Local(path) => {
            let file = File::open(path).map_err(|e| local_error(path, e))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        }
        Source::Blob(location) => {
            let download = blob::Download::start(location, &request.transfer, cancel)?;
            let total = download.total;
            (Box::new(download), Some(total))
        }
    };
    let pending = match (&cache, &request.sha256) {
        (Some(cache), Some(pin)) => cache.begin(pin),
        _ => None,
    };
    let cache_use = if cache.is_some() {
        CacheUse::Miss
    } else {
        CacheUse::Off
    };
    match pending {
        Some(mut pending) => {
            let unpacked = unpack(
                cache::Tee::new(raw, &mut pending),
                total,
                workdir,
                request,
                &shown,
                cancel,
            )?;
            pending.commit();
            Ok(report(&shown, unpacked, cache_use))
        }
        None => {
            let unpacked = unpack(raw, total, workdir, request, &shown, cancel)?;
            Ok(report(&shown, unpacked, cache_use))
        }
    }
}

fn report(shown: &str, unpacked: Unpacked, cache: CacheUse) -> Report {
    Report {
        source: shown.to_string(),
        sha256: unpacked.sha256,
        bytes: unpacked.bytes,
        files: unpacked.files,
        cache,
    }
}

/// A local file's open error as the snapshot error a blob's would be.
pub fn local_error(path: &Path, error: io::Error) -> SnapshotError {
    let source = path.display().to_string();
    match error.kind() {
        io::ErrorKind::NotFound => SnapshotError::NotFound {
            location: source,
            detail: "no such file".into(),
        },
        io::ErrorKind::PermissionDenied => SnapshotError::Denied {
            location: source,
            detail: error.to_string(),
            fix: "make the file readable by the agent's user",
        },
        _ => SnapshotError::Unavailable {
            location: source,
            detail: error.to_string(),
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub sha256: String,
    pub bytes: u64,
    pub files: u64,
}

/// Unpacks an archive from any reader into `workdir` under `budget` (the benches' way in:
/// no source, cache or pin).
pub fn unpack_archive(
    raw: impl Read,
    workdir: &Path,
    budget: Budget,
) -> Result<Unpacked, SnapshotError> {
    let request = Request {
        source: Source::Local(PathBuf::from("(stream)")),
        sha256: None,
        cache_dir: None,
        budget,
        transfer: Transfer::default(),
    };
    unpack(
        raw,
        None,
        workdir,
        &request,
        "(stream)",
        &AtomicBool::new(false),
    )
}

/// One streaming pass over `raw`: digest, unpack, verify. On any failure the workdir is
/// left as it was found.
fn unpack(
    raw: impl Read,
    total: Option<u64>,
    workdir: &Path,
    request: &Request,
    shown: &str,
    cancel: &AtomicBool,
) -> Result<Unpacked, SnapshotError> {
    let started = Instant::now();
    let workdir_error = |error: io::Error| SnapshotError::Workdir {
        path: workdir.display().to_string(),
        error,
    };
    let mut extractor = Extractor::new(workdir, request.budget).map_err(workdir_error)?;
    let faults = FaultSlot::default();
    let mut hashing = Hashing::new(progress::Progress::new(raw, total));
    let compressed = hashing.bytes.clone();
    let result = (|| {
        let (head, rest) = stream::read_head(&mut hashing).map_err(Failure::Read)?;
        let format = stream::detect(&head).ok_or_else(|| {
            Failure::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                if head.is_empty() {
                    "the file is empty".to_string()
                } else {
                    "it starts with neither the gzip nor the tar magic bytes".to_string()
                },
            ))
        })?;
        let mut tar = stream::tar_stream(
            format,
            head,
            rest,
            compressed,
            request.budget,
            faults.clone(),
        );
        let unpacked = extractor.unpack(&mut tar, cancel);
        let unpacked = match unpacked {
            Err(Failure::Read(error)) if tar.ended() => Err(Failure::Read(truncated(error))),
            other => other,
        }?;
        tar.expect_end_of_archive().map_err(Failure::Read)?;
        // The rest of the stream: the tar's record padding and the gzip trailers, whose
        // CRCs are checked, and nothing else (see `gzip`).
        io::copy(&mut tar, &mut io::sink()).map_err(Failure::Read)?;
        Ok(unpacked)
    })();
    let entry = extractor.current_entry().to_string();
    let outcome =
        result.map_err(|failure| explain(failure, shown, &entry, &faults, cancel, workdir));
    let outcome = outcome.and_then(|unpacked| {
        let (sha256, bytes) = hashing.finish().map_err(|e| SnapshotError::Corrupt {
            location: shown.to_string(),
            detail: e.to_string(),
        })?;
        if let Some(expected) = &request.sha256
            && *expected != sha256
        {
            return Err(SnapshotError::Integrity {
                location: shown.to_string(),
                expected: expected.clone(),
                actual: sha256,
            });
        }
        Ok(Unpacked {
            sha256,
            bytes,
            files: unpacked.files,
        })
    });
    match outcome {
        Ok(unpacked) => {
            tracing::info!(
                source = %shown,
                sha256 = %unpacked.sha256,
                bytes = unpacked.bytes,
                files = unpacked.files,
                duration_ms = started.elapsed().as_millis() as u64,
                "snapshot unpacked"
            );
            Ok(unpacked)
        }
        Err(error) => {
            extractor.remove_created();
            Err(error)
        }
    }
}

/// Names the real cause of a failed pass: the source, a budget, a cancel, the archive
/// itself or the workdir.
fn explain(
    failure: Failure,
    shown: &str,
    entry: &str,
    faults: &FaultSlot,
    cancel: &AtomicBool,
    workdir: &Path,
) -> SnapshotError {
    let source = shown.to_string();
    match failure {
        Failure::Refused(refusal) => SnapshotError::Unsafe {
            location: source,
            entry: refusal.entry,
            reason: refusal.reason,
        },
        Failure::Write(error) => SnapshotError::Workdir {
            path: workdir.display().to_string(),
            error,
        },
        Failure::Read(error) => {
            if let Some(upstream) = blob::take_failure(&error) {
                return upstream;
            }
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return SnapshotError::Cancelled;
            }
            match faults.take() {
                Some(StreamFault::TooLarge { limit }) => SnapshotError::Unsafe {
                    location: source,
                    entry: entry.to_string(),
                    reason: format!(
                        "unpacks to more than {} (raise --snapshot-max-bytes if this is intended)",
                        crate::units::format_bytes(limit)
                    ),
                },
                Some(StreamFault::Bomb { ratio, limit }) => SnapshotError::Unsafe {
                    location: source,
                    entry: entry.to_string(),
                    reason: format!(
                        "expands {ratio}:1, over the limit of {limit}:1 for a compressed snapshot (a decompression bomb; raise --snapshot-max-ratio if this is intended)"
                    ),
                },
                None => SnapshotError::Corrupt {
                    location: source,
                    detail: corrupt_detail(&error),
                },
            }
        }
    }
}

/// A read error of the `tar` crate after the stream ran out (its "unexpected EOF during
/// skip", "failed to read entire block"): the archive was cut inside an entry.
fn truncated(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        return error;
    }
    io::Error::new(io::ErrorKind::UnexpectedEof, error.to_string())
}

fn corrupt_detail(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::UnexpectedEof => "it ends in the middle of an entry (truncated)".into(),
        _ => error.to_string(),
    }
}
