"""The cost model: OpenCost's max(request, usage) rule over a try's wall time, the policy's prices
(OpenCost's defaults unless set, per size class otherwise), and every try costed."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from data_platform.cost import (
    OPENCOST_CPU_HOUR,
    OPENCOST_MEMORY_GIB_HOUR,
    CostModel,
    Rates,
    Usage,
    try_cost,
    usage_of,
)
from data_platform.policy import PlatformPolicy, PolicyError, load_policy, parse_policy
from test_policy import changed

GIB = 2**30


def parse(document: dict[str, object]) -> PlatformPolicy:
    return parse_policy(document, "policy.yaml")


def record(status: str = "succeeded", **usage: object) -> dict[str, object]:
    base: dict[str, object] = {
        "cpu_seconds": 0.0, "cpu_source": "cgroup", "memory_gib_seconds": 0.0, "peak_memory_bytes": 0,
        "wall_seconds": 0.0, "requests": {"cpu_millicores": 250, "memory_bytes": 512 * 2**20},
        "limits": {"cpu_millicores": 1000, "memory_bytes": GIB},
        "bytes": {"snapshot": 0, "inputs": 0, "outputs": 0}, "network": None,
    }  # fmt: skip
    return {"status": status, "usage": {**base, **usage}}


def test_an_idle_try_is_charged_its_requests_over_its_wall_time():
    # 250m and 512 MiB for an hour: 0.25 vCPU-hours and 0.5 GiB-hours.
    cost = try_cost(usage_of(record(wall_seconds=3600.0, cpu_seconds=10.0, memory_gib_seconds=60.0)), Rates())
    assert cost["cpu_core_hours"] == pytest.approx(0.25)
    assert cost["memory_gib_hours"] == pytest.approx(0.5)
    assert cost["total"] == pytest.approx(0.25 * 0.031611 + 0.5 * 0.004237)
    assert cost["rule"] == "max(request, usage)" and cost["currency"] == "USD"


def test_a_busy_try_is_charged_what_it_used_above_its_requests():
    # 2 vCPUs busy for 30 min (3600 CPU-seconds) and 3 GiB on average (5400 GiB-seconds).
    usage = usage_of(record(wall_seconds=1800.0, cpu_seconds=3600.0, memory_gib_seconds=5400.0))
    cost = try_cost(usage, Rates(cpu_hour=0.04, memory_gib_hour=0.005))
    assert cost["cpu_core_hours"] == pytest.approx(1.0)
    assert cost["memory_gib_hours"] == pytest.approx(1.5)
    assert cost["cpu"] == pytest.approx(0.04) and cost["memory"] == pytest.approx(0.0075)
    assert cost["total"] == pytest.approx(0.0475)


def test_opencosts_published_defaults_are_the_default_prices():
    assert (Rates().cpu_hour, Rates().memory_gib_hour) == (0.031611, 0.004237)
    assert (OPENCOST_CPU_HOUR, OPENCOST_MEMORY_GIB_HOUR) == (0.031611, 0.004237)


def test_a_killed_try_is_costed_from_its_provisional_record():
    usage = usage_of(record("running", wall_seconds=120.0, cpu_seconds=200.0))
    assert usage is not None and usage.source == "provisional"
    assert try_cost(usage, Rates())["cpu_core_hours"] == pytest.approx(200 / 3600)


def test_a_try_without_a_record_is_costed_from_the_containers_times_and_the_pods_requests():
    start = datetime(2026, 11, 26, tzinfo=timezone.utc)
    usage = usage_of(None, requests=(1000, 2 * GIB), started=start, finished=start + timedelta(minutes=6))
    assert usage == Usage(
        wall_seconds=360.0, cpu_request_millicores=1000, memory_request_bytes=2 * GIB, source="pod"
    )
    cost = try_cost(usage, Rates())
    assert cost["cpu_core_hours"] == pytest.approx(0.1) and cost["memory_gib_hours"] == pytest.approx(0.2)
    assert usage_of(None) is None


def test_requests_missing_from_the_record_are_the_pods():
    data = record(wall_seconds=3600.0)
    data["usage"]["requests"] = {"cpu_millicores": None, "memory_bytes": None}  # type: ignore[index]
    usage = usage_of(data, requests=(500, GIB))
    assert (usage.cpu_request_millicores, usage.memory_request_bytes) == (500, GIB)


def test_the_policy_prices_per_size_class_fall_back_to_the_defaults():
    policy = load_policy()
    assert policy.cost.currency == "USD"
    assert policy.cost.rates_for("small") == Rates()
    assert policy.cost.rates_for("large") == Rates(cpu_hour=0.0379, memory_gib_hour=0.0051)
    assert policy.cost.rates_for(None) == Rates()
    without = parse(changed("cost", None))
    assert without.cost == CostModel()
    partial = parse(
        changed("cost", {"cpu_hour": 0.05, "size_classes": {"medium": {"memory_gib_hour": 0.01}}})
    )
    assert partial.cost.rates_for("medium") == Rates(cpu_hour=0.05, memory_gib_hour=0.01)


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        ({"cpu_hour": -1}, "cost.cpu_hour: expected a price"),
        ({"cpu_hours": 1}, "cost: unknown field 'cpu_hours'"),
        ({"size_classes": {"huge": {"cpu_hour": 1}}}, "cost.size_classes.huge: 'huge' is not a size class"),
        ({"size_classes": {"small": {"ram": 1}}}, "cost.size_classes.small: unknown field 'ram'"),
    ],
)
def test_a_wrong_price_names_its_field(cost, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse(changed("cost", cost))


def points(reader, name: str) -> dict[tuple[tuple[str, object], ...], float]:
    found = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[tuple(sorted(point.attributes.items()))] = point.value
    return found


def test_every_try_is_counted_with_its_cost_under_airflows_names(metric_reader):
    from data_platform import telemetry

    usage = usage_of(record(wall_seconds=3600.0, cpu_seconds=10.0, memory_gib_seconds=60.0))
    cost = try_cost(usage, Rates())
    for outcome in ("retry", "success"):
        telemetry.record_try(tenant="t1", dag_id="d1", task_id="k1", outcome=outcome, cost=cost)
    telemetry.record_try(tenant="t1", dag_id="d1", task_id="k1", outcome="retry", cost=None)
    key = {"tenant": "t1", "dag_id": "d1", "task_id": "k1"}
    costs = points(metric_reader, "data_platform.task.cost")
    for outcome in ("retry", "success"):
        labels = tuple(sorted({**key, "outcome": outcome, "currency": "USD"}.items()))
        assert costs[labels] == pytest.approx(cost["total"])
    tries = points(metric_reader, "data_platform.task.tries")
    assert tries[tuple(sorted({**key, "outcome": "retry"}.items()))] == 2
    cpu = points(metric_reader, "data_platform.task.cpu_core_hours")
    assert cpu[tuple(sorted({**key, "outcome": "success"}.items()))] == pytest.approx(0.25)
