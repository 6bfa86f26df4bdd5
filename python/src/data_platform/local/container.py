"""The `container` back-end: the pod's image runs under podman, as the chart's pod would.

What the pod says is what runs (data_platform.local.podman maps it, the same mapping
python/tests/test_images.py proves on the chart's pod): the image (through `[data_platform]
local_images`, e.g. the registry's python-runtime → scripts/build-images' local one), the
user, fsGroup, read-only root, dropped capabilities and no-new-privileges, the memory limit
(with no swap) and the CPU limit, the emptyDir, memory and configMap volumes (a configMap's keys
from `[data_platform] local_config_maps`), the init containers in order, and the termination
message file. The agent is the image's (or, with `agent.delivery: initContainer`, the one its
init container installs), so its command line is the pod's: only the code and the secrets are
swapped, as for every back-end (data_platform.local.rewrites).

Differences from a node, on purpose:
- the network is the host's, so the pod reaches Azurite and the local sshd on loopback;
- the worker's `AZURE_STORAGE_CONNECTION_STRING` stands in for the pod's workload identity, and
  the worker's other `TASK_AGENT_*` settings are passed (not those naming paths, the policy file
  or the memory limit: the pod's own hold, and the agent reads the container's cgroup limit);
- `--secrets-dir` is bind-mounted read-only at its own path, for the agent's `file:` provider;
- an emptyDir's sizeLimit is not enforced; downward-API fields get this machine's values;
- `OOMKilled`: podman's `State.OOMKilled`, or the `oom` file conmon writes when it sees the
  kernel's OOM event. podman 4.3's conmon (2.1.6) writes that file into its working directory,
  which is podman's, not where podman looks, so `State.OOMKilled` stays false (measured here: a
  container killed at its 64 MiB limit exits 137, OOMKilled false, and `oom` appears in the
  directory podman ran in). Each podman run therefore gets a directory of its own under the
  try's (`podman/NAME/`), which also keeps the file out of the worker's.

podman's own settings come from the worker's environment (`CONTAINERS_CONF`,
`CONTAINERS_STORAGE_CONF`: what `scripts/build-images` prints; on these machines runc,
cgroupfs and no default ulimits, see docker/README.md).
"""

from __future__ import annotations

import collections
import copy
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_platform.local.backends import ContainerExit, LogSink
from data_platform.local.podman import pod_volumes, podman_run_args, termination_log_file
from data_platform.local.podspec import LocalPod
from data_platform.local.process import LOG_TAIL_LINES, PATH_VARIABLES, pump_log
from data_platform.local.settings import LocalSettings

#: From the worker's environment into every container: the storage stand-in and agent settings.
PASSED_FROM_WORKER = ("AZURE_STORAGE_CONNECTION_STRING",)
#: Worker settings never passed: the pod's paths and policy hold inside the container, and the
#: agent derives its memory limit from the container's cgroup, as in a pod.
NOT_PASSED = PATH_VARIABLES | {"TASK_AGENT_POLICY_FILE", "TASK_AGENT_MEMORY_LIMIT", "TASK_AGENT_BIN"}
PODMAN_TIMEOUT_S = 60


class ContainerError(RuntimeError):
    """The pod could not be started under podman; the message says what to do."""


def config_maps_from(directory: Path | None) -> dict[str, dict[str, str]]:
    """`DIR/NAME/KEY` files as ConfigMap NAME's keys."""
    if directory is None or not directory.is_dir():
        return {}
    return {
        entry.name: {key.name: key.read_text() for key in sorted(entry.iterdir()) if key.is_file()}
        for entry in sorted(directory.iterdir())
        if entry.is_dir()
    }


def worker_environment(pod_env: Mapping[str, str], worker: Mapping[str, str]) -> dict[str, str]:
    """What the container gets from the worker (see the module docstring)."""
    passed = {name: worker[name] for name in PASSED_FROM_WORKER if name in worker}
    passed.update(
        {
            name: value
            for name, value in worker.items()
            if name.startswith("TASK_AGENT_") and name not in NOT_PASSED
        }
    )
    return {name: value for name, value in passed.items() if name not in pod_env}


class ContainerBackend:
    name = "container"

    def __init__(self, settings: LocalSettings, worker: Mapping[str, str] | None = None) -> None:
        self.images = dict(settings.images)
        self.config_maps = config_maps_from(settings.config_maps)
        self.secrets_dir = settings.secrets_dir
        self.worker = dict(os.environ if worker is None else worker)
        self._lock = threading.Lock()
        self._running: str | None = None
        self._stopped = False
        self._grace = 30

    def run(self, pod: LocalPod, directory: Path, log: LogSink) -> ContainerExit:
        if not pod.manifest:
            raise ContainerError("the container back-end needs the pod's manifest (LocalPod.manifest)")
        manifest: dict[str, Any] = copy.deepcopy(dict(pod.manifest))
        spec = manifest["spec"]
        base = next(c for c in spec["containers"] if c["name"] == pod.container_name)
        # The command line after the local rewrites (code, secrets), exec'd as the pod's would be.
        base["command"], base["args"] = [pod.argv[0]], list(pod.argv[1:])
        self._grace = pod.termination_grace_seconds
        started = time.monotonic()
        deadline = None if pod.active_deadline_seconds is None else started + pod.active_deadline_seconds
        volumes = pod_volumes(manifest, directory, self.config_maps)
        extra_mounts = {str(self.secrets_dir): self.secrets_dir} if self.secrets_dir else {}
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with (directory / "container.log").open("w", encoding="utf-8") as log_file:
            for init in spec.get("initContainers") or []:
                args = podman_run_args(
                    manifest, init, self._image(init["image"]), volumes, termination_log=None,
                    extra_env={}, extra_mounts={}, name=self._name(pod, init["name"]), remove=False,
                )  # fmt: skip
                end = self._run(args, directory, deadline, log, log_file, tail, f"[{init['name']}] ")
                if end.exit_code != 0 or end.deadline_exceeded or self._stopped:
                    # The pod fails at its init container; its main container never starts.
                    return end
            message_file = termination_log_file(directory)
            args = podman_run_args(
                manifest, base, self._image(base["image"]), volumes, termination_log=message_file,
                extra_env=worker_environment(pod.env, self.worker), extra_mounts=extra_mounts,
                name=self._name(pod, base["name"]), remove=False,
            )  # fmt: skip
            end = self._run(args, directory, deadline, log, log_file, tail, "")
        return ContainerExit(
            exit_code=end.exit_code,
            termination_message=message_file.read_text(errors="replace"),
            log_tail=end.log_tail,
            oom_killed=end.oom_killed,
            deadline_exceeded=end.deadline_exceeded,
        )

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            running = self._running
        if running is not None:
            threading.Thread(target=self._podman_stop, args=(running,), daemon=True).start()

    def _run(
        self,
        args: list[str],
        directory: Path,
        deadline: float | None,
        log: LogSink,
        log_file: Any,
        tail: collections.deque[str],
        prefix: str,
    ) -> ContainerExit:
        name = args[args.index("--name") + 1]
        workdir = directory / "podman" / name
        workdir.mkdir(parents=True)
        with self._lock:
            if self._stopped:
                return ContainerExit(exit_code=143, termination_message="", log_tail="")
            process = subprocess.Popen(
                ["podman", *args], env=self.worker, cwd=workdir, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self._running = name
        assert process.stdout is not None
        reader = threading.Thread(
            target=pump_log, args=(process.stdout, lambda line: log(prefix + line), log_file, tail),
            name=f"{name}-log", daemon=True,
        )  # fmt: skip
        reader.start()
        deadline_exceeded = False
        try:
            process.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            # activeDeadlineSeconds: the kubelet stops the pod (SIGTERM, grace, SIGKILL).
            deadline_exceeded = True
            self._podman_stop(name)
            process.wait()
        reader.join()
        with self._lock:
            self._running = None
        inspected = self._podman("inspect", "--format", "{{.State.OOMKilled}}", name).stdout.strip()
        # See the module docstring: where conmon reports the kernel's OOM kill.
        oom_killed = inspected == "true" or (workdir / "oom").exists()
        self._podman("rm", "--force", name)
        return ContainerExit(
            exit_code=process.returncode, termination_message="", log_tail="\n".join(tail),
            oom_killed=oom_killed, deadline_exceeded=deadline_exceeded,
        )  # fmt: skip

    def _image(self, reference: str) -> str:
        image = self.images.get(reference, reference)
        if self._podman("image", "exists", image).returncode != 0:
            mapped = f" (the pod's {reference})" if image != reference else ""
            raise ContainerError(
                f"image {image}{mapped} is not in podman's storage: build it with scripts/build-images, or "
                "map the pod's image to a local one with [data_platform] local_images = REF=LOCAL"
            )
        return image

    def _name(self, pod: LocalPod, container: str) -> str:
        return f"{pod.name}-{container}-{uuid.uuid4().hex[:8]}"

    def _podman_stop(self, name: str) -> None:
        self._podman("stop", "--time", str(self._grace), name, timeout=self._grace + PODMAN_TIMEOUT_S)

    def _podman(self, *args: str, timeout: float = PODMAN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.worker, capture_output=True, text=True, timeout=timeout, check=False
        )
