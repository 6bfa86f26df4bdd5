//! Writes the record into the termination-message file so that whatever instant the agent
//! is killed at, the file holds one whole JSON document.
//!
//! Kubernetes bind-mounts `/dev/termination-log`, so the usual write-then-rename is not
//! available. Instead every update is one positional write of the full record at offset 0,
//! padded with spaces (valid trailing JSON whitespace) to the length of the previous one, so a
//! shorter record never leaves the tail of a longer one behind. Only after the final record
//! is in place is the file cut to its exact length.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct ResultFile {
    path: PathBuf,
    file: File,
    written: usize,
}

impl ResultFile {
    /// Opens (creating if needed) without truncating: a record already there stays valid
    /// until the first full write replaces it.
    pub fn open(path: &Path) -> io::Result<ResultFile> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let written = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        Ok(ResultFile {
            path: path.to_path_buf(),
            file,
            written,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content with `record` in one write. Valid JSON before, during and after.
    pub fn update(&mut self, record: &[u8]) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(record.len().max(self.written));
        buffer.extend_from_slice(record);
        if buffer.len() < self.written {
            buffer.resize(self.written, b' ');
        }
        self.file.write_all_at(&buffer, 0)?;
        self.written = buffer.len();
        Ok(())
    }

    /// Writes the final record, then drops any padding left from longer provisional ones.
    pub fn finish(&mut self, record: &[u8]) -> io::Result<()> {
        self.update(record)?;
        if self.written > record.len() && self.file.metadata()?.is_file() {
            self.file.set_len(record.len() as u64)?;
            self.written = record.len();
        }
        self.file.sync_data().or_else(|e| {
            // Character devices and pipes (a debugging `--result-file /dev/stderr`) cannot sync.
            if e.raw_os_error() == Some(libc::EINVAL) {
                Ok(())
            } else {
                Err(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_update_is_padded_and_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let mut file = ResultFile::open(&path).unwrap();
        file.update(br#"{"status":"running","phase":"a-long-phase-name"}"#)
            .unwrap();
        file.update(br#"{"status":"running"}"#).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["status"], "running");
        assert!(text.ends_with(' '));
    }

    #[test]
    fn finish_leaves_exactly_the_final_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        let mut file = ResultFile::open(&path).unwrap();
        file.update(br#"{"status":"running"}"#).unwrap();
        file.finish(br#"{"status":"succeeded"}"#).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"status":"succeeded"}"#);
    }
}
