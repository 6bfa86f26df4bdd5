//! The record's `usage`, measured against work whose cost is known: CPU burned by busy
//! loops (one in a grandchild), memory held for a known time, and a SIGKILLed agent whose
//! provisional record still says what was used. CPU is checked from both sources: process
//! times (a shared cgroup, as here) and a cgroup of the agent's own (as in a pod; needs root).

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Task;
use common::agent::Agent;
use common::assertions::assert_exit_code;
use serde_json::Value;
use task_agent::supervise::cgroup::{self, Version};

/// Burns `sys.argv[1]` seconds of its own CPU.
const BUSY: &str =
    "import sys, time\nlimit = float(sys.argv[1])\nwhile time.process_time() < limit:\n    pass\n";

/// Runs two busy loops of 1.5 s, one as its child and one as a grandchild (through `sh`),
/// waits for both, then prints the CPU the whole tree used (its own and its reaped
/// descendants', as the kernel counted them): the truth to compare with.
const TREE: &str = "import resource, subprocess, sys\nbusy = sys.argv[1]\nprocs = [subprocess.Popen([sys.executable, busy, '1.5']), subprocess.Popen(['sh', '-c', f'{sys.executable} {busy} 1.5'])]\nfor p in procs:\n    p.wait()\nused = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]\nprint(sum(u.ru_utime + u.ru_stime for u in used))\n";

/// What the command printed last: the truth it measured.
fn truth(output: &Output) -> f64 {
    common::stdout(output)
        .lines()
        .filter_map(|line| line.trim().parse::<f64>().ok())
        .next_back()
        .expect("the command printed its measurement")
}

fn assert_within(measured: f64, truth: f64, share: f64, what: &str) {
    assert!(
        (measured - truth).abs() <= truth * share,
        "{what}: measured {measured}, truth {truth}"
    );
}

/// The command line of the busy tree.
fn busy_tree(task: &Task) -> [String; 3] {
    let busy = task.path("busy.py");
    fs::write(&busy, BUSY).unwrap();
    let tree = task.path("tree.py");
    fs::write(&tree, TREE).unwrap();
    [
        "python3".into(),
        tree.display().to_string(),
        busy.display().to_string(),
    ]
}

#[test]
fn cpu_of_the_whole_task_tree_is_counted_from_process_times() {
    let task = Task::new();
    let output = task
        .command()
        .arg("--")
        .args(busy_tree(&task))
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let usage = task.record()["usage"].clone();
    assert_eq!(usage["cpu_source"], "processes", "{usage:#}");
    // The agent's own CPU (a few milliseconds a second of sampling) comes on top.
    assert_within(
        usage["cpu_seconds"].as_f64().unwrap(),
        truth(&output),
        0.10,
        "cpu",
    );
    assert!(usage["wall_seconds"].as_f64().unwrap() >= 1.5);
}

#[test]
fn memory_held_for_a_known_time_is_its_gib_seconds() {
    let task = Task::new();
    // Fills 256 MiB (a ramp), holds it for 3 s, frees it, and prints the GiB-seconds that
    // makes: the held part plus half the ramp. Start-up and exit at a few MiB add ~1 %.
    let hold = "import time\nt0 = time.monotonic()\nb = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nt1 = time.monotonic()\nrss = int(open('/proc/self/statm').read().split()[1]) * 4096\ntime.sleep(3)\nt2 = time.monotonic()\ndel b\nprint(rss / 2**30 * ((t2 - t1) + (t1 - t0) / 2))\ntime.sleep(0.3)\n";
    let output = task
        .command()
        .args(["--", "python3", "-c", hold])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let usage = task.record()["usage"].clone();
    // Sampled every 100 ms.
    assert_within(
        usage["memory_gib_seconds"].as_f64().unwrap(),
        truth(&output),
        0.10,
        "memory",
    );
    assert!(usage["peak_memory_bytes"].as_u64().unwrap() >= 256 << 20);
}

#[test]
fn requests_and_limits_given_by_the_operator_are_in_the_record() {
    let task = Task::new();
    let output = task
        .command()
        .args([
            "--cpu-request",
            "250m",
            "--cpu-limit",
            "1.5",
            "--memory-request",
            "512Mi",
            "--pod-memory-limit",
            "1Gi",
            "--",
            "true",
        ])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let usage = task.record()["usage"].clone();
    assert_eq!(usage["requests"]["cpu_millicores"], 250, "{usage:#}");
    assert_eq!(usage["limits"]["cpu_millicores"], 1500);
    assert_eq!(usage["requests"]["memory_bytes"], 512u64 << 20);
    assert_eq!(usage["limits"]["memory_bytes"], 1u64 << 30);
    let bad = task
        .command()
        .args(["--cpu-request", "a lot", "--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&bad, 64);
    assert!(
        common::stderr(&bad).contains("250m"),
        "{}",
        common::stderr(&bad)
    );
}

#[test]
fn a_sigkilled_agents_provisional_record_says_what_was_used() {
    let task = Task::new();
    let script = task.path("busy.py");
    fs::write(&script, BUSY).unwrap();
    let mut command = task.command();
    command.args(["--", "python3"]).arg(&script).arg("30");
    let mut agent = Agent::spawn(&task, command);
    // Until the provisional record shows a second of CPU (refreshed about every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let provisional: Value =
            serde_json::from_slice(&fs::read(task.result_file()).unwrap_or_default())
                .unwrap_or_default();
        if provisional["usage"]["cpu_seconds"].as_f64().unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no usage in the provisional record: {provisional:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait();
    let record: Value = serde_json::from_slice(&fs::read(task.result_file()).unwrap()).unwrap();
    assert_eq!(record["status"], "running", "{record:#}");
    let cpu = record["usage"]["cpu_seconds"].as_f64().unwrap_or(0.0);
    assert!(
        cpu >= 1.0,
        "the provisional record should carry the CPU used so far: {record:#}"
    );
}

/// A cpu cgroup of the test's own (v2 `cpu.stat` or v1 `cpuacct.usage`), removed on drop.
struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    fn create() -> Option<CpuCgroup> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if !common::is_root() {
            eprintln!("skipped: making a cgroup needs root");
            return None;
        }
        let Some((version, parent)) = cgroup::detect(cgroup::CPU) else {
            eprintln!("skipped: no cpu cgroup is mounted");
            return None;
        };
        let dir = parent.join(format!(
            "task-agent-usage-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let control = match version {
            Version::V1 => "cpuacct.usage",
            Version::V2 => "cpu.stat",
        };
        assert!(
            dir.join(control).exists(),
            "{} has no {control}",
            dir.display()
        );
        Some(CpuCgroup { dir })
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn in_a_cgroup_of_its_own_the_agent_reads_the_cgroups_counter() {
    let Some(cgroup) = CpuCgroup::create() else {
        return;
    };
    let task = Task::new();
    let mut agent = task.command();
    agent.arg("--").args(busy_tree(&task));
    // As in a container: the agent is in the cgroup from its first instruction.
    let mut join = Command::new("sh");
    join.arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(&cgroup.dir);
    let output = common::command_under(join, &agent)
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let usage = task.record()["usage"].clone();
    assert_eq!(usage["cpu_source"], "cgroup", "{usage:#}");
    assert_within(
        usage["cpu_seconds"].as_f64().unwrap(),
        truth(&output),
        0.10,
        "cpu from the cgroup",
    );
}
