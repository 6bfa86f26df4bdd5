//! Forwarding of the child's stdout and stderr to the agent's own, line by line as they
//! come, masked, in text (unchanged bytes) or JSON (one object per line) form.
//!
//! Masking is per line: blocks of whole lines are masked as they come, and the fragments of
//! an over-long line go through a [`SplitLine`], which holds back the end of each fragment
//! that a secret could still be starting in, so no cut between fragments lets one through.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::framing::{LineFramer, Piece, lines};
use super::tail::TailBuffer;
use crate::mask::{Masker, SplitLine};

/// Lines longer than this are forwarded in pieces, so memory stays bounded whatever the
/// child writes.
pub const MAX_LINE: usize = 64 * 1024;
const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The child's lines unchanged; the agent's own events as `[task-agent] LEVEL message`.
    Text,
    /// One JSON object per line: timestamp, stream, message and the task identity.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A second destination of the forwarded lines (telemetry), handed each line as it was
/// written: masked, without its `\n`. A piece of an over-long line comes with `continues`
/// set while more of the line follows.
pub trait LineSink: Send + Sync + std::fmt::Debug {
    fn line(&self, stream: Stream, line: &[u8], continues: bool);
}

/// Writes framed pieces of one stream to `out`.
pub struct LineWriter<W: Write> {
    out: W,
    stream: Stream,
    format: LogFormat,
    /// `,"tenant":"…",…` appended to each JSON line.
    identity_members: Arc<str>,
    masker: Arc<Masker>,
    /// The end of the current over-long line, held back until masking it is settled.
    split: SplitLine,
    tail: Option<Arc<Mutex<TailBuffer>>>,
    sink: Option<Arc<dyn LineSink>>,
    json: Vec<u8>,
}

impl<W: Write> LineWriter<W> {
    pub fn new(
        out: W,
        stream: Stream,
        format: LogFormat,
        identity_members: Arc<str>,
        masker: Arc<Masker>,
        tail: Option<Arc<Mutex<TailBuffer>>>,
    ) -> LineWriter<W> {
        LineWriter {
            out,
            stream,
            format,
            identity_members,
            masker,
            split: SplitLine::new(),
            tail,
            sink: None,
            json: Vec::new(),
        }
    }

    /// Also hands every line to `sink`.
    pub fn with_sink(mut self, sink: Option<Arc<dyn LineSink>>) -> LineWriter<W> {
        self.sink = sink;
        self
    }

    /// Masks and writes the next piece of the stream. The end of a fragment that continues
    /// may be held back, and goes out with the next piece (or at [`LineWriter::finish`]).
    pub fn write_piece(&mut self, piece: Piece<'_>) -> io::Result<()> {
        let masked;
        let piece = match piece {
            Piece::Lines(block) => {
                masked = self.split.mask(&self.masker, block, false);
                Piece::Lines(&masked)
            }
            Piece::Fragment { bytes, continues } => {
                masked = self.split.mask(&self.masker, bytes, continues);
                if masked.is_empty() {
                    return Ok(());
                }
                Piece::Fragment {
                    bytes: &masked,
                    continues,
                }
            }
        };
        self.write_masked(piece)
    }

    /// Writes what is still held back of an unterminated last line, at the end of the
    /// stream (after the framer's `finish`).
    pub fn finish(&mut self) -> io::Result<()> {
        match self.split.finish(&self.masker) {
            Some(rest) => self.write_masked(Piece::Fragment {
                bytes: &rest,
                continues: false,
            }),
            None => Ok(()),
        }
    }

    fn write_masked(&mut self, piece: Piece<'_>) -> io::Result<()> {
        if let Some(tail) = &self.tail
            && let Ok(mut tail) = tail.lock()
        {
            tail.push(piece);
        }
        if let Some(sink) = &self.sink {
            match piece {
                Piece::Lines(block) => {
                    for line in lines(block) {
                        sink.line(self.stream, line, false);
                    }
                }
                Piece::Fragment { bytes, continues } => sink.line(self.stream, bytes, continues),
            }
        }
        match (self.format, piece) {
            (LogFormat::Text, Piece::Lines(bytes) | Piece::Fragment { bytes, .. }) => {
                self.out.write_all(bytes)?;
            }
            (LogFormat::Json, Piece::Lines(block)) => {
                self.json.clear();
                let timestamp = json_timestamp();
                for line in lines(block) {
                    self.push_json_line(&timestamp, line, false);
                }
                self.out.write_all(&self.json)?;
            }
            (LogFormat::Json, Piece::Fragment { bytes, continues }) => {
                self.json.clear();
                self.push_json_line(&json_timestamp(), bytes, continues);
                self.out.write_all(&self.json)?;
            }
        }
        if matches!(piece, Piece::Fragment { .. }) {
            self.out.flush()?;
        }
        Ok(())
    }

    fn push_json_line(&mut self, timestamp: &str, line: &[u8], partial: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let message = String::from_utf8_lossy(line);
        self.json.extend_from_slice(b"{\"timestamp\":");
        self.json.extend_from_slice(timestamp.as_bytes());
        self.json.extend_from_slice(b",\"stream\":\"");
        self.json.extend_from_slice(self.stream.name().as_bytes());
        self.json.extend_from_slice(b"\",\"message\":");
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.json, message.as_ref());
        if partial {
            self.json.extend_from_slice(b",\"partial\":true");
        }
        self.json
            .extend_from_slice(self.identity_members.as_bytes());
        self.json.extend_from_slice(b"}\n");
    }
}

fn json_timestamp() -> String {
    format!(
        "\"{}\"",
        humantime::format_rfc3339_micros(SystemTime::now())
    )
}

/// Copies `input` to `writer` until end of stream. If the destination breaks (the agent's
/// stdout closed), keeps reading so the child never blocks on a full pipe.
pub fn forward<R: Read, W: Write>(input: R, writer: &mut LineWriter<W>) -> io::Result<()> {
    forward_lines(input, writer, MAX_LINE)
}

fn forward_lines<R: Read, W: Write>(
    mut input: R,
    writer: &mut LineWriter<W>,
    max_line: usize,
) -> io::Result<()> {
    let mut framer = LineFramer::new(max_line);
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut broken: Option<io::Error> = None;
    loop {
        let read = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if broken.is_some() {
            continue;
        }
        if let Err(e) = framer.push(&buffer[..read], &mut |piece| writer.write_piece(piece)) {
            broken = Some(e);
        }
    }
    if broken.is_none()
        && let Err(e) = framer
            .finish(&mut |piece| writer.write_piece(piece))
            .and_then(|()| writer.finish())
    {
        broken = Some(e);
    }
    match broken {
        Some(e) => Err(e),
        None => writer.out.flush(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(format: LogFormat, masker: Masker) -> LineWriter<Vec<u8>> {
        LineWriter::new(
            Vec::new(),
            Stream::Stderr,
            format,
            Arc::from(",\"tenant\":\"t1\""),
            Arc::new(masker),
            Some(Arc::new(Mutex::new(TailBuffer::new(2)))),
        )
    }

    #[test]
    fn text_mode_forwards_bytes_unchanged() {
        let input: Vec<u8> = b"plain line\n\xff\x00binary\nno newline at end".to_vec();
        let mut w = writer(LogFormat::Text, Masker::default());
        forward(&input[..], &mut w).unwrap();
        assert_eq!(w.out, input);
    }

    #[test]
    fn json_mode_writes_one_object_per_line() {
        let input = b"first\nsecond \"quoted\"\r\n\xffbad utf8\nlast";
        let mut w = writer(LogFormat::Json, Masker::default());
        forward(&input[..], &mut w).unwrap();
        let text = String::from_utf8(w.out).unwrap();
        let objects: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let messages: Vec<&str> = objects
            .iter()
            .map(|o| o["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            vec!["first", "second \"quoted\"", "\u{fffd}bad utf8", "last"]
        );
        assert!(
            objects
                .iter()
                .all(|o| o["stream"] == "stderr" && o["tenant"] == "t1")
        );
        assert!(objects[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn json_mode_marks_pieces_of_overlong_lines() {
        let mut input = vec![b'y'; MAX_LINE + 10];
        input.push(b'\n');
        let mut w = writer(LogFormat::Json, Masker::default());
        forward(&input[..], &mut w).unwrap();
        let text = String::from_utf8(w.out).unwrap();
        let objects: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["partial"], true);
        assert_eq!(objects[1].get("partial"), None);
        let total: usize = objects
            .iter()
            .map(|o| o["message"].as_str().unwrap().len())
            .sum();
        assert_eq!(total, MAX_LINE + 10);
    }

    #[test]
    fn secrets_are_masked_in_output_and_tail() {
        let input = b"connecting with hunter2hunter2\n";
        let mut w = writer(LogFormat::Text, Masker::new(["hunter2hunter2"]).unwrap());
        forward(&input[..], &mut w).unwrap();
        assert_eq!(w.out, b"connecting with ***\n");
        let tail = w.tail.as_ref().unwrap().lock().unwrap().lines();
        assert_eq!(tail, vec!["connecting with ***"]);
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_destination_still_drains_the_input() {
        let input = vec![b'z'; 1 << 20];
        let mut reader = &input[..];
        let mut w = LineWriter::new(
            Closed,
            Stream::Stdout,
            LogFormat::Text,
            Arc::from(""),
            Arc::new(Masker::default()),
            None,
        );
        let err = forward(&mut reader, &mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(reader.is_empty(), "input was not drained");
    }

    /// Hands out `data` in reads of the given sizes (cycled).
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: &'a [usize],
        next: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.next % self.sizes.len()].max(1);
            self.next += 1;
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Forwards `input` in reads of `sizes`, in lines of at most `max_line` bytes.
    fn forward_in(
        format: LogFormat,
        masker: &Arc<Masker>,
        max_line: usize,
        input: &[u8],
        sizes: &[usize],
    ) -> LineWriter<Vec<u8>> {
        let mut w = LineWriter::new(
            Vec::new(),
            Stream::Stderr,
            format,
            Arc::from(",\"tenant\":\"t1\""),
            Arc::clone(masker),
            Some(Arc::new(Mutex::new(TailBuffer::new(3)))),
        );
        let reader = Chunked {
            data: input,
            sizes,
            next: 0,
        };
        forward_lines(reader, &mut w, max_line).unwrap();
        assert_eq!(w.split.held(), 0, "bytes left held back");
        w
    }

    /// What masking the whole stream line by line gives.
    fn masked_by_lines(masker: &Masker, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, line) in input.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(&masker.mask(line));
        }
        out
    }

    /// Forwards `input` in text mode with every `max_line` and every cut into two reads
    /// (and in one-byte reads), and checks each result against masking it line by line.
    fn assert_masked_however_cut(secrets: &[&str], input: &[u8], want: &[u8]) {
        let masker = Arc::new(Masker::new(secrets).unwrap());
        assert_eq!(
            String::from_utf8_lossy(&masked_by_lines(&masker, input)),
            String::from_utf8_lossy(want),
            "the reference"
        );
        for max_line in (1..=12).chain([16, 24, 64]) {
            for cut in 0..=input.len() {
                let sizes = [cut, input.len()];
                let w = forward_in(LogFormat::Text, &masker, max_line, input, &sizes);
                assert_eq!(
                    String::from_utf8_lossy(&w.out),
                    String::from_utf8_lossy(want),
                    "max_line {max_line}, cut at {cut}"
                );
            }
            let w = forward_in(LogFormat::Text, &masker, max_line, input, &[1]);
            assert_eq!(w.out, want, "max_line {max_line}, one-byte reads");
        }
    }

    #[test]
    fn a_secret_at_a_fragment_boundary_is_masked() {
        // With max_line 8 the secret ends at, starts at and straddles a boundary.
        assert_masked_however_cut(
            &["SECRET-1"],
            b"SECRET-1\nxxxxxxxxSECRET-1\nxxxxSECRET-1xxxx\nxxxxxxxSECRET-1\n",
            b"***\nxxxxxxxx***\nxxxx***xxxx\nxxxxxxx***\n",
        );
    }

    #[test]
    fn a_secret_longer_than_a_line_piece_is_masked() {
        assert_masked_however_cut(
            &["0123456789abcdefghijklmnopqrstuv"],
            b"key=0123456789abcdefghijklmnopqrstuv; again 0123456789abcdefghijklmnopqrstu\n",
            b"key=***; again 0123456789abcdefghijklmnopqrstu\n",
        );
    }

    #[test]
    fn a_secret_split_across_three_fragments_is_masked() {
        // With max_line 8, bytes 6..18 lie in the fragments 0..8, 8..16 and 16..24.
        assert_masked_however_cut(
            &["0123456789AB"],
            b"......0123456789AB......\n",
            b"......***......\n",
        );
    }

    #[test]
    fn overlapping_secrets_are_masked_leftmost_longest() {
        let secrets = ["abcd", "abcdefgh", "xxabcdyy"];
        assert_masked_however_cut(
            &secrets,
            b"--abcdefgh--
",
            b"--***--
",
        );
        assert_masked_however_cut(
            &secrets,
            b"--abcdefg--
",
            b"--***efg--
",
        );
        assert_masked_however_cut(
            &secrets,
            b"xxabcdyy-xxabcdy
",
            b"***-xx***y
",
        );
        assert_masked_however_cut(&secrets, b"abcabcdabcdefgh", b"abc******");
    }

    #[test]
    fn each_line_of_a_multiline_secret_is_masked() {
        assert_masked_however_cut(
            &["-----BEGIN-----\nAAAABBBBCCCC\r\n-----END-----"],
            b"key=-----BEGIN-----\nAAAABBBBCCCC\r\n-----END-----\nAAAABBBBCCCC",
            b"key=***\n***\r\n***\n***",
        );
    }

    #[test]
    fn a_stream_ending_in_a_held_back_tail_is_flushed() {
        // Complete at the very end: masked; only the start of the secret: passed on raw.
        assert_masked_however_cut(&["abcdef"], b"xxxxxxxxxxabcdef", b"xxxxxxxxxx***");
        assert_masked_however_cut(&["abcdef"], b"xxxxxxxxxxabcde", b"xxxxxxxxxxabcde");
        assert_masked_however_cut(
            &["abcd", "abcdefghij"],
            b"xxxxxxxxxxabcdefghi",
            b"xxxxxxxxxx***efghi",
        );
        // With the real line length, the secret ending where the framer's piece ends.
        let masker = Masker::new(["abcdef"]).unwrap();
        for (end, want) in [(&b"abcdef"[..], &b"***"[..]), (b"xabcde", b"xabcde")] {
            let mut input = vec![b'x'; MAX_LINE - end.len()];
            input.extend_from_slice(end);
            let mut w = writer(LogFormat::Text, Masker::new(["abcdef"]).unwrap());
            forward(&input[..], &mut w).unwrap();
            assert_eq!(
                &w.out[..MAX_LINE - end.len()],
                &input[..MAX_LINE - end.len()]
            );
            assert_eq!(&w.out[MAX_LINE - end.len()..], want);
            assert_eq!(w.out, masked_by_lines(&masker, &input));
        }
    }

    #[test]
    fn finish_writes_what_is_held_back() {
        let mut w = writer(
            LogFormat::Text,
            Masker::new(["abcd", "abcdefghij"]).unwrap(),
        );
        w.write_piece(Piece::Fragment {
            bytes: b"0123456789abcd",
            continues: true,
        })
        .unwrap();
        assert_eq!(w.out, b"01234");
        w.finish().unwrap();
        assert_eq!(w.out, b"0123456789***");
        w.finish().unwrap();
        assert_eq!(w.out, b"0123456789***");
    }

    #[test]
    fn output_without_secrets_is_unchanged_bytes_whatever_the_secrets() {
        let input: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for secrets in [&[][..], &["s3cr3t-value", "hunter22"][..]] {
            let masker = Arc::new(Masker::new(secrets).unwrap());
            for (max_line, sizes) in [(64, &[1000, 7][..]), (8, &[3, 50]), (1, &[13])] {
                let w = forward_in(LogFormat::Text, &masker, max_line, &input, sizes);
                assert!(w.out == input, "max_line {max_line}, secrets {secrets:?}");
            }
        }
    }

    /// A tiny deterministic generator, as in the framer's tests.
    fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        }
    }

    const SECRETS: [&str; 6] = [
        "abab",
        "ababab",
        "babba",
        "abbabbbaabababbbabaabbbab",
        "line-one\nababbb\n\nzz",
        "x€x€",
    ];

    /// A stream of `a`, `b`, `x`, `€`, newlines and the secrets; with `binary`, also `\r`,
    /// `0xff` and a cut-off `€`.
    fn random_stream(next: &mut impl FnMut(usize) -> usize, binary: bool) -> Vec<u8> {
        let mut input = Vec::new();
        for _ in 0..next(120) {
            match next(if binary { 14 } else { 11 }) {
                0 => input.extend_from_slice(SECRETS[next(SECRETS.len())].as_bytes()),
                1 => input.push(b'\n'),
                2 => input.extend_from_slice("€".as_bytes()),
                3 => input.push(b'x'),
                4..=6 => input.push(b'a'),
                7..=10 => input.push(b'b'),
                11 => input.push(b'\r'),
                12 => input.push(0xff),
                _ => input.extend_from_slice(&"€".as_bytes()[..2]),
            }
        }
        input
    }

    fn random_secrets(next: &mut impl FnMut(usize) -> usize) -> Arc<Masker> {
        let chosen: Vec<&str> = SECRETS.iter().copied().filter(|_| next(3) > 0).collect();
        Arc::new(Masker::new(chosen).unwrap())
    }

    #[test]
    fn any_stream_in_any_reads_is_masked_as_line_by_line() {
        let mut next = xorshift(0x5ec2_e750_ff00_d00d);
        for round in 0..3000 {
            let masker = random_secrets(&mut next);
            let input = random_stream(&mut next, true);
            let max_line = 1 + next(64);
            let sizes: Vec<usize> = (0..1 + next(4)).map(|_| 1 + next(80)).collect();
            let w = forward_in(LogFormat::Text, &masker, max_line, &input, &sizes);
            let want = masked_by_lines(&masker, &input);
            assert!(
                w.out == want,
                "round {round}, max_line {max_line}, reads {sizes:?}\n\
                 input {:?}\n  got {:?}\n want {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&w.out),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn any_stream_in_json_mode_is_one_object_per_piece_and_masked_by_lines() {
        let mut next = xorshift(0x0b1e_c75e_ed00_0001);
        for round in 0..1500 {
            let masker = random_secrets(&mut next);
            let input = random_stream(&mut next, false);
            // Below four bytes a line piece may cut a `€`, which JSON then cannot carry.
            let max_line = 4 + next(60);
            let sizes: Vec<usize> = (0..1 + next(4)).map(|_| 1 + next(80)).collect();
            let w = forward_in(LogFormat::Json, &masker, max_line, &input, &sizes);
            let text = String::from_utf8(w.out.clone()).unwrap();
            let mut got: Vec<String> = Vec::new();
            let mut open = false;
            for line in text.lines() {
                let object: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("round {round}: {e} in {line:?}"));
                let message = object["message"].as_str().unwrap();
                if open {
                    got.last_mut().unwrap().push_str(message);
                } else {
                    got.push(message.to_string());
                }
                open = object.get("partial") == Some(&serde_json::Value::Bool(true));
            }
            assert!(!open, "round {round}: the last line stayed partial");
            let want = String::from_utf8(masked_by_lines(&masker, &input)).unwrap();
            let mut want: Vec<&str> = want.split('\n').collect();
            if input.is_empty() || input.ends_with(b"\n") {
                want.pop();
            }
            assert_eq!(
                got, want,
                "round {round}, max_line {max_line}, reads {sizes:?}"
            );
            let tail = w.tail.as_ref().unwrap().lock().unwrap().lines();
            assert_eq!(
                tail,
                want[want.len().saturating_sub(3)..],
                "round {round}: tail"
            );
        }
    }
}
