//! The result record: the one JSON object Airflow reads back from the pod's termination
//! message. Its schema is `schema/task-result.schema.json`; this module builds it and fits
//! it into Kubernetes' 4096-byte budget.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::identity::TaskIdentity;

pub const RECORD_VERSION: u32 = 1;

/// Kubernetes keeps at most this many bytes of a container's termination message.
pub const RECORD_BUDGET: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    OomKilled,
    Terminated,
    AgentError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::OomKilled => "oom_killed",
            Status::Terminated => "terminated",
            Status::AgentError => "agent_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    pub peak_memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReturnValueRef {
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub version: u32,
    pub status: Status,
    /// The phase the agent was in when this record was written.
    pub phase: &'static str,
    pub exit_code: Option<i32>,
    pub child_exit_code: Option<i32>,
    pub signal: Option<String>,
    pub retryable: bool,
    pub error: Option<ErrorInfo>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub durations_ms: BTreeMap<String, u64>,
    pub resources: Resources,
    pub snapshot: Option<crate::snapshot::Report>,
    pub secrets: Option<crate::secrets::Report>,
    pub return_value: Option<Value>,
    pub return_value_truncated: bool,
    /// Where a return value too large for the record was uploaded (--return-upload).
    pub return_value_ref: Option<ReturnValueRef>,
    pub log_tail: Vec<String>,
    /// What the inputs phase fetched.
    pub inputs: Option<Vec<crate::artifacts::Artifact>>,
    /// What the outputs phase published; left out (`outputs_truncated`) when the record
    /// would be too large: the manifest holds the whole list.
    pub outputs: Option<Vec<crate::artifacts::Artifact>>,
    pub outputs_manifest: Option<crate::artifacts::ManifestRef>,
    pub outputs_truncated: bool,
    /// What the try used so far (provisional) or in all (final).
    pub usage: Option<crate::usage::Usage>,
    pub task: TaskIdentity,
    /// The task's OpenTelemetry trace, when traces are exported.
    pub trace_id: Option<String>,
    pub agent_version: &'static str,
}

impl Record {
    pub fn provisional(started_at: String, task: TaskIdentity) -> Record {
        Record {
            version: RECORD_VERSION,
            status: Status::Running,
            phase: "start",
            exit_code: None,
            child_exit_code: None,
            signal: None,
            retryable: false,
            error: None,
            started_at,
            finished_at: None,
            durations_ms: BTreeMap::new(),
            resources: Resources::default(),
            snapshot: None,
            secrets: None,
            return_value: None,
            return_value_truncated: false,
            return_value_ref: None,
            log_tail: Vec::new(),
            inputs: None,
            outputs: None,
            outputs_manifest: None,
            outputs_truncated: false,
            usage: None,
            task,
            trace_id: None,
            agent_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Serializes the record into at most `budget` bytes of valid JSON.
    ///
    /// What gives way, in order: the oldest `log_tail` lines, then the `inputs` list, then
    /// the `outputs` list (with `outputs_truncated: true`; the manifest blob keeps it), then
    /// the return value (replaced by null with `return_value_truncated: true`), then the tail of the error message and
    /// of the task identity strings. Status, exit codes and resources always survive.
    pub fn encode(&self, budget: usize) -> Vec<u8> {
        let mut record = self.clone();
        let mut bytes = to_json(&record);
        while bytes.len() > budget && !record.log_tail.is_empty() {
            let excess = bytes.len() - budget;
            drop_oldest_lines(&mut record.log_tail, excess);
            bytes = to_json(&record);
        }
        if bytes.len() > budget && record.inputs.is_some() {
            record.inputs = None;
            bytes = to_json(&record);
        }
        if bytes.len() > budget && record.outputs.is_some() {
            record.outputs = None;
            record.outputs_truncated = true;
            bytes = to_json(&record);
        }
        if bytes.len() > budget && record.return_value.is_some() {
            record.return_value = None;
            record.return_value_truncated = true;
            bytes = to_json(&record);
        }
        if bytes.len() > budget {
            let excess = bytes.len() - budget;
            if let Some(error) = &mut record.error {
                shorten(&mut error.message, excess);
            }
            bytes = to_json(&record);
        }
        if bytes.len() > budget {
            for field in [
                &mut record.task.run_id,
                &mut record.task.dag_id,
                &mut record.task.task_id,
                &mut record.task.tenant,
            ]
            .into_iter()
            .flatten()
            {
                shorten(field, 256);
            }
            bytes = to_json(&record);
        }
        if bytes.len() > budget {
            record.durations_ms.retain(|phase, _| phase == "total");
            record.error = record.error.map(|e| ErrorInfo {
                message: String::new(),
                ..e
            });
            record.task = TaskIdentity::default();
            bytes = to_json(&record);
        }
        bytes
    }
}

fn to_json(record: &Record) -> Vec<u8> {
    // A struct of strings, numbers and JSON values cannot fail to serialize.
    serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec())
}

/// Removes lines from the front until about `excess` bytes of JSON are gone (each line
/// costs its escaped form plus a comma), at least one line.
fn drop_oldest_lines(lines: &mut Vec<String>, excess: usize) {
    let mut freed = 0;
    let mut count = 0;
    for line in lines.iter() {
        if freed >= excess && count > 0 {
            break;
        }
        freed += serde_json::to_string(line).map_or(line.len() * 6, |json| json.len()) + 1;
        count += 1;
    }
    lines.drain(..count);
}

/// Cuts `excess` bytes (plus room for the marker) off the end of `text`, on a char boundary.
fn shorten(text: &mut String, excess: usize) {
    const MARKER: &str = "…";
    let keep = text.len().saturating_sub(excess + MARKER.len() + 8);
    let mut cut = keep;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Record {
        let mut record =
            Record::provisional("2026-11-26T13:00:00.000Z".into(), TaskIdentity::default());
        record.status = Status::Succeeded;
        record.phase = "finished";
        record.exit_code = Some(0);
        record.child_exit_code = Some(0);
        record.finished_at = Some("2026-11-26T13:00:01.000Z".into());
        record.durations_ms.insert("total".into(), 1000);
        record
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("record is valid JSON")
    }

    #[test]
    fn a_small_record_is_kept_whole() {
        let mut record = finished();
        record.return_value = Some(serde_json::json!({"rows": 3}));
        record.log_tail = vec!["done".into()];
        let value = parse(&record.encode(RECORD_BUDGET));
        assert_eq!(value["return_value"]["rows"], 3);
        assert_eq!(value["log_tail"][0], "done");
        assert_eq!(value["return_value_truncated"], false);
    }

    fn artifact(i: usize) -> crate::artifacts::Artifact {
        crate::artifacts::Artifact {
            path: format!("/data/part-{i:04}.csv"),
            uri: format!(
                "https://acct.blob.core.windows.net/runs/d/r/t/-1/1/files/data/part-{i:04}.csv"
            ),
            kind: crate::artifacts::Kind::File,
            bytes: 1,
            files: 1,
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn many_outputs_give_way_to_the_manifest_before_the_return_value() {
        let mut record = finished();
        record.return_value = Some(serde_json::json!("keep me"));
        record.inputs = Some((0..3).map(artifact).collect());
        record.outputs = Some((0..40).map(artifact).collect());
        record.outputs_manifest = Some(crate::artifacts::ManifestRef {
            uri: "https://acct.blob.core.windows.net/runs/d/r/t/-1/1/_manifest.json".into(),
            sha256: "1".repeat(64),
            bytes: 9000,
        });
        let bytes = record.encode(RECORD_BUDGET);
        assert!(bytes.len() <= RECORD_BUDGET);
        let value = parse(&bytes);
        assert_eq!(value["outputs"], Value::Null);
        assert_eq!(value["inputs"], Value::Null);
        assert_eq!(value["outputs_truncated"], true);
        assert_eq!(value["outputs_manifest"]["bytes"], 9000);
        assert_eq!(value["return_value"], "keep me");

        let mut small = finished();
        small.outputs = Some((0..3).map(artifact).collect());
        let value = parse(&small.encode(RECORD_BUDGET));
        assert_eq!(value["outputs"].as_array().unwrap().len(), 3);
        assert_eq!(value["outputs_truncated"], false);
    }

    #[test]
    fn log_tail_goes_first_oldest_lines_first() {
        let mut record = finished();
        record.return_value = Some(serde_json::json!("keep me"));
        record.log_tail = (0..100)
            .map(|i| format!("line {i} {}", "x".repeat(60)))
            .collect();
        let bytes = record.encode(RECORD_BUDGET);
        assert!(bytes.len() <= RECORD_BUDGET);
        let value = parse(&bytes);
        assert_eq!(value["return_value"], "keep me");
        let tail = value["log_tail"].as_array().unwrap();
        assert!(!tail.is_empty());
        assert!(
            tail.last()
                .unwrap()
                .as_str()
                .unwrap()
                .starts_with("line 99 ")
        );
    }

    #[test]
    fn lines_full_of_escapes_are_dropped_by_their_json_size() {
        let mut record = finished();
        record.log_tail = (0..80)
            .map(|i| format!("\u{1b}[31mERROR\u{1b}[0m line {i} \"quoted\" \\path\\ \u{1}\u{2}"))
            .collect();
        let bytes = record.encode(RECORD_BUDGET);
        let value = parse(&bytes);
        let kept = value["log_tail"].as_array().unwrap().len();
        let one_line = serde_json::to_string(&record.log_tail[0]).unwrap().len() + 1;
        assert!(kept > 0 && kept < 80, "{kept}");
        assert!(
            bytes.len() + one_line > RECORD_BUDGET,
            "{kept} lines kept in {} bytes: one more would have fit",
            bytes.len()
        );
    }

    #[test]
    fn an_oversized_return_value_becomes_null_and_truncated() {
        let mut record = finished();
        record.return_value = Some(serde_json::json!({"blob": "y".repeat(10_000)}));
        record.log_tail = vec!["a".repeat(500)];
        let bytes = record.encode(RECORD_BUDGET);
        assert!(bytes.len() <= RECORD_BUDGET);
        let value = parse(&bytes);
        assert_eq!(value["return_value"], Value::Null);
        assert_eq!(value["return_value_truncated"], true);
        assert_eq!(value["status"], "succeeded");
    }

    #[test]
    fn even_absurd_records_fit_and_stay_valid() {
        let mut record = finished();
        record.error = Some(ErrorInfo {
            kind: "internal".into(),
            message: "é".repeat(5000),
        });
        record.task.run_id = Some("r".repeat(5000));
        record.task.dag_id = Some("d".repeat(5000));
        for budget in [RECORD_BUDGET, 1024, 700] {
            let bytes = record.encode(budget);
            assert!(bytes.len() <= budget, "{} > {budget}", bytes.len());
            let value = parse(&bytes);
            assert_eq!(value["status"], "succeeded");
            assert_eq!(value["exit_code"], 0);
        }
    }

    /// xorshift: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
        /// Text that is expensive to encode: escapes, control characters, multibyte.
        fn text(&mut self, max: u64) -> String {
            const PIECES: [&str; 9] = ["a", "\"", "\\", "\n", "\u{1}", "\u{1b}[31m", "é", "€", "𝄞"];
            let len = self.below(max + 1);
            (0..len)
                .map(|_| PIECES[self.below(PIECES.len() as u64)])
                .collect()
        }
    }

    #[test]
    fn random_hostile_records_always_fit_and_keep_their_outcome() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        for _ in 0..500 {
            let mut record = finished();
            record.exit_code = Some(rng.below(256) as i32);
            record.log_tail = (0..rng.below(40)).map(|_| rng.text(600)).collect();
            if rng.below(2) == 0 {
                record.return_value = Some(serde_json::json!({ "k": rng.text(3000) }));
            }
            if rng.below(2) == 0 {
                record.error = Some(ErrorInfo {
                    kind: "exit_code".into(),
                    message: rng.text(3000),
                });
            }
            record.task.dag_id = Some(rng.text(400));
            record.task.run_id = Some(rng.text(400));
            let bytes = record.encode(RECORD_BUDGET);
            assert!(bytes.len() <= RECORD_BUDGET, "{} bytes", bytes.len());
            let value = parse(&bytes);
            assert_eq!(value["status"], "succeeded");
            assert_eq!(value["exit_code"], record.exit_code.unwrap());
            let kept_tail = value["log_tail"].as_array().unwrap();
            let original_tail = &record.log_tail[record.log_tail.len() - kept_tail.len()..];
            assert_eq!(
                kept_tail
                    .iter()
                    .map(|l| l.as_str().unwrap())
                    .collect::<Vec<_>>(),
                original_tail.iter().map(String::as_str).collect::<Vec<_>>(),
                "the tail kept must be the newest lines, unchanged"
            );
        }
    }

    #[test]
    fn statuses_serialize_as_the_schema_names_them() {
        for status in [
            Status::Running,
            Status::Succeeded,
            Status::Failed,
            Status::TimedOut,
            Status::OomKilled,
            Status::Terminated,
            Status::AgentError,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::from(status.as_str())
            );
        }
    }
}
