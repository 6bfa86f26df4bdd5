//! A `task-agent` process running in the background while a test acts on it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Task;
use super::procs::SOON;

/// How long an agent may take to exit before the test gives up on it.
pub const AGENT_LIMIT: Duration = Duration::from_secs(10);

/// A script for `sh -c` whose process ignores SIGTERM, so only a SIGKILL ends it; it touches
/// `ready` in the workdir once the trap is set.
pub const IGNORES_SIGTERM: &str = "trap '' TERM; touch ready; while :; do sleep 0.1; done";

/// An agent started with `spawn()`, directly or under a program that execs it (such as
/// `unshare`); its stdout and stderr go to files in the task dir so it can never block on a
/// full pipe. Killed if the test ends before it does.
pub struct Agent {
    child: Child,
    log: PathBuf,
    started: Instant,
    waited: bool,
}

impl Agent {
    pub fn spawn(task: &Task, mut command: Command) -> Agent {
        let log = task.path("agent.log");
        command
            .stdout(File::create(task.path("agent.out")).expect("stdout file"))
            .stderr(File::create(&log).expect("stderr file"));
        let started = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
        Agent {
            child,
            log,
            started,
            waited: false,
        }
    }

    /// `task-agent run … -- sh -c SCRIPT`, started in the background.
    pub fn spawn_sh(task: &Task, options: &[&str], script: &str) -> Agent {
        let mut command = task.command();
        command.args(options).args(["--", "sh", "-c", script]);
        Agent::spawn(task, command)
    }

    /// The pid of the process started: the agent, or the program it runs under.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether the test has seen the process exit.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// The process's stdin, if it was started with a pipe there.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A file the agent's child was to write; if it cannot be read, fails with `what` went
    /// wrong and the agent's log, which most likely says why.
    pub fn read_child_file(&self, path: &Path, what: &str) -> String {
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{what}: {e}; the agent's log:\n{}", self.log()))
    }

    /// Checks that the child, on catching `signal`, wrote `expected` to `caught` in the
    /// task's workdir.
    #[track_caller]
    pub fn assert_caught(&self, task: &Task, signal: Signal, expected: &str) {
        let caught = self.read_child_file(
            &task.workdir().join("caught"),
            &format!("the child did not record {signal}"),
        );
        assert_eq!(caught, expected);
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the agent");
    }

    /// Panics, with the log, if the process has already exited.
    pub fn check_running(&mut self, waiting_for: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.waited = true;
            panic!(
                "the agent exited ({status}) before {waiting_for}; its log:\n{}",
                self.log()
            );
        }
    }

    /// Waits until `path` exists (the script's readiness mark); fails early, with the log,
    /// if the agent exits first.
    pub fn wait_for(&mut self, path: &Path) {
        let deadline = Instant::now() + SOON;
        while !path.exists() {
            self.check_running(&format!("{} appeared", path.display()));
            assert!(
                Instant::now() < deadline,
                "{} did not appear within {SOON:?}; the agent's log:\n{}",
                path.display(),
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit (within a generous bound); returns how it exited and
    /// when.
    pub fn wait(&mut self) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + AGENT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                self.waited = true;
                return (status, Instant::now());
            }
            if Instant::now() >= deadline {
                panic!(
                    "the agent did not exit within {AGENT_LIMIT:?}; its log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
