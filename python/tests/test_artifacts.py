"""Data between tasks, the Airflow side: declarations checked at parse time, the agent's
`--artifacts/--output/--input` arguments, and run-time resolution of an upstream task's recorded
output (from its `outputs` XCom) into an input, an SFTP upload or an asset event."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Asset
from airflow.sdk.definitions.xcom_arg import XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors
from azure.storage.blob import BlobServiceClient, ContainerClient

from conftest import POLICY_FILE, Azurite
from data_platform import CustomerDAGFactory, PlatformTaskFactory, PolicyError
from data_platform.artifacts import OUTPUTS_XCOM_KEY, Output, OutputRef
from data_platform.operator import RECORD_XCOM_KEY, PlatformPodOperator
from data_platform.outcome import Outcome, Verdict
from data_platform.policy import PlatformPolicy, load_policy
from data_platform.record import Record
from data_platform.sftp_upload import SftpUploadOperator
from rendering import RUN_ID, context_for, render
from sshd import SshKey, SshServer, sftp_connection_json

SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/user1_pipeline/2026-11-26.tar.gz"
RUNS = "https://user1data.blob.core.windows.net/runs"
#: The try's folder for DAG `pipeline`, task `transform`, run RUN_ID, unmapped, try 1, as rendered.
TRANSFORM_PREFIX = f"{RUNS}/pipeline/scheduled__2026-11-26T00%3A00%3A00%2B00%3A00/transform/-1/1/"
SHA = "ab" * 32
OTHER_SHA = "cd" * 32


def tasks_for(policy: PlatformPolicy | None = None, dag_id: str = "pipeline") -> PlatformTaskFactory:
    dag = CustomerDAGFactory.create(dag_id, "user1", "@daily", policy=policy or load_policy(POLICY_FILE))
    return PlatformTaskFactory(dag)


@pytest.fixture
def tasks() -> PlatformTaskFactory:
    return tasks_for()


def with_user1(policy: PlatformPolicy, **changes: Any) -> PlatformPolicy:
    tenant = dataclasses.replace(policy.tenants["user1"], **changes)
    return dataclasses.replace(policy, tenants={**policy.tenants, "user1": tenant})


def options_of(arguments: list[str], flag: str) -> list[str]:
    """Every value of `flag` among the agent's options (before `--`)."""
    options = arguments[: arguments.index("--")]
    return [options[i + 1] for i, word in enumerate(options) if word == flag]


def recorded(path: str, uri: str, sha256: str = SHA, kind: str = "file", size: int = 42) -> dict[str, Any]:
    return {"path": path, "uri": uri, "kind": kind, "bytes": size, "files": 1, "sha256": sha256}


# --- Parse time: declarations and the agent's arguments ------------------------------------------


def test_outputs_go_to_the_trys_own_folder_named_by_the_operator(tasks):
    op = tasks.aks_python(
        "transform", SNAPSHOT, "transform.py",
        outputs=["/data/out.csv", Output("reports", archive=True), Output("/data/extra", optional=True)],
    )  # fmt: skip
    op.render_template_fields(context_for(op))
    arguments = op.arguments
    assert options_of(arguments, "--artifacts") == [TRANSFORM_PREFIX]
    assert options_of(arguments, "--output") == [
        f"/data/out.csv={TRANSFORM_PREFIX}files/data/out.csv",
        f"reports={TRANSFORM_PREFIX}files/reports#archive",
        f"/data/extra={TRANSFORM_PREFIX}files/data/extra#optional",
    ]
    assert arguments[arguments.index("--") :] == ["--", "python", "transform.py"]
    assert [o.path for o in op.data_outputs] == ["/data/out.csv", "reports", "/data/extra"]


def test_each_try_and_map_index_gets_its_own_folder(tasks):
    op = tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv"])
    op.render_template_fields(context_for(op, try_number=3, map_index=7))
    assert options_of(op.arguments, "--artifacts") == [
        f"{RUNS}/pipeline/scheduled__2026-11-26T00%3A00%3A00%2B00%3A00/transform/7/3/"
    ]


def test_a_task_without_data_declarations_gets_no_data_arguments(tasks):
    op = tasks.aks_python("transform", SNAPSHOT, "transform.py")
    assert not {"--artifacts", "--output", "--input"} & set(op.arguments)


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ("/data/out.csv", ["outputs:", "expected a list", "wrap it in [...]"]),
        ([42], ["outputs[0]:", "expected a path string or Output(path"]),
        (["/data/a=b.csv"], ["outputs[0]:", "'=', '#', ','", "rename the file"]),
        (["/data/../etc/passwd"], ["outputs[0]:", "without '..'", "for example /data/out.csv"]),
        (["/"], ["outputs[0]:", "must name a file or directory"]),
        (["/out.csv"], ["outputs[0]:", "'/out.csv' is directly under /", "read-only", "e.g. /data/out.csv"]),
        (["/etc/out.csv"], ["outputs[0]:", "'/etc/out.csv' is under /etc", "e.g. /data/out.csv"]),
        (["/proc"], ["outputs[0]:", "'/proc' is under /proc", "a directory of your own"]),
        (["/run/secrets/token"], ["outputs[0]:", "under /run/secrets", "e.g. /data/token"]),
        (["/var/run/x.pid"], ["outputs[0]:", "under /var/run", "e.g. /data/x.pid"]),
        (["/usr/local/out"], ["outputs[0]:", "under /usr"]),
        (["/data/out.csv", "/data//out.csv"], ["outputs[1]:", "declared twice", "declare each output once"]),
        ([Output("/data/out.csv", optional=True, asset=True)], ["outputs[0]:", "both optional and an asset"]),
        ([Output("/data/out.csv", archive="yes")], ["outputs[0]:", "archive='yes' must be True or False"]),  # type: ignore[arg-type]
    ],
)
def test_bad_output_declarations_fail_at_parse_time_naming_the_field(tasks, outputs, expected):
    with pytest.raises(PolicyError) as raised:
        tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=outputs)
    message = str(raised.value)
    assert message.startswith("pipeline.transform: ")
    for part in expected:
        assert part in message, message


def test_a_tenant_without_artifacts_storage_cannot_declare_outputs():
    tasks = tasks_for(with_user1(load_policy(POLICY_FILE), artifacts=None))
    with pytest.raises(PolicyError) as raised:
        tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv"])
    assert "tenant 'user1' has no artifacts storage" in str(raised.value)
    assert "tenants.user1.artifacts" in str(raised.value)


def test_a_static_blob_input_of_the_tenants_storage_is_passed_with_its_options(tasks):
    op = tasks.aks_python(
        "report", SNAPSHOT, "report.py",
        inputs={
            "/data/in.csv": f"https://user1data.blob.core.windows.net/exports/in.csv#sha256={SHA}",
            "/data/old": f"{RUNS}/pipeline/old/files/data/old.tar.gz#archive",
        },
    )  # fmt: skip
    assert options_of(op.arguments, "--input") == [
        f"/data/in.csv=https://user1data.blob.core.windows.net/exports/in.csv#sha256={SHA}",
        f"/data/old={RUNS}/pipeline/old/files/data/old.tar.gz#archive",
    ]
    assert "--artifacts" not in op.arguments


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"/data/in.csv": "https://user2data.blob.core.windows.net/snapshots/x.csv"},
         ["inputs['/data/in.csv']:", "not in tenant 'user1''s storage", "allowed: https://user1data"]),
        ({"/data/in.csv": "https://user1data.blob.core.windows.net/exports/x.csv#sha256=XYZ"},
         ["inputs['/data/in.csv']:", "option 'sha256=XYZ'", "64 lowercase hex digits"]),
        (["https://user1data.blob.core.windows.net/exports/x.csv"],
         ["inputs[0]:", "is a blob URI", "inputs={'/data/in.csv': "]),
        ({"/data/in.csv": 3}, ["inputs['/data/in.csv']:", "expected a list of paths, or a mapping"]),
        ("/data/in.csv", ["inputs:", "expected a list of paths"]),
        ({"/etc/app.conf": f"{SNAPSHOT}#sha256={SHA}"}, ["inputs['/etc/app.conf']:", "under /etc",
                                                         "e.g. /data/app.conf"]),
        (["/in.csv"], ["inputs[0]:", "directly under /", "e.g. /data/in.csv"]),
    ],
)  # fmt: skip
def test_bad_or_foreign_inputs_fail_at_parse_time_naming_the_field(tasks, inputs, expected):
    with pytest.raises(PolicyError) as raised:
        tasks.aks_python("report", SNAPSHOT, "report.py", inputs=inputs)
    message = str(raised.value)
    assert message.startswith("pipeline.report: ")
    for part in expected:
        assert part in message, message


def test_an_output_can_be_an_asset_with_a_stable_uri(tasks):
    op = tasks.aks_python(
        "transform", SNAPSHOT, "transform.py", outputs=[Output("/data/out.csv", asset=True), "/data/tmp.csv"]
    )
    expected = Asset(f"{RUNS}/pipeline/transform/data/out.csv")
    assert op.outlets == [expected]
    assert op.data_assets == {"/data/out.csv": expected.uri}


# --- Parse time: who produces what, once the DAG's edges exist -----------------------------------


def test_a_bare_input_path_names_the_upstream_task_that_declared_it(tasks):
    transform = tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv"])
    report = tasks.aks_python("report", SNAPSHOT, "report.py", inputs=["/data/out.csv"])
    upload = tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "sftp")
    transform >> [report, upload]
    tasks.dag.validate()
    # Resolved when the task runs, not now: no --input yet, and nothing was read.
    assert options_of(report.arguments, "--input") == []


def test_two_upstream_tasks_declaring_the_same_path_is_ambiguous_at_parse_time(tasks):
    first = tasks.aks_python("extract_a", SNAPSHOT, "a.py", outputs=["/data/out.csv"])
    second = tasks.aks_python("extract_b", SNAPSHOT, "b.py", outputs=["/data/out.csv"])
    report = tasks.aks_python("report", SNAPSHOT, "report.py", inputs=["/data/out.csv"])
    [first, second] >> report
    with pytest.raises(PolicyError) as raised:
        tasks.dag.validate()
    message = str(raised.value)
    assert "pipeline.report: inputs['/data/out.csv']" in message
    assert "output of both extract_a and extract_b" in message
    assert "extract_a.output('/data/out.csv')" in message


def test_an_sftp_upload_of_an_ambiguous_path_fails_at_parse_time_too(tasks):
    first = tasks.aks_python("extract_a", SNAPSHOT, "a.py", outputs=["/data/out.csv"])
    second = tasks.aks_python("extract_b", SNAPSHOT, "b.py", outputs=["/data/out.csv"])
    upload = tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "sftp")
    first >> second >> upload
    with pytest.raises(PolicyError, match="output of both extract_a and extract_b"):
        tasks.dag.validate()


def test_the_explicit_form_resolves_the_ambiguity_and_makes_the_producer_upstream(tasks):
    first = tasks.aks_python("extract_a", SNAPSHOT, "a.py", outputs=["/data/out.csv"])
    second = tasks.aks_python("extract_b", SNAPSHOT, "b.py", outputs=["/data/out.csv"])
    ref = first.output("/data/out.csv")
    assert ref == OutputRef("pipeline", "extract_a", "/data/out.csv")
    report = tasks.aks_python("report", SNAPSHOT, "report.py", inputs={"/in/today.csv": ref})
    upload = tasks.sftp_upload("upload", second.output("/data/out.csv"), "/incoming/out.csv", "sftp")
    assert report.upstream_task_ids == {"extract_a"}
    assert upload.upstream_task_ids == {"extract_b"}
    assert upload.source == "/data/out.csv"
    tasks.dag.validate()


def test_output_is_still_airflows_xcomarg_and_names_only_declared_outputs(tasks):
    transform = tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv"])
    assert isinstance(transform.output, XComArg)
    with pytest.raises(PolicyError) as raised:
        transform.output("/data/other.csv")
    assert "transform declares no such output (declared: /data/out.csv)" in str(raised.value)


def test_an_output_of_another_dags_task_cannot_be_read_by_name():
    other = tasks_for(dag_id="other").aks_python("t", SNAPSHOT, "t.py", outputs=["/data/o.csv"])
    ref = other.output("/data/o.csv")
    with pytest.raises(PolicyError, match="is a task of DAG 'other'"):
        tasks_for().aks_python("report", SNAPSHOT, "report.py", inputs={"/data/in.csv": ref})


def test_a_bare_input_no_upstream_task_declares_fails_at_parse_time(tasks):
    tasks.aks_python("transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv"])
    tasks.aks_python("report", SNAPSHOT, "report.py", inputs=["/data/out.csv"])  # no edge
    with pytest.raises(PolicyError) as raised:
        tasks.dag.validate()
    assert "no upstream task of report declares '/data/out.csv'" in str(raised.value)


def test_an_sftp_upload_of_a_path_nobody_declares_stays_a_local_file(tasks):
    tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "sftp")
    tasks.dag.validate()


def test_ambiguity_is_an_import_error_of_the_dag_file(tmp_path):
    """The DAG processor's own parse reports it, naming both tasks."""
    (tmp_path / "ambiguous.py").write_text(
        textwrap.dedent(f'''
            """Airflow DAG with an ambiguous input."""
            from data_platform import CustomerDAGFactory, PlatformTaskFactory
            dag = CustomerDAGFactory.create("ambiguous", tenant="user1", schedule=None)
            tasks = PlatformTaskFactory(dag)
            a = tasks.aks_python("a", "{SNAPSHOT}", "a.py", outputs=["/data/out.csv"])
            b = tasks.aks_python("b", "{SNAPSHOT}", "b.py", outputs=["/data/out.csv"])
            [a, b] >> tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "sftp")
        ''')
    )
    bag = DagBag(dag_folder=tmp_path, safe_mode=True)
    assert "ambiguous" not in bag.dags
    [error] = bag.import_errors.values()
    assert "PolicyError" in error and "output of both a and b" in error


# --- Run time: resolving an upstream output from its XCom ----------------------------------------


def pipeline(tasks: PlatformTaskFactory) -> tuple[PlatformPodOperator, PlatformPodOperator]:
    transform = tasks.aks_python(
        "transform", SNAPSHOT, "transform.py", outputs=["/data/out.csv", "/data/parts"]
    )
    report = tasks.aks_python(
        "report", SNAPSHOT, "report.py", inputs={"/data/out.csv": "/data/out.csv", "/in/parts": "/data/parts"}
    )
    transform >> report
    return transform, report


def test_an_input_resolves_to_the_upstream_recorded_output_with_its_sha256(tasks):
    _, report = pipeline(tasks)
    outputs = [
        recorded("/data/out.csv", f"{TRANSFORM_PREFIX}files/data/out.csv"),
        recorded("/data/parts", f"{TRANSFORM_PREFIX}files/data/parts", OTHER_SHA, kind="directory"),
    ]
    context = context_for(report, pushed_by_others={("transform", OUTPUTS_XCOM_KEY): outputs})
    pod = render(report, context)
    arguments = pod.spec.containers[0].args
    assert options_of(arguments, "--input") == [
        f"/data/out.csv={TRANSFORM_PREFIX}files/data/out.csv#sha256={SHA}",
        # A folder: the agent reads a URI ending in / as one, verified by its manifest's digest.
        f"/in/parts={TRANSFORM_PREFIX}files/data/parts/#sha256={OTHER_SHA}",
    ]
    assert arguments[arguments.index("--") :] == ["--", "python", "report.py"]
    render(report, context)  # a second rendering adds nothing
    assert len(options_of(report.arguments, "--input")) == 2


def test_an_archive_output_is_read_as_an_archive(tasks):
    transform = tasks.aks_python("transform", SNAPSHOT, "t.py", outputs=[Output("/data/parts", archive=True)])
    report = tasks.aks_python("report", SNAPSHOT, "r.py", inputs=["/data/parts"])
    transform >> report
    outputs = [recorded("/data/parts", f"{TRANSFORM_PREFIX}files/data/parts", kind="archive")]
    report.bind_inputs(context_for(report, pushed_by_others={("transform", OUTPUTS_XCOM_KEY): outputs}))
    assert options_of(report.arguments, "--input") == [
        f"/data/parts={TRANSFORM_PREFIX}files/data/parts#sha256={SHA},archive"
    ]


def test_an_upstream_record_naming_foreign_storage_fails_without_retry_or_request(tasks):
    _, report = pipeline(tasks)
    foreign = [
        recorded("/data/out.csv", "https://user2data.blob.core.windows.net/runs/x/files/data/out.csv"),
        recorded("/data/parts", f"{TRANSFORM_PREFIX}files/data/parts", kind="directory"),
    ]
    context = context_for(report, pushed_by_others={("transform", OUTPUTS_XCOM_KEY): foreign})
    with pytest.raises(AirflowFailException) as raised:
        report.bind_inputs(context)
    message = str(raised.value)
    assert (
        "policy: transform's recorded output '/data/out.csv' points outside the tenant's storage" in message
    )
    assert "no request was sent" in message and "user2data" in message


@pytest.mark.parametrize(
    ("pushed", "expected"),
    [
        (None, "transform recorded no outputs in this run"),
        ([recorded("/data/parts", f"{TRANSFORM_PREFIX}files/data/parts")], "without '/data/out.csv' among"),
        ([{**recorded("/data/out.csv", f"{TRANSFORM_PREFIX}x"), "sha256": "no"}],
         "expected one of file, directory, archive and 64 lowercase hex digits"),
    ],
)  # fmt: skip
def test_a_missing_or_malformed_upstream_record_fails_without_retry(tasks, pushed, expected):
    _, report = pipeline(tasks)
    context = context_for(report, pushed_by_others={("transform", OUTPUTS_XCOM_KEY): pushed})
    with pytest.raises(AirflowFailException, match=re.escape(expected)):
        report.bind_inputs(context)


# --- Run time: the producer pushes its recorded outputs ------------------------------------------


def succeeded(**fields: Any) -> Outcome:
    data = {"status": "succeeded", "return_value": {"ok": True}, "return_value_ref": None, **fields}
    return Outcome(Verdict.SUCCESS, "task succeeded", Record(data))


def test_the_record_outputs_are_pushed_under_the_declared_paths_without_a_query(tasks):
    transform = tasks.aks_python(
        "transform",
        SNAPSHOT,
        "t.py",
        outputs=[Output("/data/out.csv", asset=True), Output("x", optional=True)],
    )
    context = context_for(transform)
    events = OutletEventAccessors()
    context["outlet_events"] = events  # type: ignore[typeddict-unknown-key]
    # The agent may report the path as it saw it (here resolved); the blob says which one it is.
    entry = recorded("/workspace/data/out.csv", f"{TRANSFORM_PREFIX}files/data/out.csv?se=1&sig=SECRET")
    transform.conclude(succeeded(outputs=[entry]), context)
    pushed = context["ti"].xcom[OUTPUTS_XCOM_KEY]
    assert pushed == [recorded("/data/out.csv", f"{TRANSFORM_PREFIX}files/data/out.csv")]
    assert events[Asset(f"{RUNS}/pipeline/transform/data/out.csv")].extra == pushed[0]
    assert "SECRET" not in json.dumps(pushed)


def test_a_declared_output_missing_from_a_succeeded_record_fails_the_task(tasks):
    transform = tasks.aks_python("transform", SNAPSHOT, "t.py", outputs=["/data/out.csv"])
    context = context_for(transform)
    with pytest.raises(AirflowFailException, match=r"no entry for the declared output '/data/out\.csv'"):
        transform.conclude(succeeded(), context)
    assert OUTPUTS_XCOM_KEY not in context["ti"].xcom
    assert context["ti"].xcom[RECORD_XCOM_KEY]["status"] == "succeeded"


@pytest.fixture
def runs(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerClient]:
    """A fresh container standing for user1's run artifacts, read with Azurite's account key."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        client = service.create_container(f"runs-{uuid.uuid4().hex[:12]}")
        yield client
        client.delete_container()


def test_truncated_outputs_are_read_from_the_verified_manifest(runs):
    tasks = tasks_for(with_user1(load_policy(POLICY_FILE), artifacts=runs.url))
    names = [f"/data/part-{i:03}.csv" for i in range(60)]
    transform = tasks.aks_python("transform", SNAPSHOT, "t.py", outputs=names)
    entries = [recorded(name, f"{runs.url}/p/files{name}") for name in names]
    manifest = json.dumps({"outputs": entries}).encode()
    runs.upload_blob("p/_manifest.json", manifest)
    ref = {"uri": f"{runs.url}/p/_manifest.json", "sha256": hashlib.sha256(manifest).hexdigest(),
           "bytes": len(manifest)}  # fmt: skip
    context = context_for(transform)
    transform.conclude(succeeded(outputs_truncated=True, outputs_manifest=ref), context)
    assert context["ti"].xcom[OUTPUTS_XCOM_KEY] == entries

    tampered = {**ref, "sha256": OTHER_SHA}
    with pytest.raises(AirflowException, match=r"the outputs manifest at .* has sha256"):
        transform.conclude(
            succeeded(outputs_truncated=True, outputs_manifest=tampered), context_for(transform)
        )


# --- Run time: sftp_upload streams the upstream output and checks its sha256 ----------------------


@pytest.fixture
def partner(
    monkeypatch: pytest.MonkeyPatch, sshd_server: SshServer, ssh_keys: dict[str, SshKey]
) -> SshServer:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP", sftp_connection_json(sshd_server, ssh_keys["user"]))
    return sshd_server


def upload_of_transform_output(runs: ContainerClient, remote: Path) -> tuple[SftpUploadOperator, str]:
    tasks = tasks_for(with_user1(load_policy(POLICY_FILE), artifacts=runs.url))
    transform = tasks.aks_python("transform", SNAPSHOT, "t.py", outputs=["/data/out.csv"])
    upload = tasks.sftp_upload("upload", "/data/out.csv", str(remote), "sftp")
    transform >> upload
    tasks.dag.validate()
    return upload, f"{runs.url}/{RUN_ID}/transform/files/data/out.csv"


def test_sftp_upload_streams_the_upstream_output_and_checks_its_sha256(partner, runs, tmp_path):
    body = b"id,amount_cents\n1,1050\n"
    remote = tmp_path / "incoming" / "out.csv"
    upload, uri = upload_of_transform_output(runs, remote)
    runs.upload_blob(uri.removeprefix(runs.url + "/"), body)
    digest = hashlib.sha256(body).hexdigest()
    pushed = {("transform", OUTPUTS_XCOM_KEY): [recorded("/data/out.csv", uri, digest, size=len(body))]}
    result = upload.execute(context_for(upload, pushed_by_others=pushed))
    assert remote.read_bytes() == body
    assert result == {"remote_path": str(remote), "bytes": len(body), "sha256": digest, "source": uri}


def test_sftp_upload_of_a_changed_blob_fails_without_retry_and_publishes_nothing(partner, runs, tmp_path):
    remote = tmp_path / "incoming" / "out.csv"
    upload, uri = upload_of_transform_output(runs, remote)
    runs.upload_blob(uri.removeprefix(runs.url + "/"), b"changed after the producer recorded it\n")
    pushed = {("transform", OUTPUTS_XCOM_KEY): [recorded("/data/out.csv", uri, SHA)]}
    with pytest.raises(AirflowFailException) as raised:
        upload.execute(context_for(upload, pushed_by_others=pushed))
    assert f"its producer recorded {SHA}" in str(raised.value)
    assert "nothing was published" in str(raised.value)
    assert not remote.exists()
    assert list(remote.parent.iterdir()) == []  # the partial file was removed too


def test_sftp_upload_of_a_foreign_recorded_blob_fails_before_any_request(runs, tmp_path):
    upload, _ = upload_of_transform_output(runs, tmp_path / "out.csv")
    foreign = "https://user2data.blob.core.windows.net/runs/x/files/data/out.csv"
    pushed = {("transform", OUTPUTS_XCOM_KEY): [recorded("/data/out.csv", foreign)]}
    # No connection is defined: reaching the partner would fail differently.
    with pytest.raises(
        AirflowFailException, match="points outside the tenant's storage, so no request was sent"
    ):
        upload.execute(context_for(upload, pushed_by_others=pushed))


# The local store (file://): only a policy that says `platform.local_store: true` (the one
# `data-platform run-local` writes) may list it; every other check keeps refusing it.
def test_file_prefixes_only_in_a_local_store_policy(tmp_path: Path):
    import yaml

    from data_platform.agent_command import check_storage
    from data_platform.operator import download_verified
    from data_platform.policy import parse_policy
    from data_platform.sources import LocalSource, parse_source, recorded_source
    from data_platform.storage import storage_violation

    store = tmp_path.resolve().as_uri()
    document = yaml.safe_load(POLICY_FILE.read_text())
    document["tenants"]["user1"]["storage"] = [f"{store}/user1"]
    document["tenants"]["user1"]["artifacts"] = f"{store}/user1/runs"
    with pytest.raises(PolicyError, match="file://"):
        parse_policy(document, "deployment")
    deployed = yaml.safe_load(POLICY_FILE.read_text())
    tenant = parse_policy(deployed, "deployment").tenants["user1"]
    with pytest.raises(PolicyError, match="not a blob URL"):
        check_storage(f"{store}/user1/code.tar.gz", tenant, field="snapshot")
    document["platform"]["local_store"] = True
    tenant = parse_policy(document, "local").tenants["user1"]
    check_storage(f"{store}/user1/code.tar.gz", tenant, field="snapshot")
    with pytest.raises(PolicyError, match="not in tenant"):
        check_storage(f"{store}/user1-b/code.tar.gz", tenant, field="snapshot")
    # Whole segments, no dot segments.
    assert storage_violation(f"{store}/user1/runs/x", tenant.owned_storage) is None
    assert storage_violation(f"{store}/user1x/runs/x", tenant.owned_storage) is not None
    assert storage_violation(f"{store}/user1/../user2/x", tenant.owned_storage) is not None
    # A file:// source or recorded output is a local file; the manifest and return value are read from disk.
    written = tmp_path / "user1" / "runs" / "value.json"
    written.parent.mkdir(parents=True)
    written.write_text('{"rows": 3}')
    uri = written.as_uri()
    assert parse_source(uri, tenant.owned_storage) == LocalSource(written)
    assert recorded_source(uri) == LocalSource(written)
    with pytest.raises(AirflowFailException, match="unsupported scheme"):
        parse_source(uri, deployed["tenants"]["user1"]["storage"])
    digest = hashlib.sha256(written.read_bytes()).hexdigest()
    assert json.loads(download_verified({"uri": uri, "sha256": digest}, "the return value")) == {"rows": 3}
    with pytest.raises(AirflowException, match="changed after"):
        download_verified({"uri": uri, "sha256": "0" * 64}, "the return value")
