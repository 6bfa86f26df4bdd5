"""The images of docker/, built with podman from the Dockerfiles and run for real.

scripts/build-images builds both (the agent image from scripts/build-static's binary, the
Python runtime on a Debian base made locally by debootstrap: no registry can be pulled from
here) and prints their names. Then the seed's `validate` task, rendered by the Airflow side on
the chart's pod template, runs as that pod would: the agent image's init container installs the
agent into a volume the runtime container runs it from (or, in the chart's default delivery, the
runtime image's own agent), read-only root, user 65532, no capabilities, the pod's memory and
CPU limits and volumes, and the record the agent writes to /dev/termination-log goes back
through the operator's completion path.

Skipped, saying why, only where podman cannot run containers (scripts/build-images exits 77).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from azure.storage.blob import BlobServiceClient
from kubernetes.client import models as k8s

from chart_helpers import AIRFLOW_NAMESPACE, pod_template, policy_text, render
from conftest import DAGS, REPO, SCHEMA_FILE, Azurite
from data_platform.artifacts import OUTPUTS_XCOM_KEY
from data_platform.local.podman import pod_volumes, podman_run_args, termination_log_file
from data_platform.operator import RECORD_XCOM_KEY
from podsim import ContainerRun, complete, finished, record_cluster_calls
from rendering import as_manifest, context_for
from rendering import render as render_pod

BUILD_IMAGES = REPO / "scripts" / "build-images"
#: What the chart and the policy name, and what stands for each here.
REGISTRY_AGENT_IMAGE = "ghcr.io/data-platform/task-agent:0.1.0"
REGISTRY_RUNTIME_IMAGE = "ghcr.io/data-platform/python-runtime:3.12-1"
TENANT_NAMESPACE = "tenant-user1"
NONROOT = 65532


@dataclass(frozen=True)
class Images:
    agent: str
    runtime: str
    base: str
    agent_binary: Path
    podman_env: dict[str, str]

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.podman_env, capture_output=True, text=True, timeout=timeout
        )

    def inspect(self, image: str) -> dict[str, Any]:
        result = self.podman("image", "inspect", image)
        assert result.returncode == 0, result.stderr
        found: dict[str, Any] = json.loads(result.stdout)[0]
        return found

    def files(self, image: str) -> dict[str, os.stat_result]:
        """Every path in the image's root file system (relative), with its stat."""
        mounted = self.podman("image", "mount", image)
        assert mounted.returncode == 0, mounted.stderr
        root = Path(mounted.stdout.strip())
        try:
            return {str(path.relative_to(root)): path.lstat() for path in root.rglob("*")}
        finally:
            self.podman("image", "unmount", image)

    def read(self, image: str, path: str) -> bytes:
        mounted = self.podman("image", "mount", image)
        assert mounted.returncode == 0, mounted.stderr
        try:
            return (Path(mounted.stdout.strip()) / path.lstrip("/")).read_bytes()
        finally:
            self.podman("image", "unmount", image)


@pytest.fixture(scope="module")
def images() -> Images:
    result = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True, timeout=1800)
    if result.returncode == 77:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, f"scripts/build-images failed:\n{result.stderr[-6000:]}"
    built = dict(line.split("=", 1) for line in result.stdout.splitlines())
    podman_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CONTAINERS_CONF": built["CONTAINERS_CONF"],
        "CONTAINERS_STORAGE_CONF": built["CONTAINERS_STORAGE_CONF"],
    }
    return Images(
        built["AGENT_IMAGE"], built["PYTHON_RUNTIME_IMAGE"], built["BASE_IMAGE"],
        Path(built["AGENT_BINARY"]), podman_env,
    )  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- The images ------------------------------------------------------------------------------------


def test_build_images_prints_the_images_and_podmans_settings(images):
    assert images.agent == "localhost/data-platform/task-agent:0.1.0"
    assert images.runtime == "localhost/data-platform/python-runtime:local"
    for name in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
        assert Path(images.podman_env[name]).is_file(), name
    again = subprocess.run([str(BUILD_IMAGES), "--env"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{k}={images.podman_env[k]}" for k in
                                         ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")]  # fmt: skip


def test_build_images_exits_77_saying_why_where_podman_cannot_run(tmp_path):
    """The one case the image tests skip: a podman that cannot run here (a stub stands for it)."""
    stub = tmp_path / "bin" / "podman"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\necho 'cannot clone: Operation not permitted' >&2\nexit 125\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}",
           "DATA_PLATFORM_IMAGE_CACHE": str(tmp_path / "cache")}  # fmt: skip
    result = subprocess.run([str(BUILD_IMAGES)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 77, result.stderr
    assert "cannot build or run images here" in result.stderr
    assert "Operation not permitted" in result.stderr.splitlines()[-1]


def test_the_agent_image_holds_the_static_binary_the_ca_bundle_and_the_user_alone(images):
    files = images.files(images.agent)
    regular = {path for path, st in files.items() if stat.S_ISREG(st.st_mode)}
    assert regular == {"usr/local/bin/task-agent", "etc/ssl/certs/ca-certificates.crt", "etc/passwd",
                       "etc/group"}, "FROM scratch: no shell, no loader, no libc"  # fmt: skip
    agent = files["usr/local/bin/task-agent"]
    assert (stat.S_IMODE(agent.st_mode), agent.st_uid) == (0o555, 0), "the user cannot replace it"
    shipped = images.read(images.agent, "/usr/local/bin/task-agent")
    assert sha256(shipped) == sha256(images.agent_binary.read_bytes()), "scripts/build-static's binary"
    assert images.read(images.agent, "/etc/passwd").startswith(b"nonroot:x:65532:65532:")
    config = images.inspect(images.agent)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/task-agent"]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in config["Env"]


def test_the_agent_image_runs_the_agent_as_its_non_root_user(images):
    result = images.podman("run", "--rm", "--pull=never", "--read-only", images.agent, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, "task-agent 0.1.0"), result.stderr
    no_shell = images.podman(
        "run", "--rm", "--pull=never", "--entrypoint", "/bin/sh", images.agent, "-c", "true"
    )
    assert no_shell.returncode != 0, "a scratch image has no shell"


def test_the_python_runtime_runs_python_as_the_non_root_user_with_the_agent_as_entrypoint(images):
    config = images.inspect(images.runtime)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/task-agent"]
    assert config["WorkingDir"] == "/workspace"
    for variable in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp"):
        assert variable in config["Env"]
    shipped = images.read(images.runtime, "/usr/local/bin/task-agent")
    assert sha256(shipped) == sha256(images.agent_binary.read_bytes()), "copied from the agent image"
    probe = "import os, sys; print(os.getuid(), os.getgid(), sys.version_info >= (3, 11))"
    result = images.podman("run", "--rm", "--pull=never", "--read-only", "--entrypoint", "python",
                           images.runtime, "-c", probe)  # fmt: skip
    assert (result.returncode, result.stdout.split()) == (0, ["65532", "65532", "True"]), result.stderr


def test_the_images_stay_small(images):
    agent = images.inspect(images.agent)["Size"]
    binary = images.agent_binary.stat().st_size
    assert agent <= binary + 1_000_000, "the binary and a CA bundle, nothing more"
    added = images.inspect(images.runtime)["Size"] - images.inspect(images.base)["Size"]
    assert added <= binary + 1_000_000, "the runtime adds the agent and a user to its base"


# --- The seed task in its pod --------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerResult:
    name: str
    exit_code: int
    logs: str


def run_pod(
    images: Images,
    pod: dict[str, Any],
    root: Path,
    *,
    image_of: Mapping[str, str],
    config_maps: Mapping[str, Mapping[str, str]],
    extra_env: Mapping[str, str],
    extra_mounts: Mapping[str, Path],
) -> tuple[list[ContainerResult], ContainerRun]:
    """Runs the pod's init containers in order, then its one container, as the kubelet would."""
    volumes = pod_volumes(pod, root, config_maps)
    results = []
    for init in pod["spec"].get("initContainers", []):
        args = podman_run_args(pod, init, image_of[init["image"]], volumes, termination_log=None,
                               extra_env={}, extra_mounts={})  # fmt: skip
        done = images.podman(*args)
        results.append(ContainerResult(init["name"], done.returncode, done.stdout + done.stderr))
        assert done.returncode == 0, f"init container {init['name']} failed: {done.stdout}{done.stderr}"
    (base,) = pod["spec"]["containers"]
    termination_log = termination_log_file(root)
    args = podman_run_args(pod, base, image_of[base["image"]], volumes, termination_log=termination_log,
                           extra_env=extra_env, extra_mounts=extra_mounts)  # fmt: skip
    done = images.podman(*args, timeout=300)
    results.append(ContainerResult(base["name"], done.returncode, done.stdout + done.stderr))
    run = ContainerRun(
        done.returncode, termination_log.read_text(errors="replace"), done.stdout + done.stderr
    )
    return results, run


def with_azurite(policy: str, azurite: Azurite, artifacts: str) -> str:
    """The chart's policy with user1's storage on Azurite (on AKS, the tenant's accounts)."""
    document = yaml.safe_load(policy)
    user1 = document["tenants"]["user1"]
    user1["storage"] = [f"{azurite.endpoint}/image-snapshots"]
    user1["artifacts"] = f"{azurite.endpoint}/{artifacts}"
    return yaml.safe_dump(document)


@pytest.fixture(scope="module")
def seed_snapshot(
    agent_binary: Path, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """examples/user1_pipeline packed with `task-agent pack` and published to Azurite."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("image-snapshots", "image-runs-init-container", "image-runs-example"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    archive = tmp_path_factory.mktemp("seed") / "user1_pipeline.tar.gz"
    packed = subprocess.run(
        [str(agent_binary), "pack", "--output", str(archive), str(REPO / "examples" / "user1_pipeline")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    service.get_blob_client("image-snapshots", "user1_pipeline.tar.gz").upload_blob(
        archive.read_bytes(), overwrite=True
    )
    return f"{azurite.endpoint}/image-snapshots/user1_pipeline.tar.gz", packed.stdout.split()[0]


@pytest.fixture
def isolated_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("delivery", ["initContainer", "image"])
def test_the_seed_validate_task_runs_in_the_images_as_the_charts_pod(
    images: Images,
    azurite: Azurite,
    seed_snapshot: tuple[str, str],
    delivery: str,
    tmp_path: Path,
    isolated_environ: None,
) -> None:
    variant = "init-container" if delivery == "initContainer" else "example"
    docs = render(sets={"agent.delivery": delivery})
    artifacts = f"image-runs-{variant}"
    # The Airflow side reads the policy of its namespace; the pod mounts its tenant namespace's.
    airflow_policy = tmp_path / "airflow-policy.yaml"
    airflow_policy.write_text(with_azurite(policy_text(docs, AIRFLOW_NAMESPACE), azurite, artifacts))
    template = tmp_path / "pod_template.yaml"
    template.write_text(yaml.safe_dump(pod_template(docs)))
    uri, digest = seed_snapshot
    os.environ.update({
        "DATA_PLATFORM_POD_TEMPLATE_FILE": str(template),
        "DATA_PLATFORM_POLICY_FILE": str(airflow_policy),
        "USER1_PIPELINE_SNAPSHOT": uri,
        "USER1_PIPELINE_SNAPSHOT_SHA256": digest,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
    })  # fmt: skip

    bag = DagBag(dag_folder=DAGS / "user1_pipeline.py", safe_mode=True)
    assert bag.import_errors == {}
    op = bag.dags["user1_pipeline"].get_task("validate")
    context = context_for(op)
    pod: k8s.V1Pod = render_pod(op, context)
    manifest = as_manifest(pod)
    (base,) = manifest["spec"]["containers"]
    assert base["image"] == REGISTRY_RUNTIME_IMAGE
    inits = manifest["spec"].get("initContainers", [])
    if delivery == "initContainer":
        assert [i["image"] for i in inits] == [REGISTRY_AGENT_IMAGE]
        assert base["command"] == ["/opt/task-agent/task-agent"]
    else:
        assert inits == [] and base["command"] == ["/usr/local/bin/task-agent"]

    # validate writes its declared output /data/valid.csv: the root file system is read-only, so
    # the operator gave the pod a writable emptyDir at /data (data_platform.pod_paths).
    assert {"name": "declared-data", "mountPath": "/data"} in base["volumeMounts"]
    pod_policy = with_azurite(policy_text(docs, TENANT_NAMESPACE), azurite, artifacts)
    results, run = run_pod(
        images, manifest, tmp_path / "pod",
        image_of={REGISTRY_AGENT_IMAGE: images.agent, REGISTRY_RUNTIME_IMAGE: images.runtime},
        config_maps={"data-platform-policy": {"platform-policy.yaml": pod_policy}},
        # On AKS the pod's workload identity reaches the tenant's storage; here Azurite's key.
        extra_env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
        extra_mounts={},
    )  # fmt: skip

    assert run.exit_code == 0, run.logs
    assert "validate: 3 rows ok" in run.logs
    if delivery == "initContainer":
        installed = tmp_path / "pod" / "volumes" / "task-agent" / "task-agent"
        assert [r.name for r in results] == ["install-task-agent", "base"]
        assert stat.S_IMODE(installed.stat().st_mode) == 0o555 and installed.stat().st_uid == NONROOT
        assert sha256(installed.read_bytes()) == sha256(images.agent_binary.read_bytes())

    # The record the agent wrote to /dev/termination-log: valid, and what the operator reads.
    record = json.loads(run.termination_file)
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(record)
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    assert record["snapshot"]["sha256"] == digest
    assert record["task"]["dag_id"] == "user1_pipeline" and record["task"]["task_id"] == "validate"

    remote = finished(pod, run)
    calls = record_cluster_calls(op, remote)
    complete(op, pod, remote, context)
    assert calls.deleted == [pod.metadata.name]
    ti = context["ti"]
    assert ti.xcom["return_value"] == {"rows": 3}
    assert ti.xcom[RECORD_XCOM_KEY]["status"] == "succeeded"
    # The declared output went from the pod's /data to the run's artifacts, digest and all.
    (output,) = ti.xcom[OUTPUTS_XCOM_KEY]
    written = (tmp_path / "pod" / "volumes" / "declared-data" / "valid.csv").read_bytes()
    assert output["path"] == "/data/valid.csv" and output["sha256"] == sha256(written)
    assert output["uri"].startswith(f"{azurite.endpoint}/{artifacts}/")
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        artifacts
    )
    (blob,) = [
        b.name for b in container.list_blobs() if b.name.endswith("/validate/-1/1/files/data/valid.csv")
    ]
    assert container.download_blob(blob).readall() == written
