"""A pod manifest's container as `podman run`: what the kubelet would give it, on this machine.

Shared by the container back-end (data_platform.local.container) and python/tests/test_images.py,
which proves the mapping on the chart's own pod (docker/README.md, "A pod's container"):

- `securityContext`: `runAsUser`/`runAsGroup` → `--user`, `fsGroup` → `--group-add`,
  `readOnlyRootFilesystem` → `--read-only --read-only-tmpfs=false` (without the latter podman
  adds tmpfs mounts at /tmp, /run and /var/tmp, which a pod does not get),
  `allowPrivilegeEscalation: false` → `--security-opt no-new-privileges`, `drop: [ALL]` →
  `--cap-drop ALL`, `seccompProfile: RuntimeDefault` → podman's default profile;
- `resources.limits` → `--memory` with `--memory-swap` equal (a node has no swap; podman would
  allow twice the limit) and `--cpus`;
- volumes (`pod_volumes`): an emptyDir is a directory of the pod owned by root:fsGroup, mode 2777
  (what the kubelet's fsGroup handling leaves), a memory emptyDir a tmpfs, a configMap a
  directory of its keys; `terminationMessagePath` a file bind-mounted there;
- the network is the host's: the services the pod reaches here (Azurite, sshd) listen on its
  loopback.

What podman could not do as the pod says (added capabilities, privileged, a Localhost seccomp
profile, subPath mounts, hostPath and other volume kinds) is refused with `PodmanMappingError`,
never run differently.
"""

from __future__ import annotations

import json
import os
import platform
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_platform.units import parse_quantity

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class PodmanMappingError(ValueError):
    """The pod asks for something this mapping does not give; the message says what."""


def podman_run_args(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: str,
    volumes: Mapping[str, str],
    *,
    termination_log: Path | None,
    extra_env: Mapping[str, str],
    extra_mounts: Mapping[str, Path],
    name: str | None = None,
    remove: bool = True,
    node_name: str | None = None,
) -> list[str]:
    """`podman run …` (without `podman`) for one container of a pod manifest (camelCase JSON).

    `volumes` maps each pod volume to podman's `-v SOURCE` or `--mount` text (without the
    destination), as `pod_volumes` makes them. `extra_mounts` are bind mounts (read-only) the
    pod does not declare; `extra_env` variables the pod template would add on a cluster.
    `remove=False` keeps the container after it exits, so its state (OOMKilled) can be read.
    """
    spec = pod["spec"]
    metadata = pod["metadata"]
    pod_security = spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    seccomp = (security.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp not in ("RuntimeDefault", "Unconfined"):
        raise PodmanMappingError(f"container {container['name']}: seccompProfile {seccomp} is not supported")
    capabilities = security.get("capabilities") or {}
    if capabilities.get("add") or security.get("privileged"):
        raise PodmanMappingError(
            f"container {container['name']}: added capabilities or privileged mode are not given locally"
        )
    args = ["run", "--pull=never", "--network", "host", "--hostname", metadata["name"],
            "--name", name or f"{metadata['name']}-{container['name']}-{uuid.uuid4().hex[:8]}"]  # fmt: skip
    if remove:
        args.append("--rm")
    user, group = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot") and user == 0:
        raise PodmanMappingError(f"container {container['name']}: runAsNonRoot with runAsUser 0")
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if "fsGroup" in pod_security:
        args += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        # Kubernetes adds no tmpfs of its own: /tmp is writable only if a volume says so.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    for dropped in capabilities.get("drop") or []:
        args += ["--cap-drop", str(dropped)]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        memory = str(int(parse_quantity(str(limits["memory"]), "memory")))
        args += ["--memory", memory, "--memory-swap", memory]  # no swap, as on a node
    if "cpu" in limits:
        args += ["--cpus", str(parse_quantity(str(limits["cpu"]), "cpu"))]
    for mount in container.get("volumeMounts") or []:
        if "subPath" in mount or "subPathExpr" in mount:
            raise PodmanMappingError(f"volume mount {mount['name']}: subPath is not supported")
        source = volumes[mount["name"]]
        read_only = mount.get("readOnly", False)
        if source.startswith("type="):
            args += ["--mount", f"{source},destination={mount['mountPath']}" + (",ro" if read_only else "")]
        else:
            args += ["-v", f"{source}:{mount['mountPath']}" + (":ro" if read_only else "")]
    for path, directory in extra_mounts.items():
        args += ["-v", f"{directory}:{path}:ro"]
    if termination_log is not None:
        target = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        args += ["-v", f"{termination_log}:{target}"]
    downward = {"metadata.name": metadata["name"], "metadata.namespace": metadata.get("namespace", "default"),
                "spec.nodeName": node_name or platform.node()}  # fmt: skip
    for variable in container.get("env") or []:
        if "value" in variable:
            args += ["--env", f"{variable['name']}={variable['value']}"]
        elif "fieldRef" in (variable.get("valueFrom") or {}):
            value = downward.get(variable["valueFrom"]["fieldRef"]["fieldPath"], "")
            args += ["--env", f"{variable['name']}={value}"]
        elif "valueFrom" not in variable:
            args += ["--env", f"{variable['name']}="]
        # From Secrets, ConfigMaps or resource fields: only a cluster fills them in (LocalPod says so).
    for name_, value in extra_env.items():
        args += ["--env", f"{name_}={value}"]
    args += ["--entrypoint", json.dumps(list(container["command"])), image, *container.get("args", [])]
    return args


def pod_volumes(
    pod: Mapping[str, Any], root: Path, config_maps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Each volume of the pod as the kubelet would make it, under `root/volumes/`: emptyDirs are
    directories of the pod owned by fsGroup (setgid, group-writable), a memory emptyDir a tmpfs,
    a configMap its keys (from `config_maps[NAME]`) as files of its defaultMode."""
    group = (pod["spec"].get("securityContext") or {}).get("fsGroup", 0)
    made: dict[str, str] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume and (volume["emptyDir"] or {}).get("medium") == "Memory":
            size = int(parse_quantity(str(volume["emptyDir"].get("sizeLimit", "64Mi")), name))
            made[name] = f"type=tmpfs,tmpfs-size={size},tmpfs-mode=1777"
        elif "emptyDir" in volume:
            directory = root / "volumes" / name
            directory.mkdir(parents=True)
            if os.geteuid() == 0:
                os.chown(directory, 0, group)
            directory.chmod(0o2777)
            made[name] = str(directory)
        elif "configMap" in volume:
            source = volume["configMap"]["name"]
            if source not in config_maps:
                raise PodmanMappingError(
                    f"volume {name}: configMap {source} is not available on this machine "
                    f"(known: {', '.join(sorted(config_maps)) or 'none'})"
                )
            directory = root / "volumes" / name
            directory.mkdir(parents=True)
            for key, text in config_maps[source].items():
                (directory / key).write_text(text)
                (directory / key).chmod(volume["configMap"].get("defaultMode", 0o644))
            made[name] = str(directory)
        else:
            kinds = ", ".join(sorted(set(volume) - {"name"}))
            raise PodmanMappingError(
                f"volume {name} is {kinds}: locally a pod gets emptyDir and configMap volumes only "
                "(render the chart with snapshotCache.type=emptyDir)"
            )
    return made


def termination_log_file(root: Path) -> Path:
    """The file the kubelet reads the termination message from, writable by the pod's user."""
    path = root / "termination-log"
    path.write_text("")
    path.chmod(0o666)
    return path
