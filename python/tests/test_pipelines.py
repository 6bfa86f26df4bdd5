"""Pipeline files (issue 17): the YAML seed is the Python seed's DAG, a broken file costs only its own
pipeline (with file:line:col and the fix in Airflow's import errors), hostile YAML fails fast, the
published schema is the loader's, and `data-platform validate` reports as CI needs.

Every DagBag here discovers files as a default DAG processor does (safe mode on).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from conftest import DAGS, POLICY_FILE, REPO
from data_platform.commands import main as data_platform
from data_platform.pipelines.schema import schema_text
from data_platform.pipelines.stubs import STUB, STUB_MARKER, sync_stubs

SEED = REPO / "examples" / "pipelines" / "user1" / "pipeline.yaml"
SCHEMA = REPO / "schema" / "pipeline.schema.json"
SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/p.tar.gz"

GOOD = f"""apiVersion: data-platform/v1
kind: Pipeline
schedule: "@hourly"
snapshot: {SNAPSHOT}
tasks:
  extract: {{type: aks_python, script: extract.py, outputs: [/data/x.csv]}}
  load: {{type: aks_python, script: load.py, upstream: [extract], inputs: [/data/x.csv]}}
"""

#: One broken file of each kind: (text, the line:col reported, words of the message).
BROKEN = {
    "bad_yaml": (
        "apiVersion: data-platform/v1\nkind: Pipeline\ntasks:\n  a: {type: dummy\n",
        "5:1",
        "not valid YAML",
    ),
    "schema": (
        "apiVersion: data-platform/v1\nkind: Pipeline\ntasks:\n  a:\n    type: dummy\n    retires: 1\n",
        "6:5",
        "tasks.a.retires: unknown field 'retires'",
    ),
    "policy": (
        f"apiVersion: data-platform/v1\nkind: Pipeline\nsnapshot: {SNAPSHOT}\ntasks:\n"
        "  a:\n    type: aks_python\n    script: a.py\n    size: large\n",
        "8:11",
        "tasks.a.size: size 'large' is not allowed for tenant 'user1' (allowed: small, medium)",
    ),
    "cycle": (
        "apiVersion: data-platform/v1\nkind: Pipeline\ntasks:\n"
        "  a: {type: dummy, upstream: [b]}\n  b: {type: dummy, upstream: [a]}\n",
        "4:20",
        "dependency cycle: a -> b -> a",
    ),
    "unknown_upstream": (
        "apiVersion: data-platform/v1\nkind: Pipeline\ntasks:\n  a: {type: dummy, upstream: [nope]}\n",
        "4:31",
        "tasks.a.upstream[0]: unknown upstream task 'nope'",
    ),
    "ambiguous_input": (
        f"apiVersion: data-platform/v1\nkind: Pipeline\nsnapshot: {SNAPSHOT}\ntasks:\n"
        "  a: {type: aks_python, script: a.py, outputs: [/d/x]}\n"
        "  b: {type: aks_python, script: b.py, outputs: [/d/x]}\n"
        "  c: {type: aks_python, script: c.py, upstream: [a, b], inputs: [/d/x]}\n",
        "7:65",
        "is an output of both a and b",
    ),
    "object_tag": (
        'apiVersion: !!python/object/apply:os.system ["touch /tmp/pwned"]\nkind: Pipeline\n',
        "1:13",
        "is not allowed: a pipeline file is plain data",
    ),
}


def load(folder: Path) -> DagBag:
    return DagBag(dag_folder=folder, safe_mode=True)


def dag_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "dags"
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sync_stubs(folder)
    return folder


def serialized(dag: object) -> dict[str, object]:
    data = DagSerialization.to_dict(dag)
    for key in ("fileloc", "relative_fileloc"):
        data["dag"].pop(key, None)
    return json.loads(json.dumps(data, default=str, sort_keys=True))


def test_the_yaml_seed_is_the_python_seeds_dag(tmp_path, monkeypatch):
    monkeypatch.delenv("USER1_PIPELINE_SNAPSHOT", raising=False)
    monkeypatch.delenv("USER1_PIPELINE_SNAPSHOT_SHA256", raising=False)
    folder = dag_folder(tmp_path, {"pipelines/user1/pipeline.yaml": SEED.read_text(encoding="utf-8")})
    from_yaml = load(folder)
    assert from_yaml.import_errors == {}
    from_python = load(DAGS).dags["user1_pipeline"]
    assert serialized(from_yaml.dags["user1_pipeline"]) == serialized(from_python)


def test_the_published_schema_is_the_loaders():
    assert SCHEMA.read_text(encoding="utf-8") == schema_text(), (
        "regenerate: python -m data_platform.pipelines.schema > schema/pipeline.schema.json"
    )


def test_the_seed_validates_against_the_published_schema():
    import jsonschema
    import yaml

    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(yaml.safe_load(SEED.read_text()))


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_file_costs_only_its_own_pipeline(kind, tmp_path):
    text, line_col, words = BROKEN[kind]
    handwritten = (DAGS / "user1_pipeline.py").read_text(encoding="utf-8")
    folder = dag_folder(
        tmp_path,
        {
            "pipelines/user1/good.yaml": GOOD,
            "pipelines/user1/broken.yaml": text,
            "pipelines/user2/good.yaml": GOOD.replace("user1data", "user2data"),
            "user1_pipeline.py": handwritten,  # a hand-written Python DAG, side by side
        },
    )
    bag = load(folder)
    assert sorted(bag.dags) == ["user1_good", "user1_pipeline", "user2_good"]
    [(stub, error)] = bag.import_errors.items()
    assert stub == str(folder / "pipelines" / "user1" / "broken.py")
    assert f"pipelines/user1/broken.yaml:{line_col}: error: " in error
    assert words in error


@pytest.mark.parametrize(
    "kind",
    ["huge", "alias_bomb", "deep_nesting", "many_keys"],
)
def test_hostile_yaml_fails_fast_and_small(kind, tmp_path):
    if kind == "huge":
        text = "# padding\n" * (5 * 1024 * 1024)  # 50 MB
    elif kind == "alias_bomb":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        text = "\n".join(lines) + "\n"
    elif kind == "deep_nesting":
        text = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"
    else:
        text = "".join(f"k{i}: v\n" for i in range(60_000))
    folder = dag_folder(tmp_path, {"pipelines/user1/hostile.yaml": text})
    started = time.perf_counter()
    bag = load(folder)
    assert time.perf_counter() - started < 5
    [error] = bag.import_errors.values()
    assert "pipelines/user1/hostile.yaml:" in error and ": error: " in error
    expected = {
        "huge": "above the limit",
        "alias_bomb": "expands to more than",
        "deep_nesting": "nest",
        "many_keys": "above the limit",
    }[kind]
    assert expected in error


def test_the_object_tag_constructs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    text = f'apiVersion: !!python/object/apply:os.system ["touch {marker}"]\n'
    load(dag_folder(tmp_path, {"pipelines/user1/evil.yaml": text}))
    assert not marker.exists()


def test_the_tenant_is_the_folder_not_a_field(tmp_path):
    """user2's folder cannot read user1's vault or storage, name a tenant, or take user1's DAG ids."""
    user1_vault = GOOD.replace(
        "script: extract.py,", "script: extract.py, secrets: {DB: user1-kv/db},"
    ).replace("user1data", "user2data")
    folder = dag_folder(
        tmp_path,
        {
            "pipelines/user2/steal.yaml": user1_vault,
            "pipelines/user2/foreign.yaml": GOOD,  # user1's storage
            "pipelines/user2/claims.yaml": GOOD.replace("kind: Pipeline", "kind: Pipeline\ntenant: user1"),
            "pipelines/nobody/x.yaml": GOOD,
        },
    )
    bag = load(folder)
    assert bag.dags == {}
    errors = {Path(path).stem: text for path, text in bag.import_errors.items()}
    assert "vault 'user1-kv' is not allowed for tenant 'user2'" in errors["steal"]
    assert "is not in tenant 'user2''s storage" in errors["foreign"]
    assert "unknown field 'tenant'" in errors["claims"]
    assert "tenant 'nobody' is not registered" in errors["x"]


def test_stubs_are_written_and_removed_with_their_yaml(tmp_path):
    folder = dag_folder(tmp_path, {"pipelines/user1/a.yaml": GOOD, "pipelines/user1/mine.py": "x = 1\n"})
    stub = folder / "pipelines" / "user1" / "a.py"
    assert stub.read_text() == STUB and "airflow" in STUB.lower() and "dag" in STUB.lower()
    (folder / "pipelines" / "user1" / "a.yaml").unlink()
    changes = sync_stubs(folder)
    assert changes.removed == (stub,) and not stub.exists()
    assert (folder / "pipelines" / "user1" / "mine.py").read_text() == "x = 1\n", "not a stub: left alone"
    assert STUB_MARKER not in "x = 1\n"


def broken_repo(tmp_path: Path) -> Path:
    return dag_folder(
        tmp_path,
        {"pipelines/user1/good.yaml": GOOD, **{f"pipelines/user1/{k}.yaml": v[0] for k, v in BROKEN.items()}},
    )


def test_validate_text_format_and_exit_codes(tmp_path, capsys, monkeypatch):
    folder = broken_repo(tmp_path)
    monkeypatch.chdir(folder)
    assert data_platform(["validate", "pipelines/user1/good.yaml"]) == 0
    assert data_platform(["validate", "pipelines"]) == 1
    out = capsys.readouterr().out
    for kind, (_, line_col, words) in BROKEN.items():
        [line] = [x for x in out.splitlines() if x.startswith(f"pipelines/user1/{kind}.yaml:")]
        assert line.startswith(f"pipelines/user1/{kind}.yaml:{line_col}: error: ") and words in line
    assert "good.yaml" not in out
    assert data_platform(["validate", "no/such.yaml"]) == 2
    with pytest.raises(SystemExit) as usage:
        data_platform(["validate", "--format", "xml", "pipelines"])
    assert usage.value.code == 2


def test_validate_github_and_json_formats(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(broken_repo(tmp_path))
    assert data_platform(["validate", "--format", "github", "pipelines/user1/cycle.yaml"]) == 1
    assert capsys.readouterr().out.startswith(
        "::error file=pipelines/user1/cycle.yaml,line=4,col=20,title=pipeline::"
        "tasks.a.upstream: dependency cycle"
    )
    assert (
        data_platform(
            ["validate", "--format", "json", "pipelines/user1/good.yaml", "pipelines/user1/policy.yaml"]
        )
        == 1
    )
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    good, policy = report["files"]
    assert good == {"file": "pipelines/user1/good.yaml", "valid": True, "problems": []}
    [problem] = policy["problems"]
    assert (problem["line"], problem["column"], problem["field"]) == (8, 11, "tasks.a.size")


def test_the_console_script_validates_a_hundred_files_quickly(tmp_path):
    """The installed `data-platform` script, no Airflow database, network or home of its own."""
    files = {f"pipelines/user{1 + i % 2}/p{i:03d}.yaml": GOOD.replace("user1data", f"user{1 + i % 2}data")
             for i in range(100)}  # fmt: skip
    folder = dag_folder(tmp_path, files)
    script = Path(sys.executable).parent / "data-platform"
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_HOME"}
    env["DATA_PLATFORM_POLICY_FILE"] = str(POLICY_FILE)
    started = time.perf_counter()
    finished = subprocess.run(
        [script, "validate", "pipelines"], cwd=folder, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "100 of 100 pipeline files valid" in finished.stderr
    # The target is 2 s on an idle 2-core machine; CI machines are shared, so with headroom.
    assert elapsed < 8, elapsed
    assert shutil.which("data-platform", path=str(script.parent))
