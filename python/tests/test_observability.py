"""The chart's Prometheus recording rules and Grafana dashboard for per-tenant cost and usage:
`promtool check rules` and `promtool test rules` (Debian's prometheus package, installed by
scripts/install-observability-deps) on the rule file, the dashboard's panels and queries, and both
rendered by the chart when asked for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_helpers import find, render
from conftest import REPO

FILES = REPO / "charts" / "data-platform" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
#: The Airflow side's counters as Prometheus names them (data_platform.telemetry).
RAW = {
    "data_platform_task_cost_total", "data_platform_task_cpu_core_hours_total",
    "data_platform_task_memory_gib_hours_total", "data_platform_task_cpu_seconds_total",
    "data_platform_task_memory_gib_seconds_total", "data_platform_task_tries_total",
    "data_platform_lineage_failures_total",
}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run scripts/install-observability-deps (Debian's prometheus)")
    return found


def recorded() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def test_promtool_checks_the_rules():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(recorded())} rules found" in done.stdout


def expect(record: str, samples: dict[str, float], selector: str = "") -> dict[str, object]:
    """A promql_expr_test of `record` at 2h: {label set: value}."""
    return {
        "expr": record + selector,
        "eval_time": "2h",
        "exp_samples": [
            {"labels": f"{record}{{{labels}}}", "value": value} for labels, value in samples.items()
        ],
    }


def test_the_rules_compute_cost_waste_and_usage_per_tenant(tmp_path: Path):
    """Two hours of counters: user1 spends 0.25/min on successes and 0.125/min on retried tries,
    user2 0.5/min on failed last tries only; promtool evaluates the rules on them."""
    task = 'dag_id="etl",task_id="load"'
    series = [
        (
            f'data_platform_task_cost_total{{tenant="user1",outcome="success",{task},currency="USD"}}',
            "0+0.25x120",
        ),
        (
            f'data_platform_task_cost_total{{tenant="user1",outcome="retry",{task},currency="USD"}}',
            "0+0.125x120",
        ),
        (
            f'data_platform_task_cost_total{{tenant="user2",outcome="fail",{task},currency="USD"}}',
            "0+0.5x120",
        ),
        (f'data_platform_task_cpu_seconds_total{{tenant="user1",outcome="success",{task}}}', "0+30x120"),
    ]
    user1, user2 = 'currency="USD",tenant="user1"', 'currency="USD",tenant="user2"'
    checks = [
        expect("tenant:data_platform_cost:increase1h", {user1: 22.5, user2: 30.0}),
        expect("tenant:data_platform_cost_waste:increase1h", {user1: 7.5, user2: 30.0}),
        expect("tenant:data_platform_cost_waste:ratio1h", {user1: 1 / 3}, '{tenant="user1"}'),
        expect(
            "tenant_dag:data_platform_cost:increase1h",
            {f'{user1},dag_id="etl"': 22.5, f'{user2},dag_id="etl"': 30.0},
        ),
        expect("tenant:data_platform_cpu_cores_used:rate5m", {'tenant="user1"': 0.5}),
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "promql_expr_test": checks,
            }
        ],
    }
    path = tmp_path / "rules-test.yaml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def panels() -> dict[str, list[str]]:
    document = json.loads(DASHBOARD.read_text())
    return {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in document["panels"]}


def test_the_dashboard_charts_cost_waste_and_usage_per_tenant_from_the_rules():
    found = panels()
    assert found["Cost per tenant (per hour)"] == [
        'sum by (tenant) (tenant:data_platform_cost:increase1h{tenant=~"$tenant"})'
    ]
    assert found["Retry waste per tenant (per hour)"] == [
        'sum by (tenant) (tenant:data_platform_cost_waste:increase1h{tenant=~"$tenant"})'
    ]
    assert found["Share of cost wasted on failed and retried tries"] == [
        'tenant:data_platform_cost_waste:ratio1h{tenant=~"$tenant"}'
    ]
    assert any('outcome=~"retry|fail"' in e for e in found["Cost per tenant, last 7 days"])
    assert {
        "Top DAGs by cost (per hour)",
        "vCPU-hours and GiB-hours charged (per hour)",
        "CPU cores and memory GiB used",
        "Tries by outcome (per hour)",
        "Lineage failures (per hour)",
    } <= set(found)
    # Every series a query names is a recording rule of the chart or one of the platform's counters.
    names = recorded() | RAW
    for title, exprs in found.items():
        for expr in exprs:
            used = set(re.findall(r"\b((?:tenant[a-z_]*:)?data_platform_[a-z0-9_:]+)", expr))
            assert used and used <= names, f"{title}: {expr} names {used - names}"
    # The tenant variable is filled from a recording rule.
    (variable,) = [
        v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["name"] == "tenant"
    ]
    assert "tenant:data_platform_cost:increase1h" in variable["definition"]


def test_the_chart_ships_the_rules_and_the_dashboard_when_asked():
    assert find(render(), "PrometheusRule") == []
    docs = render(
        sets={
            "observability.prometheusRule.enabled": "true",
            "observability.grafanaDashboard.enabled": "true",
            "observability.prometheusRule.labels.release": "kube-prometheus-stack",
        }
    )
    (rule,) = find(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    (dashboard,) = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["data-platform-cost.json"]) == json.loads(DASHBOARD.read_text())
