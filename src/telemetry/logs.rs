//! Log records: each line the command writes, as it was forwarded (masked), and the agent's
//! own events, masked the same way, each with the trace and span it belongs to.

use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::SpanContext;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};
use serde_json::Value;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::trace::CurrentSpan;
use crate::logging::{AGENT_TARGET, Fields};
use crate::mask::MaskHandle;
use crate::supervise::{LineSink, Stream};

/// Turns the agent's own events into log records. Only the agent's: the HTTP client and
/// the OpenTelemetry SDK log through `tracing` too, and exporting their events would be
/// noise at best and a feedback loop at worst.
#[derive(Debug)]
pub struct AgentEvents {
    logger: SdkLogger,
    masks: MaskHandle,
    current: CurrentSpan,
}

impl AgentEvents {
    pub fn new(logger: SdkLogger, masks: MaskHandle, current: CurrentSpan) -> AgentEvents {
        AgentEvents {
            logger,
            masks,
            current,
        }
    }
}

impl<S: Subscriber> Layer<S> for AgentEvents {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        if !metadata.target().starts_with(AGENT_TARGET) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let masker = self.masks.current();
        if !masker.is_empty() {
            fields.mask(&masker);
        }
        let mut record = self.logger.create_log_record();
        // The event's module becomes the record's instrumentation scope.
        record.set_target(metadata.target());
        record.set_timestamp(SystemTime::now());
        record.set_severity_number(severity(metadata.level()));
        record.set_severity_text(metadata.level().as_str());
        record.set_body(AnyValue::from(fields.message));
        for (name, value) in fields.rest {
            record.add_attribute(name, any_value(value));
        }
        emit(&self.logger, record, self.current.get());
    }
}

/// The command's output as log records, stamped with the process span.
#[derive(Debug)]
pub struct ChildLines {
    logger: SdkLogger,
    span: Option<SpanContext>,
}

impl ChildLines {
    pub fn new(logger: SdkLogger, span: Option<SpanContext>) -> ChildLines {
        ChildLines { logger, span }
    }
}

impl LineSink for ChildLines {
    fn line(&self, stream: Stream, line: &[u8], continues: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut record = self.logger.create_log_record();
        record.set_timestamp(SystemTime::now());
        record.set_body(AnyValue::from(String::from_utf8_lossy(line).into_owned()));
        record.add_attribute("log.iostream", stream.name());
        if continues {
            record.add_attribute("task_agent.log.partial", true);
        }
        emit(&self.logger, record, self.span.clone());
    }
}

fn emit(logger: &SdkLogger, mut record: SdkLogRecord, span: Option<SpanContext>) {
    if let Some(span) = span.filter(SpanContext::is_valid) {
        record.set_trace_context(span.trace_id(), span.span_id(), Some(span.trace_flags()));
    }
    logger.emit(record);
}

fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warn,
        Level::INFO => Severity::Info,
        Level::DEBUG => Severity::Debug,
        Level::TRACE => Severity::Trace,
    }
}

fn any_value(value: Value) -> AnyValue {
    match value {
        Value::String(text) => AnyValue::from(text),
        Value::Bool(flag) => AnyValue::Boolean(flag),
        Value::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => AnyValue::Int(integer),
            (None, Some(float)) => AnyValue::Double(float),
            (None, None) => AnyValue::from(number.to_string()),
        },
        other => AnyValue::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_values_keep_their_types() {
        assert_eq!(any_value(Value::from("text")), AnyValue::from("text"));
        assert_eq!(any_value(Value::from(42)), AnyValue::Int(42));
        assert_eq!(
            any_value(Value::from(u64::MAX)),
            AnyValue::Double(u64::MAX as f64)
        );
        assert_eq!(any_value(Value::from(true)), AnyValue::Boolean(true));
        assert_eq!(any_value(Value::Null), AnyValue::from("null"));
    }

    #[test]
    fn levels_map_to_their_severities() {
        assert_eq!(severity(&Level::WARN), Severity::Warn);
        assert_eq!(severity(&Level::TRACE), Severity::Trace);
    }
}
