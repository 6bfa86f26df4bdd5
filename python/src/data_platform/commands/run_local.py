"""`data-platform run-local DAG_FILE`: one run of a DAG on this machine, through real Airflow,
with every pod task run by the local runner's process back-end, or with `--containers` its
container back-end (docs/local-runs.md).

What it sets up, in a work directory of its own: a local directory store (`file://`, under
`WORK/storage`) for snapshots and artifacts, or with `--storage azurite` Azurite, or with
`--storage URL` that blob endpoint; a copy of the platform policy whose tenants' storage and
artifacts are there (or the policy given with `--policy`); the tenant's code from `--code`,
packed with `task-agent pack` and published there in place of every pod task's snapshot; an
Airflow home with its own SQLite database; local SFTP servers for the DAG's SFTP connections.
With `--containers`, also: the images from `scripts/build-images` (its printed settings: the
images and podman's configuration), the chart's pod template and ConfigMaps rendered by helm
(the policy's ConfigMap holding the run's policy), and the registry's images mapped to the
local ones. Then `data_platform.local.dag_run` runs the DAG once with `dag.test()` and reports
each task. Exit status: 0 when the run succeeded, else non-zero.
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

HELP = "run one DAG run locally through Airflow, pod tasks as local processes or containers"
#: python/src/data_platform/commands/run_local.py → the repository (for Azurite and the agent).
REPO = Path(__file__).resolve().parents[4]
CODE_CONTAINER = "local-code"
BUILD_IMAGES = REPO / "scripts" / "build-images"
CHART = REPO / "charts" / "data-platform"
#: What `helm template` renders the chart as: the release and the Airflow namespace.
RELEASE, AIRFLOW_NAMESPACE = "data-platform", "airflow"
POD_TEMPLATE_KEY, POLICY_KEY = "pod_template.yaml", "platform-policy.yaml"
#: scripts/build-images' exit status where podman cannot run containers.
CANNOT_RUN_CONTAINERS = 77
_CONTAINER_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag_file", type=Path, help="the DAG file, e.g. dags/user1_pipeline.py")
    parser.add_argument("--dag-id", help="which DAG of the file (needed when it defines several)")
    parser.add_argument("--code", type=Path, help="a directory to run as every pod task's snapshot")
    parser.add_argument("--agent", type=Path, help="the task-agent binary (default: $TASK_AGENT_BIN, "
                        "target/debug/task-agent, then PATH)")  # fmt: skip
    parser.add_argument("--storage", help="where snapshots and artifacts go: `file` (the default, a "
                        "directory of the work directory; with --containers `azurite`), `azurite` (starts "
                        "Azurite), or an existing blob endpoint "
                        "(e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1)")  # fmt: skip
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
    parser.add_argument(
        "--containers",
        action="store_true",
        help="run each pod in its image under podman, as the chart's pod template sets it up "
        "(scripts/build-images builds the images; helm renders the chart)",
    )


def run(arguments: argparse.Namespace) -> int:
    from data_platform.local.services import (
        BlobService,
        LocalStore,
        ServiceError,
        find_azurite,
        running_azurite,
    )

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
            storage: BlobService | LocalStore
            connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
            # A container does not see the work directory: pods under podman use Azurite by default.
            chosen = arguments.storage or ("azurite" if arguments.containers else "file")
            if chosen == "file" and arguments.containers:
                print("run-local: --containers needs a blob store: --storage azurite or --storage URL",
                      file=sys.stderr)  # fmt: skip
                return 2
            if chosen == "file":
                storage = LocalStore(work / "storage")
                step(f"snapshots and artifacts on the local disk: {storage.endpoint}")
            elif chosen == "azurite":
                step("starting Azurite, the blob store for snapshots and artifacts")
                storage = stack.enter_context(running_azurite(find_azurite(REPO), work / "azurite"))
                connection = storage.connection_string
            else:
                storage = BlobService(arguments.storage.rstrip("/"))
                connection = connection or storage.connection_string
            policy = (
                arguments.policy.resolve() if arguments.policy else _local_policy(storage, connection, work)
            )
            env = {
                **os.environ,
                **({"AZURE_STORAGE_CONNECTION_STRING": connection} if connection else {}),
                "DATA_PLATFORM_POLICY_FILE": str(policy),
                "AIRFLOW_HOME": str(work / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent),
                "AIRFLOW__DATA_PLATFORM__LOCAL_RUNNER": "process",
                "AIRFLOW__DATA_PLATFORM__LOCAL_AGENT": str(agent),
                "AIRFLOW__DATA_PLATFORM__LOCAL_ROOT": str(work / "pods"),
            }
            if arguments.containers:
                env.update(_containers(policy, work))
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
    except CannotRunContainers as error:
        print(f"run-local: --containers: {error}", file=sys.stderr)
        return 2


class CannotRunContainers(RuntimeError):
    """Podman cannot build or run the images here (scripts/build-images says why)."""


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


def _agent(chosen: Path | None) -> Path:
    for candidate in (chosen, os.environ.get("TASK_AGENT_BIN"), REPO / "target" / "debug" / "task-agent",
                      shutil.which("task-agent")):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError("no task-agent binary: build it with `cargo build`, or give --agent PATH")


def _local_policy(storage: Any, connection: str, work: Path) -> Path:
    """The platform's policy with each tenant's storage and artifacts on the local store: its own
    container (or directory) `TENANT` (artifacts under `TENANT/runs`), plus `local-code` for
    `--code`. Its storage keeps the cloud prefixes too, so DAG files naming them still load. On the
    local disk the policy says `platform.local_store: true`, which lets it list file:// prefixes."""
    import yaml

    from data_platform.local.services import LocalStore
    from data_platform.policy import EXAMPLE_POLICY_FILE, POLICY_FILE_VAR

    source = Path(os.environ.get(POLICY_FILE_VAR) or EXAMPLE_POLICY_FILE)
    document = yaml.safe_load(source.read_text())
    containers = [CODE_CONTAINER]
    for name, tenant in (document.get("tenants") or {}).items():
        if not _CONTAINER_NAME.match(str(name)):
            continue
        tenant["storage"] = [*(tenant.get("storage") or []), f"{storage.endpoint}/{name}",
                             f"{storage.endpoint}/{CODE_CONTAINER}"]  # fmt: skip
        tenant["artifacts"] = f"{storage.endpoint}/{name}/runs"
        containers.append(str(name))
    path = work / "platform-policy.yaml"
    if isinstance(storage, LocalStore):
        document.setdefault("platform", {})["local_store"] = True
        for container in containers:
            (storage.root / container).mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        step(f"platform policy {source.name} with the tenants' storage in {storage.endpoint}: {path}")
        return path
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection)
    for container in containers:
        client = service.get_container_client(container)
        if not client.exists():
            client.create_container()
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    step(f"platform policy {source.name} with the tenants' storage on {storage.endpoint}: {path}")
    return path


def _publish(agent: Path, code: Path, storage: Any, connection: str, work: Path) -> str:
    from data_platform.local.services import LocalStore

    archive = work / "code.tar.gz"
    packed = subprocess.run([str(agent), "pack", str(code), "--output", str(archive)],
                            check=True, capture_output=True, text=True)  # fmt: skip
    sha256 = packed.stdout.split()[0]
    name = f"{code.resolve().name}-{sha256[:12]}.tar.gz"
    if isinstance(storage, LocalStore):
        # The agent reads a file:// snapshot: the archive in the store is the published snapshot.
        (storage.root / CODE_CONTAINER).mkdir(parents=True, exist_ok=True)
        archive.replace(storage.root / CODE_CONTAINER / name)
    else:
        from azure.storage.blob import BlobServiceClient

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


def _containers(policy: Path, work: Path) -> dict[str, str]:
    """The settings of the container back-end: the images, podman's settings, the chart's pod
    template and ConfigMaps. What it prints is what scripts/build-images printed."""
    import yaml

    from data_platform.policy import load_policy

    step("building the images (scripts/build-images; cached, a few seconds once built)")
    built = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True, cwd=REPO)
    if built.returncode == CANNOT_RUN_CONTAINERS:
        reason = (built.stderr.strip().splitlines() or ["podman cannot run containers here"])[-1]
        raise CannotRunContainers(reason)
    if built.returncode != 0:
        raise CannotRunContainers(
            f"scripts/build-images failed ({built.returncode}):\n{built.stderr[-3000:]}"
        )
    printed = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    for name in ("AGENT_IMAGE", "PYTHON_RUNTIME_IMAGE", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
        step(f"   {name}={printed[name]}")
    documents = _render_chart()
    in_airflow = [d for d in documents if d.get("kind") == "ConfigMap"
                  and d["metadata"].get("namespace") == AIRFLOW_NAMESPACE]  # fmt: skip
    template_text = next(
        d["data"][POD_TEMPLATE_KEY] for d in in_airflow if POD_TEMPLATE_KEY in d.get("data", {})
    )
    template = work / "pod_template.yaml"
    template.write_text(template_text)
    # The pods mount the policy's ConfigMap: here it holds the run's policy (the Airflow side's).
    config_maps = work / "config-maps"
    for document in in_airflow:
        if POD_TEMPLATE_KEY in document.get("data", {}):
            continue
        directory = config_maps / document["metadata"]["name"]
        directory.mkdir(parents=True, exist_ok=True)
        for key, text in document.get("data", {}).items():
            (directory / key).write_text(policy.read_text() if key == POLICY_KEY else text)
    # The registry's images the pods name → the images built here.
    loaded = load_policy(policy)
    images = {loaded.images[loaded.default_image]: printed["PYTHON_RUNTIME_IMAGE"]}
    pod = yaml.safe_load(template_text)
    for init in pod["spec"].get("initContainers") or []:
        images[init["image"]] = printed["AGENT_IMAGE"]
    step(f"the chart's pod template ({template}); images: "
         + ", ".join(f"{ref} as {local}" for ref, local in images.items()))  # fmt: skip
    return {
        "AIRFLOW__DATA_PLATFORM__LOCAL_RUNNER": "container",
        "AIRFLOW__DATA_PLATFORM__LOCAL_IMAGES": ",".join(f"{ref}={local}" for ref, local in images.items()),
        "AIRFLOW__DATA_PLATFORM__LOCAL_CONFIG_MAPS": str(config_maps),
        "DATA_PLATFORM_POD_TEMPLATE_FILE": str(template),
        "CONTAINERS_CONF": printed["CONTAINERS_CONF"],
        "CONTAINERS_STORAGE_CONF": printed["CONTAINERS_STORAGE_CONF"],
    }


def _render_chart() -> list[dict[str, Any]]:
    """The chart with its default values, as `helm template` renders it."""
    import yaml

    helm = REPO / ".tools" / "bin" / "helm"
    binary = str(helm) if helm.is_file() else shutil.which("helm")
    if binary is None:
        raise FileNotFoundError("helm is not installed: run scripts/install-chart-tools")
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        # A throw-away home: no user's helm configuration or plugins change the rendering.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "HELM_CACHE_HOME": f"{home}/cache", "HELM_CONFIG_HOME": f"{home}/config",
               "HELM_DATA_HOME": f"{home}/data"}  # fmt: skip
        rendered = subprocess.run([binary, "template", RELEASE, str(CHART), "--namespace", AIRFLOW_NAMESPACE],
                                  env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return [document for document in yaml.safe_load_all(rendered.stdout) if document]
