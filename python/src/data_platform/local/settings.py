"""The local runner's configuration: Airflow's `[data_platform]` section (so also its
`AIRFLOW__DATA_PLATFORM__*` variables). Nothing here can be set by a DAG."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airflow.configuration import conf

SECTION = "data_platform"
BACKENDS = ("process", "container")


@dataclass(frozen=True)
class LocalSettings:
    #: `process` or `container` (see data_platform.local.backends).
    backend: str
    #: The task-agent binary the process back-end runs (`container` runs the image's; None).
    agent: Path | None
    #: Each try of each pod task gets `ROOT/DAG/RUN/TASK/MAP_INDEX/TRY/`, kept after the run.
    root: Path
    #: `URI#sha256=HEX`: the code every pod task runs instead of its DAG's snapshot (the
    #: tenant's working copy, packed and published by `data-platform run-local --code`).
    snapshot: str | None
    #: Key Vault references are read from `SECRETS/VAULT/NAME` (task-agent's `file:` provider).
    secrets_dir: Path | None
    #: `container`: the image a pod names → the local image run instead (`REF=LOCAL,…`); an image
    #: not named here runs as it is, if podman has it.
    images: Mapping[str, str] = field(default_factory=dict)
    #: `container`: `DIR/NAME/KEY` files are the keys of ConfigMap NAME a pod mounts.
    config_maps: Path | None = None


def local_settings() -> LocalSettings | None:
    """The configured local runner, or None: pods go to the cluster."""
    backend = _option("local_runner")
    if not backend:
        return None
    if backend not in BACKENDS:
        raise ValueError(f"[{SECTION}] local_runner = {backend!r}: expected one of {', '.join(BACKENDS)}")
    agent = _option("local_agent") or shutil.which("task-agent") or ""
    if not agent and backend == "process":
        raise ValueError(
            f"[{SECTION}] local_runner = {backend} needs the task-agent binary: set [{SECTION}] local_agent "
            "(AIRFLOW__DATA_PLATFORM__LOCAL_AGENT) to its path, e.g. target/debug/task-agent"
        )
    root = _option("local_root") or str(Path(os.environ.get("TMPDIR", "/tmp")) / "data-platform-local")
    secrets = _option("local_secrets_dir")
    config_maps = _option("local_config_maps")
    return LocalSettings(
        backend=backend,
        agent=Path(agent).resolve() if agent else None,
        root=Path(root),
        snapshot=_option("local_snapshot") or None,
        secrets_dir=Path(secrets) if secrets else None,
        images=parse_images(_option("local_images")),
        config_maps=Path(config_maps) if config_maps else None,
    )


def parse_images(text: str) -> dict[str, str]:
    """`REF=LOCAL,REF=LOCAL` (whitespace around entries allowed) as a mapping."""
    images: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        reference, _, local = entry.partition("=")
        if not reference.strip() or not local.strip():
            raise ValueError(f"[{SECTION}] local_images: {entry!r} is not REF=LOCAL_IMAGE")
        images[reference.strip()] = local.strip()
    return images


def _option(name: str) -> str:
    return str(conf.get(SECTION, name, fallback="") or "").strip()
