//! Cuts a byte stream into lines without ever holding more than `max_line` bytes of one
//! line: whole lines are handed on in blocks straight from the read buffer, and a line that
//! grows past `max_line` across reads is handed on in fragments. (A line inside one read is
//! never longer than the read buffer, which is the same size.)

use memchr::{memchr, memrchr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// One or more complete lines, each ending in `\n`.
    Lines(&'a [u8]),
    /// Part of a line with no `\n`: the head of an over-long line (`continues`), or the
    /// unterminated last line of the stream.
    Fragment { bytes: &'a [u8], continues: bool },
}

#[derive(Debug)]
pub struct LineFramer {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineFramer {
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            pending: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Feeds one chunk; `emit` sees each piece in stream order. Stops at the first error
    /// `emit` returns.
    pub fn push<E>(
        &mut self,
        mut chunk: &[u8],
        emit: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.pending.is_empty() {
            let end = memchr(b'\n', chunk);
            let head = end.map_or(chunk.len(), |e| e + 1);
            self.pending.extend_from_slice(&chunk[..head]);
            chunk = &chunk[head..];
            self.emit_overlong(end.is_some(), emit)?;
            if end.is_none() {
                return Ok(());
            }
            emit(Piece::Lines(&self.pending))?;
            self.pending.clear();
        }
        match memrchr(b'\n', chunk) {
            Some(end) => {
                emit(Piece::Lines(&chunk[..=end]))?;
                self.pending.extend_from_slice(&chunk[end + 1..]);
            }
            None => self.pending.extend_from_slice(chunk),
        }
        self.emit_overlong(false, emit)
    }

    /// Flushes the unterminated last line at the end of the stream.
    pub fn finish<E>(
        &mut self,
        emit: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = emit(Piece::Fragment {
            bytes: &self.pending,
            continues: false,
        });
        self.pending.clear();
        result
    }

    /// Hands on the head of `pending` in `max_line` fragments while more than a line's worth
    /// is held. A `complete` line (ending in `\n`) keeps its last piece for a `Lines` block;
    /// an incomplete one keeps up to `max_line` bytes, so a fragment that `continues` is only
    /// handed on once more of its line has come, and the last piece of a stream never does.
    fn emit_overlong<E>(
        &mut self,
        complete: bool,
        emit: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let content = self.pending.len() - usize::from(complete);
        let mut start = 0;
        while content - start > self.max_line {
            let piece = utf8_cut(&self.pending[start..start + self.max_line]);
            emit(Piece::Fragment {
                bytes: piece,
                continues: true,
            })?;
            start += piece.len();
        }
        self.pending.drain(..start);
        Ok(())
    }
}

/// `piece`, less a UTF-8 sequence cut short at its end, so that text split into fragments
/// stays text in each fragment. Binary data is returned whole, and so is a piece that is
/// nothing but the start of one sequence.
fn utf8_cut(piece: &[u8]) -> &[u8] {
    let tail = incomplete_utf8_tail(piece);
    if tail < piece.len() {
        &piece[..piece.len() - tail]
    } else {
        piece
    }
}

/// How many bytes at the end of `bytes` are a UTF-8 sequence cut short (0 to 3).
pub fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    for back in 1..=bytes.len().min(4) {
        let byte = bytes[bytes.len() - back];
        if is_continuation(byte) {
            continue;
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// The lines of a [`Piece::Lines`] block, each without its `\n`.
pub fn lines(block: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    let body = block.strip_suffix(b"\n").unwrap_or(block);
    body.split(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// Feeds `chunks` and returns what came out, as (bytes, kind) with kind L / F+ / F.
    fn frame(max_line: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, &'static str)> {
        let mut framer = LineFramer::new(max_line);
        let mut out = Vec::new();
        let mut emit = |piece: Piece<'_>| -> Result<(), Infallible> {
            out.push(match piece {
                Piece::Lines(b) => (b.to_vec(), "L"),
                Piece::Fragment {
                    bytes,
                    continues: true,
                } => (bytes.to_vec(), "F+"),
                Piece::Fragment {
                    bytes,
                    continues: false,
                } => (bytes.to_vec(), "F"),
            });
            Ok(())
        };
        for chunk in chunks {
            framer.push(chunk, &mut emit).unwrap();
        }
        framer.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn whole_lines_pass_as_one_block() {
        assert_eq!(
            frame(100, &[b"a\nbb\nccc\n"]),
            vec![(b"a\nbb\nccc\n".to_vec(), "L")]
        );
    }

    #[test]
    fn a_line_split_across_reads_is_joined() {
        assert_eq!(
            frame(100, &[b"hel", b"lo\nwor", b"ld\n"]),
            vec![(b"hello\n".to_vec(), "L"), (b"world\n".to_vec(), "L")]
        );
    }

    #[test]
    fn the_unterminated_last_line_is_flushed() {
        assert_eq!(
            frame(100, &[b"a\npartial"]),
            vec![(b"a\n".to_vec(), "L"), (b"partial".to_vec(), "F")]
        );
    }

    #[test]
    fn an_overlong_line_comes_out_in_bounded_fragments_and_nothing_is_lost() {
        let line = vec![b'x'; 25];
        let mut input = line.clone();
        input.push(b'\n');
        let out = frame(10, &[&input[..7], &input[7..]]);
        assert_eq!(out[0], (vec![b'x'; 10], "F+"));
        assert_eq!(out[1], (vec![b'x'; 10], "F+"));
        assert_eq!(out[2], (b"xxxxx\n".to_vec(), "L"));
        let joined: Vec<u8> = out.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(joined, input);
    }

    #[test]
    fn a_last_line_that_fills_whole_fragments_ends_in_a_last_fragment() {
        assert_eq!(
            frame(4, &[b"abcdefgh"]),
            vec![(b"abcd".to_vec(), "F+"), (b"efgh".to_vec(), "F")]
        );
        assert_eq!(
            frame(4, &[b"abcd", b"efgh", b"\n"]),
            vec![(b"abcd".to_vec(), "F+"), (b"efgh\n".to_vec(), "L")]
        );
    }

    #[test]
    fn fragments_of_text_end_on_character_boundaries() {
        let line = "€".repeat(20);
        let mut input = line.clone().into_bytes();
        input.push(b'\n');
        let out = frame(10, &[&input[..5], &input[5..]]);
        for (bytes, _) in &out {
            assert!(std::str::from_utf8(bytes).is_ok(), "{bytes:?}");
            assert!(bytes.len() <= 10 + 1);
        }
        let joined: Vec<u8> = out.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(joined, input);
    }

    #[test]
    fn any_input_in_any_chunks_comes_out_whole_in_bounded_pieces() {
        let mut state: u64 = 0x0dd_ba11_cafe_f00d;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        const MAX: usize = 16;
        for _ in 0..300 {
            let input: Vec<u8> = (0..next(400))
                .map(|_| match next(6) {
                    0 => b'\n',
                    1 => 0xE2, // lead byte of a three-byte sequence
                    2 => 0x82,
                    3 => 0xff,
                    _ => b'x',
                })
                .collect();
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + next(rest.len().min(MAX)));
                chunks.push(chunk);
                rest = tail;
            }
            let out = frame(MAX, &chunks);
            if let Some((_, kind)) = out.last() {
                assert_ne!(*kind, "F+", "the last piece continues");
            }
            for (bytes, kind) in &out {
                if *kind == "L" {
                    assert!(lines(bytes).all(|line| line.len() <= MAX), "{bytes:?}");
                } else {
                    assert!(bytes.len() <= MAX, "{kind} piece of {} bytes", bytes.len());
                    assert!(!bytes.contains(&b'\n'));
                }
            }
            let joined: Vec<u8> = out.into_iter().flat_map(|(b, _)| b).collect();
            assert_eq!(joined, input);
        }
    }

    #[test]
    fn binary_bytes_are_passed_through_untouched() {
        let input: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let out = frame(64, &[&input[..1000], &input[1000..]]);
        let joined: Vec<u8> = out.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(joined, input);
    }

    #[test]
    fn lines_of_a_block_are_listed_without_newlines() {
        let got: Vec<&[u8]> = lines(b"a\n\nb\n").collect();
        assert_eq!(got, vec![&b"a"[..], b"", b"b"]);
    }
}
