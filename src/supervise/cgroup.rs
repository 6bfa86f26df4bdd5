//! The container's memory cgroup: its limit, working set and kernel OOM-kill count.
//! cgroup v2 (`memory.max`) first, v1 (`memory.limit_in_bytes`) as the fallback; parsing
//! is kept in pure functions over file contents.

use std::fs;
use std::path::{Path, PathBuf};

/// Values at or above this mean "no limit" (v1 reports unlimited as a page-rounded i64::MAX).
const UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    pub version: Version,
    pub dir: PathBuf,
}

/// A cgroup controller, as both hierarchies name it: the v1 controller and the control file
/// that shows the controller is there in each version.
#[derive(Debug, Clone, Copy)]
pub struct Controller {
    pub v1_name: &'static str,
    pub v1_control: &'static str,
    pub v2_control: &'static str,
}

pub const MEMORY: Controller = Controller {
    v1_name: "memory",
    v1_control: "memory.limit_in_bytes",
    v2_control: "memory.max",
};

pub const CPU: Controller = Controller {
    v1_name: "cpuacct",
    v1_control: "cpuacct.usage",
    v2_control: "cpu.stat",
};

/// This process's cgroup for `controller`: its hierarchy's version and directory, if the
/// machine has one mounted.
pub fn detect(controller: Controller) -> Option<(Version, PathBuf)> {
    let membership = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    locate_controller(controller, &membership, &mountinfo, |dir, file| {
        dir.join(file).exists()
    })
}

impl MemoryCgroup {
    /// Finds the memory cgroup of this process, if the machine has one mounted.
    pub fn detect() -> Option<MemoryCgroup> {
        detect(MEMORY).map(|(version, dir)| MemoryCgroup { version, dir })
    }

    pub fn limit(&self) -> Option<u64> {
        let (file, _) = self.files();
        parse_limit(&fs::read_to_string(self.dir.join(file)).ok()?)
    }

    /// Usage less inactive file cache: what the kernel will not give back under pressure,
    /// tmpfs files included. This is the number the OOM killer and kubelet act on.
    pub fn working_set(&self) -> Option<u64> {
        let (usage_file, stat_key) = match self.version {
            Version::V2 => ("memory.current", "inactive_file"),
            Version::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
        };
        let usage: u64 = fs::read_to_string(self.dir.join(usage_file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        let inactive = stat_value(&stat, stat_key).unwrap_or(0);
        Some(usage.saturating_sub(inactive))
    }

    /// How many processes the kernel OOM killer has killed in this cgroup so far.
    pub fn oom_kills(&self) -> Option<u64> {
        let (_, events_file) = self.files();
        stat_value(
            &fs::read_to_string(self.dir.join(events_file)).ok()?,
            "oom_kill",
        )
    }

    fn files(&self) -> (&'static str, &'static str) {
        match self.version {
            Version::V2 => ("memory.max", "memory.events"),
            Version::V1 => ("memory.limit_in_bytes", "memory.oom_control"),
        }
    }
}

/// Resolves the memory cgroup directory from `/proc/self/cgroup` and `/proc/self/mountinfo`.
/// `has_file(dir, name)` tells whether a control file exists (injected for tests).
pub fn locate(
    membership: &str,
    mountinfo: &str,
    has_file: impl Fn(&Path, &str) -> bool,
) -> Option<MemoryCgroup> {
    locate_controller(MEMORY, membership, mountinfo, has_file)
        .map(|(version, dir)| MemoryCgroup { version, dir })
}

/// `locate` for any controller: the version and directory.
pub fn locate_controller(
    controller: Controller,
    membership: &str,
    mountinfo: &str,
    has_file: impl Fn(&Path, &str) -> bool,
) -> Option<(Version, PathBuf)> {
    let mut v2_path = None;
    let mut v1_path = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        } else if controllers.split(',').any(|c| c == controller.v1_name) {
            v1_path = Some(path);
        }
    }
    let mut v2_mount = None;
    let mut v1_mount = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let (root, mount_point) = (unescape(left[3]), unescape(left[4]));
        match right[0] {
            "cgroup2" => v2_mount = Some((root, mount_point)),
            "cgroup" if right[2].split(',').any(|o| o == controller.v1_name) => {
                v1_mount = Some((root, mount_point))
            }
            _ => {}
        }
    }
    let candidates = [
        (Version::V2, v2_path, v2_mount, controller.v2_control),
        (Version::V1, v1_path, v1_mount, controller.v1_control),
    ];
    for (version, path, mount, control) in candidates {
        let (Some(path), Some((root, mount_point))) = (path, mount) else {
            continue;
        };
        let dir = cgroup_dir(&root, &mount_point, path);
        if has_file(&dir, control) {
            return Some((version, dir));
        }
        // In a cgroup namespace the membership path may not be visible: the mount itself is
        // then this container's cgroup.
        let mount_dir = PathBuf::from(&mount_point);
        if has_file(&mount_dir, control) {
            return Some((version, mount_dir));
        }
    }
    None
}

fn cgroup_dir(mount_root: &str, mount_point: &str, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(mount_root)
        .unwrap_or(path)
        .trim_start_matches('/');
    Path::new(mount_point).join(relative)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// `memory.max` / `memory.limit_in_bytes` content: a byte count, `max`, or a huge number.
pub fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < UNLIMITED).then_some(value)
}

/// The value of `key` in a `key value` per line file (memory.stat, memory.events).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// Memory kept back from a container limit for the agent itself and for the growth between
/// two samples: 5 % of the limit, at least 32 MiB and at most 256 MiB.
pub fn headroom(container_limit: u64) -> u64 {
    (container_limit / 20).clamp(32 << 20, 256 << 20)
}

/// The default soft limit: the container limit less [`headroom`], or half the limit for a
/// container too small to spare the headroom.
pub fn default_soft_limit(container_limit: u64) -> u64 {
    let room = headroom(container_limit);
    if container_limit > room * 2 {
        container_limit - room
    } else {
        container_limit / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const V2_MOUNTINFO: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";

    #[test]
    fn a_v2_container_uses_its_own_cgroup() {
        let found = locate("0::/\n", V2_MOUNTINFO, |dir, file| {
            dir == Path::new("/sys/fs/cgroup") && file == "memory.max"
        })
        .unwrap();
        assert_eq!(found.version, Version::V2);
        assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn a_v2_host_path_is_joined_under_the_mount() {
        let found = locate("0::/kubepods/pod1/ctr\n", V2_MOUNTINFO, |dir, _| {
            dir == Path::new("/sys/fs/cgroup/kubepods/pod1/ctr")
        })
        .unwrap();
        assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup/kubepods/pod1/ctr"));
    }

    #[test]
    fn hybrid_hosts_fall_back_to_v1_when_v2_has_no_memory_controller() {
        let membership = "4:memory:/process_api/abc\n0::/\n";
        let found = locate(membership, HYBRID_MOUNTINFO, |dir, file| {
            dir == Path::new("/sys/fs/cgroup/memory/process_api/abc")
                && file == "memory.limit_in_bytes"
        })
        .unwrap();
        assert_eq!(found.version, Version::V1);
    }

    #[test]
    fn the_cpu_controller_is_found_in_either_hierarchy() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let membership = "3:cpu,cpuacct:/job/7\n0::/\n";
        let v1 = locate_controller(CPU, membership, mountinfo, |_, file| {
            file == "cpuacct.usage"
        });
        assert_eq!(
            v1,
            Some((
                Version::V1,
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/job/7")
            ))
        );
        let v2 = locate_controller(CPU, "0::/pod/ctr\n", V2_MOUNTINFO, |_, file| {
            file == "cpu.stat"
        });
        assert_eq!(
            v2,
            Some((Version::V2, PathBuf::from("/sys/fs/cgroup/pod/ctr")))
        );
    }

    #[test]
    fn no_cgroup_mounted_means_none() {
        assert_eq!(locate("0::/\n", "", |_, _| true), None);
    }

    #[test]
    fn limits_unlimited_and_set() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
    }

    #[test]
    fn stat_values_by_exact_key() {
        let stat = "inactive_file 100\ntotal_inactive_file 300\noom_kill 2\n";
        assert_eq!(stat_value(stat, "inactive_file"), Some(100));
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(300));
        assert_eq!(stat_value(stat, "oom_kill"), Some(2));
        assert_eq!(stat_value(stat, "missing"), None);
    }

    #[test]
    fn soft_limit_leaves_headroom() {
        assert_eq!(default_soft_limit(512 << 20), (512 - 32) << 20);
        assert_eq!(
            default_soft_limit(4 << 30),
            (4u64 << 30) - (4u64 << 30) / 20
        );
        assert_eq!(default_soft_limit(64 << 30), (64u64 << 30) - (256 << 20));
        assert_eq!(default_soft_limit(48 << 20), 24 << 20);
    }
}
