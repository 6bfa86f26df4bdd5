//! Tar archives written byte by byte, so the tests can express what a careful writer (the
//! `tar` crate) refuses to: absolute names, `..` components, links anywhere, devices and
//! FIFOs, setuid modes, long names through GNU `L` entries or PAX `path` records, and
//! archives cut short. Every header is a 512-byte ustar block with a correct checksum;
//! times, owners and gzip headers are fixed, so the same calls give the same bytes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use sha2::{Digest, Sha256};

pub mod tree;

pub const BLOCK: usize = 512;

/// The modification time of every entry: 2023-11-14T22:13:20Z.
pub const MTIME: u64 = 1_700_000_000;

/// How an entry names a path longer than the 100 bytes of the header's name field.
#[derive(Clone, Copy, Debug)]
pub enum LongName {
    /// A preceding GNU `L` entry whose data is the name.
    Gnu,
    /// A preceding PAX extended header (`x`) with a `path` record.
    Pax,
}

/// The type flags this builder writes.
pub mod kind {
    pub const FILE: u8 = b'0';
    pub const HARD_LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR_DEVICE: u8 = b'3';
    pub const BLOCK_DEVICE: u8 = b'4';
    pub const DIRECTORY: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const GNU_LONG_NAME: u8 = b'L';
    pub const PAX: u8 = b'x';
}

/// One header's fields; `Tar::entry` writes it and its data.
#[derive(Clone, Debug)]
pub struct Header {
    pub path: String,
    pub kind: u8,
    pub mode: u32,
    pub size: u64,
    pub link: String,
    pub device: (u32, u32),
}

impl Header {
    pub fn new(path: &str, kind: u8, mode: u32) -> Header {
        Header {
            path: path.to_owned(),
            kind,
            mode,
            size: 0,
            link: String::new(),
            device: (0, 0),
        }
    }

    /// The 512-byte ustar block. The name must fit its 100 bytes (see `LongName`).
    pub fn block(&self) -> [u8; BLOCK] {
        assert!(
            self.path.len() <= 100,
            "{:?} needs a long-name entry",
            self.path
        );
        assert!(self.link.len() <= 100, "link name {:?} too long", self.link);
        let mut block = [0u8; BLOCK];
        put(&mut block, 0, 100, self.path.as_bytes());
        put_octal(&mut block, 100, 8, u64::from(self.mode));
        put_octal(&mut block, 108, 8, 0); // uid
        put_octal(&mut block, 116, 8, 0); // gid
        put_octal(&mut block, 124, 12, self.size);
        put_octal(&mut block, 136, 12, MTIME);
        block[156] = self.kind;
        put(&mut block, 157, 100, self.link.as_bytes());
        put(&mut block, 257, 6, b"ustar\0");
        put(&mut block, 263, 2, b"00");
        put(&mut block, 265, 32, b"root");
        put(&mut block, 297, 32, b"root");
        put_octal(&mut block, 329, 8, u64::from(self.device.0));
        put_octal(&mut block, 337, 8, u64::from(self.device.1));
        set_checksum(&mut block);
        block
    }
}

/// An archive being written; `finish` adds the two zero blocks that end it.
#[derive(Clone, Debug, Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    /// A header (its `size` set from `data`) and the data, padded to whole blocks.
    pub fn entry(mut self, mut header: Header, data: &[u8]) -> Tar {
        header.size = data.len() as u64;
        self.bytes.extend_from_slice(&header.block());
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(self, path: &str, mode: u32, contents: &[u8]) -> Tar {
        self.entry(Header::new(path, kind::FILE, mode), contents)
    }

    pub fn dir(self, path: &str, mode: u32) -> Tar {
        self.entry(Header::new(path, kind::DIRECTORY, mode), b"")
    }

    pub fn symlink(self, path: &str, target: &str) -> Tar {
        self.link(path, kind::SYMLINK, target)
    }

    pub fn hard_link(self, path: &str, target: &str) -> Tar {
        self.link(path, kind::HARD_LINK, target)
    }

    pub fn char_device(self, path: &str, major: u32, minor: u32) -> Tar {
        self.device(path, kind::CHAR_DEVICE, (major, minor))
    }

    pub fn block_device(self, path: &str, major: u32, minor: u32) -> Tar {
        self.device(path, kind::BLOCK_DEVICE, (major, minor))
    }

    pub fn fifo(self, path: &str) -> Tar {
        self.device(path, kind::FIFO, (0, 0))
    }

    /// A regular file whose path is longer than a header's name field can hold: a GNU `L`
    /// entry or a PAX `path` record carries it, and the header holds its first 100 bytes.
    pub fn file_with_long_name(self, path: &str, via: LongName, contents: &[u8]) -> Tar {
        let short = &path[..path.len().min(100)];
        let tar = match via {
            LongName::Gnu => {
                // GNU tar names it `././@LongLink`; the name is NUL-terminated.
                let mut name = path.as_bytes().to_vec();
                name.push(0);
                self.entry(
                    Header::new("././@LongLink", kind::GNU_LONG_NAME, 0o644),
                    &name,
                )
            }
            LongName::Pax => {
                let record = pax_record("path", path);
                let header_name = format!("PaxHeaders.0/{}", &short[..short.len().min(80)]);
                self.entry(Header::new(&header_name, kind::PAX, 0o644), &record)
            }
        };
        tar.file(short, 0o644, contents)
    }

    /// Bytes as they are, for what no method here writes.
    pub fn raw(mut self, bytes: &[u8]) -> Tar {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// The archive with its end-of-archive marker (two zero blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
        self.bytes
    }

    /// The entries so far, without the end-of-archive marker.
    pub fn unfinished(self) -> Vec<u8> {
        self.bytes
    }

    fn link(self, path: &str, kind: u8, target: &str) -> Tar {
        let mut header = Header::new(path, kind, 0o777);
        header.link = target.to_owned();
        self.entry(header, b"")
    }

    fn device(self, path: &str, kind: u8, device: (u32, u32)) -> Tar {
        let mut header = Header::new(path, kind, 0o644);
        header.device = device;
        self.entry(header, b"")
    }

    fn pad(&mut self) {
        let rest = self.bytes.len() % BLOCK;
        if rest != 0 {
            self.bytes.resize(self.bytes.len() + BLOCK - rest, 0);
        }
    }
}

/// `bytes` gzip'd, with a fixed header (no name, mtime 0).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// A gzip'd tar of one regular file `path` holding `size` zero bytes: a few hundred KiB
/// that unpack to `size`.
///
/// Made in pieces, as compressing 200 MiB would take a debug build many seconds: each piece
/// is deflated on its own and ends byte-aligned (a full flush), so the pieces concatenate
/// into one valid stream, and the one for 1 MiB of zeros is made once and repeated. The
/// CRC in the trailer is combined the same way.
pub fn gzip_bomb(path: &str, size: u64) -> Vec<u8> {
    const CHUNK: u64 = 1 << 20;
    let mut header = Header::new(path, kind::FILE, 0o644);
    header.size = size;
    // The data, its padding and the end-of-archive marker are all zeros.
    let zeros = size.div_ceil(BLOCK as u64) * BLOCK as u64 + 2 * BLOCK as u64;

    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = Crc::new();
    let mut append = |piece: &[u8], piece_crc: &Crc| {
        gz.extend_from_slice(piece);
        crc.combine(piece_crc);
    };
    let block = header.block();
    append(&deflate_piece(&block), &crc_of(&block));
    let chunk = vec![0u8; CHUNK as usize];
    let (chunk_piece, chunk_crc) = (deflate_piece(&chunk), crc_of(&chunk));
    for _ in 0..zeros / CHUNK {
        append(&chunk_piece, &chunk_crc);
    }
    let rest = &chunk[..(zeros % CHUNK) as usize];
    append(&deflate_piece(rest), &crc_of(rest));

    let mut last = Compress::new(Compression::best(), false);
    let mut end = Vec::with_capacity(64);
    let status = last
        .compress_vec(&[], &mut end, FlushCompress::Finish)
        .expect("deflate");
    assert_eq!(status, Status::StreamEnd);
    gz.extend_from_slice(&end);
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&((BLOCK as u64 + zeros) as u32).to_le_bytes());
    gz
}

/// `input` deflated by a fresh compressor (no references to earlier data) and flushed
/// to a byte boundary without ending the stream.
fn deflate_piece(input: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let mut output = Vec::with_capacity(input.len() / 64 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&input[consumed..], &mut output, FlushCompress::Full)
            .expect("deflate");
        // Done once all input is in and the flush left room to spare.
        if compress.total_in() as usize == input.len() && output.len() < output.capacity() {
            return output;
        }
        output.reserve(64 << 10);
    }
}

fn crc_of(bytes: &[u8]) -> Crc {
    let mut crc = Crc::new();
    crc.update(bytes);
    crc
}

/// The sha256 of `bytes` as 64 lowercase hex digits, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that gzip cannot shrink, the same for the same `seed` (xorshift64).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Writes `bytes` to `dir/name` and returns that path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Writes the finished archive to `dir/name` (a plain tar) and returns that path.
pub fn write_tar(dir: &Path, name: &str, tar: Tar) -> PathBuf {
    write(dir, name, &tar.finish())
}

/// Writes the finished archive gzip'd to `dir/name` and returns that path.
pub fn write_tar_gz(dir: &Path, name: &str, tar: Tar) -> PathBuf {
    write(dir, name, &gzip(&tar.finish()))
}

/// One PAX record, `"<length> <key>=<value>\n"`, where the length counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = format!(" {key}={value}\n");
    let mut length = rest.len();
    while length != (length.to_string().len() + rest.len()) {
        length = length.to_string().len() + rest.len();
    }
    format!("{length}{rest}").into_bytes()
}

fn put(block: &mut [u8; BLOCK], at: usize, width: usize, value: &[u8]) {
    assert!(value.len() <= width, "{value:?} does not fit {width} bytes");
    block[at..at + value.len()].copy_from_slice(value);
}

/// A numeric field: zero-padded octal digits and a NUL, as ustar writes them.
fn put_octal(block: &mut [u8; BLOCK], at: usize, width: usize, value: u64) {
    let digits = format!("{value:0width$o}", width = width - 1);
    assert_eq!(
        digits.len(),
        width - 1,
        "{value} does not fit {width} bytes"
    );
    put(block, at, width, digits.as_bytes());
}

/// The checksum: the sum of the header's bytes with the checksum field counted as eight
/// spaces, written as six octal digits, a NUL and a space.
fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(block, 148, 8, format!("{sum:06o}\0 ").as_bytes());
}
