"""What a finished pod means for the task instance: success, skip, fail, retry. Pure.

The record decides when there is one. Without one (the container was killed before the agent
could write it, or the message is log text under `FallbackToLogsOnError`) the container's
state does, so the exception still says what happened instead of "Pod failed because of None".
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from data_platform.record import Record, Unreadable
from data_platform.units import human_bytes

#: Agent failures a retry cannot fix: the input is wrong, missing or forbidden.
PERMANENT_AGENT_ERRORS = frozenset(
    {
        "usage",
        "snapshot_integrity",
        "snapshot_unsafe",
        "snapshot_corrupt",
        "snapshot_not_found",
        "snapshot_denied",
        "secret_not_found",
        "secret_denied",
        "policy_denied",
        "command_not_found",
        "command_not_executable",
        "permission_denied",
        # Data between tasks (docs/data-between-tasks.md): a missing or changed blob, refused access.
        "output_missing",
        "output_denied",
        "input_not_found",
        "input_integrity",
        "input_denied",
    }
)


class Verdict(enum.Enum):
    SUCCESS = "success"
    SKIP = "skip"
    #: Fail now, without spending the remaining retries.
    FAIL = "fail"
    #: Fail this try; Airflow retries while retries remain.
    RETRY = "retry"


@dataclass(frozen=True)
class ContainerEnd:
    """The base container's `state.terminated`, as far as Kubernetes reports it."""

    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class MemoryPlan:
    """The memory limit this try ran under, and how an out-of-memory retry may raise it."""

    limit_bytes: int
    factor: float
    max_bytes: int

    def raised(self) -> int:
        return min(math.ceil(self.limit_bytes * self.factor), self.max_bytes)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    message: str
    record: Record | None
    #: For an out-of-memory end: the limit the next try should get.
    next_memory_limit: int | None = None

    @property
    def return_value(self) -> Any:
        return None if self.record is None else self.record.return_value


def decide(
    found: Record | Unreadable,
    container: ContainerEnd,
    *,
    skip_exit_codes: Collection[int],
    memory: MemoryPlan | None,
) -> Outcome:
    if isinstance(found, Record) and found.status != "running":
        return _from_record(found, skip_exit_codes=skip_exit_codes, memory=memory)
    return _from_container(found, container, memory=memory)


def _from_record(record: Record, *, skip_exit_codes: Collection[int], memory: MemoryPlan | None) -> Outcome:
    status = record.status
    summary = _summary(record)
    if status == "succeeded":
        return Outcome(Verdict.SUCCESS, f"task succeeded: {summary}", record)
    if status == "failed" and record.child_exit_code in skip_exit_codes:
        return Outcome(
            Verdict.SKIP, f"the command exited {record.child_exit_code}, the skip code: {summary}", record
        )
    if status == "oom_killed":
        return _out_of_memory(f"task ran out of memory: {summary}", record, memory)
    if status == "agent_error":
        if record.retryable:
            return Outcome(Verdict.RETRY, f"task-agent failed, retrying may help: {summary}", record)
        if record.error_kind in PERMANENT_AGENT_ERRORS:
            return Outcome(
                Verdict.FAIL,
                f"task-agent failed and a retry cannot fix it, so none is spent: {summary}",
                record,
            )
        return Outcome(Verdict.RETRY, f"task-agent failed: {summary}", record)
    if status == "terminated":
        return Outcome(
            Verdict.RETRY,
            f"the pod was stopped from outside (evicted, drained or deleted): {summary}",
            record,
        )
    # `failed` and `timed_out` follow the task's retry policy.
    return Outcome(Verdict.RETRY, f"task {status.replace('_', ' ')}: {summary}", record)


def _from_container(
    found: Record | Unreadable, container: ContainerEnd, *, memory: MemoryPlan | None
) -> Outcome:
    if isinstance(found, Record):
        why = "the agent was killed before it could finish its record (it still said `running`)"
    else:
        why = found.reason
        if found.text:
            why += f"; it said: {found.text!r}"
    state = f"container exit code {container.exit_code}, reason {container.reason or 'none given'}"
    if container.reason == "OOMKilled":
        return _out_of_memory(
            f"the container was killed by the kernel for using too much memory ({state}); {why}",
            found if isinstance(found, Record) else None,
            memory,
        )
    if container.exit_code == 0 and isinstance(found, Unreadable) and found.text is None:
        return Outcome(
            Verdict.FAIL,
            f"the container exited 0 but left no record ({state}); is task-agent its entrypoint? "
            "run the command under `task-agent run --result-file /dev/termination-log`",
            None,
        )
    return Outcome(Verdict.RETRY, f"the task ended without a record: {state}; {why}", None)


def _out_of_memory(message: str, record: Record | None, memory: MemoryPlan | None) -> Outcome:
    if memory is None:
        return Outcome(Verdict.RETRY, message, record)
    raised = memory.raised()
    if raised > memory.limit_bytes:
        note = (
            f"; the next try gets a {human_bytes(raised)} memory limit "
            f"(was {human_bytes(memory.limit_bytes)})"
        )
        return Outcome(Verdict.RETRY, message + note, record, next_memory_limit=raised)
    note = (
        f"; the memory limit is already the size class's maximum ({human_bytes(memory.max_bytes)}): "
        "use a larger size class or make the task use less memory"
    )
    return Outcome(Verdict.RETRY, message + note, record)


def _summary(record: Record) -> str:
    parts = [f"status={record.status}", f"exit_code={record.exit_code}"]
    if record.child_exit_code is not None and record.child_exit_code != record.exit_code:
        parts.append(f"command_exit_code={record.child_exit_code}")
    if record.data.get("signal"):
        parts.append(f"signal={record.data['signal']}")
    parts.append(f"peak_memory={human_bytes(record.peak_memory_bytes)}")
    if record.memory_limit_bytes is not None:
        parts.append(f"memory_limit={human_bytes(record.memory_limit_bytes)}")
    if record.error_kind:
        parts.append(f"reason={record.error_kind}: {record.error_message}")
    summary = ", ".join(parts)
    tail = record.data.get("log_tail") or []
    if record.status != "succeeded" and tail:
        summary += "\nlast stderr lines:\n  " + "\n  ".join(str(line) for line in tail[-5:])
    return summary
