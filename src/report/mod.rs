//! The result record and its delivery: built in memory as the task goes, written
//! provisionally while the child runs, and finally once with the outcome.

mod record;
mod result_file;
pub mod return_value;

use std::time::SystemTime;

pub use record::{ErrorInfo, RECORD_BUDGET, Record, Resources, ReturnValueRef, Status};
pub use result_file::ResultFile;

use crate::error::AgentError;
use crate::identity::TaskIdentity;
use crate::mask::MaskHandle;
pub use return_value::ReturnValue;

pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// How the task ended, as the record states it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: i32,
    pub child_exit_code: Option<i32>,
    pub signal: Option<String>,
    pub retryable: bool,
    pub error: Option<ErrorInfo>,
}

impl Outcome {
    pub fn from_error(error: &AgentError) -> Outcome {
        let disposition = error.disposition();
        Outcome {
            status: disposition.status,
            exit_code: disposition.exit_code,
            child_exit_code: None,
            signal: None,
            retryable: disposition.retryable,
            error: Some(ErrorInfo {
                kind: disposition.kind.to_string(),
                message: error.to_string(),
            }),
        }
    }
}

pub struct Reporter {
    record: Record,
    file: Option<ResultFile>,
    masks: MaskHandle,
}

impl Reporter {
    pub fn new(file: Option<ResultFile>, task: TaskIdentity, masks: MaskHandle) -> Reporter {
        Reporter {
            record: Record::provisional(timestamp(SystemTime::now()), task),
            file,
            masks,
        }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn set_phase(&mut self, phase: &'static str) {
        self.record.phase = phase;
    }

    pub fn set_duration(&mut self, phase: &str, millis: u64) {
        self.record.durations_ms.insert(phase.to_string(), millis);
    }

    pub fn resources_mut(&mut self) -> &mut Resources {
        &mut self.record.resources
    }

    pub fn set_secrets(&mut self, report: crate::secrets::Report) {
        self.record.secrets = Some(report);
    }

    pub fn set_snapshot(&mut self, report: crate::snapshot::Report) {
        self.record.snapshot = Some(report);
    }

    /// A return value too large for the record, uploaded: the record points at it.
    pub fn set_return_value_ref(&mut self, reference: ReturnValueRef) {
        self.record.return_value_ref = Some(reference);
        self.record.return_value_truncated = true;
    }

    pub fn set_usage(&mut self, usage: crate::usage::Usage) {
        self.record.usage = Some(usage);
    }

    pub fn set_inputs(&mut self, inputs: Vec<crate::artifacts::Artifact>) {
        self.record.inputs = Some(inputs);
    }

    pub fn set_outputs(&mut self, published: crate::artifacts::outputs::Published) {
        self.record.outputs = Some(published.outputs);
        self.record.outputs_manifest = Some(published.manifest);
    }

    pub fn set_trace_id(&mut self, trace_id: Option<String>) {
        self.record.trace_id = trace_id;
    }

    pub fn set_log_tail(&mut self, lines: Vec<String>) {
        self.record.log_tail = lines;
    }

    pub fn set_return_value(&mut self, value: ReturnValue) {
        match value {
            ReturnValue::Absent => {}
            ReturnValue::Inline(value) => self.record.return_value = Some(value),
            ReturnValue::TooLarge { .. } => self.record.return_value_truncated = true,
        }
    }

    /// Rewrites the provisional (`running`) record; a failure is logged, never fatal, since
    /// the task itself is still fine.
    pub fn write_provisional(&mut self) {
        let bytes = self.encoded();
        if let Some(file) = &mut self.file
            && let Err(e) = file.update(&bytes)
        {
            tracing::warn!(path = %file.path().display(), error = %e, "cannot update the provisional result record");
        }
    }

    /// Writes the final record and returns it as written.
    pub fn finish(&mut self, outcome: Outcome) -> Vec<u8> {
        let record = &mut self.record;
        record.status = outcome.status;
        record.exit_code = Some(outcome.exit_code);
        record.child_exit_code = outcome.child_exit_code;
        record.signal = outcome.signal;
        record.retryable = outcome.retryable;
        record.error = outcome.error;
        record.finished_at = Some(timestamp(SystemTime::now()));
        let bytes = self.encoded();
        if let Some(file) = &mut self.file
            && let Err(e) = file.finish(&bytes)
        {
            tracing::error!(path = %file.path().display(), error = %e, "cannot write the result record");
        }
        bytes
    }

    /// The record, masked and fitted into the budget: every string that can carry text from
    /// the command (the tail, the error, the return value) is masked before encoding, so a
    /// secret never reaches Airflow's metadata database either.
    fn encoded(&self) -> Vec<u8> {
        let mut record = self.record.clone();
        let masker = self.masks.current();
        if !masker.is_empty() {
            for line in &mut record.log_tail {
                *line = masker.mask_str(line).into_owned();
            }
            if let Some(error) = &mut record.error {
                error.message = masker.mask_str(&error.message).into_owned();
            }
            if let Some(value) = &mut record.return_value {
                mask_json(value, &masker);
            }
        }
        record.encode(RECORD_BUDGET)
    }
}

/// Masks every string in a JSON value, object keys included.
fn mask_json(value: &mut serde_json::Value, masker: &crate::mask::Masker) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(masked) = masker.mask_str(text) {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask_json(item, masker)),
        Value::Object(members) => {
            let taken = std::mem::take(members);
            for (key, mut member) in taken {
                mask_json(&mut member, masker);
                members.insert(masker.mask_str(&key).into_owned(), member);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Masker;

    #[test]
    fn a_secret_in_the_return_value_is_masked_in_strings_and_keys() {
        let masks = MaskHandle::default();
        masks.set(Masker::new(["s3cr3t-value"]).unwrap());
        let mut reporter = Reporter::new(None, TaskIdentity::default(), masks);
        reporter.set_return_value(ReturnValue::Inline(serde_json::json!({
            "token": "Bearer s3cr3t-value", "s3cr3t-value": [1, "s3cr3t-value"], "n": 3
        })));
        let text =
            String::from_utf8(reporter.finish(Outcome::from_error(&AgentError::Usage("x".into()))))
                .unwrap();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(text.contains(r#""token":"Bearer ***""#), "{text}");
        assert!(text.contains(r#""***":[1,"***"]"#), "{text}");
    }

    #[test]
    fn secrets_are_masked_in_the_tail_and_the_error() {
        let masks = MaskHandle::default();
        masks.set(Masker::new(["pa55word!"]).unwrap());
        let mut reporter = Reporter::new(None, TaskIdentity::default(), masks);
        reporter.set_log_tail(vec!["login with pa55word!".into()]);
        let bytes = reporter.finish(Outcome {
            status: Status::Failed,
            exit_code: 1,
            child_exit_code: Some(1),
            signal: None,
            retryable: false,
            error: Some(ErrorInfo {
                kind: "x".into(),
                message: "bad pa55word!".into(),
            }),
        });
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("pa55word!"), "{text}");
        assert!(text.contains("login with ***"));
    }

    #[test]
    fn an_agent_error_becomes_its_disposition() {
        let outcome = Outcome::from_error(&AgentError::Usage("bad flag".into()));
        assert_eq!(outcome.status, Status::AgentError);
        assert_eq!(outcome.exit_code, 64);
        assert_eq!(outcome.error.unwrap().kind, "usage");
    }
}
