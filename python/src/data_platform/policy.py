"""The platform policy: limits, size classes, approved images and tenants, in one place.

The policy is one YAML file (see `config/platform-policy.yaml`) that the Helm chart renders into
a ConfigMap. task-agent reads the same file's `tenants.NAME.allowed_vaults` through
`--policy-file`, so both halves agree on what a tenant may read. Parsing is pure; `load_policy`
is the only function that touches the file system.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from data_platform.cost import CostModel, Rates
from data_platform.units import UnitError, parse_bytes, parse_duration, parse_quantity

#: Where the chart mounts the policy in Airflow's pods; unset, the example in the repository.
POLICY_FILE_VAR = "DATA_PLATFORM_POLICY_FILE"
EXAMPLE_POLICY_FILE = Path(__file__).resolve().parent / "platform-policy.yaml"


class PolicyError(ValueError):
    """A DAG or policy file asks for something the platform does not allow. Raised at parse time."""


@dataclass(frozen=True)
class SizeClass:
    name: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    #: The most memory an out-of-memory retry may raise the limit to.
    max_memory: str

    @property
    def memory_limit_bytes(self) -> int:
        return parse_bytes(self.memory_limit, f"size class {self.name}: memory_limit")

    @property
    def max_memory_bytes(self) -> int:
        return parse_bytes(self.max_memory, f"size class {self.name}: max_memory")


@dataclass(frozen=True)
class Tenant:
    name: str
    namespace: str
    service_account: str
    allowed_vaults: tuple[str, ...]
    #: Blob prefixes (`https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH]`) the tenant owns.
    storage: tuple[str, ...]
    size_classes: tuple[str, ...]
    images: tuple[str, ...]
    max_retries: int | None = None
    #: The blob prefix under which the tenant's tasks write their outputs (`--artifacts`), one
    #: folder per try; None: the tenant's tasks may not declare outputs.
    artifacts: str | None = None
    #: Days after which the chart's lifecycle rule deletes run artifacts; None: the platform's.
    artifact_retention: int | None = None

    @property
    def owned_storage(self) -> tuple[str, ...]:
        """Every prefix a task of the tenant may read: its storage and its artifacts."""
        return (*self.storage, self.artifacts) if self.artifacts else self.storage


@dataclass(frozen=True)
class PlatformPolicy:
    owner: str
    tags: tuple[str, ...]
    retries: int
    max_retries: int
    retry_delay: timedelta
    retry_exponential_backoff: float
    max_retry_delay: timedelta
    execution_timeout: timedelta
    max_execution_timeout: timedelta
    run_deadline: timedelta
    max_run_deadline: timedelta
    skip_exit_code: int
    oom_memory_factor: float
    agent_grace: timedelta
    #: Days a run's artifacts are kept (the chart's Blob lifecycle rule), unless a tenant says.
    artifact_retention: int
    agent_path: str
    default_image: str
    images: Mapping[str, str]
    size_classes: Mapping[str, SizeClass]
    tenants: Mapping[str, Tenant]
    #: Prices of a try's CPU and memory (data_platform.cost); OpenCost's defaults unless set.
    cost: CostModel = field(default_factory=CostModel)
    #: Where the file came from, for messages.
    origin: str = field(default="<policy>", compare=False)

    def tenant(self, name: str) -> Tenant:
        try:
            return self.tenants[name]
        except KeyError:
            known = ", ".join(sorted(self.tenants)) or "none"
            raise PolicyError(
                f"tenant {name!r} is not registered in the platform policy {self.origin} "
                f"(registered: {known}); ask the platform team to add it to the chart's `tenants` values"
            ) from None

    def size_class(self, tenant: Tenant, name: str) -> SizeClass:
        if name not in self.size_classes:
            raise PolicyError(
                f"size {name!r} is not a size class (known: {', '.join(self.size_classes)}); pick one of them"
            )
        if name not in tenant.size_classes:
            raise PolicyError(
                f"size {name!r} is not allowed for tenant {tenant.name!r} "
                f"(allowed: {', '.join(tenant.size_classes)}); pick a smaller class or ask the platform team"
            )
        return self.size_classes[name]

    def image(self, tenant: Tenant, name: str | None) -> str:
        """The approved image reference for a runtime name (`python`), or a PolicyError."""
        name = name or self.default_image
        reference = self.images.get(name)
        if reference is None:
            # A full reference is accepted only if it is one of the approved ones.
            approved = {ref: key for key, ref in self.images.items()}
            if name in approved:
                name, reference = approved[name], name
            else:
                raise PolicyError(
                    f"image {name!r} is not an approved runtime image "
                    f"(approved: {', '.join(sorted(self.images))}); use one of those names"
                )
        if name not in tenant.images:
            raise PolicyError(
                f"image {name!r} is not approved for tenant {tenant.name!r} "
                f"(approved: {', '.join(tenant.images)}); ask the platform team"
            )
        return reference

    def max_retries_for(self, tenant: Tenant) -> int:
        if tenant.max_retries is None:
            return self.max_retries
        return min(tenant.max_retries, self.max_retries)


_PLATFORM_FIELDS = (
    "owner", "tags", "retries", "max_retries", "retry_delay", "retry_exponential_backoff",
    "max_retry_delay", "execution_timeout", "max_execution_timeout", "run_deadline",
    "max_run_deadline", "skip_exit_code", "oom_memory_factor", "agent_grace", "artifact_retention",
    "agent_path", "default_image", "images", "local_store",
)  # fmt: skip
_SIZE_CLASS_FIELDS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "max_memory")
_COST_FIELDS = ("currency", "cpu_hour", "memory_gib_hour", "size_classes")
_RATE_FIELDS = ("cpu_hour", "memory_gib_hour")
_TENANT_FIELDS = (
    "namespace", "service_account", "allowed_vaults", "storage", "size_classes", "images", "max_retries",
    "artifacts", "artifact_retention",
)  # fmt: skip


def parse_policy(document: Any, origin: str) -> PlatformPolicy:
    """Reads a policy document (the YAML file's content). Every error names the field."""
    reader = _Reader(origin)
    root = reader.mapping(document, "")
    platform = reader.mapping(root.get("platform"), "platform", known=_PLATFORM_FIELDS)
    # Only the policy `data-platform run-local` writes says so: then storage and artifacts may be
    # file:// prefixes (the local disk). A deployment's policy refuses them.
    reader.local_store = reader.flag(platform.get("local_store", False), "platform.local_store")
    images = {
        str(key): reader.text(value, f"platform.images.{key}")
        for key, value in reader.mapping(platform.get("images"), "platform.images").items()
    }
    size_classes = {
        str(name): _size_class(reader, str(name), spec)
        for name, spec in reader.mapping(root.get("size_classes"), "size_classes").items()
    }
    policy = PlatformPolicy(
        owner=reader.text(platform.get("owner", "data-platform"), "platform.owner"),
        tags=tuple(reader.texts(platform.get("tags", []), "platform.tags")),
        retries=reader.count(platform.get("retries", 2), "platform.retries"),
        max_retries=reader.count(platform.get("max_retries", 5), "platform.max_retries"),
        retry_delay=reader.duration(platform.get("retry_delay", "2m"), "platform.retry_delay"),
        retry_exponential_backoff=reader.factor(
            platform.get("retry_exponential_backoff", 2.0), "platform.retry_exponential_backoff"
        ),
        max_retry_delay=reader.duration(platform.get("max_retry_delay", "30m"), "platform.max_retry_delay"),
        execution_timeout=reader.duration(
            platform.get("execution_timeout", "2h"), "platform.execution_timeout"
        ),
        max_execution_timeout=reader.duration(
            platform.get("max_execution_timeout", "12h"), "platform.max_execution_timeout"
        ),
        run_deadline=reader.duration(platform.get("run_deadline", "6h"), "platform.run_deadline"),
        max_run_deadline=reader.duration(
            platform.get("max_run_deadline", "24h"), "platform.max_run_deadline"
        ),
        skip_exit_code=reader.exit_code(platform.get("skip_exit_code", 99), "platform.skip_exit_code"),
        oom_memory_factor=reader.factor(platform.get("oom_memory_factor", 1.5), "platform.oom_memory_factor"),
        agent_grace=reader.duration(platform.get("agent_grace", "30s"), "platform.agent_grace"),
        artifact_retention=reader.days(platform.get("artifact_retention", 30), "platform.artifact_retention"),
        agent_path=reader.text(
            platform.get("agent_path", "/usr/local/bin/task-agent"), "platform.agent_path"
        ),
        default_image=reader.text(platform.get("default_image", "python"), "platform.default_image"),
        images=images,
        size_classes=size_classes,
        tenants={
            str(name): _tenant(reader, str(name), spec, size_classes, images)
            for name, spec in reader.mapping(root.get("tenants"), "tenants").items()
        },
        cost=_cost(reader, root.get("cost"), size_classes),
        origin=origin,
    )
    _check_consistent(policy)
    return policy


def load_policy(path: str | os.PathLike[str] | None = None) -> PlatformPolicy:
    """The policy from `path`, `$DATA_PLATFORM_POLICY_FILE`, or the example; read once per file version."""
    chosen = Path(path or os.environ.get(POLICY_FILE_VAR) or EXAMPLE_POLICY_FILE)
    try:
        stat = chosen.stat()
    except OSError as error:
        raise PolicyError(
            f"cannot read the platform policy {chosen}: {error.strerror}; "
            f"set {POLICY_FILE_VAR} to the file the chart mounts"
        ) from None
    return _load_cached(str(chosen), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> PlatformPolicy:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PolicyError(f"cannot read the platform policy {path}: {error}") from None
    return parse_policy(document, path)


def _size_class(reader: _Reader, name: str, spec: Any) -> SizeClass:
    where = f"size_classes.{name}"
    values = reader.mapping(spec, where, known=_SIZE_CLASS_FIELDS)
    fields = {}
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "max_memory"):
        text = reader.text(values.get(key), f"{where}.{key}")
        reader.quantity(text, f"{where}.{key}")
        fields[key] = text
    size = SizeClass(name=name, **fields)
    quantity = reader.quantity
    if quantity(size.cpu_request, where) > quantity(size.cpu_limit, where):
        raise PolicyError(f"{reader.origin}: {where}: cpu_request is above cpu_limit; lower it")
    if quantity(size.memory_request, where) > quantity(size.memory_limit, where):
        raise PolicyError(f"{reader.origin}: {where}: memory_request is above memory_limit; lower it")
    if quantity(size.memory_limit, where) > quantity(size.max_memory, where):
        raise PolicyError(f"{reader.origin}: {where}: memory_limit is above max_memory; raise max_memory")
    return size


def _cost(reader: _Reader, spec: Any, size_classes: Mapping[str, SizeClass]) -> CostModel:
    values = reader.mapping(spec, "cost", known=_COST_FIELDS)
    default = _rates(reader, values, "cost", Rates())
    per_class = {}
    for name, rates in reader.mapping(values.get("size_classes"), "cost.size_classes").items():
        where = f"cost.size_classes.{name}"
        if str(name) not in size_classes:
            raise PolicyError(
                f"{reader.origin}: {where}: {name!r} is not a size class (known: {', '.join(size_classes)})"
            )
        values_of_class = reader.mapping(rates, where, known=_RATE_FIELDS)
        per_class[str(name)] = _rates(reader, values_of_class, where, default)
    currency = reader.text(values.get("currency", "USD"), "cost.currency")
    return CostModel(currency=currency, default=default, size_classes=per_class)


def _rates(reader: _Reader, values: Mapping[str, Any], where: str, fallback: Rates) -> Rates:
    return Rates(
        cpu_hour=reader.price(values.get("cpu_hour", fallback.cpu_hour), f"{where}.cpu_hour"),
        memory_gib_hour=reader.price(
            values.get("memory_gib_hour", fallback.memory_gib_hour), f"{where}.memory_gib_hour"
        ),
    )


def _tenant(
    reader: _Reader, name: str, spec: Any, size_classes: Mapping[str, SizeClass], images: Mapping[str, str]
) -> Tenant:
    where = f"tenants.{name}"
    values = reader.mapping(spec, where, known=_TENANT_FIELDS)
    tenant = Tenant(
        name=name,
        namespace=reader.text(values.get("namespace", f"tenant-{name}"), f"{where}.namespace"),
        service_account=reader.text(
            values.get("service_account", f"{name}-tasks"), f"{where}.service_account"
        ),
        allowed_vaults=tuple(reader.texts(values.get("allowed_vaults", []), f"{where}.allowed_vaults")),
        storage=tuple(
            reader.storage_prefix(entry, f"{where}.storage")
            for entry in reader.texts(values.get("storage", []), f"{where}.storage")
        ),
        size_classes=tuple(
            reader.texts(values.get("size_classes", list(size_classes)), f"{where}.size_classes")
        ),
        images=tuple(reader.texts(values.get("images", list(images)), f"{where}.images")),
        max_retries=(
            None
            if values.get("max_retries") is None
            else reader.count(values.get("max_retries"), f"{where}.max_retries")
        ),
        artifacts=(
            None
            if values.get("artifacts") is None
            else reader.blob_prefix(values.get("artifacts"), f"{where}.artifacts")
        ),
        artifact_retention=(
            None
            if values.get("artifact_retention") is None
            else reader.days(values.get("artifact_retention"), f"{where}.artifact_retention")
        ),
    )
    for size in tenant.size_classes:
        if size not in size_classes:
            raise PolicyError(
                f"{reader.origin}: {where}.size_classes names {size!r}, which is not a size class "
                f"(known: {', '.join(size_classes)})"
            )
    for image in tenant.images:
        if image not in images:
            raise PolicyError(
                f"{reader.origin}: {where}.images names {image!r}, which is not in platform.images "
                f"(known: {', '.join(images)})"
            )
    return tenant


def _check_consistent(policy: PlatformPolicy) -> None:
    checks = [
        (policy.retries <= policy.max_retries, "platform.retries is above platform.max_retries"),
        (
            policy.execution_timeout <= policy.max_execution_timeout,
            "platform.execution_timeout is above platform.max_execution_timeout",
        ),
        (
            policy.run_deadline <= policy.max_run_deadline,
            "platform.run_deadline is above platform.max_run_deadline",
        ),
        (
            policy.retry_delay <= policy.max_retry_delay,
            "platform.retry_delay is above platform.max_retry_delay",
        ),
        (policy.default_image in policy.images, "platform.default_image is not in platform.images"),
    ]
    for ok, problem in checks:
        if not ok:
            raise PolicyError(f"{policy.origin}: {problem}; fix the policy file")


class _Reader:
    """Typed access to the YAML document; every error names the file and the field."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        #: `platform.local_store`: file:// prefixes are accepted (data-platform run-local's policy).
        self.local_store = False

    def fail(self, where: str, expected: str, value: Any) -> PolicyError:
        return PolicyError(f"{self.origin}: {where or 'the document'}: expected {expected}, got {value!r}")

    def mapping(self, value: Any, where: str, known: Sequence[str] | None = None) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(where, "a mapping", value)
        # A misspelt key would silently fall back to the platform's default, which may be looser.
        unknown = sorted(str(key) for key in value if known is not None and str(key) not in known)
        if unknown:
            raise PolicyError(
                f"{self.origin}: {where}: unknown field {unknown[0]!r} (known: {', '.join(known or ())}); "
                "check its spelling"
            )
        return value

    def text(self, value: Any, where: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
            raise self.fail(where, "a non-empty string", value)
        return str(value)

    def texts(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise self.fail(where, "a list of strings", value)
        return [self.text(item, f"{where}[{index}]") for index, item in enumerate(value)]

    def count(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where, "a whole number, 0 or more", value)
        return value

    def days(self, value: Any, where: str) -> int:
        days = self.count(value, where)
        if days < 1:
            raise self.fail(where, "a number of days, 1 or more", value)
        return days

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def storage_prefix(self, text: str, where: str) -> str:
        if urlsplit(text).scheme.lower() == "file" and not self.local_store:
            raise self.fail(where, "a blob prefix (file:// only in data-platform run-local's policy)", text)
        return text

    def blob_prefix(self, value: Any, where: str) -> str:
        text = self.text(value, where)
        parts = urlsplit(text)
        if parts.scheme == "file" and self.local_store:
            # The local disk (data-platform run-local): an absolute path, no host, no query.
            if parts.netloc or parts.query or parts.fragment or not parts.path.strip("/"):
                raise self.fail(where, "a local store prefix file:///ABSOLUTE/PATH", value)
            return text.rstrip("/")
        # http only for local emulators (Azurite); a query could carry a SAS into every pod's arguments.
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            expected = "a blob prefix https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH] without a query"
            raise self.fail(where, expected, value)
        if not parts.path.strip("/"):
            raise self.fail(where, "a blob prefix that names a container", value)
        return text.rstrip("/")

    def exit_code(self, value: Any, where: str) -> int:
        code = self.count(value, where)
        if not 1 <= code <= 255:
            raise self.fail(where, "an exit code from 1 to 255", value)
        return code

    def factor(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
            raise self.fail(where, "a number, 1 or more", value)
        return float(value)

    def price(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(where, "a price, 0 or more (currency units per hour)", value)
        return float(value)

    def duration(self, value: Any, where: str) -> timedelta:
        try:
            return parse_duration(value, f"{self.origin}: {where}")
        except (UnitError, TypeError, AttributeError):
            raise self.fail(where, "a duration like 90s, 30m or 2h", value) from None

    def quantity(self, value: str, where: str) -> Any:
        try:
            return parse_quantity(value, f"{self.origin}: {where}")
        except UnitError as error:
            raise PolicyError(str(error)) from None
