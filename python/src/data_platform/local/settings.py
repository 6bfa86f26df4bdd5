"""The local runner's configuration: Airflow's `[data_platform]` section (so also its
`AIRFLOW__DATA_PLATFORM__*` variables). Nothing here can be set by a DAG."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from airflow.configuration import conf

SECTION = "data_platform"
BACKENDS = ("process", "container")


@dataclass(frozen=True)
class LocalSettings:
    #: `process` or `container` (see data_platform.local.backends).
    backend: str
    #: The task-agent binary the process back-end runs (the image's for `container`).
    agent: Path
    #: Each try of each pod task gets `ROOT/DAG/RUN/TASK/MAP_INDEX/TRY/`, kept after the run.
    root: Path
    #: `URI#sha256=HEX`: the code every pod task runs instead of its DAG's snapshot (the
    #: tenant's working copy, packed and published by `data-platform run-local --code`).
    snapshot: str | None
    #: Key Vault references are read from `SECRETS/VAULT/NAME` (task-agent's `file:` provider).
    secrets_dir: Path | None


def local_settings() -> LocalSettings | None:
    """The configured local runner, or None: pods go to the cluster."""
    backend = _option("local_runner")
    if not backend:
        return None
    if backend not in BACKENDS:
        raise ValueError(f"[{SECTION}] local_runner = {backend!r}: expected one of {', '.join(BACKENDS)}")
    agent = _option("local_agent") or shutil.which("task-agent") or ""
    if not agent:
        raise ValueError(
            f"[{SECTION}] local_runner = {backend} needs the task-agent binary: set [{SECTION}] local_agent "
            "(AIRFLOW__DATA_PLATFORM__LOCAL_AGENT) to its path, e.g. target/debug/task-agent"
        )
    root = _option("local_root") or str(Path(os.environ.get("TMPDIR", "/tmp")) / "data-platform-local")
    secrets = _option("local_secrets_dir")
    return LocalSettings(
        backend=backend,
        agent=Path(agent).resolve(),
        root=Path(root),
        snapshot=_option("local_snapshot") or None,
        secrets_dir=Path(secrets) if secrets else None,
    )


def _option(name: str) -> str:
    return str(conf.get(SECTION, name, fallback="") or "").strip()
