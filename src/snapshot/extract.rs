//! Unpacking a tar stream into the workdir, treating the archive as hostile.
//!
//! Containment does not rely on the `tar` crate: every entry is created relative to a
//! directory file descriptor reached from the workdir one component at a time with
//! `O_NOFOLLOW`, so no symlink — from the archive or already in the workdir — is ever
//! followed while writing. Names and link targets are checked first by `paths`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, futimens, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};
use tar::EntryType;

use super::paths::{self, EntryPath};

/// Limits that keep a hostile archive from filling the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Total bytes of the unpacked tar stream (headers and contents).
    pub max_bytes: u64,
    pub max_entries: u64,
    pub max_path_bytes: usize,
    pub max_depth: usize,
    /// Unpacked bytes per compressed byte, checked once `RATIO_GRACE` bytes are unpacked.
    pub max_ratio: u64,
}

/// Small archives of empty files compress extremely well; the ratio only means a bomb
/// once this much has come out.
pub const RATIO_GRACE: u64 = 16 << 20;

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_bytes: 4 << 30,
            max_entries: 100_000,
            max_path_bytes: 1024,
            max_depth: 64,
            max_ratio: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files (and hard links to them) written.
    pub files: u64,
    pub entries: u64,
}

/// Why an entry is refused; becomes `SnapshotError::Unsafe` with the entry's name.
#[derive(Debug)]
pub struct Refusal {
    pub entry: String,
    pub reason: String,
}

pub enum Failure {
    Refused(Refusal),
    /// Reading the stream failed: the caller knows whether that was the network, the
    /// decompressor or a budget.
    Read(io::Error),
    Write(io::Error),
}

const NOFOLLOW_DIR: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Writes entries under one workdir, remembering what it created so a failed extraction
/// can be taken back.
pub struct Extractor {
    root: OwnedFd,
    budget: Budget,
    /// Directories this extraction made; anything under them goes with them.
    made_dirs: HashSet<EntryPath>,
    /// What was created directly in a directory that existed before: removed on failure.
    created: Vec<EntryPath>,
    links: HashMap<EntryPath, Vec<u8>>,
    regular_files: HashSet<EntryPath>,
    parent_cache: Option<(EntryPath, OwnedFd)>,
    unpacked: Unpacked,
    buffer: Vec<u8>,
    /// The entry being unpacked, for messages about a stream that fails inside it.
    current: String,
}

impl Extractor {
    pub fn new(workdir: &Path, budget: Budget) -> io::Result<Extractor> {
        let root = openat(
            nix::fcntl::AT_FDCWD,
            workdir,
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )?;
        Ok(Extractor {
            root,
            budget,
            made_dirs: HashSet::new(),
            created: Vec::new(),
            links: HashMap::new(),
            regular_files: HashSet::new(),
            parent_cache: None,
            unpacked: Unpacked::default(),
            buffer: vec![0; 256 << 10],
            current: String::new(),
        })
    }

    /// Unpacks every entry of `tar_stream`.
    pub fn unpack(
        &mut self,
        tar_stream: &mut dyn Read,
        cancel: &AtomicBool,
    ) -> Result<Unpacked, Failure> {
        let mut archive = tar::Archive::new(tar_stream);
        let entries = archive.entries().map_err(Failure::Read)?;
        for entry in entries {
            if cancel.load(Ordering::Relaxed) {
                return Err(Failure::Read(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "cancelled",
                )));
            }
            let mut entry = entry.map_err(Failure::Read)?;
            self.unpack_entry(&mut entry)?;
        }
        self.check_links_again()?;
        Ok(self.unpacked)
    }

    fn unpack_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Failure> {
        let raw_name = entry.path_bytes().into_owned();
        let shown = paths::display(&raw_name);
        self.current.clone_from(&shown);
        let refuse = |reason: String| {
            Failure::Refused(Refusal {
                entry: shown.clone(),
                reason,
            })
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.unpacked.entries += 1;
        if self.unpacked.entries > self.budget.max_entries {
            return Err(refuse(format!(
                "is entry number {}, over the limit of {} (raise --snapshot-max-entries if this is intended)",
                self.unpacked.entries, self.budget.max_entries
            )));
        }
        let path =
            match paths::entry_path(&raw_name, self.budget.max_path_bytes, self.budget.max_depth) {
                Ok(Some(path)) => path,
                Ok(None) if kind == EntryType::Directory => return Ok(()),
                Ok(None) => return Err(refuse("has an empty name".into())),
                Err(problem) => return Err(refuse(problem.explain())),
            };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let mtime = entry.header().mtime().unwrap_or(0);
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let file = self.create_file(&path, &shown)?;
                let mut file = File::from(file);
                copy(entry, &mut file, &mut self.buffer)?;
                let fd = OwnedFd::from(file);
                fchmod(&fd, Mode::from_bits_truncate(mode))
                    .map_err(|e| Failure::Write(e.into()))?;
                let when = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
                // The mtime is a courtesy (Python's bytecode cache uses it), not a duty.
                let _ = futimens(&fd, &when, &when);
                self.regular_files.insert(path);
                self.unpacked.files += 1;
            }
            EntryType::Directory => {
                let dir = self.directory(&path, &shown, true)?;
                // The owner keeps write access, or later entries could not be written.
                fchmod(&dir, Mode::from_bits_truncate(mode | 0o700))
                    .map_err(|e| Failure::Write(e.into()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if paths::resolve_link(&path, &target, &self.links).is_none() {
                    return Err(refuse(format!(
                        "is a symlink to `{}`, which leads outside the workdir",
                        paths::display(&target)
                    )));
                }
                let (parent, name) = self.parent_of(&path, &shown)?;
                self.make_room(&parent, name, &path, &shown)?;
                symlinkat(OsStr::from_bytes(&target), &parent, OsStr::from_bytes(name))
                    .map_err(|e| Failure::Write(e.into()))?;
                self.links.insert(path, target);
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = paths::entry_path(&target_raw, self.budget.max_path_bytes, self.budget.max_depth)
                    .ok()
                    .flatten()
                    .filter(|t| self.regular_files.contains(t))
                    .ok_or_else(|| {
                        refuse(format!(
                            "is a hard link to `{}`, which is not a regular file extracted earlier from this archive",
                            paths::display(&target_raw)
                        ))
                    })?;
                let (target_parent, target_name) = self.parent_of(&target, &shown)?;
                let target_parent = target_parent.try_clone().map_err(Failure::Write)?;
                let target_name = target_name.to_vec();
                let (parent, name) = self.parent_of(&path, &shown)?;
                self.make_room(&parent, name, &path, &shown)?;
                linkat(
                    &target_parent,
                    OsStr::from_bytes(&target_name),
                    &parent,
                    OsStr::from_bytes(name),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(|e| Failure::Write(e.into()))?;
                self.regular_files.insert(path);
                self.unpacked.files += 1;
            }
            EntryType::Char => {
                return Err(refuse(
                    "is a character device; snapshots may hold only files, directories and links"
                        .into(),
                ));
            }
            EntryType::Block => {
                return Err(refuse(
                    "is a block device; snapshots may hold only files, directories and links"
                        .into(),
                ));
            }
            EntryType::Fifo => {
                return Err(refuse(
                    "is a FIFO; snapshots may hold only files, directories and links".into(),
                ));
            }
            other => {
                return Err(refuse(format!(
                    "has the unsupported entry type {:?}; snapshots may hold only files, directories and links",
                    other.as_byte() as char
                )));
            }
        }
        Ok(())
    }

    /// The name of the entry being unpacked (empty before the first).
    pub fn current_entry(&self) -> &str {
        if self.current.is_empty() {
            "(first entry)"
        } else {
            &self.current
        }
    }

    /// A later symlink can change where an earlier one leads, so all are judged again with
    /// the archive's final set of links.
    fn check_links_again(&self) -> Result<(), Failure> {
        for (link, target) in &self.links {
            if paths::resolve_link(link, target, &self.links).is_none() {
                return Err(Failure::Refused(Refusal {
                    entry: show(link),
                    reason: format!(
                        "is a symlink to `{}`, which leads outside the workdir through other links in the archive",
                        paths::display(target)
                    ),
                }));
            }
        }
        Ok(())
    }

    fn create_file(&mut self, path: &EntryPath, shown: &str) -> Result<OwnedFd, Failure> {
        let (parent, name) = self.parent_of(path, shown)?;
        self.make_room(&parent, name, path, shown)?;
        openat(
            &parent,
            OsStr::from_bytes(name),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Failure::Write(e.into()))
    }

    /// Removes a non-directory already at `name` (never writing through it: it may be a
    /// symlink or a hard link to something outside), and notes a new name for cleanup.
    fn make_room(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        path: &EntryPath,
        shown: &str,
    ) -> Result<(), Failure> {
        match unlinkat(parent, OsStr::from_bytes(name), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                self.links.remove(path);
                self.regular_files.remove(path);
                Ok(())
            }
            Err(Errno::ENOENT) => {
                self.note_created(path);
                Ok(())
            }
            Err(Errno::EISDIR) => Err(Failure::Refused(Refusal {
                entry: shown.to_string(),
                reason: "would replace a directory".into(),
            })),
            Err(e) => Err(Failure::Write(e.into())),
        }
    }

    fn note_created(&mut self, path: &EntryPath) {
        if !self.made_dirs.contains(&path[..path.len() - 1]) {
            self.created.push(path.clone());
        }
    }

    /// The directory that holds `path`, and `path`'s last component.
    fn parent_of<'p>(
        &mut self,
        path: &'p EntryPath,
        shown: &str,
    ) -> Result<(OwnedFd, &'p [u8]), Failure> {
        let (name, parent) = path
            .split_last()
            .ok_or_else(|| Failure::Write(io::Error::other("empty entry path")))?;
        let fd = self.directory(parent, shown, false)?;
        Ok((fd, name.as_slice()))
    }

    /// Opens (creating where missing) the directory at `path`, one component at a time,
    /// never following a symlink.
    fn directory(
        &mut self,
        path: &[Vec<u8>],
        shown: &str,
        is_entry: bool,
    ) -> Result<OwnedFd, Failure> {
        if let Some((cached, fd)) = &self.parent_cache
            && cached.as_slice() == path
        {
            return fd.try_clone().map_err(Failure::Write);
        }
        let mut current = self.root.try_clone().map_err(Failure::Write)?;
        for depth in 0..path.len() {
            let name = OsStr::from_bytes(&path[depth]);
            let prefix = &path[..=depth];
            current = match openat(&current, name, NOFOLLOW_DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    mkdirat(&current, name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| Failure::Write(e.into()))?;
                    let prefix = prefix.to_vec();
                    self.note_created(&prefix);
                    self.made_dirs.insert(prefix);
                    openat(&current, name, NOFOLLOW_DIR, Mode::empty())
                        .map_err(|e| Failure::Write(e.into()))?
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = describe_non_directory(
                        fstatat(&current, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok(),
                    );
                    let reason = if is_entry && depth + 1 == path.len() {
                        format!("would replace {what}")
                    } else {
                        format!(
                            "would be written through `{}`, which is {what}",
                            show(prefix)
                        )
                    };
                    return Err(Failure::Refused(Refusal {
                        entry: shown.to_string(),
                        reason,
                    }));
                }
                Err(e) => return Err(Failure::Write(e.into())),
            };
        }
        let fd = current.try_clone().map_err(Failure::Write)?;
        self.parent_cache = Some((path.to_vec(), fd));
        Ok(current)
    }

    /// Takes back what this extraction created (best effort: a file that replaced an older
    /// one in a non-empty workdir cannot be restored).
    pub fn remove_created(&mut self) {
        self.parent_cache = None;
        for path in self.created.drain(..).rev() {
            let Some((name, parent)) = path.split_last() else {
                continue;
            };
            let Ok(parent_fd) = walk_existing(&self.root, parent) else {
                continue;
            };
            let name = OsStr::from_bytes(name);
            if unlinkat(&parent_fd, name, UnlinkatFlags::NoRemoveDir) == Err(Errno::EISDIR) {
                let _ = remove_tree(&parent_fd, name);
            }
        }
    }
}

fn copy<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    file: &mut File,
    buffer: &mut [u8],
) -> Result<(), Failure> {
    use std::io::Write;
    loop {
        let n = match entry.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        file.write_all(&buffer[..n]).map_err(Failure::Write)?;
    }
}

fn walk_existing(root: &OwnedFd, path: &[Vec<u8>]) -> nix::Result<OwnedFd> {
    let mut current = root.try_clone().map_err(|_| Errno::EBADF)?;
    for name in path {
        current = openat(
            &current,
            OsStr::from_bytes(name),
            NOFOLLOW_DIR,
            Mode::empty(),
        )?;
    }
    Ok(current)
}

/// Removes the directory `name` in `parent` and everything in it, without following links.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    let dir = openat(parent, name, NOFOLLOW_DIR, Mode::empty())?;
    let mut listing = nix::dir::Dir::from_fd(dir.try_clone().map_err(|_| Errno::EBADF)?)?;
    let names: Vec<Vec<u8>> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for child in names {
        let child = OsStr::from_bytes(&child);
        if unlinkat(&dir, child, UnlinkatFlags::NoRemoveDir) == Err(Errno::EISDIR) {
            remove_tree(&dir, child)?;
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

fn describe_non_directory(stat: Option<FileStat>) -> &'static str {
    let Some(stat) = stat else {
        return "not a directory";
    };
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFLNK => "a symlink (symlinks are never followed while unpacking)",
        SFlag::S_IFREG => "a file",
        _ => "not a directory",
    }
}

fn show(path: &[Vec<u8>]) -> String {
    paths::display(&path.join(&b'/'))
}
