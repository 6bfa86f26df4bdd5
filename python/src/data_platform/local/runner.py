"""One try of a pod task on this machine: the pod Airflow would create, run by a back-end, and
its end handed to the operator's own completion path (`post_complete_action` → `cleanup`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from data_platform.local import rewrites
from data_platform.local.backends import Backend
from data_platform.local.kubelet import finished_pod
from data_platform.local.podspec import LocalPod, local_pod
from data_platform.local.settings import LocalSettings
from data_platform.storage import without_sas

if TYPE_CHECKING:
    from airflow.sdk import Context

    from data_platform.operator import PlatformPodOperator

#: The file in a try's directory that says which pod it was.
POD_FILE = "pod.json"


def try_directory(root: Path, context: Context) -> Path:
    """`ROOT/DAG/RUN/TASK/MAP_INDEX/TRY`: every try its own, like every pod (the run id
    URL-encoded, as in the artifacts' blob names)."""
    ti: Any = context["ti"]
    directory: Path = (
        root / ti.dag_id / quote(str(context["run_id"]), safe="") / ti.task_id / str(ti.map_index)
        / str(ti.try_number)
    )  # fmt: skip
    return directory


def prepared(pod: LocalPod, settings: LocalSettings) -> LocalPod:
    """The pod with this machine's code and secrets in place of the cluster's (see `rewrites`)."""
    argv = list(pod.argv)
    if settings.snapshot:
        argv = rewrites.with_snapshot(argv, settings.snapshot)
    if settings.secrets_dir is not None:
        argv = rewrites.with_local_secrets(argv, settings.secrets_dir)
    return dataclasses.replace(pod, argv=tuple(argv))


def run_locally(op: PlatformPodOperator, context: Context, settings: LocalSettings, backend: Backend) -> None:
    """Runs the try, then completes it as a cluster's pod would be completed (raises the verdict)."""
    # dry_run: the same pod, without asking a Kubernetes client whether it runs in a cluster.
    request = op.build_pod_request_obj(context, dry_run=True)
    op.pod_request_obj = request
    op.pod = request
    pod = prepared(local_pod(request, op.base_container_name), settings)
    if pod.dropped_env:
        op.log.warning("Left out (only a cluster can fill them in): %s", ", ".join(pod.dropped_env))
    directory = try_directory(settings.root, context)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / POD_FILE).write_text(_describe(pod))
    op.log.info("Running pod %s locally (%s back-end) in %s", pod.name, backend.name, directory)
    end = backend.run(pod, directory, lambda line: op.log.info("[base] %s", line))
    remote = finished_pod(request, op.base_container_name, end, fallback_to_logs=pod.fallback_to_logs)
    op.remote_pod = remote
    op.post_complete_action(pod=request, remote_pod=remote, context=context, result=None)


def _describe(pod: LocalPod) -> str:
    # For whoever looks at the directory later; a SAS in the command line is not kept.
    return json.dumps(
        {"name": pod.name, "namespace": pod.namespace, "image": pod.image,
         "argv": [without_sas(word) for word in pod.argv], "memory_limit_bytes": pod.memory_limit_bytes,
         "active_deadline_seconds": pod.active_deadline_seconds},
        indent=2,
    )  # fmt: skip
