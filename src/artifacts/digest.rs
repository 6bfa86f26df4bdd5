//! The digests the record gives: a file's sha256, and a directory's — the sha256 of its
//! manifest text, one `SHA256  RELATIVE_PATH\n` line per file sorted by path bytewise,
//! which is what `sha256sum` prints, so a user can recompute it with standard tools.

use sha2::{Digest, Sha256};

use crate::snapshot::stream::hex;

/// One file of a directory: its path relative to the directory (`/`-separated) and its
/// sha256 in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub relative: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The directory digest of `files` (sorted here; the caller's order does not matter).
pub fn tree_digest(files: &[FileDigest]) -> String {
    let mut sorted: Vec<&FileDigest> = files.iter().collect();
    sorted.sort_by(|a, b| a.relative.as_bytes().cmp(b.relative.as_bytes()));
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(file.sha256.as_bytes());
        hasher.update(b"  ");
        hasher.update(file.relative.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(relative: &str, contents: &[u8]) -> FileDigest {
        FileDigest {
            relative: relative.into(),
            sha256: hex(&Sha256::digest(contents)),
            bytes: contents.len() as u64,
        }
    }

    #[test]
    fn the_digest_is_sha256sum_of_the_sorted_manifest() {
        let files = [file("b/2.txt", b"two\n"), file("a.txt", b"one\n")];
        let manifest = format!("{}  a.txt\n{}  b/2.txt\n", files[1].sha256, files[0].sha256);
        assert_eq!(
            tree_digest(&files),
            hex(&Sha256::digest(manifest.as_bytes()))
        );
        let reversed = [files[1].clone(), files[0].clone()];
        assert_eq!(tree_digest(&reversed), tree_digest(&files));
    }

    #[test]
    fn an_empty_directory_has_the_digest_of_nothing() {
        assert_eq!(tree_digest(&[]), hex(&Sha256::digest(b"")));
    }
}
