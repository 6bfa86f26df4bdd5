"""The interface between the local runner and what runs a pod on this machine.

A back-end gets the pod as `LocalPod` (data_platform.local.podspec) and a directory of its own
for this try, runs the base container's command to its end under the pod's memory limit and
deadline, and returns what the kubelet would have seen: the exit code, the termination
message file and the log. `kubelet.finished_pod` turns that into the pod status `cleanup`
reads. `process` runs the agent as a local process; `container` runs the pod's image under
podman with the pod's limits, volumes and read-only root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from data_platform.local.podspec import LocalPod
from data_platform.local.settings import LocalSettings

#: Receives each line of the container's log as it comes (the operator logs it, as it streams
#: a pod's log).
LogSink = Callable[[str], None]


@dataclass(frozen=True)
class ContainerExit:
    exit_code: int
    #: The file at terminationMessagePath, as written (the agent's record), "" if none.
    termination_message: str
    #: The container's log (stdout and stderr interleaved), kept for FallbackToLogsOnError.
    log_tail: str
    #: The kernel killed the container for memory (cgroup OOM): reason `OOMKilled`.
    oom_killed: bool = False
    #: The pod outlived activeDeadlineSeconds and was stopped: pod reason `DeadlineExceeded`.
    deadline_exceeded: bool = False


class Backend(Protocol):
    name: str

    def run(self, pod: LocalPod, directory: Path, log: LogSink) -> ContainerExit:
        """Runs the pod's base container to its end; `directory` is this try's own, empty or absent."""
        ...

    def stop(self) -> None:
        """Airflow killed the task (on_kill): stop the running container as a pod deletion
        would (SIGTERM, the grace period, SIGKILL). May be called from another thread."""
        ...


def backend_for(settings: LocalSettings) -> Backend:
    if settings.backend == "process":
        from data_platform.local.process import ProcessBackend

        assert settings.agent is not None, "local_settings requires the agent for the process back-end"
        return ProcessBackend(settings.agent)
    if settings.backend == "container":
        from data_platform.local.container import ContainerBackend

        return ContainerBackend(settings)
    raise ValueError(f"the {settings.backend!r} local back-end does not exist; use process or container")
