//! `task-agent fetch` and `task-agent run --snapshot` on local archives, end to end.
//!
//! The hostile corpus: one test per safety rule of the snapshot interface. Each archive
//! starts with a harmless directory and file, so that something has been extracted by the
//! time the hostile entry comes; each test checks the exit code (65), the error line (its
//! kind and the entry named as in the archive), that nothing around the workdir changed,
//! and that the workdir holds nothing the extraction created. Then corrupt input, and
//! archives that must extract exactly as they are.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::archive::tree::{self, Node, Tree};
use common::archive::{self, LongName, Tar};
use common::assertions::assert_exit_code;
use common::{Task, agent_command};
use flate2::read::GzDecoder;
use serde_json::Value;

const UNSAFE: &str = "snapshot_unsafe";
const CORRUPT: &str = "snapshot_corrupt";

/// A scratch directory laid out so that any escape from the workdir lands where the test
/// looks (the whole scratch directory but the workdir is compared before and after):
///
/// ```text
/// scratch/                        archives are written here; the agent's cwd
/// scratch/outer/workspace/        the workdir, empty
/// scratch/outer/outside/secret.txt
/// scratch/outer/sibling.txt
/// ```
struct Scene {
    scratch: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let scratch = tempfile::tempdir().expect("temp dir");
        let outer = scratch.path().join("outer");
        fs::create_dir_all(outer.join("workspace")).expect("workdir");
        fs::create_dir_all(outer.join("outside")).expect("outside dir");
        fs::write(outer.join("outside/secret.txt"), "secret\n").expect("secret");
        fs::write(outer.join("sibling.txt"), "sibling\n").expect("sibling");
        Scene { scratch }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.scratch.path().join(relative)
    }

    fn workdir(&self) -> PathBuf {
        self.path("outer/workspace")
    }

    /// Writes `bytes` to `scratch/name`.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        archive::write(self.scratch.path(), name, bytes)
    }

    /// `task-agent fetch --snapshot SOURCE --workdir WORKDIR OPTIONS`, run in the scratch
    /// directory.
    fn command(&self, source: impl AsRef<OsStr>, options: &[&str]) -> Command {
        let mut command = agent_command();
        command
            .current_dir(self.scratch.path())
            .arg("fetch")
            .arg("--snapshot")
            .arg(source)
            .arg("--workdir")
            .arg(self.workdir())
            .args(options);
        command
    }

    fn fetch(&self, source: impl AsRef<OsStr>, options: &[&str]) -> Fetched<'_> {
        self.run(self.command(source, options))
    }

    fn run(&self, mut command: Command) -> Fetched<'_> {
        let outside_before = self.outside();
        let workdir_before = tree::read(&self.workdir());
        let output = command.output().expect("task-agent runs");
        Fetched {
            scene: self,
            output,
            outside_before,
            workdir_before,
        }
    }

    /// Everything in the scratch directory except the workdir.
    fn outside(&self) -> Tree {
        tree::read_except(self.scratch.path(), Some(&self.workdir()))
    }
}

/// A finished `task-agent fetch` and what surrounded its workdir before it ran.
struct Fetched<'a> {
    scene: &'a Scene,
    output: Output,
    outside_before: Tree,
    workdir_before: Tree,
}

impl Fetched<'_> {
    #[track_caller]
    fn assert_unsafe(&self, entry: &str) {
        self.assert_failed(65, UNSAFE, Some(entry));
    }

    #[track_caller]
    fn assert_corrupt(&self) {
        self.assert_failed(65, CORRUPT, None);
    }

    /// Exit `code`, an ERROR line with `kind=KIND` (naming `entry`, if given), nothing
    /// changed outside the workdir, and the workdir as it was before.
    #[track_caller]
    fn assert_failed(&self, code: i32, kind: &str, entry: Option<&str>) {
        assert_exit_code(&self.output, code);
        let line = self.error_line(kind);
        if let Some(entry) = entry {
            assert!(
                line.contains(entry),
                "the error should name the entry {entry:?}: {line}"
            );
        }
        self.assert_outside_untouched();
        assert_eq!(
            tree::read(&self.scene.workdir()),
            self.workdir_before,
            "the workdir should hold nothing the failed extraction created"
        );
    }

    /// The `[task-agent] ERROR … kind=KIND` line on stderr.
    #[track_caller]
    fn error_line(&self, kind: &str) -> String {
        let stderr = common::stderr(&self.output);
        let tag = format!("kind={kind}");
        stderr
            .lines()
            .find(|line| line.contains("ERROR") && line.contains(&tag))
            .unwrap_or_else(|| panic!("no ERROR line with {tag} on stderr:\n{stderr}"))
            .to_owned()
    }

    #[track_caller]
    fn assert_outside_untouched(&self) {
        assert_eq!(
            self.scene.outside(),
            self.outside_before,
            "something outside the workdir changed"
        );
    }

    /// Exit 0 with one JSON line on stdout, describing `snapshot` with `files` regular
    /// files written, and nothing changed outside the workdir. Returns the line.
    #[track_caller]
    fn assert_extracted(&self, snapshot: &Path, files: u64) -> Value {
        assert_exit_code(&self.output, 0);
        let stdout = common::stdout(&self.output);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout should be one JSON line: {stdout:?}");
        let summary: Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
        let mut keys: Vec<&str> = summary
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {summary}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["bytes", "cache", "files", "sha256", "source"]);
        assert_summary_describes(&summary, snapshot, files);
        assert_eq!(summary["cache"], "off", "{summary}");
        self.assert_outside_untouched();
        summary
    }
}

/// `summary` (fetch's JSON line or the record's `snapshot`) names `snapshot`, with the
/// sha256 and size of the file as it is and `files` regular files written.
#[track_caller]
fn assert_summary_describes(summary: &Value, snapshot: &Path, files: u64) {
    let bytes = fs::read(snapshot).expect("snapshot file");
    assert_eq!(summary["sha256"], archive::sha256_hex(&bytes), "{summary}");
    assert_eq!(summary["bytes"], bytes.len() as u64, "{summary}");
    assert_eq!(summary["files"], files, "{summary}");
    let name = snapshot.file_name().unwrap().to_str().unwrap();
    let source = summary["source"].as_str().unwrap_or("");
    assert!(
        source.ends_with(name),
        "source should name {name}: {summary}"
    );
}

/// A directory and a file that are fine, extracted before the hostile entry that follows.
fn harmless() -> Tar {
    Tar::new()
        .dir("src/", 0o755)
        .file("src/ok.txt", 0o644, b"fine\n")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

// ---------------------------------------------------------------------------------------
// Paths that leave the workdir

#[test]
fn an_absolute_path_is_refused() {
    let scene = Scene::new();
    let target = scene.path("outer/outside/absolute.txt");
    let name = path_str(&target);
    let tar = if name.len() <= 100 {
        harmless().file(name, 0o644, b"escaped\n")
    } else {
        harmless().file_with_long_name(name, LongName::Pax, b"escaped\n")
    };
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "absolute.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe(name);
    assert!(!target.exists());
}

#[test]
fn a_dotdot_escape_is_refused() {
    let scene = Scene::new();
    let tar = harmless().file("../escaped.txt", 0o644, b"escaped\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "dotdot.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("../escaped.txt");
    assert!(!scene.path("outer/escaped.txt").exists());
}

#[test]
fn a_nested_dotdot_escape_is_refused() {
    let scene = Scene::new();
    let tar = harmless()
        .dir("a/", 0o755)
        .file("a/../../sibling.txt", 0o644, b"overwritten\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "nested.tar.gz", tar);

    scene
        .fetch(&snapshot, &[])
        .assert_unsafe("a/../../sibling.txt");
    assert_eq!(
        fs::read_to_string(scene.path("outer/sibling.txt")).unwrap(),
        "sibling\n"
    );
}

// ---------------------------------------------------------------------------------------
// Symlinks

#[test]
fn a_symlink_to_an_absolute_path_is_refused() {
    let scene = Scene::new();
    let tar = harmless().symlink("etc", "/etc");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "etc.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("etc");
}

#[test]
fn a_symlink_to_a_relative_path_outside_is_refused() {
    let scene = Scene::new();
    let tar = harmless().symlink("up", "../outside");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "up.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("up");
}

#[test]
fn a_file_written_through_an_escaping_symlink_is_refused() {
    let scene = Scene::new();
    let tar =
        harmless()
            .symlink("escape", "../outside")
            .file("escape/planted.txt", 0o644, b"planted\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "through.tar.gz", tar);

    // Refusing the symlink or the file written through it are both right.
    scene.fetch(&snapshot, &[]).assert_unsafe("escape");
    assert!(!scene.path("outer/outside/planted.txt").exists());
}

#[test]
fn a_file_written_through_a_symlink_inside_the_workdir_is_refused() {
    let scene = Scene::new();
    // The symlink alone is fine; writing a path whose parent is that symlink is not.
    let tar = harmless()
        .dir("real/", 0o755)
        .symlink("alias", "real")
        .file("alias/file.txt", 0o644, b"through the alias\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "alias.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("alias/file.txt");
}

#[test]
fn a_symlink_chain_escaping_in_two_steps_is_refused() {
    let scene = Scene::new();
    // `dir/up` is the workdir itself (allowed). `hop` is `dir` on paper, but resolved
    // through `dir/up` it is the workdir's parent.
    let tar = harmless()
        .dir("dir/", 0o755)
        .symlink("dir/up", "..")
        .symlink("hop", "dir/up/..");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "chain.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("hop");
}

#[test]
fn a_pre_existing_symlink_in_the_workdir_is_not_followed() {
    let scene = Scene::new();
    std::os::unix::fs::symlink("../outside", scene.workdir().join("data")).unwrap();
    let tar = harmless().file("data/file.txt", 0o644, b"through the workdir's link\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "data.tar.gz", tar);

    // The workdir must still hold the symlink, and only it.
    scene.fetch(&snapshot, &[]).assert_unsafe("data/file.txt");
    assert!(!scene.path("outer/outside/file.txt").exists());
    assert_eq!(
        tree::read(&scene.workdir()),
        tree::from([("data", tree::symlink("../outside"))])
    );
}

// ---------------------------------------------------------------------------------------
// Hard links

#[test]
fn a_hard_link_to_a_relative_path_outside_is_refused() {
    let scene = Scene::new();
    let tar = harmless().hard_link("stolen", "../outside/secret.txt");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "hard.tar.gz", tar);

    // The comparison of what is outside includes link counts: secret.txt must still
    // have one.
    scene.fetch(&snapshot, &[]).assert_unsafe("stolen");
}

#[test]
fn a_hard_link_to_an_absolute_path_is_refused() {
    let scene = Scene::new();
    let secret = scene.path("outer/outside/secret.txt");
    let tar = harmless().hard_link("stolen", path_str(&secret));
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "hard-abs.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("stolen");
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn a_hard_link_to_an_earlier_symlink_is_refused() {
    let scene = Scene::new();
    let tar = harmless()
        .file("target.txt", 0o644, b"target\n")
        .symlink("link", "target.txt")
        .hard_link("hard", "link");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "hard-sym.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("hard");
}

#[test]
fn a_hard_link_to_a_missing_target_is_refused() {
    let scene = Scene::new();
    let tar = harmless().hard_link("hard", "nowhere.txt");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "hard-missing.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("hard");
}

// ---------------------------------------------------------------------------------------
// Devices and FIFOs

#[test]
fn a_character_device_is_refused() {
    let scene = Scene::new();
    let tar = harmless().dir("dev/", 0o755).char_device("dev/null", 1, 3);
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "chr.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("dev/null");
}

#[test]
fn a_block_device_is_refused() {
    let scene = Scene::new();
    let tar = harmless().dir("dev/", 0o755).block_device("dev/sda", 8, 0);
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "blk.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("dev/sda");
}

#[test]
fn a_fifo_is_refused() {
    let scene = Scene::new();
    let tar = harmless().fifo("pipe");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "fifo.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_unsafe("pipe");
}

// ---------------------------------------------------------------------------------------
// Modes

#[test]
fn setuid_setgid_and_sticky_bits_are_stripped_not_refused() {
    let scene = Scene::new();
    let tar = Tar::new()
        .file("suid", 0o4755, b"#!/bin/sh\n")
        .file("sgid", 0o2755, b"#!/bin/sh\n")
        .file("sgid-data", 0o2644, b"data\n")
        .dir("shared/", 0o1777);
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "suid.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_extracted(&snapshot, 3);
    let mode = |name: &str| {
        let path = scene.workdir().join(name);
        fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o755);
    assert_eq!(mode("sgid-data"), 0o644);
    assert!(scene.workdir().join("shared").is_dir());
    assert_eq!(mode("shared") & 0o7000, 0, "shared/ keeps its sticky bit");
}

// ---------------------------------------------------------------------------------------
// Budgets

/// The most the agent may write to any one file in the gzip-bomb test: far below the
/// bomb, above what the ratio budget lets through (16 MiB, or 200 times the whole
/// compressed archive if that is how the ratio is measured).
const FILE_SIZE_LIMIT: u64 = 64 << 20;
const BOMB_SIZE: u64 = 200 << 20;

#[test]
fn a_gzip_bomb_is_stopped_by_the_ratio_budget() {
    let scene = Scene::new();
    let bytes = archive::gzip_bomb("zeros.bin", BOMB_SIZE);
    assert!(bytes.len() < 1 << 20, "the bomb is {} bytes", bytes.len());
    let mut header = [0u8; archive::BLOCK];
    GzDecoder::new(&bytes[..]).read_exact(&mut header).unwrap();
    assert_eq!(
        tar::Header::from_byte_slice(&header).size().unwrap(),
        BOMB_SIZE
    );
    let snapshot = scene.write("bomb.tar.gz", &bytes);

    // Writing more than FILE_SIZE_LIMIT to one file kills the agent with SIGXFSZ (or, if
    // it ignores that signal, fails the write with EFBIG).
    let mut command = scene.command(&snapshot, &[]);
    limit_file_size(&mut command, FILE_SIZE_LIMIT);
    let fetched = scene.run(command);
    assert_ne!(
        fetched.output.status.signal(),
        Some(libc::SIGXFSZ),
        "the agent wrote more than {FILE_SIZE_LIMIT} bytes to one file"
    );
    fetched.assert_unsafe("zeros.bin");
}

/// Sets RLIMIT_FSIZE for the process `command` starts.
fn limit_file_size(command: &mut Command, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// `count` one-line files named f00, f01, …
fn numbered_files(count: usize) -> Tar {
    (0..count).fold(Tar::new(), |tar, i| {
        tar.file(&format!("f{i:02}"), 0o644, b"x\n")
    })
}

#[test]
fn one_entry_over_the_entry_budget_is_refused() {
    let scene = Scene::new();
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "many.tar.gz", numbered_files(20));

    // f00..f09 fit; f10 is the eleventh entry.
    scene
        .fetch(&snapshot, &["--snapshot-max-entries", "10"])
        .assert_unsafe("f10");
}

#[test]
fn more_bytes_than_the_byte_budget_are_refused() {
    let scene = Scene::new();
    let tar = Tar::new()
        .file("a.bin", 0o644, &vec![b'a'; 600 << 10])
        .file("b.bin", 0o644, &vec![b'b'; 600 << 10]);
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "bytes.tar.gz", tar);

    scene
        .fetch(&snapshot, &["--snapshot-max-bytes", "1Mi"])
        .assert_unsafe("b.bin");
}

#[test]
fn a_path_longer_than_the_path_budget_is_refused() {
    let scene = Scene::new();
    let name = format!("long-{}", "n".repeat(145));
    assert_eq!(name.len(), 150);
    let tar = harmless().file_with_long_name(&name, LongName::Gnu, b"long\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "long.tar.gz", tar);

    scene
        .fetch(&snapshot, &["--snapshot-max-path-bytes", "100"])
        .assert_unsafe(&name);
}

#[test]
fn a_path_longer_than_the_default_path_budget_is_refused() {
    let scene = Scene::new();
    // Five 200-byte directories and a 100-byte name: 1105 bytes, over the default 1024.
    let component = format!("too-long-path-{}", "d".repeat(186));
    let name = format!("{}{}", format!("{component}/").repeat(5), "f".repeat(100));
    assert_eq!(name.len(), 1105);
    let tar = harmless().file_with_long_name(&name, LongName::Pax, b"long\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "longer.tar.gz", tar);

    // The message may shorten a path this long; it must at least start it.
    scene.fetch(&snapshot, &[]).assert_unsafe(&name[..60]);
}

#[test]
fn a_path_deeper_than_the_depth_budget_is_refused() {
    let scene = Scene::new();
    let tar = harmless().file("a/b/c/d/e/f.txt", 0o644, b"deep\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "deep.tar.gz", tar);

    scene
        .fetch(&snapshot, &["--snapshot-max-depth", "4"])
        .assert_unsafe("a/b/c/d/e/f.txt");
}

#[test]
fn an_archive_exactly_at_its_budgets_is_extracted() {
    let scene = Scene::new();
    let hundred = "p".repeat(100);
    // Ten entries, a path of exactly 100 bytes, three levels, 900 KiB and a bit.
    let tar = Tar::new()
        .dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .file("a/b/c.txt", 0o644, b"three deep\n")
        .file(&hundred, 0o644, b"a hundred bytes of name\n")
        .file("big.bin", 0o644, &vec![b'z'; 900 << 10])
        .file("s1", 0o644, b"1\n")
        .file("s2", 0o644, b"2\n")
        .file("s3", 0o644, b"3\n")
        .file("s4", 0o644, b"4\n")
        .file("s5", 0o644, b"5\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "budgets.tar.gz", tar);

    let options = [
        "--snapshot-max-entries",
        "10",
        "--snapshot-max-bytes",
        "1Mi",
        "--snapshot-max-path-bytes",
        "100",
        "--snapshot-max-depth",
        "4",
    ];
    scene
        .fetch(&snapshot, &options)
        .assert_extracted(&snapshot, 8);
    assert_eq!(
        fs::read(scene.workdir().join(&hundred)).unwrap(),
        b"a hundred bytes of name\n"
    );
    assert_eq!(tree::read(&scene.workdir()).len(), 10);
}

// ---------------------------------------------------------------------------------------
// Corrupt input

/// `bytes` with 16 bytes in the middle flipped; checks that gzip no longer decodes them.
fn damaged(mut bytes: Vec<u8>) -> Vec<u8> {
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    assert!(
        GzDecoder::new(&bytes[..])
            .read_to_end(&mut Vec::new())
            .is_err(),
        "the damaged fixture still decodes"
    );
    bytes
}

#[test]
fn a_damaged_deflate_stream_is_corrupt() {
    let scene = Scene::new();
    let log: String = (0..20_000)
        .map(|i| format!("line {i} of a log that compresses well\n"))
        .collect();
    let tar = harmless().file("log.txt", 0o644, log.as_bytes()).file(
        "last.txt",
        0o644,
        b"after the damage\n",
    );
    let snapshot = scene.write("damaged.tar.gz", &damaged(archive::gzip(&tar.finish())));

    scene.fetch(&snapshot, &[]).assert_corrupt();
}

#[test]
fn a_gzip_checksum_mismatch_is_corrupt() {
    let scene = Scene::new();
    // Noise is stored, not compressed: flipped bytes in it still inflate, into wrong data
    // that only the gzip trailer's CRC shows (the tar structure itself is intact).
    let tar = harmless()
        .file("noise.bin", 0o644, &archive::noise(256 << 10, 1))
        .file("last.txt", 0o644, b"after the damage\n");
    let snapshot = scene.write("crc.tar.gz", &damaged(archive::gzip(&tar.finish())));

    scene.fetch(&snapshot, &[]).assert_corrupt();
}

/// `first.txt` (header and one data block) and `big.bin`, 64 KiB of noise.
fn two_files() -> Vec<u8> {
    Tar::new()
        .file("first.txt", 0o644, b"complete\n")
        .file("big.bin", 0o644, &archive::noise(64 << 10, 2))
        .finish()
}

#[test]
fn a_truncated_tar_is_corrupt() {
    let scene = Scene::new();
    // first.txt whole, big.bin's header and 10000 of its 65536 bytes.
    let cut = &two_files()[..3 * archive::BLOCK + 10_000];
    let snapshot = scene.write("truncated.tar", cut);

    scene.fetch(&snapshot, &[]).assert_corrupt();
}

#[test]
fn a_truncated_tar_gz_is_corrupt() {
    let scene = Scene::new();
    let gz = archive::gzip(&two_files());
    let snapshot = scene.write("truncated.tar.gz", &gz[..gz.len() * 2 / 3]);

    scene.fetch(&snapshot, &[]).assert_corrupt();
}

#[test]
fn a_tar_without_its_end_of_archive_marker_is_corrupt() {
    // Cut exactly at an entry boundary: every entry is whole, only the two zero blocks a
    // producer always writes are missing.
    let unfinished = || {
        harmless()
            .file("last.txt", 0o644, b"the last entry is whole\n")
            .unfinished()
    };
    let scene = Scene::new();
    let snapshot = scene.write("unfinished.tar", &unfinished());
    scene.fetch(&snapshot, &[]).assert_corrupt();
    assert!(
        scene
            .fetch(&snapshot, &[])
            .error_line(CORRUPT)
            .contains("end-of-archive marker"),
        "the message says what is missing"
    );

    let scene = Scene::new();
    let snapshot = scene.write("unfinished.tar.gz", &archive::gzip(&unfinished()));
    scene.fetch(&snapshot, &[]).assert_corrupt();

    // One zero block of the two.
    let scene = Scene::new();
    let mut lone = unfinished();
    lone.extend_from_slice(&[0u8; archive::BLOCK]);
    let snapshot = scene.write("lone-zero-block.tar", &lone);
    scene.fetch(&snapshot, &[]).assert_corrupt();
}

#[test]
fn a_tar_cut_inside_an_entry_is_corrupt_and_says_truncated() {
    let scene = Scene::new();
    // first.txt whole, big.bin's header and exactly 8 of its 128 data blocks: the cut
    // falls on a block boundary inside the entry.
    let cut = &two_files()[..3 * archive::BLOCK + 8 * archive::BLOCK];
    let snapshot = scene.write("cut.tar", cut);

    let fetched = scene.fetch(&snapshot, &[]);
    fetched.assert_corrupt();
    assert!(
        fetched.error_line(CORRUPT).contains("truncated"),
        "{}",
        fetched.error_line(CORRUPT)
    );
}

/// 50 files of varied sizes, and the tar split in two at a byte that is no entry boundary.
fn fifty_files_in_two_members() -> (Vec<u8>, Vec<u8>) {
    let mut tar = Tar::new().dir("data/", 0o755);
    for i in 0..50u64 {
        let size = 100 + (i as usize * 997) % 5000;
        tar = tar.file(
            &format!("data/file-{i:02}.bin"),
            0o644,
            &archive::noise(size, i),
        );
    }
    let bytes = tar.finish();
    let split = bytes.len() / 2 + 123;
    (bytes[..split].to_vec(), bytes[split..].to_vec())
}

/// What GNU tar makes of `snapshot` (`tar -xzf`), unpacked into a fresh directory.
fn gnu_tar_tree(snapshot: &Path) -> Tree {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(snapshot)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("GNU tar runs");
    assert!(status.success(), "GNU tar refused {}", snapshot.display());
    tree::read(dir.path())
}

#[test]
fn a_multi_member_gzip_is_unpacked_whole_exactly_as_gnu_tar_does() {
    let scene = Scene::new();
    let (first, second) = fifty_files_in_two_members();
    let mut gz = archive::gzip(&first);
    gz.extend(archive::gzip(&second));
    let snapshot = scene.write("two-members.tar.gz", &gz);

    let fetched = scene.fetch(&snapshot, &[]);
    // The digest and size cover the whole file, both members.
    fetched.assert_extracted(&snapshot, 50);
    let unpacked = tree::read(&scene.workdir());
    assert_eq!(unpacked.len(), 51, "data/ and its 50 files");
    assert_eq!(unpacked, gnu_tar_tree(&snapshot));
}

#[test]
fn run_with_a_multi_member_snapshot_records_every_file() {
    let task = Task::new();
    let (first, second) = fifty_files_in_two_members();
    let mut gz = archive::gzip(&first);
    gz.extend(archive::gzip(&second));
    let snapshot = archive::write(task.dir.path(), "two-members.tar.gz", &gz);

    let output = task
        .command()
        .arg("--snapshot")
        .arg(&snapshot)
        .args(["--", "sh", "-c", "ls data | wc -l"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    assert_eq!(common::stdout(&output).trim(), "50");
    let record = task.record();
    assert_summary_describes(&record["snapshot"], &snapshot, 50);
}

#[test]
fn zero_padding_after_the_last_gzip_member_is_accepted() {
    let scene = Scene::new();
    let (first, second) = fifty_files_in_two_members();
    let mut gz = archive::gzip(&first);
    gz.extend(archive::gzip(&second));
    // Tape-style: the file padded with zeros to a whole 10 KiB record.
    gz.resize(gz.len().div_ceil(10_240) * 10_240, 0);
    let snapshot = scene.write("padded.tar.gz", &gz);

    scene.fetch(&snapshot, &[]).assert_extracted(&snapshot, 50);
    assert_eq!(tree::read(&scene.workdir()), gnu_tar_tree(&snapshot));
}

#[test]
fn trailing_garbage_after_the_last_gzip_member_is_corrupt_and_leaves_nothing() {
    let scene = Scene::new();
    let mut gz = archive::gzip(&harmless().finish());
    gz.extend_from_slice(b"appended by something that is not gzip\n");
    let snapshot = scene.write("garbage.tar.gz", &gz);

    let fetched = scene.fetch(&snapshot, &[]);
    fetched.assert_corrupt();
    assert!(
        fetched.error_line(CORRUPT).contains("trailing garbage"),
        "{}",
        fetched.error_line(CORRUPT)
    );
    assert!(tree::read(&scene.workdir()).is_empty());
}

#[test]
fn a_file_that_is_not_an_archive_is_corrupt() {
    let scene = Scene::new();
    let text = "These are notes, not an archive.\n".repeat(40);
    let snapshot = scene.write("notes.tar.gz", text.as_bytes());

    scene.fetch(&snapshot, &[]).assert_corrupt();
}

#[test]
fn a_missing_local_file_is_not_found() {
    let scene = Scene::new();
    let missing = scene.path("missing.tar.gz");

    scene
        .fetch(&missing, &[])
        .assert_failed(66, "snapshot_not_found", None);
}

// ---------------------------------------------------------------------------------------
// Archives that extract

const HELLO: &[u8] = b"hello from the snapshot\n";

/// Files, directories, modes and symlinks inside the workdir (one with `..` in its target
/// that stays inside).
fn sample() -> Tar {
    Tar::new()
        .file("hello.txt", 0o644, HELLO)
        .dir("data/", 0o755)
        .file("data/table.csv", 0o644, b"id,name\n1,ada\n")
        .dir("bin/", 0o755)
        .file("bin/run.sh", 0o755, b"#!/bin/sh\necho run\n")
        .symlink("bin/data", "../data")
        .symlink("latest.csv", "data/table.csv")
        .dir("empty/", 0o755)
}

const SAMPLE_FILES: u64 = 3;

fn sample_tree() -> Tree {
    tree::from([
        ("hello.txt", tree::file(0o644, HELLO)),
        ("data", tree::dir(0o755)),
        ("data/table.csv", tree::file(0o644, b"id,name\n1,ada\n")),
        ("bin", tree::dir(0o755)),
        ("bin/run.sh", tree::file(0o755, b"#!/bin/sh\necho run\n")),
        ("bin/data", tree::symlink("../data")),
        ("latest.csv", tree::symlink("data/table.csv")),
        ("empty", tree::dir(0o755)),
    ])
}

#[test]
fn a_tar_gz_is_extracted_with_its_contents_modes_and_symlinks() {
    let scene = Scene::new();
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "snapshot.tar.gz", sample());

    scene
        .fetch(&snapshot, &[])
        .assert_extracted(&snapshot, SAMPLE_FILES);
    assert_eq!(tree::read(&scene.workdir()), sample_tree());
}

#[test]
fn a_plain_tar_is_extracted() {
    let scene = Scene::new();
    let snapshot = archive::write_tar(scene.scratch.path(), "snapshot.tar", sample());

    scene
        .fetch(&snapshot, &[])
        .assert_extracted(&snapshot, SAMPLE_FILES);
    assert_eq!(tree::read(&scene.workdir()), sample_tree());
}

#[test]
fn the_format_is_told_by_magic_bytes_not_by_the_name() {
    let scene = Scene::new();
    let gzipped = archive::write_tar_gz(scene.scratch.path(), "snapshot.bin", sample());
    scene
        .fetch(&gzipped, &[])
        .assert_extracted(&gzipped, SAMPLE_FILES);
    assert_eq!(tree::read(&scene.workdir()), sample_tree());

    let scene = Scene::new();
    let plain = archive::write_tar(scene.scratch.path(), "plain.tar.gz", sample());
    scene
        .fetch(&plain, &[])
        .assert_extracted(&plain, SAMPLE_FILES);
    assert_eq!(tree::read(&scene.workdir()), sample_tree());
}

#[test]
fn a_hard_link_inside_the_archive_links_to_the_earlier_file() {
    let scene = Scene::new();
    let tar = Tar::new()
        .dir("data/", 0o755)
        .file("data/original.txt", 0o644, b"shared\n")
        .hard_link("data/copy.txt", "data/original.txt");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "hardlink.tar.gz", tar);

    // Whether the link counts among the `files` written is the agent's choice.
    let fetched = scene.fetch(&snapshot, &[]);
    assert_exit_code(&fetched.output, 0);
    fetched.assert_outside_untouched();
    let linked = Node::File {
        mode: 0o644,
        links: 2,
        contents: tree::describe(b"shared\n"),
    };
    assert_eq!(
        tree::read(&scene.workdir()),
        tree::from([
            ("data", tree::dir(0o755)),
            ("data/original.txt", linked.clone()),
            ("data/copy.txt", linked),
        ])
    );
    let inode = |name: &str| fs::metadata(scene.workdir().join(name)).unwrap().ino();
    assert_eq!(inode("data/copy.txt"), inode("data/original.txt"));
}

#[test]
fn a_symlink_to_the_workdir_itself_is_allowed() {
    let scene = Scene::new();
    let tar = Tar::new()
        .symlink("here", ".")
        .file("hello.txt", 0o644, HELLO);
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "dot.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_extracted(&snapshot, 1);
    assert_eq!(
        tree::read(&scene.workdir()),
        tree::from([
            ("here", tree::symlink(".")),
            ("hello.txt", tree::file(0o644, HELLO)),
        ])
    );
}

#[test]
fn parent_directories_missing_from_the_archive_are_created() {
    let scene = Scene::new();
    let tar = Tar::new().file("nested/deeper/file.txt", 0o644, b"no directory entries\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "implicit.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_extracted(&snapshot, 1);
    // Their modes are the agent's choice.
    assert!(scene.workdir().join("nested/deeper").is_dir());
    assert_eq!(
        fs::read(scene.workdir().join("nested/deeper/file.txt")).unwrap(),
        b"no directory entries\n"
    );
}

#[test]
fn long_names_from_gnu_and_pax_headers_are_extracted() {
    let scene = Scene::new();
    let gnu = format!("gnu-{}", "g".repeat(146));
    let pax = format!("pax-{}", "p".repeat(196));
    let tar = Tar::new()
        .file_with_long_name(&gnu, LongName::Gnu, b"from a GNU L entry\n")
        .file_with_long_name(&pax, LongName::Pax, b"from a PAX path record\n");
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "long-names.tar.gz", tar);

    scene.fetch(&snapshot, &[]).assert_extracted(&snapshot, 2);
    assert_eq!(
        tree::read(&scene.workdir()),
        tree::from([
            (gnu, tree::file(0o644, b"from a GNU L entry\n")),
            (pax, tree::file(0o644, b"from a PAX path record\n")),
        ])
    );
}

#[test]
fn the_expected_sha256_is_accepted_with_or_without_its_prefix() {
    for prefix in ["", "sha256:"] {
        let scene = Scene::new();
        let snapshot = archive::write_tar_gz(scene.scratch.path(), "snapshot.tar.gz", sample());
        let digest = archive::sha256_hex(&fs::read(&snapshot).unwrap());
        let expected = format!("{prefix}{digest}");

        scene
            .fetch(&snapshot, &["--snapshot-sha256", &expected])
            .assert_extracted(&snapshot, SAMPLE_FILES);
        assert_eq!(tree::read(&scene.workdir()), sample_tree());
    }
}

#[test]
fn a_wrong_sha256_is_an_integrity_error_and_extracts_nothing() {
    let scene = Scene::new();
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "snapshot.tar.gz", sample());
    let wrong = archive::sha256_hex(b"some other snapshot");

    let fetched = scene.fetch(&snapshot, &["--snapshot-sha256", &wrong]);
    fetched.assert_failed(65, "snapshot_integrity", None);
    assert_eq!(tree::read(&scene.workdir()), Tree::new());
}

#[test]
fn a_file_uri_names_a_local_snapshot() {
    let scene = Scene::new();
    let snapshot = archive::write_tar_gz(scene.scratch.path(), "snapshot.tar.gz", sample());
    let uri = format!("file://{}", path_str(&snapshot));

    scene
        .fetch(&uri, &[])
        .assert_extracted(&snapshot, SAMPLE_FILES);
    assert_eq!(tree::read(&scene.workdir()), sample_tree());
}

// ---------------------------------------------------------------------------------------
// `task-agent run --snapshot`

#[test]
fn run_extracts_the_snapshot_before_the_command_starts() {
    let task = Task::new();
    let snapshot = archive::write_tar_gz(task.dir.path(), "snapshot.tar.gz", sample());

    let output = task
        .command()
        .arg("--snapshot")
        .arg(&snapshot)
        .args(["--", "sh", "-c", "cat hello.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    assert_eq!(output.stdout, HELLO);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_summary_describes(&record["snapshot"], &snapshot, SAMPLE_FILES);
    assert_eq!(record["snapshot"]["cache"], "off", "{record:#}");
}

#[test]
fn run_with_a_hostile_snapshot_never_starts_the_command() {
    let task = Task::new();
    let tar = harmless().file("../escaped.txt", 0o644, b"escaped\n");
    let snapshot = archive::write_tar_gz(task.dir.path(), "hostile.tar.gz", tar);

    let output = task
        .command()
        .arg("--snapshot")
        .arg(&snapshot)
        .args(["--", "sh", "-c", "touch ran; cat src/ok.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 65);
    assert!(
        common::stderr(&output).contains("kind=snapshot_unsafe"),
        "{}",
        common::stderr(&output)
    );
    assert_eq!(common::stdout(&output), "", "the command ran");
    assert!(!task.workdir().join("ran").exists(), "the command ran");
    assert!(!task.path("escaped.txt").exists());
    assert!(!task.workdir().join("src/ok.txt").exists());

    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["phase"], "snapshot", "{record:#}");
    assert_eq!(record["exit_code"], 65, "{record:#}");
    assert_eq!(record["child_exit_code"], Value::Null, "{record:#}");
    assert_eq!(record["retryable"], false, "{record:#}");
    common::assertions::assert_error_kind(&record, UNSAFE);
    let message = record["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("../escaped.txt"), "{record:#}");
}

// ---------------------------------------------------------------------------------------
// The corpus itself

/// The hand-written headers read back, through the `tar` crate, as the entries meant.
#[test]
fn the_archive_builder_writes_what_a_tar_reader_sees() {
    let long = format!("gnu-{}", "g".repeat(146));
    let pax = format!("pax-{}", "p".repeat(196));
    let bytes = Tar::new()
        .dir("d/", 0o755)
        .file("d/f.txt", 0o4755, b"data")
        .symlink("s", "../out")
        .hard_link("h", "/abs/target")
        .char_device("c", 1, 3)
        .block_device("b", 8, 0)
        .fifo("p")
        .file("../up", 0o644, b"")
        .file("/abs", 0o644, b"")
        .file_with_long_name(&long, LongName::Gnu, b"gnu")
        .file_with_long_name(&pax, LongName::Pax, b"pax")
        .finish();

    let mut seen = Vec::new();
    let mut reader = tar::Archive::new(&bytes[..]);
    for entry in reader.entries().expect("entries") {
        let mut entry = entry.expect("a well-formed entry");
        let header = entry.header();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let line = format!(
            "{} {:?} {:o} {} {:?} {:?}",
            String::from_utf8_lossy(&entry.path_bytes()),
            header.entry_type(),
            header.mode().unwrap(),
            header.size().unwrap(),
            link,
            (
                header.device_major().unwrap(),
                header.device_minor().unwrap()
            ),
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        seen.push(format!("{line} {}", String::from_utf8_lossy(&data)));
    }
    let expected = [
        "d/ Directory 755 0 \"\" (Some(0), Some(0)) ".to_owned(),
        "d/f.txt Regular 4755 4 \"\" (Some(0), Some(0)) data".to_owned(),
        "s Symlink 777 0 \"../out\" (Some(0), Some(0)) ".to_owned(),
        "h Link 777 0 \"/abs/target\" (Some(0), Some(0)) ".to_owned(),
        "c Char 644 0 \"\" (Some(1), Some(3)) ".to_owned(),
        "b Block 644 0 \"\" (Some(8), Some(0)) ".to_owned(),
        "p Fifo 644 0 \"\" (Some(0), Some(0)) ".to_owned(),
        "../up Regular 644 0 \"\" (Some(0), Some(0)) ".to_owned(),
        "/abs Regular 644 0 \"\" (Some(0), Some(0)) ".to_owned(),
        format!("{long} Regular 644 3 \"\" (Some(0), Some(0)) gnu"),
        format!("{pax} Regular 644 3 \"\" (Some(0), Some(0)) pax"),
    ];
    assert_eq!(seen, expected);
}

/// The bomb, made small, inflates (trailer CRC and size included) to a tar of one entry
/// of zeros.
#[test]
fn the_gzip_bomb_builder_writes_a_valid_stream() {
    let size = (3 << 20) + 100;
    let mut tar_bytes = Vec::new();
    GzDecoder::new(&archive::gzip_bomb("zeros.bin", size)[..])
        .read_to_end(&mut tar_bytes)
        .expect("a valid gzip stream");
    let padded = size.div_ceil(512) * 512;
    assert_eq!(tar_bytes.len() as u64, 512 + padded + 1024);
    assert!(tar_bytes[512..].iter().all(|&b| b == 0));

    let mut reader = tar::Archive::new(&tar_bytes[..]);
    let entries: Vec<(String, u64)> = reader
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            (path, entry.size())
        })
        .collect();
    assert_eq!(entries, [("zeros.bin".to_owned(), size)]);
}
