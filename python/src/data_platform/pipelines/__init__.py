"""Pipelines as data: one YAML file per pipeline at `pipelines/<tenant>/<name>.yaml`, checked
against the published schema and the platform policy, built by the same factories as a Python DAG.

- `model`: the format (and the JSON Schema's source); `yaml_source`: safe YAML with line/col;
- `build`: checks and builds the DAG; `location`: tenant and DAG id from the path;
- `loader`: path to DAG (the stubs' and `data-platform validate`'s entry); `stubs`: one `.py`
  stub per YAML so Airflow's DAG processor sees it.
"""

from data_platform.pipelines.problems import PipelineError, Problem

__all__ = ["PipelineError", "Problem"]
