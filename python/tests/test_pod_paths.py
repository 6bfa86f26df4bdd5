"""Where a pod task's declared files live in its pod (data_platform.pod_paths): which paths get a
writable volume, under which name, and which are refused. Pure."""

from __future__ import annotations

import pytest
from kubernetes.client import models as k8s

from data_platform.pod_paths import add_declared_volumes, check_pod_path, top_directory, volume_name
from data_platform.policy import PolicyError


def pod_with(mounts: dict[str, str], *, env: dict[str, str] | None = None, args: list[str] | None = None):
    container = k8s.V1Container(
        name="base",
        args=args,
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        volume_mounts=[k8s.V1VolumeMount(name=name, mount_path=path) for path, name in mounts.items()],
    )
    volumes = [k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource()) for name in mounts.values()]
    return k8s.V1Pod(spec=k8s.V1PodSpec(containers=[container], volumes=volumes)), container


TEMPLATE_MOUNTS = {"/workspace": "workspace", "/tmp": "tmp", "/run/secrets": "secrets",
                   "/airflow/xcom": "return-value", "/var/cache/task-agent": "snapshot-cache"}  # fmt: skip


def test_only_paths_no_volume_holds_get_one_at_their_top_directory():
    pod, container = pod_with(TEMPLATE_MOUNTS, env={"TASK_AGENT_WORKDIR": "/workspace"})
    added = add_declared_volumes(pod, container, [
        "/data/out.csv", "/data/deep/in/x", "/tmp/t.csv", "/workspace/w.csv", "rel/r.csv",
        "/airflow/xcom/v.json", "/airflow/other.json", "/var/cache/task-agent/c", "/results/2026/a",
    ])  # fmt: skip
    assert added == ["/data", "/airflow", "/results"]
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert {path: mounts[path] for path in added} == {
        "/data": "declared-data",
        "/airflow": "declared-airflow",
        "/results": "declared-results",
    }
    added_volumes = [v for v in pod.spec.volumes if v.name.startswith("declared-")]
    assert all(v.empty_dir == k8s.V1EmptyDirVolumeSource() for v in added_volumes)
    assert all(m.read_only is None for m in container.volume_mounts if m.name.startswith("declared-"))
    assert "/" not in mounts
    # Again (a second render of the same pod): nothing more.
    assert add_declared_volumes(pod, container, ["/data/out.csv"]) == []
    assert len(pod.spec.volumes) == len(TEMPLATE_MOUNTS) + 3


def test_the_agents_working_directory_holds_paths_even_without_a_volume():
    pod, container = pod_with({}, args=["run", "--workdir", "/job", "--", "python", "--workdir", "/x"])
    assert add_declared_volumes(pod, container, ["/job/out.csv", "/x/y"]) == ["/x"]
    pod, container = pod_with({})  # task-agent's default working directory
    assert add_declared_volumes(pod, container, ["/workspace/a"]) == []


def test_a_system_directory_never_gets_a_volume_even_if_asked_at_run_time():
    pod, container = pod_with({})
    assert add_declared_volumes(pod, container, ["/etc/x", "/usr/lib/y", "/run/secrets/z"]) == []
    assert not pod.spec.volumes


@pytest.mark.parametrize(
    ("directory", "name"),
    [("/data", "declared-data"), ("/my-data2", "declared-my-data2"),
     ("/Data", "declared-data-" ), ("/data_out", "declared-data-out-"), ("/__", "declared-"),
     ("/" + "x" * 80, "declared-" + "x" * 40 + "-")],
)  # fmt: skip
def test_volume_names_are_dns_labels_and_deterministic(directory, name):
    found = volume_name(directory)
    assert found == volume_name(directory)
    assert found.startswith(name) and len(found) <= 63
    assert found.replace("-", "").isalnum() and found == found.lower()
    if name.endswith("-"):
        assert len(found) == len(name) + 8, "a digest keeps names of other spellings apart"
    assert volume_name("/Data") != volume_name("/data")


def test_top_directory():
    assert top_directory("/data/out.csv") == "/data"
    assert top_directory("/data") == "/data"
    assert top_directory("rel/x") is None


@pytest.mark.parametrize("path", ["/data/out.csv", "/data/dir", "rel/x.csv", "/opt/app/out", "/run/other/x",
                                  "/libfoo/x", "/etcetera/x"])  # fmt: skip
def test_a_path_a_volume_can_hold_is_accepted(path):
    check_pod_path(path, "outputs[0]")


SYSTEM_PATHS = ["/proc/x", "/sys", "/dev/shm/x", "/etc/passwd", "/usr/local/x", "/bin/x", "/lib/x",
                "/lib64/x",
                "/sbin/x", "/var/run/x", "/run/secrets/token"]  # fmt: skip


@pytest.mark.parametrize("path", SYSTEM_PATHS)
def test_a_path_under_a_system_directory_is_refused_naming_it_and_the_fix(path):
    with pytest.raises(PolicyError) as raised:
        check_pod_path(path, "outputs[0]")
    message = str(raised.value)
    assert message.startswith(f"outputs[0]: {path!r} is under /")
    assert "declare it in a directory of your own, e.g. /data/" in message


@pytest.mark.parametrize("path", ["/out.csv", "/data"])
def test_a_path_directly_under_the_root_is_refused(path):
    """Its volume would be the path itself (a file cannot be one) or /, which stays read-only."""
    with pytest.raises(PolicyError) as raised:
        check_pod_path(path, "inputs[0]")
    assert str(raised.value).startswith(f"inputs[0]: {path!r} is directly under /, which is read-only")
    assert f"e.g. /data{path}" in str(raised.value)
