//! The agent's own log lines (start, phases, signals, finish): tracing events written to
//! stderr in the same format as the child's forwarded output, masked like it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::mask::MaskHandle;
use crate::supervise::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

pub struct AgentLog {
    format: LogFormat,
    identity_members: Arc<str>,
    masks: MaskHandle,
    level: LevelFilter,
}

impl AgentLog {
    pub fn new(
        format: LogFormat,
        level: LogLevel,
        identity_members: Arc<str>,
        masks: MaskHandle,
    ) -> Self {
        AgentLog {
            format,
            identity_members,
            masks,
            level: level.filter(),
        }
    }

    /// Makes this the process's logger. A second call (tests) leaves the first in place.
    pub fn install(self) {
        let subscriber = tracing_subscriber::registry().with(self);
        let _ = tracing::subscriber::set_global_default(subscriber);
    }

    /// Formats one event as a line, `\n` included.
    pub fn format_line(&self, level: &tracing::Level, fields: Fields) -> String {
        match self.format {
            LogFormat::Text => {
                let mut line = format!("[task-agent] {level:<5} {}", fields.message);
                for (name, value) in &fields.rest {
                    match value {
                        Value::String(text) => {
                            let _ = write!(line, " {name}={text}");
                        }
                        other => {
                            let _ = write!(line, " {name}={other}");
                        }
                    }
                }
                line.push('\n');
                line
            }
            LogFormat::Json => {
                let mut object = Map::new();
                object.insert(
                    "timestamp".into(),
                    humantime::format_rfc3339_micros(SystemTime::now())
                        .to_string()
                        .into(),
                );
                object.insert("stream".into(), "agent".into());
                object.insert("level".into(), level.as_str().to_ascii_lowercase().into());
                object.insert("message".into(), fields.message.into());
                for (name, value) in fields.rest {
                    object.insert(name, value);
                }
                let mut line = Value::Object(object).to_string();
                line.pop();
                line.push_str(&self.identity_members);
                line.push_str("}\n");
                line
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for AgentLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // Only the agent's own events: HTTP and SDK internals stay out of the task log.
        metadata.level() <= &self.level && metadata.target().starts_with("task_agent")
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = self.format_line(event.metadata().level(), fields);
        let masker = self.masks.current();
        let line = masker.mask_str(&line);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[derive(Debug, Default)]
pub struct Fields {
    pub message: String,
    pub rest: Vec<(String, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest
                .push((field.name().to_string(), Value::String(text)));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name().to_string(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.push((field.name().to_string(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.push((field.name().to_string(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name().to_string(), value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            message: "command started".into(),
            rest: vec![
                ("pid".into(), 42.into()),
                ("exit".into(), "signal SIGTERM".into()),
            ],
        }
    }

    #[test]
    fn text_lines_are_prefixed_and_readable() {
        let log = AgentLog::new(
            LogFormat::Text,
            LogLevel::Info,
            Arc::from(""),
            MaskHandle::default(),
        );
        let line = log.format_line(&tracing::Level::INFO, fields());
        assert_eq!(
            line,
            "[task-agent] INFO  command started pid=42 exit=signal SIGTERM\n"
        );
    }

    #[test]
    fn json_lines_carry_stream_level_and_identity() {
        let log = AgentLog::new(
            LogFormat::Json,
            LogLevel::Info,
            Arc::from(",\"dag_id\":\"d1\""),
            MaskHandle::default(),
        );
        let line = log.format_line(&tracing::Level::WARN, fields());
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["stream"], "agent");
        assert_eq!(value["level"], "warn");
        assert_eq!(value["message"], "command started");
        assert_eq!(value["pid"], 42);
        assert_eq!(value["dag_id"], "d1");
    }
}
