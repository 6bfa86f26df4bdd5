//! The last lines of the child's stderr, kept for the record's `log_tail` so that Airflow
//! can say why a task failed without opening the pod log.

use std::collections::VecDeque;

use super::framing::{Piece, lines};

/// Longest line kept in the tail; longer ones are cut (the record has 4 KiB in all).
pub const MAX_TAIL_LINE: usize = 512;

#[derive(Debug)]
pub struct TailBuffer {
    lines: VecDeque<String>,
    capacity: usize,
    /// The last line was a fragment that continues: the next piece extends it.
    open_line: bool,
}

impl TailBuffer {
    pub fn new(capacity: usize) -> TailBuffer {
        TailBuffer {
            lines: VecDeque::with_capacity(capacity),
            capacity,
            open_line: false,
        }
    }

    pub fn push(&mut self, piece: Piece<'_>) {
        if self.capacity == 0 {
            return;
        }
        match piece {
            Piece::Lines(block) => {
                let mut newest: Vec<&[u8]> = lines(block).rev().take(self.capacity).collect();
                newest.reverse();
                let first_continues = self.open_line && newest.len() == lines(block).count();
                for (i, line) in newest.into_iter().enumerate() {
                    if i == 0 && first_continues {
                        self.extend_last(line);
                    } else {
                        self.add(line);
                    }
                }
                self.open_line = false;
            }
            Piece::Fragment { bytes, continues } => {
                if self.open_line {
                    self.extend_last(bytes);
                } else {
                    self.add(bytes);
                }
                self.open_line = continues;
            }
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    fn add(&mut self, line: &[u8]) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(String::new());
        self.extend_last(line);
    }

    fn extend_last(&mut self, bytes: &[u8]) {
        if let Some(last) = self.lines.back_mut() {
            let room = MAX_TAIL_LINE.saturating_sub(last.len());
            if room == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(room)]);
            let text = text.trim_end_matches('\r');
            let mut cut = text.len().min(room);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            last.push_str(&text[..cut]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_lines() {
        let mut tail = TailBuffer::new(2);
        tail.push(Piece::Lines(b"one\ntwo\nthree\n"));
        tail.push(Piece::Lines(b"four\n"));
        assert_eq!(tail.lines(), vec!["three", "four"]);
    }

    #[test]
    fn fragments_of_one_line_stay_one_line() {
        let mut tail = TailBuffer::new(5);
        tail.push(Piece::Fragment {
            bytes: b"Traceback: ",
            continues: true,
        });
        tail.push(Piece::Lines(b"boom\nnext\n"));
        assert_eq!(tail.lines(), vec!["Traceback: boom", "next"]);
    }

    #[test]
    fn long_and_binary_lines_are_cut_and_made_text() {
        let mut tail = TailBuffer::new(3);
        let mut long = vec![b'x'; 2000];
        long.push(b'\n');
        tail.push(Piece::Lines(&long));
        tail.push(Piece::Lines(b"\xff\xfe bad\r\n"));
        let lines = tail.lines();
        assert_eq!(lines[0].len(), MAX_TAIL_LINE);
        assert_eq!(lines[1], "\u{fffd}\u{fffd} bad");
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut tail = TailBuffer::new(0);
        tail.push(Piece::Lines(b"a\n"));
        assert!(tail.lines().is_empty());
    }
}
