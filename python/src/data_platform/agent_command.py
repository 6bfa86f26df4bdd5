"""The `task-agent run …` command line of a pod task, and the checks on what goes into it. Pure.

Everything the user gives (snapshot, secrets, script, arguments) is checked against the
tenant's policy here, at DAG parse time, so a forbidden vault or foreign storage account is a
DAG import error naming the field, not a pod that fails an hour later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from data_platform.deadlines import Deadlines
from data_platform.policy import PolicyError, Tenant
from data_platform.storage import is_local_store, storage_violation, without_query
from data_platform.units import format_duration

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: What task-agent accepts in a Key Vault reference (it refuses anything else with a usage error).
_VAULT_NAME = re.compile(r"^[A-Za-z0-9-]{3,24}$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")
_SECRET_VERSION = re.compile(r"^[A-Za-z0-9]+$")
#: Key Vault's DNS suffixes (public and sovereign clouds): a full URL must name a Key Vault host.
_VAULT_HOST_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net")
#: Airflow renders these per try; the agent stamps them on its record, logs and telemetry.
RUN_ID_TEMPLATE = "{{ run_id }}"
TRY_NUMBER_TEMPLATE = "{{ ti.try_number }}"
MAP_INDEX_TEMPLATE = "{{ ti.map_index }}"
#: Ends the agent's options; the command and its arguments follow.
COMMAND_SEPARATOR = "--"


@dataclass(frozen=True)
class Snapshot:
    """A code snapshot: a `.tar.gz` in the tenant's storage, and its sha256 (`task-agent pack` prints it)."""

    uri: str
    sha256: str | None = None


@dataclass(frozen=True)
class AgentTask:
    tenant: Tenant
    dag_id: str
    task_id: str
    snapshot: Snapshot
    command: Sequence[str]
    secrets: Mapping[str, str]
    secret_files: Mapping[str, str]
    deadlines: Deadlines
    #: `--artifacts`, `--output` and static `--input` arguments (data_platform.artifacts).
    data_arguments: Sequence[str] = ()


def agent_arguments(task: AgentTask) -> list[str]:
    """The arguments after the agent's path: `run --snapshot … -- COMMAND…`."""
    arguments = ["run", "--snapshot", task.snapshot.uri]
    if task.snapshot.sha256:
        arguments += ["--snapshot-sha256", task.snapshot.sha256]
    arguments += [
        "--tenant", task.tenant.name,
        "--dag-id", task.dag_id,
        "--task-id", task.task_id,
        "--run-id", RUN_ID_TEMPLATE,
        "--try-number", TRY_NUMBER_TEMPLATE,
        "--map-index", MAP_INDEX_TEMPLATE,
        "--timeout", format_duration(task.deadlines.agent_timeout),
        "--grace", format_duration(task.deadlines.agent_grace),
    ]  # fmt: skip
    for name, reference in task.secrets.items():
        arguments += ["--secret", f"{name}={reference}"]
    for path, reference in task.secret_files.items():
        arguments += ["--secret-file", f"{path}={reference}"]
    if task.secrets or task.secret_files:
        arguments += ["--allowed-vaults", ",".join(task.tenant.allowed_vaults)]
    return [*arguments, *task.data_arguments, COMMAND_SEPARATOR, *task.command]


def with_arguments_before_command(arguments: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`extra` agent options inserted before the `--` that starts the command."""
    split = list(arguments).index(COMMAND_SEPARATOR)
    return [*arguments[:split], *extra, *arguments[split:]]


def check_snapshot(snapshot: Snapshot | str, tenant: Tenant, *, field: str = "snapshot") -> Snapshot:
    if isinstance(snapshot, str):
        snapshot = Snapshot(snapshot)
    if snapshot.sha256 is not None and not _SHA256.match(snapshot.sha256):
        raise PolicyError(
            f"{field}: sha256 {snapshot.sha256!r} is not 64 lowercase hex digits; "
            "use the digest `task-agent pack` printed"
        )
    check_storage(snapshot.uri, tenant, field=field)
    return snapshot


def check_storage(uri: str, tenant: Tenant, *, field: str) -> None:
    """A blob URI must lie in one of the tenant's storage prefixes (its artifacts included)."""
    shown = without_query(uri)
    parts = urlsplit(uri)
    # file:// (the local disk) only where the tenant's storage has such prefixes: those only the
    # policy `data-platform run-local` writes may list (policy.py, platform.local_store).
    local = parts.scheme == "file" and not parts.netloc and is_local_store(tenant.owned_storage)
    if not local and (parts.scheme not in ("https", "http") or not parts.netloc):
        raise PolicyError(
            f"{field}: {shown!r} is not a blob URL; expected "
            "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH in the tenant's storage"
        )
    problem = storage_violation(uri, tenant.owned_storage, f"tenant {tenant.name!r}")
    if problem is not None:
        raise PolicyError(f"{field}: {problem}, or publish it there")


def check_secrets(
    secrets: Mapping[str, str] | None, secret_files: Mapping[str, str] | None, tenant: Tenant
) -> tuple[dict[str, str], dict[str, str]]:
    env = dict(secrets or {})
    files = dict(secret_files or {})
    for name in env:
        if not _ENV_NAME.match(name):
            raise PolicyError(
                f"secrets: {name!r} is not a valid environment variable name; use letters, digits and _"
            )
    for path in files:
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or ".." in pure.parts:
            raise PolicyError(
                f"secret_files: {path!r} must be a relative path without `..` "
                "(it is written under the pod's secrets directory)"
            )
    for field, reference in [*((f"secrets[{k}]", v) for k, v in env.items()),
                             *((f"secret_files[{k}]", v) for k, v in files.items())]:  # fmt: skip
        vault = vault_of(reference)
        if vault is None:
            raise PolicyError(
                f"{field}: {reference!r} is not a Key Vault secret; expected VAULT/NAME[/VERSION] "
                "or https://VAULT.vault.azure.net/secrets/NAME[/VERSION] (vault: 3-24 letters, digits "
                "and dashes; name: letters, digits and dashes)"
            )
        if vault not in {v.lower() for v in tenant.allowed_vaults}:
            allowed = ", ".join(tenant.allowed_vaults) or "none"
            raise PolicyError(
                f"{field}: vault {vault!r} is not allowed for tenant {tenant.name!r} (allowed: {allowed}); "
                "ask the platform team to allow it"
            )
    return env, files


def vault_of(reference: str) -> str | None:
    """The vault name of `VAULT/NAME[/VERSION]` or `https://VAULT.vault.azure.net/secrets/NAME[/VERSION]`."""
    if reference.startswith("https://"):
        parts = urlsplit(reference)
        host = parts.hostname or ""
        segments = [s for s in parts.path.split("/") if s]
        if not host.endswith(_VAULT_HOST_SUFFIXES) or parts.username is not None:
            return None
        if segments[:1] != ["secrets"]:
            return None
        vault, secret = host.split(".", 1)[0], segments[1:]
    elif ":" in reference:
        return None
    else:
        vault, *secret = reference.split("/")
    if not _VAULT_NAME.match(vault) or len(secret) not in (1, 2) or not _SECRET_NAME.match(secret[0]):
        return None
    if len(secret) == 2 and not _SECRET_VERSION.match(secret[1]):
        return None
    return vault.lower()
