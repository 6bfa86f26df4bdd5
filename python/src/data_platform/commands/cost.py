"""`data-platform cost EVENTS…`: what each tenant spent, per tenant, DAG and day, with retry waste
separated, from the OpenLineage events the platform emitted.

The source is the lineage events, not Airflow's REST API: every try's COMPLETE or FAIL event
carries its own `dataPlatformCost` facet, so failed and retried tries are all there, each once;
the REST API keeps one `task_result` XCom per task instance, which the next try replaces (XComs
are cleared when a try starts), so the cost of retried tries — the waste this report is for — is
gone from it. Events are read from files the OpenLineage file transport wrote (one JSON event per
line, or one event per `.json` file in a directory), or `-` for standard input (e.g. an HTTP
sink's export piped in).

A try counts in the window its event time (its end) falls in; days are UTC. `retried` is the cost
of tries another try followed, `failed` of the last tries of failed tasks: together the waste.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

HELP = "report cost and usage per tenant, DAG and day from the platform's lineage events"
FAST_EXIT = True
COST_FACET = "dataPlatformCost"
GROUPS = {
    "tenant": ("tenant",),
    "dag": ("tenant", "dag_id"),
    "day": ("day",),
    "tenant-day": ("day", "tenant"),
}
FORMATS = ("table", "csv", "json")
_LAST = re.compile(r"^(\d+)([dh])$")


@dataclass(frozen=True)
class Try:
    """One try's cost, from its end event."""

    run_id: str
    ended: datetime
    tenant: str
    dag_id: str
    task_id: str
    outcome: str
    currency: str
    total: float
    cpu_core_hours: float
    memory_gib_hours: float
    cpu_seconds: float
    memory_gib_seconds: float

    @property
    def day(self) -> str:
        return self.ended.astimezone(timezone.utc).date().isoformat()


@dataclass
class Row:
    key: dict[str, str]
    tries: int = 0
    failed_tries: int = 0
    cost: float = 0.0
    retried: float = 0.0
    failed: float = 0.0
    cpu_core_hours: float = 0.0
    memory_gib_hours: float = 0.0
    cpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    currencies: set[str] = field(default_factory=set)

    def add(self, item: Try) -> None:
        self.tries += 1
        self.cost += item.total
        if item.outcome == "retry":
            self.retried += item.total
        if item.outcome == "fail":
            self.failed += item.total
        if item.outcome in ("retry", "fail"):
            self.failed_tries += 1
        self.cpu_core_hours += item.cpu_core_hours
        self.memory_gib_hours += item.memory_gib_hours
        self.cpu_seconds += item.cpu_seconds
        self.memory_gib_seconds += item.memory_gib_seconds
        self.currencies.add(item.currency)

    @property
    def waste(self) -> float:
        return self.retried + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.key,
            "tries": self.tries,
            "failed_tries": self.failed_tries,
            "cost": round(self.cost, 6),
            "retried": round(self.retried, 6),
            "failed": round(self.failed, 6),
            "waste": round(self.waste, 6),
            "waste_pct": round(100 * self.waste / self.cost, 1) if self.cost else 0.0,
            "cpu_core_hours": round(self.cpu_core_hours, 4),
            "memory_gib_hours": round(self.memory_gib_hours, 4),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "memory_gib_seconds": round(self.memory_gib_seconds, 1),
            "currency": ",".join(sorted(self.currencies)),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", nargs="+", help="OpenLineage event files (JSON lines), directories of "
                        ".json events, or - for standard input")  # fmt: skip
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--last", default="7d", help="the window ending now (or at --until): 7d, 30d, 12h "
                        "(default 7d)")  # fmt: skip
    window.add_argument("--since", type=_day, help="the window's first day (UTC), e.g. 2026-11-01")
    parser.add_argument("--until", type=_day, help="the day after the window (UTC; default: now)")
    parser.add_argument("--by", choices=sorted(GROUPS), default="tenant",
                        help="rows per tenant (default), tenant and DAG, day, or day and tenant")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--chart", type=Path, help="also write a PNG of the top tenants' cost, waste apart")
    parser.add_argument("--top", type=int, default=10, help="tenants in the chart (default 10)")


def run(arguments: argparse.Namespace) -> int:
    until = arguments.until or datetime.now(timezone.utc)
    if arguments.since is not None:
        since = arguments.since
    else:
        match = _LAST.match(arguments.last)
        if match is None:
            print(f"data-platform cost: --last {arguments.last!r}: expected a number and d or h, e.g. 7d",
                  file=sys.stderr)  # fmt: skip
            return 2
        amount, unit = int(match.group(1)), match.group(2)
        since = until - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    try:
        tries = [t for t in read_tries(arguments.events) if since <= t.ended < until]
    except (OSError, ValueError) as error:
        print(f"data-platform cost: {error}", file=sys.stderr)
        return 2
    rows = report(tries, GROUPS[arguments.by])
    title = f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
    write(rows, arguments.format, sys.stdout, title=title)
    if arguments.chart is not None:
        chart(report(tries, GROUPS["tenant"]), arguments.chart, title=title, top=arguments.top)
        print(f"chart: {arguments.chart}", file=sys.stderr)
    return 0


def _day(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-11-01") from None


def _documents(sources: Sequence[str]) -> Iterator[tuple[str, str]]:
    for source in sources:
        if source == "-":
            yield from (("<stdin>", line) for line in sys.stdin)
            continue
        path = Path(source)
        files = sorted(path.rglob("*.json*")) if path.is_dir() else [path]
        for file in files:
            text = file.read_text(encoding="utf-8")
            if file.suffix == ".json" and text.lstrip().startswith("{") and "\n{" not in text.strip():
                yield str(file), text
            else:
                yield from ((str(file), line) for line in text.splitlines())


def read_tries(sources: Sequence[str]) -> list[Try]:
    """Every costed try in the events, once (the last event of a run wins)."""
    found: dict[str, Try] = {}
    for origin, text in _documents(sources):
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{origin}: not an OpenLineage event (JSON): {error}") from None
        item = try_of(event)
        if item is not None:
            found[item.run_id] = item
    return sorted(found.values(), key=lambda t: t.ended)


def try_of(event: Any) -> Try | None:
    if not isinstance(event, dict) or event.get("eventType") not in ("COMPLETE", "FAIL", "ABORT"):
        return None
    run = event.get("run") or {}
    cost = (run.get("facets") or {}).get(COST_FACET)
    if not isinstance(cost, dict):
        return None
    usage = cost.get("usage") or {}
    job = str((event.get("job") or {}).get("name", ""))
    dag_id = cost.get("dag_id") or job.rsplit(".", 1)[0]
    return Try(
        run_id=str(run.get("runId")),
        ended=datetime.fromisoformat(str(event["eventTime"]).replace("Z", "+00:00")),
        tenant=str(cost.get("tenant") or "?"),
        dag_id=str(dag_id),
        task_id=str(cost.get("task_id") or job.rsplit(".", 1)[-1]),
        outcome=str(cost.get("outcome") or ""),
        currency=str(cost.get("currency") or ""),
        total=float(cost.get("total") or 0.0),
        cpu_core_hours=float(cost.get("cpu_core_hours") or 0.0),
        memory_gib_hours=float(cost.get("memory_gib_hours") or 0.0),
        cpu_seconds=float(usage.get("cpu_seconds") or 0.0),
        memory_gib_seconds=float(usage.get("memory_gib_seconds") or 0.0),
    )


def report(tries: Iterable[Try], keys: Sequence[str]) -> list[Row]:
    """Rows by `keys`, costliest first (by day: in date order), and a total row last."""
    rows: dict[tuple[str, ...], Row] = {}
    total = Row(key={key: "total" if index == 0 else "" for index, key in enumerate(keys)})
    for item in tries:
        values = {"tenant": item.tenant, "dag_id": item.dag_id, "day": item.day}
        key = tuple(values[k] for k in keys)
        rows.setdefault(key, Row(key={k: values[k] for k in keys})).add(item)
        total.add(item)
    ordered = sorted(rows.values(), key=lambda r: (r.key["day"], -r.cost) if "day" in keys else (-r.cost,))
    return [*ordered, total]


_TABLE_COLUMNS = (
    ("tries", "tries", "{:d}"), ("failed_tries", "failed", "{:d}"), ("cost", "cost", "{:.4f}"),
    ("retried", "retried", "{:.4f}"), ("failed", "failed $", "{:.4f}"), ("waste_pct", "waste %", "{:.1f}"),
    ("cpu_core_hours", "vCPU-h", "{:.3f}"), ("memory_gib_hours", "GiB-h", "{:.3f}"),
    ("cpu_seconds", "CPU s used", "{:.0f}"), ("memory_gib_seconds", "GiB-s used", "{:.0f}"),
)  # fmt: skip


def write(rows: Sequence[Row], fmt: str, out: TextIO, *, title: str = "") -> None:
    documents = [row.as_dict() for row in rows]
    if fmt == "json":
        json.dump({"window": title, "rows": documents}, out, indent=2)
        out.write("\n")
        return
    keys = list(rows[-1].key) if rows else ["tenant"]
    if fmt == "csv":
        writer = csv.DictWriter(
            out, fieldnames=list(documents[0]) if documents else keys, lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(documents)
        return
    header = [*keys, *(label for _, label, _ in _TABLE_COLUMNS)]
    body = [[*(doc[k] for k in keys), *(form.format(doc[name]) for name, _, form in _TABLE_COLUMNS)]
            for doc in documents]  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=True)]
    currency = ",".join(sorted({c for row in rows for c in row.currencies})) or "?"
    if title:
        out.write(f"Cost ({currency}) {title}; retried + failed = waste\n")
    for index, line in enumerate([header, *body]):
        if index == len(body):  # the total row
            out.write("  ".join("-" * width for width in widths) + "\n")
        cells = [str(cell).ljust(w) if i < len(keys) else str(cell).rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]  # fmt: skip
        out.write("  ".join(cells).rstrip() + "\n")


def chart(rows: Sequence[Row], path: Path, *, title: str, top: int) -> None:
    """Horizontal bars of the top tenants' cost: what succeeded, what was retried, what failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tenants = [row for row in rows if row.key.get("tenant") != "total"][:top][::-1]
    names = [row.key["tenant"] for row in tenants]
    useful = [row.cost - row.waste for row in tenants]
    retried = [row.retried for row in tenants]
    failed = [row.failed for row in tenants]
    currency = ",".join(sorted({c for row in tenants for c in row.currencies})) or "?"
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(tenants) + 1.6), dpi=100)
    axes.barh(names, useful, color="#4c72b0", label="succeeded or skipped tries")
    axes.barh(names, retried, left=useful, color="#dd8452", label="retried tries (waste)")
    axes.barh(names, failed, left=[u + r for u, r in zip(useful, retried, strict=True)], color="#c44e52",
              label="failed tasks' last tries (waste)")  # fmt: skip
    for index, row in enumerate(tenants):
        share = 100 * row.waste / row.cost if row.cost else 0.0
        axes.text(row.cost, index, f" {row.cost:.2f} ({share:.0f}% waste)", va="center", fontsize=8)
    axes.set_xlabel(f"cost ({currency}), max(request, usage) at the policy's prices")
    axes.set_title(f"Top tenants by cost, {title}", fontsize=10)
    axes.margins(x=0.25)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
