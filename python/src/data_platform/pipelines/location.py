"""Whose pipeline a file is, from where it lives: `…/pipelines/<tenant>/<name>.yaml`.

The tenant is never read from the file, so a tenant who can only write into its own folder cannot
declare a DAG for another. The DAG id is `<tenant>_<name>`, so no tenant can take another's id
either (and a name that would fall into a longer tenant's `<tenant>_` prefix is refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data_platform.policy import PlatformPolicy, PolicyError

PIPELINES_DIR = "pipelines"
SUFFIX = ".yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class PipelineLocation:
    yaml_path: Path
    tenant: str
    name: str

    @property
    def dag_id(self) -> str:
        return f"{self.tenant}_{self.name}"

    @property
    def display(self) -> str:
        """`pipelines/<tenant>/<name>.yaml`: the path as the tenant's repository shows it."""
        return f"{PIPELINES_DIR}/{self.tenant}/{self.yaml_path.name}"


def locate(path: str | Path) -> PipelineLocation:
    """The tenant and name of a pipeline file (or of its stub `.py`), or a PolicyError saying where
    it must go."""
    path = Path(path)
    yaml_path = path.with_suffix(SUFFIX) if path.suffix == ".py" else path
    if yaml_path.suffix not in (SUFFIX, ".yml") or yaml_path.parent.parent.name != PIPELINES_DIR:
        raise PolicyError(
            f"{path}: a pipeline file lives at {PIPELINES_DIR}/<tenant>/<name>.yaml (the folder names "
            "the tenant); move it there"
        )
    name = yaml_path.stem
    if not _NAME.match(name):
        raise PolicyError(
            f"{path}: the file name {name!r} must be letters, digits, _ and - (at most 100), starting "
            "with a letter or digit; it names the DAG"
        )
    return PipelineLocation(yaml_path=yaml_path, tenant=yaml_path.parent.name, name=name)


def check_owner(location: PipelineLocation, policy: PlatformPolicy) -> None:
    """The tenant is registered, and the DAG id is not in another tenant's `<tenant>_` prefix."""
    policy.tenant(location.tenant)
    for other in policy.tenants:
        if other != location.tenant and location.dag_id.startswith(f"{other}_"):
            raise PolicyError(
                f"the DAG id {location.dag_id!r} would start with tenant {other!r}'s prefix "
                f"{other + '_'!r}; rename the file"
            )
