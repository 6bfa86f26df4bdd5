//! The read side of the pipeline: raw bytes → sha256 and byte count → format detection →
//! gunzip (every member) → budget check → tar, whose end-of-archive marker must be there.
//! Everything streams; nothing holds the archive.

use std::io::{self, BufReader, Cursor, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::extract::{Budget, RATIO_GRACE};
use super::gzip::GzipMembers;

/// What went wrong upstream of the tar reader, kept typed here because `tar` and `flate2`
/// only pass on an `io::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// The unpacked stream went over `--snapshot-max-bytes`.
    TooLarge { limit: u64 },
    /// The unpacked stream grew too fast for its compressed size: a decompression bomb.
    Bomb { ratio: u64, limit: u64 },
}

#[derive(Clone, Default)]
pub struct FaultSlot(Arc<Mutex<Option<StreamFault>>>);

impl FaultSlot {
    fn set(&self, fault: StreamFault) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(fault);
        }
    }

    pub fn take(&self) -> Option<StreamFault> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Hashes and counts the compressed bytes as they pass.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub bytes: Arc<AtomicU64>,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads what is left (the tar's zero blocks, the gzip trailer) so the digest covers
    /// the whole file, and returns it in hex.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let digest = self.hasher.finalize();
        Ok((hex(&digest), self.bytes.load(Ordering::Relaxed)))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Tar,
}

/// Tells gzip from tar by their magic bytes, whatever the file is called.
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Format::Gzip);
    }
    // ustar (POSIX and GNU) carries "ustar" at offset 257 of the first header.
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Some(Format::Tar);
    }
    None
}

/// Bytes read to tell the format.
pub const HEAD_LEN: usize = 512;

/// Reads up to `HEAD_LEN` bytes for `detect`, returning them and the reader positioned
/// after them.
pub fn read_head<R: Read>(mut reader: R) -> io::Result<(Vec<u8>, R)> {
    let mut head = vec![0; HEAD_LEN];
    let mut filled = 0;
    while filled < HEAD_LEN {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok((head, reader))
}

/// The tar stream of a raw stream whose first bytes were `head`.
pub fn tar_stream<'a, R: Read + 'a>(
    format: Format,
    head: Vec<u8>,
    rest: R,
    compressed: Arc<AtomicU64>,
    budget: Budget,
    faults: FaultSlot,
) -> TarStream<'a> {
    let raw = Cursor::new(head).chain(rest);
    let unpacked: Box<dyn Read + 'a> = match format {
        Format::Gzip => Box::new(GzipMembers::new(BufReader::with_capacity(256 << 10, raw))),
        Format::Tar => Box::new(raw),
    };
    TarStream {
        inner: Budgeted {
            inner: unpacked,
            unpacked: 0,
            compressed,
            budget,
            faults,
        },
        ended: false,
    }
}

/// The unpacked tar bytes, remembering whether they ran out: the `tar` crate takes the
/// end of the stream at a header boundary for the end of the archive, but a producer
/// always writes the end-of-archive marker (two zero blocks), so a stream without it was
/// cut short.
pub struct TarStream<'a> {
    inner: Budgeted<Box<dyn Read + 'a>>,
    ended: bool,
}

/// The tar block size.
const BLOCK: usize = 512;

impl TarStream<'_> {
    /// Called once the `tar` crate has found no further entry: it stopped either at the
    /// stream's end (no marker: truncated) or at a zero block, which must be the first of
    /// the two that make the marker.
    pub fn expect_end_of_archive(&mut self) -> io::Result<()> {
        let truncated = || {
            // Not UnexpectedEof: that kind is reported as "ends in the middle of an entry".
            io::Error::new(
                io::ErrorKind::InvalidData,
                "it ends without the end-of-archive marker (two zero blocks), so it was cut short (truncated)",
            )
        };
        if self.ended {
            return Err(truncated());
        }
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.read(&mut block[filled..]) {
                Ok(0) => return Err(truncated()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if block.iter().any(|&b| b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a lone zero block is followed by more data where the end-of-archive marker (two zero blocks) should be",
            ));
        }
        Ok(())
    }

    /// True once a read found no more bytes.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        Ok(n)
    }
}

/// Stops the stream when it outgrows the budget, before the bytes reach a file.
struct Budgeted<R> {
    inner: R,
    unpacked: u64,
    compressed: Arc<AtomicU64>,
    budget: Budget,
    faults: FaultSlot,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unpacked += n as u64;
        if let Some(fault) = over_budget(
            self.unpacked,
            self.compressed.load(Ordering::Relaxed),
            &self.budget,
        ) {
            self.faults.set(fault);
            return Err(io::Error::other(
                "the snapshot is over its unpacking budget",
            ));
        }
        Ok(n)
    }
}

/// The budget rule, apart from any stream.
pub fn over_budget(unpacked: u64, compressed: u64, budget: &Budget) -> Option<StreamFault> {
    if unpacked > budget.max_bytes {
        return Some(StreamFault::TooLarge {
            limit: budget.max_bytes,
        });
    }
    if unpacked > RATIO_GRACE && unpacked / compressed.max(1) > budget.max_ratio {
        return Some(StreamFault::Bomb {
            ratio: unpacked / compressed.max(1),
            limit: budget.max_ratio,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_magic_not_name() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Some(Format::Gzip));
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(detect(&tar), Some(Format::Tar));
        assert_eq!(detect(b"PK\x03\x04 a zip file"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn the_budget_counts_bytes_and_ratio_after_the_grace() {
        let budget = Budget {
            max_bytes: 100 << 20,
            max_ratio: 50,
            ..Budget::default()
        };
        assert_eq!(
            over_budget(10 << 20, 1, &budget),
            None,
            "small archives may compress well"
        );
        assert_eq!(
            over_budget(20 << 20, 1 << 10, &budget),
            Some(StreamFault::Bomb {
                ratio: 20 << 10,
                limit: 50
            })
        );
        assert_eq!(over_budget(20 << 20, 1 << 20, &budget), None);
        assert_eq!(
            over_budget(101 << 20, 100 << 20, &budget),
            Some(StreamFault::TooLarge { limit: 100 << 20 })
        );
    }

    #[test]
    fn the_digest_covers_bytes_not_yet_read() {
        let mut reader = Hashing::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        reader.read_exact(&mut first).unwrap();
        let (digest, bytes) = reader.finish().unwrap();
        assert_eq!(bytes, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
