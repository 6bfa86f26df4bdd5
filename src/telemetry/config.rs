//! Which signals the agent exports and how, decided from the standard OpenTelemetry
//! variables alone. Pure: the environment is read through a lookup function, so every rule
//! is tested without touching the process's own.
//!
//! A signal is exported when an OTLP endpoint is configured for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`), or when
//! `OTEL_<SIGNAL>_EXPORTER=otlp` asks for it explicitly (the exporter then uses the
//! standard `http://localhost:4318`). Nothing set means nothing exported: a developer
//! machine or a pod without a collector pays nothing.

use std::time::Duration;

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }
}

/// OTLP over HTTP, in either of its encodings; gRPC is not built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
    LowMemory,
}

/// The OTLP exporter's own default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often metrics go out while the task runs: often enough that a try killed outright
/// has reported most of its usage (the SDK's own default is a minute).
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub traces: Option<Protocol>,
    pub metrics: Option<Protocol>,
    pub logs: Option<Protocol>,
    pub temporality: Temporality,
    /// Bound on one HTTP request to the collector (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub request_timeout: Duration,
    /// Between two periodic metric exports (`OTEL_METRIC_EXPORT_INTERVAL`, milliseconds).
    pub metric_interval: Duration,
    /// The values of the `OTEL_EXPORTER_OTLP_*HEADERS` variables. They usually carry an
    /// API key or a bearer token, so they join the masker like any credential.
    pub header_values: Vec<String>,
    /// Settings that were ignored, each to be logged once.
    pub problems: Vec<String>,
}

impl Config {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Config {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let mut config = Config {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            metric_interval: DEFAULT_METRIC_INTERVAL,
            header_values: header_values(&var),
            ..Config::default()
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return config;
        }
        for signal in Signal::ALL {
            let protocol = if wanted(signal, &var, &mut config.problems) {
                protocol(signal, &var, &mut config.problems)
            } else {
                None
            };
            match signal {
                Signal::Traces => config.traces = protocol,
                Signal::Metrics => config.metrics = protocol,
                Signal::Logs => config.logs = protocol,
            }
        }
        if config.is_off() {
            return config;
        }
        if let Some(text) = var("OTEL_EXPORTER_OTLP_TIMEOUT") {
            match text.trim().parse::<u64>() {
                Ok(millis) => config.request_timeout = Duration::from_millis(millis),
                Err(_) => note(
                    &mut config.problems,
                    format!(
                        "OTEL_EXPORTER_OTLP_TIMEOUT={text} is not a number of milliseconds; using 10000"
                    ),
                ),
            }
        }
        if let Some(text) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            match text.trim().parse::<u64>() {
                Ok(millis) if millis > 0 => config.metric_interval = Duration::from_millis(millis),
                _ => note(
                    &mut config.problems,
                    format!(
                        "OTEL_METRIC_EXPORT_INTERVAL={text} is not a positive number of milliseconds; using 10000"
                    ),
                ),
            }
        }
        if let Some(text) = var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            config.temporality = match text.trim().to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                "lowmemory" => Temporality::LowMemory,
                _ => {
                    note(
                        &mut config.problems,
                        format!(
                            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={text} is not cumulative, delta or lowmemory; using cumulative"
                        ),
                    );
                    Temporality::Cumulative
                }
            };
        }
        config
    }

    pub fn protocol(&self, signal: Signal) -> Option<Protocol> {
        match signal {
            Signal::Traces => self.traces,
            Signal::Metrics => self.metrics,
            Signal::Logs => self.logs,
        }
    }

    pub fn is_off(&self) -> bool {
        Signal::ALL.iter().all(|s| self.protocol(*s).is_none())
    }
}

/// Whether `signal` is to be exported: `OTEL_<SIGNAL>_EXPORTER` decides when set (`none`
/// wins, then `otlp`; other exporters are not built in), else an endpoint being configured.
fn wanted(
    signal: Signal,
    var: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> bool {
    let name = format!("OTEL_{}_EXPORTER", signal.upper());
    let Some(list) = var(&name) else {
        return var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.upper())).is_some();
    };
    let exporters: Vec<String> = list
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    if exporters.iter().any(|e| e == "none") {
        return false;
    }
    for other in exporters.iter().filter(|e| *e != "otlp") {
        note(
            problems,
            format!("{name}={other} is not supported; task-agent exports otlp only"),
        );
    }
    exporters.iter().any(|e| e == "otlp")
}

fn protocol(
    signal: Signal,
    var: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Protocol> {
    let specific = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.upper());
    let (name, value) = match var(&specific) {
        Some(value) => (specific, value),
        None => match var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), value),
            None => return Some(Protocol::Protobuf),
        },
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "http/protobuf" => Some(Protocol::Protobuf),
        "http/json" => Some(Protocol::Json),
        "grpc" => {
            note(
                problems,
                format!(
                    "{name}=grpc is not supported (task-agent speaks OTLP over HTTP: http/protobuf or http/json); {} not exported",
                    signal.name()
                ),
            );
            None
        }
        _ => {
            note(
                problems,
                format!("{name}={value} is not http/protobuf or http/json; using http/protobuf"),
            );
            Some(Protocol::Protobuf)
        }
    }
}

/// The values of `key=value,key=value` header lists, raw and percent-decoded.
fn header_values(var: &impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut values = Vec::new();
    let names = std::iter::once("OTEL_EXPORTER_OTLP_HEADERS".to_string()).chain(
        Signal::ALL
            .iter()
            .map(|s| format!("OTEL_EXPORTER_OTLP_{}_HEADERS", s.upper())),
    );
    for name in names {
        let Some(list) = var(&name) else { continue };
        for (_, value) in list.split(',').filter_map(|pair| pair.split_once('=')) {
            let raw = value.trim().to_string();
            let decoded = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
            for value in [raw, decoded] {
                if !value.is_empty() && !values.contains(&value) {
                    values.push(value);
                }
            }
        }
    }
    values
}

fn note(problems: &mut Vec<String>, problem: String) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        let config = from(&[
            ("OTEL_SERVICE_NAME", "x"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
        ]);
        assert!(config.is_off());
        assert!(config.problems.is_empty());
    }

    #[test]
    fn the_general_endpoint_turns_every_signal_on_in_protobuf() {
        let config = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        for signal in Signal::ALL {
            assert_eq!(
                config.protocol(signal),
                Some(Protocol::Protobuf),
                "{signal:?}"
            );
        }
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.temporality, Temporality::Cumulative);
    }

    #[test]
    fn a_signal_endpoint_turns_only_that_signal_on() {
        let config = from(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4318/v1/logs")]);
        assert_eq!(config.logs, Some(Protocol::Protobuf));
        assert_eq!(config.traces, None);
        assert_eq!(config.metrics, None);
    }

    #[test]
    fn sdk_disabled_wins_over_everything() {
        for value in ["true", "TRUE", " True "] {
            let config = from(&[
                ("OTEL_SDK_DISABLED", value),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ]);
            assert!(config.is_off(), "{value}");
        }
        let config = from(&[
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ]);
        assert!(!config.is_off());
    }

    #[test]
    fn exporter_none_turns_a_signal_off_and_otlp_turns_it_on() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRICS_EXPORTER", "otlp,none"),
        ]);
        assert_eq!(config.traces, None);
        assert_eq!(config.metrics, None);
        assert_eq!(config.logs, Some(Protocol::Protobuf));

        let config = from(&[("OTEL_LOGS_EXPORTER", "OTLP")]);
        assert_eq!(config.logs, Some(Protocol::Protobuf));
        assert_eq!(config.traces, None);
    }

    #[test]
    fn other_exporters_are_named_once_and_ignored() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_LOGS_EXPORTER", "console,otlp"),
        ]);
        assert_eq!(config.traces, None);
        assert_eq!(config.logs, Some(Protocol::Protobuf));
        assert_eq!(config.problems.len(), 2, "{:?}", config.problems);
        assert!(config.problems[0].contains("OTEL_TRACES_EXPORTER=zipkin"));
        assert!(config.problems[1].contains("OTEL_LOGS_EXPORTER=console"));
    }

    #[test]
    fn json_on_request_and_the_signal_protocol_wins() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(config.traces, Some(Protocol::Json));
        assert_eq!(config.logs, Some(Protocol::Json));
        assert_eq!(config.metrics, Some(Protocol::Protobuf));
    }

    #[test]
    fn grpc_is_refused_once_and_unknown_protocols_fall_back_to_protobuf() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(config.is_off());
        assert_eq!(config.problems.len(), 3, "{:?}", config.problems);
        assert!(config.problems[0].contains("grpc is not supported"));

        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
        ]);
        assert_eq!(config.traces, Some(Protocol::Protobuf));
        assert_eq!(config.problems.len(), 1);
    }

    #[test]
    fn timeout_and_temporality_are_read_and_bad_values_named() {
        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
        ]);
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.temporality, Temporality::Delta);

        let config = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2s"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
        ]);
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.temporality, Temporality::Cumulative);
        assert_eq!(config.problems.len(), 2, "{:?}", config.problems);
    }

    #[test]
    fn header_values_are_collected_raw_and_decoded() {
        let config = from(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20tok3n-abc, x-a=b=c",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "api-key=k3y-value"),
        ]);
        assert_eq!(
            config.header_values,
            vec!["Bearer%20tok3n-abc", "Bearer tok3n-abc", "b=c", "k3y-value"]
        );
    }
}
