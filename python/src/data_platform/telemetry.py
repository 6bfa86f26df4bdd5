"""The Airflow side's own metrics: what each try cost and used, and lineage that could not be made.

Recorded through the OpenTelemetry API, so they go wherever the worker's MeterProvider sends them:
Airflow's own when `[metrics] otel_on = True` (its OTLP exporter), nowhere otherwise. The
attributes are Airflow's own metric tag names (`dag_id`, `task_id`) and the platform's `tenant`;
run ids and try numbers are left out (one series per task, not per run). A Prometheus behind an
OpenTelemetry Collector sees them as `data_platform_task_cost_total`,
`data_platform_task_cpu_seconds_total`, `data_platform_task_memory_gib_seconds_total`,
`data_platform_task_tries_total` and `data_platform_lineage_failures_total` (the chart's recording
rules and dashboard use those names; docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from opentelemetry import metrics

METER_NAME = "data_platform"


@cache
def _instruments() -> dict[str, Any]:
    # The API's proxy meter: instruments made before the provider is set report to it once it is.
    meter = metrics.get_meter(METER_NAME)
    return {
        "cost": meter.create_counter(
            "data_platform.task.cost",
            unit="{USD}",
            description="What tries cost: max(request, usage) * wall time * the policy's prices",
        ),
        "cpu": meter.create_counter(
            "data_platform.task.cpu_seconds", unit="s", description="CPU time tries used"
        ),
        "memory": meter.create_counter(
            "data_platform.task.memory_gib_seconds",
            unit="{GiB.s}",
            description="Memory tries used, integrated over time",
        ),
        "allocated_cpu": meter.create_counter(
            "data_platform.task.cpu_core_hours",
            unit="{cpu.h}",
            description="vCPU-hours tries were charged for: max(request, usage) over wall time",
        ),
        "allocated_memory": meter.create_counter(
            "data_platform.task.memory_gib_hours",
            unit="{GiB.h}",
            description="GiB-hours of memory tries were charged for: max(request, usage) over wall time",
        ),
        "tries": meter.create_counter(
            "data_platform.task.tries", unit="{try}", description="Tries that ended, by outcome"
        ),
        "lineage_failures": meter.create_counter(
            "data_platform.lineage.failures",
            unit="{failure}",
            description="Lineage events or facets the platform could not build or send in time",
        ),
    }


def task_attributes(tenant: str, dag_id: str, task_id: str) -> dict[str, str]:
    return {"tenant": tenant, "dag_id": dag_id, "task_id": task_id}


def record_try(
    *, tenant: str, dag_id: str, task_id: str, outcome: str, cost: Mapping[str, Any] | None
) -> None:
    """One try ended (`outcome`: success, skip, retry or fail); a retried or failed try is waste."""
    attributes = {**task_attributes(tenant, dag_id, task_id), "outcome": outcome}
    instruments = _instruments()
    instruments["tries"].add(1, attributes)
    if cost is None:
        return
    instruments["cost"].add(float(cost["total"]), {**attributes, "currency": str(cost["currency"])})
    instruments["cpu"].add(float(cost["usage"]["cpu_seconds"]), attributes)
    instruments["memory"].add(float(cost["usage"]["memory_gib_seconds"]), attributes)
    instruments["allocated_cpu"].add(float(cost["cpu_core_hours"]), attributes)
    instruments["allocated_memory"].add(float(cost["memory_gib_hours"]), attributes)


def lineage_failed(*, tenant: str, dag_id: str, task_id: str, stage: str, reason: str) -> None:
    attributes = {**task_attributes(tenant, dag_id, task_id), "stage": stage, "error.type": reason}
    _instruments()["lineage_failures"].add(1, attributes)
