//! Forwarding of the child's stdout and stderr, end to end: text mode passes bytes through
//! unchanged whatever they are, JSON mode writes one well-formed object per line, and the
//! record keeps the last stderr lines.

mod common;

use std::time::{Duration, SystemTime};

use common::Task;
use common::assertions::assert_exit_code;
use serde_json::Value;

/// The agent's own log lines go to stderr; at `error` level a clean run logs nothing, so
/// stderr then holds only what the child wrote.
const QUIET: &[&str] = &["--log-level", "error"];

/// Bytes with no `\n`, varied enough that a lost, repeated or reordered block shows.
fn line_content(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_\"'\\/{}[]";
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// Index of the first difference, for readable failures on megabyte outputs.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(at) = first_difference(got, want) {
        panic!(
            "{what}: {} bytes forwarded, {} expected; first difference at byte {at}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[at.min(got.len())..(at + 40).min(got.len())]),
            String::from_utf8_lossy(&want[at.min(want.len())..(at + 40).min(want.len())]),
        );
    }
}

fn json_lines(bytes: &[u8], what: &str) -> Vec<Value> {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what} in json mode is not UTF-8: {e}"));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} does not end with a newline"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| {
                panic!(
                    "{what} line is not JSON ({e}): {}",
                    &line[..line.len().min(300)]
                )
            })
        })
        .collect()
}

fn messages<'a>(objects: &'a [Value], stream: &str) -> Vec<&'a str> {
    objects
        .iter()
        .filter(|o| o["stream"] == stream)
        .map(|o| o["message"].as_str().expect("message is a string"))
        .collect()
}

#[test]
fn a_ten_megabyte_line_is_forwarded_intact_in_text_mode() {
    let task = Task::new();
    let mut line = line_content(10_000_000, 7);
    std::fs::write(task.path("line"), &line).unwrap();
    let output = task.run_sh(
        QUIET,
        &format!("cat '{}'; echo", task.path("line").display()),
    );
    assert_exit_code(&output, 0);
    line.push(b'\n');
    assert_same_bytes(&output.stdout, &line, "stdout");
    assert_eq!(task.record()["status"], "succeeded");
}

#[test]
fn binary_output_with_every_byte_value_is_forwarded_intact() {
    let task = Task::new();
    // Every byte value, several times over and in two orders, ending without a newline.
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
    data.extend((0..=255u8).rev().cycle().take(256 * 40 + 17));
    std::fs::write(task.path("blob"), &data).unwrap();
    let blob = task.path("blob");
    let output = task.run_sh(QUIET, &format!("cat '{0}'; cat '{0}' >&2", blob.display()));
    assert_eq!(output.status.code(), Some(0));
    assert_same_bytes(&output.stdout, &data, "stdout");
    assert_same_bytes(&output.stderr, &data, "stderr");
}

#[test]
fn stdout_and_stderr_go_to_their_own_streams() {
    let task = Task::new();
    let output = task.run_sh(
        QUIET,
        "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2",
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(common::stdout(&output), "out-1\nout-2\n");
    assert_eq!(common::stderr(&output), "err-1\nerr-2\n");
}

#[test]
fn the_agents_own_log_goes_to_stderr_not_stdout() {
    let task = Task::new();
    let output = task.run_sh(&[], "echo only-this");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(common::stdout(&output), "only-this\n");
    assert!(
        common::stderr(&output).contains("[task-agent]"),
        "{}",
        common::stderr(&output)
    );
}

#[test]
fn a_last_line_without_newline_is_flushed() {
    let task = Task::new();
    let output = task.run_sh(
        QUIET,
        "printf 'first\\nno newline at end'; printf 'err first\\nerr no newline' >&2",
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(common::stdout(&output), "first\nno newline at end");
    assert_eq!(common::stderr(&output), "err first\nerr no newline");
    // The unterminated line also counts as the last stderr line.
    assert_eq!(
        task.record()["log_tail"],
        serde_json::json!(["err first", "err no newline"])
    );
}

#[test]
fn json_mode_writes_one_object_per_line_with_stream_timestamp_and_identity() {
    let task = Task::new();
    let before = SystemTime::now() - Duration::from_secs(1);
    let output = task.run_sh(
        &[
            "--log-format",
            "json",
            "--dag-id",
            "user1_pipeline",
            "--task-id",
            "load \"quoted\"",
            "--tenant",
            "user1",
        ],
        r#"echo hello; printf 'tab\there \\ back\\slash "q"\n'; echo oops >&2; printf '\377\376bad utf8\n'; printf 'last line no newline'"#,
    );
    let after = SystemTime::now() + Duration::from_secs(1);
    assert_exit_code(&output, 0);

    let out = json_lines(&output.stdout, "stdout");
    let err = json_lines(&output.stderr, "stderr");
    assert!(!out.is_empty() && !err.is_empty());
    for (objects, streams) in [(&out, &["stdout"][..]), (&err, &["stderr", "agent"][..])] {
        for object in objects {
            let stream = object["stream"].as_str().unwrap_or_default();
            assert!(streams.contains(&stream), "wrong stream: {object}");
            assert!(object["message"].is_string(), "{object}");
            let timestamp = object["timestamp"].as_str().expect("timestamp");
            let at = humantime::parse_rfc3339(timestamp)
                .unwrap_or_else(|e| panic!("timestamp {timestamp:?}: {e}"));
            assert!(before <= at && at <= after, "timestamp {timestamp} is off");
            assert_eq!(object["dag_id"], "user1_pipeline", "{object}");
            assert_eq!(object["task_id"], "load \"quoted\"", "{object}");
            assert_eq!(object["tenant"], "user1", "{object}");
            assert!(object.get("partial").is_none(), "{object}");
        }
    }
    assert_eq!(
        messages(&out, "stdout"),
        vec![
            "hello",
            "tab\there \\ back\\slash \"q\"",
            "\u{fffd}\u{fffd}bad utf8",
            "last line no newline"
        ]
    );
    assert_eq!(messages(&err, "stderr"), vec!["oops"]);
    let agent = messages(&err, "agent");
    assert!(
        agent.iter().any(|m| m.contains("task-agent starting")),
        "{agent:?}"
    );
    assert!(
        agent.iter().any(|m| m.contains("task finished")),
        "{agent:?}"
    );
}

#[test]
fn a_long_line_in_json_mode_comes_out_as_partial_pieces_that_join_up() {
    let task = Task::new();
    let line = line_content(300_000, 11);
    std::fs::write(task.path("line"), &line).unwrap();
    let output = task.run_sh(
        &["--log-format", "json", "--dag-id", "d1"],
        &format!(
            "echo before; cat '{0}'; echo; echo after; cat '{0}' >&2; echo >&2",
            task.path("line").display()
        ),
    );
    assert_eq!(output.status.code(), Some(0));
    let line = String::from_utf8(line).unwrap();

    let out = json_lines(&output.stdout, "stdout");
    let messages: Vec<&str> = messages(&out, "stdout");
    assert_eq!(messages.first(), Some(&"before"));
    assert_eq!(messages.last(), Some(&"after"));
    let pieces = &out[1..out.len() - 1];
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    for piece in &pieces[..pieces.len() - 1] {
        assert_eq!(piece["partial"], true, "all but the last piece are partial");
        assert_eq!(piece["dag_id"], "d1");
    }
    assert!(
        pieces
            .last()
            .unwrap()
            .get("partial")
            .is_none_or(|p| p == false),
        "the last piece ends the line"
    );
    for piece in pieces {
        assert!(piece["message"].as_str().unwrap().len() <= 64 * 1024);
    }
    let joined: String = pieces
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_same_bytes(joined.as_bytes(), line.as_bytes(), "joined pieces");
    // `before` and `after` are whole lines.
    assert!(out[0].get("partial").is_none() && out[out.len() - 1].get("partial").is_none());

    let err = json_lines(&output.stderr, "stderr");
    let joined: String = err
        .iter()
        .filter(|o| o["stream"] == "stderr")
        .map(|o| o["message"].as_str().unwrap())
        .collect();
    assert_same_bytes(joined.as_bytes(), line.as_bytes(), "joined stderr pieces");
}

#[test]
fn a_long_line_of_multibyte_text_is_not_damaged_where_it_is_cut() {
    // 3-byte characters: a 64 KiB cut cannot fall between them, but valid UTF-8 in must still
    // be the same text out once the pieces are joined.
    let task = Task::new();
    let line = "€".repeat(100_000);
    std::fs::write(task.path("line"), &line).unwrap();
    let output = task.run_sh(
        &["--log-format", "json"],
        &format!("cat '{}'; echo", task.path("line").display()),
    );
    assert_eq!(output.status.code(), Some(0));
    let out = json_lines(&output.stdout, "stdout");
    assert!(out.len() >= 2, "{} pieces", out.len());
    let joined: String = messages(&out, "stdout").concat();
    assert!(
        !joined.contains('\u{fffd}'),
        "valid UTF-8 became U+FFFD where the line was cut ({} replacement characters)",
        joined.matches('\u{fffd}').count()
    );
    assert_same_bytes(joined.as_bytes(), line.as_bytes(), "joined pieces");
}

#[test]
fn log_tail_keeps_the_last_stderr_lines_only() {
    let task = Task::new();
    let output = task.run_sh(
        QUIET,
        "for i in $(seq 1 30); do echo \"out $i\"; echo \"err $i\" >&2; done; exit 3",
    );
    assert_eq!(output.status.code(), Some(3));
    let record = task.record();
    assert_eq!(record["status"], "failed");
    let want: Vec<String> = (11..=30).map(|i| format!("err {i}")).collect();
    assert_eq!(record["log_tail"], serde_json::json!(want), "{record:#}");
}

#[test]
fn log_tail_lines_sets_how_many_are_kept() {
    let task = Task::new();
    let output = task.run_sh(
        &["--log-tail-lines", "3"],
        "for i in 1 2 3 4 5; do echo \"err $i\" >&2; done; echo 'stdout is not kept'",
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        task.record()["log_tail"],
        serde_json::json!(["err 3", "err 4", "err 5"])
    );
}

#[test]
fn log_tail_is_kept_in_json_mode_too() {
    let task = Task::new();
    let output = task.run_sh(
        &["--log-format", "json", "--log-tail-lines", "2"],
        "echo 'Traceback (most recent call last):' >&2; echo '  File \"x.py\"' >&2; echo 'ValueError: bad row' >&2; exit 1",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        task.record()["log_tail"],
        serde_json::json!(["  File \"x.py\"", "ValueError: bad row"])
    );
}

#[test]
fn the_agent_logs_its_phases_and_ends_with_a_one_line_summary() {
    let task = Task::new();
    let output = task.run_sh(&[], "echo working; exit 3");
    assert_exit_code(&output, 3);
    let stderr = common::stderr(&output);
    let lines: Vec<&str> = stderr.lines().collect();
    for phase in ["prepare", "process"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("phase finished") && l.contains(&format!("phase={phase}"))),
            "no `phase finished` line for {phase}:\n{stderr}"
        );
    }
    let summary = lines.last().expect("stderr has lines");
    assert!(
        summary.starts_with("[task-agent] INFO  task finished status=failed exit_code=3 duration="),
        "{summary}"
    );
    assert!(summary.contains(" peak_memory="), "{summary}");
}
