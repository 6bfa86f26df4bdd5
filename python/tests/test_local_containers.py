"""The local runner's container back-end (data_platform.local.container): the pod's image under
podman with the pod's limits, volumes and read-only root, as the chart's pod template sets them.

The pod→podman mapping itself (data_platform.local.podman) is checked here without podman, and
proven on the chart's pod by test_images.py. With podman: the back-end's own ends (a kernel OOM
kill, the deadline), then the seed pipeline through real Airflow with `data-platform run-local
--containers`, as `scripts/quickstart --containers` runs it. Skipped, saying why, only where
podman cannot run containers (scripts/build-images exits 77).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import models as k8s

from conftest import REPO
from data_platform.local.backends import ContainerExit
from data_platform.local.container import ContainerBackend, worker_environment
from data_platform.local.kubelet import finished_pod
from data_platform.local.podman import PodmanMappingError, pod_volumes, podman_run_args
from data_platform.local.podspec import local_pod
from data_platform.local.settings import LocalSettings, parse_images
from data_platform.operator import container_end
from test_local_runner import run_local, tries

BUILD_IMAGES = REPO / "scripts" / "build-images"
RUNTIME = "ghcr.io/data-platform/python-runtime:3.12-1"
HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def chart_like_pod(argv: list[str], *, memory: str = "1Gi", deadline: int | None = None) -> k8s.V1Pod:
    """A pod as the operator builds it on the chart's template (its security and volume kinds)."""
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="task-x1", namespace="tenant-user1"),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            active_deadline_seconds=deadline,
            termination_grace_period_seconds=1,
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=65532,
                run_as_group=65532,
                fs_group=65532,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                k8s.V1Container(
                    name="base",
                    image=RUNTIME,
                    command=argv[:1],
                    args=argv[1:],
                    security_context=k8s.V1SecurityContext(
                        allow_privilege_escalation=False,
                        read_only_root_filesystem=True,
                        privileged=False,
                        run_as_non_root=True,
                        run_as_user=65532,
                        run_as_group=65532,
                        capabilities=k8s.V1Capabilities(drop=["ALL"]),
                        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
                    ),
                    resources=k8s.V1ResourceRequirements(limits={"memory": memory, "cpu": "500m"}),
                    termination_message_path="/dev/termination-log",
                    termination_message_policy="FallbackToLogsOnError",
                    env=[
                        k8s.V1EnvVar(name="HOME", value="/tmp"),
                        k8s.V1EnvVar(
                            name="K8S_POD_NAME",
                            value_from=k8s.V1EnvVarSource(
                                field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.name")
                            ),
                        ),
                        k8s.V1EnvVar(
                            name="FROM_SECRET",
                            value_from=k8s.V1EnvVarSource(
                                secret_key_ref=k8s.V1SecretKeySelector(name="s", key="k")
                            ),
                        ),
                    ],
                    volume_mounts=[
                        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
                        k8s.V1VolumeMount(name="secrets", mount_path="/run/secrets"),
                        k8s.V1VolumeMount(name="policy", mount_path="/etc/data-platform", read_only=True),
                        k8s.V1VolumeMount(name="declared-data", mount_path="/data"),
                    ],
                )
            ],
            volumes=[
                k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi")),
                k8s.V1Volume(
                    name="secrets", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit="4Mi")
                ),
                k8s.V1Volume(
                    name="policy",
                    config_map=k8s.V1ConfigMapVolumeSource(name="data-platform-policy", default_mode=0o444),
                ),
                k8s.V1Volume(name="declared-data", empty_dir=k8s.V1EmptyDirVolumeSource()),
            ],
        ),
    )


CONFIG_MAPS = {"data-platform-policy": {"platform-policy.yaml": "tenants: {}\n"}}


# --- The mapping, without podman ----------------------------------------------------------------------


def test_the_pods_security_limits_and_volumes_become_podmans_flags(tmp_path: Path):
    manifest: dict[str, Any] = dict(
        local_pod(chart_like_pod(["/usr/local/bin/task-agent", "run"]), "base").manifest
    )
    volumes = pod_volumes(manifest, tmp_path, CONFIG_MAPS)
    (base,) = manifest["spec"]["containers"]
    args = podman_run_args(
        manifest,
        base,
        "localhost/runtime",
        volumes,
        termination_log=tmp_path / "t",
        extra_env={"X": "1"},
        extra_mounts={},
        name="n",
        remove=False,
        node_name="node",
    )
    text = " ".join(args)
    for flags in (
        "--pull=never --network host --hostname task-x1 --name n",
        "--user 65532:65532",
        "--group-add 65532",
        "--read-only --read-only-tmpfs=false",
        "--security-opt no-new-privileges",
        "--cap-drop ALL",
        "--memory 1073741824 --memory-swap 1073741824",
        "--cpus 0.5",
        f"-v {tmp_path}/volumes/tmp:/tmp",
        "--mount type=tmpfs,tmpfs-size=4194304,tmpfs-mode=1777,destination=/run/secrets",
        f"-v {tmp_path}/volumes/policy:/etc/data-platform:ro",
        f"-v {tmp_path}/volumes/declared-data:/data",
        f"-v {tmp_path}/t:/dev/termination-log",
        "--env HOME=/tmp",
        "--env K8S_POD_NAME=task-x1",
        "--env X=1",
        '--entrypoint ["/usr/local/bin/task-agent"] localhost/runtime run',
    ):
        assert flags in text, flags
    assert "--rm" not in args and "FROM_SECRET" not in text, "only a cluster reads Secrets"
    assert (tmp_path / "volumes" / "policy" / "platform-policy.yaml").read_text() == "tenants: {}\n"
    data = tmp_path / "volumes" / "declared-data"
    assert data.stat().st_mode & 0o7777 == 0o2777
    if os.geteuid() == 0:
        assert data.stat().st_gid == 65532, "owned by fsGroup, as the kubelet leaves it"


def test_what_podman_cannot_do_as_the_pod_says_is_refused(tmp_path: Path):
    manifest: dict[str, Any] = dict(local_pod(chart_like_pod(["agent"]), "base").manifest)
    (base,) = manifest["spec"]["containers"]
    with pytest.raises(PodmanMappingError, match="capabilities or privileged"):
        added = {
            **base,
            "securityContext": {**base["securityContext"], "capabilities": {"add": ["NET_ADMIN"]}},
        }
        podman_run_args(manifest, added, "i", {}, termination_log=None, extra_env={}, extra_mounts={})
    with pytest.raises(PodmanMappingError, match="subPath"):
        mounts = [{"name": "tmp", "mountPath": "/tmp", "subPath": "x"}]
        podman_run_args(
            manifest,
            {**base, "volumeMounts": mounts},
            "i",
            {"tmp": "/x"},
            termination_log=None,
            extra_env={},
            extra_mounts={},
        )
    host = {**manifest, "spec": {**manifest["spec"], "volumes": [{"name": "c", "hostPath": {"path": "/v"}}]}}
    with pytest.raises(PodmanMappingError, match="volume c is hostPath"):
        pod_volumes(host, tmp_path / "h", {})
    with pytest.raises(PodmanMappingError, match="configMap data-platform-policy is not available"):
        pod_volumes(manifest, tmp_path / "c", {})


def test_settings_and_what_the_worker_passes():
    assert parse_images(" a:1=localhost/a:local ,b=c\n") == {"a:1": "localhost/a:local", "b": "c"}
    with pytest.raises(ValueError, match="not REF=LOCAL_IMAGE"):
        parse_images("just-an-image")
    worker = {
        "AZURE_STORAGE_CONNECTION_STRING": "c",
        "TASK_AGENT_SNAPSHOT_RETRY_BUDGET": "2s",
        "TASK_AGENT_WORKDIR": "/host/w",
        "TASK_AGENT_MEMORY_LIMIT": "1",
        "TASK_AGENT_LOG_LEVEL": "debug",
        "TASK_AGENT_POLICY_FILE": "/host/p",
        "HOME": "/root",
    }
    passed = worker_environment({"TASK_AGENT_LOG_LEVEL": "info"}, worker)
    assert passed == {"AZURE_STORAGE_CONNECTION_STRING": "c", "TASK_AGENT_SNAPSHOT_RETRY_BUDGET": "2s"}


# --- With podman ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """scripts/build-images' printed settings (cached: a few seconds)."""
    result = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True, timeout=1800)
    if result.returncode == 77:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, f"scripts/build-images failed:\n{result.stderr[-6000:]}"
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def backend(built: dict[str, str], tmp_path: Path) -> ContainerBackend:
    settings = LocalSettings(
        backend="container",
        agent=None,
        root=tmp_path,
        snapshot=None,
        secrets_dir=None,
        images={RUNTIME: built["PYTHON_RUNTIME_IMAGE"]},
        config_maps=None,
    )
    found = ContainerBackend(
        settings,
        worker={
            **os.environ,
            "CONTAINERS_CONF": built["CONTAINERS_CONF"],
            "CONTAINERS_STORAGE_CONF": built["CONTAINERS_STORAGE_CONF"],
        },
    )
    found.config_maps = CONFIG_MAPS
    return found


def test_a_container_killed_at_its_memory_limit_is_oom_killed(built, tmp_path: Path):
    pod = chart_like_pod(["python", "-c", "b = bytearray(300 << 20)"], memory="64Mi")
    end = backend(built, tmp_path).run(local_pod(pod, "base"), tmp_path, lambda line: None)
    assert (end.exit_code, end.oom_killed, end.deadline_exceeded) == (137, True, False)
    ended = container_end(finished_pod(pod, "base", end, fallback_to_logs=True), "base")
    assert ended is not None and ended.reason == "OOMKilled"


def test_the_read_only_root_the_user_and_the_deadline_hold(built, tmp_path: Path):
    script = (
        "import os, time\n"
        "print(os.getuid(), os.getgid(), 65532 in os.getgroups(), flush=True)\n"
        "open('/data/ok', 'w').write('x')\n"
        "try:\n    open('/root-file', 'w')\n"
        "except OSError as e:\n    print('root:', e.strerror, flush=True)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    end = backend(built, tmp_path).run(
        local_pod(chart_like_pod(["python", "-c", script], deadline=3), "base"), tmp_path, lines.append
    )
    assert lines[:2] == ["65532 65532 True", "root: Read-only file system"], lines
    assert (tmp_path / "volumes" / "declared-data" / "ok").read_text() == "x"
    assert end.deadline_exceeded and not end.oom_killed and end.exit_code in (137, 143)


def test_stop_deletes_the_pod_as_airflow_kills_the_task(built, tmp_path: Path):
    """on_kill: SIGTERM, then SIGKILL after the grace period; neither OOM nor the deadline."""
    runner = backend(built, tmp_path)
    started = threading.Event()

    def started_when_it_prints(line: str) -> None:
        started.set()

    script = "import time; print('up', flush=True); time.sleep(60)"
    pod = local_pod(chart_like_pod(["python", "-c", script], memory="64Mi"), "base")
    ends: list[ContainerExit] = []
    worker = threading.Thread(target=lambda: ends.append(runner.run(pod, tmp_path, started_when_it_prints)))
    worker.start()
    assert started.wait(60)
    runner.stop()
    worker.join(60)
    (end,) = ends
    assert end.exit_code in (137, 143) and not end.oom_killed and not end.deadline_exceeded


def test_the_seed_pipeline_runs_through_airflow_with_the_container_back_end(
    built, agent_binary: Path, tmp_path: Path
):
    if os.geteuid() != 0:
        pytest.skip("the local SFTP server chroots, which sshd does only as root (CI runs as root)")
    done = run_local(
        agent_binary,
        str(REPO / "dags" / "user1_pipeline.py"),
        "--code",
        str(REPO / "examples" / "user1_pipeline"),
        "--work-dir",
        str(tmp_path),
        "--containers",
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"PYTHON_RUNTIME_IMAGE={built['PYTHON_RUNTIME_IMAGE']}" in out
    assert f"{RUNTIME} as {built['PYTHON_RUNTIME_IMAGE']}" in out
    order = [out.index(f"== {task}: success (tries: 1)") for task in ("validate", "transform", "upload")]
    assert order == sorted(order), out
    assert out.count("agent: task finished status=succeeded exit_code=0") == 2, out
    assert 'return_value: {"rows": 3}' in out
    produced = re.search(
        r"output: (\S+/transform/-1/1/files/data/out\.csv) \(file, \d+ bytes, sha256 (\w+)\)", out
    )
    delivered = re.search(
        r"on the SFTP server of 'sftp': /incoming/out\.csv \(here: (\S+)\) sha256 (\w+)", out
    )
    assert produced is not None and delivered is not None, out
    partner_file = Path(delivered.group(1))
    try:
        assert (
            hashlib.sha256(partner_file.read_bytes()).hexdigest() == produced.group(2) == delivered.group(2)
        )
    finally:
        shutil.rmtree(partner_file.parents[1], ignore_errors=True)
    # In the image, under the chart's pod: the agent saw the container's 1 GiB limit and wrote
    # /data in the pod's own emptyDir, owned by the pod's user.
    pods = tmp_path / "pods"
    (validate_try,) = tries(pods, "user1_pipeline", "validate")
    (transform_try,) = tries(pods, "user1_pipeline", "transform")
    assert "memory limits container_limit=1.0 GiB" in (validate_try / "container.log").read_text()
    written = validate_try / "volumes" / "declared-data" / "valid.csv"
    assert written.stat().st_uid == 65532
    assert written.read_bytes() == (transform_try / "volumes" / "declared-data" / "valid.csv").read_bytes()
    assert (
        record_of_container(transform_try)["inputs"][0]["sha256"]
        == record_of_container(validate_try)["outputs"][0]["sha256"]
    )


def record_of_container(try_dir: Path) -> dict[str, Any]:
    """The record in the file the container's /dev/termination-log was."""
    found: dict[str, Any] = json.loads((try_dir / "termination-log").read_text())
    return found
