"""Where a pod task's declared files live in its pod.

The chart's pod template gives the container a read-only root file system and writable volumes
only at its own paths (/workspace, /tmp, /run/secrets, /airflow/xcom, …). A task that declares
`outputs=["/data/out.csv"]` needs /data to be writable, and one that declares an input there
needs the agent to be able to download into it. So the operator gives the pod one emptyDir per
top directory of the declared paths (`/data` for `/data/out.csv`) that no volume of the pod and
not the agent's working directory already holds (docs/data-between-tasks.md, "For DAG authors").

Parse time refuses what no volume could fix: a path directly under `/` (the volume would be
the file itself, or `/`) and a path under a system directory of the image (a volume there would
hide what the image needs to run, or the platform's own files).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from kubernetes.client import models as k8s

from data_platform.policy import PolicyError

#: Directories of the image and of the platform that a declared path may not be under. /lib64
#: holds the dynamic loader on amd64 (/lib's twin); /var/run is /run in Debian images.
SYSTEM_DIRECTORIES = (
    "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib", "/lib64", "/sbin", "/var/run", "/run/secrets",
)  # fmt: skip
#: The agent's working directory when neither `--workdir` nor TASK_AGENT_WORKDIR says (task-agent's
#: default); relative paths are under it.
DEFAULT_WORKDIR = "/workspace"
#: Names of the volumes the operator adds: the template's volumes never start with it.
VOLUME_PREFIX = "declared-"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: A volume name is a DNS label (63 characters): the prefix, a readable part and a digest.
_READABLE = 40


def check_pod_path(path: str, field: str) -> None:
    """A declared input or output path (already normalised by `check_path`) that a pod can hold,
    or a PolicyError naming the path and the fix."""
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        return  # under the working directory, a volume of the pod
    for system in map(PurePosixPath, SYSTEM_DIRECTORIES):
        if pure == system or system in pure.parents:
            raise PolicyError(
                f"{field}: {path!r} is under {system}, a system directory of the pod's image, where the "
                f"platform mounts no volume; declare it in a directory of your own, e.g. /data/{pure.name}"
            )
    if len(pure.parts) == 2:
        raise PolicyError(
            f"{field}: {path!r} is directly under /, which is read-only in a pod (the platform mounts a "
            f"writable volume at a path's top directory); declare it in a directory, e.g. /data{path}"
        )


def top_directory(path: str) -> str | None:
    """`/data` for `/data/out.csv`; None for a relative path (the working directory's)."""
    pure = PurePosixPath(path)
    return str(PurePosixPath(*pure.parts[:2])) if pure.is_absolute() and len(pure.parts) > 1 else None


def volume_name(directory: str) -> str:
    """`declared-data` for /data: deterministic, so every try and every render of the task names
    it alike; a directory that is not a DNS label already gets a digest to stay unique."""
    name = directory.strip("/")
    if _DNS_LABEL.match(name) and len(name) <= _READABLE:
        return VOLUME_PREFIX + name
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_READABLE].strip("-")
    digest = hashlib.sha256(directory.encode()).hexdigest()[:8]
    return f"{VOLUME_PREFIX}{readable}-{digest}" if readable else f"{VOLUME_PREFIX}{digest}"


def workdir_of(container: k8s.V1Container) -> str:
    """The agent's working directory in this container: `--workdir`, else TASK_AGENT_WORKDIR."""
    args = list(container.args or [])
    separator = args.index("--") if "--" in args else len(args)
    for index in range(separator - 1):
        if args[index] == "--workdir":
            return str(args[index + 1])
        if args[index].startswith("--workdir="):
            return str(args[index].split("=", 1)[1])
    env = {variable.name: variable.value for variable in container.env or []}
    return str(env.get("TASK_AGENT_WORKDIR") or DEFAULT_WORKDIR)


def _under(path: str, directory: str) -> bool:
    return path == directory or PurePosixPath(directory) in PurePosixPath(path).parents


def add_declared_volumes(pod: k8s.V1Pod, container: k8s.V1Container, paths: Iterable[str]) -> list[str]:
    """Adds an emptyDir to `pod` and its mount to `container` for the top directory of each of
    `paths` not already under one of the container's mounts or its working directory. Returns
    the directories mounted. Idempotent: a second call finds the mounts of the first."""
    mounts: list[k8s.V1VolumeMount] = list(container.volume_mounts or [])
    held: Sequence[str] = [mount.mount_path for mount in mounts]
    workdir = workdir_of(container)
    wanted: list[str] = []
    for path in paths:
        directory = top_directory(path)
        if directory is None or directory in wanted:
            continue
        if _under(path, workdir) or any(_under(path, mounted) for mounted in held):
            continue
        if any(_under(path, system) for system in SYSTEM_DIRECTORIES):
            # Refused at parse time; a pod built otherwise still gets no volume over the image.
            continue
        wanted.append(directory)
    if not wanted:
        return []
    volumes = list(pod.spec.volumes or [])
    for directory in wanted:
        name = volume_name(directory)
        volumes.append(k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource()))
        mounts.append(k8s.V1VolumeMount(name=name, mount_path=directory))
    pod.spec.volumes = volumes
    container.volume_mounts = mounts
    return wanted
