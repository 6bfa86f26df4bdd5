//! Progress of a long fetch: a log line every few seconds (bytes, share, rate), and on a
//! terminal a bar that redraws in place.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use crate::units::format_bytes;

const LOG_EVERY: Duration = Duration::from_secs(5);
const DRAW_EVERY: Duration = Duration::from_millis(200);

pub struct Progress<R> {
    inner: R,
    /// What moves: `snapshot`, `input PATH`, `output PATH`.
    what: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_log: Instant,
    last_draw: Instant,
    bar: bool,
}

impl<R: Read> Progress<R> {
    pub fn new(inner: R, total: Option<u64>) -> Self {
        Progress::of("snapshot", inner, total)
    }

    /// Progress of `what` (an input or output, named as declared).
    pub fn of(what: impl Into<String>, inner: R, total: Option<u64>) -> Self {
        let now = Instant::now();
        Progress {
            inner,
            what: what.into(),
            total,
            done: 0,
            started: now,
            last_log: now,
            last_draw: now,
            bar: io::stderr().is_terminal(),
        }
    }

    fn tick(&mut self, finished: bool) {
        let now = Instant::now();
        if self.bar && (finished || now.duration_since(self.last_draw) >= DRAW_EVERY) {
            self.last_draw = now;
            let line = bar(self.done, self.total, now.duration_since(self.started), 30);
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r{line}{}", if finished { "\n" } else { "" });
            let _ = err.flush();
        } else if !self.bar && now.duration_since(self.last_log) >= LOG_EVERY {
            self.last_log = now;
            let elapsed = now.duration_since(self.started);
            tracing::info!(
                what = %self.what,
                moved = %format_bytes(self.done),
                total = %self.total.map(format_bytes).unwrap_or_else(|| "unknown".into()),
                rate = %format!("{}/s", format_bytes(rate(self.done, elapsed))),
                "transfer progress"
            );
        }
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.tick(n == 0 && self.done > 0);
        Ok(n)
    }
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0
    } else {
        (bytes as f64 / seconds) as u64
    }
}

/// `[#########.........]  45%  12.0MiB/26.7MiB  8.1MiB/s`
pub fn bar(done: u64, total: Option<u64>, elapsed: Duration, width: usize) -> String {
    let speed = format!("{}/s", format_bytes(rate(done, elapsed)));
    match total.filter(|t| *t > 0) {
        Some(total) => {
            let share = (done.min(total) as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (share * width as f64).round() as usize;
            format!(
                "[{}{}] {:>3}%  {}/{}  {speed}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                (share * 100.0).floor() as u32,
                format_bytes(done),
                format_bytes(total)
            )
        }
        None => format!("{}  {speed}", format_bytes(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_share_size_and_rate() {
        let line = bar(5 << 20, Some(10 << 20), Duration::from_secs(1), 10);
        assert!(line.starts_with("[#####.....]  50%"), "{line}");
        assert!(line.contains("/s"), "{line}");
        assert!(
            bar(1, None, Duration::ZERO, 10).ends_with("0 B/s"),
            "{}",
            bar(1, None, Duration::ZERO, 10)
        );
        assert!(bar(20, Some(10), Duration::from_secs(1), 4).starts_with("[####] 100%"));
    }
}
