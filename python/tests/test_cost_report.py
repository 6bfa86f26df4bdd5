"""`data-platform cost`: a synthetic month of lineage events, and the report hand-computed.

The month (November 2026, UTC):
- user1, DAG daily_etl: one $0.40 success a day (30), and on the 5th, 12th and 19th a $0.10 try
  that was retried first: 12.30 in all, 0.30 retried;
- user2, DAG ml: a $2.00 success every Monday (2, 9, 16, 23, 30), and on the 16th task `train`
  retried once ($1.50) and failed on its last try ($1.50): 13.00, 1.50 retried, 1.50 failed;
- user3, DAG report: one $0.05 success a day: 1.50;
- and what must not count: a $100 try on October 31st, START events, an event without a cost
  facet (sftp_upload), and the same try's event twice.
Every try is 0.5 vCPU-hours and 1 GiB-hour; 70 tries, 5 of them waste.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from data_platform.commands import main

MONDAYS = (2, 9, 16, 23, 30)


def event(run: str, day: int, tenant: str, dag_id: str, task_id: str, outcome: str, total: float,
          *, kind: str = "COMPLETE", month: int = 11, hour: int = 3) -> dict:  # fmt: skip
    facets = {
        "dataPlatformCost": {
            "_producer": "https://example.test", "_schemaURL": "https://example.test#/x",
            "currency": "USD", "total": total, "cpu": total, "memory": 0.0, "cpu_core_hours": 0.5,
            "memory_gib_hours": 1.0, "rates": {"cpu_hour": 0.031611, "memory_gib_hour": 0.004237},
            "rule": "max(request, usage)", "tenant": tenant, "dag_id": dag_id, "task_id": task_id,
            "size_class": "small", "outcome": outcome, "try_number": 1,
            "usage": {"wall_seconds": 60.0, "cpu_seconds": 30.0, "memory_gib_seconds": 10.0,
                      "cpu_request_millicores": 250, "memory_request_bytes": 536870912, "source": "record"},
        }
    }  # fmt: skip
    return {
        "eventType": "FAIL" if outcome in ("retry", "fail") and kind == "COMPLETE" else kind,
        "eventTime": f"2026-{month:02d}-{day:02d}T{hour:02d}:00:00.000000+00:00",
        "run": {"runId": run, "facets": facets},
        "job": {"namespace": "data-platform", "name": f"{dag_id}.{task_id}"},
    }


def synthetic_month() -> list[dict]:
    events = []
    for day in range(1, 31):
        if day in (5, 12, 19):
            events.append(
                event(f"u1-{day}-1", day, "user1", "user1_daily_etl", "load", "retry", 0.10, hour=2)
            )
        events.append(event(f"u1-{day}", day, "user1", "user1_daily_etl", "load", "success", 0.40))
        events.append(event(f"u3-{day}", day, "user3", "user3_report", "build", "success", 0.05))
    for day in MONDAYS:
        events.append(event(f"u2-{day}", day, "user2", "user2_ml", "features", "success", 2.00))
    events.append(event("u2-train-1", 16, "user2", "user2_ml", "train", "retry", 1.50, hour=4))
    events.append(event("u2-train-2", 16, "user2", "user2_ml", "train", "fail", 1.50, hour=5))
    # Not counted: outside the window, a START, no cost facet; and a duplicate of a counted try.
    events.append(event("old", 31, "user1", "user1_daily_etl", "load", "success", 100.0, month=10))
    events.append(event("u1-7", 7, "user1", "user1_daily_etl", "load", "success", 0.40, kind="START"))
    events.append(
        {
            "eventType": "COMPLETE",
            "eventTime": "2026-11-07T04:00:00+00:00",
            "run": {"runId": "upload", "facets": {}},
            "job": {"namespace": "d", "name": "user1_x.upload"},
        }
    )
    events.append(events[0])
    return events


@pytest.fixture
def month(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in synthetic_month()))
    return path


def report(month: Path, capsys, *options: str) -> str:
    assert main(["cost", str(month), "--since", "2026-11-01", "--until", "2026-12-01", *options]) == 0
    return capsys.readouterr().out


EXPECTED_TABLE = """\
Cost (USD) 2026-11-01 00:00 to 2026-12-01 00:00 UTC; retried + failed = waste
tenant  tries  failed     cost  retried  failed $  waste %  vCPU-h   GiB-h  CPU s used  GiB-s used
user2       7       2  13.0000   1.5000    1.5000     23.1   3.500   7.000         210          70
user1      33       3  12.3000   0.3000    0.0000      2.4  16.500  33.000         990         330
user3      30       0   1.5000   0.0000    0.0000      0.0  15.000  30.000         900         300
------  -----  ------  -------  -------  --------  -------  ------  ------  ----------  ----------
total      70       5  26.8000   1.8000    1.5000     12.3  35.000  70.000        2100         700
"""


def test_the_report_per_tenant_matches_the_hand_computed_table(month, capsys):
    assert report(month, capsys) == EXPECTED_TABLE


def test_csv_and_json_carry_the_same_numbers(month, capsys):
    rows = list(csv.DictReader(io.StringIO(report(month, capsys, "--format", "csv"))))
    assert [(r["tenant"], r["cost"], r["retried"], r["failed"], r["waste"]) for r in rows] == [
        ("user2", "13.0", "1.5", "1.5", "3.0"),
        ("user1", "12.3", "0.3", "0.0", "0.3"),
        ("user3", "1.5", "0.0", "0.0", "0.0"),
        ("total", "26.8", "1.8", "1.5", "3.3"),
    ]
    document = json.loads(report(month, capsys, "--format", "json"))
    assert document["rows"][-1] == {
        "tenant": "total", "tries": 70, "failed_tries": 5, "cost": 26.8, "retried": 1.8, "failed": 1.5,
        "waste": 3.3, "waste_pct": 12.3, "cpu_core_hours": 35.0, "memory_gib_hours": 70.0,
        "cpu_seconds": 2100.0, "memory_gib_seconds": 700.0, "currency": "USD",
    }  # fmt: skip


def test_per_day_and_per_dag(month, capsys):
    days = json.loads(report(month, capsys, "--by", "day", "--format", "json"))["rows"]
    assert len(days) == 31 and days[0]["day"] == "2026-11-01"
    (sixteenth,) = [d for d in days if d["day"] == "2026-11-16"]
    assert (sixteenth["cost"], sixteenth["waste"], sixteenth["tries"]) == (5.45, 3.0, 5)
    assert days[-1]["cost"] == 26.8
    dags = json.loads(report(month, capsys, "--by", "dag", "--format", "json"))["rows"]
    assert [(d["tenant"], d["dag_id"], d["cost"]) for d in dags[:-1]] == [
        ("user2", "user2_ml", 13.0), ("user1", "user1_daily_etl", 12.3), ("user3", "user3_report", 1.5),
    ]  # fmt: skip


def test_last_week_is_the_default_window(tmp_path, capsys):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    recent = event("new", 1, "user1", "d", "t", "retry", 0.25)
    recent["eventTime"] = (now - timedelta(days=2)).isoformat()
    old = event("older", 1, "user1", "d", "t", "success", 9.0)
    old["eventTime"] = (now - timedelta(days=9)).isoformat()
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(recent) + "\n" + json.dumps(old) + "\n")
    assert main(["cost", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert (rows[0]["tenant"], rows[0]["cost"], rows[0]["retried"]) == ("user1", 0.25, 0.25)


def test_the_chart_of_the_top_tenants_is_a_png(month, capsys, tmp_path):
    chart = tmp_path / "cost.png"
    report(month, capsys, "--chart", str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_a_file_that_is_not_events_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["cost", str(bad)]) == 2
    assert "not an OpenLineage event" in capsys.readouterr().err
