"""SftpUploadOperator against a real OpenSSH sshd and a real Azurite blob emulator."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, ContainerClient, generate_blob_sas

from data_platform.sftp_upload import SftpUploadOperator
from data_platform.sources import BLOB_CHUNK_BYTES, LOCAL_READ_BYTES
from data_platform.storage import without_sas
from servers import free_port
from sshd import SshKey, SshServer, running_sshd, sftp_connection_json

CONN_ID = "partner_sftp"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # An ssh-agent of the developer's would offer its keys too; the storage key must come from the test.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)


@pytest.fixture
def partner(
    monkeypatch: pytest.MonkeyPatch, sshd_server: SshServer, ssh_keys: dict[str, SshKey]
) -> SshServer:
    """The partner's server, reachable through the Airflow connection CONN_ID."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(sshd_server, ssh_keys["user"]))
    return sshd_server


@pytest.fixture
def container(azurite: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerClient]:
    """A fresh container in conftest's Azurite; the operator reads it with the account key from
    AZURE_STORAGE_CONNECTION_STRING."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        client = service.create_container(f"tenant-{uuid.uuid4().hex[:12]}")
        yield client
        client.delete_container()


def upload(
    source: str, remote_path: str | Path, *, allowed_storage: list[str] | None = None, conn_id: str = CONN_ID
) -> dict[str, Any]:
    operator = SftpUploadOperator(
        task_id="upload",
        source=source,
        remote_path=str(remote_path),
        sftp_conn_id=conn_id,
        allowed_storage=allowed_storage or [],
    )
    return operator.execute({})


def leftovers(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*.part"))


def everything_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    # Libraries log through the standard library (caplog); Airflow's task logger prints via structlog.
    captured = capfd.readouterr()
    return "\n".join([*(record.getMessage() for record in caplog.records), captured.out, captured.err])


def upload_measuring_peak_memory(
    source: str, remote_path: Path, allowed_storage: list[str] | None = None
) -> tuple[dict[str, Any], int]:
    """Peak Python memory of one upload; warm up first, or the imports of the first upload count too."""
    tracemalloc.start()
    try:
        result = upload(source, remote_path, allowed_storage=allowed_storage)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def account_key(container: ContainerClient) -> str:
    key: str = container.credential.account_key
    return key


def read_sas(container: ContainerClient, blob_name: str, *, signing_key: str) -> str:
    return generate_blob_sas(
        container.account_name,
        container.container_name,
        blob_name,
        account_key=signing_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )


def sas_signature(sas: str) -> str:
    match = re.search(r"(?:^|&)sig=([^&]+)", sas)
    assert match, sas
    return match.group(1)


# --------------------------------------------------------------------------------------------------
# Construction


def test_constructor_does_no_io() -> None:
    operator = SftpUploadOperator(
        task_id="upload",
        source="/no/such/dir/out.csv",
        remote_path="/incoming/out.csv",
        sftp_conn_id="connection_that_does_not_exist",
        allowed_storage="https://acct.blob.core.windows.net/tenant",
    )

    assert (operator.source, operator.remote_path, operator.sftp_conn_id) == (
        "/no/such/dir/out.csv",
        "/incoming/out.csv",
        "connection_that_does_not_exist",
    )
    # A single string is one prefix, not a sequence of one-character prefixes.
    assert operator.allowed_storage == ("https://acct.blob.core.windows.net/tenant",)
    assert SftpUploadOperator.template_fields == ("source", "remote_path")


# --------------------------------------------------------------------------------------------------
# Local sources


def test_local_file_lands_byte_identical_in_a_new_nested_directory(
    partner: SshServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "out.csv"
    source.write_bytes(content)
    remote_root = tmp_path / "remote"
    remote_path = remote_root / "incoming" / "2024" / "05" / "out.csv"

    result = upload(str(source), remote_path)

    sha256 = hashlib.sha256(content).hexdigest()
    assert result == {
        "remote_path": str(remote_path),
        "bytes": len(content),
        "sha256": sha256,
        "source": str(source),
    }
    assert remote_path.read_bytes() == content
    assert [path.name for path in remote_path.parent.iterdir()] == ["out.csv"]
    final_line = [line for line in capfd.readouterr().out.splitlines() if "Uploaded" in line]
    assert len(final_line) == 1
    assert str(len(content)) in final_line[0]
    assert sha256 in final_line[0]
    assert str(remote_path) in final_line[0]
    assert re.search(r"in \d+\.\d\d s", final_line[0])


def test_local_file_is_streamed(partner: SshServer, tmp_path: Path) -> None:
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(2 * LOCAL_READ_BYTES + 1))
    large.write_bytes(os.urandom(16 * LOCAL_READ_BYTES + 1))

    upload(str(small), tmp_path / "remote" / "warm-up.bin")
    _, small_peak = upload_measuring_peak_memory(str(small), tmp_path / "remote" / "small.bin")
    _, large_peak = upload_measuring_peak_memory(str(large), tmp_path / "remote" / "large.bin")

    assert (tmp_path / "remote" / "large.bin").read_bytes() == large.read_bytes()
    # Reading the file whole would add the 14 MiB difference.
    assert large_peak < small_peak + 2 * LOCAL_READ_BYTES, (small_peak, large_peak)


def test_existing_remote_file_is_replaced(partner: SshServer, tmp_path: Path) -> None:
    remote_path = tmp_path / "remote" / "out.csv"
    remote_path.parent.mkdir()
    remote_path.write_bytes(b"yesterday's much longer content that must not survive as a tail\n" * 100)
    source = tmp_path / "out.csv"
    source.write_bytes(b"today\n")

    upload(str(source), remote_path)

    assert remote_path.read_bytes() == b"today\n"
    assert leftovers(remote_path.parent) == []


def test_existing_file_is_replaced_on_a_server_without_posix_rename(
    tmp_path: Path, ssh_keys: dict[str, SshKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    remote_path = tmp_path / "remote" / "out.csv"
    remote_path.parent.mkdir()
    remote_path.write_bytes(b"old\n")
    source = tmp_path / "out.csv"
    source.write_bytes(b"new\n")
    with running_sshd(
        tmp_path / "sshd",
        ssh_keys["host"],
        [ssh_keys["user"]],
        sftp_server="internal-sftp -P posix-rename",
    ) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(server, ssh_keys["user"]))

        upload(str(source), remote_path)

    assert remote_path.read_bytes() == b"new\n"
    assert leftovers(remote_path.parent) == []


def test_templated_paths_are_rendered_before_upload(partner: SshServer, tmp_path: Path) -> None:
    (tmp_path / "out-2024-05-01.csv").write_bytes(b"a,b\n")
    operator = SftpUploadOperator(
        task_id="upload",
        source=str(tmp_path / "out-{{ ds }}.csv"),
        remote_path=str(tmp_path / "remote" / "{{ ds }}" / "out.csv"),
        sftp_conn_id=CONN_ID,
    )

    operator.render_template_fields({"ds": "2024-05-01"})
    result = operator.execute({})

    assert result["remote_path"] == str(tmp_path / "remote" / "2024-05-01" / "out.csv")
    assert (tmp_path / "remote" / "2024-05-01" / "out.csv").read_bytes() == b"a,b\n"


def test_sas_templated_into_source_is_masked_in_the_rendered_fields() -> None:
    # The task runner's own serialisation: what the UI's "Rendered Template" view receives.
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    signature = f"{uuid.uuid4().hex}%2B{uuid.uuid4().hex}%3D"
    operator = SftpUploadOperator(
        task_id="upload",
        source="{{ params.export_uri }}",
        remote_path="/incoming/{{ ds }}.csv",
        sftp_conn_id=CONN_ID,
    )

    operator.render_template_fields(
        {
            "params": {
                "export_uri": f"https://acct.blob.core.windows.net/tenant/out.csv?sv=2024-05-04&sig={signature}"
            },
            "ds": "2024-05-01",
        }
    )
    rendered = _serialize_rendered_fields(operator)

    assert rendered["remote_path"] == "/incoming/2024-05-01.csv"
    assert str(rendered["source"]).startswith("https://acct.blob.core.windows.net/tenant/out.csv?")
    assert signature not in str(rendered)
    assert unquote(signature) not in str(rendered)


@pytest.mark.parametrize(
    ("make_source", "expected"),
    [
        pytest.param(lambda tmp: str(tmp / "missing.csv"), "does not exist", id="missing"),
        pytest.param(lambda tmp: str(tmp), "is a directory", id="directory"),
        pytest.param(lambda tmp: "data/out.csv", "relative path", id="relative"),
        pytest.param(lambda tmp: "ftp://example.com/out.csv", "unsupported scheme", id="other-scheme"),
    ],
)
def test_unusable_local_source_fails_without_retry_and_touches_nothing_remote(
    partner: SshServer, tmp_path: Path, make_source: Any, expected: str
) -> None:
    source = make_source(tmp_path)
    remote_dir = tmp_path / "remote"

    with pytest.raises(AirflowFailException) as failure:
        upload(source, remote_dir / "out.csv")

    assert expected in str(failure.value)
    assert source in str(failure.value)
    assert not remote_dir.exists()


@pytest.mark.parametrize("remote_path", ["", "/incoming/", "/incoming/.."])
def test_remote_path_that_names_no_file_is_refused(
    partner: SshServer, tmp_path: Path, remote_path: str
) -> None:
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")

    with pytest.raises(AirflowFailException, match="does not name a file"):
        upload(str(source), remote_path)


# --------------------------------------------------------------------------------------------------
# Blob sources


def test_blob_is_streamed_byte_identical(
    partner: SshServer,
    container: ContainerClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    small = os.urandom(3 * BLOB_CHUNK_BYTES + 1)
    large = os.urandom(12 * BLOB_CHUNK_BYTES + 12345)
    container.upload_blob("exports/small.bin", small)
    container.upload_blob("exports/large.bin", large)
    remote_dir = tmp_path / "remote"

    upload(f"{container.url}/exports/small.bin", remote_dir / "warm-up.bin", allowed_storage=[container.url])
    _, small_peak = upload_measuring_peak_memory(
        f"{container.url}/exports/small.bin", remote_dir / "small.bin", [container.url]
    )
    result, large_peak = upload_measuring_peak_memory(
        f"{container.url}/exports/large.bin", remote_dir / "large.bin", [container.url]
    )

    assert (remote_dir / "large.bin").read_bytes() == large
    assert (remote_dir / "small.bin").read_bytes() == small
    assert result == {
        "remote_path": str(remote_dir / "large.bin"),
        "bytes": len(large),
        "sha256": hashlib.sha256(large).hexdigest(),
        "source": f"{container.url}/exports/large.bin",
    }
    # Streaming holds a chunk at a time whatever the size; holding the blob would add the 9 MiB difference.
    assert large_peak < small_peak + 2 * BLOB_CHUNK_BYTES, (small_peak, large_peak)
    assert large_peak < len(large)
    assert account_key(container) not in everything_logged(caplog, capfd)


def test_blob_with_a_sas_is_read_with_it_and_the_signature_never_shows(
    partner: SshServer,
    container: ContainerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    content = os.urandom(BLOB_CHUNK_BYTES + 1000)
    container.upload_blob("out.csv", content)
    sas = read_sas(container, "out.csv", signing_key=account_key(container))
    signature = sas_signature(sas)
    # The SAS must be the only way in: without it the worker's Azure identity would be tried, and fail.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    remote_path = tmp_path / "remote" / "out.csv"

    result = upload(f"{container.url}/out.csv?{sas}", remote_path, allowed_storage=[container.url])

    assert remote_path.read_bytes() == content
    assert result["source"] == f"{container.url}/out.csv"
    assert signature not in repr(result)
    logged = everything_logged(caplog, capfd)
    assert "out.csv" in logged
    assert signature not in logged


def test_blob_with_an_invalid_sas_is_denied_without_retry(
    partner: SshServer,
    container: ContainerClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    container.upload_blob("out.csv", b"x")
    forged = read_sas(container, "out.csv", signing_key=base64.b64encode(os.urandom(64)).decode())
    remote_dir = tmp_path / "remote"

    with pytest.raises(AirflowFailException) as failure:
        upload(
            f"{container.url}/out.csv?{forged}",
            remote_dir / "out.csv",
            allowed_storage=[container.url],
        )

    message = str(failure.value)
    assert f"{container.url}/out.csv" in message
    assert "denied (HTTP 403" in message
    assert "SAS" in message
    assert sas_signature(forged) not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__
    assert sas_signature(forged) not in everything_logged(caplog, capfd)
    assert not remote_dir.exists()


def test_missing_blob_fails_without_retry_before_touching_the_partner(
    partner: SshServer, container: ContainerClient, tmp_path: Path
) -> None:
    source = f"{container.url}/exports/never-written.csv"
    remote_dir = tmp_path / "remote"

    with pytest.raises(AirflowFailException) as failure:
        upload(source, remote_dir / "out.csv", allowed_storage=[container.url])

    assert source in str(failure.value)
    assert "does not exist (HTTP 404" in str(failure.value)
    assert not remote_dir.exists()


@pytest.mark.parametrize(
    ("source_path", "allowed"),
    [
        pytest.param(
            "/devstoreaccount1/other-tenant/out.csv", ["/devstoreaccount1/tenant"], id="other-container"
        ),
        pytest.param(
            "/devstoreaccount1/tenant-b/out.csv", ["/devstoreaccount1/tenant"], id="prefix-not-a-container"
        ),
        pytest.param("/devstoreaccount1/tenant/../other/out.csv", ["/devstoreaccount1/tenant"], id="dot-dot"),
        pytest.param("/devstoreaccount1/tenant/out.csv", [], id="tenant-without-storage"),
    ],
)
def test_blob_outside_the_tenant_storage_is_refused_before_any_network_call(
    tmp_path: Path, source_path: str, allowed: list[str]
) -> None:
    # Nothing listens on this port and the SFTP connection is not even defined: any network call
    # would fail differently.
    endpoint = f"http://127.0.0.1:{free_port()}"
    signature = "c2VjcmV0LXNpZ25hdHVyZS1uZXZlci10by1iZS1zaG93bg%3D%3D"
    source = f"{endpoint}{source_path}?sv=2024-05-04&sr=b&sp=r&sig={signature}"

    with pytest.raises(AirflowFailException) as failure:
        upload(
            source,
            tmp_path / "remote" / "out.csv",
            allowed_storage=[endpoint + prefix for prefix in allowed],
            conn_id="connection_that_does_not_exist",
        )

    message = str(failure.value)
    assert f"{endpoint}{source_path}" in message
    assert signature not in message
    if ".." in source_path:
        assert "'..'" in message
    else:
        assert "ask the platform team to add the container to the tenant's storage" in message
        for prefix in allowed:
            assert endpoint + prefix in message


def test_sdk_error_text_is_stripped_of_the_sas_signature() -> None:
    # What urllib3 says when the storage endpoint is unreachable: it quotes the request URL.
    text = (
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
        "/devstoreaccount1/tenant/out.csv?sv=2024-05-04&sr=b&sp=r&sig=abc%2Bdef%3D&se=2030-01-01"
    )

    assert without_sas(text) == (
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
        "/devstoreaccount1/tenant/out.csv?sv=2024-05-04&sr=b&sp=r&sig=REDACTED&se=2030-01-01"
    )


# --------------------------------------------------------------------------------------------------
# The partner's server refuses


def test_wrong_user_key_fails_without_retry_after_one_attempt(
    sshd_server: SshServer,
    ssh_keys: dict[str, SshKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(sshd_server, ssh_keys["stranger"])
    )
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")
    connections_before = sshd_server.log().count("Connection from")

    with pytest.raises(AirflowFailException) as failure:
        upload(str(source), tmp_path / "remote" / "out.csv")

    message = str(failure.value)
    assert "SFTP authentication failed" in message
    assert f"{sshd_server.user}@127.0.0.1:{sshd_server.port}" in message
    assert "check the connection's user and key" in message.lower()
    assert ssh_keys["stranger"].private_path.read_text().splitlines()[1] not in message
    # A rejected key is not offered again: partners lock accounts after repeated failures.
    assert sshd_server.log().count("Connection from") - connections_before == 1
    assert not (tmp_path / "remote").exists()


def test_unexpected_host_key_fails_without_retry(
    sshd_server: SshServer,
    ssh_keys: dict[str, SshKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        sftp_connection_json(sshd_server, ssh_keys["user"], host_key=ssh_keys["stranger"].public_line),
    )
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")

    with pytest.raises(AirflowFailException, match="host key that differs from the connection's host_key"):
        upload(str(source), tmp_path / "remote" / "out.csv")

    assert not (tmp_path / "remote").exists()


def test_connection_without_a_host_key_fails_without_retry_unless_checking_is_off(
    sshd_server: SshServer,
    ssh_keys: dict[str, SshKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = json.loads(sftp_connection_json(sshd_server, ssh_keys["user"]))
    del connection["extra"]["host_key"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")
    remote_path = tmp_path / "remote" / "out.csv"

    with pytest.raises(AirflowFailException, match="set the connection's host_key extra"):
        upload(str(source), remote_path)

    connection["extra"]["no_host_key_check"] = True
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    upload(str(source), remote_path)
    assert remote_path.read_bytes() == b"x"


def test_remote_parent_that_is_a_file_fails_without_retry(partner: SshServer, tmp_path: Path) -> None:
    remote_root = tmp_path / "remote"
    remote_root.mkdir()
    (remote_root / "incoming").write_bytes(b"a file where a directory should be")
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")
    remote_path = remote_root / "incoming" / "2024" / "out.csv"

    with pytest.raises(AirflowFailException) as failure:
        upload(str(source), remote_path)

    assert f"'{remote_root / 'incoming'}'" in str(failure.value)
    assert "is a file, not a directory" in str(failure.value)
    assert str(remote_path) in str(failure.value)
    assert sorted(path.name for path in remote_root.iterdir()) == ["incoming"]


def test_remote_path_that_is_a_directory_fails_and_the_partial_file_is_removed(
    partner: SshServer, tmp_path: Path
) -> None:
    remote_path = tmp_path / "remote" / "out.csv"
    (remote_path / "already-here").mkdir(parents=True)
    source = tmp_path / "out.csv"
    source.write_bytes(os.urandom(256 * 1024))

    with pytest.raises(AirflowFailException) as failure:
        upload(str(source), remote_path)

    assert f"remote_path '{remote_path}' is an existing directory" in str(failure.value)
    # The whole file was written under a temporary name before the rename failed.
    assert leftovers(tmp_path / "remote") == []
    assert sorted(path.name for path in (tmp_path / "remote").iterdir()) == ["out.csv"]
    assert [path.name for path in remote_path.iterdir()] == ["already-here"]


@pytest.mark.parametrize(
    ("relative_remote_path", "named"),
    [
        pytest.param("incoming/out.csv", "incoming/out.csv", id="existing-directory"),
        pytest.param("incoming/new/out.csv", "incoming/new", id="directory-to-create"),
    ],
)
def test_read_only_server_fails_without_retry_naming_the_path(
    tmp_path: Path,
    ssh_keys: dict[str, SshKey],
    monkeypatch: pytest.MonkeyPatch,
    relative_remote_path: str,
    named: str,
) -> None:
    remote_root = tmp_path / "remote"
    (remote_root / "incoming").mkdir(parents=True)
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")
    with running_sshd(
        tmp_path / "sshd", ssh_keys["host"], [ssh_keys["user"]], sftp_server="internal-sftp -R"
    ) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(server, ssh_keys["user"]))

        with pytest.raises(AirflowFailException) as failure:
            upload(str(source), remote_root / relative_remote_path)

    assert "permission denied" in str(failure.value)
    assert f"'{remote_root / named}'" in str(failure.value)
    assert [path.name for path in remote_root.rglob("*")] == ["incoming"]


# --------------------------------------------------------------------------------------------------
# Connection problems


def test_server_not_listening_is_retryable(
    sshd_server: SshServer, ssh_keys: dict[str, SshKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = dataclasses.replace(sshd_server, port=free_port())
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(gone, ssh_keys["user"]))
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")

    with pytest.raises(AirflowException) as failure:
        upload(str(source), "/incoming/out.csv")

    assert not isinstance(failure.value, AirflowFailException)
    assert f"{gone.user}@127.0.0.1:{gone.port}" in str(failure.value)
    assert "could not connect" in str(failure.value)


def test_undefined_connection_fails_without_retry(tmp_path: Path) -> None:
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")

    with pytest.raises(AirflowFailException, match="'connection_that_does_not_exist' is not defined"):
        upload(str(source), "/incoming/out.csv", conn_id="connection_that_does_not_exist")


def test_key_file_missing_on_the_worker_fails_without_retry(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing_key = SshKey(private_path=tmp_path / "no-such-key", public_line="")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sftp_connection_json(sshd_server, missing_key))
    source = tmp_path / "out.csv"
    source.write_bytes(b"x")

    with pytest.raises(AirflowFailException, match=re.escape(f"key file '{missing_key.private_path}'")):
        upload(str(source), tmp_path / "remote" / "out.csv")
