"""A real OpenSSH sshd on loopback for tests, with generated host and user keys.

Needs Debian's ``openssh-server`` (``/usr/sbin/sshd``, ``ssh-keygen``). The server runs as the current
user and logs that user in by public key only, so remote paths are plain paths on this machine.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers import free_port, stop

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
# sshd refuses to start without its privilege separation directory when run as root.
PRIVSEP_DIR = Path("/run/sshd")
STARTUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SshKey:
    private_path: Path
    public_line: str
    """``TYPE BASE64`` without the comment: the form of authorized_keys and the connection's host_key."""


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    host_key: SshKey
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def generate_key(path: Path, key_type: str = "ed25519") -> SshKey:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", key_type, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    key_type_name, key_data, *_ = path.with_suffix(path.suffix + ".pub").read_text().split()
    return SshKey(private_path=path, public_line=f"{key_type_name} {key_data}")


def _wait_for_banner(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"sshd did not accept connections on port {port}:\n{log_path.read_text(errors='replace')}"
    )


@contextmanager
def running_sshd(
    work_dir: Path,
    host_key: SshKey,
    authorized_keys: list[SshKey],
    *,
    sftp_server: str = "internal-sftp",
    chroot: Path | None = None,
) -> Iterator[SshServer]:
    """Run sshd until the block ends; ``sftp_server`` is the Subsystem command (e.g. ``internal-sftp -R``).

    With ``chroot``, SFTP sessions see that directory as ``/`` (a partner's server, where
    ``/incoming`` is theirs, not this machine's). sshd wants it, and every directory above it,
    owned by root and writable by no one else.
    """
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: apt-get install -y openssh-server")
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    authorized_keys_path = work_dir / "authorized_keys"
    authorized_keys_path.write_text("".join(f"{key.public_line}\n" for key in authorized_keys))
    config_path = work_dir / "sshd_config"
    config_path.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key.private_path}",
                f"PidFile {work_dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys_path}",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                # The tests connect many times in a row; the default throttles unauthenticated bursts.
                "MaxStartups 100",
                "LogLevel VERBOSE",
                f"Subsystem sftp {sftp_server}",
                *([f"ChrootDirectory {chroot}"] if chroot else []),
                "",
            ]
        )
    )
    log_path = work_dir / "sshd.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        _wait_for_banner(process, port, log_path)
        yield SshServer(
            host="127.0.0.1", port=port, user=getpass.getuser(), host_key=host_key, log_path=log_path
        )
    finally:
        stop(process, timeout=5)


def sftp_connection_json(
    server: SshServer, key: SshKey, *, user: str | None = None, host_key: str | None = None
) -> str:
    """An Airflow connection for ``AIRFLOW_CONN_<ID>``: what a real sftp connection for a partner holds."""
    return json.dumps(
        {
            "conn_type": "sftp",
            "host": server.host,
            "port": server.port,
            "login": user or server.user,
            "extra": {
                "key_file": str(key.private_path),
                # Pinning the host key is how production connections should look, and it makes the
                # tests independent of ~/.ssh/known_hosts.
                "host_key": host_key or server.host_key.public_line,
                # Only the key in key_file may be offered, whatever ~/.ssh holds on the test machine.
                "look_for_keys": False,
            },
        }
    )
