"""Reading the agent's record back from the termination message, and what each ending means."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest

from conftest import SCHEMA_FILE
from data_platform import record as records
from data_platform.outcome import (
    PERMANENT_AGENT_ERRORS,
    ContainerEnd,
    MemoryPlan,
    Verdict,
    decide,
)
from data_platform.record import MESSAGE_LIMIT, Record, Unreadable

GI = 2**30
MI = 2**20
SKIP = (99,)
SHA = "3f" * 32


def agent_record(**overrides: Any) -> dict[str, Any]:
    """A final record as task-agent writes it for a task that succeeded; override what differs."""
    data: dict[str, Any] = {
        "version": 1,
        "status": "succeeded",
        "phase": "finished",
        "exit_code": 0,
        "child_exit_code": 0,
        "signal": None,
        "retryable": False,
        "error": None,
        "started_at": "2026-11-26T01:00:00.123Z",
        "finished_at": "2026-11-26T01:04:10.456Z",
        "durations_ms": {"prepare": 3, "snapshot": 812, "secrets": 95, "process": 249_100, "total": 250_333},
        "resources": {
            "peak_memory_bytes": 734_003_200,
            "memory_limit_bytes": 1_020_054_732,
            "cpu_user_ms": 181_220,
            "cpu_system_ms": 4_310,
        },
        "snapshot": {
            "source": "https://user1data.blob.core.windows.net/snapshots/user1_pipeline/2026-11-26.tar.gz",
            "sha256": SHA,
            "bytes": 48_213,
            "files": 17,
            "cache": "miss",
        },
        "secrets": {"count": 2, "duration_ms": 95},
        "return_value": {"rows": 1200, "path": "exports/2026-11-26/out.csv"},
        "return_value_truncated": False,
        "return_value_ref": None,
        "log_tail": [],
        "task": {
            "tenant": "user1",
            "dag_id": "user1_pipeline",
            "task_id": "transform",
            "run_id": "scheduled__2026-11-26T00:00:00+00:00",
            "try_number": 1,
            "map_index": -1,
        },
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "agent_version": "0.1.0",
    }
    for key, value in overrides.items():
        if key in ("peak_memory_bytes", "memory_limit_bytes"):
            data["resources"][key] = value
        else:
            data[key] = value
    return data


def failure(
    status: str, exit_code: int, *, kind: str | None, message: str = "", **more: Any
) -> dict[str, Any]:
    return agent_record(
        status=status,
        exit_code=exit_code,
        child_exit_code=more.pop("child_exit_code", None),
        error=None if kind is None else {"kind": kind, "message": message or f"{kind} happened"},
        return_value=None,
        **more,
    )


def parsed(data: dict[str, Any]) -> Record:
    found = records.parse(json.dumps(data))
    assert isinstance(found, Record), found
    return found


def outcome_of(data: dict[str, Any], container: ContainerEnd | None = None, memory: MemoryPlan | None = None):
    return decide(
        parsed(data),
        container or ContainerEnd(exit_code=data["exit_code"]),
        skip_exit_codes=SKIP,
        memory=memory,
    )


# --- The record -----------------------------------------------------------------------------------


def test_the_realistic_record_matches_the_repository_schema_and_fits_a_termination_message():
    data = agent_record()
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(data)
    assert set(data) == set(schema["required"]), "the test record has every field the schema requires"
    assert len(json.dumps(data).encode()) <= MESSAGE_LIMIT


def test_a_valid_record_is_read_with_its_fields():
    found = parsed(agent_record())
    assert found.status == "succeeded"
    assert (found.exit_code, found.child_exit_code) == (0, 0)
    assert found.retryable is False
    assert found.error_kind is None and found.error_message is None
    assert found.peak_memory_bytes == 734_003_200
    assert found.memory_limit_bytes == 1_020_054_732
    assert found.return_value == {"rows": 1200, "path": "exports/2026-11-26/out.csv"}
    assert found.return_value_ref is None
    assert found.data["task"]["task_id"] == "transform"


def test_a_record_with_surrounding_whitespace_is_read():
    assert isinstance(records.parse("\n" + json.dumps(agent_record()) + "\n\n"), Record)


@pytest.mark.parametrize("message", [None, "", "   \n"])
def test_an_empty_message_is_no_record(message):
    found = records.parse(message)
    assert isinstance(found, Unreadable)
    assert found.reason == "the container wrote no termination message"
    assert found.text is None


def test_log_text_under_fallback_to_logs_on_error_is_no_record_but_is_kept():
    logs = 'Traceback (most recent call last):\n  File "main.py", line 3\nMemoryError\n'
    found = records.parse(logs)
    assert isinstance(found, Unreadable)
    assert found.reason == "the termination message is not a task-agent record"
    assert found.text == logs.strip()


def test_long_log_text_is_cut_short():
    found = records.parse("x" * 5000)
    assert isinstance(found, Unreadable)
    assert found.text is not None
    assert found.text == "x" * 300 + "…"


def test_json_that_is_not_an_object_is_no_record():
    found = records.parse('["succeeded"]')
    assert isinstance(found, Unreadable)
    assert found.reason == "the termination message is JSON but not a record object"
    assert found.text == '["succeeded"]'


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"status": "exploded"}, "status"),
        ({"version": 2}, "version"),
        ({"exit_code": 300}, "exit_code"),
        ({"retryable": "yes"}, "retryable"),
        ({"peak_memory_bytes": -1}, "resources/peak_memory_bytes"),
        ({"unexpected": 1}, "the record"),
    ],
)
def test_json_that_does_not_match_the_schema_says_where(change, where):
    found = records.parse(json.dumps(agent_record(**change)))
    assert isinstance(found, Unreadable)
    assert found.reason.startswith(f"the termination message does not match the record schema at {where}: ")
    assert found.text is not None


def test_a_record_missing_a_field_is_no_record():
    data = agent_record()
    del data["status"]
    found = records.parse(json.dumps(data))
    assert isinstance(found, Unreadable)
    assert "'status' is a required property" in found.reason


# --- Verdicts from the record ----------------------------------------------------------------------


def test_succeeded_is_success_with_the_return_value():
    outcome = outcome_of(agent_record())
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.return_value == {"rows": 1200, "path": "exports/2026-11-26/out.csv"}
    assert outcome.message.startswith("task succeeded: status=succeeded, exit_code=0")
    assert "peak_memory=700.0 MiB" in outcome.message
    assert outcome.next_memory_limit is None


def test_the_skip_exit_code_skips():
    outcome = outcome_of(failure("failed", 99, kind="exit_code", child_exit_code=99))
    assert outcome.verdict is Verdict.SKIP
    assert outcome.message.startswith("the command exited 99, the skip code: status=failed, exit_code=99")


def test_a_failed_command_follows_the_retry_policy_and_shows_its_stderr():
    tail = [f"line {n}" for n in range(1, 9)]
    data = failure(
        "failed", 1, kind="exit_code", message="the command exited 1", child_exit_code=1, log_tail=tail
    )
    outcome = outcome_of(data)
    assert outcome.verdict is Verdict.RETRY
    message = outcome.message
    assert message.startswith("task failed: status=failed, exit_code=1")
    assert "peak_memory=700.0 MiB" in message
    assert "reason=exit_code: the command exited 1" in message
    # The last five stderr lines, the oldest of them first.
    assert "last stderr lines:\n  line 4\n  line 5\n  line 6\n  line 7\n  line 8" in message
    assert "line 3" not in message


def test_a_command_killed_by_a_signal_shows_the_signal_and_its_exit_code():
    data = failure("failed", 143, kind="signal", signal="SIGTERM", child_exit_code=None)
    outcome = outcome_of(data)
    assert outcome.verdict is Verdict.RETRY
    assert "exit_code=143" in outcome.message
    assert "signal=SIGTERM" in outcome.message


def test_the_command_exit_code_is_shown_when_it_differs_from_the_agents():
    outcome = outcome_of(failure("failed", 1, kind="exit_code", child_exit_code=3))
    assert "exit_code=1, command_exit_code=3" in outcome.message


@pytest.mark.parametrize(
    "kind", sorted({"snapshot_integrity", "snapshot_not_found", "secret_denied", "policy_denied", "usage"})
)
def test_a_permanent_agent_error_fails_without_spending_retries(kind):
    assert kind in PERMANENT_AGENT_ERRORS
    data = failure("agent_error", 77, kind=kind, message=f"{kind}: fix the input")
    outcome = outcome_of(data)
    assert outcome.verdict is Verdict.FAIL
    message = outcome.message
    assert "a retry cannot fix it, so none is spent" in message
    assert "status=agent_error, exit_code=77" in message
    assert f"reason={kind}: {kind}: fix the input" in message
    assert "peak_memory=" in message


@pytest.mark.parametrize("kind", sorted(PERMANENT_AGENT_ERRORS))
def test_every_permanent_agent_error_kind_fails(kind):
    assert outcome_of(failure("agent_error", 66, kind=kind)).verdict is Verdict.FAIL


def test_a_retryable_agent_error_retries():
    data = failure("agent_error", 69, kind="snapshot_unavailable", retryable=True)
    outcome = outcome_of(data)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.message.startswith(
        "task-agent failed, retrying may help: status=agent_error, exit_code=69"
    )
    assert "reason=snapshot_unavailable" in outcome.message


def test_a_retryable_flag_wins_over_a_permanent_kind():
    outcome = outcome_of(failure("agent_error", 66, kind="snapshot_not_found", retryable=True))
    assert outcome.verdict is Verdict.RETRY


def test_an_unknown_non_retryable_agent_error_still_follows_the_retry_policy():
    outcome = outcome_of(failure("agent_error", 70, kind="internal"))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.message.startswith("task-agent failed: ")


def test_terminated_retries():
    outcome = outcome_of(failure("terminated", 143, kind="terminated", retryable=True, signal="SIGTERM"))
    assert outcome.verdict is Verdict.RETRY
    assert "stopped from outside" in outcome.message
    assert "status=terminated, exit_code=143" in outcome.message


def test_timed_out_retries():
    outcome = outcome_of(failure("timed_out", 124, kind="timed_out", signal="SIGTERM"))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.message.startswith("task timed out: status=timed_out, exit_code=124")


# --- Out of memory --------------------------------------------------------------------------------


def oom_record(limit: int) -> dict[str, Any]:
    return failure(
        "oom_killed",
        137,
        kind="memory_limit",
        signal="SIGKILL",
        peak_memory_bytes=limit,
        memory_limit_bytes=limit,
    )


@pytest.mark.parametrize(
    ("limit", "factor", "maximum", "expected"),
    [
        (GI, 1.5, 4 * GI, 3 * GI // 2),
        (2 * GI, 1.5, 4 * GI, 3 * GI),
        (3 * GI, 1.5, 4 * GI, 4 * GI),  # capped at the size class's maximum
        (1_000_001, 1.5, 4 * GI, 1_500_002),  # rounded up to a whole byte
        (4 * GI, 2.0, 16 * GI, 8 * GI),
    ],
)
def test_an_oom_kill_retries_with_a_raised_limit_capped_at_the_maximum(limit, factor, maximum, expected):
    plan = MemoryPlan(limit_bytes=limit, factor=factor, max_bytes=maximum)
    assert plan.raised() == min(math.ceil(limit * factor), maximum) == expected
    outcome = outcome_of(oom_record(limit), ContainerEnd(exit_code=137), plan)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit == expected
    assert outcome.message.startswith("task ran out of memory: status=oom_killed, exit_code=137")
    assert "signal=SIGKILL" in outcome.message
    assert "reason=memory_limit" in outcome.message
    assert "the next try gets a " in outcome.message


def test_an_oom_kill_at_the_maximum_raises_nothing_and_says_what_to_do():
    plan = MemoryPlan(limit_bytes=4 * GI, factor=1.5, max_bytes=4 * GI)
    outcome = outcome_of(oom_record(4 * GI), ContainerEnd(exit_code=137), plan)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit is None
    assert "the memory limit is already the size class's maximum (4.0 GiB)" in outcome.message
    assert "use a larger size class" in outcome.message


def test_an_oom_kill_without_a_memory_plan_just_retries():
    outcome = outcome_of(oom_record(GI), ContainerEnd(exit_code=137), None)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit is None


def test_a_kernel_oom_kill_without_a_record_retries_with_a_raised_limit():
    plan = MemoryPlan(limit_bytes=GI, factor=1.5, max_bytes=4 * GI)
    outcome = decide(
        records.parse(""), ContainerEnd(exit_code=137, reason="OOMKilled"), skip_exit_codes=SKIP, memory=plan
    )
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit == 3 * GI // 2
    assert outcome.record is None
    message = outcome.message
    assert "killed by the kernel for using too much memory" in message
    assert "container exit code 137, reason OOMKilled" in message
    assert "the next try gets a 1.5 GiB memory limit (was 1.0 GiB)" in message


def test_a_provisional_running_record_and_a_kernel_oom_kill_retries_with_a_raised_limit():
    running = agent_record(
        status="running",
        phase="process",
        exit_code=None,
        child_exit_code=None,
        finished_at=None,
        return_value=None,
        peak_memory_bytes=900 * MI,
        memory_limit_bytes=GI,
    )
    plan = MemoryPlan(limit_bytes=GI, factor=1.5, max_bytes=4 * GI)
    found = parsed(running)
    outcome = decide(
        found, ContainerEnd(exit_code=137, reason="OOMKilled"), skip_exit_codes=SKIP, memory=plan
    )
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit == 3 * GI // 2
    assert outcome.record is found
    assert "still said `running`" in outcome.message
    assert "reason OOMKilled" in outcome.message


def test_a_provisional_record_of_a_container_killed_otherwise_retries_without_a_raise():
    running = agent_record(
        status="running", phase="process", exit_code=None, child_exit_code=None, finished_at=None
    )
    plan = MemoryPlan(limit_bytes=GI, factor=1.5, max_bytes=4 * GI)
    outcome = decide(
        parsed(running), ContainerEnd(exit_code=137, reason="Error"), skip_exit_codes=SKIP, memory=plan
    )
    assert outcome.verdict is Verdict.RETRY
    assert outcome.next_memory_limit is None
    assert "the task ended without a record: container exit code 137, reason Error" in outcome.message


# --- No record ------------------------------------------------------------------------------------


def test_exit_0_without_a_record_fails_and_says_to_run_under_task_agent():
    outcome = decide(
        records.parse(None), ContainerEnd(exit_code=0, reason="Completed"), skip_exit_codes=SKIP, memory=None
    )
    assert outcome.verdict is Verdict.FAIL
    assert "exited 0 but left no record" in outcome.message
    assert "container exit code 0, reason Completed" in outcome.message
    assert "task-agent run --result-file /dev/termination-log" in outcome.message


def test_a_failed_container_with_log_text_retries_and_quotes_the_logs():
    found = records.parse("ImportError: No module named pandas")
    outcome = decide(found, ContainerEnd(exit_code=1, reason="Error"), skip_exit_codes=SKIP, memory=None)
    assert outcome.verdict is Verdict.RETRY
    assert "container exit code 1, reason Error" in outcome.message
    assert "it said: 'ImportError: No module named pandas'" in outcome.message


def test_a_container_end_without_a_reason_says_none_given():
    outcome = decide(records.parse(""), ContainerEnd(exit_code=128), skip_exit_codes=SKIP, memory=None)
    assert "container exit code 128, reason none given" in outcome.message
    assert outcome.verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (failure("failed", 99, kind="exit_code", child_exit_code=99), Verdict.SKIP),
        (failure("failed", 2, kind="exit_code", child_exit_code=2), Verdict.RETRY),
        (failure("timed_out", 124, kind="timed_out"), Verdict.RETRY),
        (failure("terminated", 143, kind="terminated", retryable=True), Verdict.RETRY),
        (failure("agent_error", 69, kind="secret_unavailable", retryable=True), Verdict.RETRY),
        (failure("agent_error", 65, kind="snapshot_integrity"), Verdict.FAIL),
        (oom_record(GI), Verdict.RETRY),
    ],
    ids=lambda value: value.value if isinstance(value, Verdict) else value["status"],
)
def test_every_unsuccessful_ending_says_status_exit_code_reason_and_peak_memory(data, verdict):
    plan = MemoryPlan(limit_bytes=GI, factor=1.5, max_bytes=4 * GI)
    outcome = outcome_of(data, ContainerEnd(exit_code=data["exit_code"]), plan)
    assert outcome.verdict is verdict
    message = outcome.message
    assert f"status={data['status']}" in message
    assert f"exit_code={data['exit_code']}" in message
    assert f"reason={data['error']['kind']}: " in message
    assert "peak_memory=" in message and "peak_memory=unknown" not in message
    assert outcome.record is not None and outcome.record.data == data
