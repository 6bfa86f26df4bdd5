"""OpenLineage events as the platform emits them, read back and checked against the pinned spec.

`openlineage-spec/` holds the specification's JSON Schemas (see its README); the platform's own
facets are described by `schema/openlineage/data-platform-facets.json`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from conftest import REPO
from data_platform.lineage import FACETS_SCHEMA

SPEC = Path(__file__).resolve().parent / "openlineage-spec"
PLATFORM_FACETS = REPO / "schema" / "openlineage" / "data-platform-facets.json"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def transport_env(events: Path) -> dict[str, str]:
    """What turns the provider's file transport on, as an operator would in airflow.cfg."""
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "data-platform",
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@cache
def registry() -> Registry:
    documents = [
        json.loads(p.read_text())
        for p in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]
    ]
    documents.append(json.loads(PLATFORM_FACETS.read_text()))
    assert documents[-1]["$id"] == FACETS_SCHEMA, "the facets' _schemaURL must name the committed schema"
    return Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in documents)


def _validate(instance: Any, ref: str) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": ref}, registry=registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(instance)


def _facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(f"run.{k}", v) for k, v in event["run"].get("facets", {}).items()]
    found += [(f"job.{k}", v) for k, v in event["job"].get("facets", {}).items()]
    for side in ("inputs", "outputs"):
        for dataset in event.get(side, []):
            for group in ("facets", "inputFacets", "outputFacets"):
                found += [(f"{side}.{dataset['name']}.{k}", v) for k, v in dataset.get(group, {}).items()]
    return found


def validate(event: dict[str, Any]) -> list[str]:
    """Checks the event and every standard or platform facet in it; returns the facets left unchecked
    (the Airflow provider's own, described in its repository, not the spec's)."""
    _validate(event, RUN_EVENT)
    unchecked = []
    for where, facet in _facets(event):
        url = facet["_schemaURL"]
        if url.startswith("https://openlineage.io/spec/") or url.startswith(FACETS_SCHEMA):
            try:
                _validate(facet, url)
            except jsonschema.ValidationError as error:
                raise AssertionError(f"{where}: {error.message} (against {url})") from None
        else:
            unchecked.append(where)
    return unchecked


def by_task(events: list[dict[str, Any]], dag_id: str) -> dict[str, list[dict[str, Any]]]:
    tasks: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        name = event["job"]["name"]
        if name.startswith(f"{dag_id}."):
            tasks.setdefault(name.removeprefix(f"{dag_id}."), []).append(event)
    return tasks
