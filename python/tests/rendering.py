"""Renders a pod task the way Airflow's task runner does before it creates the pod: no cluster needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseOperator
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from data_platform.operator import PlatformPodOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

RUN_ID = "scheduled__2026-11-26T00:00:00+00:00"


class StateStore:
    """Airflow 3.3's `task_state_store`: a key-value store shared by the tries of a task instance."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


@dataclass
class RunningTask:
    """The task instance attributes templates and KubernetesPodOperator's pod labels read."""

    dag_id: str
    task_id: str
    try_number: int = 1
    map_index: int = -1
    context_carrier: dict[str, str] | None = None
    xcom: dict[str, Any] = field(default_factory=dict)
    #: What other tasks of the run pushed, by (task_id, key): what `xcom_pull` answers.
    pushed_by_others: dict[tuple[str, str], Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.pushed_by_others.get((task_ids, key))


def context_for(
    op: BaseOperator,
    *,
    try_number: int = 1,
    map_index: int = -1,
    store: StateStore | None = None,
    trace_carrier: dict[str, str] | None = None,
    pushed_by_others: dict[tuple[str, str], Any] | None = None,
) -> Context:
    """What Airflow's task context holds that templates and the pod operator read, for one try."""
    ti = RunningTask(
        dag_id=op.dag_id,
        task_id=op.task_id,
        try_number=try_number,
        map_index=map_index,
        context_carrier=trace_carrier,
        pushed_by_others=dict(pushed_by_others or {}),
    )
    context: dict[str, Any] = {
        "dag": op.dag,
        "task": op,
        "ti": ti,
        "task_instance": ti,
        "run_id": RUN_ID,
        "ds": "2026-11-26",
        "ds_nodash": "20261126",
        "logical_date": "2026-11-26T00:00:00+00:00",
        "params": {},
        "var": {},
    }
    if store is not None:
        context["task_state_store"] = store
    return cast("Context", context)


def render(op: PlatformPodOperator, context: Context) -> k8s.V1Pod:
    """Templates rendered, upstream inputs resolved (as `execute` does first), then the pod
    request built without a cluster (`dry_run`)."""
    op.render_template_fields(context)
    op.bind_inputs(context)
    return op.build_pod_request_obj(context, dry_run=True)


def as_manifest(pod: k8s.V1Pod) -> dict[str, Any]:
    """The pod as the Kubernetes API receives it (camelCase JSON, no nulls)."""
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return manifest


def base_container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "base")
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """Variable name → value (or its `valueFrom`)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
