"""Runs the real helm and hadolint (installed by scripts/install-chart-tools) on the chart and Dockerfiles."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO

CHART = REPO / "charts" / "data-platform"
EXAMPLE_VALUES = CHART / "examples" / "three-tenants.yaml"
DOCKER = REPO / "docker"
TOOLS = REPO / ".tools" / "bin"
RELEASE = "data-platform"
AIRFLOW_NAMESPACE = "airflow"
POD_TEMPLATE_KEY = "pod_template.yaml"
POLICY_KEY = "platform-policy.yaml"

# helm keeps a cache, config and plugins under the user's home: give it a throwaway one.
_HELM_HOME = tempfile.mkdtemp(prefix="helm-home-")


def tool(name: str) -> Path:
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/install-chart-tools (it installs helm and hadolint)")
    return path


def run(argv: Sequence[str | Path], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": _HELM_HOME,
        "HELM_CACHE_HOME": f"{_HELM_HOME}/cache",
        "HELM_CONFIG_HOME": f"{_HELM_HOME}/config",
        "HELM_DATA_HOME": f"{_HELM_HOME}/data",
        "XDG_CONFIG_HOME": f"{_HELM_HOME}/config",
    }
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd or _HELM_HOME, env=env, capture_output=True, text=True, timeout=120
    )


def value_args(values: Iterable[Path] = (), sets: Mapping[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def helm_template(
    values: Iterable[Path] = (), sets: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            tool("helm"),
            "template",
            RELEASE,
            CHART,
            "--namespace",
            AIRFLOW_NAMESPACE,
            *value_args(values, sets),
        ]
    )


def helm_lint(
    values: Iterable[Path] = (), sets: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        [tool("helm"), "lint", "--strict", CHART, "--namespace", AIRFLOW_NAMESPACE, *value_args(values, sets)]
    )


def render(
    values: Iterable[Path] = (EXAMPLE_VALUES,), sets: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The chart's documents, as `helm template` renders them."""
    result = helm_template(values, sets)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: Iterable[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: Iterable[dict[str, Any]], kind: str, namespace: str) -> dict[str, Any]:
    found = find(docs, kind, namespace)
    assert len(found) == 1, f"expected one {kind} in {namespace}, found {len(found)}"
    return found[0]


def pod_template(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The Pod the Airflow side reads from DATA_PLATFORM_POD_TEMPLATE_FILE."""
    configmap = next(d for d in find(docs, "ConfigMap", AIRFLOW_NAMESPACE) if POD_TEMPLATE_KEY in d["data"])
    pod: dict[str, Any] = yaml.safe_load(configmap["data"][POD_TEMPLATE_KEY])
    return pod


def policy_text(docs: Iterable[dict[str, Any]], namespace: str) -> str:
    configmap = next(d for d in find(docs, "ConfigMap", namespace) if POLICY_KEY in d.get("data", {}))
    text: str = configmap["data"][POLICY_KEY]
    return text


def container(pod: dict[str, Any], name: str = "base") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    return found


def env_names(container_spec: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container_spec.get("env", [])]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security's "restricted" profile refuses in a pod (the checks that apply to ours)."""
    problems = []
    spec = pod["spec"]
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}  # fmt: skip
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']} is {kinds}")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(flag)
    pod_security = spec.get("securityContext", {})
    if (pod_security.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile")
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        security = c.get("securityContext", {})
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if security.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        if (security.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: capabilities.drop")
        if set((security.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities.add")
        if c.get("ports") and any(p.get("hostPort") for p in c["ports"]):
            problems.append(f"{c['name']}: hostPort")
    return problems


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from its FROM on)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(path):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result
