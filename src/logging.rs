//! The agent's own log lines (start, phases, signals, finish): tracing events written to
//! stderr in the same format as the child's forwarded output, masked like it; and a panic
//! hook that prints a panic's message masked too.

use std::any::Any;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::Location;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layered, SubscriberExt};

use crate::mask::{MaskHandle, Masker};
use crate::supervise::LogFormat;

/// The target prefix of the agent's own events; everything else (the HTTP client, the SDKs)
/// stays out of the task log and out of telemetry.
pub const AGENT_TARGET: &str = "task_agent";

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

    /// As [`AgentLog::install`], with `also` seeing the same events (those this log
    /// enables), such as telemetry's log records.
    pub fn install_with<L>(self, also: L)
    where
        L: Layer<Layered<AgentLog, Registry>> + Send + Sync + 'static,
    {
        let subscriber = tracing_subscriber::registry().with(self).with(also);
        let _ = tracing::subscriber::set_global_default(subscriber);
    }

    /// Formats one event as a masked line, `\n` included. The message and the values are
    /// masked before they are formatted, since JSON escaping would hide a secret holding
    /// `"`, `\` or a control character from the masking of the finished line; the finished
    /// line is masked too, for whatever else it holds.
    pub fn masked_line(
        &self,
        level: &tracing::Level,
        mut fields: Fields,
        masker: &Masker,
    ) -> String {
        if masker.is_empty() {
            return self.format_line(level, fields);
        }
        fields.mask(masker);
        let line = self.format_line(level, fields);
        match masker.mask_str(&line) {
            Cow::Borrowed(_) => line,
            Cow::Owned(masked) => masked,
        }
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
        metadata.level() <= &self.level && metadata.target().starts_with(AGENT_TARGET)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = self.masked_line(event.metadata().level(), fields, &self.masks.current());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[derive(Debug, Default)]
pub struct Fields {
    pub message: String,
    pub rest: Vec<(String, Value)>,
}

impl Fields {
    /// Masks the message and every text value.
    pub fn mask(&mut self, masker: &Masker) {
        if let Cow::Owned(masked) = masker.mask_str(&self.message) {
            self.message = masked;
        }
        for (_, value) in &mut self.rest {
            if let Value::String(text) = value
                && let Cow::Owned(masked) = masker.mask_str(text)
            {
                *text = masked;
            }
        }
    }
}

/// Replaces the default panic hook, which would print a panic's message as it is, by one
/// that prints `[task-agent] PANIC <message> at <file:line:col>` to stderr, masked with the
/// masker current at the time of the panic.
pub fn install_masking_panic_hook(masks: MaskHandle) {
    std::panic::set_hook(Box::new(move |info| {
        let line = panic_line(
            &masks.current(),
            panic_text(info.payload()),
            info.location(),
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }));
}

/// The line the panic hook prints, `\n` included.
pub fn panic_line(masker: &Masker, message: &str, location: Option<&Location<'_>>) -> String {
    let mut line = format!("[task-agent] PANIC {message}");
    if let Some(location) = location {
        let _ = write!(line, " at {location}");
    }
    line.push('\n');
    match masker.mask_str(&line) {
        Cow::Borrowed(_) => line,
        Cow::Owned(masked) => masked,
    }
}

/// A panic's message: `panic!` makes it a `&str` or a `String`.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "Box<dyn Any>"
    }
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

    #[test]
    fn messages_and_values_are_masked_before_json_escaping() {
        let masker = Masker::new(["pa\"ss\\word", "hunter22"]).unwrap();
        let fields = || Fields {
            message: "login with pa\"ss\\word failed".into(),
            rest: vec![
                ("error".into(), "bad pa\"ss\\word".into()),
                ("user".into(), "hunter22".into()),
                ("pid".into(), 42.into()),
            ],
        };
        for format in [LogFormat::Json, LogFormat::Text] {
            let log = AgentLog::new(format, LogLevel::Info, Arc::from(""), MaskHandle::default());
            let line = log.masked_line(&tracing::Level::INFO, fields(), &masker);
            assert!(!line.contains("ss\\"), "{line}");
            assert!(!line.contains("hunter22"), "{line}");
            if format == LogFormat::Json {
                let value: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(value["message"], "login with *** failed");
                assert_eq!(value["error"], "bad ***");
                assert_eq!(value["user"], "***");
                assert_eq!(value["pid"], 42);
            } else {
                assert_eq!(
                    line,
                    "[task-agent] INFO  login with *** failed error=bad *** user=*** pid=42\n"
                );
            }
        }
    }

    #[test]
    fn a_secret_anywhere_in_the_finished_line_is_masked() {
        let masker = Masker::new(["started pid"]).unwrap();
        let log = AgentLog::new(
            LogFormat::Text,
            LogLevel::Info,
            Arc::from(""),
            MaskHandle::default(),
        );
        let line = log.masked_line(&tracing::Level::INFO, fields(), &masker);
        assert_eq!(
            line,
            "[task-agent] INFO  command ***=42 exit=signal SIGTERM\n"
        );
    }

    #[test]
    fn a_panic_is_one_masked_line_with_its_location() {
        let masker = Masker::new(["s3cr3t-value", "line-one\nline-two"]).unwrap();
        let location = Location::caller();
        let line = panic_line(
            &masker,
            "cannot parse s3cr3t-value: line-one\nline-two",
            Some(location),
        );
        assert_eq!(
            line,
            format!(
                "[task-agent] PANIC cannot parse ***: *** at {}:{}:{}\n",
                location.file(),
                location.line(),
                location.column()
            )
        );
        assert_eq!(
            panic_line(&Masker::default(), "boom", None),
            "[task-agent] PANIC boom\n"
        );
    }

    #[test]
    fn a_panic_message_is_read_from_either_payload() {
        let text: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_text(text.as_ref()), "static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("formatted 42"));
        assert_eq!(panic_text(owned.as_ref()), "formatted 42");
        let other: Box<dyn Any + Send> = Box::new(42);
        assert_eq!(panic_text(other.as_ref()), "Box<dyn Any>");
    }
}
