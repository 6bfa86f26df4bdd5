"""The task instance's trace context as W3C `TRACEPARENT`/`TRACESTATE` variables for the pod.

task-agent makes its root span a child of `TRACEPARENT` (the OpenTelemetry convention for
environment carriers), so the pod's spans join the Airflow trace of the task instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate


def trace_environment(context: Mapping[str, Any] | None) -> dict[str, str]:
    """`{"TRACEPARENT": …, "TRACESTATE": …}` of the span running this operator, else of the task instance."""
    carrier: dict[str, str] = {}
    # The Airflow task runner makes the task's span current around execute(); inject it.
    propagate.inject(carrier)
    if "traceparent" not in carrier and context is not None:
        ti = context.get("ti")
        stored = getattr(ti, "context_carrier", None)
        if isinstance(stored, Mapping):
            carrier = {str(k).lower(): str(v) for k, v in stored.items()}
    environment = {}
    if carrier.get("traceparent"):
        environment["TRACEPARENT"] = carrier["traceparent"]
        if carrier.get("tracestate"):
            environment["TRACESTATE"] = carrier["tracestate"]
    return environment
