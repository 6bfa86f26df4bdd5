//! A node-local cache of snapshot archives, keyed by their sha256, so fan-out tasks on one
//! node download a snapshot once. The cache is an optimisation: any problem with it is
//! logged and the fetch goes on without it. A hit is verified while it is unpacked (the
//! digest must match its name), so a tampered entry is never used.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.snapshot"))
    }

    /// The cached archive for `sha256` and its size, if there is one.
    pub fn lookup(&self, sha256: &str) -> Option<(File, u64)> {
        let file = File::open(self.entry(sha256)).ok()?;
        let metadata = file.metadata().ok().filter(|m| m.is_file())?;
        Some((file, metadata.len()))
    }

    pub fn remove(&self, sha256: &str) {
        if let Err(e) = fs::remove_file(self.entry(sha256))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.entry(sha256).display(), "cannot remove a bad cache entry: {e}");
        }
    }

    /// Starts a new entry for `sha256`, written under a temporary name until `commit`.
    pub fn begin(&self, sha256: &str) -> Option<Pending> {
        if let Err(e) = fs::create_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), "snapshot cache unavailable: {e}");
            return None;
        }
        // Pods on one node share the cache but not a PID namespace: the clock keeps names apart.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let temp = self
            .dir
            .join(format!(".{sha256}.{}.{nanos}.partial", std::process::id()));
        match File::create(&temp) {
            Ok(file) => Some(Pending {
                file: Some(file),
                temp,
                target: self.entry(sha256),
            }),
            Err(e) => {
                tracing::warn!(path = %self.dir.display(), "snapshot cache unavailable: {e}");
                None
            }
        }
    }
}

/// A cache entry being written. Dropped without `commit`, it leaves nothing behind.
pub struct Pending {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl Pending {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.write_all(bytes)
        {
            tracing::warn!(path = %self.temp.display(), "stopped writing the snapshot cache: {e}");
            self.file = None;
        }
    }

    /// Publishes the entry: only ever called after the digest was verified.
    pub fn commit(mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let done = file
            .sync_all()
            .and_then(|()| fs::rename(&self.temp, &self.target));
        match done {
            Ok(()) => tracing::info!(path = %self.target.display(), "snapshot cached"),
            Err(e) => {
                tracing::warn!(path = %self.target.display(), "cannot store the snapshot in the cache: {e}")
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temp);
    }
}

/// Copies what passes through into the pending cache entry.
pub struct Tee<'a, R> {
    inner: R,
    pending: &'a mut Pending,
}

impl<'a, R> Tee<'a, R> {
    pub fn new(inner: R, pending: &'a mut Pending) -> Self {
        Tee { inner, pending }
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.write(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let mut pending = cache.begin("abc").unwrap();
        let mut tee = Tee::new(&b"archive bytes"[..], &mut pending);
        io::copy(&mut tee, &mut io::sink()).unwrap();
        assert!(cache.lookup("abc").is_none());
        pending.commit();
        let (mut file, size) = cache.lookup("abc").unwrap();
        assert_eq!(size, 13);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "archive bytes");
        assert_eq!(
            fs::read_dir(dir.path().join("cache")).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    #[test]
    fn an_abandoned_entry_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        drop(cache.begin("abc").unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
