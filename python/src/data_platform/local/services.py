"""The local stand-ins of the cloud a pipeline talks to, started for one local run:

- **Azurite** (Microsoft's Azure Storage emulator, `azurite-blob` from npm; scripts/install-test-deps
  puts it in tests/node_modules) for snapshots and artifacts, in memory, on a free loopback port,
  when asked for (`--storage azurite`); by default the store is a local directory (`LocalStore`,
  task-agent's `file://`);
- **OpenSSH's sshd** (Debian's openssh-server) as a partner's SFTP server, with throw-away host and
  user keys, chrooted (so `/incoming` is the partner's, not this machine's), which needs root.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SSHD = Path("/usr/sbin/sshd")
STARTUP_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A stand-in could not be started; the message says what to install or change."""


@dataclass(frozen=True)
class BlobService:
    endpoint: str

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )


@dataclass(frozen=True)
class LocalStore:
    """The local disk as the store (task-agent's `file://`): `ROOT/CONTAINER/PATH`."""

    root: Path

    @property
    def endpoint(self) -> str:
        return self.root.resolve().as_uri()


@dataclass(frozen=True)
class SftpServer:
    host: str
    port: int
    user: str
    #: What the partner's `/` is on this machine.
    root: Path
    key_file: Path
    host_key: str

    def connection_json(self) -> str:
        """An Airflow connection (`AIRFLOW_CONN_<ID>`) pinned to the server's host key."""
        return json.dumps(
            {
                "conn_type": "sftp",
                "host": self.host,
                "port": self.port,
                "login": self.user,
                "extra": {"key_file": str(self.key_file), "host_key": self.host_key, "look_for_keys": False},
            }
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_azurite(repo: Path | None) -> Path:
    candidates = [os.environ.get("DATA_PLATFORM_AZURITE", "")]
    if repo is not None:
        candidates.append(str(repo / "tests" / "node_modules" / ".bin" / "azurite-blob"))
    candidates.append(shutil.which("azurite-blob") or "")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise ServiceError(
        "Azurite (azurite-blob) is not installed: run scripts/install-test-deps or `npm install -g azurite`, "
        "or give an existing blob endpoint with --storage URL"
    )


@contextmanager
def running_azurite(binary: Path, work_dir: Path) -> Iterator[BlobService]:
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "azurite.log"
    flags = ["--disableTelemetry", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), *flags],
            cwd=work_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(process, port, "Azurite", log, b"")
        yield BlobService(f"http://127.0.0.1:{port}/{DEV_ACCOUNT}")
    finally:
        _stop(process)


@contextmanager
def running_sftp_server(work_dir: Path) -> Iterator[SftpServer]:
    """sshd on loopback, accepting one generated user key, with SFTP chrooted to a new directory."""
    if not SSHD.exists():
        raise ServiceError(
            f"{SSHD} is missing: apt-get install -y openssh-server (scripts/install-test-deps)"
        )
    if os.geteuid() != 0:
        raise ServiceError(
            "the local SFTP server chroots the partner's files, which sshd does only as root; run as root, "
            "or set AIRFLOW_CONN_<ID> to an SFTP server of your own"
        )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    host_key, user_key = work_dir / "host_key", work_dir / "user_key"
    for key in (host_key, user_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True, capture_output=True)  # fmt: skip
    # sshd chroots only into a directory root owns and no one else may write, up to / (so not
    # under /tmp); /run is such a place, and a tmpfs. Kept after the run, for a look at the files.
    root = Path(tempfile.mkdtemp(prefix="data-platform-sftp-", dir="/run"))
    root.chmod(0o755)
    (root / "incoming").mkdir()
    port = free_port()
    authorized = work_dir / "authorized_keys"
    authorized.write_text(_public(user_key) + "\n")
    config = work_dir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
                f"PidFile {work_dir / 'sshd.pid'}", f"AuthorizedKeysFile {authorized}", "StrictModes no",
                "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "Subsystem sftp internal-sftp", f"ChrootDirectory {root}",
                "",
            ]
        )
    )  # fmt: skip
    log = work_dir / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        _wait_for(process, port, "sshd", log, b"SSH-")
        yield SftpServer("127.0.0.1", port, getpass.getuser(), root, user_key, _public(host_key))
    finally:
        _stop(process)


def _public(key: Path) -> str:
    kind, data, *_ = key.with_suffix(".pub").read_text().split()
    return f"{kind} {data}"


def _wait_for(process: subprocess.Popen[bytes], port: int, what: str, log: Path, banner: bytes) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if not banner or probe.recv(8).startswith(banner):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise ServiceError(f"{what} did not listen on port {port}: {log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
