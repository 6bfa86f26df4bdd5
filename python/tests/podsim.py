"""A pod's life without a cluster: render it as Airflow would, run its container's command with
the real task-agent (as the image's entrypoint would), and hand the kubelet's view of the end
(exit code, termination message) back to the operator.

What the kubelet does and is imitated here:
- the termination message is the file at terminationMessagePath (the agent's record); under
  `FallbackToLogsOnError`, an empty file on a failed container is replaced by the log's tail
  (at most 80 lines or 2048 bytes);
- the message is cut at 4096 bytes;
- `reason` is `Completed` for exit 0, `OOMKilled` for a kernel OOM kill, else `Error`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import models as k8s

from data_platform.operator import PlatformPodOperator


@dataclass(frozen=True)
class ContainerRun:
    exit_code: int
    termination_file: str
    logs: str
    oom_killed: bool = False


def run_container(
    pod: k8s.V1Pod,
    agent_binary: Path,
    root: Path,
    *,
    platform_env: Mapping[str, str] | None = None,
    replace_args: Mapping[str, str] | None = None,
    sigterm_after: float | None = None,
    mounts: Mapping[str, Path] | None = None,
) -> ContainerRun:
    """Runs the base container's command with the real agent in `root` (its /workspace, /tmp …).

    `platform_env` stands for what the chart's pod template adds; `replace_args` swaps an
    option's value (a shorter `--timeout`, so a test does not wait two hours); `mounts` stands
    for the pod's own volumes: a declared `--output`/`--input` path under a key (`/data`) is
    given to the agent under the directory it maps to, so the test never writes the host's /data.
    """
    container = pod.spec.containers[0]
    assert container.command == ["/usr/local/bin/task-agent"], container.command
    args = list(container.args)
    for option, value in (replace_args or {}).items():
        args[args.index(option) + 1] = value
    for index in range(len(args) - 1):
        if args[index] in ("--output", "--input"):
            args[index + 1] = _mounted(args[index + 1], mounts or {})
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "TASK_AGENT_WORKDIR": str(root / "workspace"),
        "TASK_AGENT_RESULT_FILE": str(root / "termination-log"),
        "TASK_AGENT_RETURN_FILE": str(root / "airflow" / "xcom" / "return.json"),
    }
    for variable in container.env or []:
        if variable.value is not None:
            env[variable.name] = variable.value
        elif variable.value_from and variable.value_from.field_ref:
            env[variable.name] = _downward_api(pod, variable.value_from.field_ref.field_path)
    env.update(platform_env or {})
    (root / "termination-log").write_text("")
    process = subprocess.Popen(
        [str(agent_binary), *args],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if sigterm_after is not None:
        time.sleep(sigterm_after)
        process.send_signal(signal.SIGTERM)
    logs, _ = process.communicate(timeout=120)
    return ContainerRun(
        exit_code=process.returncode,
        termination_file=(root / "termination-log").read_text(errors="replace"),
        logs=logs.decode(errors="replace"),
    )


def finished(pod: k8s.V1Pod, run: ContainerRun, *, reason: str | None = None) -> k8s.V1Pod:
    """The pod as the API server reports it once its container has ended."""
    container = pod.spec.containers[0]
    message: str | None = run.termination_file
    if not message and run.exit_code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
        message = "\n".join(run.logs.splitlines()[-80:])[-2048:]
    message = (message or "")[:4096] or None
    if reason is None:
        reason = "Completed" if run.exit_code == 0 else "Error"
    return k8s.V1Pod(
        metadata=pod.metadata,
        spec=pod.spec,
        status=k8s.V1PodStatus(
            phase="Succeeded" if run.exit_code == 0 else "Failed",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name=container.name,
                    image=container.image,
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(
                            exit_code=run.exit_code, reason=reason, message=message
                        )
                    ),
                )
            ],
        ),
    )


@dataclass
class ClusterCalls:
    """The operator's calls to the Kubernetes API during cleanup, recorded instead of sent."""

    deleted: list[str] = field(default_factory=list)
    marked_checked: list[str] = field(default_factory=list)


def record_cluster_calls(op: PlatformPodOperator, remote: k8s.V1Pod | None = None) -> ClusterCalls:
    """Stands in for the Kubernetes API during the operator's completion: it answers with
    `remote` (the finished pod) and records the deletions and labels it is asked for."""
    calls = ClusterCalls()

    def delete(pod: k8s.V1Pod, **_: Any) -> bool:
        calls.deleted.append(pod.metadata.name)
        return True

    def mark_checked(pod: k8s.V1Pod, **_: Any) -> None:
        calls.marked_checked.append(pod.metadata.name)

    class Api:
        """The calls of the deferrable path's re-entry: read the pod, wait for its end."""

        def get_pod(self, name: str, namespace: str) -> k8s.V1Pod:
            assert remote is not None and (name, namespace) == (
                remote.metadata.name,
                remote.metadata.namespace,
            )
            return remote

        def await_pod_completion(self, pod: k8s.V1Pod, *_: Any, **__: Any) -> k8s.V1Pod:
            assert remote is not None
            return remote

    # cached_property values: set on the instance, they shadow the real clients.
    op.__dict__["hook"] = Api()
    op.__dict__["pod_manager"] = Api()
    op.is_istio_enabled = lambda pod: False  # type: ignore[method-assign]
    op.process_pod_deletion = delete  # type: ignore[method-assign]
    op.patch_already_checked = mark_checked  # type: ignore[method-assign]
    op.log_events_on_failure = False
    return calls


def complete(op: PlatformPodOperator, pod: k8s.V1Pod, remote: k8s.V1Pod, context: Mapping[str, Any]) -> None:
    """The operator's completion path (the sync and deferrable paths both end here)."""
    op.cleanup(pod=pod, remote_pod=remote, context=context)  # type: ignore[arg-type]


def _mounted(declaration: str, mounts: Mapping[str, Path]) -> str:
    """`PATH=URI#OPTIONS` with PATH moved under its mount's directory."""
    path, separator, rest = declaration.partition("=")
    for mount, directory in mounts.items():
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return f"{directory}{path[len(mount.rstrip('/')) :]}{separator}{rest}"
    return declaration


def _downward_api(pod: k8s.V1Pod, path: str) -> str:
    values = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "spec.nodeName": "aks-nodepool1-12345678-vmss000000",
    }
    return values.get(path, "")
