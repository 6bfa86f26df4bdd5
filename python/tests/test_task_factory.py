"""PlatformTaskFactory: what a DAG author writes, what the platform fills in, and what it refuses."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator

from conftest import POLICY_FILE
from data_platform import CustomerDAGFactory, PlatformPodOperator, PlatformTaskFactory, PolicyError, Snapshot
from data_platform.deadlines import REPORT_MARGIN
from data_platform.policy import load_policy
from data_platform.sftp_upload import SftpUploadOperator
from data_platform.task_factory import DOWNWARD_API_ENV, POD_TEMPLATE_VAR
from data_platform.units import parse_duration
from rendering import RUN_ID, context_for

SNAPSHOT = "https://user1data.blob.core.windows.net/snapshots/user1_pipeline/2026-11-26.tar.gz"
USER2_SNAPSHOT = "https://user2data.blob.core.windows.net/snapshots/job.tar.gz"
SHA = "0123456789abcdef" * 4
PYTHON_IMAGE = "ghcr.io/data-platform/python-runtime:3.12-1"
ML_IMAGE = "ghcr.io/data-platform/python-ml-runtime:3.12-1"


def tasks_for(tenant: str = "user1", dag_id: str = "pipeline", **dag_kwargs) -> PlatformTaskFactory:
    dag = CustomerDAGFactory.create(dag_id, tenant, "@daily", policy=load_policy(POLICY_FILE), **dag_kwargs)
    return PlatformTaskFactory(dag)


@pytest.fixture
def tasks() -> PlatformTaskFactory:
    return tasks_for()


def value_after(arguments: list[str], flag: str) -> str:
    return arguments[arguments.index(flag) + 1]


def test_a_pod_task_runs_in_the_tenants_namespace_with_its_identity_image_and_size(tasks):
    op = tasks.aks_python("transform", SNAPSHOT, "transform.py")
    assert isinstance(op, PlatformPodOperator)
    assert op.dag is tasks.dag
    assert op.namespace == "tenant-user1"
    assert op.service_account_name == "user1-tasks"
    assert op.image == PYTHON_IMAGE
    assert op.cmds == ["/usr/local/bin/task-agent"]
    assert op.container_resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert op.container_resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert op.labels == {
        "data-platform.io/tenant": "user1",
        "data-platform.io/size": "small",
        "azure.workload.identity/use": "true",
    }
    assert op.do_xcom_push is False
    assert op.termination_message_policy == "FallbackToLogsOnError"
    assert op.get_logs is True
    assert op.skip_exit_codes == (99,)
    assert op.oom_memory_factor == 1.5
    assert op.max_memory == "4Gi"
    assert op.pod_template_file is None
    assert op.retries == 2


def test_the_pod_gets_the_downward_api_variables_the_agent_puts_on_its_telemetry(tasks):
    op = tasks.aks_python("transform", SNAPSHOT, "transform.py", env={"MODE": "full"})
    by_name = {e.name: e for e in op.env_vars}
    assert by_name["MODE"].value == "full"
    assert DOWNWARD_API_ENV == {
        "K8S_POD_NAME": "metadata.name",
        "K8S_NAMESPACE_NAME": "metadata.namespace",
        "K8S_NODE_NAME": "spec.nodeName",
    }
    for name, path in DOWNWARD_API_ENV.items():
        assert by_name[name].value is None
        assert by_name[name].value_from.field_ref.field_path == path


def test_the_agent_command_line_carries_every_platform_decision(tasks):
    op = tasks.aks_python(
        "transform",
        Snapshot(SNAPSHOT, SHA),
        "transform.py",
        args=["--date", "{{ ds }}", 3],
        secrets={"DB_PASSWORD": "user1-kv/db-password"},
        secret_files={"certs/client.pem": "https://user1-kv.vault.azure.net/secrets/client-cert/0a1b2c"},
    )
    assert op.arguments == [
        "run",
        "--snapshot", SNAPSHOT,
        "--snapshot-sha256", SHA,
        "--tenant", "user1",
        "--dag-id", "pipeline",
        "--task-id", "transform",
        "--run-id", "{{ run_id }}",
        "--try-number", "{{ ti.try_number }}",
        "--map-index", "{{ ti.map_index }}",
        "--timeout", "6800s",
        "--grace", "30s",
        "--secret", "DB_PASSWORD=user1-kv/db-password",
        "--secret-file", "certs/client.pem=https://user1-kv.vault.azure.net/secrets/client-cert/0a1b2c",
        "--allowed-vaults", "user1-kv",
        "--",
        "python", "transform.py", "--date", "{{ ds }}", "3",
    ]  # fmt: skip


def test_without_secrets_no_vault_flags_are_passed(tasks):
    op = tasks.aks_python("validate", SNAPSHOT, "validate.py")
    for flag in ("--secret", "--secret-file", "--allowed-vaults", "--snapshot-sha256"):
        assert flag not in op.arguments
    assert op.arguments[-3:] == ["--", "python", "validate.py"]


def test_the_sha256_argument_pins_a_snapshot_given_as_text_or_object(tasks):
    op = tasks.aks_python("a", SNAPSHOT, "a.py", sha256=SHA)
    assert value_after(op.arguments, "--snapshot-sha256") == SHA
    op = tasks.aks_python("b", Snapshot(SNAPSHOT, "f" * 64), "b.py", sha256=SHA)
    assert value_after(op.arguments, "--snapshot-sha256") == SHA


@pytest.mark.parametrize("timeout", [None, "10m", "30m", "1h30m", "2h"])
def test_the_clocks_nest_for_the_tasks_timeout(tasks, timeout):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", timeout=timeout)
    execution_timeout = timedelta(hours=2) if timeout is None else parse_duration(timeout, "timeout")
    agent_timeout = parse_duration(value_after(op.arguments, "--timeout"), "--timeout")
    agent_grace = parse_duration(value_after(op.arguments, "--grace"), "--grace")
    assert op.execution_timeout == execution_timeout
    assert agent_timeout + agent_grace + REPORT_MARGIN < timedelta(seconds=op.active_deadline_seconds)
    assert timedelta(seconds=op.active_deadline_seconds) < op.execution_timeout
    assert op.termination_grace_period > agent_grace.total_seconds()


def test_a_dags_shorter_execution_timeout_is_every_tasks_budget():
    tasks = tasks_for(execution_timeout="20m")
    op = tasks.aks_python("t", SNAPSHOT, "t.py")
    assert op.execution_timeout == timedelta(minutes=20)
    assert op.active_deadline_seconds < 20 * 60


@pytest.mark.parametrize(
    ("size", "cpu", "memory", "maximum"),
    [("small", "1", "1Gi", "4Gi"), ("medium", "2", "4Gi", "16Gi"), ("large", "8", "32Gi", "64Gi")],
)
def test_each_size_class_sets_requests_limits_and_the_oom_maximum(size, cpu, memory, maximum):
    policy = load_policy(POLICY_FILE)
    spec = policy.size_classes[size]
    op = tasks_for("user2").aks_python("t", USER2_SNAPSHOT, "t.py", size=size)
    assert op.container_resources.requests == {"cpu": spec.cpu_request, "memory": spec.memory_request}
    assert op.container_resources.limits == {"cpu": cpu, "memory": memory}
    assert op.max_memory == maximum
    assert op.labels["data-platform.io/size"] == size
    assert op.namespace == "tenant-user2"
    assert op.service_account_name == "user2-tasks"


def test_an_approved_image_by_name_or_reference(tasks):
    user2 = tasks_for("user2")
    assert user2.aks_python("a", USER2_SNAPSHOT, "a.py", image="python-ml").image == ML_IMAGE
    assert user2.aks_python("b", USER2_SNAPSHOT, "b.py", image=ML_IMAGE).image == ML_IMAGE
    assert tasks.aks_python("c", SNAPSHOT, "c.py", image=PYTHON_IMAGE).image == PYTHON_IMAGE


def test_the_chart_pod_template_is_used_when_mounted(tasks, monkeypatch, tmp_path):
    template = tmp_path / "pod-template.yaml"
    monkeypatch.setenv(POD_TEMPLATE_VAR, str(template))
    assert tasks.aks_python("t", SNAPSHOT, "t.py").pod_template_file == str(template)


# --- What the factory refuses, and how it says so -------------------------------------------------


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(PolicyError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    ("snapshot", "says"),
    [
        ("https://user2data.blob.core.windows.net/snapshots/a.tar.gz", "is not in tenant 'user1''s storage"),
        ("https://user1data.blob.core.windows.net/private/a.tar.gz", "is not in tenant 'user1''s storage"),
        (
            "https://user1data.blob.core.windows.net/snapshots-old/a.tar.gz",
            "is not in tenant 'user1''s storage",
        ),
        ("https://user1data.blob.core.windows.net.evil.example/snapshots/a.tar.gz", "is not in tenant"),
        ("https://user1data.blob.core.windows.net/snapshots/../private/a.tar.gz", "'.' or '..' path segment"),
        (
            "https://user1data.blob.core.windows.net/snapshots/%2e%2e/private/a.tar.gz",
            "'.' or '..' path segment",
        ),
        (
            "https://user1data.blob.core.windows.net/snapshots/%2E%2E/private/a.tar.gz",
            "'.' or '..' path segment",
        ),
        (
            "https://user1data.blob.core.windows.net/snapshots/..\\private/a.tar.gz",
            "'.' or '..' path segment",
        ),
        ("https://user1data.blob.core.windows.net/snapshots/./a.tar.gz", "'.' or '..' path segment"),
        ("s3://user1data/snapshots/a.tar.gz", "is not a blob URL"),
        ("/local/a.tar.gz", "is not a blob URL"),
    ],
)
def test_a_snapshot_outside_the_tenants_storage_is_refused(tasks, snapshot, says):
    message = refused(tasks.aks_python, "t", snapshot, "t.py")
    assert message.startswith("pipeline.t: snapshot: ")
    assert says in message
    if "storage" in says:
        assert "(allowed: https://user1data.blob.core.windows.net/snapshots, " in message
        assert "ask the platform team" in message


def test_a_refused_snapshot_never_shows_its_sas_signature(tasks):
    message = refused(
        tasks.aks_python,
        "t",
        "https://user2data.blob.core.windows.net/snapshots/a.tar.gz?sv=2024&sig=SECRET",
        "t.py",
    )
    assert "SECRET" not in message
    assert "sig=" not in message


def test_a_snapshot_with_a_sas_in_the_tenants_storage_is_accepted(tasks):
    op = tasks.aks_python("t", SNAPSHOT + "?sv=2024&sig=abc", "t.py")
    assert value_after(op.arguments, "--snapshot") == SNAPSHOT + "?sv=2024&sig=abc"


@pytest.mark.parametrize("sha", ["abc", "A" * 64, "g" * 64, "0" * 63, ""])
def test_a_malformed_sha256_is_refused_with_where_to_get_it(tasks, sha):
    message = refused(tasks.aks_python, "t", Snapshot(SNAPSHOT, sha), "t.py")
    assert f"pipeline.t: snapshot: sha256 {sha!r} is not 64 lowercase hex digits" in message
    assert "task-agent pack" in message


@pytest.mark.parametrize(
    "reference",
    [
        "user2-kv/db",
        "shared-kv/db",
        "https://user2-kv.vault.azure.net/secrets/db",
        "https://user2-kv.vault.azure.net/secrets/db/0a1b",
    ],
)
def test_a_vault_the_tenant_may_not_read_is_refused_naming_the_allowed_ones(tasks, reference):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", secrets={"DB": reference})
    assert message.startswith("pipeline.t: secrets[DB]: vault ")
    assert "is not allowed for tenant 'user1' (allowed: user1-kv)" in message
    assert "ask the platform team" in message


def test_a_secret_file_from_a_forbidden_vault_names_its_path(tasks):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", secret_files={"a/b.pem": "user2-kv/cert"})
    assert "secret_files[a/b.pem]: vault 'user2-kv' is not allowed" in message


@pytest.mark.parametrize(
    "reference",
    [
        "env:DB_PASSWORD",  # would read the pod's own environment, not Key Vault
        "file:/etc/passwd",
        "user1-kv",
        "user1-kv/a/b/c",
        "user1-kv/db_password",  # Key Vault names are letters, digits and dashes
        "ab/db",  # vault names are 3-24 characters
        "user1-kv/db/version-1",  # versions are letters and digits
        "https://user1-kv.attacker.example/secrets/db",  # not a Key Vault host
        "https://user1-kv.vault.azure.net@attacker.example/secrets/db",
        "https://user1-kv.vault.azure.net/keys/db",
        "https://user1-kv.vault.azure.net/secrets/db/v1/extra",
        "http://user1-kv.vault.azure.net/secrets/db",
    ],
)
def test_a_reference_that_is_not_a_key_vault_secret_is_refused(tasks, reference):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", secrets={"DB": reference})
    assert f"pipeline.t: secrets[DB]: {reference!r} is not a Key Vault secret" in message
    assert "expected VAULT/NAME[/VERSION]" in message


@pytest.mark.parametrize(
    "reference",
    [
        "user1-kv/db",
        "USER1-KV/db",
        "user1-kv/db-password/0a1b2c",
        "https://user1-kv.vault.azure.net/secrets/db",
        "https://USER1-KV.vault.azure.net/secrets/db/0a1b2c",
    ],
)
def test_the_tenants_vault_in_any_accepted_form(tasks, reference):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", secrets={"DB": reference})
    assert value_after(op.arguments, "--secret") == f"DB={reference}"


@pytest.mark.parametrize("name", ["1DB", "DB-PASSWORD", "DB PASSWORD", "", "DB=X"])
def test_a_secret_name_that_is_not_a_variable_name_is_refused(tasks, name):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", secrets={name: "user1-kv/db"})
    assert f"pipeline.t: secrets: {name!r} is not a valid environment variable name" in message


@pytest.mark.parametrize("path", ["/etc/cert.pem", "../cert.pem", "certs/../../cert.pem", ""])
def test_a_secret_file_outside_the_secrets_directory_is_refused(tasks, path):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", secret_files={path: "user1-kv/cert"})
    assert f"pipeline.t: secret_files: {path!r} must be a relative path without `..`" in message


def test_a_size_class_the_tenant_may_not_use_is_refused(tasks):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", size="large")
    assert message == (
        "pipeline.t: size 'large' is not allowed for tenant 'user1' (allowed: small, medium); "
        "pick a smaller class or ask the platform team"
    )
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", size="xl")
    assert "size 'xl' is not a size class (known: small, medium, large)" in message


def test_an_unapproved_image_is_refused(tasks):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", image="docker.io/library/python:3.12")
    assert "image 'docker.io/library/python:3.12' is not an approved runtime image" in message
    assert "(approved: python, python-ml)" in message
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", image="python-ml")
    assert "image 'python-ml' is not approved for tenant 'user1' (approved: python)" in message


def test_a_timeout_above_the_dags_is_refused_naming_the_limit(tasks):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", timeout="3h")
    assert message.startswith("pipeline.t: timeout=3h is above the DAG's execution_timeout (7200s)")
    assert "raise the DAG's execution_timeout" in message


def test_a_too_short_timeout_names_the_minimum(tasks):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", timeout="1m")
    assert message.startswith("pipeline.t: timeout 1m is too short")
    assert message.endswith("give at least 190s")


@pytest.mark.parametrize("timeout", ["0s", "soon"])
def test_a_timeout_that_is_not_a_positive_duration_is_refused(tasks, timeout):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", timeout=timeout)
    assert message.startswith("pipeline.t: timeout")
    assert "above" not in message


@pytest.mark.parametrize(
    "name",
    ["TASK_AGENT_TIMEOUT", "TASK_AGENT_ALLOWED_VAULTS", "TRACEPARENT", "TRACESTATE", "OTEL_SERVICE_NAME",
     "AZURE_CLIENT_ID", "K8S_POD_NAME"],
)  # fmt: skip
def test_variables_the_platform_owns_cannot_be_set(tasks, name):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", env={name: "x"})
    assert f"pipeline.t: env {name!r} is set by the platform" in message


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", ""])
def test_an_invalid_variable_name_is_refused(tasks, name):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", env={name: "x"})
    assert f"pipeline.t: env name {name!r} is not a valid variable name" in message


def test_names_that_only_resemble_platform_variables_are_allowed(tasks):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", env={"MY_TASK_AGENT": "1", "TRACEPARENT_COPY": "2"})
    assert {e.name for e in op.env_vars} >= {"MY_TASK_AGENT", "TRACEPARENT_COPY"}


@pytest.mark.parametrize("script", ["", "-c", "--version"])
def test_the_script_must_name_a_file(tasks, script):
    message = refused(tasks.aks_python, "t", SNAPSHOT, script)
    assert f"pipeline.t: script {script!r} must name a Python file in the snapshot" in message


# --- Extra operator arguments may tighten, never loosen ---------------------------------------------


def test_a_task_may_ask_for_fewer_retries_and_a_shorter_delay(tasks):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", retries=0, retry_delay="30s")
    assert op.retries == 0
    assert op.retry_delay == timedelta(seconds=30)


@pytest.mark.parametrize("builder", ["aks_python", "python", "dummy", "sftp_upload"])
def test_a_task_cannot_raise_its_retries_above_the_limit(builder):
    tasks = tasks_for("user2")
    arguments = {
        "aks_python": ("t", USER2_SNAPSHOT, "t.py"),
        "python": ("t", print),
        "dummy": ("t",),
        "sftp_upload": ("t", "/data/out.csv", "/incoming/out.csv", "sftp"),
    }[builder]
    message = refused(getattr(tasks, builder), *arguments, retries=4)
    assert message.startswith("pipeline.t: retries=4 is above the platform's limit for tenant 'user2'")
    assert "(at most 3)" in message


def test_a_task_cannot_lengthen_its_retry_delay_beyond_the_limit(tasks):
    message = refused(tasks.python, "t", print, max_retry_delay="2h")
    assert (
        message == "pipeline.t: max_retry_delay=2h is above the platform's limit (30m); ask for 30m or less"
    )


@pytest.mark.parametrize(
    "argument",
    ["full_pod_spec", "pod_template_dict", "init_containers", "hostnetwork", "security_context",
     "container_security_context", "namespace", "service_account_name", "cmds", "labels",
     "execution_timeout", "active_deadline_seconds", "default_args"],
)  # fmt: skip
def test_pod_arguments_the_platform_sets_are_refused(tasks, argument):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", **{argument: None})
    assert message.startswith(f"pipeline.t: {argument} is set by the platform")


def test_harmless_pod_arguments_pass_through(tasks):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", startup_timeout_seconds=600, image_pull_policy="Always")
    assert op.startup_timeout_seconds == 600
    assert op.image_pull_policy == "Always"


def test_a_quick_task_may_have_a_shorter_execution_timeout_but_not_a_longer_one(tasks):
    assert tasks.dummy("d", execution_timeout="5m").execution_timeout == timedelta(minutes=5)
    message = refused(tasks.dummy, "e", execution_timeout="5h")
    assert message.startswith("pipeline.e: execution_timeout=5h is above the DAG's execution_timeout (7200s)")


# --- The other task types -------------------------------------------------------------------------


def test_python_runs_a_callable_on_the_worker_within_the_budget(tasks):
    def add(a, b):
        return a + b

    op = tasks.python("add", add, op_args=[1], op_kwargs={"b": 2}, timeout="10m")
    assert isinstance(op, PythonOperator)
    assert op.python_callable is add
    assert op.op_args == [1] and op.op_kwargs == {"b": 2}
    assert op.execution_timeout == timedelta(minutes=10)
    assert op.retries == 2
    assert tasks.python("default", add).execution_timeout == timedelta(hours=2)
    message = refused(tasks.python, "long", add, timeout="5h")
    assert message.startswith("pipeline.long: timeout=5h is above the DAG's execution_timeout (7200s)")


def test_dummy_is_an_empty_operator(tasks):
    op = tasks.dummy("start")
    assert isinstance(op, EmptyOperator)
    assert op.dag is tasks.dag and op.task_id == "start"


def test_sftp_upload_may_read_only_the_tenants_storage(tasks):
    op = tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "partner_sftp")
    assert isinstance(op, SftpUploadOperator)
    assert op.source == "/data/out.csv"
    assert op.remote_path == "/incoming/out.csv"
    assert op.sftp_conn_id == "partner_sftp"
    assert op.allowed_storage == (
        "https://user1data.blob.core.windows.net/snapshots",
        "https://user1data.blob.core.windows.net/exports",
        # Its run artifacts: where upstream tasks' outputs are.
        "https://user1data.blob.core.windows.net/runs",
    )
    assert op.execution_timeout == timedelta(hours=2)
    assert refused(tasks.sftp_upload, "u", "/a", "/b", "c", allowed_storage=["https://x"]).startswith(
        "pipeline.u: allowed_storage is set by the platform"
    )


# --- Both halves agree on the command line ----------------------------------------------------------


def test_the_agent_accepts_every_flag_the_factory_emits(agent_binary, tmp_path):
    """The rendered argv, with only the snapshot swapped for a local path that does not exist, gets
    past the agent's argument parser (exit 64 would mean a flag or value it does not know) and fails
    on the snapshot (exit 66)."""
    tasks = tasks_for("user2", dag_id="user2_pipeline")
    op = tasks.aks_python(
        "train",
        Snapshot(USER2_SNAPSHOT, SHA),
        "train.py",
        args=["--date", "{{ ds }}", "--epochs", "3"],
        secrets={
            "DB_PASSWORD": "user2-kv/db-password",
            "API_TOKEN": "https://shared-kv.vault.azure.net/secrets/api/0a1b",
        },
        secret_files={"certs/client.pem": "user2-kv/client-cert"},
        size="medium",
        timeout="45m",
        env={"MODE": "full"},
        image="python-ml",
    )
    op.render_template_fields(context_for(op, try_number=3, map_index=-1))
    arguments = list(op.arguments)
    assert not any("{{" in argument for argument in arguments), arguments
    assert arguments[0] == "run"
    missing = tmp_path / "missing.tar.gz"
    arguments[arguments.index("--snapshot") + 1] = str(missing)
    record_file = tmp_path / "record.json"
    process = subprocess.run(
        [str(agent_binary), *arguments],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "TASK_AGENT_WORKDIR": str(tmp_path / "work"),
            "TASK_AGENT_RESULT_FILE": str(record_file),
            "TASK_AGENT_RETURN_FILE": str(tmp_path / "return.json"),
            "TASK_AGENT_SECRETS_DIR": str(tmp_path / "secrets"),
            "TASK_AGENT_POLICY_FILE": str(POLICY_FILE),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 64, f"the agent refused the factory's command line:\n{process.stderr}"
    assert process.returncode == 66, process.stderr
    record = json.loads(record_file.read_text())
    assert record["status"] == "agent_error"
    assert record["error"]["kind"] == "snapshot_not_found"
    assert str(missing) in record["error"]["message"]
    # The identity flags reached the agent with their rendered values.
    assert record["task"] == {
        "tenant": "user2",
        "dag_id": "user2_pipeline",
        "task_id": "train",
        "run_id": RUN_ID,
        "try_number": 3,
        "map_index": -1,
    }


def test_the_agent_reads_the_rendered_timeout_and_grace_as_the_factory_wrote_them(agent_binary, tmp_path):
    """The agent's own --timeout ends a command that outlives it: proof the value is read in seconds."""
    tasks = tasks_for()
    op = tasks.aks_python("t", SNAPSHOT, "t.py", timeout="4m")
    op.render_template_fields(context_for(op))
    timeout = value_after(op.arguments, "--timeout")
    grace = value_after(op.arguments, "--grace")
    assert timeout.endswith("s") and grace == "30s"
    # Same flags, a command of our own, no snapshot: the agent runs `true` and succeeds.
    identity = op.arguments[op.arguments.index("--tenant") : op.arguments.index("--")]
    record_file = tmp_path / "record.json"
    process = subprocess.run(
        [str(agent_binary), "run", "--workdir", str(tmp_path / "w"), "--result-file", str(record_file),
         "--return-file", str(tmp_path / "r.json"), *identity, "--", "true"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    record = json.loads(record_file.read_text())
    assert record["status"] == "succeeded"
    assert record["task"]["run_id"] == RUN_ID


def test_a_mapped_tasks_index_is_rendered(tasks):
    op = tasks.aks_python("t", SNAPSHOT, "t.py")
    op.render_template_fields(context_for(op, try_number=1, map_index=4))
    assert value_after(op.arguments, "--map-index") == "4"
    assert value_after(op.arguments, "--run-id") == RUN_ID


@pytest.mark.parametrize(
    "argument",
    ["volumes", "volume_mounts", "node_selector", "tolerations", "affinity", "image_pull_secrets",
     "host_aliases", "automount_service_account_token", "env_from", "priority_class_name"],
)  # fmt: skip
def test_pod_settings_of_the_platform_are_refused(tasks, argument):
    message = refused(tasks.aks_python, "t", SNAPSHOT, "t.py", **{argument: None})
    assert message.startswith(f"pipeline.t: {argument} cannot be set by a task")
    assert "pod template" in message and "startup_timeout_seconds" in message


def test_airflow_operator_arguments_pass_through(tasks):
    op = tasks.aks_python("t", SNAPSHOT, "t.py", trigger_rule="all_done", pool_slots=2, doc_md="# t")
    assert (op.trigger_rule, op.pool_slots, op.doc_md) == ("all_done", 2, "# t")
