//! The command line and the record's edge cases, end to end: help and version, usage errors
//! (exit 64, a clear message, a record where one was asked for), options from the
//! environment, and return values and stderr too large or too broken for the record.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::assertions::assert_exit_code;
use common::{Task, agent_command};
use serde_json::Value;

fn run(command: &mut Command) -> Output {
    command.output().expect("task-agent runs")
}

fn assert_usage_error(output: &Output, names: &[&str]) {
    let stderr = common::stderr(output);
    assert_eq!(output.status.code(), Some(64), "stderr: {stderr}");
    for name in names {
        assert!(
            stderr.contains(name),
            "stderr should mention {name}: {stderr}"
        );
    }
}

#[test]
fn help_exits_0_and_names_the_environment_variables() {
    let output = run(agent_command().arg("--help"));
    assert_exit_code(&output, 0);
    let help = common::stdout(&output);
    assert!(help.contains("TASK_AGENT_"), "{help}");
    assert!(help.contains("run"), "{help}");

    let output = run(agent_command().args(["run", "--help"]));
    assert_exit_code(&output, 0);
    let help = common::stdout(&output);
    for variable in [
        "TASK_AGENT_TIMEOUT",
        "TASK_AGENT_MEMORY_LIMIT",
        "TASK_AGENT_RESULT_FILE",
        "TASK_AGENT_LOG_FORMAT",
        "TASK_AGENT_DAG_ID",
    ] {
        assert!(
            help.contains(variable),
            "run --help lacks {variable}: {help}"
        );
    }
}

#[test]
fn version_exits_0_and_prints_the_version() {
    let output = run(agent_command().arg("--version"));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        common::stdout(&output).trim(),
        format!("task-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_option_is_a_usage_error_naming_it() {
    let task = Task::new();
    let output = task.run_sh(&["--bogus-option"], "echo should not run");
    assert_usage_error(&output, &["--bogus-option"]);
    assert!(!common::stdout(&output).contains("should not run"));
}

#[test]
fn a_malformed_timeout_names_the_option_and_the_accepted_form() {
    let task = Task::new();
    let output = task.run_sh(&["--timeout", "soon"], "true");
    assert_usage_error(&output, &["--timeout", "soon", "90s"]);
}

#[test]
fn a_malformed_memory_limit_names_the_option_and_the_accepted_form() {
    let task = Task::new();
    let output = task.run_sh(&["--memory-limit", "2GB"], "true");
    assert_usage_error(&output, &["--memory-limit", "2GB", "512Mi"]);
}

#[test]
fn a_missing_command_is_a_usage_error() {
    let task = Task::new();
    let output = run(task.command().args(["--timeout", "1s"]));
    assert_usage_error(&output, &["COMMAND"]);
    let output = run(task.command().arg("--"));
    assert_usage_error(&output, &["COMMAND"]);
}

#[test]
fn a_malformed_environment_variable_is_a_usage_error() {
    let task = Task::new();
    let output = run(task.command().env("TASK_AGENT_TIMEOUT", "soon").args([
        "--",
        "sh",
        "-c",
        "echo should not run",
    ]));
    assert_usage_error(&output, &["soon", "90s"]);
    assert!(!common::stdout(&output).contains("should not run"));
    let output = run(task
        .command()
        .env("TASK_AGENT_MEMORY_LIMIT", "lots")
        .args(["--", "true"]));
    assert_usage_error(&output, &["lots", "512Mi"]);
}

#[test]
fn an_environment_variable_sets_an_option() {
    let task = Task::new();
    let started = Instant::now();
    let output = run(task
        .command()
        .env("TASK_AGENT_TIMEOUT", "1s")
        .args(["--grace", "1s", "--", "sleep", "5"]));
    let took = started.elapsed();
    assert_exit_code(&output, 124);
    let record = task.record();
    assert_eq!(record["status"], "timed_out", "{record:#}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn a_flag_wins_over_its_environment_variable() {
    let task = Task::new();
    let output = run(task.command().env("TASK_AGENT_TIMEOUT", "1s").args([
        "--timeout",
        "10s",
        "--grace",
        "1s",
        "--",
        "sleep",
        "2",
    ]));
    assert_exit_code(&output, 0);
    assert_eq!(task.record()["status"], "succeeded");
}

#[test]
fn identity_comes_from_the_environment_and_flags_win() {
    let task = Task::new();
    let output = run(task
        .command()
        .env("TASK_AGENT_DAG_ID", "dag_from_env")
        .env("TASK_AGENT_TASK_ID", "task_from_env")
        .env("TASK_AGENT_MAP_INDEX", "-1")
        .args(["--task-id", "task_from_flag", "--", "true"]));
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["task"]["dag_id"], "dag_from_env");
    assert_eq!(record["task"]["task_id"], "task_from_flag");
    assert_eq!(record["task"]["map_index"], -1);
}

#[test]
fn the_child_does_not_inherit_the_agents_settings() {
    let task = Task::new();
    let output = run(task
        .command()
        .env("TASK_AGENT_DAG_ID", "d")
        .env("TASK_AGENT_TIMEOUT", "30s")
        .args([
            "--log-level",
            "error",
            "--",
            "sh",
            "-c",
            "env | grep ^TASK_AGENT_ | sort",
        ]));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        common::stdout(&output),
        format!("TASK_AGENT_RETURN_FILE={}\n", task.return_file().display())
    );
}

fn assert_usage_record(bytes: &[u8], option: &str) {
    let record = common::check_record(bytes);
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["exit_code"], 64);
    assert_eq!(record["error"]["kind"], "usage");
    assert_eq!(record["retryable"], false);
    assert_eq!(record["child_exit_code"], Value::Null);
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains(option), "{message}");
}

#[test]
fn a_usage_error_leaves_a_record_in_the_named_result_file() {
    let task = Task::new();
    let output = task.run_sh(&["--bogus-option"], "true");
    assert_eq!(output.status.code(), Some(64));
    assert_usage_record(
        &std::fs::read(task.result_file()).expect("a record for the usage error"),
        "--bogus-option",
    );

    let task = Task::new();
    let output = task.run_sh(&["--timeout", "soon"], "true");
    assert_eq!(output.status.code(), Some(64));
    assert_usage_record(
        &std::fs::read(task.result_file()).expect("a record for the usage error"),
        "--timeout",
    );
}

#[test]
fn a_usage_error_leaves_a_record_in_the_result_file_named_by_the_environment() {
    let task = Task::new();
    let output = run(agent_command()
        .env("TASK_AGENT_RESULT_FILE", task.result_file())
        .args(["run", "--memory-limit", "2GB", "--", "true"]));
    assert_eq!(output.status.code(), Some(64));
    assert_usage_record(
        &std::fs::read(task.result_file()).expect("a record for the usage error"),
        "--memory-limit",
    );
}

#[test]
fn a_huge_return_value_is_left_out_of_the_record_and_flagged() {
    let task = Task::new();
    let output = task.run_sh(
        &[],
        r#"python3 -c '
import json, os
value = {"rows": ["row %05d %s" % (i, "x" * 90) for i in range(1000)]}
with open(os.environ["TASK_AGENT_RETURN_FILE"], "w") as f:
    json.dump(value, f)
print(os.path.getsize(os.environ["TASK_AGENT_RETURN_FILE"]))
'"#,
    );
    assert_exit_code(&output, 0);
    let size: u64 = common::stdout(&output).trim().parse().unwrap();
    assert!(size > 100_000, "return value is only {size} bytes");
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["return_value"], Value::Null);
    assert_eq!(record["return_value_truncated"], true);
}

#[test]
fn a_return_value_that_fits_the_file_limit_but_not_the_record_is_flagged() {
    // ~3.9 KB: small enough to be read in full, too large for a 4096-byte record.
    let task = Task::new();
    let output = task.run_sh(
        &[],
        r#"printf '{"blob": "%s"}' "$(head -c 3900 /dev/zero | tr '\0' y)" > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["return_value"], Value::Null);
    assert_eq!(record["return_value_truncated"], true);
}

#[test]
fn huge_stderr_still_gives_a_valid_record_and_keeps_the_return_value() {
    let task = Task::new();
    let output = task.run_sh(
        &["--log-level", "error"],
        r#"python3 -c '
import sys
for i in range(300):
    sys.stderr.write("line %03d %s\n" % (i, "x" * 3000))
' ; echo '{"ok": true}' > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stderr.len() > 900_000, "stderr was forwarded");
    let record = task.record(); // checks schema and budget
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["return_value"]["ok"], true, "{record:#}");
    assert_eq!(record["return_value_truncated"], false);
    let tail = record["log_tail"].as_array().unwrap();
    assert!(!tail.is_empty(), "{record:#}");
    let last = tail.last().unwrap().as_str().unwrap();
    assert!(last.starts_with("line 299 xxx"), "{last}");
}

#[test]
fn stderr_full_of_escapes_and_multibyte_text_still_fits_the_record() {
    // Control characters cost 6 bytes each in JSON, quotes and backslashes 2, `é` 2 bytes
    // raw: lines the budget arithmetic must not underestimate.
    let task = Task::new();
    let output = task.run_sh(
        &["--log-level", "error", "--dag-id", &"d".repeat(300)],
        r#"python3 -c '
import sys
for i in range(40):
    sys.stderr.buffer.write(b"\x01\x02\"\\" * 200 + b"\n")
    sys.stderr.buffer.write("é".encode() * 600 + b"\n")
    sys.stderr.buffer.write(b"\xff\xfe" * 300 + b"\n")
'; exit 2"#,
    );
    assert_eq!(output.status.code(), Some(2));
    let record = task.record();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["exit_code"], 2);
    assert_eq!(record["error"]["kind"], "exit_code");
    // The newest line (~510 bytes of U+FFFD) fits in the record many times over.
    let newest = record["log_tail"]
        .as_array()
        .unwrap()
        .last()
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("log_tail was emptied though its newest line fits: {record:#}"));
    assert!(
        !newest.is_empty() && newest.chars().all(|c| c == '\u{fffd}'),
        "{newest:?}"
    );
}

/// Writes `lines` to stderr from a child and checks that the record keeps the newest of them,
/// as many as the budget allows: the tail is a suffix of `lines`, and one more line would
/// push the record over 4096 bytes.
fn assert_tail_is_as_long_as_the_budget_allows(lines: &[String]) {
    let task = Task::new();
    let path = task.path("stderr.txt");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let output = task.run_sh(
        &["--log-level", "error"],
        &format!("cat '{}' >&2", path.display()),
    );
    assert_eq!(output.status.code(), Some(0));
    let bytes = std::fs::read(task.result_file()).unwrap();
    let record = common::check_record(&bytes);
    // The record is compact JSON; re-encoding it must give its exact size, or the
    // arithmetic below means nothing.
    assert_eq!(serde_json::to_vec(&record).unwrap().len(), bytes.len());
    let tail: Vec<String> = record["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(
        tail.len() < lines.len(),
        "test lines should not all fit in the record"
    );
    assert_eq!(
        tail[..],
        lines[lines.len() - tail.len()..],
        "the tail is not the newest lines"
    );
    let mut longer = record.clone();
    let previous = lines[lines.len() - tail.len() - 1].clone();
    longer["log_tail"]
        .as_array_mut()
        .unwrap()
        .insert(0, Value::from(previous));
    let longer_size = serde_json::to_vec(&longer).unwrap().len();
    assert!(
        longer_size > 4096,
        "the record keeps {} of the newest lines in {} bytes, but one more would still fit ({longer_size} bytes)",
        tail.len(),
        bytes.len()
    );
}

#[test]
fn log_tail_keeps_as_many_plain_lines_as_fit() {
    let lines: Vec<String> = (0..20)
        .map(|i| format!("line {i:02} {}", "p".repeat(300)))
        .collect();
    assert_tail_is_as_long_as_the_budget_allows(&lines);
}

#[test]
fn log_tail_keeps_as_many_colored_log_lines_as_fit() {
    // Coloured log output: every ESC costs 6 bytes in JSON (\u001b) but 1 byte raw.
    let lines: Vec<String> = (0..20)
        .map(|i| {
            let words: String = (0..12)
                .map(|w| format!("\x1b[3{}mword{w}\x1b[0m ", w % 8))
                .collect();
            format!("\x1b[1;31mERROR\x1b[0m line {i:02} {words}")
        })
        .collect();
    assert_tail_is_as_long_as_the_budget_allows(&lines);
}

#[test]
fn an_invalid_return_value_fails_the_task_with_exit_65() {
    let task = Task::new();
    let output = task.run_sh(&[], r#"echo '{"rows": 42' > "$TASK_AGENT_RETURN_FILE""#);
    assert_exit_code(&output, 65);
    let record = task.record();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["exit_code"], 65);
    assert_eq!(record["child_exit_code"], 0);
    assert_eq!(record["error"]["kind"], "return_value_invalid");
    assert_eq!(record["return_value"], Value::Null);
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("return.json"), "{message}");
}

#[test]
fn a_huge_invalid_return_value_is_still_found_invalid() {
    let task = Task::new();
    let output = task.run_sh(
        &[],
        r#"{ printf '['; seq -s, 1 50000; } > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 65);
    let record = task.record();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["error"]["kind"], "return_value_invalid");
    assert_eq!(record["return_value_truncated"], false);
}

#[test]
fn a_stale_return_value_from_before_the_run_is_not_reported() {
    let task = Task::new();
    std::fs::create_dir_all(task.return_file().parent().unwrap()).unwrap();
    std::fs::write(task.return_file(), r#"{"stale": true}"#).unwrap();
    let output = task.run_sh(
        &["--log-level", "error"],
        r#"if [ -e "$TASK_AGENT_RETURN_FILE" ]; then echo stale file visible; fi"#,
    );
    assert_exit_code(&output, 0);
    assert_eq!(common::stdout(&output), "");
    let record = task.record();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["return_value"], Value::Null, "{record:#}");
    assert_eq!(record["return_value_truncated"], false);
    assert!(!task.return_file().exists());
}

#[test]
fn a_stale_invalid_return_value_does_not_fail_the_run() {
    let task = Task::new();
    std::fs::create_dir_all(task.return_file().parent().unwrap()).unwrap();
    std::fs::write(task.return_file(), "{broken").unwrap();
    let output = task.run_sh(&[], "true");
    assert_exit_code(&output, 0);
    assert_eq!(task.record()["status"], "succeeded");
}

#[test]
fn a_rejected_snapshot_url_never_shows_its_sas_signature() {
    let task = Task::new();
    let output = run(task.command().args([
        "--snapshot",
        "https://acct.blob.core.windows.net/only-a-container?sv=2024&sig=S3cr3tSignature%3D",
        "--",
        "true",
    ]));
    assert_exit_code(&output, 64);
    let stderr = common::stderr(&output);
    assert!(
        stderr.contains("--snapshot") && stderr.contains("sig=REDACTED'"),
        "{stderr}"
    );
    let record = task.record();
    let text = record.to_string();
    assert!(
        !stderr.contains("S3cr3tSignature") && !text.contains("S3cr3tSignature"),
        "{stderr}\n{text}"
    );
    assert_eq!(record["error"]["kind"], "usage");
}
