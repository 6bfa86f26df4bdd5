"""The four clocks of a pod task, nested so the innermost one always fires first. Pure.

    agent --timeout  <  pod activeDeadlineSeconds  <  Airflow execution_timeout
    agent --grace    <  pod terminationGracePeriodSeconds

The agent's own deadline must fire first: it is the only one that ends the task with a record
(`timed_out`, exit 124, the log tail). The pod's deadline is the backstop when the agent cannot
act (an image that never starts); Airflow's execution_timeout is the last resort, after which
Airflow deletes the pod and nothing is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

#: Time Airflow needs after the pod ends: read the record, push XCom, delete the pod.
AIRFLOW_MARGIN = timedelta(seconds=60)
#: Time the agent needs after its command is killed to write the record and exit.
REPORT_MARGIN = timedelta(seconds=10)
#: Pod start (image pull), snapshot and secrets, which the pod's deadline counts but the
#: agent's --timeout does not: a tenth of the budget, between one and five minutes.
STARTUP_SHARE = 0.1
STARTUP_MIN = timedelta(minutes=1)
STARTUP_MAX = timedelta(minutes=5)
#: The shortest command budget worth starting a pod for.
SHORTEST_COMMAND = timedelta(seconds=30)


@dataclass(frozen=True)
class Deadlines:
    #: `task-agent run --timeout`: how long the command itself may run.
    agent_timeout: timedelta
    agent_grace: timedelta
    active_deadline_seconds: int
    termination_grace_period: int
    execution_timeout: timedelta


def nest(execution_timeout: timedelta, agent_grace: timedelta) -> Deadlines:
    """Derives the inner clocks from the task's whole budget (Airflow's execution_timeout)."""
    pod_budget = execution_timeout - AIRFLOW_MARGIN
    agent_timeout = pod_budget - _startup(execution_timeout) - agent_grace - REPORT_MARGIN
    if agent_timeout < SHORTEST_COMMAND:
        raise ValueError(
            f"timeout {_show(execution_timeout)} is too short: the platform reserves "
            f"{_show(execution_timeout - agent_timeout)} of it for pod start, the {_show(agent_grace)} "
            f"shutdown grace and reporting; give at least {_show(shortest_timeout(agent_grace))}"
        )
    return Deadlines(
        agent_timeout=timedelta(seconds=int(agent_timeout.total_seconds())),
        agent_grace=agent_grace,
        active_deadline_seconds=int(pod_budget.total_seconds()),
        termination_grace_period=int((agent_grace + REPORT_MARGIN).total_seconds()),
        execution_timeout=execution_timeout,
    )


def shortest_timeout(agent_grace: timedelta) -> timedelta:
    """The shortest execution_timeout `nest` accepts, in whole seconds.

    The startup share grows with the timeout, so the answer depends on which of its three
    regimes (the minimum, a tenth, the maximum) applies; the smallest candidate that fits is it.
    """
    needed = SHORTEST_COMMAND + AIRFLOW_MARGIN + agent_grace + REPORT_MARGIN
    candidates = (needed + STARTUP_MIN, needed / (1 - STARTUP_SHARE), needed + STARTUP_MAX)
    whole = [timedelta(seconds=math.ceil(c.total_seconds())) for c in candidates]
    return min(c for c in whole if c - _startup(c) >= needed)


def _startup(execution_timeout: timedelta) -> timedelta:
    return min(max(execution_timeout * STARTUP_SHARE, STARTUP_MIN), STARTUP_MAX)


def _show(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
