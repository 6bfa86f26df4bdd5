"""CustomerDAGFactory: a DAG inherits the platform's policy; a tenant may tighten it, never exceed it."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from conftest import POLICY_FILE
from data_platform import CustomerDAGFactory, PlatformTaskFactory, PolicyError, load_policy
from data_platform.dag_factory import DEFAULT_START_DATE, platform_dag, run_deadline_missed

SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/p/1.tar.gz"


@pytest.fixture
def policy():
    return load_policy(POLICY_FILE)


def make(dag_id: str = "pipeline", tenant: str = "user1", **kwargs) -> DAG:
    return CustomerDAGFactory.create(dag_id, tenant, "@daily", policy=load_policy(POLICY_FILE), **kwargs)


def alert_of(dag: DAG) -> DeadlineAlert:
    """The DAG's one deadline alert."""
    assert isinstance(dag.deadline, list) and len(dag.deadline) == 1
    return dag.deadline[0]


def test_a_dag_inherits_the_platforms_retry_policy_timeout_and_owner(policy):
    dag = make()
    assert dag.default_args == {
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
    }
    assert isinstance(dag.default_args["retry_exponential_backoff"], float)
    # What a task of the DAG actually gets.
    task = EmptyOperator(task_id="t", dag=dag)
    assert task.retries == policy.retries
    assert task.retry_delay == policy.retry_delay
    assert task.retry_exponential_backoff == 2.0
    assert isinstance(task.retry_exponential_backoff, float)
    assert task.max_retry_delay == policy.max_retry_delay
    assert task.execution_timeout == policy.execution_timeout
    assert task.owner == "data-platform"
    assert str(dag.schedule) == "@daily"
    assert dag.start_date is not None and dag.start_date.replace(tzinfo=None) == DEFAULT_START_DATE
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_tags_include_the_platforms_the_tenant_and_the_authors():
    dag = make(tags=["finance", "daily"])
    assert set(dag.tags) == {"data-platform", "user1", "tenant:user1", "finance", "daily"}


def test_the_run_deadline_alert_counts_from_when_the_run_was_queued():
    dag = make(run_deadline="3h")
    alert = alert_of(dag)
    assert isinstance(alert, DeadlineAlert)
    assert alert.interval == timedelta(hours=3)
    assert isinstance(alert.reference, type(DeadlineReference.DAGRUN_QUEUED_AT))
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "data_platform.dag_factory.run_deadline_missed"
    assert alert.callback.kwargs == {"tenant": "user1", "dag_id": "pipeline"}


def test_the_default_run_deadline_is_the_platforms(policy):
    assert alert_of(make()).interval == policy.run_deadline == timedelta(hours=6)


def test_the_deadline_callback_is_awaitable_and_logs_the_run(caplog):
    with caplog.at_level(logging.WARNING, logger="data_platform.dag_factory"):
        asyncio.run(run_deadline_missed(tenant="user1", dag_id="pipeline", deadline="2026-11-26T06:00:00Z"))
    assert (
        "DAG run deadline missed: tenant=user1 dag_id=pipeline deadline=2026-11-26T06:00:00Z" in caplog.text
    )


def test_a_tenant_may_tighten_every_limit():
    dag = make(
        retries=1,
        retry_delay="30s",
        max_retry_delay="10m",
        execution_timeout="45m",
        run_deadline="1h",
        owner="user1-team",
        start_date=datetime(2026, 3, 1),
    )
    assert dag.default_args["retries"] == 1
    assert dag.default_args["retry_delay"] == timedelta(seconds=30)
    assert dag.default_args["max_retry_delay"] == timedelta(minutes=10)
    assert dag.default_args["execution_timeout"] == timedelta(minutes=45)
    assert dag.default_args["owner"] == "user1-team"
    assert alert_of(dag).interval == timedelta(hours=1)
    assert platform_dag(dag).execution_timeout == timedelta(minutes=45)


def test_zero_retries_and_exactly_the_limits_are_allowed(policy):
    dag = make(retries=0)
    assert dag.default_args["retries"] == 0
    dag = make(retries=5, execution_timeout="12h", run_deadline="24h", retry_delay="30m")
    assert dag.default_args["retries"] == policy.max_retries
    assert dag.default_args["execution_timeout"] == policy.max_execution_timeout
    assert alert_of(dag).interval == policy.max_run_deadline


def test_timedelta_values_are_accepted_as_well_as_text():
    dag = make(execution_timeout=timedelta(minutes=20), run_deadline=timedelta(hours=2))
    assert dag.default_args["execution_timeout"] == timedelta(minutes=20)
    assert alert_of(dag).interval == timedelta(hours=2)


def test_retries_above_the_platform_limit_name_the_field_and_the_limit():
    with pytest.raises(PolicyError) as caught:
        make(retries=6)
    message = str(caught.value)
    assert message.startswith("pipeline: retries=6 is above the platform's limit for tenant 'user1'")
    assert "(at most 5)" in message
    assert "ask for 5 or fewer" in message


def test_retries_above_the_tenants_own_limit_name_it():
    with pytest.raises(
        PolicyError, match=r"retries=4 is above the platform's limit for tenant 'user2' \(at most 3\)"
    ):
        make(tenant="user2", retries=4)
    assert make(tenant="user2", retries=3).default_args["retries"] == 3


def test_the_platforms_default_retries_are_capped_at_the_tenants_limit(tmp_path):
    text = POLICY_FILE.read_text().replace("    max_retries: 3", "    max_retries: 1")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    dag = CustomerDAGFactory.create("capped", "user2", None, policy=load_policy(path))
    assert dag.default_args["retries"] == 1


@pytest.mark.parametrize("retries", [-1, "3", 2.0, True])
def test_retries_that_are_not_a_count_are_refused(retries):
    with pytest.raises(PolicyError, match=r"pipeline: retries=.* must be a whole number from 0 to 5"):
        make(retries=retries)


@pytest.mark.parametrize(
    ("field", "asked", "limit"),
    [
        ("execution_timeout", "13h", "12h"),
        ("execution_timeout", "1d", "12h"),
        ("run_deadline", "25h", "1d"),
        ("run_deadline", "2d", "1d"),
        ("retry_delay", "31m", "30m"),
        ("max_retry_delay", "1h", "30m"),
    ],
)
def test_a_duration_above_the_limit_names_the_field_and_the_limit(field, asked, limit):
    with pytest.raises(PolicyError) as caught:
        make(**{field: asked})
    message = str(caught.value)
    assert message == (
        f"pipeline: {field}={asked} is above the platform's limit ({limit}); ask for {limit} or less"
    )


@pytest.mark.parametrize("field", ["execution_timeout", "run_deadline", "retry_delay", "max_retry_delay"])
def test_a_zero_duration_is_refused_without_claiming_it_is_too_long(field):
    with pytest.raises(PolicyError) as caught:
        make(**{field: "0s"})
    message = str(caught.value)
    assert f"pipeline: {field}=0s must be longer than 0s" in message
    assert "above" not in message


def test_a_malformed_duration_names_the_field():
    with pytest.raises(PolicyError, match=r"pipeline: execution_timeout: expected a duration like 90s, 30m"):
        make(execution_timeout="two hours")


def test_an_unknown_tenant_names_the_registered_ones():
    with pytest.raises(PolicyError) as caught:
        make(tenant="user9")
    assert "tenant 'user9' is not registered" in str(caught.value)
    assert "(registered: user1, user2)" in str(caught.value)


@pytest.mark.parametrize("reserved", ["default_args", "deadline", "dagrun_timeout"])
def test_arguments_the_platform_sets_are_refused(reserved):
    with pytest.raises(PolicyError) as caught:
        arguments: dict[str, Any] = {reserved: {} if reserved == "default_args" else timedelta(hours=1)}
        make(**arguments)
    message = str(caught.value)
    assert message.startswith(f"pipeline: {reserved} is set by the platform")
    assert "use the factory's arguments" in message


def test_other_dag_arguments_pass_through():
    dag = make(description="user1's daily load", doc_md="# Daily", max_active_runs=2)
    assert dag.description == "user1's daily load"
    assert dag.doc_md == "# Daily"
    assert dag.max_active_runs == 2


def test_without_a_policy_argument_the_policy_file_is_read(tmp_path, monkeypatch):
    text = POLICY_FILE.read_text().replace("owner: data-platform", "owner: from-the-file")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    monkeypatch.setenv("DATA_PLATFORM_POLICY_FILE", str(path))
    dag = CustomerDAGFactory.create("from_env", "user1", None)
    assert dag.default_args["owner"] == "from-the-file"


def test_the_task_factory_refuses_a_plain_dag_and_says_how_to_make_one():
    plain = DAG("plain_dag", schedule=None, start_date=datetime(2026, 1, 1))
    with pytest.raises(PolicyError) as caught:
        PlatformTaskFactory(plain)
    message = str(caught.value)
    assert "DAG 'plain_dag' was not made by CustomerDAGFactory.create" in message
    assert "CustomerDAGFactory.create(dag_id, tenant, schedule)" in message


def test_a_dag_stays_known_to_the_platform_as_tasks_are_added():
    # A DAG's hash covers its task ids: the registry must not lose it when tasks are added.
    dag = make()
    PlatformTaskFactory(dag).aks_python("first", SNAPSHOT, "first.py")
    second = PlatformTaskFactory(dag).aks_python("second", SNAPSHOT, "second.py")
    assert second.dag is dag
    assert set(dag.task_ids) == {"first", "second"}


def test_two_dags_with_the_same_id_keep_their_own_tenant():
    first = make("same_id", tenant="user1")
    second = make("same_id", tenant="user2")
    assert platform_dag(first).tenant.name == "user1"
    assert platform_dag(second).tenant.name == "user2"
    del first
    gc.collect()
    assert platform_dag(second).tenant.name == "user2"
