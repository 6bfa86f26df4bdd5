//! The exporting side, built only for the signals configured: one blocking HTTP client
//! shared by the OTLP exporters (no gRPC stack, no async runtime of ours), the SDK's batch
//! processors and periodic reader on their own threads, and a shutdown that never waits
//! past its deadline.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{
    LogExporter, MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::config::{Config, Protocol, Signal, Temporality};
use super::watch::{Failures, Watched};

#[derive(Debug, Default)]
pub struct Pipeline {
    pub traces: Option<SdkTracerProvider>,
    pub metrics: Option<SdkMeterProvider>,
    pub logs: Option<SdkLoggerProvider>,
    /// Export failures per signal, in [`Signal::ALL`] order.
    failures: [Failures; 3],
}

impl Pipeline {
    /// The providers `config` asks for. What cannot be built is left out and named in the
    /// problems returned; telemetry never stops a task.
    pub fn build(config: &Config, resource: &Resource) -> (Pipeline, Vec<String>) {
        let mut pipeline = Pipeline::default();
        let mut problems = Vec::new();
        let client = match http_client(config.request_timeout) {
            Ok(client) => client,
            Err(problem) => return (pipeline, vec![problem]),
        };
        if let Some(protocol) = config.traces {
            match SpanExporter::builder()
                .with_http()
                .with_protocol(otlp_protocol(protocol))
                .with_http_client(client.clone())
                .build()
            {
                Ok(exporter) => {
                    let exporter = Watched::new(exporter, pipeline.failures(Signal::Traces));
                    pipeline.traces = Some(
                        SdkTracerProvider::builder()
                            .with_batch_exporter(exporter)
                            .with_resource(resource.clone())
                            .build(),
                    )
                }
                Err(e) => problems.push(failed(Signal::Traces, &e)),
            }
        }
        if let Some(protocol) = config.metrics {
            match MetricExporter::builder()
                .with_http()
                .with_protocol(otlp_protocol(protocol))
                .with_http_client(client.clone())
                .with_temporality(sdk_temporality(config.temporality))
                .build()
            {
                Ok(exporter) => {
                    let exporter = Watched::new(exporter, pipeline.failures(Signal::Metrics));
                    // Usage is exported while the task runs, so a try killed outright has
                    // still reported most of it; 10 s unless OTEL_METRIC_EXPORT_INTERVAL says.
                    let reader = PeriodicReader::builder(exporter)
                        .with_interval(config.metric_interval)
                        .build();
                    pipeline.metrics = Some(
                        SdkMeterProvider::builder()
                            .with_reader(reader)
                            .with_resource(resource.clone())
                            .build(),
                    )
                }
                Err(e) => problems.push(failed(Signal::Metrics, &e)),
            }
        }
        if let Some(protocol) = config.logs {
            match LogExporter::builder()
                .with_http()
                .with_protocol(otlp_protocol(protocol))
                .with_http_client(client)
                .build()
            {
                Ok(exporter) => {
                    let exporter = Watched::new(exporter, pipeline.failures(Signal::Logs));
                    pipeline.logs = Some(
                        SdkLoggerProvider::builder()
                            .with_batch_exporter(exporter)
                            .with_resource(resource.clone())
                            .build(),
                    )
                }
                Err(e) => problems.push(failed(Signal::Logs, &e)),
            }
        }
        (pipeline, problems)
    }

    fn failures(&self, signal: Signal) -> Failures {
        self.failures[index(signal)].clone()
    }

    /// Flushes and stops every provider at once, each on a thread of its own, and waits for
    /// them `timeout` at most: a collector that is down, slow or refusing costs the task that
    /// long and no more. Returns what was not delivered, one entry per signal.
    pub fn shutdown(self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel::<(Signal, OTelSdkResult)>();
        let mut pending = Vec::new();
        let mut problems = Vec::new();
        let mut stop = |signal: Signal, shutdown: Box<dyn FnOnce() -> OTelSdkResult + Send>| {
            let done_tx = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("flush-{}", signal.name()))
                .spawn(move || {
                    let _ = done_tx.send((signal, shutdown()));
                });
            match spawned {
                Ok(_) => pending.push(signal),
                Err(e) => problems.push(format!(
                    "{}: cannot start a flush thread: {e}",
                    signal.name()
                )),
            }
        };
        if let Some(provider) = self.traces {
            stop(
                Signal::Traces,
                Box::new(move || provider.shutdown_with_timeout(timeout)),
            );
        }
        if let Some(provider) = self.metrics {
            stop(
                Signal::Metrics,
                Box::new(move || provider.shutdown_with_timeout(timeout)),
            );
        }
        if let Some(provider) = self.logs {
            stop(
                Signal::Logs,
                Box::new(move || provider.shutdown_with_timeout(timeout)),
            );
        }
        drop(done_tx);
        let mut finished = Vec::new();
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok((signal, result)) => {
                    pending.retain(|s| *s != signal);
                    finished.push((signal, result));
                }
                Err(_) => break,
            }
        }
        // Why an export failed says more than that the shutdown did.
        for (signal, result) in finished {
            match (self.failures[index(signal)].summary(), result) {
                (Some(failed), _) => problems.push(format!("{}: {failed}", signal.name())),
                (None, Err(e)) => problems.push(format!("{}: {e}", signal.name())),
                (None, Ok(())) => {}
            }
        }
        for signal in pending {
            let failed = self.failures[index(signal)]
                .summary()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            problems.push(format!(
                "{}: not delivered within {}{failed}",
                signal.name(),
                humantime::format_duration(timeout)
            ));
        }
        problems
    }
}

fn index(signal: Signal) -> usize {
    Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0)
}

fn failed(signal: Signal, error: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "cannot export {}: {}",
        signal.name(),
        crate::azure::describe(error)
    )
}

/// One blocking client for all exporters: one connection pool and one internal runtime
/// thread instead of one per signal.
fn http_client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    crate::azure::with_trusted_roots(|roots| {
        let builder = reqwest::blocking::Client::builder().timeout(timeout);
        match roots {
            Some(roots) => builder.tls_certs_only(roots),
            None => builder,
        }
        .build()
    })
    .map_err(|e| format!("cannot set up the OTLP HTTP client: {e}"))
}

fn otlp_protocol(protocol: Protocol) -> opentelemetry_otlp::Protocol {
    match protocol {
        Protocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
        Protocol::Json => opentelemetry_otlp::Protocol::HttpJson,
    }
}

fn sdk_temporality(temporality: Temporality) -> opentelemetry_sdk::metrics::Temporality {
    match temporality {
        Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
        Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
        Temporality::LowMemory => opentelemetry_sdk::metrics::Temporality::LowMemory,
    }
}
