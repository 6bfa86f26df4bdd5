//! The agent inside a real memory-limited cgroup, as in a pod: the default soft limit, the
//! working-set measure (which sees tmpfs files that no process's RSS shows), and a kernel
//! OOM kill reported as such. Each test makes a scratch cgroup below the test's own, which
//! needs root; elsewhere the tests say they were skipped.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Task;
use common::assertions::assert_exit_code;
use task_agent::supervise::cgroup::{MemoryCgroup, Version};

const MI: u64 = 1 << 20;

/// A memory cgroup with a hard limit, removed again on drop.
struct ScratchCgroup {
    dir: PathBuf,
}

impl ScratchCgroup {
    /// `None` (and a note on stderr) where cgroups cannot be made: not root, or no memory
    /// cgroup mounted. Anywhere else a failure to make one fails the test.
    fn create(limit: u64) -> Option<ScratchCgroup> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: making a memory cgroup needs root");
            return None;
        }
        let Some(parent) = MemoryCgroup::detect() else {
            eprintln!("skipped: no memory cgroup is mounted");
            return None;
        };
        let name = format!(
            "task-agent-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = parent.dir.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let limit_file = match parent.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        let cgroup = ScratchCgroup { dir };
        fs::write(cgroup.dir.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("cannot set {limit_file}: {e}"));
        Some(cgroup)
    }

    /// Runs `task-agent run OPTIONS -- COMMAND` as a member of this cgroup.
    fn run_agent(&self, task: &Task, options: &[&str], command: &[&str]) -> Output {
        let mut agent = task.command();
        agent.args(options).arg("--").args(command);
        // The agent must be in the cgroup from its first instruction, as in a container:
        // a shell joins it and then execs the agent.
        let mut join = Command::new("sh");
        join.arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
            .arg("sh")
            .arg(&self.dir);
        common::command_under(join, &agent)
            .output()
            .expect("task-agent runs")
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // The task's processes are gone by now; a last zombie may take a moment.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove the scratch cgroup {}", self.dir.display());
    }
}

/// A file in /dev/shm (tmpfs: charged to the writer's cgroup) removed on drop.
struct ShmFile(PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn the_default_soft_limit_is_the_container_limit_less_headroom() {
    let Some(cgroup) = ScratchCgroup::create(256 * MI) else {
        return;
    };
    let task = Task::new();
    let output = cgroup.run_agent(&task, &[], &["true"]);
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded");
    // 5 % of 256 MiB is below the 32 MiB minimum headroom.
    assert_eq!(record["resources"]["memory_limit_bytes"], (256 - 32) * MI);
}

#[test]
fn tmpfs_files_the_task_writes_count_against_the_container() {
    let Some(cgroup) = ScratchCgroup::create(256 * MI) else {
        return;
    };
    let task = Task::new();
    let shm = ShmFile(Path::new("/dev/shm").join(format!(
        "task-agent-test-{}-{}",
        std::process::id(),
        task.dir.path().file_name().unwrap().to_string_lossy()
    )));
    // 8 MiB every 50 ms up to 320 MiB: no process holds more than a few MiB, but the
    // container's working set passes its 224 MiB threshold on the way.
    let script = format!(
        r#"for i in $(seq 1 40); do
             dd if=/dev/zero of="{file}" bs=1M count=8 oflag=append conv=notrunc status=none || exit 9
             sleep 0.05
           done
           echo wrote everything"#,
        file = shm.0.display()
    );
    let output = cgroup.run_agent(
        &task,
        &["--memory-poll-interval", "20ms"],
        &["sh", "-c", &script],
    );
    let record = task.record();
    assert_exit_code(&output, 137);
    assert_eq!(record["status"], "oom_killed");
    assert_eq!(record["error"]["kind"], "memory_limit");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("working set"), "{message}");
    assert!(!common::stdout(&output).contains("wrote everything"));
    assert!(
        record["resources"]["peak_memory_bytes"].as_u64().unwrap() < 64 * MI,
        "the processes themselves stayed small: {record}"
    );
}

#[test]
fn a_kernel_oom_kill_is_reported_as_oom_killed() {
    let Some(cgroup) = ScratchCgroup::create(128 * MI) else {
        return;
    };
    let task = Task::new();
    // The agent samples only once an hour here, so the kernel gets there first; the
    // child's raised oom_score_adj makes it the kernel's choice, not the agent.
    let output = cgroup.run_agent(
        &task,
        &["--memory-poll-interval", "1h"],
        &[
            "python3",
            "-c",
            "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(16 << 20))\nprint('survived')",
        ],
    );
    let record = task.record();
    assert_exit_code(&output, 137);
    assert_eq!(record["status"], "oom_killed");
    assert_eq!(record["signal"], "SIGKILL");
    assert_eq!(record["error"]["kind"], "oom_kill");
    assert!(!common::stdout(&output).contains("survived"));
}
