"""What a local run prints once Airflow is done: each task's state, and for each try of a pod
task the agent's summary line, the record's key fields and the artifacts it wrote; for a failed
try the record's reason and the stderr tail."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from data_platform.units import human_bytes

Print = Callable[[str], None]
SUMMARY_PREFIX = "task finished "
TAIL_LINES = 10


def report_task(
    out: Print, task_id: str, state: str, try_number: int, pod_dir: Path | None, xcom: dict[str, Any]
) -> None:
    out(f"== {task_id}: {state} (tries: {try_number})")
    if pod_dir is not None and pod_dir.is_dir():
        for attempt in sorted((p for p in pod_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
            _report_try(out, int(attempt.name), attempt)
    elif "return_value" in xcom:
        out(f"   returned: {json.dumps(xcom['return_value'], sort_keys=True)}")


def pod_directory(root: Path, dag_id: str, run_id: str, task_id: str, map_index: int) -> Path:
    return root / dag_id / quote(run_id, safe="") / task_id / str(map_index)


def _report_try(out: Print, number: int, directory: Path) -> None:
    log = _read(directory / "container.log").splitlines()
    summary = next((line for line in reversed(log) if SUMMARY_PREFIX in line), None)
    out(f"   try {number}: {directory}")
    shown = summary[summary.index(SUMMARY_PREFIX) :] if summary else "(no summary line: see container.log)"
    out(f"     agent: {shown}")
    record = _record(directory)
    if record is None:
        out("     record: none (the agent did not finish one); last log lines:")
        _lines(out, log[-TAIL_LINES:])
        return
    fields = [f"status={record.get('status')}", f"exit_code={record.get('exit_code')}"]
    resources = record.get("resources") or {}
    if resources.get("peak_memory_bytes") is not None:
        fields.append(f"peak_memory={human_bytes(resources['peak_memory_bytes'])}")
    if resources.get("memory_limit_bytes") is not None:
        fields.append(f"memory_limit={human_bytes(resources['memory_limit_bytes'])}")
    if record.get("retryable") is not None:
        fields.append(f"retryable={str(record['retryable']).lower()}")
    snapshot = record.get("snapshot") or {}
    if snapshot.get("sha256"):
        fields.append(f"snapshot_sha256={snapshot['sha256'][:12]}…")
    out(f"     record: {', '.join(fields)}")
    error = record.get("error")
    if isinstance(error, dict):
        out(f"     reason: {error.get('kind')}: {error.get('message')}")
    if "return_value" in record and record["return_value"] is not None:
        out(f"     return_value: {json.dumps(record['return_value'], sort_keys=True)}")
    for kind in ("inputs", "outputs"):
        for entry in record.get(kind) or []:
            out(f"     {kind[:-1]}: {entry.get('uri')} ({entry.get('kind')}, {entry.get('bytes')} bytes, "
                f"sha256 {entry.get('sha256')})")  # fmt: skip
    if record.get("status") != "succeeded":
        tail = record.get("log_tail") or []
        if tail:
            out("     stderr tail:")
            _lines(out, [str(line) for line in tail[-TAIL_LINES:]])


def _record(directory: Path) -> dict[str, Any] | None:
    for name in ("dev/termination-log", "termination-log"):
        text = _read(directory / name).strip()
        if text:
            try:
                found = json.loads(text)
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def _lines(out: Print, lines: Iterable[str]) -> None:
    for line in lines:
        out(f"       | {line}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
