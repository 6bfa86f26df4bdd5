//! Forwarding of the child's stdout and stderr to the agent's own, line by line as they
//! come, masked, in text (unchanged bytes) or JSON (one object per line) form.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::framing::{LineFramer, Piece, lines};
use super::tail::TailBuffer;
use crate::mask::Masker;

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

/// Writes framed pieces of one stream to `out`.
pub struct LineWriter<W: Write> {
    out: W,
    stream: Stream,
    format: LogFormat,
    /// `,"tenant":"…",…` appended to each JSON line.
    identity_members: Arc<str>,
    masker: Arc<Masker>,
    tail: Option<Arc<Mutex<TailBuffer>>>,
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
            tail,
            json: Vec::new(),
        }
    }

    pub fn write_piece(&mut self, piece: Piece<'_>) -> io::Result<()> {
        let masked;
        let piece = match piece {
            Piece::Lines(block) => {
                masked = self.masker.mask(block);
                Piece::Lines(&masked)
            }
            Piece::Fragment { bytes, continues } => {
                masked = self.masker.mask(bytes);
                Piece::Fragment {
                    bytes: &masked,
                    continues,
                }
            }
        };
        if let Some(tail) = &self.tail
            && let Ok(mut tail) = tail.lock()
        {
            tail.push(piece);
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
pub fn forward<R: Read, W: Write>(mut input: R, writer: &mut LineWriter<W>) -> io::Result<()> {
    let mut framer = LineFramer::new(MAX_LINE);
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
        && let Err(e) = framer.finish(&mut |piece| writer.write_piece(piece))
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
}
