//! Replacement of secret values by `***` in everything the agent forwards or writes.
//!
//! The agent core knows no secrets; the secrets phase fills the shared [`MaskHandle`] before
//! the child starts, and every writer (output forwarding, the agent's own log lines, the
//! record's `log_tail` and error message) asks the handle for the current [`Masker`].
//!
//! Whole texts (a log line, an error message) are masked with [`Masker::mask`]. The child's
//! output is masked line by line: [`Masker::mask_lines`] for blocks of whole lines, and a
//! [`SplitLine`] for a line longer than the framer holds, which arrives in fragments. The
//! latter holds back the end of each fragment that a secret could still start in (at most
//! the longest pattern less one byte, plus an incomplete UTF-8 sequence) and masks it
//! together with the next piece, so a secret is masked wherever the fragments are cut, and
//! the output is what masking each whole line would give.
//!
//! Limits that remain:
//! - Output is masked line by line, so a multi-line value is masked as its lines (`***` on
//!   each), and a line of it shorter than [`MIN_SECRET_LEN`] (an empty line, a short last
//!   line of base64) is not masked in the child's output. In whole texts the full value is
//!   masked as well.
//! - A secret is masked as the bytes it is. The same value in another encoding (escaped by
//!   the child in JSON or a repr, URL-encoded, base64) is not recognised.
//! - Values shorter than [`MIN_SECRET_LEN`] are never masked.
//! - The agent's own log masks a field's text before JSON escaping, but a value logged with
//!   `?` (Debug) is escaped before it can be masked; secret-bearing values are logged with `%`.
//! - The held-back end of an over-long line (at most the longest value plus two bytes) goes
//!   out with the next piece of the line, or when the stream ends: later, never lost.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

use crate::supervise::framing::incomplete_utf8_tail;

pub const MASK: &[u8] = b"***";

/// Values shorter than this are not masked: masking `a` or `on` would shred every line
/// while protecting nothing.
pub const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Default)]
pub struct Masker {
    /// Every value, and each line of a multi-line value: for whole texts.
    matcher: Option<AhoCorasick>,
    /// The patterns without a `\n`, for output framed into lines: a match never spans two
    /// lines, so a block of lines is masked as each of its lines would be. The same
    /// automaton as `matcher` (a cheap clone) unless a value has several lines.
    line_matcher: Option<AhoCorasick>,
}

impl Masker {
    /// Builds a masker for these values. Each line of a multi-line value is also masked on
    /// its own, because output is framed into lines before it is masked.
    pub fn new<I, V>(values: I) -> Result<Masker, String>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let value = value.as_ref();
            let mut push = |piece: &[u8]| {
                if piece.len() >= MIN_SECRET_LEN && !patterns.iter().any(|p| p == piece) {
                    patterns.push(piece.to_vec());
                }
            };
            push(value);
            for line in value.split(|b| *b == b'\n') {
                push(line.strip_suffix(b"\r").unwrap_or(line));
            }
        }
        if patterns.is_empty() {
            return Ok(Masker::default());
        }
        let build = |patterns: &[&Vec<u8>]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns)
                .map_err(|e| format!("cannot build the secret masker: {e}"))
        };
        let all: Vec<&Vec<u8>> = patterns.iter().collect();
        let single: Vec<&Vec<u8>> = patterns.iter().filter(|p| !p.contains(&b'\n')).collect();
        let matcher = build(&all)?;
        let line_matcher = if single.len() == all.len() {
            Some(matcher.clone())
        } else if single.is_empty() {
            None
        } else {
            Some(build(&single)?)
        };
        Ok(Masker {
            matcher: Some(matcher),
            line_matcher,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Masks a whole text: every value, a multi-line one also as a whole.
    pub fn mask<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        replace(self.matcher.as_ref(), bytes)
    }

    /// Masks each line of `bytes` on its own, as if it were masked line by line: a match
    /// never spans a `\n`. For the child's output, which is framed into lines.
    pub fn mask_lines<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        replace(self.line_matcher.as_ref(), bytes)
    }

    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

fn replace<'a>(matcher: Option<&AhoCorasick>, bytes: &'a [u8]) -> Cow<'a, [u8]> {
    let Some(matcher) = matcher else {
        return Cow::Borrowed(bytes);
    };
    if !matcher.is_match(bytes) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    matcher.replace_all_with_bytes(bytes, &mut out, |_, _, dst| {
        dst.extend_from_slice(MASK);
        true
    });
    Cow::Owned(out)
}

/// Masking of one stream of lines whose over-long lines arrive in fragments: the bytes of
/// the current line that a secret could still be starting in are held back, raw, and
/// masked together with the next piece of the line.
///
/// Holding back from the first position at which a match could reach past the fragment's
/// end (the longest pattern less one byte from it), or from the end of the last match if
/// that is later, decides every match before the cut exactly as masking the whole line
/// would: each of them lies wholly inside what has arrived, and leftmost-longest matching
/// chooses among the matches at a position only by what lies there. The cut is moved back
/// over an incomplete UTF-8 sequence, so text stays text in each piece. At most the
/// longest pattern plus two bytes are held.
///
/// The masker is not kept: each piece is masked with the one passed for it.
#[derive(Debug, Default)]
pub struct SplitLine {
    held: Vec<u8>,
}

impl SplitLine {
    pub fn new() -> SplitLine {
        SplitLine::default()
    }

    /// Masks the next piece of the stream: `continues` when the piece ends inside a line
    /// that the next piece carries on (a fragment of an over-long line), else it ends a
    /// line or the stream. Returns what can go out now; empty when all of a continuing
    /// piece is held back.
    pub fn mask<'a>(&mut self, masker: &Masker, bytes: &'a [u8], continues: bool) -> Cow<'a, [u8]> {
        if self.held.is_empty() {
            return match (continues, masker.line_matcher.as_ref()) {
                (false, matcher) => replace(matcher, bytes),
                (true, None) => Cow::Borrowed(bytes),
                (true, Some(matcher)) => {
                    let (masked, cut) = mask_head(matcher, bytes);
                    self.held.extend_from_slice(&bytes[cut..]);
                    masked.map_or(Cow::Borrowed(&bytes[..cut]), Cow::Owned)
                }
            };
        }
        self.held.extend_from_slice(bytes);
        match (continues, masker.line_matcher.as_ref()) {
            (true, Some(matcher)) => {
                let (masked, cut) = mask_head(matcher, &self.held);
                let out = masked.unwrap_or_else(|| self.held[..cut].to_vec());
                self.held.drain(..cut);
                Cow::Owned(out)
            }
            (_, matcher) => {
                let joined = std::mem::take(&mut self.held);
                match replace(matcher, &joined) {
                    Cow::Owned(masked) => Cow::Owned(masked),
                    Cow::Borrowed(_) => Cow::Owned(joined),
                }
            }
        }
    }

    /// The bytes still held at the end of the stream, masked: a secret they hold whole is
    /// masked, the start of one is not (it never was a secret).
    pub fn finish(&mut self, masker: &Masker) -> Option<Vec<u8>> {
        if self.held.is_empty() {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        Some(match masker.mask_lines(&held) {
            Cow::Owned(masked) => masked,
            Cow::Borrowed(_) => held,
        })
    }

    /// How many bytes are held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Masks the part of `line` (a line's head, without `\n`) that no later byte can change:
/// returns the masked head (`None`: it is `line[..cut]` unchanged) and the cut.
fn mask_head(matcher: &AhoCorasick, line: &[u8]) -> (Option<Vec<u8>>, usize) {
    // A match starting at `settled` or later might reach past the end of `line`.
    let settled = line
        .len()
        .saturating_sub(matcher.max_pattern_len().saturating_sub(1));
    let mut masked: Option<Vec<u8>> = None;
    let mut last = 0;
    for found in matcher.find_iter(line) {
        if found.start() >= settled {
            break;
        }
        let out = masked.get_or_insert_with(|| Vec::with_capacity(line.len()));
        out.extend_from_slice(&line[last..found.start()]);
        out.extend_from_slice(MASK);
        last = found.end();
    }
    let mut cut = settled.max(last);
    cut -= incomplete_utf8_tail(&line[last..cut]);
    if let Some(out) = &mut masked {
        out.extend_from_slice(&line[last..cut]);
    }
    (masked, cut)
}

/// The masker every writer shares; replaced once the secrets are known.
#[derive(Debug, Clone, Default)]
pub struct MaskHandle(Arc<RwLock<Arc<Masker>>>);

impl MaskHandle {
    pub fn current(&self) -> Arc<Masker> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set(&self, masker: Masker) {
        let masker = Arc::new(masker);
        match self.0.write() {
            Ok(mut guard) => *guard = masker,
            Err(poisoned) => *poisoned.into_inner() = masker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secrets_borrows_the_input() {
        let masker = Masker::default();
        assert!(matches!(masker.mask(b"hello"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_are_masked_wherever_they_stand() {
        let masker = Masker::new(["s3cr3t-value", "hunter22"]).unwrap();
        assert_eq!(
            masker
                .mask(b"token=s3cr3t-value; again s3cr3t-valuehunter22\n")
                .as_ref(),
            b"token=***; again ******\n"
        );
    }

    #[test]
    fn each_line_of_a_multiline_value_is_masked() {
        let masker = Masker::new(["-----BEGIN KEY-----\nABCDEFGH\n-----END KEY-----"]).unwrap();
        assert_eq!(masker.mask(b"line: ABCDEFGH\n").as_ref(), b"line: ***\n");
    }

    #[test]
    fn short_values_are_not_masked() {
        let masker = Masker::new(["abc", ""]).unwrap();
        assert!(masker.is_empty());
        assert_eq!(masker.mask(b"abc").as_ref(), b"abc");
    }

    #[test]
    fn the_handle_hands_out_the_newest_masker() {
        let handle = MaskHandle::default();
        assert!(handle.current().is_empty());
        handle.set(Masker::new(["password1"]).unwrap());
        assert_eq!(handle.current().mask_str("x password1 y"), "x *** y");
    }

    #[test]
    fn a_multiline_value_is_masked_whole_in_texts_and_by_lines_in_output() {
        let masker = Masker::new(["first-line\nsecond-line"]).unwrap();
        let text = b"a first-line\nsecond-line b\n";
        assert_eq!(masker.mask(text).as_ref(), b"a *** b\n");
        assert_eq!(masker.mask_lines(text).as_ref(), b"a ***\n*** b\n");
    }

    #[test]
    fn a_multiline_value_of_short_lines_is_masked_only_in_texts() {
        let masker = Masker::new(["ab\ncd\nef"]).unwrap();
        assert!(!masker.is_empty());
        assert_eq!(masker.mask(b"ab\ncd\nef").as_ref(), b"***");
        assert_eq!(masker.mask_lines(b"ab\ncd\nef").as_ref(), b"ab\ncd\nef");
        let mut split = SplitLine::new();
        assert_eq!(split.mask(&masker, b"ab", true).as_ref(), b"ab");
        assert_eq!(split.held(), 0);
    }

    #[test]
    fn the_tail_of_a_utf8_sequence_is_counted() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("a€".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_utf8_tail(&"a€".as_bytes()[..2]), 1);
        assert_eq!(incomplete_utf8_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_utf8_tail(b"\x80\x80\x80\x80"), 0);
        assert_eq!(incomplete_utf8_tail(b""), 0);
    }

    /// Feeds `line` to a `SplitLine` in pieces cut at `cuts`; the last piece ends the line,
    /// or `finish` flushes what is held if `by_finish`.
    fn split_mask(masker: &Masker, line: &[u8], cuts: &[usize], by_finish: bool) -> Vec<u8> {
        let longest = masker
            .line_matcher
            .as_ref()
            .map_or(0, |m| m.max_pattern_len());
        let mut split = SplitLine::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([&line.len()]) {
            let last = cut == line.len();
            let piece = &line[start..cut];
            out.extend_from_slice(&split.mask(masker, piece, !last || by_finish));
            assert!(split.held() <= longest + 2, "{} bytes held", split.held());
            start = cut;
        }
        if let Some(rest) = split.finish(masker) {
            out.extend_from_slice(&rest);
        }
        assert_eq!(split.held(), 0);
        out
    }

    #[test]
    fn a_line_in_pieces_is_masked_as_the_whole_line() {
        let masker = Masker::new(["abcd", "abcdefgh", "xxabcdyy", "0123456789ABCDEF"]).unwrap();
        let cases: &[(&[u8], &[u8])] = &[
            (b"--abcdefgh--", b"--***--"),
            (b"--abcdefg--", b"--***efg--"),
            (b"xxabcdyy", b"***"),
            (b"xxabcdy", b"xx***y"),
            (b"0123456789ABCDEF0123456789ABCDE", b"***0123456789ABCDE"),
            (b"abcabcd", b"abc***"),
        ];
        for (line, want) in cases {
            for a in 0..=line.len() {
                for b in a..=line.len() {
                    for by_finish in [false, true] {
                        let got = split_mask(&masker, line, &[a, b], by_finish);
                        assert_eq!(
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(want),
                            "cuts {a} {b}, finish {by_finish}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_line_held_back_at_the_end_of_the_stream_is_flushed() {
        let masker = Masker::new(["abcdef", "abcdefghijkl"]).unwrap();
        let mut split = SplitLine::new();
        // The start of a secret is held back, and comes out raw at the end.
        assert_eq!(
            split.mask(&masker, b"0123456789abcde", true).as_ref(),
            b"0123"
        );
        assert_eq!(split.finish(&masker).unwrap(), b"456789abcde");
        // A whole secret in what is held is masked at the end: the longer one never came.
        assert_eq!(
            split.mask(&masker, b"0123456789abcdef", true).as_ref(),
            b"01234"
        );
        assert_eq!(split.finish(&masker).unwrap(), b"56789***");
        assert_eq!(split.finish(&masker), None);
        // A secret that nothing later can change is not held back.
        assert_eq!(
            split.mask(&masker, b"abcdefghijkl01", true).as_ref(),
            b"***"
        );
        assert_eq!(split.held(), 2);
    }

    #[test]
    fn held_back_text_is_cut_on_character_boundaries() {
        let masker = Masker::new(["€€€€"]).unwrap();
        let mut split = SplitLine::new();
        let line = "x".repeat(5) + &"é".repeat(10);
        let out = split.mask(&masker, line.as_bytes(), true);
        assert!(std::str::from_utf8(&out).is_ok());
        let rest = split.finish(&masker).unwrap();
        assert!(std::str::from_utf8(&rest).is_ok());
        assert_eq!([&out[..], &rest[..]].concat(), line.as_bytes());
    }

    #[test]
    fn any_line_in_any_pieces_is_masked_as_a_whole() {
        let mut state: u64 = 0x5eed_0f5e_c2e7_5eed;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let secrets: [&[u8]; 6] = [
            b"abab",
            b"ababab",
            b"babba",
            b"aab\xe2\x82\xac",
            b"abbabbbaabababbbabaabbbab",
            b"\xffab\xff",
        ];
        for round in 0..2000 {
            let chosen: Vec<&[u8]> = secrets.iter().copied().filter(|_| next(3) > 0).collect();
            let masker = Masker::new(&chosen).unwrap();
            let mut line = Vec::new();
            for _ in 0..next(80) {
                match next(10) {
                    0 if !chosen.is_empty() => line.extend_from_slice(chosen[next(chosen.len())]),
                    1 => line.extend_from_slice("€".as_bytes()),
                    2 => line.push(0xff),
                    3..=5 => line.push(b'a'),
                    _ => line.push(b'b'),
                }
            }
            let mut cuts: Vec<usize> = (0..next(6)).map(|_| next(line.len() + 1)).collect();
            cuts.sort();
            let by_finish = next(2) == 0;
            let got = split_mask(&masker, &line, &cuts, by_finish);
            assert_eq!(
                got,
                masker.mask(&line).as_ref(),
                "round {round}: {:?} in pieces cut at {cuts:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }
}
