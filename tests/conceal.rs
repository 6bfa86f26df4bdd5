//! The agent's own credentials are not readable by the task from the agent's `/proc`
//! entries: the child reads `/proc/$PPID/cmdline` and `/proc/$PPID/environ` (its parent is
//! the agent) and neither holds the SAS given to the agent.

mod common;

use std::fs;
use std::process::Output;

use common::Task;
use common::assertions::assert_exit_code;

const SIGNATURE: &str = "CanarySignatureOnlyForTheAgent0123456789%3D";

fn sas_url() -> String {
    // Never contacted: a return value this small is not uploaded.
    format!("http://127.0.0.1:9/returns/task?sv=2025-01-05&sp=cw&sig={SIGNATURE}")
}

/// The child copies the agent's cmdline and environ into the workdir.
const READ_PARENT: &str =
    "cat /proc/$PPID/cmdline > cmdline; cat /proc/$PPID/environ > environ 2> environ.err; true";

fn read(task: &Task, name: &str) -> String {
    String::from_utf8_lossy(&fs::read(task.workdir().join(name)).unwrap_or_default()).into_owned()
}

fn assert_hidden(task: &Task, output: &Output) {
    assert_exit_code(output, 0);
    for name in ["cmdline", "environ"] {
        let seen = read(task, name);
        assert!(
            !seen.contains(SIGNATURE),
            "the task read the SAS in /proc/agent/{name}: {seen}"
        );
        assert!(
            !seen.contains("sp=cw"),
            "the task read the SAS in /proc/agent/{name}: {seen}"
        );
    }
    let cmdline = read(task, "cmdline");
    assert!(
        cmdline.contains("--workdir"),
        "the task could not read the cmdline at all: {cmdline:?}"
    );
}

#[test]
fn a_sas_on_the_agents_command_line_is_not_in_its_proc_cmdline() {
    let task = Task::new();
    let output = task
        .command()
        .arg("--return-upload")
        .arg(sas_url())
        .args(["--", "sh", "-c", READ_PARENT])
        .output()
        .expect("task-agent runs");
    assert_hidden(&task, &output);
    let cmdline = read(&task, "cmdline");
    assert!(
        cmdline.contains("http://127.0.0.1:9/returns/task?"),
        "the rest of the argument stays readable (ps): {cmdline:?}"
    );
}

#[test]
fn a_sas_in_the_agents_environment_is_not_in_its_proc_environ() {
    let task = Task::new();
    let output = task
        .command()
        .env("TASK_AGENT_RETURN_UPLOAD", sas_url())
        .args(["--", "sh", "-c", READ_PARENT])
        .output()
        .expect("task-agent runs");
    assert_hidden(&task, &output);
    if common::is_root() {
        // With CAP_SYS_PTRACE the environ is readable despite non-dumpable: the overwrite
        // alone must have hidden it.
        let environ = read(&task, "environ");
        assert!(
            environ.contains("TASK_AGENT_RETURN_UPLOAD=http://127.0.0.1:9/returns/task?"),
            "{environ:?}"
        );
    }
}

#[test]
fn a_task_without_privileges_cannot_open_the_agents_environ_or_memory() {
    if !common::is_root() {
        eprintln!("skipped: running the agent as another user needs root");
        return;
    }
    let task = Task::new();
    let return_file = task.open_to_nobody(0o777);
    let mut agent = task.command_returning_to(&return_file);
    agent.env("TASK_AGENT_RETURN_UPLOAD", sas_url()).args([
        "--",
        "sh",
        "-c",
        "cat /proc/$PPID/environ > environ 2> environ.err; head -c 1 /proc/$PPID/mem > mem 2> mem.err; true",
    ]);
    // As a pod runs it: an unprivileged user with no capabilities.
    let output = common::as_nobody(&agent).output().expect("setpriv runs");
    assert_exit_code(&output, 0);
    assert_eq!(
        read(&task, "environ"),
        "",
        "the task read the agent's environ"
    );
    assert!(
        read(&task, "environ.err").contains("Permission denied"),
        "{}",
        read(&task, "environ.err")
    );
    assert!(
        read(&task, "mem.err").contains("Permission denied"),
        "{}",
        read(&task, "mem.err")
    );
}
