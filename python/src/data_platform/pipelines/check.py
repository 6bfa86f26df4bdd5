"""Everything the DAG processor would check about one pipeline file, as a list of problems."""

from __future__ import annotations

from pathlib import Path

from airflow.serialization.serialized_objects import DagSerialization

from data_platform.pipelines.loader import load_pipeline
from data_platform.pipelines.problems import PipelineError, Problem
from data_platform.policy import PlatformPolicy


def check_file(path: Path, policy: PlatformPolicy) -> list[Problem]:
    """No problems, or every problem of `path` (reported under the path as given)."""
    try:
        dag = load_pipeline(path, shown_as=str(path), policy=policy)
        # What the DagBag does after running a DAG file, then what the processor sends the scheduler.
        dag.validate()  # type: ignore[no-untyped-call]
        DagSerialization.to_dict(dag)
    except PipelineError as error:
        return list(error.problems)
    except Exception as error:  # Airflow's own checks: the DAG processor would record them too
        return [Problem(str(path), 1, 1, "", f"{type(error).__name__}: {error}")]
    return []
