"""`data-platform run-local DAG_FILE`: one run of a DAG on this machine, through real Airflow,
with every pod task run by the local runner's process back-end (docs/local-runs.md).

What it sets up, in a work directory of its own: Azurite (or the blob endpoint given with
`--storage`) for snapshots and artifacts; a copy of the platform policy whose tenants' storage
and artifacts are there (or the policy given with `--policy`); the tenant's code from `--code`,
packed with `task-agent pack` and published there in place of every pod task's snapshot; an
Airflow home with its own SQLite database; local SFTP servers for the DAG's SFTP connections.
Then `data_platform.local.dag_run` runs the DAG once with `dag.test()` and reports each task.
Exit status: 0 when the run succeeded, else non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HELP = "run one DAG run locally through Airflow, pod tasks as local processes"
#: python/src/data_platform/commands/run_local.py → the repository (for Azurite and the agent).
REPO = Path(__file__).resolve().parents[4]
CODE_CONTAINER = "local-code"
_CONTAINER_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag_file", type=Path, help="the DAG file, e.g. dags/user1_pipeline.py")
    parser.add_argument("--dag-id", help="which DAG of the file (needed when it defines several)")
    parser.add_argument("--code", type=Path, help="a directory to run as every pod task's snapshot")
    parser.add_argument("--agent", type=Path, help="the task-agent binary (default: $TASK_AGENT_BIN, "
                        "target/debug/task-agent, then PATH)")  # fmt: skip
    parser.add_argument("--storage", help="an existing blob endpoint (e.g. Azurite's http://127.0.0.1:10000/"
                        "devstoreaccount1) instead of starting Azurite")  # fmt: skip
    parser.add_argument(
        "--policy",
        type=Path,
        help="the platform policy to use as it is (default: the platform's, the tenants' storage and "
        "artifacts on the local blob service)",
    )
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        help="Key Vault secrets as files DIR/VAULT/NAME (task-agent's file: provider)",
    )
    parser.add_argument("--work-dir", type=Path, help="where the run's files go (default: a new temp dir)")


def run(arguments: argparse.Namespace) -> int:
    from data_platform.local.services import BlobService, ServiceError, find_azurite, running_azurite

    # Airflow's logging set-up shows every HTTP request of the Azure SDK at info.
    logging.getLogger("azure").setLevel(logging.WARNING)
    dag_file: Path = arguments.dag_file.resolve()
    if not dag_file.is_file():
        print(f"run-local: {dag_file} is not a file", file=sys.stderr)
        return 2
    work = (arguments.work_dir or Path(tempfile.mkdtemp(prefix="data-platform-local-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        agent = _agent(arguments.agent)
        with ExitStack() as stack:
            if arguments.storage:
                storage = BlobService(arguments.storage.rstrip("/"))
                connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or storage.connection_string
            else:
                step("starting Azurite, the blob store for snapshots and artifacts")
                storage = stack.enter_context(running_azurite(find_azurite(REPO), work / "azurite"))
                connection = storage.connection_string
            policy = (
                arguments.policy.resolve() if arguments.policy else _local_policy(storage, connection, work)
            )
            env = {
                **os.environ,
                "AZURE_STORAGE_CONNECTION_STRING": connection,
                "DATA_PLATFORM_POLICY_FILE": str(policy),
                "AIRFLOW_HOME": str(work / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent),
                "AIRFLOW__DATA_PLATFORM__LOCAL_RUNNER": "process",
                "AIRFLOW__DATA_PLATFORM__LOCAL_AGENT": str(agent),
                "AIRFLOW__DATA_PLATFORM__LOCAL_ROOT": str(work / "pods"),
            }
            if arguments.code:
                env["AIRFLOW__DATA_PLATFORM__LOCAL_SNAPSHOT"] = _publish(
                    agent, arguments.code, storage, connection, work
                )
            if arguments.secrets_dir:
                env["AIRFLOW__DATA_PLATFORM__LOCAL_SECRETS_DIR"] = str(arguments.secrets_dir.resolve())
            _migrate(env)
            command = [sys.executable, "-m", "data_platform.local.dag_run", str(dag_file)]
            status = subprocess.run(
                [*command, *([arguments.dag_id] if arguments.dag_id else [])], env=env
            ).returncode
            step(f"pods' directories (logs, records, files): {work / 'pods'}")
            return status
    except (ServiceError, FileNotFoundError, subprocess.CalledProcessError) as error:
        print(f"run-local: {error}", file=sys.stderr)
        return 2


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


def _agent(chosen: Path | None) -> Path:
    for candidate in (chosen, os.environ.get("TASK_AGENT_BIN"), REPO / "target" / "debug" / "task-agent",
                      shutil.which("task-agent")):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError("no task-agent binary: build it with `cargo build`, or give --agent PATH")


def _local_policy(storage: Any, connection: str, work: Path) -> Path:
    """The platform's policy with each tenant's storage and artifacts on the local blob service:
    its own container `TENANT` (artifacts under `TENANT/runs`), plus `local-code` for `--code`.
    Its storage keeps the cloud prefixes too, so DAG files naming them still load."""
    import yaml
    from azure.storage.blob import BlobServiceClient

    from data_platform.policy import EXAMPLE_POLICY_FILE, POLICY_FILE_VAR

    source = Path(os.environ.get(POLICY_FILE_VAR) or EXAMPLE_POLICY_FILE)
    document = yaml.safe_load(source.read_text())
    service = BlobServiceClient.from_connection_string(connection)
    containers = [CODE_CONTAINER]
    for name, tenant in (document.get("tenants") or {}).items():
        if not _CONTAINER_NAME.match(str(name)):
            continue
        tenant["storage"] = [*(tenant.get("storage") or []), f"{storage.endpoint}/{name}",
                             f"{storage.endpoint}/{CODE_CONTAINER}"]  # fmt: skip
        tenant["artifacts"] = f"{storage.endpoint}/{name}/runs"
        containers.append(str(name))
    for container in containers:
        client = service.get_container_client(container)
        if not client.exists():
            client.create_container()
    path = work / "platform-policy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    step(f"platform policy {source.name} with the tenants' storage on {storage.endpoint}: {path}")
    return path


def _publish(agent: Path, code: Path, storage: Any, connection: str, work: Path) -> str:
    from azure.storage.blob import BlobServiceClient

    archive = work / "code.tar.gz"
    packed = subprocess.run([str(agent), "pack", str(code), "--output", str(archive)],
                            check=True, capture_output=True, text=True)  # fmt: skip
    sha256 = packed.stdout.split()[0]
    name = f"{code.resolve().name}-{sha256[:12]}.tar.gz"
    service = BlobServiceClient.from_connection_string(connection)
    service.get_blob_client(CODE_CONTAINER, name).upload_blob(archive.read_bytes(), overwrite=True)
    uri = f"{storage.endpoint}/{CODE_CONTAINER}/{name}"
    step(f"packed {code} with task-agent pack (sha256 {sha256}) and published it: {uri}")
    return f"{uri}#sha256={sha256}"


def _migrate(env: dict[str, str]) -> None:
    home = Path(env["AIRFLOW_HOME"])
    if (home / "airflow.db").exists():
        return
    step("creating Airflow's SQLite database (airflow db migrate, once per work directory)")
    home.mkdir(parents=True, exist_ok=True)
    with (home / "migrate.log").open("wb") as log:
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)  # fmt: skip
