mod common;

use common::Task;
use common::assertions::assert_exit_code;

#[test]
fn a_successful_task_leaves_a_valid_record_with_its_return_value() {
    let task = Task::new();
    let output = task.run_sh(
        &["--dag-id", "user1_pipeline", "--try-number", "2"],
        r#"echo working; echo '{"rows": 42}' > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 0);
    assert_eq!(common::stdout(&output), "working\n");
    let record = task.record();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["return_value"]["rows"], 42);
    assert_eq!(record["task"]["dag_id"], "user1_pipeline");
    assert_eq!(record["task"]["try_number"], 2);
}

#[test]
fn a_record_forged_by_the_task_is_overwritten_by_the_agents_own() {
    let task = Task::new();
    // The task knows where the record goes (in a pod, /dev/termination-log) and writes a
    // success there, from itself and from a process it leaves behind, then fails.
    let forged = r#"{"version":1,"status":"succeeded","exit_code":0}"#;
    let script = format!(
        "echo '{forged}' > '{path}'; (sleep 0.3; echo '{forged}' > '{path}') & exit 3",
        path = task.result_file().display()
    );
    let output = task.run_sh(&[], &script);
    assert_exit_code(&output, 3);
    let record = task.record();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["exit_code"], 3);
}
