"""Shared fixtures: an isolated Airflow home, the real task-agent binary, and a real Azurite."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port, stop
from sshd import SshKey, SshServer, generate_key, running_sshd

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
POLICY_FILE = REPO / "config" / "platform-policy.yaml"
SCHEMA_FILE = REPO / "schema" / "task-result.schema.json"
AZURITE = REPO / "tests" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
#: In memory, no telemetry, and any API version (the Python SDK may be newer than Azurite).
AZURITE_FLAGS = ("--disableTelemetry", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose")
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Airflow reads its configuration on import: point it at a throwaway home before any test
# imports it, so the tests never touch ~/airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-home-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
os.environ.pop("DATA_PLATFORM_POLICY_FILE", None)
os.environ.pop("DATA_PLATFORM_POD_TEMPLATE_FILE", None)


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within 30 s: {log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def agent_binary() -> Path:
    """The real task-agent, as `cargo test` built it (or TASK_AGENT_BIN)."""
    chosen = os.environ.get("TASK_AGENT_BIN")
    binary = Path(chosen) if chosen else REPO / "target" / "debug" / "task-agent"
    if not chosen and not binary.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "task-agent"], cwd=REPO, check=True)
    assert binary.exists(), f"task-agent binary not found at {binary}; run `cargo build` first"
    return binary


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{DEV_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite blob service on a loopback port, in memory, for the whole session."""
    assert AZURITE.exists(), f"{AZURITE} is missing: run scripts/install-test-deps"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    log = workdir / "azurite.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), *AZURITE_FLAGS],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, "Azurite", log)
        yield Azurite(port)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    keys_dir = tmp_path_factory.mktemp("ssh-keys")
    return {
        "host": generate_key(keys_dir / "host_key"),
        "user": generate_key(keys_dir / "user_key"),
        # Known to nobody: a user key the partner never installed, a host key an impostor presents.
        "stranger": generate_key(keys_dir / "stranger_key"),
    }


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory, ssh_keys: dict[str, SshKey]) -> Iterator[SshServer]:
    """A real OpenSSH sshd on a loopback port that accepts ssh_keys["user"]."""
    with running_sshd(tmp_path_factory.mktemp("sshd"), ssh_keys["host"], [ssh_keys["user"]]) as server:
        yield server


@pytest.fixture(scope="session")
def metric_reader():
    """The process's MeterProvider, read in memory (the API allows setting it once per process)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader
