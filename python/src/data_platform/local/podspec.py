"""What a back-end needs of a rendered pod: the base container's command line, environment,
limits and volumes, and the pod's clocks. Pure.

Values only a cluster can give are replaced or left out, and said so: downward-API fields get
this machine's stand-ins; variables from Secrets or ConfigMaps are left out (the local runner has
no API server to read them from).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from data_platform.units import UnitError, parse_bytes

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: Kubernetes' default terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30


@dataclass(frozen=True)
class Mount:
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class LocalPod:
    name: str
    namespace: str
    image: str
    #: The container's command followed by its args, as the runtime would exec them.
    argv: tuple[str, ...]
    env: Mapping[str, str]
    memory_limit_bytes: int | None
    cpu_limit: str | None
    active_deadline_seconds: int | None
    termination_grace_seconds: int
    termination_message_path: str
    #: `FallbackToLogsOnError`: an empty message on a failed container becomes the log's tail.
    fallback_to_logs: bool
    mounts: tuple[Mount, ...] = ()
    read_only_root: bool = False
    run_as_user: int | None = None
    #: Variables that only a cluster could fill in (from Secrets, ConfigMaps, resource fields).
    dropped_env: tuple[str, ...] = field(default=())
    #: The whole pod as the API server would receive it (camelCase JSON): what the container
    #: back-end needs beyond the above (volumes, security contexts, init containers).
    manifest: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Which of the manifest's containers this is (the operator's base container).
    container_name: str = "base"


def local_pod(pod: k8s.V1Pod, container_name: str) -> LocalPod:
    spec = pod.spec
    container = next((c for c in spec.containers or [] if c.name == container_name), None)
    if container is None:
        raise ValueError(f"the pod has no container {container_name!r}")
    env: dict[str, str] = {}
    dropped: list[str] = []
    for variable in container.env or []:
        if variable.value is not None:
            env[variable.name] = variable.value
        elif variable.value_from is not None and variable.value_from.field_ref is not None:
            env[variable.name] = _downward_api(pod, variable.value_from.field_ref.field_path)
        elif variable.value_from is not None:
            dropped.append(variable.name)
        else:
            env[variable.name] = ""
    limits: Mapping[str, str] = (container.resources.limits if container.resources else None) or {}
    security = container.security_context
    pod_security = spec.security_context
    run_as_user = (security.run_as_user if security else None) or (
        pod_security.run_as_user if pod_security else None
    )
    return LocalPod(
        name=pod.metadata.name,
        namespace=pod.metadata.namespace or "default",
        image=container.image or "",
        argv=(*(container.command or []), *(container.args or [])),
        env=env,
        memory_limit_bytes=_bytes_or_none(limits.get("memory")),
        cpu_limit=str(limits["cpu"]) if "cpu" in limits else None,
        active_deadline_seconds=spec.active_deadline_seconds,
        termination_grace_seconds=(
            spec.termination_grace_period_seconds
            if spec.termination_grace_period_seconds is not None
            else DEFAULT_GRACE_SECONDS
        ),
        termination_message_path=container.termination_message_path or DEFAULT_TERMINATION_MESSAGE_PATH,
        fallback_to_logs=container.termination_message_policy == "FallbackToLogsOnError",
        mounts=tuple(Mount(m.mount_path, bool(m.read_only)) for m in container.volume_mounts or []),
        read_only_root=bool(security and security.read_only_root_filesystem),
        run_as_user=run_as_user,
        dropped_env=tuple(dropped),
        manifest=ApiClient().sanitize_for_serialization(pod),
        container_name=container_name,
    )


def _downward_api(pod: k8s.V1Pod, path: str) -> str:
    values = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace or "default",
        # The node is this machine.
        "spec.nodeName": platform.node(),
    }
    return str(values.get(path) or "")


def _bytes_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        return parse_bytes(str(value), "memory")
    except UnitError:
        return None
