"""The `process` back-end: the pod's agent command runs as a process of this machine.

It needs nothing but the task-agent binary. What a container would give is stood in for:

- **File system.** The pod's own paths (its volume mounts, among them the one the operator adds
  at the top directory of each declared input and output, e.g. /data; /workspace, /tmp,
  /run/secrets, /airflow/xcom; the termination message file) are directories under this try's
  directory, and the agent's options and `TASK_AGENT_*` settings that name them are pointed
  there: the one change to the pod's command line. The task's own code sees the rest of the
  machine, so a script that writes an absolute path of its own finds its directory in
  `DATA_PLATFORM_LOCAL_ROOT` (unset in a pod).
- **Memory.** There is no container cgroup: the agent gets the soft limit it would derive from
  the pod's memory limit (`TASK_AGENT_MEMORY_LIMIT`, the same headroom rule), and enforces it
  on the summed RSS of the task's processes as it does in a pod.
- **Deadline.** At activeDeadlineSeconds the agent gets SIGTERM, then SIGKILL after the pod's
  grace period, as the kubelet does.
- **Environment.** The pod's variables, plus what the chart's pod template would add, taken from
  this worker: `PATH`, `AZURE_STORAGE_CONNECTION_STRING` (the local stand-in for the pod's
  workload identity), every `TASK_AGENT_*` setting, and the policy file
  (`DATA_PLATFORM_POLICY_FILE` as `TASK_AGENT_POLICY_FILE`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from data_platform.local.backends import ContainerExit, LogSink
from data_platform.local.podspec import LocalPod

#: Where task-agent and the chart's pod template put things inside a pod.
POD_PATHS = ("/workspace", "/tmp", "/run/secrets", "/airflow/xcom")
#: Agent options whose value is a path of the pod.
PATH_OPTIONS = frozenset({"--workdir", "--result-file", "--return-file", "--secrets-dir", "--cache-dir"})
PATH_VARIABLES = frozenset(
    {"TASK_AGENT_WORKDIR", "TASK_AGENT_RESULT_FILE", "TASK_AGENT_RETURN_FILE", "TASK_AGENT_SECRETS_DIR",
     "TASK_AGENT_CACHE_DIR"}
)  # fmt: skip
#: Agent options `PATH[=URI][#OPTIONS]` whose PATH is a path of the pod.
DATA_OPTIONS = frozenset({"--output", "--input"})
#: From the worker's environment, as the pod template would set them.
PASSED_FROM_WORKER = ("PATH", "LANG", "LC_ALL", "AZURE_STORAGE_CONNECTION_STRING")
LOG_TAIL_LINES = 200
MIB = 1 << 20


def soft_memory_limit(container_limit: int) -> int:
    """task-agent's default soft limit for a container limit (README, *Memory*; the agent's
    `default_soft_limit`): the limit less 5 % headroom, at least 32 MiB and at most 256 MiB;
    a container smaller than twice the headroom gets half its limit."""
    headroom = min(max(container_limit // 20, 32 * MIB), 256 * MIB)
    return container_limit - headroom if container_limit > 2 * headroom else container_limit // 2


class PodFileSystem:
    """Maps the pod's own paths to directories under one local directory."""

    def __init__(self, directory: Path, roots: Iterable[str]) -> None:
        self.directory = directory
        self.roots = tuple(sorted({str(PurePosixPath(root)) for root in roots if root.startswith("/")}))

    def owns(self, path: str) -> bool:
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in self.roots)

    def local(self, path: str) -> str:
        return str(self.directory / path.lstrip("/")) if self.owns(path) else path

    def make(self) -> None:
        for root in self.roots:
            Path(self.local(root)).mkdir(parents=True, exist_ok=True)


def pod_file_system(pod: LocalPod, directory: Path) -> PodFileSystem:
    # The pod's mounts hold every declared path: the operator mounts a volume at the top
    # directory of each one no other volume holds (data_platform.pod_paths).
    roots = [*POD_PATHS, *(mount.path for mount in pod.mounts)]
    roots.append(str(PurePosixPath(pod.termination_message_path).parent))
    return PodFileSystem(directory, roots)


def local_argv(pod: LocalPod, agent: Path, files: PodFileSystem) -> list[str]:
    """The pod's command line with the agent's path and the pod's paths made local."""
    argv = [str(agent), *pod.argv[1:]]
    separator = argv.index("--") if "--" in argv else len(argv)
    for index in range(1, separator - 1):
        option, value = argv[index], argv[index + 1]
        if option in PATH_OPTIONS:
            argv[index + 1] = files.local(value)
        elif option in DATA_OPTIONS:
            path = _data_path(value)
            argv[index + 1] = files.local(path) + value[len(path) :]
    return argv


def local_environment(
    pod: LocalPod, files: PodFileSystem, worker: Mapping[str, str] | None = None
) -> dict[str, str]:
    worker = os.environ if worker is None else worker
    env = {name: worker[name] for name in PASSED_FROM_WORKER if name in worker}
    env.update({name: value for name, value in worker.items() if name.startswith("TASK_AGENT_")})
    policy = worker.get("DATA_PLATFORM_POLICY_FILE")
    if policy and "TASK_AGENT_POLICY_FILE" not in env:
        env["TASK_AGENT_POLICY_FILE"] = policy
    env.update(pod.env)
    for name in PATH_VARIABLES & env.keys():
        env[name] = files.local(env[name])
    tmp = files.local("/tmp")
    env.setdefault("TASK_AGENT_WORKDIR", files.local("/workspace"))
    env.setdefault("TASK_AGENT_RETURN_FILE", files.local("/airflow/xcom/return.json"))
    env.setdefault("TASK_AGENT_SECRETS_DIR", files.local("/run/secrets"))
    # Where the kubelet reads the message from is where the agent writes its record.
    env["TASK_AGENT_RESULT_FILE"] = files.local(pod.termination_message_path)
    env["HOME"] = env["TMPDIR"] = tmp
    env["DATA_PLATFORM_LOCAL_ROOT"] = str(files.directory)
    if pod.memory_limit_bytes is not None and "TASK_AGENT_MEMORY_LIMIT" not in pod.env:
        env["TASK_AGENT_MEMORY_LIMIT"] = str(soft_memory_limit(pod.memory_limit_bytes))
    return env


class ProcessBackend:
    name = "process"

    def __init__(self, agent: Path) -> None:
        self.agent = agent
        self._process: subprocess.Popen[bytes] | None = None
        self._grace = 30
        self._lock = threading.Lock()

    def run(self, pod: LocalPod, directory: Path, log: LogSink) -> ContainerExit:
        files = pod_file_system(pod, directory)
        files.make()
        message_file = Path(files.local(pod.termination_message_path))
        message_file.write_text("")
        argv = local_argv(pod, self.agent, files)
        env = local_environment(pod, files)
        self._grace = pod.termination_grace_seconds
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with (directory / "container.log").open("w", encoding="utf-8") as log_file:
            with self._lock:
                self._process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=directory,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    # Its own session: a signal for the worker is not the pod's.
                    start_new_session=True,
                )
            process = self._process
            assert process.stdout is not None
            reader = threading.Thread(
                target=pump_log,
                args=(process.stdout, log, log_file, tail),
                name=f"{pod.name}-log",
                daemon=True,
            )
            reader.start()
            deadline_exceeded = self._wait(process, pod.active_deadline_seconds)
            reader.join()
        code = process.returncode
        return ContainerExit(
            # A container killed by signal N reports 128+N, as the runtime does.
            exit_code=code if code >= 0 else 128 - code,
            termination_message=message_file.read_text(errors="replace"),
            log_tail="\n".join(tail),
            deadline_exceeded=deadline_exceeded,
        )

    def stop(self) -> None:
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            threading.Thread(target=_terminate, args=(process, self._grace), daemon=True).start()

    def _wait(self, process: subprocess.Popen[bytes], deadline_seconds: int | None) -> bool:
        try:
            process.wait(timeout=deadline_seconds)
            return False
        except subprocess.TimeoutExpired:
            _terminate(process, self._grace)
            return True


def pump_log(stream: IO[bytes], log: LogSink, log_file: IO[str], tail: collections.deque[str]) -> None:
    """Each line of the container's output to the operator's log, `container.log` and the tail
    kept for FallbackToLogsOnError (shared with the container back-end)."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        log_file.write(line + "\n")
        log_file.flush()
        log(line)


def _terminate(process: subprocess.Popen[bytes], grace: int) -> None:
    """What deleting a pod does: SIGTERM to the container's first process, SIGKILL to all of
    its processes after the grace period (here: the agent and everything below it)."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    if process.poll() is None:
        for pid in [*_descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    process.wait()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' do not.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children[parent].append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _data_path(declaration: str) -> str:
    """PATH of `PATH[=URI][#OPTIONS]`."""
    return declaration.split("=", 1)[0].split("#", 1)[0]
