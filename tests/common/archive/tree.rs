//! What a directory holds, read back without following symlinks, so a test can compare a
//! workdir with what an archive should have put there, or check that the directories
//! around it are exactly as they were.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::sha256_hex;

/// One entry, with what matters for comparing trees (not times, owners or inodes).
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    /// `contents` is the text itself when short, a digest otherwise (for readable diffs).
    File {
        mode: u32,
        links: u64,
        contents: String,
    },
    Symlink {
        target: String,
    },
    /// Devices, FIFOs and sockets.
    Special {
        kind: &'static str,
    },
}

/// Modes in octal, so a diff of two trees reads as `ls -l` would.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Dir { mode } => write!(f, "dir {mode:04o}"),
            Node::File {
                mode,
                links,
                contents,
            } => write!(f, "file {mode:04o} links={links} {contents:?}"),
            Node::Symlink { target } => write!(f, "symlink -> {target:?}"),
            Node::Special { kind } => write!(f, "{kind}"),
        }
    }
}

/// Entries by path relative to the root, `/`-separated.
pub type Tree = BTreeMap<String, Node>;

pub fn dir(mode: u32) -> Node {
    Node::Dir { mode }
}

/// A regular file with one link.
pub fn file(mode: u32, contents: &[u8]) -> Node {
    Node::File {
        mode,
        links: 1,
        contents: describe(contents),
    }
}

pub fn symlink(target: &str) -> Node {
    Node::Symlink {
        target: target.to_owned(),
    }
}

/// Everything below `root` (not `root` itself); empty if `root` does not exist.
pub fn read(root: &Path) -> Tree {
    read_except(root, None)
}

/// Everything below `root` except `skip` and what is below it.
pub fn read_except(root: &Path, skip: Option<&Path>) -> Tree {
    let mut tree = Tree::new();
    if root.exists() {
        walk(root, "", skip, &mut tree);
    }
    tree
}

/// Builds an expected tree from `(path, node)` pairs.
pub fn from<S: Into<String>>(entries: impl IntoIterator<Item = (S, Node)>) -> Tree {
    entries
        .into_iter()
        .map(|(path, node)| (path.into(), node))
        .collect()
}

/// Contents as they appear in a `Node::File`.
pub fn describe(contents: &[u8]) -> String {
    match std::str::from_utf8(contents) {
        Ok(text) if text.len() <= 200 => text.to_owned(),
        _ => format!("{} bytes, sha256 {}", contents.len(), sha256_hex(contents)),
    }
}

fn walk(dir: &Path, prefix: &str, skip: Option<&Path>, tree: &mut Tree) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        if Some(path.as_path()) == skip {
            continue;
        }
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let metadata = fs::symlink_metadata(&path).expect("metadata");
        let kind = metadata.file_type();
        let mode = metadata.permissions().mode() & 0o7777;
        let node = if kind.is_symlink() {
            let target = fs::read_link(&path).expect("symlink target");
            Node::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if kind.is_dir() {
            walk(&path, &format!("{name}/"), skip, tree);
            Node::Dir { mode }
        } else if kind.is_file() {
            Node::File {
                mode,
                links: metadata.nlink(),
                contents: describe(&fs::read(&path).expect("file contents")),
            }
        } else {
            let kind = if kind.is_char_device() {
                "char device"
            } else if kind.is_block_device() {
                "block device"
            } else if kind.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            Node::Special { kind }
        };
        tree.insert(name, node);
    }
}
