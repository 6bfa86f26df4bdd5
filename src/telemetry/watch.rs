//! Exporters wrapped so the agent learns how exporting went. The SDK's batch processors
//! and periodic reader keep export errors to themselves (their shutdown succeeds even when
//! every export failed), yet the one warning at the end should say what went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How many exports failed, and the last failure.
#[derive(Debug, Default, Clone)]
pub struct Failures(Arc<Mutex<(usize, String)>>);

impl Failures {
    fn note(&self, result: &OTelSdkResult) {
        if let (Err(error), Ok(mut failures)) = (result, self.0.lock()) {
            failures.0 += 1;
            failures.1 = match error {
                OTelSdkError::InternalFailure(message) => message.clone(),
                other => other.to_string(),
            };
        }
    }

    /// `None` when every export succeeded.
    pub fn summary(&self) -> Option<String> {
        let failures = self.0.lock().ok()?;
        match failures.0 {
            0 => None,
            1 => Some(failures.1.clone()),
            count => Some(format!("{count} exports failed, the last: {}", failures.1)),
        }
    }
}

/// An exporter whose failures are counted in `failures`.
#[derive(Debug)]
pub struct Watched<E> {
    inner: E,
    failures: Failures,
}

impl<E> Watched<E> {
    pub fn new(inner: E, failures: Failures) -> Watched<E> {
        Watched { inner, failures }
    }
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Watched<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Watched<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_the_last_kept() {
        let failures = Failures::default();
        assert_eq!(failures.summary(), None);
        failures.note(&Ok(()));
        assert_eq!(failures.summary(), None);
        failures.note(&Err(OTelSdkError::InternalFailure("status 500".into())));
        assert!(failures.summary().unwrap().contains("status 500"));
        failures.note(&Err(OTelSdkError::InternalFailure("network error".into())));
        let summary = failures.summary().unwrap();
        assert!(
            summary.starts_with("2 exports failed") && summary.contains("network error"),
            "{summary}"
        );
    }
}
