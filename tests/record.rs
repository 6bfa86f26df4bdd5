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
