"""The four clocks of a pod task nest so the agent's own deadline, which reports, fires first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from data_platform.deadlines import REPORT_MARGIN, SHORTEST_COMMAND, nest, shortest_timeout
from data_platform.units import parse_duration

TIMEOUTS = [
    "3m",
    "3m10s",
    "4m",
    "5m",
    "7m30s",
    "10m",
    "15m",
    "30m",
    "45m",
    "1h",
    "2h",
    "3h",
    "6h",
    "12h",
    "24h",
]
GRACES = ["5s", "30s", "2m"]


def _budgets() -> list[tuple[timedelta, timedelta]]:
    """Every (timeout, grace) pair from 3m to 24h long enough for the grace, and each grace's minimum."""
    pairs = []
    for grace in map(lambda text: parse_duration(text, "grace"), GRACES):
        pairs.append((shortest_timeout(grace), grace))
        for timeout in (parse_duration(text, "timeout") for text in TIMEOUTS):
            if timeout >= shortest_timeout(grace):
                pairs.append((timeout, grace))
    return pairs


def test_the_budgets_cover_three_minutes_to_a_day():
    timeouts = [timeout for timeout, _ in _budgets()]
    assert min(timeouts) <= timedelta(minutes=3)
    assert max(timeouts) == timedelta(hours=24)
    assert len(timeouts) > 30


@pytest.mark.parametrize(("execution_timeout", "agent_grace"), _budgets(), ids=str)
def test_the_clocks_nest_innermost_first(execution_timeout, agent_grace):
    clocks = nest(execution_timeout, agent_grace)

    # The agent's timeout, its SIGTERM→SIGKILL grace and the time to write the record all fit
    # inside the pod's deadline, which in turn ends before Airflow gives up on the task.
    agent_done = clocks.agent_timeout + clocks.agent_grace + REPORT_MARGIN
    assert agent_done < timedelta(seconds=clocks.active_deadline_seconds)
    assert timedelta(seconds=clocks.active_deadline_seconds) < execution_timeout
    # Kubernetes' grace (SIGTERM→SIGKILL of the container) outlasts the agent's grace for the command.
    assert timedelta(seconds=clocks.termination_grace_period) > clocks.agent_grace
    assert clocks.agent_timeout >= SHORTEST_COMMAND
    assert clocks.execution_timeout == execution_timeout
    assert clocks.agent_grace == agent_grace
    # Whole seconds, as the agent's flag and the pod spec need them.
    assert clocks.agent_timeout.total_seconds() == int(clocks.agent_timeout.total_seconds())
    assert isinstance(clocks.active_deadline_seconds, int)
    assert isinstance(clocks.termination_grace_period, int)


def test_most_of_a_long_budget_goes_to_the_command():
    clocks = nest(timedelta(hours=2), timedelta(seconds=30))
    assert clocks.agent_timeout >= timedelta(hours=1, minutes=50)


@pytest.mark.parametrize("grace", ["5s", "30s", "2m", "7m", "10m", "30m", "1h"])
def test_a_too_short_timeout_names_a_minimum_that_is_accepted(grace):
    agent_grace = parse_duration(grace, "grace")
    minimum = shortest_timeout(agent_grace)
    # The named minimum works, and one second less does not: the advice can be followed.
    nest(minimum, agent_grace)
    with pytest.raises(ValueError, match="too short"):
        nest(minimum - timedelta(seconds=1), agent_grace)


def test_a_too_short_timeout_says_what_is_reserved_and_the_minimum():
    with pytest.raises(ValueError) as caught:
        nest(timedelta(minutes=2), timedelta(seconds=30))
    message = str(caught.value)
    assert "timeout 2m is too short" in message
    assert "30s shutdown grace" in message
    minimum = shortest_timeout(timedelta(seconds=30))
    assert minimum == timedelta(seconds=190)
    assert message.endswith("give at least 190s")


def test_a_long_grace_raises_the_minimum_past_the_startup_floor():
    # With a 10 minute grace the pod-start share is above its one-minute floor at the minimum, so
    # the minimum is more than the sum of the fixed parts (30s + 1m + 1m + 10m + 10s = 760s).
    grace = timedelta(minutes=10)
    minimum = shortest_timeout(grace)
    assert minimum > timedelta(seconds=760)
    assert minimum == timedelta(seconds=778)
    with pytest.raises(ValueError, match=r"timeout 12m is too short: .* give at least 778s$"):
        nest(timedelta(minutes=12), grace)
    nest(minimum, grace)
