"""The local runner's pure parts: what a rendered pod becomes on this machine (paths, memory,
environment), the swapped code and secrets, and the kubelet's view of the end."""

from __future__ import annotations

from pathlib import Path

from data_platform import CustomerDAGFactory, PlatformTaskFactory, Snapshot
from data_platform.local.backends import ContainerExit
from data_platform.local.kubelet import finished_pod
from data_platform.local.podspec import local_pod
from data_platform.local.process import local_argv, local_environment, pod_file_system, soft_memory_limit
from data_platform.local.rewrites import with_local_secrets, with_snapshot
from data_platform.operator import container_end
from data_platform.outcome import ContainerEnd
from rendering import StateStore, context_for, render

SNAPSHOT = Snapshot("https://user1data.blob.core.windows.net/snapshots/p.tar.gz", "a" * 64)


def rendered(**kwargs):
    dag = CustomerDAGFactory.create("user1_local", tenant="user1", schedule=None)
    op = PlatformTaskFactory(dag).aks_python("t", SNAPSHOT, "t.py", **kwargs)
    return op, render(op, context_for(op, store=StateStore()))


def test_the_soft_limit_is_the_agents_default_for_the_pods_limit():
    mib = 1 << 20
    assert soft_memory_limit(1024 * mib) == 1024 * mib - 1024 * mib // 20  # 5 %
    assert soft_memory_limit(256 * mib) == 224 * mib  # at least 32 MiB
    assert soft_memory_limit(16 * 1024 * mib) == 16 * 1024 * mib - 256 * mib  # at most 256 MiB
    assert soft_memory_limit(48 * mib) == 24 * mib  # under twice the headroom: half


def test_the_pods_paths_become_the_trys_directories(tmp_path: Path):
    op, pod = rendered(outputs=["/data/out.csv", "rel/part.csv"], secrets={"DB": "user1-kv/db"})
    local = local_pod(pod, op.base_container_name)
    assert local.memory_limit_bytes == 1 << 30
    assert local.active_deadline_seconds == pod.spec.active_deadline_seconds
    files = pod_file_system(local, tmp_path)
    argv = local_argv(local, Path("/opt/task-agent"), files)
    assert argv[:2] == ["/opt/task-agent", "run"]
    outputs = [argv[i + 1] for i, word in enumerate(argv) if word == "--output"]
    assert outputs[0].startswith(f"{tmp_path}/data/out.csv=https://")
    assert outputs[1].startswith("rel/part.csv=")  # relative to the workdir, which is mapped
    env = local_environment(local, files, worker={"PATH": "/bin", "TASK_AGENT_MEMORY_LIMIT": "1Mi",
                                                  "DATA_PLATFORM_POLICY_FILE": "/p.yaml"})  # fmt: skip
    assert env["TASK_AGENT_WORKDIR"] == f"{tmp_path}/workspace"
    assert env["TASK_AGENT_RESULT_FILE"] == f"{tmp_path}/dev/termination-log"
    assert env["TASK_AGENT_MEMORY_LIMIT"] == str(soft_memory_limit(1 << 30))  # the pod's, not the worker's
    assert env["TASK_AGENT_POLICY_FILE"] == "/p.yaml"
    assert env["DATA_PLATFORM_LOCAL_ROOT"] == str(tmp_path)
    assert env["K8S_POD_NAME"] == pod.metadata.name


def test_local_code_and_secrets_replace_the_clusters():
    _, pod = rendered(
        secrets={"DB": "user1-kv/db-password/0123abcd"},
        secret_files={"tls/key.pem": "https://user1-kv.vault.azure.net/secrets/tls-key"},
    )
    argv = list(pod.spec.containers[0].command) + list(pod.spec.containers[0].args)
    swapped = with_snapshot(
        argv, "http://127.0.0.1:1/devstoreaccount1/local-code/c.tar.gz#sha256=" + "b" * 64
    )
    assert swapped[swapped.index("--snapshot") + 1].endswith("/local-code/c.tar.gz")
    assert swapped[swapped.index("--snapshot-sha256") + 1] == "b" * 64
    assert swapped.count("--snapshot") == 1 and swapped[-3:] == argv[-3:]
    local = with_local_secrets(argv, Path("/secrets"))
    assert "DB=file:/secrets/user1-kv/db-password" in local
    assert "tls/key.pem=file:/secrets/user1-kv/tls-key" in local
    assert "--allowed-vaults" not in local


def test_the_kubelet_falls_back_to_the_log_and_reports_the_deadline():
    _, pod = rendered()
    crashed = finished_pod(pod, "base", ContainerExit(2, "", "x\n" * 100 + "exec format error"),
                           fallback_to_logs=True)  # fmt: skip
    end = container_end(crashed, "base")
    assert end is not None and end.exit_code == 2 and end.reason == "Error"
    assert (
        end.message is not None
        and end.message.endswith("exec format error")
        and end.message.count("\n") == 79
    )
    stopped = ContainerExit(143, '{"status":"terminated"}', "", deadline_exceeded=True)
    late = finished_pod(pod, "base", stopped, fallback_to_logs=True)
    assert (late.status.phase, late.status.reason) == ("Failed", "DeadlineExceeded")
    assert container_end(late, "base") == ContainerEnd(143, "Error", '{"status":"terminated"}')
