"""End to end without a cluster: the rendered pod's command runs under the real task-agent
against Azurite, and the record it writes goes back through the operator's completion path.

Each test asserts the XCom values and the outcome Airflow would act on (success, skip, fail
without retry, retry), for every status the agent reports, and for a container that died
before it could write a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from azure.storage.blob import BlobServiceClient
from kubernetes.client import models as k8s

from conftest import DAGS, POLICY_FILE, REPO, Azurite
from data_platform import CustomerDAGFactory, PlatformPodOperator, PlatformTaskFactory, Snapshot
from data_platform.artifacts import OUTPUTS_XCOM_KEY
from data_platform.operator import MEMORY_LIMIT_KEY, RECORD_XCOM_KEY
from data_platform.sftp_upload import SftpUploadOperator
from data_platform.units import parse_bytes
from podsim import (
    ContainerRun,
    complete,
    finished,
    record_cluster_calls,
    run_container,
)
from rendering import StateStore, context_for, render
from sshd import SshKey, SshServer, running_sshd, sftp_connection_json

#: Scripts of a second snapshot, one per way a task can end.
SCENARIOS = {
    "ok.py": "import json, os\njson.dump({'ok': True}, open(os.environ['TASK_AGENT_RETURN_FILE'], 'w'))\n",
    "skip.py": "import sys\nprint('nothing to do today')\nsys.exit(99)\n",
    "fail.py": "import sys\nprint('bad row 17: amount is not a number', file=sys.stderr)\nsys.exit(3)\n",
    "sleep.py": "import time\nprint('working', flush=True)\ntime.sleep(60)\n",
    "hog.py": (
        "import time\nblocks = []\n"
        "while True:\n    blocks.append(bytearray(16 << 20))\n    time.sleep(0.01)\n"
    ),
    "produce.py": (
        "import os, pathlib\n"
        "data = pathlib.Path(os.environ['DATA_DIR'])\n"
        "(data / 'parts' / 'b').mkdir(parents=True)\n"
        "(data / 'out.csv').write_text('id,amount_cents\\n1,1050\\n')\n"
        "(data / 'parts' / 'a.txt').write_text('a')\n"
        "(data / 'parts' / 'b' / 'c.txt').write_text('c')\n"
    ),
    "consume.py": (
        "import hashlib, json, os, pathlib\n"
        "data = pathlib.Path(os.environ['DATA_DIR'])\n"
        "files = sorted(str(p.relative_to(data)) for p in data.rglob('*') if p.is_file())\n"
        "digest = hashlib.sha256((data / 'today.csv').read_bytes()).hexdigest()\n"
        "json.dump({'files': files, 'sha256': digest}, open(os.environ['TASK_AGENT_RETURN_FILE'], 'w'))\n"
    ),
    "parent.py": (
        "import json, os\n"
        "env = os.environ.get\n"
        "seen = {'parent_id': env('OPENLINEAGE_PARENT_ID'), 'context': env('OPENLINEAGE_CONTEXT')}\n"
        "json.dump(seen, open(os.environ['TASK_AGENT_RETURN_FILE'], 'w'))\n"
    ),
    "big_return.py": (
        "import json, os\n"
        "json.dump({'rows': list(range(3000))}, open(os.environ['TASK_AGENT_RETURN_FILE'], 'w'))\n"
    ),
}


@pytest.fixture(scope="module")
def blob_service(azurite: Azurite) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in ("snapshots", "exports", "runs"):
        if not service.get_container_client(container).exists():
            service.create_container(container)
    return service


def publish(
    agent_binary: Path, source: Path, name: str, service: BlobServiceClient, azurite: Azurite, tmp: Path
) -> Snapshot:
    """Packs a directory with `task-agent pack` and uploads it, as a tenant's CI would."""
    archive = tmp / f"{name}.tar.gz"
    packed = subprocess.run(
        [str(agent_binary), "pack", "--output", str(archive), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    sha256 = packed.stdout.split()[0]
    service.get_blob_client("snapshots", f"{name}.tar.gz").upload_blob(archive.read_bytes(), overwrite=True)
    return Snapshot(f"{azurite.endpoint}/snapshots/{name}.tar.gz", sha256)


@pytest.fixture(scope="module")
def snapshots(
    agent_binary: Path,
    blob_service: BlobServiceClient,
    azurite: Azurite,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Snapshot]:
    tmp = tmp_path_factory.mktemp("snapshots")
    scenarios = tmp / "scenarios"
    scenarios.mkdir()
    for name, code in SCENARIOS.items():
        (scenarios / name).write_text(code)
    return {
        "pipeline": publish(
            agent_binary, REPO / "examples" / "user1_pipeline", "user1_pipeline", blob_service, azurite, tmp
        ),
        "scenarios": publish(agent_binary, scenarios, "scenarios", blob_service, azurite, tmp),
    }


@pytest.fixture
def platform(
    azurite: Azurite, snapshots: dict[str, Snapshot], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The example policy with user1's storage on Azurite; returns what the pod template adds."""
    policy = yaml.safe_load(POLICY_FILE.read_text())
    policy["tenants"]["user1"]["storage"] = [f"{azurite.endpoint}/snapshots", f"{azurite.endpoint}/exports"]
    policy["tenants"]["user1"]["artifacts"] = f"{azurite.endpoint}/runs"
    policy_file = tmp_path / "platform-policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("DATA_PLATFORM_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("USER1_PIPELINE_SNAPSHOT", snapshots["pipeline"].uri)
    monkeypatch.setenv("USER1_PIPELINE_SNAPSHOT_SHA256", snapshots["pipeline"].sha256 or "")
    # The worker reads spilled return values with the same credential the pod uses.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    yield {
        # On AKS the pod's workload identity; here Azurite's account key.
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "TASK_AGENT_POLICY_FILE": str(policy_file),
        "TASK_AGENT_SNAPSHOT_RETRY_BUDGET": "2s",
    }


def scenario_task(snapshots: dict[str, Snapshot], script: str, **kwargs: Any) -> PlatformPodOperator:
    dag = CustomerDAGFactory.create("user1_scenarios", tenant="user1", schedule=None)
    return PlatformTaskFactory(dag).aks_python(
        script.removesuffix(".py"), snapshots["scenarios"], script, **kwargs
    )


def run_task(
    op: PlatformPodOperator,
    agent_binary: Path,
    root: Path,
    platform_env: dict[str, str],
    *,
    try_number: int = 1,
    store: StateStore | None = None,
    reason: str | None = None,
    pushed_by_others: dict[tuple[str, str], Any] | None = None,
    **run_options: Any,
) -> tuple[Any, StateStore, ContainerRun, k8s.V1Pod, Any]:
    store = store or StateStore()
    context = context_for(op, try_number=try_number, store=store, pushed_by_others=pushed_by_others)
    ti = context["ti"]
    pod = render(op, context)
    root.mkdir(parents=True, exist_ok=True)
    run = run_container(pod, agent_binary, root, platform_env=platform_env, **run_options)
    remote = finished(pod, run, reason=reason)
    calls = record_cluster_calls(op, remote)
    error: Exception | None = None
    try:
        complete(op, pod, remote, context)
    except AirflowException as raised:
        error = raised
    assert calls.deleted == [pod.metadata.name], "the pod is deleted whatever the outcome"
    return ti, store, run, pod, error


@contextmanager
def partner_server(tmp_path: Path, ssh_keys: dict[str, SshKey]) -> Iterator[tuple[SshServer, Path]]:
    if os.geteuid() != 0:
        pytest.skip("sshd can chroot only as root (CI runs as root)")
    # sshd chroots only into a directory that root owns and no one else may write, up to /.
    root = Path(tempfile.mkdtemp(prefix="partner-sftp-", dir="/run"))
    try:
        with running_sshd(tmp_path / "sshd", ssh_keys["host"], [ssh_keys["user"]], chroot=root) as server:
            yield server, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_seed_pipeline_runs_end_to_end(
    agent_binary: Path,
    azurite: Azurite,
    platform: dict[str, str],
    snapshots: dict[str, Snapshot],
    ssh_keys: dict[str, SshKey],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Loaded as a default DAG processor finds it (safe mode), after `platform` pointed it at Azurite.
    bag = DagBag(dag_folder=DAGS, safe_mode=True)
    assert bag.import_errors == {}
    dag = bag.dags["user1_pipeline"]
    assert [t.task_id for t in dag.tasks] == ["validate", "transform", "upload"]
    validate, transform = dag.get_task("validate"), dag.get_task("transform")
    assert isinstance(validate, PlatformPodOperator) and isinstance(transform, PlatformPodOperator)

    # Each pod writes /data on a volume of its own: here a directory of the test per pod.
    validate_data = tmp_path / "validate-pod-data"
    ti, _, run, _, error = run_task(
        validate,
        agent_binary,
        tmp_path / "validate",
        {**platform, "OUTPUT_DIR": str(validate_data)},
        mounts={"/data": validate_data},
    )
    assert error is None, error
    assert run.exit_code == 0, run.logs
    assert "validate: 3 rows ok" in run.logs
    assert ti.xcom["return_value"] == {"rows": 3}
    record = ti.xcom[RECORD_XCOM_KEY]
    assert record["status"] == "succeeded"
    assert record["task"] == {
        "tenant": "user1",
        "dag_id": "user1_pipeline",
        "task_id": "validate",
        "run_id": "scheduled__2026-11-26T00:00:00+00:00",
        "try_number": 1,
        "map_index": -1,
    }
    assert record["snapshot"]["sha256"] == snapshots["pipeline"].sha256
    # The size class's requests and limits reached the agent; the try is costed by the policy's prices.
    assert record["usage"]["requests"] == {"cpu_millicores": 250, "memory_bytes": 512 * 2**20}
    assert record["usage"]["limits"] == {"cpu_millicores": 1000, "memory_bytes": 2**30}
    cost = record["cost"]
    wall = record["usage"]["wall_seconds"]
    assert cost["usage"]["wall_seconds"] == wall and cost["usage"]["source"] == "record"
    assert cost["cpu_core_hours"] == pytest.approx(max(0.25 * wall, record["usage"]["cpu_seconds"]) / 3600)
    assert cost["total"] == pytest.approx(
        cost["cpu_core_hours"] * 0.031611 + cost["memory_gib_hours"] * 0.004237
    )

    assert [o["path"] for o in ti.xcom[OUTPUTS_XCOM_KEY]] == ["/data/valid.csv"]
    validated = (validate_data / "valid.csv").read_bytes()
    shutil.rmtree(validate_data)  # gone with validate's pod

    # transform reads validate's recorded /data/valid.csv (downloaded, sha256-checked by its agent)
    # and writes /data/out.csv.
    pod_data = tmp_path / "transform-pod-data"
    ti, _, run, _, error = run_task(
        transform,
        agent_binary,
        tmp_path / "transform",
        {**platform, "OUTPUT_DIR": str(pod_data)},
        mounts={"/data": pod_data},
        pushed_by_others={("validate", OUTPUTS_XCOM_KEY): ti.xcom[OUTPUTS_XCOM_KEY]},
    )
    assert error is None, f"{error}\n{run.logs}"
    assert (pod_data / "valid.csv").read_bytes() == validated
    assert ti.xcom[RECORD_XCOM_KEY]["inputs"][0]["sha256"] == hashlib.sha256(validated).hexdigest()
    produced = (pod_data / "out.csv").read_bytes()
    digest = hashlib.sha256(produced).hexdigest()
    assert ti.xcom["return_value"]["sha256"] == digest
    # The agent uploaded it into the try's own folder of user1's artifacts; the operator pushed it.
    run_folder = "user1_pipeline/scheduled__2026-11-26T00%3A00%3A00%2B00%3A00/transform/-1/1"
    expected_uri = f"{azurite.endpoint}/runs/{run_folder}/files/data/out.csv"
    assert ti.xcom[OUTPUTS_XCOM_KEY] == [
        {"path": "/data/out.csv", "uri": expected_uri, "kind": "file", "bytes": len(produced), "files": 1,
         "sha256": digest}
    ]  # fmt: skip
    assert ti.xcom[RECORD_XCOM_KEY]["outputs"][0]["sha256"] == digest
    # No shared directory: the pod's files are gone when the pod is.
    shutil.rmtree(pod_data)

    # The partner's SFTP server, where /incoming is theirs: a real sshd chrooted to a directory.
    upload = dag.get_task("upload")
    assert isinstance(upload, SftpUploadOperator)
    assert upload.source == "/data/out.csv"  # as written in the DAG
    with partner_server(tmp_path, ssh_keys) as (server, partner_root):
        monkeypatch.setenv("AIRFLOW_CONN_SFTP", sftp_connection_json(server, ssh_keys["user"]))
        # What the upload's task instance reads back from transform's XCom in this run.
        context = context_for(
            upload, pushed_by_others={("transform", OUTPUTS_XCOM_KEY): ti.xcom[OUTPUTS_XCOM_KEY]}
        )
        result = upload.execute(context)
        delivered = (partner_root / "incoming" / "out.csv").read_bytes()
    assert hashlib.sha256(delivered).hexdigest() == digest
    assert delivered == produced
    assert result == {"remote_path": "/incoming/out.csv", "bytes": len(produced), "sha256": digest,
                      "source": expected_uri}  # fmt: skip


def test_a_pod_task_reads_an_upstream_pods_outputs_verified_by_the_agent(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    dag = CustomerDAGFactory.create("user1_handover", tenant="user1", schedule=None)
    tasks = PlatformTaskFactory(dag)
    produce = tasks.aks_python("produce", snapshots["scenarios"], "produce.py",
                               outputs=["/data/out.csv", "/data/parts"])  # fmt: skip
    consume = tasks.aks_python(
        "consume", snapshots["scenarios"], "consume.py",
        inputs={"/data/today.csv": produce.output("/data/out.csv"), "/data/parts": "/data/parts"},
    )  # fmt: skip
    dag.validate()
    produced_dir, consumed_dir = tmp_path / "produce-data", tmp_path / "consume-data"
    producer_env = {**platform, "DATA_DIR": str(produced_dir)}
    ti, _, run, _, error = run_task(
        produce, agent_binary, tmp_path / "produce", producer_env, mounts={"/data": produced_dir}
    )
    assert error is None, f"{error}\n{run.logs}"
    outputs = ti.xcom[OUTPUTS_XCOM_KEY]
    assert [(o["path"], o["kind"], o["files"]) for o in outputs] == [
        ("/data/out.csv", "file", 1), ("/data/parts", "directory", 2)
    ]  # fmt: skip
    shutil.rmtree(produced_dir)

    pushed = {("produce", OUTPUTS_XCOM_KEY): outputs}
    store = StateStore()
    context = context_for(consume, store=store, pushed_by_others=pushed)
    pod = render(consume, context)
    (tmp_path / "consume").mkdir()
    reader_env = {**platform, "DATA_DIR": str(consumed_dir)}
    run = run_container(pod, agent_binary, tmp_path / "consume", platform_env=reader_env,
                        mounts={"/data": consumed_dir})  # fmt: skip
    remote = finished(pod, run)
    record_cluster_calls(consume, remote)
    complete(consume, pod, remote, context)
    assert context["ti"].xcom["return_value"] == {
        "files": ["parts/a.txt", "parts/b/c.txt", "today.csv"], "sha256": outputs[0]["sha256"]
    }  # fmt: skip
    assert [i["sha256"] for i in context["ti"].xcom[RECORD_XCOM_KEY]["inputs"]] == [
        o["sha256"] for o in outputs
    ]


def test_an_upstream_output_changed_after_it_was_recorded_fails_the_reader_without_retry(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    dag = CustomerDAGFactory.create("user1_tampered", tenant="user1", schedule=None)
    tasks = PlatformTaskFactory(dag)
    produce = tasks.aks_python("produce", snapshots["scenarios"], "produce.py", outputs=["/data/out.csv"])
    consume = tasks.aks_python(
        "consume", snapshots["scenarios"], "consume.py", inputs={"/data/today.csv": "/data/out.csv"}
    )
    produce >> consume
    produced_dir = tmp_path / "produce-data"
    producer_env = {**platform, "DATA_DIR": str(produced_dir)}
    ti, _, run, _, error = run_task(
        produce, agent_binary, tmp_path / "produce", producer_env, mounts={"/data": produced_dir}
    )
    assert error is None, f"{error}\n{run.logs}"
    # What another writer did to the blob after the producer recorded its digest.
    recorded = ti.xcom[OUTPUTS_XCOM_KEY][0]
    tampered = [{**recorded, "sha256": "0" * 64}]
    consumed_dir = tmp_path / "consume-data"
    context = context_for(
        consume, store=StateStore(), pushed_by_others={("produce", OUTPUTS_XCOM_KEY): tampered}
    )
    pod = render(consume, context)
    (tmp_path / "consume").mkdir()
    reader_env = {**platform, "DATA_DIR": str(consumed_dir)}
    run = run_container(pod, agent_binary, tmp_path / "consume", platform_env=reader_env,
                        mounts={"/data": consumed_dir})  # fmt: skip
    remote = finished(pod, run)
    record_cluster_calls(consume, remote)
    with pytest.raises(AirflowFailException) as raised:
        complete(consume, pod, remote, context)
    assert "input_integrity" in str(raised.value), run.logs


def test_skip_exit_code_skips_the_task(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    ti, _, run, _, error = run_task(scenario_task(snapshots, "skip.py"), agent_binary, tmp_path, platform)
    assert run.exit_code == 99
    assert isinstance(error, AirflowSkipException), error
    assert "exited 99" in str(error)
    assert ti.xcom[RECORD_XCOM_KEY]["child_exit_code"] == 99


def test_a_failing_command_is_retried_with_its_exit_code_and_stderr_in_the_message(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    ti, _, run, _, error = run_task(scenario_task(snapshots, "fail.py"), agent_binary, tmp_path, platform)
    assert run.exit_code == 3
    assert type(error) is AirflowException, error
    message = str(error)
    assert "status=failed" in message and "exit_code=3" in message
    assert "bad row 17" in message
    assert "peak_memory=" in message
    assert "None" not in message.split("last stderr")[0]
    assert "return_value" not in ti.xcom
    assert ti.xcom[RECORD_XCOM_KEY]["status"] == "failed"


def test_a_snapshot_that_fails_its_checksum_fails_without_retry(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    wrong = Snapshot(snapshots["scenarios"].uri, "0" * 64)
    dag = CustomerDAGFactory.create("user1_integrity", tenant="user1", schedule=None)
    op = PlatformTaskFactory(dag).aks_python("ok", wrong, "ok.py")
    ti, _, run, _, error = run_task(op, agent_binary, tmp_path, platform)
    assert run.exit_code == 65
    assert isinstance(error, AirflowFailException), error
    assert "snapshot_integrity" in str(error)
    assert "none is spent" in str(error)
    assert ti.xcom[RECORD_XCOM_KEY]["retryable"] is False


def test_an_unreachable_snapshot_is_a_retryable_agent_error(
    agent_binary: Path,
    platform: dict[str, str],
    snapshots: dict[str, Snapshot],
    azurite: Azurite,
    tmp_path: Path,
) -> None:
    op = scenario_task(snapshots, "ok.py")
    # Storage that is down: a closed port where Azurite was.
    dead_uri = snapshots["scenarios"].uri.replace(f":{azurite.port}/", ":9/")
    ti, _, run, _, error = run_task(
        op, agent_binary, tmp_path, platform, replace_args={"--snapshot": dead_uri}
    )
    assert run.exit_code == 69, run.logs
    assert type(error) is AirflowException, error
    assert "retrying may help" in str(error)
    assert ti.xcom[RECORD_XCOM_KEY]["error"]["kind"] == "snapshot_unavailable"


def test_a_pod_terminated_from_outside_is_retried(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    ti, _, run, _, error = run_task(
        scenario_task(snapshots, "sleep.py"), agent_binary, tmp_path, platform, sigterm_after=2.0
    )
    assert run.exit_code == 143, run.logs
    assert type(error) is AirflowException, error
    assert "stopped from outside" in str(error)
    assert ti.xcom[RECORD_XCOM_KEY]["status"] == "terminated"


def test_a_timeout_follows_the_retry_policy(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    op = scenario_task(snapshots, "sleep.py")
    # The agent's deadline as rendered is minutes; shortened so the test does not wait for it.
    _, _, run, _, error = run_task(op, agent_binary, tmp_path, platform, replace_args={"--timeout": "1s"})
    assert run.exit_code == 124, run.logs
    assert type(error) is AirflowException, error
    assert "timed out" in str(error) and "exit_code=124" in str(error)


def test_out_of_memory_retries_with_a_raised_limit_up_to_the_size_class_maximum(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    # The soft limit the agent would derive from the container's cgroup, set directly here.
    small_limit = {**platform, "TASK_AGENT_MEMORY_LIMIT": "96Mi"}
    op = scenario_task(snapshots, "hog.py")
    store = StateStore()
    ti, _, run, pod, error = run_task(op, agent_binary, tmp_path / "try1", small_limit, store=store)
    assert run.exit_code == 137, run.logs
    assert pod.spec.containers[0].resources.limits["memory"] == "1Gi"
    assert type(error) is AirflowException, error
    assert "ran out of memory" in str(error) and "1.5 GiB" in str(error)
    assert ti.xcom[RECORD_XCOM_KEY]["status"] == "oom_killed"
    assert store.values[MEMORY_LIMIT_KEY] == 1536 * 2**20

    # The next try of the same task instance gets the raised limit, and so on up to max_memory.
    limits = []
    for try_number in (2, 3, 4, 5):
        op = scenario_task(snapshots, "hog.py")
        ti, _, run, pod, error = run_task(
            op, agent_binary, tmp_path / f"try{try_number}", small_limit, try_number=try_number, store=store
        )
        limits.append(pod.spec.containers[0].resources.limits["memory"])
        assert ti.xcom[RECORD_XCOM_KEY]["task"]["try_number"] == try_number
        # The raised limit is the one the agent reports, and every failed try is costed.
        usage = ti.xcom[RECORD_XCOM_KEY]["usage"]
        assert usage["limits"]["memory_bytes"] == parse_bytes(limits[-1], "memory")
        assert ti.xcom[RECORD_XCOM_KEY]["cost"]["total"] > 0
    assert limits == ["1536Mi", "2304Mi", "3456Mi", "4Gi"]
    assert "already the size class's maximum" in str(error)


def test_a_container_killed_before_its_record_falls_back_to_the_container_state(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    op = scenario_task(snapshots, "ok.py")
    store = StateStore()
    context = context_for(op, store=store)
    ti = context["ti"]
    pod = render(op, context)
    # The kernel killed the whole container (cgroup OOM, memory.oom.group): no record, no logs.
    killed = ContainerRun(exit_code=137, termination_file="", logs="")
    remote = finished(pod, killed, reason="OOMKilled")
    calls = record_cluster_calls(op, remote)
    with pytest.raises(AirflowException) as raised:
        complete(op, pod, remote, context)
    message = str(raised.value)
    assert type(raised.value) is AirflowException
    assert "killed by the kernel for using too much memory" in message
    assert "exit code 137" in message and "OOMKilled" in message
    assert "next try gets a 1.5 GiB memory limit" in message
    assert store.values[MEMORY_LIMIT_KEY] == 1536 * 2**20
    assert RECORD_XCOM_KEY not in ti.xcom
    assert calls.deleted == [pod.metadata.name]


def test_log_text_in_place_of_a_record_is_reported_as_such(
    agent_binary: Path, platform: dict[str, str], snapshots: dict[str, Snapshot], tmp_path: Path
) -> None:
    op = scenario_task(snapshots, "ok.py")
    context = context_for(op, store=StateStore())
    pod = render(op, context)
    # FallbackToLogsOnError: the record file was empty, so the kubelet used the log's tail.
    crashed = ContainerRun(exit_code=2, termination_file="", logs="exec format error\n")
    remote = finished(pod, crashed)
    record_cluster_calls(op, remote)
    with pytest.raises(AirflowException) as raised:
        complete(op, pod, remote, context)
    message = str(raised.value)
    assert "not a task-agent record" in message and "exec format error" in message
    assert "exit code 2" in message


def test_a_return_value_too_large_for_the_record_is_downloaded(
    agent_binary: Path,
    platform: dict[str, str],
    snapshots: dict[str, Snapshot],
    azurite: Azurite,
    tmp_path: Path,
) -> None:
    spill = {**platform, "TASK_AGENT_RETURN_UPLOAD": f"{azurite.endpoint}/exports/returns"}
    ti, _, run, _, error = run_task(scenario_task(snapshots, "big_return.py"), agent_binary, tmp_path, spill)
    assert error is None, run.logs
    record = ti.xcom[RECORD_XCOM_KEY]
    assert record["return_value"] is None and record["return_value_ref"]["bytes"] > 4096
    assert ti.xcom["return_value"] == {"rows": list(range(3000))}
    assert len(json.dumps(record)) <= 4096


@pytest.mark.parametrize(
    ("script", "event_status", "expected"),
    [
        ("ok.py", "success", None),
        ("skip.py", "failed", AirflowSkipException),
        ("fail.py", "failed", AirflowException),
    ],
)
def test_the_deferrable_path_reaches_the_same_verdict(
    agent_binary: Path,
    platform: dict[str, str],
    snapshots: dict[str, Snapshot],
    tmp_path: Path,
    script: str,
    event_status: str,
    expected: type[Exception] | None,
) -> None:
    op = scenario_task(snapshots, script, deferrable=True)
    context = context_for(op, store=StateStore())
    ti = context["ti"]
    pod = render(op, context)
    remote = finished(pod, run_container(pod, agent_binary, tmp_path, platform_env=platform))
    calls = record_cluster_calls(op, remote)
    op.get_logs = False  # the trigger streamed them while the pod ran
    # What the triggerer sends back when it sees the pod end.
    event = {"status": event_status, "name": pod.metadata.name, "namespace": pod.metadata.namespace,
             "message": "pod ended"}  # fmt: skip
    if expected is None:
        op.trigger_reentry(context, event)  # type: ignore[arg-type]
        assert ti.xcom["return_value"] == {"ok": True}
    else:
        with pytest.raises(expected) as raised:
            op.trigger_reentry(context, event)  # type: ignore[arg-type]
        assert type(raised.value) is expected
        assert "status=failed" in str(raised.value)
    assert ti.xcom[RECORD_XCOM_KEY]["task"]["task_id"] == script.removesuffix(".py")
    assert calls.deleted == [pod.metadata.name]
