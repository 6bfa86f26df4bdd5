"""A pipeline file, from its path to its DAG: the one entry point of the stubs and of `validate`."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from data_platform.pipelines.build import build_dag
from data_platform.pipelines.location import check_owner, locate
from data_platform.pipelines.problems import PipelineError, Problem
from data_platform.pipelines.yaml_source import MAX_BYTES
from data_platform.policy import PlatformPolicy, PolicyError, load_policy


def load_pipeline(
    path: str | Path, *, shown_as: str | None = None, policy: PlatformPolicy | None = None
) -> DAG:
    """The DAG of the pipeline file at `path` (or of the stub next to it), or a PipelineError whose
    lines are `SHOWN_AS:line:col: error: …` (default: `pipelines/<tenant>/<name>.yaml`)."""
    try:
        location = locate(path)
    except PolicyError as error:
        raise PipelineError([Problem(shown_as or str(path), 1, 1, "", str(error))]) from None
    shown = shown_as or location.display
    try:
        policy = policy or load_policy()
        check_owner(location, policy)
        # Checked before reading: a 50 MB file costs a stat, not 50 MB of memory.
        size = location.yaml_path.stat().st_size
        if size > MAX_BYTES:
            raise PolicyError(
                f"the file is {size} bytes, above the limit of {MAX_BYTES}; a pipeline file holds one "
                "pipeline: split it"
            )
        with location.yaml_path.open("rb") as stream:
            text = stream.read(MAX_BYTES + 1).decode("utf-8")
    except FileNotFoundError:
        problem = "no such file (its stub outlived it: run `data-platform stubs` to remove the stub)"
        raise PipelineError([Problem(shown, 1, 1, "", problem)]) from None
    except UnicodeDecodeError as error:
        raise PipelineError([Problem(shown, 1, 1, "", f"not UTF-8 text: {error.reason}")]) from None
    except (PolicyError, OSError) as error:
        raise PipelineError([Problem(shown, 1, 1, "", str(error))]) from None
    return build_dag(text, shown, dag_id=location.dag_id, tenant=location.tenant, policy=policy)


def pipeline_dag(stub_file: str) -> DAG:
    """What a generated stub calls with its own `__file__`: the DAG of the YAML file next to it.
    A broken pipeline raises here, so Airflow records the import error against this stub only."""
    try:
        return load_pipeline(stub_file)
    except PipelineError as error:
        # Re-raised from here without the loader's frames: the import error is the problems.
        raise PipelineError(error.problems) from None
