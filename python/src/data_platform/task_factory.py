"""`PlatformTaskFactory`: the tasks a DAG author may use. The platform fills in the how."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from functools import cache
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, BaseOperator
from kubernetes.client import models as k8s

from data_platform.agent_command import (
    AgentTask,
    Snapshot,
    agent_arguments,
    check_secrets,
    check_snapshot,
)
from data_platform.artifacts import (
    BlobInput,
    Input,
    Output,
    OutputRef,
    UpstreamPath,
    artifacts_prefix,
    asset_uri,
    check_path,
    input_argument,
    output_arguments,
    parse_inputs,
    parse_outputs,
)
from data_platform.dag_factory import bounded, check_retries, platform_dag
from data_platform.deadlines import nest
from data_platform.operator import PlatformPodOperator
from data_platform.policy import PolicyError
from data_platform.sftp_upload import SftpUploadOperator
from data_platform.units import UnitError, parse_duration

#: The chart's pod template (a ConfigMap mounted into Airflow); the operator reads it when it runs.
POD_TEMPLATE_VAR = "DATA_PLATFORM_POD_TEMPLATE_FILE"
#: The downward-API variables task-agent puts on its telemetry resource.
DOWNWARD_API_ENV = {
    "K8S_POD_NAME": "metadata.name",
    "K8S_NAMESPACE_NAME": "metadata.namespace",
    "K8S_NODE_NAME": "spec.nodeName",
}
#: Variables the platform owns; a task's `env` may not set them.
_RESERVED_ENV = re.compile(r"^(TASK_AGENT_|OTEL_|AZURE_|K8S_|TRACEPARENT$|TRACESTATE$)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Operator arguments the platform sets for a pod task (identity, command, resources, clocks) and
#: those that could add containers or privileges to the pod; `image` is the factory's own argument.
_POD_TASK_FIELDS = frozenset(
    {
        "namespace", "service_account_name", "cmds", "arguments", "env_vars",
        "container_resources", "labels", "pod_template_file", "pod_template_dict", "full_pod_spec",
        "init_containers", "hostnetwork", "security_context", "container_security_context",
        "execution_timeout", "active_deadline_seconds", "termination_grace_period",
        "skip_exit_codes", "oom_memory_factor", "max_memory", "tenant", "size_class", "cost_model",
    }
)  # fmt: skip
#: Pod settings a task may choose beyond Airflow's own operator arguments: how Airflow waits for
#: and follows the pod, nothing that changes what runs in it or with which rights. Anything else
#: (volumes, node selection, host access, image pull secrets, …) is the platform's, in the chart.
_POD_TASK_CHOICES = frozenset(
    {
        "startup_timeout_seconds", "image_pull_policy", "deferrable", "poll_interval",
        "logging_interval", "get_logs", "on_finish_action", "reattach_on_restart",
        "log_events_on_failure", "random_name_suffix", "name",
    }
)  # fmt: skip


@cache
def _airflow_operator_arguments() -> frozenset[str]:
    """The arguments every Airflow operator takes (trigger rules, pools, callbacks, …)."""
    return frozenset(inspect.signature(BaseOperator.__init__).parameters) - {"self", "kwargs"}


class PlatformTaskFactory:
    def __init__(self, dag: DAG) -> None:
        self.dag = dag
        self.platform = platform_dag(dag)

    def aks_python(
        self,
        task_id: str,
        snapshot: Snapshot | str,
        script: str,
        *,
        args: Sequence[str] = (),
        sha256: str | None = None,
        secrets: Mapping[str, str] | None = None,
        secret_files: Mapping[str, str] | None = None,
        size: str = "small",
        timeout: str | timedelta | None = None,
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        outputs: Sequence[str | Output] | None = None,
        inputs: Sequence[str | OutputRef] | Mapping[str, str | OutputRef] | None = None,
        **operator_kwargs: Any,
    ) -> PlatformPodOperator:
        """`python SCRIPT ARGS` from `snapshot`, in a pod of the tenant, under task-agent.

        `outputs` are uploaded to the tenant's artifacts after the script succeeds; `inputs` are
        downloaded before it starts (docs/data-between-tasks.md)."""
        policy, tenant = self.platform.policy, self.platform.tenant
        where = f"{self.dag.dag_id}.{task_id}"
        self._check_operator_kwargs(where, operator_kwargs, _POD_TASK_FIELDS)
        unknown = sorted(set(operator_kwargs) - _airflow_operator_arguments() - _POD_TASK_CHOICES)
        if unknown:
            raise PolicyError(
                f"{where}: {', '.join(unknown)} cannot be set by a task: pods get their volumes, "
                f"scheduling and rights from the platform's pod template (a task may choose: "
                f"{', '.join(sorted(_POD_TASK_CHOICES))}, and Airflow's own operator arguments); "
                "ask the platform team"
            )
        try:
            if isinstance(snapshot, str):
                snapshot = Snapshot(snapshot, sha256)
            elif sha256 is not None:
                snapshot = Snapshot(snapshot.uri, sha256)
            snapshot = check_snapshot(snapshot, tenant)
            env_secrets, file_secrets = check_secrets(secrets, secret_files, tenant)
            size_class = policy.size_class(tenant, size)
            runtime_image = policy.image(tenant, image)
            deadlines = nest(self._timeout(timeout), policy.agent_grace)
            data_outputs = parse_outputs(outputs)
            data_inputs = parse_inputs(inputs, tenant)
        except (PolicyError, UnitError, ValueError) as error:
            raise PolicyError(f"{where}: {error}") from None
        if data_outputs and tenant.artifacts is None:
            raise PolicyError(
                f"{where}: outputs: tenant {tenant.name!r} has no artifacts storage for task outputs; "
                f"ask the platform team to set tenants.{tenant.name}.artifacts in the chart's values"
            )
        data_arguments = self._data_arguments(task_id, data_outputs, data_inputs)
        assets = {
            output.path: asset_uri(tenant.artifacts or "", self.dag.dag_id, task_id, output.path)
            for output in data_outputs
            if output.asset
        }
        if assets:
            operator_kwargs["outlets"] = [
                *(operator_kwargs.get("outlets") or []),
                *(Asset(uri) for uri in assets.values()),
            ]
        if not script or script.startswith("-"):
            raise PolicyError(f"{where}: script {script!r} must name a Python file in the snapshot")
        arguments = agent_arguments(
            AgentTask(
                tenant=tenant,
                dag_id=self.dag.dag_id,
                task_id=task_id,
                snapshot=snapshot,
                command=["python", script, *map(str, args)],
                secrets=env_secrets,
                secret_files=file_secrets,
                deadlines=deadlines,
                data_arguments=data_arguments,
            )
        )
        operator = PlatformPodOperator(
            task_id=task_id,
            dag=self.dag,
            namespace=tenant.namespace,
            service_account_name=tenant.service_account,
            image=runtime_image,
            cmds=[policy.agent_path],
            arguments=arguments,
            env_vars=[*_user_env(where, env), *_downward_api_env()],
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": size_class.cpu_request, "memory": size_class.memory_request},
                limits={"cpu": size_class.cpu_limit, "memory": size_class.memory_limit},
            ),
            labels={
                "data-platform.io/tenant": tenant.name,
                "data-platform.io/size": size_class.name,
                # The workload identity webhook injects the token only into labelled pods.
                "azure.workload.identity/use": "true",
            },
            pod_template_file=os.environ.get(POD_TEMPLATE_VAR) or None,
            execution_timeout=deadlines.execution_timeout,
            active_deadline_seconds=deadlines.active_deadline_seconds,
            termination_grace_period=deadlines.termination_grace_period,
            skip_exit_codes=(policy.skip_exit_code,),
            oom_memory_factor=policy.oom_memory_factor,
            max_memory=size_class.max_memory,
            get_logs=True,
            data_outputs=data_outputs,
            data_inputs=data_inputs,
            data_assets=assets,
            allowed_storage=tenant.owned_storage,
            tenant=tenant.name,
            size_class=size_class.name,
            cost_model=policy.cost,
            **operator_kwargs,
        )
        self._depend_on_named_outputs(where, operator, data_inputs)
        return operator

    def _data_arguments(self, task_id: str, outputs: Sequence[Output], inputs: Sequence[Input]) -> list[str]:
        """`--artifacts`/`--output`, and `--input` for static blobs; upstream outputs are
        resolved when the task runs (PlatformPodOperator.bind_inputs)."""
        arguments = []
        artifacts = self.platform.tenant.artifacts
        if outputs and artifacts:
            arguments += output_arguments(artifacts_prefix(artifacts, self.dag.dag_id, task_id), outputs)
        for item in inputs:
            if isinstance(item.source, BlobInput):
                source = item.source
                arguments += input_argument(item.path, source.uri, source.sha256, source.archive)
        return arguments

    def _depend_on_named_outputs(self, where: str, reader: BaseOperator, inputs: Sequence[Input]) -> None:
        """`task.output(PATH)` makes `task` upstream of its reader, as an XComArg would."""
        for item in inputs:
            source = item.source
            if not isinstance(source, OutputRef):
                continue
            if source.dag_id != self.dag.dag_id or not self.dag.has_task(source.task_id):
                raise PolicyError(
                    f"{where}: inputs[{item.path!r}]: {source.task_id}.output({source.path!r}) is a task of "
                    f"DAG {source.dag_id!r}; only outputs of this DAG's tasks can be read by name (give "
                    "another DAG's data as a blob URI, or schedule on its asset)"
                )
            reader.set_upstream(self.dag.get_task(source.task_id))

    def python(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        *,
        op_args: Sequence[Any] = (),
        op_kwargs: Mapping[str, Any] | None = None,
        timeout: str | timedelta | None = None,
        **operator_kwargs: Any,
    ) -> PythonOperator:
        """A light Python callable on the Airflow worker itself (no pod): glue, not heavy work."""
        self._check_operator_kwargs(f"{self.dag.dag_id}.{task_id}", operator_kwargs, {"execution_timeout"})
        try:
            budget = self._timeout(timeout)
        except (PolicyError, UnitError) as error:
            raise PolicyError(f"{self.dag.dag_id}.{task_id}: {error}") from None
        return PythonOperator(
            task_id=task_id,
            dag=self.dag,
            python_callable=python_callable,
            op_args=list(op_args),
            op_kwargs=dict(op_kwargs or {}),
            execution_timeout=budget,
            **operator_kwargs,
        )

    def dummy(self, task_id: str, **operator_kwargs: Any) -> EmptyOperator:
        self._check_operator_kwargs(f"{self.dag.dag_id}.{task_id}", operator_kwargs, ())
        return EmptyOperator(task_id=task_id, dag=self.dag, **operator_kwargs)

    def sftp_upload(
        self,
        task_id: str,
        source: str | OutputRef,
        remote_path: str,
        conn_id: str,
        **operator_kwargs: Any,
    ) -> SftpUploadOperator:
        """Uploads an upstream task's output, a local file or a blob of the tenant's storage to a
        partner's SFTP server. A path an upstream task declared as an output is that output."""
        where = f"{self.dag.dag_id}.{task_id}"
        self._check_operator_kwargs(where, operator_kwargs, {"allowed_storage", "data_inputs", "tenant"})
        data_inputs: tuple[Input, ...] = ()
        if isinstance(source, OutputRef):
            data_inputs = (Input(source.path, source),)
            source = source.path
        elif isinstance(source, str) and source.startswith("/"):
            # Resolved when the DAG is complete (its edges) and again when the task runs; a path
            # no upstream task declares stays a local file.
            try:
                path = check_path(source, "source")
            except PolicyError:
                path = None
            if path is not None:
                data_inputs = (Input(path, UpstreamPath(path, required=False)),)
        operator = SftpUploadOperator(
            task_id=task_id,
            dag=self.dag,
            source=source,
            remote_path=remote_path,
            sftp_conn_id=conn_id,
            allowed_storage=self.platform.tenant.owned_storage,
            data_inputs=data_inputs,
            tenant=self.platform.tenant.name,
            **operator_kwargs,
        )
        self._depend_on_named_outputs(where, operator, data_inputs)
        return operator

    def _check_operator_kwargs(
        self, where: str, operator_kwargs: dict[str, Any], platform_set: Collection[str]
    ) -> None:
        """Extra operator arguments may tighten the DAG's retry policy and timeout, never loosen them."""
        policy, tenant = self.platform.policy, self.platform.tenant
        for name in ("default_args", *platform_set):
            if name in operator_kwargs:
                raise PolicyError(
                    f"{where}: {name} is set by the platform; use the factory's arguments "
                    "(size=, timeout=, env=, secrets=, image=) or the DAG's (retries=, retry_delay=) instead"
                )
        if "retries" in operator_kwargs:
            check_retries(
                f"{where}: retries", operator_kwargs["retries"], policy.max_retries_for(tenant), tenant.name
            )
        for name in ("retry_delay", "max_retry_delay"):
            if name in operator_kwargs:
                operator_kwargs[name] = bounded(
                    where, name, operator_kwargs[name], policy.max_retry_delay, policy.max_retry_delay
                )
        if "execution_timeout" in operator_kwargs:
            try:
                asked = operator_kwargs["execution_timeout"]
                operator_kwargs["execution_timeout"] = self._timeout(asked, "execution_timeout")
            except (PolicyError, UnitError) as error:
                raise PolicyError(f"{where}: {error}") from None

    def _timeout(self, asked: str | timedelta | None, field: str = "timeout") -> timedelta:
        limit = self.platform.execution_timeout
        if asked is None:
            return limit
        value = parse_duration(asked, field)
        if value <= timedelta(0):
            raise PolicyError(f"{field}={asked} must be longer than 0s")
        if value > limit:
            raise PolicyError(
                f"{field}={asked} is above the DAG's execution_timeout ({int(limit.total_seconds())}s); "
                "ask for less, or raise the DAG's execution_timeout within the platform's limit"
            )
        return value


def _user_env(where: str, env: Mapping[str, str] | None) -> list[k8s.V1EnvVar]:
    variables = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise PolicyError(
                f"{where}: env name {name!r} is not a valid variable name; use letters, digits and _"
            )
        if _RESERVED_ENV.match(name):
            raise PolicyError(
                f"{where}: env {name!r} is set by the platform; use another name "
                "(secrets go in `secrets=`, limits in `size=` and `timeout=`)"
            )
        variables.append(k8s.V1EnvVar(name=name, value=str(value)))
    return variables


def _downward_api_env() -> list[k8s.V1EnvVar]:
    return [
        k8s.V1EnvVar(
            name=name,
            value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=path)),
        )
        for name, path in DOWNWARD_API_ENV.items()
    ]
