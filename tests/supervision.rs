//! Supervision with real processes and real signals: exit codes, signal forwarding, zombie
//! reaping, leftover clean-up, the timeout and termination ladders, and how the child is
//! started.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpgrp};
use serde_json::Value;

use common::Task;
use common::agent::{Agent, IGNORES_SIGTERM};
use common::assertions::{
    assert_error_kind, assert_exit_code, assert_failed_with_exit_code,
    assert_terminated_after_the_grace, assert_terminated_by_forwarded_sigterm,
};
use common::procs::{SOON, is_dead, parse_stat, poll, read_pids, stat, zombie_children_of};

// ---------------------------------------------------------------------------------------
// Helpers

/// SIGKILLs test processes that may have outlived their agent (only the `sleep`s and `sh`s
/// the scripts started, checked by name so a recycled pid is never hit), so a failing test
/// leaks nothing.
struct KillOnDrop(Vec<PathBuf>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let Ok(text) = fs::read_to_string(path) else {
                continue;
            };
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let ours = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline.starts_with(b"sleep\0") || cmdline.starts_with(b"sh\0")
                });
                if ours {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Exit codes

#[test]
fn a_zero_exit_is_success() {
    let task = Task::new();
    let output = task.run_sh(&[], "exit 0");
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["phase"], "finished");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["child_exit_code"], 0);
    assert_eq!(record["signal"], Value::Null);
    assert_eq!(record["error"], Value::Null);
    assert_eq!(record["retryable"], false);
}

#[test]
fn nonzero_exit_codes_pass_through() {
    for code in [3, 255] {
        let task = Task::new();
        let output = task.run_sh(&[], &format!("echo failing >&2; exit {code}"));
        assert_exit_code(&output, code);
        let record = task.record();
        assert_eq!(record["status"], "failed", "{record:#}");
        assert_eq!(record["exit_code"], code);
        assert_eq!(record["child_exit_code"], code);
        assert_eq!(record["signal"], Value::Null);
        assert_eq!(record["retryable"], false);
        assert_error_kind(&record, "exit_code");
        let message = record["error"]["message"].as_str().unwrap();
        assert!(message.contains(&code.to_string()), "{message}");
    }
}

#[test]
fn a_child_killed_by_a_foreign_signal_exits_128_plus_n() {
    let task = Task::new();
    let output = task.run_sh(&[], "kill -ALRM $$; sleep 5");
    assert_exit_code(&output, 128 + libc::SIGALRM);
    let record = task.record();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["exit_code"], 128 + libc::SIGALRM);
    assert_eq!(record["child_exit_code"], Value::Null);
    assert_eq!(record["signal"], "SIGALRM");
    assert_error_kind(&record, "signal");
}

// ---------------------------------------------------------------------------------------
// 2. Signal forwarding

/// Starts a child that traps `trap_name`, signals the agent with `signal`, and returns the
/// agent's exit status and record once the child has written what it caught and exited
/// with `trap_exit`.
fn forward(signal: Signal, trap_name: &str, trap_exit: i32) -> (ExitStatus, Value) {
    let task = Task::new();
    let script = format!(
        "trap 'echo {name} > caught; exit {trap_exit}' {trap_name}
         touch ready
         while :; do sleep 0.1; done",
        name = signal.as_str(),
    );
    let mut agent = Agent::spawn_sh(&task, &[], &script);
    agent.wait_for(&task.workdir().join("ready"));
    agent.signal(signal);
    let (status, _) = agent.wait();
    agent.assert_caught(&task, signal, &format!("{}\n", signal.as_str()));
    (status, task.record())
}

/// A forwarded signal other than SIGTERM is the child's business: its exit code passes
/// through as if nothing special had happened.
fn forwarded_signal_reaches_the_child(signal: Signal, trap_name: &str) {
    let (status, record) = forward(signal, trap_name, 42);
    assert_eq!(status.code(), Some(42), "{record:#}");
    assert_failed_with_exit_code(&record, 42);
}

#[test]
fn sigint_is_forwarded_to_the_child() {
    forwarded_signal_reaches_the_child(Signal::SIGINT, "INT");
}

#[test]
fn sighup_is_forwarded_to_the_child() {
    forwarded_signal_reaches_the_child(Signal::SIGHUP, "HUP");
}

#[test]
fn sigquit_is_forwarded_to_the_child() {
    forwarded_signal_reaches_the_child(Signal::SIGQUIT, "QUIT");
}

#[test]
fn sigusr1_is_forwarded_to_the_child() {
    forwarded_signal_reaches_the_child(Signal::SIGUSR1, "USR1");
}

#[test]
fn sigusr2_is_forwarded_to_the_child() {
    forwarded_signal_reaches_the_child(Signal::SIGUSR2, "USR2");
}

#[test]
fn sigterm_is_forwarded_and_the_task_counts_as_terminated_even_if_the_child_exits_0() {
    let (status, record) = forward(Signal::SIGTERM, "TERM", 0);
    assert_eq!(status.code(), Some(143), "{record:#}");
    assert_terminated_by_forwarded_sigterm(&record);
}

// ---------------------------------------------------------------------------------------
// 3. Orphans, zombies and leftovers

#[test]
fn orphaned_grandchildren_are_adopted_and_reaped_by_the_agent() {
    let task = Task::new();
    let orphans_file = task.workdir().join("orphans");
    let _cleanup = KillOnDrop(vec![orphans_file.clone()]);
    // Each `( sleep 2 & … )` subshell exits at once, orphaning its sleep: a double fork.
    let script = "i=0
         while [ $i -lt 10 ]; do ( sleep 2 & echo $! >> orphans ); i=$((i+1)); done
         touch ready
         while [ ! -e stop ]; do sleep 0.05; done";
    let mut agent = Agent::spawn_sh(&task, &[], script);
    agent.wait_for(&task.workdir().join("ready"));
    let agent_pid = agent.pid();
    let orphans = read_pids(&orphans_file);
    assert_eq!(orphans.len(), 10);

    // The agent is a child subreaper: orphans below it become its children, not init's.
    let parents: Vec<(i32, Option<i32>)> = orphans
        .iter()
        .map(|&pid| (pid, stat(pid).map(|s| s.ppid)))
        .collect();
    assert!(
        parents
            .iter()
            .all(|&(_, ppid)| ppid.is_none_or(|ppid| ppid == agent_pid)),
        "orphans (pid, parent) were not adopted by the agent (pid {agent_pid}): {parents:?}"
    );
    assert!(
        parents.iter().any(|&(_, ppid)| ppid == Some(agent_pid)),
        "no orphan was seen with the agent (pid {agent_pid}) as its parent: {parents:?}"
    );

    // Once they exit, none of them stays a zombie of the agent.
    let settled = poll(Duration::from_secs(8), || {
        let zombies = zombie_children_of(agent_pid);
        let all_gone = orphans.iter().all(|&pid| is_dead(pid));
        (all_gone && zombies.is_empty()).then_some(())
    });
    assert!(
        settled.is_some(),
        "zombies pile up under the agent: {:?}; orphans still there: {:?}",
        zombie_children_of(agent_pid),
        orphans
            .iter()
            .filter_map(|&pid| stat(pid))
            .collect::<Vec<_>>()
    );
    for pid in &orphans {
        if let Some(s) = stat(*pid) {
            assert_ne!(
                s.ppid, agent_pid,
                "orphan {pid} is an unreaped zombie: {s:?}"
            );
        }
    }

    fs::write(task.workdir().join("stop"), "").unwrap();
    let (status, _) = agent.wait();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert_eq!(task.record()["status"], "succeeded");
}

#[test]
fn processes_left_behind_are_stopped_and_the_agent_exits_promptly() {
    let task = Task::new();
    let pid_files: Vec<PathBuf> = ["background", "stubborn", "orphan"]
        .iter()
        .map(|name| task.workdir().join(name))
        .collect();
    let _cleanup = KillOnDrop(pid_files.clone());
    // A plain background sleep, one that ignores SIGTERM (the ignored disposition survives
    // exec), and one orphaned by a double fork; then the main child exits successfully.
    let script = "sleep 1000 & echo $! > background
         (trap '' TERM; exec sleep 1000) & echo $! > stubborn
         ( sleep 1000 & echo $! > orphan )
         exit 0";
    let mut agent = Agent::spawn_sh(&task, &[], script);
    let (status, exited) = agent.wait();
    let elapsed = exited - agent.started();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(
        elapsed < Duration::from_secs(8),
        "the agent took {elapsed:?} to exit after its command did"
    );
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["child_exit_code"], 0);

    let leftovers: Vec<i32> = pid_files.iter().flat_map(|p| read_pids(p)).collect();
    assert_eq!(leftovers.len(), 3);
    let survivors = poll(Duration::from_secs(3), || {
        leftovers.iter().all(|&pid| is_dead(pid)).then_some(())
    });
    assert!(
        survivors.is_some(),
        "processes the command left behind outlived the agent: {:?}; the agent's log:\n{}",
        leftovers
            .iter()
            .filter_map(|&pid| stat(pid).filter(|s| s.state != 'Z'))
            .collect::<Vec<_>>(),
        agent.log()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Timeout ladder

/// Runs `task-agent run OPTIONS -- sh -c SCRIPT` to its end, which must be by the timeout;
/// returns the record and how long the agent ran.
fn run_to_timeout(task: &Task, options: &[&str], script: &str) -> (Value, Duration) {
    let mut agent = Agent::spawn_sh(task, options, script);
    let (status, exited) = agent.wait();
    assert_eq!(status.code(), Some(124), "{}", agent.log());
    let record = task.record();
    assert_eq!(record["status"], "timed_out", "{record:#}");
    assert_eq!(record["exit_code"], 124);
    assert_error_kind(&record, "timed_out");
    (record, exited - agent.started())
}

#[test]
fn a_timeout_ignored_by_the_child_ends_in_sigkill_after_the_grace() {
    let task = Task::new();
    let (record, elapsed) = run_to_timeout(
        &task,
        &["--timeout", "1s", "--grace", "1s"],
        "trap '' TERM; while :; do sleep 0.1; done",
    );
    assert_eq!(record["signal"], "SIGKILL");
    assert_eq!(record["child_exit_code"], Value::Null);
    assert_eq!(record["retryable"], false);
    // SIGKILL only once timeout and grace have both passed.
    assert!(
        elapsed >= Duration::from_millis(1900),
        "killed after {elapsed:?}, before timeout + grace"
    );
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

#[test]
fn a_timeout_handled_by_the_child_needs_no_sigkill() {
    let task = Task::new();
    let (record, elapsed) = run_to_timeout(
        &task,
        &["--timeout", "1s", "--grace", "30s"],
        "trap 'echo TERM > caught; exit 5' TERM; while :; do sleep 0.1; done",
    );
    assert_eq!(record["child_exit_code"], 5);
    assert_eq!(record["signal"], Value::Null);
    assert_eq!(
        fs::read_to_string(task.workdir().join("caught")).unwrap(),
        "TERM\n"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "stopped after {elapsed:?}, before the timeout"
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "took {elapsed:?}: the agent waited for the grace instead of the child's exit"
    );
}

// ---------------------------------------------------------------------------------------
// 5. SIGTERM to the agent with a child that ignores it

#[test]
fn sigterm_to_the_agent_kills_a_stubborn_child_after_the_grace() {
    let task = Task::new();
    let mut agent = Agent::spawn_sh(&task, &["--grace", "1s"], IGNORES_SIGTERM);
    agent.wait_for(&task.workdir().join("ready"));
    let sent = Instant::now();
    agent.signal(Signal::SIGTERM);
    let (status, _) = agent.wait();
    let after = sent.elapsed();
    assert_terminated_after_the_grace(&task, &agent, status, after, Duration::from_secs(8));
}

// ---------------------------------------------------------------------------------------
// 6. SIGKILL to the agent

#[test]
fn a_killed_agent_leaves_a_valid_provisional_record_and_no_child() {
    let task = Task::new();
    let mut agent = Agent::spawn_sh(
        &task,
        &[],
        "echo $$ > pid.tmp; mv pid.tmp child.pid; while :; do sleep 0.1; done",
    );
    let pid_file = task.workdir().join("child.pid");
    let _cleanup = KillOnDrop(vec![pid_file.clone()]);
    agent.wait_for(&pid_file);
    let child = read_pids(&pid_file)[0];
    assert_eq!(
        stat(child).map(|s| s.ppid),
        Some(agent.pid()),
        "the child should run under the agent"
    );
    agent.signal(Signal::SIGKILL);
    let (status, _) = agent.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    let record = common::check_record(&fs::read(task.result_file()).expect("result file"));
    assert_eq!(record["status"], "running", "{record:#}");
    assert_eq!(record["phase"], "process");
    assert_eq!(record["exit_code"], Value::Null);
    assert_eq!(record["finished_at"], Value::Null);

    let died = poll(SOON, || is_dead(child).then_some(()));
    assert!(
        died.is_some(),
        "the child {child} outlived the killed agent: {:?}",
        stat(child)
    );
}

// ---------------------------------------------------------------------------------------
// 7. Commands that cannot start

#[test]
fn a_missing_command_is_127_command_not_found() {
    let task = Task::new();
    let name = "task-agent-test-no-such-command";
    let output = task
        .command()
        .args(["--", name, "--flag"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 127);
    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["exit_code"], 127);
    assert_eq!(record["child_exit_code"], Value::Null);
    assert_eq!(record["retryable"], false);
    assert_error_kind(&record, "command_not_found");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains(name), "{message}");
}

fn write_script(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// 126 `command_not_executable`, naming `script`, whose message gives `advice` and does not
/// give `wrong_advice` (the fix for a cause that is not this one).
fn assert_not_executable(task: &Task, script: &Path, advice: &str, wrong_advice: &str) {
    let output = task
        .command()
        .arg("--")
        .arg(script)
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 126);
    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["exit_code"], 126);
    assert_eq!(record["retryable"], false);
    assert_error_kind(&record, "command_not_executable");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&*script.to_string_lossy()),
        "the message should name {}: {message}",
        script.display()
    );
    assert!(message.contains(advice), "{message}");
    assert!(!message.contains(wrong_advice), "{message}");
}

#[test]
fn a_file_without_execute_permission_is_126_command_not_executable() {
    let task = Task::new();
    let script = task.path("task.sh");
    write_script(&script, "#!/bin/sh\nexit 0\n", 0o644);
    assert_not_executable(&task, &script, "chmod +x", "`#!`");
}

#[test]
fn a_script_with_a_missing_interpreter_is_126_command_not_executable() {
    let task = Task::new();
    let script = task.path("task.sh");
    write_script(&script, "#!/nonexistent/interpreter\nexit 0\n", 0o755);
    assert_not_executable(&task, &script, "/nonexistent/interpreter", "chmod");
}

/// The record of a start that failed at a step other than the command file: `spawn`, 70,
/// a message naming `named`, and no advice about `#!` lines or execute bits.
fn assert_spawn_failure_names(task: &Task, output: &std::process::Output, named: &str) {
    assert_exit_code(output, 70);
    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_error_kind(&record, "spawn");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(named),
        "the message should name {named}: {message}"
    );
    assert!(
        !message.contains("#!") && !message.contains("chmod"),
        "advice for another cause: {message}"
    );
}

#[test]
fn a_missing_dev_null_is_named_not_blamed_on_the_command() {
    if !common::is_root() {
        eprintln!("skipped: hiding /dev needs a mount namespace (root)");
        return;
    }
    let task = Task::new();
    let mut agent = task.command();
    agent.args(["--", "/bin/true"]);
    // A private mount namespace whose /dev is an empty tmpfs: a minimal root's /dev.
    let mut wrapper = Command::new("unshare");
    wrapper.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$@\"",
        "sh",
    ]);
    let output = common::command_under(wrapper, &agent)
        .output()
        .expect("unshare runs");
    assert_spawn_failure_names(&task, &output, "opening /dev/null");
}

#[test]
fn a_workdir_the_agents_user_cannot_enter_is_named_not_blamed_on_the_command() {
    if !common::is_root() {
        eprintln!("skipped: running the agent as another user needs root");
        return;
    }
    // As nobody, with a workdir that exists but only root may enter (a volume mounted
    // with the wrong owner): the agent prepares it, the child cannot chdir into it.
    let task = Task::new();
    let return_file = task.open_to_nobody(0o700);
    let mut agent = task.command_returning_to(&return_file);
    agent.args(["--", "/bin/true"]);
    let output = common::as_nobody(&agent).output().expect("setpriv runs");
    assert_spawn_failure_names(&task, &output, "entering the workdir");
    let message = task.record()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("Permission denied"), "{message}");
}

// ---------------------------------------------------------------------------------------
// 8. How the child is started

#[test]
fn the_child_runs_in_its_workdir_own_group_null_stdin_and_clean_env() {
    let task = Task::new();
    assert!(!task.workdir().exists());
    let mut command = task.command();
    command
        .env("TASK_AGENT_TENANT", "acme")
        .env("TASK_AGENT_NOT_AN_OPTION", "agent-only")
        .env("SUPERVISION_TEST_VAR", "kept")
        .stdin(Stdio::piped())
        .args(["--", "sh", "-c"])
        .arg(
            "pwd -P > cwd
             cat /proc/$$/stat > stat
             readlink /proc/$$/fd/0 > stdin.link
             cat > stdin.data
             env > env",
        );
    let mut agent = Agent::spawn(&task, command);
    // Whatever the agent's stdin carries must not reach the child.
    let mut stdin = agent.take_stdin().expect("agent stdin");
    let _ = stdin.write_all(b"meant for the agent\n");
    drop(stdin);
    let (status, _) = agent.wait();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    let read = |name: &str| agent.read_child_file(&task.workdir().join(name), name);

    let workdir = fs::canonicalize(task.workdir()).expect("the workdir was created");
    assert_eq!(read("cwd").trim_end(), workdir.to_str().unwrap());

    let child = parse_stat(&read("stat")).expect("the child's stat");
    assert_eq!(child.ppid, agent.pid(), "{child:?}");
    assert_eq!(
        child.pgrp, child.pid,
        "the child should lead its own process group: {child:?}"
    );
    assert_ne!(
        child.pgrp,
        getpgrp().as_raw(),
        "the child shares the agent's process group: {child:?}"
    );

    assert_eq!(read("stdin.link").trim_end(), "/dev/null");
    assert_eq!(read("stdin.data"), "");

    let env = read("env");
    let agent_vars: Vec<&str> = env
        .lines()
        .filter(|line| line.starts_with("TASK_AGENT_"))
        .collect();
    assert_eq!(
        agent_vars,
        vec![format!(
            "TASK_AGENT_RETURN_FILE={}",
            task.return_file().display()
        )],
        "{env}"
    );
    assert!(
        env.lines().any(|line| line == "SUPERVISION_TEST_VAR=kept"),
        "{env}"
    );
}
