"""The DAG files load in Airflow's real DagBag, serialize for the scheduler, and do no I/O at parse time.

Every DagBag here discovers files as a default Airflow's DAG processor does, in safe mode: it
parses only the files whose text contains both "airflow" and "dag". A test that turned safe mode
off would pass for a DAG file that a real deployment silently never sees.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from conftest import DAGS, POLICY_FILE, REPO
from data_platform import PlatformPodOperator
from data_platform.sftp_upload import SftpUploadOperator

BENCH = REPO / "python" / "benches" / "dag_parse_time.py"
GUIDE = REPO / "docs" / "dag-authors.md"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dag_parse_time", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def generated_dags(tmp_path: Path) -> Path:
    """A DAG folder with the bench's generated file: 50 aks_python tasks in varied shapes."""
    folder = tmp_path / "dags"
    folder.mkdir()
    bench().generate_dag_file(folder / "generated_pipeline.py", tasks=50)
    return folder


def load(folder: Path) -> DagBag:
    """Discovers DAG files as the DAG processor does by default (see the safe-mode test below)."""
    return DagBag(dag_folder=folder, safe_mode=True)


def guide_dag_example() -> str:
    """The Python block of docs/dag-authors.md's "## For DAG authors" (it moved there from the README)."""
    text = GUIDE.read_text(encoding="utf-8")
    for_authors = text.split("\n## For DAG authors\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", for_authors, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "docs/dag-authors.md's 'For DAG authors' section has no ```python block"
    return str(blocks[0])


def without_module_docstring(code: str) -> str:
    module = ast.parse(code)
    first = module.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), "no module docstring"
    assert first.end_lineno is not None
    lines = code.splitlines(keepends=True)
    return "".join(lines[: first.lineno - 1] + lines[first.end_lineno :])


def dag_folder_with(tmp_path: Path, name: str, code: str) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / name).write_text(code, encoding="utf-8")
    return folder


#: The guide leaves the digest for the author to paste (what `task-agent pack` printed); a real
#: digest stands in for it, and nothing else of the example is changed.
DIGEST_PLACEHOLDER = 'sha256="…"'


def as_an_author_writes_it(example: str) -> str:
    assert example.count(DIGEST_PLACEHOLDER) == 1, "the guide's example digest placeholder changed"
    return example.replace(DIGEST_PLACEHOLDER, f'sha256="{"9f" * 32}"')


def test_safe_mode_is_airflows_default_and_this_environments():
    """So `safe_mode=True` in these tests is exactly what a default DAG processor does."""
    assert conf.get_default_value("core", "dag_discovery_safe_mode") == "True"
    assert conf.getboolean("core", "dag_discovery_safe_mode") is True


def test_a_dag_file_written_as_the_guide_says_is_discovered(tmp_path):
    code = as_an_author_writes_it(guide_dag_example())
    bag = load(dag_folder_with(tmp_path, "user1_pipeline.py", code))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["user1_pipeline"]
    assert {t.task_id for t in bag.dags["user1_pipeline"].tasks} == {"validate", "transform", "upload"}


def test_the_same_file_without_the_word_airflow_is_not_discovered(tmp_path):
    """Pins Airflow's rule, and shows the guide's docstring is what makes the example visible."""
    code = without_module_docstring(as_an_author_writes_it(guide_dag_example()))
    assert "airflow" not in code.lower() and "dag" in code.lower()
    bag = load(dag_folder_with(tmp_path, "user1_pipeline.py", code))
    assert bag.dags == {}
    assert bag.import_errors == {}, "skipped silently: no import error tells the author"


def test_every_dag_file_the_project_ships_is_discovered():
    shipped = sorted(path.name for path in DAGS.glob("*.py"))
    assert shipped, "no DAG files in dags/"
    bag = load(DAGS)
    assert bag.import_errors == {}
    discovered = sorted({Path(dag.fileloc).name for dag in bag.dags.values()})
    assert discovered == shipped


def test_the_example_dag_loads_without_import_errors():
    bag = load(DAGS)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["user1_pipeline"]
    dag = bag.dags["user1_pipeline"]
    assert {t.task_id for t in dag.tasks} == {"validate", "transform", "upload"}
    assert dag.get_task("validate").downstream_task_ids == {"transform"}
    assert dag.get_task("transform").downstream_task_ids == {"upload"}
    assert dag.get_task("upload").downstream_task_ids == set()
    assert isinstance(dag.get_task("validate"), PlatformPodOperator)
    assert isinstance(dag.get_task("transform"), PlatformPodOperator)
    assert isinstance(dag.get_task("upload"), SftpUploadOperator)
    assert "tenant:user1" in dag.tags


def test_the_example_dag_serializes_for_the_scheduler_with_its_deadline():
    dag = load(DAGS).dags["user1_pipeline"]
    data = DagSerialization.to_dict(dag)
    DagSerialization.validate_schema(data)
    restored = DagSerialization.from_dict(data)
    assert sorted(t.task_id for t in restored.tasks) == ["transform", "upload", "validate"]
    transform = restored.get_task("transform")
    assert transform.retries == 2
    assert transform.execution_timeout.total_seconds() == 7200
    text = json.dumps(data, default=str)
    assert "DagRunQueuedAtDeadline" in text
    assert "data_platform.dag_factory.run_deadline_missed" in text


def test_a_generated_dag_with_fifty_pod_tasks_loads(generated_dags):
    bag = load(generated_dags)
    assert bag.import_errors == {}
    dag = bag.dags["generated_pipeline"]
    assert len(dag.tasks) == 50
    assert all(isinstance(t, PlatformPodOperator) for t in dag.tasks)
    assert dag.get_task("part_000").downstream_task_ids == {"part_001"}
    DagSerialization.validate_schema(DagSerialization.to_dict(dag))


def test_a_dag_file_breaking_the_policy_is_an_import_error_naming_the_field(tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "greedy.py").write_text(
        '"""Airflow DAG asking for more than its tenant may have."""\n'
        "from data_platform import CustomerDAGFactory, PlatformTaskFactory\n"
        'dag = CustomerDAGFactory.create("greedy", tenant="user1", schedule=None)\n'
        'PlatformTaskFactory(dag).aks_python("t", "https://user1data.blob.core.windows.net/snapshots/a.tar.gz",'
        ' "t.py", size="large")\n'
    )
    bag = load(folder)
    assert bag.dags == {}
    [error] = bag.import_errors.values()
    assert "PolicyError" in error
    assert "greedy.t: size 'large' is not allowed for tenant 'user1' (allowed: small, medium)" in error


def test_dag_files_load_with_the_network_cut(generated_dags, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("parse-time network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for folder in (DAGS, generated_dags):
        bag = load(folder)
        assert bag.import_errors == {}, folder
        assert bag.dags, folder


_AUDIT = """
import json, sys
import data_platform, data_platform.task_factory  # loaded first: their own imports are not the DAG's work
from airflow.dag_processing.dagbag import DagBag
events, active = [], False
def hook(event, args):
    if not active:
        return
    if event == "open":
        events.append(["open", str(args[0]), str(args[1])])
    elif event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork",
                           "urllib.", "http.", "ftplib.", "smtplib.")):
        events.append([event, repr(args)[:200]])
sys.addaudithook(hook)
active = True
bag = DagBag(dag_folder=sys.argv[1], safe_mode=True)  # as a default DAG processor discovers files
active = False
print(json.dumps({"errors": bag.import_errors, "dags": sorted(bag.dags), "events": events}))
"""


@pytest.mark.parametrize("which", ["example", "generated"])
def test_parsing_opens_only_the_dag_file_and_the_policy(which, generated_dags, tmp_path):
    """Audit hooks in a fresh interpreter see every file opened and every socket or process started."""
    folder = DAGS if which == "example" else generated_dags
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DATA_PLATFORM_POLICY_FILE": str(POLICY_FILE),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    finished = subprocess.run(
        [sys.executable, "-c", _AUDIT, str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["dags"] == (["user1_pipeline"] if which == "example" else ["generated_pipeline"])
    others = [event for event in report["events"] if event[0] != "open"]
    assert others == [], "no sockets, processes or HTTP at parse time"
    opened = {Path(event[1]).resolve() for event in report["events"]}
    allowed_dirs = {folder.resolve(), (folder / "__pycache__").resolve()}
    unexpected = {p for p in opened if p != POLICY_FILE.resolve() and p.parent not in allowed_dirs}
    assert unexpected == set(), (
        f"files opened at parse time besides the DAG files and the policy: {unexpected}"
    )
    assert POLICY_FILE.resolve() in opened
    assert all(event[2].startswith("r") for event in report["events"]), "nothing is written at parse time"
