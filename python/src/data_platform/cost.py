"""What a try cost: OpenCost's allocation rule over the record's usage. Pure.

A try is charged for what it reserved or what it used, whichever is more, over its wall time:

    cpu_core_hours   = max(cpu_request_cores * wall_seconds, cpu_seconds) / 3600
    memory_gib_hours = max(memory_request_gib * wall_seconds, memory_gib_seconds) / 3600
    cost             = cpu_core_hours * cpu_hour + memory_gib_hours * memory_gib_hour

This is OpenCost's `max(request, usage)` allocation with the try as the window (its average
usage over the window is `cpu_seconds / wall_seconds`), so a sum of tries reconciles with a
cluster-level tool using the same prices. The prices are the policy's `cost` (per size class,
that is per node pool), by default OpenCost's published defaults. Every try is costed: failed,
retried and killed ones included (a killed try's provisional record says what it used so far;
with no record at all, the container's own start and end times and the pod's requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: OpenCost's default prices (its `default.json`): USD per vCPU-hour and per GiB-hour of memory.
OPENCOST_CPU_HOUR = 0.031611
OPENCOST_MEMORY_GIB_HOUR = 0.004237
GIB = 1024**3


@dataclass(frozen=True)
class Rates:
    """Prices per vCPU-hour and per GiB-hour of memory."""

    cpu_hour: float = OPENCOST_CPU_HOUR
    memory_gib_hour: float = OPENCOST_MEMORY_GIB_HOUR


@dataclass(frozen=True)
class CostModel:
    """The policy's `cost`: a currency, default rates, and rates per size class (its node pool)."""

    currency: str = "USD"
    default: Rates = field(default_factory=Rates)
    size_classes: Mapping[str, Rates] = field(default_factory=dict)

    def rates_for(self, size_class: str | None) -> Rates:
        if size_class is None:
            return self.default
        return self.size_classes.get(size_class, self.default)


@dataclass(frozen=True)
class Usage:
    """What a try used and reserved, from its record (or the pod when there is none)."""

    wall_seconds: float
    cpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    cpu_request_millicores: int | None = None
    memory_request_bytes: int | None = None
    #: `record` (final), `provisional` (the try was killed: usage so far) or `pod` (no record).
    source: str = "record"


def usage_of(
    record: Mapping[str, Any] | None,
    *,
    requests: tuple[int | None, int | None] = (None, None),
    started: datetime | None = None,
    finished: datetime | None = None,
) -> Usage | None:
    """The try's usage from its record; else from the container's start and end (requests only).

    `requests` (millicores, bytes) stand in for a record's missing ones (an agent that was not
    given them)."""
    usage = record.get("usage") if record else None
    if isinstance(usage, Mapping):
        reserved = usage.get("requests") or {}
        cpu = reserved.get("cpu_millicores")
        memory = reserved.get("memory_bytes")
        return Usage(
            wall_seconds=float(usage.get("wall_seconds") or 0.0),
            cpu_seconds=float(usage.get("cpu_seconds") or 0.0),
            memory_gib_seconds=float(usage.get("memory_gib_seconds") or 0.0),
            cpu_request_millicores=cpu if isinstance(cpu, int) else requests[0],
            memory_request_bytes=memory if isinstance(memory, int) else requests[1],
            source="provisional" if record and record.get("status") == "running" else "record",
        )
    if started is not None and finished is not None:
        return Usage(
            wall_seconds=max((finished - started).total_seconds(), 0.0),
            cpu_request_millicores=requests[0],
            memory_request_bytes=requests[1],
            source="pod",
        )
    return None


def try_cost(usage: Usage, rates: Rates, currency: str = "USD") -> dict[str, Any]:
    """The cost document of one try: the `cost` of the `task_result` XCom and of the lineage facet."""
    wall = usage.wall_seconds
    cpu_reserved = (usage.cpu_request_millicores or 0) / 1000 * wall
    memory_reserved = (usage.memory_request_bytes or 0) / GIB * wall
    cpu_core_hours = max(cpu_reserved, usage.cpu_seconds) / 3600
    memory_gib_hours = max(memory_reserved, usage.memory_gib_seconds) / 3600
    cpu_cost = cpu_core_hours * rates.cpu_hour
    memory_cost = memory_gib_hours * rates.memory_gib_hour
    return {
        "currency": currency,
        "total": cpu_cost + memory_cost,
        "cpu": cpu_cost,
        "memory": memory_cost,
        "cpu_core_hours": cpu_core_hours,
        "memory_gib_hours": memory_gib_hours,
        "rates": {"cpu_hour": rates.cpu_hour, "memory_gib_hour": rates.memory_gib_hour},
        "rule": "max(request, usage)",
        "usage": {
            "wall_seconds": wall,
            "cpu_seconds": usage.cpu_seconds,
            "memory_gib_seconds": usage.memory_gib_seconds,
            "cpu_request_millicores": usage.cpu_request_millicores,
            "memory_request_bytes": usage.memory_request_bytes,
            "source": usage.source,
        },
    }
