"""OpenLineage through real Airflow: apache-airflow-providers-openlineage with its file transport,
the seed pipeline run once by the local runner (`data-platform run-local`, dag.test), every event
validated against the pinned OpenLineage JSON Schemas, with the datasets, parent links and facets
the platform adds. The failing and retried tries' FAIL events are checked on the local runner's
outcomes run (test_local_runner.py), which emits them on the way.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from conftest import REPO
from data_platform import lineage
from lineage_events import by_task, read_events, transport_env, validate
from test_cost import points
from test_local_runner import run_local

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def test_the_seed_pipeline_emits_lineage_with_its_datasets_parents_and_cost(
    agent_binary: Path, tmp_path: Path
):
    if os.geteuid() != 0:
        pytest.skip("the local SFTP server chroots, which sshd does only as root (CI runs as root)")
    events_file = tmp_path / "events.jsonl"
    done = run_local(agent_binary, str(REPO / "dags" / "user1_pipeline.py"), "--code",
                     str(REPO / "examples" / "user1_pipeline"), "--work-dir", str(tmp_path / "work"),
                     "--storage", "azurite", env=transport_env(events_file))  # fmt: skip
    # On Azurite, so the datasets carry the blob naming (wasbs://) a cluster's runs have.
    assert done.returncode == 0, done.stdout + done.stderr
    events = read_events(events_file)
    for event in events:
        unchecked = validate(event)
        assert all(
            where.split(".")[1] in ("airflow", "airflowDagRun", "airflowState", "debug")
            for where in unchecked
        )
    tasks = by_task(events, "user1_pipeline")
    assert {name: [e["eventType"] for e in found] for name, found in tasks.items()} == {
        "validate": ["START", "COMPLETE"],
        "transform": ["START", "COMPLETE"],
        "upload": ["START", "COMPLETE"],
    }
    # Every try's events are one run, a child of the DAG run (the provider's parent facet).
    (dag_run,) = [e for e in events if e["job"]["name"] == "user1_pipeline"]
    for found in tasks.values():
        assert found[0]["run"]["runId"] == found[1]["run"]["runId"]
        parent = found[1]["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == dag_run["run"]["runId"]
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("data-platform", "user1_pipeline")
    validate_end, transform_end, upload_end = (tasks[name][1] for name in ("validate", "transform", "upload"))

    # Datasets by the naming spec: validate's output is transform's input, transform's is upload's.
    def names(event, side):
        return [(d["namespace"], d["name"]) for d in event[side]]

    blob_namespace = "wasbs://user1@devstoreaccount1.blob.core.windows.net"
    (valid_csv,) = names(validate_end, "outputs")
    assert valid_csv[0] == blob_namespace and valid_csv[1].endswith("/validate/-1/1/files/data/valid.csv")
    assert names(transform_end, "inputs") == [valid_csv]
    (out_csv,) = names(transform_end, "outputs")
    assert names(upload_end, "inputs") == [out_csv]
    ((sftp_namespace, remote),) = names(upload_end, "outputs")
    assert re.fullmatch(r"sftp://127\.0\.0\.1:\d+", sftp_namespace) and remote == "/incoming/out.csv"
    # Versions are the sha256s the agents recorded; the input's check is a data-quality assertion.
    produced = transform_end["outputs"][0]
    delivered = upload_end["outputs"][0]
    assert SHA256.match(produced["facets"]["version"]["datasetVersion"])
    assert delivered["facets"]["version"] == produced["facets"]["version"] | {
        "_producer": delivered["facets"]["version"]["_producer"]
    }
    assert produced["outputFacets"]["outputStatistics"]["size"] == 40
    read = transform_end["inputs"][0]["inputFacets"]
    assert read["dataQualityAssertions"]["assertions"][0]["assertion"] == "sha256_matches_recorded"
    assert read["inputStatistics"]["fileCount"] == 1

    # Job facets: the snapshot (no SAS) and its sha256 as source code location; ownership and tags.
    location = validate_end["job"]["facets"]["sourceCodeLocation"]
    assert location["type"] == "snapshot" and "?" not in location["url"] and SHA256.match(location["version"])
    assert "tenant:user1" in {tag["key"] for tag in validate_end["job"]["facets"]["tags"]["tags"]}
    # Run facets: what the try cost and what the record adds.
    cost = validate_end["run"]["facets"]["dataPlatformCost"]
    assert cost["tenant"] == "user1" and cost["outcome"] == "success" and cost["currency"] == "USD"
    assert cost["usage"]["cpu_request_millicores"] == 250 and cost["total"] > 0
    agent = validate_end["run"]["facets"]["taskAgent"]
    assert agent["engine"]["name"] == "task-agent" and agent["status"] == "succeeded"
    assert agent["usage"]["requests"] == {"cpu_millicores": 250, "memory_bytes": 512 << 20}
    assert "dataPlatformCost" not in upload_end["run"]["facets"], "no pod, no cost of its own"


def check_outcome_lineage(events_file: Path, dag_id: str, out: str) -> None:
    """The local runner's outcomes run (test_local_runner.py): FAIL events for failed and retried tries,
    each costed, and the pod's parent run variables naming the task's own run."""
    events = read_events(events_file)
    for event in events:
        validate(event)
    tasks = by_task(events, dag_id)
    hog = [e for e in tasks["hog"] if e["eventType"] != "START"]
    assert [e["eventType"] for e in hog] == ["FAIL", "FAIL"]
    assert hog[0]["run"]["runId"] != hog[1]["run"]["runId"], "each try is a run of its own"
    first, second = (e["run"]["facets"] for e in hog)
    assert [f["dataPlatformCost"]["outcome"] for f in (first, second)] == ["retry", "fail"]
    assert [f["dataPlatformCost"]["try_number"] for f in (first, second)] == [1, 2]
    assert all(f["dataPlatformCost"]["total"] > 0 for f in (first, second))
    assert first["taskAgent"]["usage"]["limits"]["memory_bytes"] == 1 << 30
    assert second["taskAgent"]["usage"]["limits"]["memory_bytes"] == 1536 << 20
    assert "ran out of memory" in first["errorMessage"]["message"]
    (fail,) = [e for e in tasks["fail"] if e["eventType"] == "FAIL"]
    assert (
        fail["run"]["facets"]["dataPlatformCost"]["outcome"] == "fail"
        or fail["run"]["facets"]["dataPlatformCost"]["outcome"] == "retry"
    )
    assert fail["run"]["facets"]["taskAgent"]["exit_code"] == 3
    # The pod got its task run as OpenLineage parent, in both forms a child integration reads.
    (parent_end,) = [e for e in tasks["parent"] if e["eventType"] == "COMPLETE"]
    report = out.split("== parent:")[1].split("\n==")[0]
    returned = re.search(r"return_value: (\{.*\})", report)
    assert returned is not None, report
    seen = json.loads(returned.group(1))
    run_id = parent_end["run"]["runId"]
    assert seen["parent_id"] == f"data-platform/{dag_id}.parent/{run_id}"
    context = json.loads(seen["context"])
    assert context["parent"]["run"]["runId"] == run_id
    assert (context["parent"]["job"]["namespace"], context["parent"]["job"]["name"]) == (
        "data-platform", f"{dag_id}.parent",
    )  # fmt: skip
    assert context["parent"]["root"]["run"]["runId"] == parent_end["run"]["facets"]["parent"]["run"]["runId"]


def test_a_lineage_failure_is_logged_once_counted_and_leaves_the_task_alone(metric_reader, caplog):
    def broken():
        raise RuntimeError("facet exploded")

    with caplog.at_level(logging.WARNING):
        found = lineage.guarded(broken, tenant="t9", dag_id="d9", task_id="k9", stage="end")
    assert (found.inputs, found.outputs, found.run_facets, found.job_facets) == ([], [], {}, {})
    lines = [r.getMessage() for r in caplog.records if "OpenLineage" in r.getMessage()]
    assert len(lines) == 1 and "RuntimeError: facet exploded" in lines[0] and "\n" not in lines[0]
    counted = points(metric_reader, "data_platform.lineage.failures")
    labels = {"tenant": "t9", "dag_id": "d9", "task_id": "k9", "stage": "end", "error.type": "RuntimeError"}
    assert counted[tuple(sorted(labels.items()))] == 1


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "https://acct.blob.core.windows.net/runs/a/b.csv?sv=x&sig=y",
            ("wasbs://runs@acct.blob.core.windows.net", "a/b.csv"),
        ),
        (
            "https://acct.dfs.core.windows.net/lake/x/y.parquet",
            ("abfss://lake@acct.dfs.core.windows.net", "x/y.parquet"),
        ),
        (
            "http://127.0.0.1:10000/devstoreaccount1/runs/p%3Aq.csv",
            ("wasbs://runs@devstoreaccount1.blob.core.windows.net", "p:q.csv"),
        ),
        ("file:///srv/data/out.csv", ("file://", "/srv/data/out.csv")),
        (
            "sftp://partner.example:2222/incoming/out.csv",
            ("sftp://partner.example:2222", "/incoming/out.csv"),
        ),
        ("sftp://partner.example/in.csv", ("sftp://partner.example:22", "/in.csv")),
        ("https://acct.blob.core.windows.net/runs", None),
    ],
)
def test_datasets_are_named_by_the_openlineage_naming_spec(uri, expected):
    assert lineage.dataset_of(uri) == expected
