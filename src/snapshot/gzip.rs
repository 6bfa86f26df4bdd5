//! Gunzip of a whole gzip file: every member, as `gzip -d`, GNU tar and Python read it.
//!
//! RFC 1952 (§2.2) lets a file hold several members one after another: `cat a.gz b.gz`,
//! `pigz --independent`, bgzip and appending tools write them. Decoding only the first
//! would unpack part of a snapshot and call it whole. After the last member only zero
//! padding (a tape-style block) may follow; anything else means the file is not what its
//! producer wrote, and is refused rather than ignored.

use std::io::{self, BufRead, Read};

use flate2::bufread::GzDecoder;

const GZIP_MAGIC: u8 = 0x1f;

/// Reads the decompressed bytes of every member of a gzip stream.
pub struct GzipMembers<R: BufRead> {
    /// The member being decoded; `None` once the stream has ended (or failed).
    decoder: Option<GzDecoder<R>>,
    /// Members begun so far, for messages.
    members: u64,
}

impl<R: BufRead> GzipMembers<R> {
    pub fn new(reader: R) -> Self {
        GzipMembers {
            decoder: Some(GzDecoder::new(reader)),
            members: 1,
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // This member ended with a good CRC and length; what follows decides.
            let Some(mut reader) = self.decoder.take().map(GzDecoder::into_inner) else {
                return Ok(0);
            };
            match what_follows(&mut reader, self.members)? {
                Following::Member => {
                    self.members += 1;
                    self.decoder = Some(GzDecoder::new(reader));
                }
                Following::End => return Ok(0),
            }
        }
    }
}

enum Following {
    Member,
    End,
}

/// Looks at the bytes after member number `members`: another member, the end of the
/// stream, or zero padding up to the end. Anything else is trailing garbage.
fn what_follows(reader: &mut impl BufRead, members: u64) -> io::Result<Following> {
    let mut padding = 0u64;
    loop {
        let available = reader.fill_buf()?;
        let Some(&first) = available.first() else {
            return Ok(Following::End);
        };
        if padding == 0 && first == GZIP_MAGIC {
            return Ok(Following::Member);
        }
        match available.iter().position(|&b| b != 0) {
            Some(offset) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "after gzip member {members} come {} byte(s) of zero padding, then bytes that are neither zeros nor another gzip member (trailing garbage)",
                        padding + offset as u64
                    ),
                ));
            }
            None => {
                let len = available.len();
                padding += len as u64;
                reader.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn decode(stream: &[u8]) -> io::Result<Vec<u8>> {
        // A tiny buffer, so member boundaries fall across refills.
        let reader = io::BufReader::with_capacity(7, stream);
        let mut out = Vec::new();
        GzipMembers::new(reader).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_member_is_decoded_in_order() {
        let mut stream = gzip(b"first ");
        stream.extend(gzip(b""));
        stream.extend(gzip(b"second ").iter());
        stream.extend(gzip(b"third"));
        assert_eq!(decode(&stream).unwrap(), b"first second third");
    }

    #[test]
    fn zero_padding_after_the_last_member_is_accepted() {
        let mut stream = gzip(b"data");
        stream.extend([0u8; 1000]);
        assert_eq!(decode(&stream).unwrap(), b"data");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut stream = gzip(b"data");
        stream.extend(b"not gzip");
        let error = decode(&stream).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("trailing garbage"), "{error}");

        let mut padded_then_garbage = gzip(b"data");
        padded_then_garbage.extend([0u8; 20]);
        padded_then_garbage.push(1);
        let error = decode(&padded_then_garbage).unwrap_err();
        assert!(error.to_string().contains("20 byte(s)"), "{error}");
    }

    #[test]
    fn a_member_cut_short_is_an_error() {
        let mut stream = gzip(b"first");
        let second = gzip(&[7u8; 4096]);
        stream.extend(&second[..second.len() - 3]);
        assert!(decode(&stream).is_err());
    }
}
