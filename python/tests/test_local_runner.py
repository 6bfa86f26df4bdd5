"""The local runner (data_platform.local) through real Airflow: `data-platform run-local` runs a DAG
once with `dag.test()` (Airflow's own scheduling loop, retries and XComs, its SQLite database), the
DAG loaded in safe mode, each pod task's rendered pod run by the process back-end with the real
task-agent against Azurite, and the record read by the operator's own `cleanup`.

The outcomes are the simulation's (test_simulation.py), from the same scenario scripts: success,
a failing command, skip (99), timeout, out of memory retried at a raised limit, and a retryable
agent error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from conftest import POLICY_FILE, REPO, Azurite
from lineage_events import transport_env
from test_simulation import SCENARIOS

CLI = Path(sys.executable).parent / "data-platform"
#: The shortest task timeout the platform accepts (30 s for the command itself, see deadlines.py).
SHORTEST_TIMEOUT = "190s"


def run_local(
    agent_binary: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert CLI.exists(), f"{CLI} is missing: the data-platform console script (scripts/install-test-deps)"
    environment = {**os.environ, "TASK_AGENT_BIN": str(agent_binary), **(env or {})}
    # This process's Airflow home is the tests'; the command makes its own.
    environment.pop("AIRFLOW_HOME", None)
    environment.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    return subprocess.run([str(CLI), "run-local", *args], env=environment, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def record_of(try_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((try_dir / "dev" / "termination-log").read_text())
    return found


def tries(pods: Path, dag_id: str, task_id: str) -> list[Path]:
    (run,) = list((pods / dag_id).iterdir())
    return sorted((run / task_id / "-1").iterdir(), key=lambda p: int(p.name))


@pytest.mark.parametrize("storage", [None, "azurite"])
def test_the_seed_pipeline_runs_through_airflow_with_the_process_back_end(
    agent_binary: Path, tmp_path: Path, storage: str | None
):
    if os.geteuid() != 0:
        pytest.skip("the local SFTP server chroots, which sshd does only as root (CI runs as root)")
    # The embedded defaults: the local disk as the store (file://), the platform's policy pointed at
    # it, a local sshd; or with --storage azurite its own Azurite.
    chosen = ["--storage", storage] if storage else []
    done = run_local(agent_binary, str(REPO / "dags" / "user1_pipeline.py"), "--code",
                     str(REPO / "examples" / "user1_pipeline"), "--work-dir", str(tmp_path),
                     *chosen)  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    order = [out.index(f"== {task}: success (tries: 1)") for task in ("validate", "transform", "upload")]
    assert order == sorted(order), out
    assert out.count("agent: task finished status=succeeded exit_code=0") == 2, out
    assert 'return_value: {"rows": 3}' in out
    produced = re.search(
        r"output: (\S+/transform/-1/1/files/data/out\.csv) \(file, (\d+) bytes, sha256 (\w+)\)", out
    )
    assert produced is not None, out
    if storage is None:
        # The artifacts are files under the work directory, the manifest written last beside them.
        store = (tmp_path / "storage").resolve()
        assert produced.group(1).startswith(f"{store.as_uri()}/user1/runs/"), out
        artifact = Path(unquote(urlsplit(produced.group(1)).path))
        assert hashlib.sha256(artifact.read_bytes()).hexdigest() == produced.group(3)
        assert (artifact.parents[2] / "_manifest.json").is_file()
        assert "starting Azurite" not in out
    else:
        assert produced.group(1).startswith("http://127.0.0.1:"), out
    delivered = re.search(
        r"on the SFTP server of 'sftp': /incoming/out\.csv \(here: (\S+)\) sha256 (\w+)", out
    )
    assert delivered is not None, out
    partner_file = Path(delivered.group(1))
    try:
        assert (
            hashlib.sha256(partner_file.read_bytes()).hexdigest() == produced.group(3) == delivered.group(2)
        )
        assert partner_file.read_text() == "id,amount_cents\n1,1050\n2,725\n3,1200\n"
    finally:
        shutil.rmtree(partner_file.parents[1], ignore_errors=True)
    # Each pod its own directory: validate's /data is not transform's; transform's input came from storage.
    pods = tmp_path / "pods"
    (validate_try,) = tries(pods, "user1_pipeline", "validate")
    (transform_try,) = tries(pods, "user1_pipeline", "transform")
    assert (validate_try / "data" / "valid.csv").read_bytes() == (
        transform_try / "data" / "valid.csv"
    ).read_bytes()
    assert record_of(transform_try)["inputs"][0]["sha256"] == record_of(validate_try)["outputs"][0]["sha256"]


SCENARIO_DAG = '''"""Airflow DAG: every way a pod task can end, run by the local runner."""

import os

from data_platform import CustomerDAGFactory, PlatformTaskFactory, Snapshot

code = Snapshot(os.environ["SCENARIOS_SNAPSHOT"], os.environ["SCENARIOS_SHA256"])
# Storage that is down: a closed port where Azurite was.
down = Snapshot(os.environ["SCENARIOS_SNAPSHOT"].replace(os.environ["AZURITE_PORT"], "9", 1))
dag = CustomerDAGFactory.create(
    "user1_local_outcomes", tenant="user1", schedule=None, retries=1, retry_delay="1s"
)
tasks = PlatformTaskFactory(dag)
tasks.aks_python("ok", code, "ok.py")
tasks.aks_python("skip", code, "skip.py")
tasks.aks_python("fail", code, "fail.py", retries=0)
tasks.aks_python("timeout", code, "sleep.py", timeout="{timeout}", retries=0)
tasks.aks_python("hog", code, "hog.py")
tasks.aks_python("unreachable", down, "ok.py")
tasks.aks_python("parent", code, "parent.py")
'''


def test_outcomes_through_the_local_runner_match_the_simulation(
    agent_binary: Path, azurite: Azurite, tmp_path: Path
):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in ("snapshots", "runs"):
        if not service.get_container_client(container).exists():
            service.create_container(container)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    for name, code in SCENARIOS.items():
        (scenarios / name).write_text(code)
    archive = tmp_path / "scenarios.tar.gz"
    packed = subprocess.run([str(agent_binary), "pack", "--output", str(archive), str(scenarios)], check=True,
                            capture_output=True, text=True)  # fmt: skip
    service.get_blob_client("snapshots", "local-scenarios.tar.gz").upload_blob(
        archive.read_bytes(), overwrite=True
    )
    # The policy as the operator team would give it: user1's storage on Azurite, and the dead endpoint.
    policy = yaml.safe_load(POLICY_FILE.read_text())
    down = f"{azurite.endpoint}/snapshots".replace(str(azurite.port), "9", 1)
    policy["tenants"]["user1"]["storage"] = [f"{azurite.endpoint}/snapshots", down]
    policy["tenants"]["user1"]["artifacts"] = f"{azurite.endpoint}/runs"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "outcomes.py").write_text(SCENARIO_DAG.replace("{timeout}", SHORTEST_TIMEOUT))
    done = run_local(
        agent_binary, str(dags / "outcomes.py"), "--storage", azurite.endpoint, "--policy",
        str(tmp_path / "policy.yaml"), "--work-dir", str(tmp_path / "work"),
        env={"SCENARIOS_SNAPSHOT": f"{azurite.endpoint}/snapshots/local-scenarios.tar.gz",
             "SCENARIOS_SHA256": packed.stdout.split()[0], "AZURITE_PORT": str(azurite.port),
             "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
             # As the simulation: an unreachable snapshot gives up after 2 s, not 30.
             "TASK_AGENT_SNAPSHOT_RETRY_BUDGET": "2s",
             # The same run emits OpenLineage (test_lineage.check_outcome_lineage checks it).
             **transport_env(tmp_path / "events.jsonl")},
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    pods = tmp_path / "work" / "pods"
    dag_id = "user1_local_outcomes"

    assert "== ok: success (tries: 1)" in out
    assert record_of(tries(pods, dag_id, "ok")[0])["return_value"] == {"ok": True}

    assert "== skip: skipped (tries: 1)" in out
    assert record_of(tries(pods, dag_id, "skip")[0])["child_exit_code"] == 99

    # A failing task shows the record's status and its stderr tail.
    assert "== fail: failed (tries: 1)" in out
    fail_report = out.split("== fail:")[1].split("\n==")[0]
    assert "status=failed, exit_code=3" in fail_report and "bad row 17: amount is not a number" in fail_report

    assert "== timeout: failed (tries: 1)" in out
    timed_out = record_of(tries(pods, dag_id, "timeout")[0])
    assert (timed_out["status"], timed_out["exit_code"]) == ("timed_out", 124)

    # Out of memory under the pod's 1Gi limit; the retry got the raised 1.5Gi (oom_memory_factor).
    assert "== hog: failed (tries: 2)" in out
    first, second = (record_of(path) for path in tries(pods, dag_id, "hog"))
    assert first["status"] == second["status"] == "oom_killed"
    limits = [
        json.loads((path / "pod.json").read_text())["memory_limit_bytes"]
        for path in tries(pods, dag_id, "hog")
    ]
    assert limits == [1 << 30, 1536 << 20]
    assert first["resources"]["memory_limit_bytes"] < second["resources"]["memory_limit_bytes"]

    # A retryable agent error is retried, and says why.
    assert "== unreachable: failed (tries: 2)" in out
    for path in tries(pods, dag_id, "unreachable"):
        record = record_of(path)
        assert (record["error"]["kind"], record["retryable"]) == ("snapshot_unavailable", True)
    assert "reason: snapshot_unavailable" in out

    # Every try's lineage: FAIL events for the failed and retried ones, each costed.
    from test_lineage import check_outcome_lineage

    check_outcome_lineage(tmp_path / "events.jsonl", dag_id, out)
