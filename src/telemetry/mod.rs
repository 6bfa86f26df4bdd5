//! OpenTelemetry traces, metrics and logs of the task, exported over OTLP/HTTP and joined
//! to Airflow's trace: the structured second channel beside the pod's stdout.
//!
//! Configured by the standard `OTEL_*` variables only ([`config`]). With none set, nothing
//! is built: no exporter, no thread, and every hook below is a no-op. Everything exported is
//! masked like the rest of the agent's output, and the final flush never outlasts
//! `--telemetry-timeout` ([`pipeline`]).

pub mod config;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod resource;
pub mod trace;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLogger;

pub use config::Config;
use logs::{AgentEvents, ChildLines};
use pipeline::Pipeline;
pub use trace::PhaseSpan;
use trace::{CurrentSpan, Tracing};

use crate::identity::TaskIdentity;
use crate::mask::MaskHandle;
use crate::report::Record;
use crate::supervise::LineSink;

/// The instrumentation scope of everything the agent exports.
const SCOPE: &str = "task-agent";

/// The task's telemetry: off, or the exporters the environment asks for.
#[derive(Debug, Default)]
pub struct Telemetry {
    pipeline: Option<Pipeline>,
    tracing: Option<Tracing>,
    logger: Option<SdkLogger>,
    meter: Option<Meter>,
    current: CurrentSpan,
    masks: MaskHandle,
    point_attributes: Vec<KeyValue>,
    usage: metrics::UsageFeed,
}

impl Telemetry {
    /// Sets up what `config` asks for, reading the resource's downward-API variables and the
    /// trace carriers from the process environment. Returns the problems met (settings
    /// ignored, exporters that could not be built), for the caller to log once the agent's
    /// log is installed.
    pub fn start(
        config: &Config,
        identity: &TaskIdentity,
        masks: MaskHandle,
    ) -> (Telemetry, Vec<String>) {
        let mut problems = config.problems.clone();
        if config.is_off() {
            return (Telemetry::default(), problems);
        }
        let var = |name: &str| std::env::var(name).ok();
        let mut resource = Resource::builder().with_attributes(resource::attributes(identity, var));
        if let Some(name) = resource::service_name(var) {
            resource = resource.with_service_name(name);
        }
        let (pipeline, built) = Pipeline::build(config, &resource.build());
        problems.extend(built);

        let parent = trace::parent_from_env(var);
        let current = CurrentSpan::default();
        let inherited = parent.span().span_context().clone();
        current.set(inherited.is_valid().then_some(inherited));
        let tracing = pipeline.traces.as_ref().map(|provider| {
            Tracing::start(
                provider.tracer(SCOPE),
                &parent,
                current.clone(),
                masks.clone(),
            )
        });
        let usage = metrics::UsageFeed::default();
        let point_attributes = resource::point_attributes(identity);
        let telemetry = Telemetry {
            tracing,
            logger: pipeline
                .logs
                .as_ref()
                .map(|provider| provider.logger(SCOPE)),
            meter: pipeline
                .metrics
                .as_ref()
                .map(|provider| provider.meter(SCOPE)),
            pipeline: Some(pipeline),
            current,
            masks,
            point_attributes,
            usage,
        };
        if let Some(meter) = &telemetry.meter {
            metrics::observe_usage(meter, &telemetry.usage, &telemetry.point_attributes);
        }
        (telemetry, problems)
    }

    /// The layer that exports the agent's own events, when logs are exported.
    pub fn agent_events(&self) -> Option<AgentEvents> {
        self.logger
            .clone()
            .map(|logger| AgentEvents::new(logger, self.masks.clone(), self.current.clone()))
    }

    /// The task's trace id (32 hex digits), when traces are exported.
    pub fn trace_id(&self) -> Option<String> {
        self.tracing
            .as_ref()
            .map(|tracing| tracing.span_context().trace_id().to_string())
    }

    /// Starts the span of a phase; it ends when the returned value is dropped.
    pub fn phase(&self, name: &'static str) -> PhaseSpan {
        self.tracing
            .as_ref()
            .map(|tracing| tracing.phase(name))
            .unwrap_or_default()
    }

    /// Where the command's lines go as log records, stamped with `process`'s span.
    pub fn child_lines(&self, process: &PhaseSpan) -> Option<Arc<dyn LineSink>> {
        let logger = self.logger.clone()?;
        let span = process.span_context().or_else(|| self.current.get());
        Some(Arc::new(ChildLines::new(logger, span)))
    }

    /// The try's usage so far, for the next periodic metric export.
    pub fn usage(&self, usage: &crate::usage::Usage) {
        if self.meter.is_some() {
            self.usage.set(usage);
        }
    }

    /// Records the task's metrics and ends its span from the final record, then flushes
    /// everything within `timeout`. Whatever was not delivered by then is dropped with one
    /// warning: the task's end and exit code never depend on the collector.
    pub fn finish(self, record: &Record, timeout: Duration) {
        let Some(pipeline) = self.pipeline else {
            return;
        };
        if let Some(usage) = &record.usage {
            self.usage.set(usage);
        }
        if let Some(meter) = &self.meter {
            metrics::record(
                meter,
                &metrics::Usage::from_record(record),
                &self.point_attributes,
            );
        }
        if let Some(tracing) = &self.tracing {
            tracing.finish(record);
        }
        let undelivered = pipeline.shutdown(timeout);
        if !undelivered.is_empty() {
            tracing::warn!(
                undelivered = %undelivered.join("; "),
                "telemetry was not fully delivered to the collector"
            );
        }
    }
}
