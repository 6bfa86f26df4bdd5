//! Replacement of secret values by `***` in everything the agent forwards or writes.
//!
//! The agent core knows no secrets; the secrets phase fills the shared [`MaskHandle`] before
//! the child starts, and every writer (output forwarding, the agent's own log lines, the
//! record's `log_tail` and error message) asks the handle for the current [`Masker`].

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

pub const MASK: &[u8] = b"***";

/// Values shorter than this are not masked: masking `a` or `on` would shred every line
/// while protecting nothing.
pub const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Default)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
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
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| format!("cannot build the secret masker: {e}"))?;
        Ok(Masker {
            matcher: Some(matcher),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    pub fn mask<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = &self.matcher else {
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

    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
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
}
