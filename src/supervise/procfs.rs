//! The agent's process tree, read from /proc: who descends from the agent and how much
//! resident memory they hold together.

use std::collections::HashMap;
use std::fs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    pub zombie: bool,
    /// Resident set size in pages.
    pub rss_pages: u64,
    /// CPU time in clock ticks: its own (user + system) and that of the children it has
    /// reaped.
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... rss(24), so index 0 is field 3.
    Some(ProcStat {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        zombie: *fields.first()? == "Z",
        rss_pages: fields.get(21)?.parse().ok()?,
        cpu_ticks: (11..=14)
            .map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum::<Option<u64>>()?,
    })
}

/// Every live process below `root` in `processes` (not `root` itself, not zombies).
pub fn descendants_of(root: i32, processes: &[ProcStat]) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for process in processes {
        children.entry(process.ppid).or_default().push(process);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if child.pid != root {
                queue.push(child.pid);
                if !child.zombie {
                    found.push(**child);
                }
            }
        }
    }
    found
}

/// All processes visible in /proc. Processes that vanish while being read are skipped.
pub fn snapshot() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .as_encoded_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        })
        .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// The live processes descending from this agent.
pub fn my_descendants() -> Vec<ProcStat> {
    descendants_of(std::process::id() as i32, &snapshot())
}

/// Clock ticks per second, the unit of `cpu_ticks`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let text = "4242 (evil) name) (x) S 17 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 \
                    12345 10000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.rss_pages, 2560);
        // utime 5 + stime 3 + cutime 0 + cstime 0.
        assert_eq!(stat.cpu_ticks, 8);
        assert!(!stat.zombie);
    }

    #[test]
    fn garbage_is_not_a_stat() {
        assert_eq!(parse_stat("not a stat line"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn descendants_are_found_at_every_depth_without_zombies_or_strangers() {
        let p = |pid, ppid, zombie| ProcStat {
            pid,
            ppid,
            pgrp: pid,
            zombie,
            rss_pages: 1,
            cpu_ticks: 0,
        };
        let processes = [
            p(1, 0, false),
            p(10, 1, false),
            p(11, 10, false),
            p(12, 11, false),
            p(13, 10, true),
            p(20, 1, false),
        ];
        let mut pids: Vec<i32> = descendants_of(10, &processes)
            .iter()
            .map(|s| s.pid)
            .collect();
        pids.sort();
        assert_eq!(pids, vec![11, 12]);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id() as i32;
        let stats = snapshot();
        let mine = stats.iter().find(|s| s.pid == me).expect("own stat");
        assert!(mine.rss_pages > 0);
    }
}
