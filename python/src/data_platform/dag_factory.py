"""`CustomerDAGFactory`: a DAG that inherits every platform policy; a tenant may tighten, never exceed."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from data_platform.artifacts import check_data_flow
from data_platform.policy import PlatformPolicy, PolicyError, Tenant, load_policy
from data_platform.units import UnitError, parse_duration

log = logging.getLogger(__name__)

DEFAULT_START_DATE = datetime(2026, 1, 1)


@dataclass(frozen=True)
class PlatformDag:
    """What the task factory needs to know about a DAG the platform made."""

    policy: PlatformPolicy
    tenant: Tenant
    #: The task's whole budget unless a task asks for less.
    execution_timeout: timedelta


#: Keyed by identity: a DAG's hash covers its task ids, so it changes as tasks are added.
_PLATFORM_DAGS: dict[int, tuple[weakref.ReferenceType[DAG], PlatformDag]] = {}


def platform_dag(dag: DAG) -> PlatformDag:
    entry = _PLATFORM_DAGS.get(id(dag))
    if entry is None or entry[0]() is not dag:
        raise PolicyError(
            f"DAG {dag.dag_id!r} was not made by CustomerDAGFactory.create; "
            "create it with CustomerDAGFactory.create(dag_id, tenant, schedule) "
            "so the platform's policy applies"
        )
    return entry[1]


def _register(dag: DAG, platform: PlatformDag) -> None:
    key = id(dag)
    _PLATFORM_DAGS[key] = (weakref.ref(dag, lambda _: _PLATFORM_DAGS.pop(key, None)), platform)


class PlatformDAG(DAG):
    """A DAG made by CustomerDAGFactory. The DAG processor calls `validate` once the file has run,
    when every edge exists: the moment to check what tasks read from each other (a bare input
    path two upstream tasks declare is ambiguous), still at parse time."""

    def validate(self) -> None:
        super().validate()  # type: ignore[no-untyped-call]
        check_data_flow(self)


async def run_deadline_missed(**kwargs: Any) -> None:
    """DeadlineAlert callback (runs in the triggerer): the run is late. Kept importable at top level."""
    log.warning(
        "DAG run deadline missed: tenant=%s dag_id=%s deadline=%s",
        kwargs.get("tenant"),
        kwargs.get("dag_id"),
        kwargs.get("deadline"),
    )


class CustomerDAGFactory:
    @staticmethod
    def create(
        dag_id: str,
        tenant: str,
        schedule: Any = None,
        *,
        start_date: datetime | None = None,
        retries: int | None = None,
        retry_delay: str | timedelta | None = None,
        max_retry_delay: str | timedelta | None = None,
        execution_timeout: str | timedelta | None = None,
        run_deadline: str | timedelta | None = None,
        tags: Iterable[str] = (),
        owner: str | None = None,
        description: str | None = None,
        catchup: bool = False,
        max_active_runs: int = 1,
        policy: PlatformPolicy | None = None,
        **dag_kwargs: Any,
    ) -> DAG:
        """A DAG for `tenant` with the platform's retries, timeouts, deadline, tags and owner.

        Each override may only tighten the platform's limit; asking for more is a PolicyError
        (raised while the DAG file is parsed) naming the field and the limit.
        """
        policy = policy or load_policy()
        registered = policy.tenant(tenant)
        for reserved in ("default_args", "deadline", "dagrun_timeout"):
            if reserved in dag_kwargs:
                raise PolicyError(
                    f"{dag_id}: {reserved} is set by the platform; use the factory's arguments "
                    "(retries, retry_delay, execution_timeout, run_deadline) instead"
                )
        max_retries = policy.max_retries_for(registered)
        chosen_retries = policy.retries if retries is None else retries
        chosen_retries = min(chosen_retries, max_retries) if retries is None else chosen_retries
        check_retries(f"{dag_id}: retries", chosen_retries, max_retries, tenant)
        delay = bounded(dag_id, "retry_delay", retry_delay, policy.retry_delay, policy.max_retry_delay)
        max_delay = bounded(
            dag_id, "max_retry_delay", max_retry_delay, policy.max_retry_delay, policy.max_retry_delay
        )
        timeout = bounded(
            dag_id,
            "execution_timeout",
            execution_timeout,
            policy.execution_timeout,
            policy.max_execution_timeout,
        )
        deadline = bounded(dag_id, "run_deadline", run_deadline, policy.run_deadline, policy.max_run_deadline)
        chosen_tags = sorted({*policy.tags, f"tenant:{tenant}", tenant, *tags})
        default_args = {
            "owner": owner or policy.owner,
            "retries": chosen_retries,
            "retry_delay": delay,
            "retry_exponential_backoff": policy.retry_exponential_backoff,
            "max_retry_delay": max_delay,
            "execution_timeout": timeout,
        }
        dag = PlatformDAG(
            dag_id=dag_id,
            schedule=schedule,
            start_date=start_date or DEFAULT_START_DATE,
            catchup=catchup,
            max_active_runs=max_active_runs,
            description=description,
            tags=chosen_tags,
            default_args=default_args,
            deadline=DeadlineAlert(
                reference=DeadlineReference.DAGRUN_QUEUED_AT,
                interval=deadline,
                callback=AsyncCallback(run_deadline_missed, kwargs={"tenant": tenant, "dag_id": dag_id}),
            ),
            **dag_kwargs,
        )
        _register(dag, PlatformDag(policy=policy, tenant=registered, execution_timeout=timeout))
        return dag


def check_retries(where: str, retries: Any, limit: int, tenant: str) -> int:
    """A retry count within the platform's limit for the tenant, or a PolicyError naming both."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise PolicyError(f"{where}={retries!r} must be a whole number from 0 to {limit}")
    if retries > limit:
        raise PolicyError(
            f"{where}={retries} is above the platform's limit for tenant {tenant!r} "
            f"(at most {limit}); ask for {limit} or fewer"
        )
    return retries


def bounded(
    dag_id: str, field: str, asked: str | timedelta | None, default: timedelta, limit: timedelta
) -> timedelta:
    if asked is None:
        return default
    try:
        value = parse_duration(asked, f"{dag_id}: {field}")
    except UnitError as error:
        raise PolicyError(str(error)) from None
    if value <= timedelta(0):
        raise PolicyError(f"{dag_id}: {field}={asked} must be longer than 0s; ask for up to {_show(limit)}")
    if value > limit:
        raise PolicyError(
            f"{dag_id}: {field}={asked} is above the platform's limit ({_show(limit)}); "
            f"ask for {_show(limit)} or less"
        )
    return value


def _show(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
