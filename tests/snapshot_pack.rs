//! `task-agent pack DIR -o FILE.tar.gz`, end to end: it prints the archive's sha256 the way
//! `sha256sum` does, and the archive depends only on the tree's names, contents, symlinks
//! and executable bits: not on mtimes, creation order, exact modes or owners. Entries are
//! sorted, owned by root, with one fixed mtime and modes 0644/0755, and `fetch` unpacks
//! the tree again.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::agent_command;
use common::archive::{self, tree};
use common::assertions::assert_exit_code;
use flate2::read::GzDecoder;
use serde_json::Value;

#[derive(Clone, Copy)]
enum Item {
    Dir,
    File(&'static [u8]),
    Executable(&'static [u8]),
    Symlink(&'static str),
}

/// The tree every test packs, in the order its entries must appear in the archive.
const TREE: &[(&str, Item)] = &[
    ("bin", Item::Dir),
    ("bin/run.sh", Item::Executable(b"#!/bin/sh\necho run\n")),
    ("data", Item::Dir),
    ("data/a.txt", Item::File(b"a\n")),
    ("data/b.txt", Item::File(b"b\n")),
    ("data/sub", Item::Dir),
    ("data/sub/c.txt", Item::File(b"c\n")),
    ("empty", Item::Dir),
    ("link", Item::Symlink("data/a.txt")),
    ("readme.txt", Item::File(b"read me\n")),
];

/// How a copy of `TREE` is made on disk.
struct Variant {
    /// Make the entries in reverse order (directories still before what is in them).
    reverse: bool,
    file_mode: u32,
    executable_mode: u32,
    dir_mode: u32,
    /// Give entry i the mtime `base + i hours`; otherwise leave the time of creation.
    mtime_base: Option<SystemTime>,
    /// chown everything to this uid and gid (only possible as root).
    owner: Option<(u32, u32)>,
}

/// Modes as `pack` writes them, mtimes of now, the current user.
const CANONICAL: Variant = Variant {
    reverse: false,
    file_mode: 0o644,
    executable_mode: 0o755,
    dir_mode: 0o755,
    mtime_base: None,
    owner: None,
};

/// The same names, contents, symlinks and executable bits; all else different (the owner
/// only when running as root).
fn unusual() -> Variant {
    Variant {
        reverse: true,
        file_mode: 0o600,
        executable_mode: 0o700,
        dir_mode: 0o700,
        mtime_base: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
        owner: common::is_root().then_some((1234, 5678)),
    }
}

/// Makes `TREE` at `root` as `variant` says.
fn make_tree(root: &Path, variant: &Variant) {
    fs::create_dir(root).expect("tree root");
    let mut items: Vec<(usize, &(&str, Item))> = TREE.iter().enumerate().collect();
    if variant.reverse {
        items.reverse();
    }
    for (_, (name, item)) in &items {
        if let Item::Dir = item {
            fs::create_dir_all(root.join(name)).expect("directory");
        }
    }
    for (_, (name, item)) in &items {
        let path = root.join(name);
        match item {
            Item::Dir => {}
            Item::File(contents) | Item::Executable(contents) => {
                fs::write(&path, contents).expect("file")
            }
            Item::Symlink(target) => std::os::unix::fs::symlink(target, &path).expect("symlink"),
        }
    }
    // Files before directories: writing into a directory changes its mtime.
    let (dirs, others): (Vec<_>, Vec<_>) = items
        .iter()
        .partition(|(_, (_, item))| matches!(item, Item::Dir));
    for (index, (name, item)) in others.into_iter().chain(dirs) {
        let path = root.join(name);
        let mode = match item {
            Item::Dir => variant.dir_mode,
            Item::File(_) => variant.file_mode,
            Item::Executable(_) => variant.executable_mode,
            Item::Symlink(_) => {
                if let Some((uid, gid)) = variant.owner {
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).expect("lchown");
                }
                continue;
            }
        };
        if let Some(base) = variant.mtime_base {
            let time = base + Duration::from_secs(3600 * index as u64);
            File::open(&path)
                .and_then(|file| file.set_modified(time))
                .expect("set mtime");
        }
        if let Some((uid, gid)) = variant.owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

/// A temp dir for trees and archives, and the agent's cwd.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `TREE` made as `variant` says at `scratch/name`.
    fn tree(&self, name: &str, variant: &Variant) -> PathBuf {
        let root = self.path(name);
        make_tree(&root, variant);
        root
    }

    /// Runs `task-agent pack DIR -o OUT` here; checks that it printed `<sha256>  OUT`
    /// with the sha256 of the file written, and returns that digest.
    #[track_caller]
    fn pack(&self, dir: &Path, out: &Path) -> String {
        let output = agent_command()
            .current_dir(self.dir.path())
            .arg("pack")
            .arg(dir)
            .arg("-o")
            .arg(out)
            .output()
            .expect("task-agent runs");
        assert_exit_code(&output, 0);
        let written = fs::read(self.dir.path().join(out)).expect("the packed file");
        let digest = archive::sha256_hex(&written);
        assert_eq!(
            common::stdout(&output),
            format!("{digest}  {}\n", out.display()),
            "pack should print the file's sha256 and its path, as sha256sum does"
        );
        digest
    }
}

#[test]
fn pack_prints_the_sha256_and_path_as_sha256sum_does() {
    let scratch = Scratch::new();
    scratch.tree("tree", &CANONICAL);

    // Relative paths, printed as given.
    scratch.pack(Path::new("tree"), Path::new("out.tar.gz"));
    let bytes = fs::read(scratch.path("out.tar.gz")).unwrap();
    assert_eq!(bytes[..2], [0x1f, 0x8b], "not gzip");
}

#[test]
fn packing_the_same_tree_twice_gives_the_same_bytes() {
    let scratch = Scratch::new();
    let tree = scratch.tree("tree", &CANONICAL);
    fs::create_dir(scratch.path("later")).unwrap();

    let first = scratch.pack(&tree, &scratch.path("first.tar.gz"));
    // Long enough for a clock with seconds to tick; the name differs too.
    std::thread::sleep(Duration::from_millis(1100));
    let second = scratch.pack(&tree, &scratch.path("later/second.tar.gz"));
    assert_eq!(
        first, second,
        "packing the same tree twice gave two digests"
    );
}

/// Packs `TREE` made canonically and as `variant` says, and checks both digests match.
#[track_caller]
fn assert_packs_like_the_canonical_tree(variant: &Variant, difference: &str) {
    let scratch = Scratch::new();
    let original = scratch.tree("original", &CANONICAL);
    let copy = scratch.tree("copy", variant);

    let original_digest = scratch.pack(&original, &scratch.path("original.tar.gz"));
    let copy_digest = scratch.pack(&copy, &scratch.path("copy.tar.gz"));
    assert_eq!(
        original_digest, copy_digest,
        "a copy of the tree with {difference} packs differently"
    );
}

#[test]
fn a_copy_with_other_mtimes_packs_the_same() {
    let variant = Variant {
        mtime_base: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
        ..CANONICAL
    };
    assert_packs_like_the_canonical_tree(&variant, "other mtimes");
}

/// Matters where directories list entries in creation order (tmpfs); on ext4 the order is
/// by hash either way, and the sorted-entries test is what catches an unsorted pack.
#[test]
fn a_copy_made_in_the_reverse_order_packs_the_same() {
    let variant = Variant {
        reverse: true,
        ..CANONICAL
    };
    assert_packs_like_the_canonical_tree(&variant, "its entries made in the reverse order");
}

#[test]
fn a_copy_with_other_modes_but_the_same_executable_bits_packs_the_same() {
    let variant = Variant {
        file_mode: 0o600,
        executable_mode: 0o700,
        dir_mode: 0o700,
        ..CANONICAL
    };
    assert_packs_like_the_canonical_tree(&variant, "modes 0600/0700");
}

#[test]
fn a_copy_with_another_owner_packs_the_same() {
    if !common::is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let variant = Variant {
        owner: Some((1234, 5678)),
        ..CANONICAL
    };
    assert_packs_like_the_canonical_tree(&variant, "another owner");
}

/// What the test checks of one archive entry.
#[derive(Debug)]
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
}

/// The entries of a packed archive; paths without a leading `./` or trailing `/`, and
/// no entry for the root itself.
fn entries(packed: &Path) -> Vec<Entry> {
    let mut reader = tar::Archive::new(GzDecoder::new(File::open(packed).unwrap()));
    let mut entries = Vec::new();
    for entry in reader.entries().expect("a tar inside") {
        let entry = entry.expect("a well-formed entry");
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = raw.strip_prefix("./").unwrap_or(&raw).trim_end_matches('/');
        if path.is_empty() || path == "." {
            continue;
        }
        let header = entry.header();
        entries.push(Entry {
            path: path.to_owned(),
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            mtime: header.mtime().unwrap(),
            link: entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
        });
    }
    entries
}

#[test]
fn the_archive_is_sorted_with_one_mtime_root_owner_and_normalized_modes() {
    let scratch = Scratch::new();
    let tree = scratch.tree("tree", &unusual());
    let packed = scratch.path("out.tar.gz");
    scratch.pack(&tree, &packed);

    let entries = entries(&packed);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let expected: Vec<&str> = TREE.iter().map(|(name, _)| *name).collect();
    assert_eq!(paths, expected, "entries, in order");

    let mtime = entries[0].mtime;
    for (entry, (_, item)) in entries.iter().zip(TREE) {
        assert_eq!((entry.uid, entry.gid), (0, 0), "{entry:?}");
        assert_eq!(entry.mtime, mtime, "{entry:?}");
        let (kind, mode) = match item {
            Item::Dir => (tar::EntryType::Directory, Some(0o755)),
            Item::File(_) => (tar::EntryType::Regular, Some(0o644)),
            Item::Executable(_) => (tar::EntryType::Regular, Some(0o755)),
            Item::Symlink(_) => (tar::EntryType::Symlink, None),
        };
        assert_eq!(entry.kind, kind, "{entry:?}");
        if let Some(mode) = mode {
            assert_eq!(entry.mode & 0o7777, mode, "{entry:?}");
        }
        if let Item::Symlink(target) = item {
            assert_eq!(entry.link.as_deref(), Some(*target), "{entry:?}");
        }
    }
}

#[test]
fn fetching_a_packed_snapshot_reproduces_the_tree() {
    let scratch = Scratch::new();
    let tree = scratch.tree("tree", &CANONICAL);
    let packed = scratch.path("out.tar.gz");
    let digest = scratch.pack(&tree, &packed);
    let workdir = scratch.path("workspace");

    let output = agent_command()
        .arg("fetch")
        .arg("--snapshot")
        .arg(&packed)
        .arg("--workdir")
        .arg(&workdir)
        .args(["--snapshot-sha256", &digest])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let summary: Value = serde_json::from_str(common::stdout(&output).trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", common::stdout(&output)));
    assert_eq!(summary["sha256"], digest, "{summary}");
    assert_eq!(summary["files"], 5, "{summary}");
    assert_eq!(tree::read(&workdir), tree::read(&tree));
}
