//! Waiting for processes and looking at them through /proc, as the test's own PID namespace
//! sees them.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen almost at once.
pub const SOON: Duration = Duration::from_secs(5);

/// Polls `check` every 20 ms until it yields something or `limit` has passed.
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What the tests need of a process's `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses the text of a `/proc/PID/stat`. The command name is found between the first `(`
/// and the last `)`, as it may hold either.
pub fn parse_stat(text: &str) -> Option<Proc> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut fields = text[close + 1..].split_whitespace();
    Some(Proc {
        pid,
        comm: text[open + 1..close].to_string(),
        state: fields.next()?.chars().next()?,
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
    })
}

/// `pid` as /proc shows it now; `None` once it is gone.
pub fn stat(pid: i32) -> Option<Proc> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` no longer runs: gone from /proc, or a zombie (dead, waiting to be reaped
/// by whoever its parent is now).
pub fn is_dead(pid: i32) -> bool {
    stat(pid).is_none_or(|s| matches!(s.state, 'Z' | 'X'))
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Every process whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<Proc> {
    all_pids()
        .into_iter()
        .filter_map(stat)
        .filter(|s| s.ppid == parent)
        .collect()
}

pub fn zombie_children_of(parent: i32) -> Vec<Proc> {
    children_of(parent)
        .into_iter()
        .filter(|s| s.state == 'Z')
        .collect()
}

/// Reads a file holding one pid per line.
pub fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| {
            line.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a pid in {}: {line:?}", path.display()))
        })
        .collect()
}
