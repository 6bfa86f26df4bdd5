"""`PlatformPodOperator`: a KubernetesPodOperator that runs task-agent and reads its record.

No XCom sidecar: the agent writes one JSON record into the container's termination message,
which Kubernetes keeps in the pod's status. After the pod ends, `cleanup` (which the sync and
the deferrable paths both pass through) reads it, pushes `return_value` and `task_result`, and
turns the record into success, skip, fail-without-retry or retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from data_platform import record as records
from data_platform.outcome import ContainerEnd, MemoryPlan, Outcome, Verdict, decide
from data_platform.storage import blob_client, blob_error, mask_sas_signatures, without_query
from data_platform.trace import trace_environment
from data_platform.units import UnitError, format_bytes, parse_bytes

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

#: The task state store key (shared by all tries of a task instance) for the raised memory limit.
MEMORY_LIMIT_KEY = "data_platform.memory_limit_bytes"
#: XCom key of the whole record.
RECORD_XCOM_KEY = "task_result"


class PlatformPodOperator(KubernetesPodOperator):
    """Runs `task-agent run …` in a pod; see the module docstring. Built by `PlatformTaskFactory`."""

    def __init__(
        self,
        *,
        skip_exit_codes: Collection[int] = (),
        oom_memory_factor: float = 1.0,
        max_memory: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("do_xcom_push"):
            raise ValueError(
                "PlatformPodOperator reads results from the agent's record; do_xcom_push (the XCom sidecar) "
                "is not supported"
            )
        kwargs["do_xcom_push"] = False
        kwargs.setdefault("termination_message_policy", "FallbackToLogsOnError")
        super().__init__(**kwargs)
        self.skip_exit_codes = tuple(skip_exit_codes)
        self.oom_memory_factor = oom_memory_factor
        self.max_memory = max_memory

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        super().render_template_fields(context, jinja_env)
        # A snapshot URL may carry a SAS; the rendered arguments are stored and shown in the UI.
        for argument in self.arguments or []:
            mask_sas_signatures(argument)

    def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> k8s.V1Pod:
        if self.pod_template_file and not Path(self.pod_template_file).is_file():
            # The base class would only warn and build an unhardened pod without the template.
            raise AirflowFailException(
                f"the pod template {self.pod_template_file} does not exist on this worker; mount the "
                "chart's pod template ConfigMap there, or fix DATA_PLATFORM_POD_TEMPLATE_FILE"
            )
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        container = self._base_container(pod)
        if container is None:
            return pod
        extra = [k8s.V1EnvVar(name=name, value=value) for name, value in trace_environment(context).items()]
        container.env = _last_of_each_name([*(container.env or []), *extra])
        raised = self._stored_memory_limit(context)
        limits = (container.resources.limits if container.resources else None) or {}
        current = _bytes_or_none(limits.get("memory"))
        if raised is not None and current is not None and raised > current:
            self.log.info("An earlier try ran out of memory: this try gets %s", format_bytes(raised))
            limits["memory"] = format_bytes(raised)
        return pod

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict[Any, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        end = container_end(remote_pod, self.base_container_name) if remote_pod else None
        if self._killed or end is None:
            # Killed by Airflow, or the container never ran to an end (it could not start): the
            # base class's own handling and message say more than a missing record would.
            super().cleanup(pod, remote_pod, xcom_result, context)
            return
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowException as generic:
            # "Pod … returned a failure": replaced by the record's verdict below.
            self.log.debug("Base class verdict replaced by the record's: %s", generic)
        outcome = self.outcome_of(remote_pod)
        self.conclude(outcome, context)

    def outcome_of(self, remote_pod: k8s.V1Pod) -> Outcome:
        message = records.parse(_termination_message(remote_pod, self.base_container_name))
        end = container_end(remote_pod, self.base_container_name) or ContainerEnd()
        return decide(
            message, end, skip_exit_codes=self.skip_exit_codes, memory=self._memory_plan(remote_pod)
        )

    def conclude(self, outcome: Outcome, context: Context | None) -> None:
        """Pushes the XCom values and raises what the verdict asks for."""
        ti = context.get("ti") if context else None
        if ti is not None and outcome.record is not None:
            ti.xcom_push(key=RECORD_XCOM_KEY, value=outcome.record.data)
            if outcome.verdict in (Verdict.SUCCESS, Verdict.SKIP):
                ti.xcom_push(key="return_value", value=self._return_value(outcome))
        if outcome.verdict is Verdict.SUCCESS:
            self.log.info("%s", outcome.message)
            return
        if outcome.verdict is Verdict.SKIP:
            raise AirflowSkipException(outcome.message)
        if outcome.verdict is Verdict.FAIL:
            raise AirflowFailException(outcome.message)
        if outcome.next_memory_limit is not None and context is not None:
            store = context.get("task_state_store")
            if store is not None:
                store.set(MEMORY_LIMIT_KEY, outcome.next_memory_limit)
        raise AirflowException(outcome.message)

    def _return_value(self, outcome: Outcome) -> Any:
        record = outcome.record
        if record is None:
            return None
        ref = record.return_value_ref
        if ref is None:
            return record.return_value
        return download_return_value(ref)

    def _memory_plan(self, remote_pod: k8s.V1Pod) -> MemoryPlan | None:
        if self.max_memory is None:
            return None
        container = self._base_container(remote_pod)
        limits = (container.resources.limits if container and container.resources else None) or {}
        limit = _bytes_or_none(limits.get("memory"))
        maximum = _bytes_or_none(self.max_memory)
        if limit is None or maximum is None:
            return None
        return MemoryPlan(limit_bytes=limit, factor=self.oom_memory_factor, max_bytes=maximum)

    def _stored_memory_limit(self, context: Context | None) -> int | None:
        store = context.get("task_state_store") if context else None
        if store is None:
            return None
        value = store.get(MEMORY_LIMIT_KEY)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        maximum = _bytes_or_none(self.max_memory) if self.max_memory else None
        return value if maximum is None else min(value, maximum)

    def _base_container(self, pod: k8s.V1Pod) -> k8s.V1Container | None:
        containers = (pod.spec.containers if pod and pod.spec else None) or []
        return next((c for c in containers if c.name == self.base_container_name), None)


def container_end(pod: k8s.V1Pod, container_name: str) -> ContainerEnd | None:
    """The container's `state.terminated`, or None while it has not ended."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    status = next((s for s in statuses if s.name == container_name), None)
    terminated = status.state.terminated if status and status.state else None
    if terminated is None:
        return None
    return ContainerEnd(exit_code=terminated.exit_code, reason=terminated.reason, message=terminated.message)


def download_return_value(ref: dict[str, Any]) -> Any:
    """A return value the agent spilled to Blob Storage (too large for the record), verified."""
    from azure.core.exceptions import AzureError

    uri = str(ref["uri"])
    shown = without_query(uri)
    with ExitStack() as stack:
        client, credential = blob_client(uri, stack)
        try:
            body = client.download_blob().readall()
        except AzureError as err:
            raise blob_error(err, shown, credential) from None
    digest = hashlib.sha256(body).hexdigest()
    if digest != ref["sha256"]:
        raise AirflowException(
            f"the return value at {shown} has sha256 {digest}, but the record says "
            f"{ref['sha256']}: it was changed after the task wrote it"
        )
    return json.loads(body)


def _last_of_each_name(env: list[k8s.V1EnvVar]) -> list[k8s.V1EnvVar]:
    """The template's and the operator's variables merged: a later definition of a name wins, in
    the place of the first (the template and the operator both set the downward-API ones)."""
    chosen: dict[str, k8s.V1EnvVar] = {}
    for variable in env:
        chosen[variable.name] = variable
    return list(chosen.values())


def _termination_message(pod: k8s.V1Pod, container_name: str) -> str | None:
    end = container_end(pod, container_name)
    return end.message if end else None


def _bytes_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_bytes(str(value), "memory")
    except UnitError:
        return None
