"""The platform policy file: parsing, every error naming file and field, and agreement with task-agent."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import POLICY_FILE, REPO
from data_platform.agent_command import check_secrets
from data_platform.policy import (
    EXAMPLE_POLICY_FILE,
    POLICY_FILE_VAR,
    PlatformPolicy,
    PolicyError,
    load_policy,
    parse_policy,
)

DELETE = object()


def example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
    return document


def changed(path: str, value: Any) -> dict[str, Any]:
    """The example policy with one field (dotted path) set to `value`, or removed."""
    document = copy.deepcopy(example())
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return document


def write(tmp_path: Path, document: Any, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_the_example_policy_parses_with_every_field_as_written():
    policy = load_policy(POLICY_FILE)
    assert policy.owner == "data-platform"
    assert policy.tags == ("data-platform",)
    assert (policy.retries, policy.max_retries) == (2, 5)
    assert policy.retry_delay == timedelta(minutes=2)
    assert policy.retry_exponential_backoff == 2.0
    assert policy.max_retry_delay == timedelta(minutes=30)
    assert policy.execution_timeout == timedelta(hours=2)
    assert policy.max_execution_timeout == timedelta(hours=12)
    assert policy.run_deadline == timedelta(hours=6)
    assert policy.max_run_deadline == timedelta(hours=24)
    assert policy.skip_exit_code == 99
    assert policy.oom_memory_factor == 1.5
    assert policy.agent_grace == timedelta(seconds=30)
    assert policy.agent_path == "/usr/local/bin/task-agent"
    assert policy.default_image == "python"
    assert set(policy.images) == {"python", "python-ml"}
    assert list(policy.size_classes) == ["small", "medium", "large"]
    small = policy.size_classes["small"]
    assert (small.cpu_request, small.cpu_limit, small.memory_request) == ("250m", "1", "512Mi")
    assert (small.memory_limit_bytes, small.max_memory_bytes) == (2**30, 4 * 2**30)
    user1, user2 = policy.tenant("user1"), policy.tenant("user2")
    assert user1.namespace == "tenant-user1"
    assert user1.service_account == "user1-tasks"
    assert user1.allowed_vaults == ("user1-kv",)
    assert user1.storage == (
        "https://user1data.blob.core.windows.net/snapshots",
        "https://user1data.blob.core.windows.net/exports",
    )
    assert user1.size_classes == ("small", "medium")
    assert user1.images == ("python",)
    assert user1.max_retries is None
    assert policy.max_retries_for(user1) == 5
    assert user2.allowed_vaults == ("user2-kv", "shared-kv")
    assert policy.max_retries_for(user2) == 3
    assert policy.origin == str(POLICY_FILE)


def test_the_package_ships_the_repository_policy_and_schema():
    # The package's copies are the repository's files, so Airflow and the agent read the same ones.
    assert EXAMPLE_POLICY_FILE.read_bytes() == POLICY_FILE.read_bytes()
    package = EXAMPLE_POLICY_FILE.parent
    assert (package / "task-result.schema.json").read_bytes() == (
        REPO / "schema" / "task-result.schema.json"
    ).read_bytes()


def test_an_empty_tenant_gets_the_documented_defaults_and_no_vault_or_storage():
    policy = parse_policy(changed("tenants.user3", None), "p.yaml")
    user3 = policy.tenant("user3")
    assert (user3.namespace, user3.service_account) == ("tenant-user3", "user3-tasks")
    assert user3.allowed_vaults == () and user3.storage == ()
    assert user3.size_classes == ("small", "medium", "large")
    assert set(user3.images) == {"python", "python-ml"}


# (field, bad value, what the message must say besides the file and the field)
MALFORMED = [
    ("platform.retries", "two", "expected a whole number, 0 or more, got 'two'"),
    ("platform.retries", -1, "expected a whole number, 0 or more, got -1"),
    ("platform.retries", True, "expected a whole number, 0 or more, got True"),
    ("platform.max_retries", 2.5, "expected a whole number"),
    ("platform.retry_delay", "soon", "expected a duration like 90s, 30m or 2h, got 'soon'"),
    ("platform.execution_timeout", [2], "expected a duration like 90s, 30m or 2h"),
    ("platform.agent_grace", "30 seconds", "expected a duration"),
    ("platform.retry_exponential_backoff", 0.5, "expected a number, 1 or more, got 0.5"),
    ("platform.oom_memory_factor", "1.5", "expected a number, 1 or more, got '1.5'"),
    ("platform.skip_exit_code", 300, "expected an exit code from 1 to 255, got 300"),
    ("platform.skip_exit_code", 0, "expected an exit code from 1 to 255, got 0"),
    ("platform.owner", "", "expected a non-empty string"),
    ("platform.tags", "data-platform", "expected a list of strings, got 'data-platform'"),
    ("platform.tags", ["ok", None], "platform.tags[1]: expected a non-empty string, got None"),
    ("platform.images", ["python"], "expected a mapping, got ['python']"),
    ("platform.images.python", "", "expected a non-empty string, got ''"),
    ("platform", "strict", "expected a mapping, got 'strict'"),
    ("platform.max_retry", 3, "unknown field 'max_retry'"),
    ("size_classes", ["small"], "expected a mapping"),
    ("size_classes.small.memory_limit", "lots", "expected a Kubernetes quantity like 512Mi, 2Gi or 250m"),
    ("size_classes.small.cpu_limit", DELETE, "expected a non-empty string, got None"),
    ("size_classes.small.cpu_request", "2", "cpu_request is above cpu_limit"),
    ("size_classes.small.memory_request", "2Gi", "memory_request is above memory_limit"),
    ("size_classes.small.max_memory", "512Mi", "memory_limit is above max_memory"),
    ("size_classes.small.memory", "1Gi", "unknown field 'memory'"),
    ("tenants", ["user1"], "expected a mapping"),
    ("tenants.user1.size_classes", ["small", "huge"], "names 'huge', which is not a size class"),
    ("tenants.user1.images", ["python", "java"], "names 'java', which is not in platform.images"),
    ("tenants.user1.allowed_vaults", "user1-kv", "expected a list of strings, got 'user1-kv'"),
    ("tenants.user1.storage", [{"url": "x"}], "tenants.user1.storage[0]: expected a non-empty string"),
    ("tenants.user2.max_retries", -1, "expected a whole number, 0 or more, got -1"),
    ("tenants.user2.max_retries", "3", "expected a whole number, 0 or more, got '3'"),
    ("tenants.user1.max_retry", 9, "unknown field 'max_retry'"),
    ("tenants.user1.namespace", 7.5, "expected a non-empty string, got 7.5"),
    ("platform.retries", 6, "platform.retries is above platform.max_retries"),
    (
        "platform.execution_timeout",
        "13h",
        "platform.execution_timeout is above platform.max_execution_timeout",
    ),
    ("platform.run_deadline", "2d", "platform.run_deadline is above platform.max_run_deadline"),
    ("platform.retry_delay", "1h", "platform.retry_delay is above platform.max_retry_delay"),
    ("platform.default_image", "java", "platform.default_image is not in platform.images"),
]


@pytest.mark.parametrize(("field", "value", "says"), MALFORMED, ids=[f"{f}={v!r}" for f, v, _ in MALFORMED])
def test_a_malformed_field_is_an_error_naming_the_file_and_the_field(tmp_path, field, value, says):
    path = write(tmp_path, changed(field, value))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    # The field is named by its dotted path, or (a check across fields) its section and its name.
    parent, _, name = field.rpartition(".")
    assert (
        f"{field}:" in message
        or f"{field}[" in message
        or (f"{parent}:" in message and name in message)
        or (f"{field} " in message)
    ), message
    assert says in message, message


def test_a_policy_that_is_not_a_mapping_says_so(tmp_path):
    path = write(tmp_path, ["platform"])
    with pytest.raises(PolicyError, match=re.escape(f"{path}: the document: expected a mapping")):
        load_policy(path)


def test_a_policy_that_is_not_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("platform: [unclosed\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=re.escape(f"cannot read the platform policy {path}: ")):
        load_policy(path)


def test_a_missing_policy_file_names_it_and_the_variable_to_set(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    message = str(caught.value)
    assert str(missing) in message
    assert "No such file or directory" in message
    assert f"set {POLICY_FILE_VAR}" in message


def test_an_unknown_tenant_names_the_registered_ones_and_the_fix():
    policy = load_policy(POLICY_FILE)
    with pytest.raises(PolicyError) as caught:
        policy.tenant("user9")
    message = str(caught.value)
    assert "tenant 'user9' is not registered" in message
    assert "(registered: user1, user2)" in message
    assert str(POLICY_FILE) in message
    assert "ask the platform team" in message


def test_size_class_and_image_lookups_name_what_is_allowed():
    policy = load_policy(POLICY_FILE)
    user1 = policy.tenant("user1")
    assert policy.size_class(user1, "medium").memory_limit == "4Gi"
    with pytest.raises(
        PolicyError, match=r"size 'large' is not allowed for tenant 'user1' \(allowed: small, medium\)"
    ):
        policy.size_class(user1, "large")
    with pytest.raises(PolicyError, match=r"size 'huge' is not a size class \(known: small, medium, large\)"):
        policy.size_class(user1, "huge")
    assert policy.image(user1, None) == "ghcr.io/data-platform/python-runtime:3.12-1"
    # A full reference is accepted when it is an approved one.
    assert policy.image(user1, "ghcr.io/data-platform/python-runtime:3.12-1").endswith(
        "python-runtime:3.12-1"
    )
    with pytest.raises(
        PolicyError, match=r"image 'python-ml' is not approved for tenant 'user1' \(approved: python\)"
    ):
        policy.image(user1, "python-ml")
    with pytest.raises(PolicyError, match=r"image 'docker.io/evil:latest' is not an approved runtime image"):
        policy.image(user1, "docker.io/evil:latest")


def test_a_tenant_cannot_raise_the_platforms_retry_limit():
    policy = parse_policy(changed("tenants.user2.max_retries", 50), "p.yaml")
    assert policy.max_retries_for(policy.tenant("user2")) == 5


def test_load_policy_reads_the_file_named_by_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, changed("platform.owner", "team-from-env"))
    monkeypatch.setenv(POLICY_FILE_VAR, str(path))
    policy = load_policy()
    assert policy.owner == "team-from-env"
    assert policy.origin == str(path)
    # An explicit path wins over the variable.
    assert load_policy(POLICY_FILE).owner == "data-platform"


def test_load_policy_without_the_variable_reads_the_example(monkeypatch):
    monkeypatch.delenv(POLICY_FILE_VAR, raising=False)
    assert load_policy().origin == str(EXAMPLE_POLICY_FILE)


def test_load_policy_reads_a_file_once_and_again_when_it_changes(tmp_path, monkeypatch):
    path = write(tmp_path, changed("platform.owner", "first"))
    monkeypatch.setenv(POLICY_FILE_VAR, str(path))
    first = load_policy()
    assert load_policy() is first  # cached: DAG files are parsed often
    path.write_text(yaml.safe_dump(changed("platform.owner", "second-owner")), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_policy()
    assert second.owner == "second-owner"
    # A same-size edit is noticed too (the modification time differs).
    path.write_text(yaml.safe_dump(changed("platform.owner", "third-owner")), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert load_policy().owner == "third-owner"


def test_a_policy_that_breaks_after_loading_fails_loudly(tmp_path, monkeypatch):
    path = write(tmp_path, example())
    monkeypatch.setenv(POLICY_FILE_VAR, str(path))
    assert isinstance(load_policy(), PlatformPolicy)
    path.write_text(yaml.safe_dump(changed("platform.retries", 9)), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"platform\.retries is above platform\.max_retries"):
        load_policy()


# --- The agent reads the same file ------------------------------------------------------------------


def run_agent(
    agent_binary: Path, tmp_path: Path, *arguments: str
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Runs the real task-agent with a clean environment; returns the process and its record."""
    workdir = tmp_path / "work"
    record_file = tmp_path / "rec.json"
    record_file.unlink(missing_ok=True)
    files = [
        "--workdir",
        str(workdir),
        "--return-file",
        str(tmp_path / "r.json"),
        "--result-file",
        str(record_file),
    ]
    process = subprocess.run(
        [str(agent_binary), "run", *files, *arguments],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(record_file.read_text()) if record_file.exists() else None
    return process, record


def test_the_agent_refuses_a_vault_the_policy_file_does_not_allow(agent_binary, tmp_path):
    process, record = run_agent(
        agent_binary,
        tmp_path,
        "--policy-file", str(POLICY_FILE),
        "--tenant", "user1",
        "--secret", "X=user2-kv/a",
        "--", "true",
    )  # fmt: skip
    assert process.returncode == 77, process.stderr
    assert record is not None
    assert record["status"] == "agent_error"
    assert record["error"]["kind"] == "policy_denied"
    assert record["retryable"] is False
    assert "(allowed: user1-kv)" in record["error"]["message"]
    # The Airflow side refuses the same reference at parse time, with the same allowed list.
    with pytest.raises(
        PolicyError, match=r"vault 'user2-kv' is not allowed for tenant 'user1' \(allowed: user1-kv\)"
    ):
        check_secrets({"X": "user2-kv/a"}, None, load_policy(POLICY_FILE).tenant("user1"))


def agents_allowed_vaults(
    agent_binary: Path, tmp_path: Path, policy_file: Path, tenant: str
) -> tuple[str, ...]:
    """The vaults the agent lets `tenant` read, as its policy_denied message lists them."""
    process, record = run_agent(
        agent_binary,
        tmp_path,
        "--policy-file", str(policy_file),
        "--tenant", tenant,
        "--secret", "X=nobody-allows-this-kv/a",
        "--", "true",
    )  # fmt: skip
    assert process.returncode == 77, process.stderr
    assert record["error"]["kind"] == "policy_denied"
    found = re.search(r"\(allowed: ([^)]*)\)", record["error"]["message"])
    assert found, record["error"]["message"]
    listed = found.group(1)
    return () if listed == "none" else tuple(listed.split(", "))


def test_both_halves_agree_on_every_tenants_vaults(agent_binary, tmp_path):
    policy = load_policy(POLICY_FILE)
    assert policy.tenants, "the example policy registers tenants"
    for name, tenant in policy.tenants.items():
        assert agents_allowed_vaults(agent_binary, tmp_path, POLICY_FILE, name) == tenant.allowed_vaults, name


def test_both_halves_agree_on_a_tenant_without_vaults_and_on_mixed_case(agent_binary, tmp_path):
    document = changed("tenants.user3", {"allowed_vaults": []})
    document["tenants"]["user4"] = {"allowed_vaults": ["team-a-kv", "team-b-kv", "team-c-kv"]}
    path = write(tmp_path, document, "policy-more.yaml")
    policy = load_policy(path)
    for name in ("user1", "user2", "user3", "user4"):
        assert (
            agents_allowed_vaults(agent_binary, tmp_path, path, name) == policy.tenant(name).allowed_vaults
        ), name
    assert policy.tenant("user3").allowed_vaults == ()
