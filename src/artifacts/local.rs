//! The local store: outputs kept on the local disk under a `file://` location, for runs on
//! a laptop with no cloud account. The rules are the blob store's: the sha256 computed on
//! the way, each file written under a temporary name and renamed into place when whole,
//! the manifest last. Inputs read from `file://` go through the inputs phase like blobs.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::digest::{FileDigest, tree_digest};
use super::error::ArtifactError;
use super::outputs::walk;
use super::{Artifact, Kind, Location};
use crate::snapshot::stream::hex;

/// Why storing stopped: reading the task's output, or writing the store.
#[derive(Debug)]
pub enum Failure {
    Read(io::Error),
    Write(io::Error),
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub kind: Kind,
    pub bytes: u64,
    pub files: u64,
    pub sha256: String,
}

impl Stored {
    pub fn artifact(self, declared: &str, destination: &Location) -> Artifact {
        let mut uri = destination.shown();
        if self.kind == Kind::Directory && !uri.ends_with('/') {
            uri.push('/');
        }
        Artifact {
            path: declared.to_string(),
            uri,
            kind: self.kind,
            bytes: self.bytes,
            files: self.files,
            sha256: self.sha256,
        }
    }
}

/// Stores the output at `source` as `kind` at `target`.
pub fn store(source: &Path, kind: Kind, target: &Path) -> Result<Stored, Failure> {
    match kind {
        Kind::File => {
            let (sha256, bytes) = copy_file(source, target)?;
            Ok(Stored {
                kind,
                bytes,
                files: 1,
                sha256,
            })
        }
        Kind::Directory => {
            let mut digests = Vec::new();
            for (relative, path, _) in walk(source).map_err(Failure::Read)? {
                let (sha256, bytes) = copy_file(&path, &target.join(&relative))?;
                digests.push(FileDigest {
                    relative,
                    sha256,
                    bytes,
                });
            }
            Ok(Stored {
                kind,
                bytes: digests.iter().map(|d| d.bytes).sum(),
                files: digests.len() as u64,
                sha256: tree_digest(&digests),
            })
        }
        Kind::Archive => {
            let files = walk(source).map_err(Failure::Read)?.len() as u64;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(Failure::Write)?;
            }
            // `pack` writes a temporary file and renames it in when done.
            let packed = crate::snapshot::pack::pack(source, target).map_err(Failure::Write)?;
            Ok(Stored {
                kind,
                bytes: packed.bytes,
                files,
                sha256: packed.sha256,
            })
        }
    }
}

/// Copies `source` to `target` through a temporary sibling; returns its sha256 and size.
pub fn copy_file(source: &Path, target: &Path) -> Result<(String, u64), Failure> {
    let mut input = File::open(source).map_err(Failure::Read)?;
    let temp = temporary(target);
    let copied = (|| {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Failure::Write)?;
        }
        let mut output = File::create(&temp).map_err(Failure::Write)?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Read(e)),
            };
            hasher.update(&buffer[..n]);
            bytes += n as u64;
            output.write_all(&buffer[..n]).map_err(Failure::Write)?;
        }
        output.sync_all().map_err(Failure::Write)?;
        fs::rename(&temp, target).map_err(Failure::Write)?;
        Ok((hex(&hasher.finalize()), bytes))
    })();
    if copied.is_err() {
        let _ = fs::remove_file(&temp);
    }
    copied
}

/// Writes `body` as the whole file `target`, through a temporary sibling.
pub fn write_whole(target: &Path, body: &[u8]) -> Result<(), Failure> {
    let temp = temporary(target);
    let written = (|| {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(&temp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map_err(Failure::Write)
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}", std::process::id()));
    path.with_file_name(name)
}

/// The error for output `declared` that could not be stored at `destination`.
pub fn output_error(failure: Failure, declared: &str, destination: &Location) -> ArtifactError {
    match failure {
        Failure::Read(source) => ArtifactError::OutputUnreadable {
            path: declared.to_string(),
            source,
        },
        Failure::Write(error) if error.kind() == io::ErrorKind::PermissionDenied => {
            ArtifactError::OutputDenied {
                path: declared.to_string(),
                uri: destination.shown(),
                detail: error.to_string(),
                fix: "give the agent's user write access to the local artifacts directory",
            }
        }
        Failure::Write(error) => ArtifactError::OutputUnavailable {
            path: declared.to_string(),
            uri: destination.shown(),
            detail: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_copied_with_its_layout_and_the_sha256sum_digest() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("out");
        fs::create_dir_all(source.join("deeper")).unwrap();
        fs::write(source.join("a.txt"), "one").unwrap();
        fs::write(source.join("deeper/b.txt"), "two").unwrap();
        let target = dir.path().join("store/files/out");
        let stored = store(&source, Kind::Directory, &target).unwrap();
        assert_eq!(stored.files, 2);
        assert_eq!(fs::read(target.join("deeper/b.txt")).unwrap(), b"two");
        let manifest = format!(
            "{}  a.txt\n{}  deeper/b.txt\n",
            hex(&Sha256::digest(b"one")),
            hex(&Sha256::digest(b"two"))
        );
        assert_eq!(stored.sha256, hex(&Sha256::digest(manifest.as_bytes())));
        let artifact = stored.artifact("out", &Location::Local(target.clone()));
        assert!(artifact.uri.starts_with("file:///") && artifact.uri.ends_with("/out/"));
    }

    #[test]
    fn a_missing_source_is_a_read_failure_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("store/x");
        let failure = copy_file(&dir.path().join("nope"), &target).unwrap_err();
        assert!(matches!(failure, Failure::Read(_)));
        assert!(!dir.path().join("store").exists());
    }
}
