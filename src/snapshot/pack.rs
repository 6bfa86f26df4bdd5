//! `task-agent pack`: a reproducible snapshot. The same tree always gives the same bytes,
//! so the sha256 pinned in a DAG names the code, not the moment it was packed: entries
//! sorted by name, owner 0:0, a fixed mtime, modes normalized to 0644/0755, and a gzip
//! header without name or time.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use super::stream::hex;

/// 2000-01-01T00:00:00Z: after the epoch so tools that dislike zero mtimes are happy.
const FIXED_MTIME: u64 = 946_684_800;

/// Directories that are never part of a snapshot.
const SKIPPED: [&str; 2] = [".git", "__pycache__"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub bytes: u64,
    pub entries: u64,
}

/// Packs `dir` into `output` (a .tar.gz), which may lie inside `dir`: it is left out.
pub fn pack(dir: &Path, output: &Path) -> io::Result<Packed> {
    let root = fs::canonicalize(dir)?;
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let temp = output.with_extension("partial");
    let skip = fs::canonicalize(
        output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .ok()
    .and_then(|parent| output.file_name().map(|name| parent.join(name)));
    let file = File::create(&temp)?;
    let digesting = Digesting {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let (entries, mut digesting) = write_archive(&root, digesting, skip.as_deref(), &temp)?;
    digesting.inner.flush()?;
    digesting.inner.get_ref().sync_all()?;
    fs::rename(&temp, output)?;
    Ok(Packed {
        sha256: hex(&digesting.hasher.finalize()),
        bytes: digesting.bytes,
        entries,
    })
}

/// Packs `dir` as `pack` does into any writer (a pipe to an upload); returns the number of
/// entries.
pub fn pack_into<W: Write>(dir: &Path, writer: W) -> io::Result<u64> {
    let root = fs::canonicalize(dir)?;
    let (entries, mut writer) = write_archive(&root, writer, None, Path::new(""))?;
    writer.flush()?;
    Ok(entries)
}

/// The reproducible .tar.gz of `root` into `writer`, leaving out `skip` and `temp`.
fn write_archive<W: Write>(
    root: &Path,
    writer: W,
    skip: Option<&Path>,
    temp: &Path,
) -> io::Result<(u64, W)> {
    let gzip = GzBuilder::new()
        .mtime(0)
        .write(writer, Compression::default());
    let mut builder = tar::Builder::new(gzip);
    let mut entries = 0;
    let mut paths = Vec::new();
    collect(root, PathBuf::new(), &mut paths, skip, temp)?;
    for relative in paths {
        append(&mut builder, &root.join(&relative), &relative)?;
        entries += 1;
    }
    let gzip = builder.into_inner()?;
    Ok((entries, gzip.finish()?))
}

/// Every path under `dir`, depth first, each directory's children sorted by their bytes.
fn collect(
    root: &Path,
    relative: PathBuf,
    out: &mut Vec<PathBuf>,
    skip: Option<&Path>,
    temp: &Path,
) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(root.join(&relative))?.collect::<Result<_, _>>()?;
    children.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for child in children {
        let name = child.file_name();
        let path = child.path();
        if Some(path.as_path()) == skip || path == temp {
            continue;
        }
        let kind = child.file_type()?;
        if kind.is_dir() && SKIPPED.iter().any(|s| name.as_bytes() == s.as_bytes()) {
            continue;
        }
        let rel = relative.join(&name);
        out.push(rel.clone());
        if kind.is_dir() {
            collect(root, rel, out, skip, temp)?;
        }
    }
    Ok(())
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &Path, relative: &Path) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(FIXED_MTIME);
    let kind = metadata.file_type();
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, relative, io::empty())
    } else if kind.is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, relative, fs::read_link(path)?)
    } else if kind.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        let executable = metadata.permissions().mode() & 0o111 != 0;
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_size(metadata.len());
        builder.append_data(
            &mut header,
            relative,
            File::open(path)?.take(metadata.len()),
        )
    } else {
        tracing::warn!(path = %path.display(), "left out of the snapshot: not a file, directory or symlink");
        Ok(())
    }
}

struct Digesting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
