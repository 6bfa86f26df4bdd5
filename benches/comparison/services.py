"""The servers the comparison talks to: Azurite for Blob Storage, and the Entra ID and Key Vault
stand-ins (examples/bench_standins.rs, the same ones the Rust tests prove against Microsoft's
Python clients)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from azure.storage.blob import (
    AccountSasPermissions,
    BlobSasPermissions,
    ContainerClient,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
)

# Azurite's well-known development account: https://learn.microsoft.com/azure/storage/common/storage-use-azurite
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "snapshots"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} before listening:\n{log.read_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s; its log is {log}")


class Azurite:
    """Azurite's blob service, in memory, on a free port; stopped on exit from the `with`."""

    def __init__(self, executable: Path, scratch: Path) -> None:
        self.executable = executable
        self.scratch = scratch
        self.port = free_port()
        self.log = scratch / "azurite.log"
        self._log_file = self.log.open("wb")
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                str(self.executable),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ],
            # Azurite may leave its own files in its working directory: keep them in the scratch.
            cwd=self.scratch,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.port, "Azurite", process, self.log)
        return process

    def _stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """A fresh, empty Azurite on the same port. Its in-memory store frees the blobs of
        overwritten or deleted blobs only in a sweep every 10 minutes, so uploads of 1 GiB in
        rounds would otherwise fill the machine's memory."""
        self._stop()
        self.process = self._start()

    def cpu_seconds(self) -> float:
        """The CPU time Azurite has used so far (user and system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop()
        self._log_file.close()

    def blob_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}/{CONTAINER}/{name}"

    def container_url(self, container: str) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}/{container}"

    def container(self, name: str = CONTAINER) -> ContainerClient:
        """A client for container `name` with the account key."""
        credential = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        return ContainerClient.from_container_url(self.container_url(name), credential=credential)

    def account_sas(self) -> str:
        """An account SAS (read, write, create, list) valid for a day, as a task's artifacts URL
        and the peers' destination carry it."""
        return generate_account_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(read=True, write=True, create=True, list=True),
            expiry=datetime.now(timezone.utc) + timedelta(days=1),
        )

    def blob_sizes(self, container: str, prefix: str) -> dict[str, int]:
        """Every blob under `prefix` in `container`, by name, with its size."""
        return {
            blob.name: blob.size for blob in self.container(container).list_blobs(name_starts_with=prefix)
        }

    def blob_sha256(self, container: str, name: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.container(container).download_blob(name, max_concurrency=4).chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def upload(self, archive: Path, name: str) -> str:
        """Uploads `archive` as blob `name` and returns a read-only SAS URL to it, valid for a day."""
        container = self.container()
        if not container.exists():
            container.create_container()
        client = container.get_blob_client(name)
        with archive.open("rb") as data:
            client.upload_blob(data, overwrite=True, max_concurrency=4)
        sas = generate_blob_sas(
            ACCOUNT,
            CONTAINER,
            name,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(timezone.utc) + timedelta(days=1),
        )
        return f"{self.blob_url(name)}?{sas}"


@dataclass
class Secret:
    name: str
    url: str
    value: str


class KeyVaultStandins:
    """examples/bench_standins.rs: an https Entra ID token endpoint and Key Vault, serving until
    their stdin closes. `env` is what a workload-identity pod's agent needs to reach them."""

    def __init__(self, executable: Path, scratch: Path, secrets: int, latency_ms: int) -> None:
        directory = scratch / "standins"
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(executable),
                "--secrets",
                str(secrets),
                "--latency-ms",
                str(latency_ms),
                "--dir",
                str(directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stdout: IO[bytes] | None = self.process.stdout
        line = stdout.readline() if stdout is not None else b""
        if not line:
            raise RuntimeError(
                f"{executable} exited with {self.process.wait()} before announcing its stand-ins"
            )
        announced: dict[str, Any] = json.loads(line)
        self.env: dict[str, str] = announced["env"]
        self.secrets = [Secret(s["name"], s["url"], s["value"]) for s in announced["secrets"]]

    def __enter__(self) -> KeyVaultStandins:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
