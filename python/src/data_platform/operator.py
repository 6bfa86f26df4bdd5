"""`PlatformPodOperator`: a KubernetesPodOperator that runs task-agent and reads its record.

No XCom sidecar: the agent writes one JSON record into the container's termination message,
which Kubernetes keeps in the pod's status. After the pod ends, `cleanup` (which the sync and
the deferrable paths both pass through) reads it, pushes `return_value`, `task_result` and the
declared `outputs`, and turns the record into success, skip, fail-without-retry or retry.

Before the pod is built, `execute` resolves inputs that name an upstream task's output into
`--input` arguments (data_platform.artifacts).

With `[data_platform] local_runner` configured, `execute` runs the same pod on this machine
instead (data_platform.local) and completes it through the same `cleanup`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import Asset
from airflow.sdk.definitions.xcom_arg import PlainXComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

from data_platform import lineage, telemetry
from data_platform import record as records
from data_platform.agent_command import with_arguments_before_command
from data_platform.artifacts import (
    OUTPUTS_XCOM_KEY,
    BlobInput,
    Input,
    Output,
    OutputRef,
    RecordedOutput,
    check_output_ref,
    input_arguments_for,
    recorded_outputs,
    upstream_inputs,
)
from data_platform.cost import CostModel, try_cost, usage_of
from data_platform.local.backends import Backend, backend_for
from data_platform.local.runner import run_locally
from data_platform.local.settings import local_settings
from data_platform.outcome import ContainerEnd, MemoryPlan, Outcome, Verdict, decide
from data_platform.pod_paths import add_declared_volumes
from data_platform.storage import blob_client, blob_error, local_path, mask_sas_signatures, without_query
from data_platform.trace import trace_environment
from data_platform.units import UnitError, format_bytes, parse_bytes, parse_quantity

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from data_platform.lineage import OperatorLineage

#: The task state store key (shared by all tries of a task instance) for the raised memory limit.
MEMORY_LIMIT_KEY = "data_platform.memory_limit_bytes"
#: XCom key of the whole record.
RECORD_XCOM_KEY = "task_result"
#: The pod's requests and limits, for the record's usage (task-agent's --cpu-request … options).
USAGE_ENV = {
    ("requests", "cpu"): "TASK_AGENT_CPU_REQUEST",
    ("limits", "cpu"): "TASK_AGENT_CPU_LIMIT",
    ("requests", "memory"): "TASK_AGENT_MEMORY_REQUEST",
    ("limits", "memory"): "TASK_AGENT_POD_MEMORY_LIMIT",
}


class PlatformPodOperator(KubernetesPodOperator):
    """Runs `task-agent run …` in a pod; see the module docstring. Built by `PlatformTaskFactory`."""

    def __init__(
        self,
        *,
        skip_exit_codes: Collection[int] = (),
        oom_memory_factor: float = 1.0,
        max_memory: str | None = None,
        data_outputs: Sequence[Output] = (),
        data_inputs: Sequence[Input] = (),
        data_assets: Mapping[str, str] | None = None,
        allowed_storage: Sequence[str] = (),
        tenant: str | None = None,
        size_class: str | None = None,
        cost_model: CostModel | None = None,
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
        self.data_outputs = tuple(data_outputs)
        self.data_inputs = tuple(data_inputs)
        #: Output path → the URI of the Asset (outlet) it is declared as.
        self.data_assets = dict(data_assets or {})
        #: The tenant's storage: the only place a resolved input may point to.
        self.allowed_storage = tuple(allowed_storage)
        self.tenant = tenant
        self.size_class = size_class
        self.cost_model = cost_model or CostModel()
        #: The back-end running this try on this machine, when a local runner is configured.
        self._local: Backend | None = None
        #: What this try ended with (record, verdict, cost), for the lineage methods after it.
        self.try_report: TryReport | None = None
        #: The try's lineage, built when it ended (get_openlineage_facets_on_complete/_on_failure).
        self._end_lineage: OperatorLineage | None = None
        self._recorded: list[RecordedOutput] = []

    @property
    def output(self) -> _OutputXComArg:
        """`task.output` is Airflow's XComArg of the return value, as on any operator;
        `task.output("/data/out.csv")` names a declared output, for a later task's `inputs`."""
        return _OutputXComArg(operator=self)

    def execute(self, context: Context) -> Any:
        self.bind_inputs(context)
        settings = local_settings()
        if settings is None:
            return super().execute(context)
        # Below `execute`: the pod request, the record's reading and the verdict are the
        # cluster path's own; only creating, watching and deleting the pod are local. Deferral
        # needs a cluster to watch, so a local try always runs in the worker.
        self.name = self._set_name(self.name)
        self._local = backend_for(settings)
        run_locally(self, context, settings, self._local)
        return None

    # A local pod has no API server: nothing to label, delete or ask about istio; its
    # directory is kept for inspection.
    def process_pod_deletion(self, pod: k8s.V1Pod, *, reraise: bool = True) -> bool:
        if self._local is not None:
            return True
        return bool(super().process_pod_deletion(pod, reraise=reraise))

    def patch_already_checked(self, pod: k8s.V1Pod, *, reraise: bool = True) -> None:
        if self._local is None:
            super().patch_already_checked(pod, reraise=reraise)

    def is_istio_enabled(self, pod: k8s.V1Pod) -> bool:
        return False if self._local is not None else bool(super().is_istio_enabled(pod))

    def on_kill(self) -> None:
        if self._local is not None:
            self._killed = True
            self._local.stop()
            return
        super().on_kill()

    def bind_inputs(self, context: Context) -> None:
        """Upstream outputs this task reads become `--input PATH=URI#sha256=…` (before the pod is
        built). Static blob inputs were added at parse time; this adds the run's resolved ones."""
        extra: list[str] = []
        for item, producer, found in upstream_inputs(self, self.data_inputs, context, self.allowed_storage):
            self.log.info("Input %s: %s's output %s, %s (sha256 %s)", item.path, producer, found.path,
                          found.uri, found.sha256)  # fmt: skip
            extra += input_arguments_for(found, item.path)
        arguments = list(self.arguments or [])
        # Idempotent: the arguments were rendered in place and may already hold these.
        extra = [word for pair in zip(extra[::2], extra[1::2], strict=True) if pair[1] not in arguments
                 for word in pair]  # fmt: skip
        if extra:
            self.arguments = with_arguments_before_command(arguments, extra)

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
        raised = self._stored_memory_limit(context)
        limits = (container.resources.limits if container.resources else None) or {}
        current = _bytes_or_none(limits.get("memory"))
        if raised is not None and current is not None and raised > current:
            self.log.info("An earlier try ran out of memory: this try gets %s", format_bytes(raised))
            limits["memory"] = format_bytes(raised)
        usage = usage_environment(container)
        extra += [k8s.V1EnvVar(name=name, value=value) for name, value in usage.items()]
        parent = self._lineage_parent(context)
        extra += [k8s.V1EnvVar(name=name, value=value) for name, value in parent.items()]
        container.env = _last_of_each_name([*(container.env or []), *extra])
        # The root file system is read-only: a declared path gets a writable volume (pod_paths).
        declared = [*(output.path for output in self.data_outputs), *(item.path for item in self.data_inputs)]
        add_declared_volumes(pod, container, declared)
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
        self.try_report = self.report_try(remote_pod, outcome, context)
        self.conclude(outcome, context)

    def report_try(self, remote_pod: k8s.V1Pod, outcome: Outcome, context: Context | None) -> TryReport:
        """The try's cost (every try: failed, retried and killed ones too), counted in the metrics."""
        found = records.parse(_termination_message(remote_pod, self.base_container_name))
        data = found.data if isinstance(found, records.Record) else None
        container = self._base_container(remote_pod)
        resources = container.resources if container else None
        requests = (resources.requests if resources else None) or {}
        terminated = _terminated(remote_pod, self.base_container_name)
        usage = usage_of(
            data,
            requests=(_millicores_or_none(requests.get("cpu")), _bytes_or_none(requests.get("memory"))),
            started=terminated.started_at if terminated else None,
            finished=terminated.finished_at if terminated else None,
        )
        cost = None
        if usage is not None:
            rates = self.cost_model.rates_for(self.size_class)
            cost = try_cost(usage, rates, self.cost_model.currency)
        ti = context.get("ti") if context else None
        # A retry verdict on the last try is the task's failure: Airflow has no retry left to give.
        label = outcome.verdict.value
        try_number = getattr(ti, "try_number", None)
        if (
            outcome.verdict is Verdict.RETRY
            and isinstance(try_number, int)
            and try_number > (self.retries or 0)
        ):
            label = "fail"
        report = TryReport(
            record=data, verdict=outcome.verdict, message=outcome.message, cost=cost, outcome=label
        )
        telemetry.record_try(
            tenant=self.tenant or "", dag_id=self.dag_id, task_id=self.task_id, outcome=label, cost=cost
        )
        if cost is not None:
            self.log.info(
                "This try cost %.6f %s (%.4f vCPU-hours, %.4f GiB-hours; try %s)",
                cost["total"], cost["currency"], cost["cpu_core_hours"], cost["memory_gib_hours"],
                getattr(ti, "try_number", "?"),
            )  # fmt: skip
        return report

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
            cost = self.try_report.cost if self.try_report else None
            ti.xcom_push(key=RECORD_XCOM_KEY, value={**outcome.record.data, "cost": cost})
            if outcome.verdict in (Verdict.SUCCESS, Verdict.SKIP):
                ti.xcom_push(key="return_value", value=self._return_value(outcome))
            if outcome.verdict is Verdict.SUCCESS and self.data_outputs:
                outputs = self._recorded_outputs(outcome.record)
                self._recorded = list(outputs)
                ti.xcom_push(key=OUTPUTS_XCOM_KEY, value=[output.as_xcom() for output in outputs])
                self._describe_asset_events(outputs, context)
        self._end_lineage = self._guarded_lineage("end", lambda: self._lineage_at_end(context))
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

    # OpenLineage (data_platform.lineage): the provider's listener calls these around each try.
    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        return self._guarded_lineage("start", self._lineage_at_start)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        return self._end_lineage or self._guarded_lineage("end", lambda: self._lineage_at_end(None))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        return self.get_openlineage_facets_on_complete(task_instance)

    def _guarded_lineage(self, stage: str, build: Any) -> OperatorLineage:
        return lineage.guarded(build, tenant=self.tenant or "", dag_id=self.dag_id, task_id=self.task_id,
                               stage=stage, logger=self.log)  # fmt: skip

    def _job_facets(self) -> dict[str, Any]:
        dag = getattr(self, "_dag", None)
        tags = (getattr(dag, "tags", None) or ()) if dag is not None else ()
        return lineage.job_facets(
            tenant=self.tenant or "", owner=str(self.owner), tags=tags, snapshot=self._snapshot(),
            job_type="PLATFORM_POD_TASK",
        )  # fmt: skip

    def _snapshot(self) -> tuple[str, str | None] | None:
        """The snapshot that ran (the record's, with its sha256), else the one the task names."""
        recorded = (self.try_report.record or {}).get("snapshot") if self.try_report else None
        if isinstance(recorded, dict):
            return str(recorded["source"]), str(recorded["sha256"])
        arguments = list(self.arguments or [])
        if "--snapshot" not in arguments:
            return None
        uri = str(arguments[arguments.index("--snapshot") + 1])
        sha = (
            arguments[arguments.index("--snapshot-sha256") + 1] if "--snapshot-sha256" in arguments else None
        )
        return without_query(uri), (str(sha) if sha else None)

    def _static_inputs(self) -> list[Any]:
        return [lineage.input_dataset(item.source.uri) for item in self.data_inputs
                if isinstance(item.source, BlobInput)]  # fmt: skip

    def _lineage_at_start(self) -> OperatorLineage:
        return lineage.lineage(self._static_inputs(), job=self._job_facets())

    def _lineage_at_end(self, context: Context | None) -> OperatorLineage:
        report = self.try_report
        record = report.record if report else None
        inputs = [lineage.input_dataset(entry["uri"], entry) for entry in (record or {}).get("inputs") or []]
        if not inputs:
            inputs = self._static_inputs()
        entries = (record or {}).get("outputs") or [output.as_xcom() for output in self._recorded]
        outputs = [lineage.output_dataset(entry["uri"], entry) for entry in entries]
        ti = context.get("ti") if context else None
        run = {}
        if report is not None:
            run = lineage.run_facets(
                tenant=self.tenant or "", dag_id=self.dag_id, task_id=self.task_id,
                size_class=self.size_class, verdict=report.outcome,
                message=report.message, record=record, cost=report.cost,
                try_number=getattr(ti, "try_number", None),
                failed=report.verdict in (Verdict.RETRY, Verdict.FAIL),
            )  # fmt: skip
        return lineage.lineage(inputs, outputs, run=run, job=self._job_facets())

    def _lineage_parent(self, context: Context | None) -> dict[str, str]:
        """OPENLINEAGE_CONTEXT and OPENLINEAGE_PARENT_ID for the pod, or nothing (counted, logged once)."""
        ti = context.get("ti") if context else None
        if ti is None:
            return {}
        try:
            return lineage.parent_environment(ti)
        except Exception as error:
            self.log.warning("OpenLineage: no parent run for the pod (%s: %s)", type(error).__name__, error)
            telemetry.lineage_failed(tenant=self.tenant or "", dag_id=self.dag_id, task_id=self.task_id,
                                     stage="parent", reason=type(error).__name__)  # fmt: skip
            return {}

    def _return_value(self, outcome: Outcome) -> Any:
        record = outcome.record
        if record is None:
            return None
        ref = record.return_value_ref
        if ref is None:
            return record.return_value
        return download_return_value(ref)

    def _recorded_outputs(self, record: records.Record) -> list[RecordedOutput]:
        """The record's outputs, or when they did not fit in it, the manifest's (verified)."""
        if record.data.get("outputs_truncated"):
            manifest = record.data.get("outputs_manifest")
            if not isinstance(manifest, dict):
                raise AirflowFailException(
                    "the record says its outputs were truncated but names no outputs_manifest"
                )
            document = json.loads(download_verified(manifest, "the outputs manifest"))
            entries = document.get("outputs") if isinstance(document, dict) else None
            return recorded_outputs(entries, self.data_outputs, "the outputs manifest")
        return recorded_outputs(record.data.get("outputs"), self.data_outputs, "the record's outputs")

    def _describe_asset_events(self, outputs: Sequence[RecordedOutput], context: Context | None) -> None:
        """The asset URI is stable across runs; each event says which blob this run wrote."""
        events = context.get("outlet_events") if context else None
        if events is None or not self.data_assets:
            return
        for output in outputs:
            uri = self.data_assets.get(output.path)
            if uri is not None:
                events[Asset(uri)].extra.update(output.as_xcom())

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


@dataclass(frozen=True)
class TryReport:
    """One try as the operator saw it end."""

    #: The agent's record (a provisional one for a killed try), or None.
    record: dict[str, Any] | None
    verdict: Verdict
    message: str
    #: data_platform.cost.try_cost, or None when neither a record nor the pod said how long it ran.
    cost: dict[str, Any] | None
    #: success, skip, retry (another try follows) or fail (none does): retry and fail are waste.
    outcome: str = ""


def usage_environment(container: k8s.V1Container) -> dict[str, str]:
    """The container's requests and limits (the raised memory limit included) for the agent."""
    resources = container.resources
    environment = {}
    for (kind, resource), name in USAGE_ENV.items():
        values = (getattr(resources, kind, None) if resources else None) or {}
        if values.get(resource) is not None:
            environment[name] = str(values[resource])
    return environment


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
    return json.loads(download_verified(ref, "the return value"))


def download_verified(ref: Mapping[str, Any], what: str) -> bytes:
    """A small blob the agent wrote (`{uri, sha256}`), whole, checked against its sha256."""
    from azure.core.exceptions import AzureError

    uri = str(ref["uri"])
    shown = without_query(uri)
    local = local_path(uri)
    if local is not None:
        # The local store (data-platform run-local): the agent wrote a file.
        try:
            body = local.read_bytes()
        except OSError as err:
            raise AirflowFailException(f"{what} at {shown} cannot be read: {err.strerror or err}") from None
    else:
        with ExitStack() as stack:
            client, credential = blob_client(uri, stack)
            try:
                body = client.download_blob().readall()
            except AzureError as err:
                raise blob_error(err, shown, credential) from None
    digest = hashlib.sha256(body).hexdigest()
    if digest != ref["sha256"]:
        raise AirflowException(
            f"{what} at {shown} has sha256 {digest}, but the record says "
            f"{ref['sha256']}: it was changed after the task wrote it"
        )
    return body


def _last_of_each_name(env: list[k8s.V1EnvVar]) -> list[k8s.V1EnvVar]:
    """The template's and the operator's variables merged: a later definition of a name wins, in
    the place of the first (the template and the operator both set the downward-API ones)."""
    chosen: dict[str, k8s.V1EnvVar] = {}
    for variable in env:
        chosen[variable.name] = variable
    return list(chosen.values())


def _terminated(pod: k8s.V1Pod, container_name: str) -> k8s.V1ContainerStateTerminated | None:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    status = next((s for s in statuses if s.name == container_name), None)
    return status.state.terminated if status and status.state else None


def _millicores_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return round(parse_quantity(str(value), "cpu") * 1000)
    except UnitError:
        return None


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


class _OutputXComArg(PlainXComArg):
    """Airflow's return-value XComArg that can also be called: `task.output(PATH)`."""

    def __call__(self, path: str | None = None, **templater: Any) -> OutputRef | Any:
        if path is None and "context" in templater:
            # Airflow's templater calls a callable template field with context=…: act as the XComArg.
            return self.resolve(templater["context"])
        if not isinstance(path, str):
            raise TypeError(f"{self.operator.task_id}.output(PATH) takes the path of a declared output")
        producer = self.operator
        assert isinstance(producer, PlatformPodOperator)
        return check_output_ref(producer, path)
