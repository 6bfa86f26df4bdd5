//! The agent as PID 1 of a new PID namespace, as it runs in a pod: exit codes, orphan
//! reaping, leftover clean-up and signals sent from outside the namespace.
//!
//! Each test starts `unshare --pid --fork --mount-proc --kill-child task-agent run …`, so the
//! agent is PID 1 of a fresh namespace with its own /proc. Its pid in the test's namespace
//! is that of the `unshare` process's only child. Needs root; without it every test prints
//! a "skipped" line and passes. As root, an `unshare` that fails fails the test.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::Task;
use common::agent::{Agent, IGNORES_SIGTERM};
use common::assertions::{
    assert_error_kind, assert_failed_with_exit_code, assert_terminated_after_the_grace,
    assert_terminated_by_forwarded_sigterm,
};
use common::procs::{Proc, SOON, all_pids, children_of, poll, read_pids, stat};

// ---------------------------------------------------------------------------------------
// Helpers

/// Whether the test cannot run here; says so on stdout.
fn skipped(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("{test}: skipped: needs root for unshare --pid");
    }
    !root
}

/// The pids of `pid` in each namespace it belongs to, outermost first (the `NSpid` line).
fn ns_pids(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("NSpid:"))
                .map(|pids| {
                    pids.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
        })
        .unwrap_or_default()
}

/// A process of the agent's namespace: `inner` is its pid there, the rest as the test sees it.
#[derive(Debug, Clone)]
struct NsProc {
    inner: i32,
    host: Proc,
}

/// Every process in the PID namespace of which `agent` (a pid in the test's namespace) is
/// PID 1.
fn namespace_processes(agent: i32) -> Vec<NsProc> {
    let Ok(namespace) = fs::read_link(format!("/proc/{agent}/ns/pid")) else {
        return Vec::new();
    };
    all_pids()
        .into_iter()
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns == namespace))
        .filter_map(|pid| {
            Some(NsProc {
                inner: *ns_pids(pid).last()?,
                host: stat(pid)?,
            })
        })
        .collect()
}

/// `task-agent run … -- sh -c SCRIPT` as PID 1 of a new PID namespace, in the background:
/// an `Agent` whose process is `unshare`, which exits as the agent does. If the test ends
/// before the agent does, the agent is SIGKILLed, which takes the whole namespace with it,
/// and so is `unshare`.
struct Pid1Agent {
    unshare: Agent,
    host_pid: Option<i32>,
}

impl Pid1Agent {
    fn spawn_sh(task: &Task, options: &[&str], script: &str) -> Pid1Agent {
        let mut agent = task.command();
        agent.args(options).args(["--", "sh", "-c", script]);
        let mut unshare = Command::new("unshare");
        unshare.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
        Pid1Agent {
            unshare: Agent::spawn(task, common::command_under(unshare, &agent)),
            host_pid: None,
        }
    }

    /// The agent's pid in the test's namespace, once it has exec'd; checks that it is PID 1
    /// of its own namespace.
    fn host_pid(&mut self) -> i32 {
        if let Some(pid) = self.host_pid {
            return pid;
        }
        let unshare = self.unshare.pid();
        let deadline = Instant::now() + SOON;
        let pid = loop {
            self.unshare.check_running("the agent started");
            // While `unshare` is not reaped, only its own child can have it as parent.
            if let Some(agent) = children_of(unshare)
                .into_iter()
                .find(|p| p.comm == "task-agent")
            {
                break agent.pid;
            }
            assert!(
                Instant::now() < deadline,
                "no task-agent under unshare (pid {unshare}) within {SOON:?}; the log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        };
        let pids = ns_pids(pid);
        assert!(
            pids.len() >= 2 && pids.last() == Some(&1),
            "the agent (pid {pid}) is not PID 1 of a namespace of its own: NSpid {pids:?}"
        );
        self.host_pid = Some(pid);
        pid
    }

    fn signal(&mut self, signal: Signal) {
        let pid = self.host_pid();
        kill(Pid::from_raw(pid), signal).expect("signal the agent");
    }

    /// What the agent and `unshare` wrote to stderr so far.
    fn log(&self) -> String {
        self.unshare.log()
    }

    fn read_child_file(&self, path: &Path, what: &str) -> String {
        self.unshare.read_child_file(path, what)
    }

    fn assert_caught(&self, task: &Task, signal: Signal, expected: &str) {
        self.unshare.assert_caught(task, signal, expected);
    }

    fn wait_for(&mut self, path: &Path) {
        self.unshare.wait_for(path);
    }

    fn wait(&mut self) -> (ExitStatus, Instant) {
        self.unshare.wait()
    }
}

impl Drop for Pid1Agent {
    fn drop(&mut self) {
        if self.unshare.waited() {
            return;
        }
        // SIGKILL to a namespace's PID 1 from outside ends every process in it; `unshare`
        // itself is killed when its `Agent` is dropped.
        for agent in children_of(self.unshare.pid()) {
            let _ = kill(Pid::from_raw(agent.pid), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Exit codes and the record

#[test]
fn as_pid_1_exit_codes_pass_through_and_the_record_is_written() {
    if skipped("as_pid_1_exit_codes_pass_through_and_the_record_is_written") {
        return;
    }
    for code in [0, 7] {
        let task = Task::new();
        let script = format!("echo $PPID > ppid; cat /proc/1/comm > init; exit {code}");
        let mut agent = Pid1Agent::spawn_sh(&task, &[], &script);
        let (status, _) = agent.wait();
        assert_eq!(status.code(), Some(code), "{}", agent.log());
        let read = |name: &str| agent.read_child_file(&task.workdir().join(name), name);
        assert_eq!(read("ppid"), "1\n", "the command's parent is not PID 1");
        assert_eq!(read("init"), "task-agent\n", "PID 1 is not the agent");

        let record = task.record();
        assert_eq!(record["phase"], "finished", "{record:#}");
        assert_eq!(record["exit_code"], code, "{record:#}");
        assert_eq!(record["child_exit_code"], code, "{record:#}");
        assert_eq!(record["signal"], Value::Null, "{record:#}");
        if code == 0 {
            assert_eq!(record["status"], "succeeded", "{record:#}");
            assert_eq!(record["error"], Value::Null, "{record:#}");
        } else {
            assert_eq!(record["status"], "failed", "{record:#}");
            assert_error_kind(&record, "exit_code");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Orphans and leftovers

#[test]
fn as_pid_1_orphans_are_reaped_and_leftovers_are_stopped_by_the_agent() {
    if skipped("as_pid_1_orphans_are_reaped_and_leftovers_are_stopped_by_the_agent") {
        return;
    }
    let task = Task::new();
    // Five orphans by double fork, each living until `release` appears (bounded, in case
    // the test dies). Then three processes to outlive the command: one that reports SIGTERM,
    // one in a session of its own that reports SIGTERM (only the agent's scan of its
    // descendants finds it), and one that ignores SIGTERM. When a namespace's PID 1 exits
    // the kernel SIGKILLs what is left, so a `.term` file proves the agent stopped them.
    let script = r#"
        for i in 1 2 3 4 5; do
            ( sh -c 'n=0; while [ ! -e release ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done' &
              echo $! >> orphans )
        done
        sh -c 'trap "echo TERM > leftover.term; exit 0" TERM; touch leftover.ready
               while :; do sleep 0.05; done' &
        setsid sh -c 'trap "echo TERM > detached.term; exit 0" TERM; touch detached.ready
                      while :; do sleep 0.05; done' &
        (trap '' TERM; exec sleep 1000) &
        while [ ! -e leftover.ready ] || [ ! -e detached.ready ]; do sleep 0.01; done
        touch ready
        n=0; while [ ! -e stop ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
        exit 0"#;
    let mut agent = Pid1Agent::spawn_sh(&task, &[], script);
    let workdir = task.workdir();
    agent.wait_for(&workdir.join("ready"));
    let agent_pid = agent.host_pid();

    // The orphans (pids inside the namespace) run, adopted by the agent.
    let orphans = read_pids(&workdir.join("orphans"));
    assert_eq!(orphans.len(), 5);
    let processes = namespace_processes(agent_pid);
    let found: Vec<&NsProc> = processes
        .iter()
        .filter(|p| orphans.contains(&p.inner))
        .collect();
    assert_eq!(
        found.len(),
        orphans.len(),
        "not every orphan {orphans:?} runs in the namespace: {processes:#?}"
    );
    assert!(
        found.iter().all(|p| p.host.ppid == agent_pid),
        "orphans were not adopted by the agent (pid {agent_pid} here, 1 inside): {found:#?}"
    );

    // Once they exit, the agent reaps them: none stays, and no zombie waits on the agent.
    fs::write(workdir.join("release"), "").unwrap();
    let zombies = || {
        namespace_processes(agent_pid)
            .into_iter()
            .filter(|p| p.host.state == 'Z' || orphans.contains(&p.inner))
            .collect::<Vec<_>>()
    };
    let settled = poll(SOON, || zombies().is_empty().then_some(()));
    assert!(
        settled.is_some(),
        "orphans or zombies remain in the namespace {SOON:?} after the orphans were told to \
         exit: {:#?}\nthe log:\n{}",
        zombies(),
        agent.log()
    );

    // The command exits 0; the agent stops what it left behind and exits promptly.
    fs::write(workdir.join("stop"), "").unwrap();
    let stopped = Instant::now();
    let (status, exited) = agent.wait();
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let took = exited - stopped;
    assert!(
        took < Duration::from_secs(6),
        "the agent took {took:?} to exit after the command was told to; the log:\n{log}"
    );
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["child_exit_code"], 0, "{record:#}");
    assert!(
        log.contains("the command left processes behind; stopping them"),
        "the agent did not notice the leftovers; the log:\n{log}"
    );
    assert!(
        !log.contains("survived SIGKILL"),
        "the agent gave up on its leftovers; the log:\n{log}"
    );
    for name in ["leftover.term", "detached.term"] {
        let caught = fs::read_to_string(workdir.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}: a leftover got no SIGTERM from the agent; the log:\n{log}")
        });
        assert_eq!(caught, "TERM\n", "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. SIGTERM from outside the namespace

/// Starts a child that traps `trap_name` (writing it to `caught`, then exiting with
/// `trap_exit`), sends `signal` to the agent from outside the namespace once the child is
/// ready, and checks that the child caught it; returns how the agent exited and its log.
fn forward_from_outside(
    task: &Task,
    signal: Signal,
    trap_name: &str,
    trap_exit: i32,
) -> (ExitStatus, String) {
    let script = format!(
        "trap 'echo {trap_name} > caught; exit {trap_exit}' {trap_name}; touch ready; \
         while :; do sleep 0.1; done"
    );
    let mut agent = Pid1Agent::spawn_sh(task, &[], &script);
    agent.wait_for(&task.workdir().join("ready"));
    agent.signal(signal);
    let (status, _) = agent.wait();
    agent.assert_caught(task, signal, &format!("{trap_name}\n"));
    (status, agent.log())
}

#[test]
fn as_pid_1_sigterm_from_outside_reaches_the_child_and_the_task_is_terminated() {
    if skipped("as_pid_1_sigterm_from_outside_reaches_the_child_and_the_task_is_terminated") {
        return;
    }
    let task = Task::new();
    let (status, log) = forward_from_outside(&task, Signal::SIGTERM, "TERM", 0);
    assert_eq!(status.code(), Some(143), "{log}");
    assert_terminated_by_forwarded_sigterm(&task.record());
}

#[test]
fn as_pid_1_sigterm_from_outside_kills_a_stubborn_child_after_the_grace() {
    if skipped("as_pid_1_sigterm_from_outside_kills_a_stubborn_child_after_the_grace") {
        return;
    }
    let task = Task::new();
    let mut agent = Pid1Agent::spawn_sh(&task, &["--grace", "1s"], IGNORES_SIGTERM);
    agent.wait_for(&task.workdir().join("ready"));
    agent.host_pid();
    let sent = Instant::now();
    agent.signal(Signal::SIGTERM);
    let (status, exited) = agent.wait();
    let after = exited - sent;
    assert_terminated_after_the_grace(&task, &agent.unshare, status, after, Duration::from_secs(6));
}

// ---------------------------------------------------------------------------------------
// 4. SIGINT from outside the namespace

#[test]
fn as_pid_1_sigint_from_outside_is_forwarded_to_the_child() {
    if skipped("as_pid_1_sigint_from_outside_is_forwarded_to_the_child") {
        return;
    }
    let task = Task::new();
    let (status, log) = forward_from_outside(&task, Signal::SIGINT, "INT", 42);
    assert_eq!(status.code(), Some(42), "{log}");
    assert_failed_with_exit_code(&task.record(), 42);
}
