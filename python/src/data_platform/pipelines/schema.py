"""The published JSON Schema of pipeline files, from the models the loader validates with:
`python -m data_platform.pipelines.schema > schema/pipeline.schema.json` (a test keeps them equal)."""

from __future__ import annotations

import json
from typing import Any

from data_platform.pipelines.model import Pipeline


def pipeline_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(pipeline_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
