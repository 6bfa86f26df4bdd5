//! The task's spans: one for the task, a child per phase. The task's span is a child of the
//! trace context Airflow passes in `TRACEPARENT`/`TRACESTATE` (the OpenTelemetry convention
//! for environment carriers), and the command gets the process span's own `TRACEPARENT`, so
//! user code continues the same trace.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, RwLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use crate::error::AgentError;
use crate::mask::MaskHandle;
use crate::report::{Record, Status as TaskStatus};
use crate::supervise::{ChildExit, StopReason, Supervised};

pub const TRACEPARENT: &str = "TRACEPARENT";
pub const TRACESTATE: &str = "TRACESTATE";
pub const ROOT_SPAN: &str = "task-agent";

/// The span the agent's events belong to now: the current phase's, else the task's. Shared
/// with the log layer, which runs on whichever thread logs.
#[derive(Debug, Clone, Default)]
pub struct CurrentSpan(Arc<RwLock<Option<SpanContext>>>);

impl CurrentSpan {
    pub fn set(&self, span: Option<SpanContext>) {
        if let Ok(mut current) = self.0.write() {
            *current = span;
        }
    }

    pub fn get(&self) -> Option<SpanContext> {
        self.0.read().ok().and_then(|current| current.clone())
    }
}

/// The trace context in the environment's carriers; an empty context when they hold none
/// (or an invalid one).
pub fn parent_from_env(var: impl Fn(&str) -> Option<String>) -> Context {
    let mut carrier = HashMap::new();
    for (variable, header) in [(TRACEPARENT, "traceparent"), (TRACESTATE, "tracestate")] {
        if let Some(value) = var(variable) {
            carrier.insert(header.to_string(), value);
        }
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Gives `env` (a child's whole environment) the carriers of `cx`'s span in place of any it
/// inherited.
pub fn set_carriers(env: &mut Vec<(OsString, OsString)>, cx: &Context) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    env.retain(|(key, _)| key != TRACEPARENT && key != TRACESTATE);
    for (variable, header) in [(TRACEPARENT, "traceparent"), (TRACESTATE, "tracestate")] {
        if let Some(value) = carrier.remove(header).filter(|v| !v.is_empty()) {
            env.push((variable.into(), value.into()));
        }
    }
}

/// The task's span and the tracer its phases are started with.
#[derive(Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    root: Context,
    current: CurrentSpan,
    masks: MaskHandle,
}

impl Tracing {
    pub fn start(
        tracer: SdkTracer,
        parent: &Context,
        current: CurrentSpan,
        masks: MaskHandle,
    ) -> Tracing {
        let span = tracer
            .span_builder(ROOT_SPAN)
            .with_kind(SpanKind::Internal)
            .start_with_context(&tracer, parent);
        let root = parent.with_span(span);
        current.set(Some(root.span().span_context().clone()));
        Tracing {
            tracer,
            root,
            current,
            masks,
        }
    }

    pub fn span_context(&self) -> SpanContext {
        self.root.span().span_context().clone()
    }

    pub fn phase(&self, name: &'static str) -> PhaseSpan {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer, &self.root);
        let cx = self.root.with_span(span);
        self.current.set(Some(cx.span().span_context().clone()));
        PhaseSpan {
            inner: Some(Phase {
                cx,
                current: self.current.clone(),
                root: self.span_context(),
                masks: self.masks.clone(),
            }),
        }
    }

    /// Ends the task's span with the outcome the final record states.
    pub fn finish(&self, record: &Record) {
        let span = self.root.span();
        let mut attributes = vec![
            KeyValue::new("task_agent.status", record.status.as_str()),
            KeyValue::new("task_agent.phase", record.phase),
            KeyValue::new("task_agent.retryable", record.retryable),
        ];
        if let Some(code) = record.exit_code {
            attributes.push(KeyValue::new("task_agent.exit_code", i64::from(code)));
        }
        if let Some(error) = &record.error {
            attributes.push(KeyValue::new("error.type", error.kind.clone()));
        }
        span.set_attributes(attributes);
        if record.status != TaskStatus::Succeeded {
            let message = record
                .error
                .as_ref()
                .map_or(record.status.as_str(), |e| e.message.as_str());
            span.set_status(Status::error(
                self.masks.current().mask_str(message).into_owned(),
            ));
        }
        span.end();
        self.current.set(None);
    }
}

/// The span of one phase, ended when dropped. Without tracing it does nothing.
#[derive(Debug, Default)]
pub struct PhaseSpan {
    inner: Option<Phase>,
}

#[derive(Debug)]
struct Phase {
    cx: Context,
    current: CurrentSpan,
    root: SpanContext,
    masks: MaskHandle,
}

impl PhaseSpan {
    pub fn span_context(&self) -> Option<SpanContext> {
        self.inner
            .as_ref()
            .map(|phase| phase.cx.span().span_context().clone())
    }

    fn set(&self, attributes: Vec<KeyValue>) {
        if let Some(phase) = &self.inner {
            phase.cx.span().set_attributes(attributes);
        }
    }

    pub fn snapshot(&self, report: &crate::snapshot::Report) {
        let Some(phase) = &self.inner else { return };
        let source = phase.masks.current().mask_str(&report.source).into_owned();
        self.set(vec![
            KeyValue::new("task_agent.snapshot.source", source),
            KeyValue::new("task_agent.snapshot.sha256", report.sha256.clone()),
            KeyValue::new("task_agent.snapshot.bytes", saturating_i64(report.bytes)),
            KeyValue::new("task_agent.snapshot.files", saturating_i64(report.files)),
            KeyValue::new("task_agent.snapshot.cache", report.cache.as_str()),
        ]);
    }

    pub fn secrets(&self, report: &crate::secrets::Report) {
        self.set(vec![KeyValue::new(
            "task_agent.secrets.count",
            saturating_i64(report.count as u64),
        )]);
    }

    pub fn process(&self, ran: &Supervised) {
        let mut attributes = vec![
            KeyValue::new(
                "task_agent.memory.peak",
                saturating_i64(ran.peak_memory_bytes),
            ),
            KeyValue::new("task_agent.cpu.user_ms", saturating_i64(ran.cpu_user_ms)),
            KeyValue::new(
                "task_agent.cpu.system_ms",
                saturating_i64(ran.cpu_system_ms),
            ),
        ];
        match ran.exit {
            ChildExit::Code(code) => {
                attributes.push(KeyValue::new("process.exit.code", i64::from(code)))
            }
            ChildExit::Signal(number) => attributes.push(KeyValue::new(
                "task_agent.signal",
                crate::supervise::signals::name(number),
            )),
        }
        if let Some(stop) = &ran.stop {
            let reason = match stop {
                StopReason::TimedOut { .. } => "timed_out",
                StopReason::MemoryExceeded { .. } => "memory_limit",
                StopReason::Terminated => "terminated",
            };
            attributes.push(KeyValue::new("task_agent.stopped_for", reason));
        }
        self.set(attributes);
    }

    /// Marks the phase failed with `error`'s kind and (masked) message.
    pub fn failed(&self, error: &AgentError) {
        let Some(phase) = &self.inner else { return };
        let span = phase.cx.span();
        span.set_attribute(KeyValue::new("error.type", error.disposition().kind));
        let message = phase
            .masks
            .current()
            .mask_str(&error.to_string())
            .into_owned();
        span.set_status(Status::error(message));
    }

    /// Hands the command this span's trace context, replacing any it inherited; without
    /// tracing the inherited one stays.
    pub fn child_env(&self, env: &mut Vec<(OsString, OsString)>) {
        if let Some(phase) = &self.inner {
            set_carriers(env, &phase.cx);
        }
    }
}

impl Drop for PhaseSpan {
    fn drop(&mut self) {
        if let Some(phase) = &self.inner {
            phase.cx.span().end();
            phase.current.set(Some(phase.root.clone()));
        }
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_parent_comes_from_traceparent_and_tracestate() {
        let cx = parent_from_env(env_of(&[(TRACEPARENT, PARENT), (TRACESTATE, "airflow=1")]));
        let parent = cx.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(parent.span_id().to_string(), "b7ad6b7169203331");
        assert_eq!(parent.trace_state().header(), "airflow=1");
    }

    #[test]
    fn a_missing_or_malformed_traceparent_gives_no_parent() {
        for vars in [vec![], vec![(TRACEPARENT, "00-zz-yy-01")]] {
            let cx = parent_from_env(env_of(&vars));
            assert!(!cx.span().span_context().is_valid(), "{vars:?}");
        }
    }

    #[test]
    fn the_child_gets_the_carriers_of_the_span_in_place_of_inherited_ones() {
        let cx = parent_from_env(env_of(&[(TRACEPARENT, PARENT), (TRACESTATE, "airflow=1")]));
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), "/bin".into()),
            (
                TRACEPARENT.into(),
                "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01".into(),
            ),
            (TRACESTATE.into(), "old=1".into()),
        ];
        set_carriers(&mut env, &cx);
        assert_eq!(
            env,
            vec![
                (OsString::from("PATH"), OsString::from("/bin")),
                (OsString::from(TRACEPARENT), OsString::from(PARENT)),
                (OsString::from(TRACESTATE), OsString::from("airflow=1")),
            ]
        );
    }

    #[test]
    fn without_tracing_a_phase_leaves_the_inherited_carriers() {
        let mut env: Vec<(OsString, OsString)> = vec![(TRACEPARENT.into(), PARENT.into())];
        let phase = PhaseSpan::default();
        phase.child_env(&mut env);
        assert_eq!(
            env,
            vec![(OsString::from(TRACEPARENT), OsString::from(PARENT))]
        );
        assert!(phase.span_context().is_none());
    }
}
