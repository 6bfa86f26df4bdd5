"""The pod as the API server would report it once its container ended: what the kubelet does
with the container's end, imitated so the operator's `cleanup` reads a local run exactly as it
reads a cluster's. Pure.

- the termination message is the file at terminationMessagePath; under `FallbackToLogsOnError`
  an empty file on a failed container is replaced by the log's tail (at most 80 lines or
  2048 bytes); the message is cut at 4096 bytes;
- the container's `reason` is `Completed` for exit 0, `OOMKilled` for a kernel OOM kill, else
  `Error`; a pod stopped at activeDeadlineSeconds has phase Failed, reason `DeadlineExceeded`.
"""

from __future__ import annotations

from kubernetes.client import models as k8s

from data_platform.local.backends import ContainerExit

MESSAGE_LIMIT = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048


def finished_pod(
    pod: k8s.V1Pod, container_name: str, end: ContainerExit, *, fallback_to_logs: bool
) -> k8s.V1Pod:
    message: str | None = end.termination_message
    if not message and end.exit_code != 0 and fallback_to_logs:
        message = "\n".join(end.log_tail.splitlines()[-FALLBACK_LINES:])[-FALLBACK_BYTES:]
    message = (message or "")[:MESSAGE_LIMIT] or None
    reason = "OOMKilled" if end.oom_killed else "Completed" if end.exit_code == 0 else "Error"
    container = next(c for c in pod.spec.containers if c.name == container_name)
    return k8s.V1Pod(
        metadata=pod.metadata,
        spec=pod.spec,
        status=k8s.V1PodStatus(
            phase="Succeeded" if end.exit_code == 0 and not end.deadline_exceeded else "Failed",
            reason="DeadlineExceeded" if end.deadline_exceeded else None,
            container_statuses=[
                k8s.V1ContainerStatus(
                    name=container_name,
                    image=container.image,
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(
                            exit_code=end.exit_code, reason=reason, message=message
                        )
                    ),
                )
            ],
        ),
    )
