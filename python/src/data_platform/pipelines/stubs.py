"""One generated `.py` stub per pipeline file: what makes Airflow's DAG processor see a YAML file,
one import error per broken pipeline, and nothing else.

The DAG processor lists only `.py` files and records import errors per file, so each YAML file
gets its own stub (a loader generating many DAGs would lose all of them when it raised). The stub
names "airflow" and "DAG" (safe-mode discovery), and imports the Kubernetes pod operator by its
`airflow.` name so that the processor pre-imports it once in its manager
(`[dag_processor] parsing_pre_import_modules`, on by default) instead of in every parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_platform.pipelines.location import PIPELINES_DIR, SUFFIX

STUB_MARKER = "# data-platform pipeline stub"
STUB = f'''"""Airflow DAG of the pipeline file next to this one (same name, .yaml). Generated: do not edit."""

{STUB_MARKER}: `data-platform stubs` writes and removes these files.
import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401  (pre-imported once by the DAG processor)

from data_platform.pipelines.loader import pipeline_dag

dag = pipeline_dag(__file__)
'''


@dataclass(frozen=True)
class StubChanges:
    written: tuple[Path, ...]
    removed: tuple[Path, ...]


def pipeline_files(dag_folder: Path) -> Iterable[Path]:
    return sorted((dag_folder / PIPELINES_DIR).glob(f"*/*{SUFFIX}"))


def sync_stubs(dag_folder: Path) -> StubChanges:
    """Writes a stub next to every `pipelines/<tenant>/<name>.yaml` and removes stubs whose YAML
    is gone. A `.py` there that is not a stub is left alone (and reported by the caller's review:
    tenants' folders should hold YAML only)."""
    written, removed = [], []
    for yaml_path in pipeline_files(dag_folder):
        stub = yaml_path.with_suffix(".py")
        if not stub.exists() or stub.read_text(encoding="utf-8") != STUB:
            if stub.exists() and STUB_MARKER not in stub.read_text(encoding="utf-8"):
                continue
            stub.write_text(STUB, encoding="utf-8")
            written.append(stub)
    for stub in sorted((dag_folder / PIPELINES_DIR).glob("*/*.py")):
        if not stub.with_suffix(SUFFIX).exists() and STUB_MARKER in stub.read_text(encoding="utf-8"):
            stub.unlink()
            removed.append(stub)
    return StubChanges(tuple(written), tuple(removed))
