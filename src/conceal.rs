//! Keeps the credentials meant for the agent alone out of the task's reach.
//!
//! The task runs as the agent's user, and `/proc/<agent>/cmdline` is readable by anyone, as
//! is `/proc/<agent>/environ` to the same user. A SAS given in `--snapshot` (scoped to a
//! whole container, other pipelines' snapshots included) must not be read there. So, once
//! the arguments and environment are parsed, the agent:
//! - overwrites each such credential with `*` where the kernel shows the command line and
//!   the environment from (the original argument and environment strings, located by
//!   `/proc/self/stat`), as daemons rewrite their process title;
//! - marks itself non-dumpable, so a task without `CAP_SYS_PTRACE` can neither open its
//!   `environ` or `mem` nor attach to it.
//!
//! Values the task is meant to have (its workload identity, `OTEL_*`) are not touched.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;

/// A credential shorter than this is not hidden: overwriting every occurrence of a short
/// string would damage unrelated arguments, and it would not be secret anyway.
const MIN_LEN: usize = 8;

/// Hides `credentials` in the agent's `/proc` entries; returns how many occurrences were
/// overwritten. Call it before any thread exists: the environment is rewritten in place.
pub fn conceal(credentials: &[String]) -> io::Result<usize> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)?;
    let hidden: Vec<&[u8]> = credentials
        .iter()
        .map(String::as_bytes)
        .filter(|c| c.len() >= MIN_LEN)
        .collect();
    if hidden.is_empty() {
        return Ok(0);
    }
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let regions = regions(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/self/stat has no argument and environment addresses",
        )
    })?;
    // Our own memory, written through the kernel's view of it: no pointer into the
    // process's start-up strings is needed, and Rust holds no reference to them.
    let memory = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut overwritten = 0;
    for (start, end) in regions {
        let Some(len) = end.checked_sub(start).and_then(|n| usize::try_from(n).ok()) else {
            continue;
        };
        let mut bytes = vec![0u8; len];
        memory.read_exact_at(&mut bytes, start)?;
        let found = redact(&mut bytes, &hidden);
        if found > 0 {
            memory.write_all_at(&bytes, start)?;
            overwritten += found;
        }
    }
    Ok(overwritten)
}

/// The `[start, end)` addresses of the argument and environment strings: fields 48 to 51
/// of `/proc/PID/stat` (counted after the command name, which may hold spaces and `)`).
fn regions(stat: &str) -> Option<[(u64, u64); 2]> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // The first field after the name is field 3.
    let fields: Vec<u64> = after_name
        .split_ascii_whitespace()
        .skip(48 - 3)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [arg_start, arg_end, env_start, env_end] if arg_start > 0 && env_start > 0 => {
            Some([(arg_start, arg_end), (env_start, env_end)])
        }
        _ => None,
    }
}

/// Overwrites every occurrence of every credential in `bytes` with `*`; returns how many.
fn redact(bytes: &mut [u8], credentials: &[&[u8]]) -> usize {
    let mut found = 0;
    for credential in credentials {
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&bytes[from..], credential) {
            let start = from + at;
            bytes[start..start + credential.len()].fill(b'*');
            from = start + credential.len();
            found += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regions_are_fields_48_to_51_whatever_the_name_holds() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1100".into();
        fields[50 - 3] = "1100".into();
        fields[51 - 3] = "1300".into();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(regions(&stat), Some([(1000, 1100), (1100, 1300)]));
        assert_eq!(regions("42 (short) R 1 2 3"), None);
    }

    #[test]
    fn every_occurrence_is_overwritten_and_nothing_else() {
        let mut bytes = b"run\0--snapshot\0https://a/b?sig=SECRETSIG&x\0TASK=SECRETSIG\0".to_vec();
        assert_eq!(redact(&mut bytes, &[b"SECRETSIG"]), 2);
        assert_eq!(
            bytes,
            b"run\0--snapshot\0https://a/b?sig=*********&x\0TASK=*********\0"
        );
    }

    #[test]
    fn in_this_process_the_command_line_is_rewritten() {
        // The test binary's own first argument (its path) stands in for a credential.
        let path = std::env::args().next().unwrap();
        let name = path.rsplit('/').next().unwrap().to_string();
        assert!(name.len() >= MIN_LEN, "{name}");
        let before = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(memchr::memmem::find(&before, name.as_bytes()).is_some());
        let overwritten = conceal(std::slice::from_ref(&name)).unwrap();
        assert!(overwritten >= 1);
        let after = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(memchr::memmem::find(&after, name.as_bytes()).is_none());
        assert_eq!(after.len(), before.len(), "only bytes are replaced");
    }
}
