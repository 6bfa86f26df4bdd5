"""OpenLineage for the platform's tasks: datasets, job and run facets, and the pod's parent context.

apache-airflow-providers-openlineage's listener emits START, COMPLETE and FAIL for every task try
and asks the operator for its part through `get_openlineage_facets_on_start/_on_complete/
_on_failure`. The platform's part (docs/observability.md):

- datasets: a pod task's inputs and outputs as blobs (`wasbs://CONTAINER@ACCOUNT.blob.core.windows.net`
  or `abfss://…dfs.core.windows.net`, name = the blob path; `file://HOST` for a local store), each
  with its sha256 as the dataset version, sizes and file counts as statistics, and for inputs the
  agent's sha256 check as a data-quality assertion; sftp_upload's source and `sftp://HOST:PORT`;
- job facets: ownership (tenant and owner), tags, the snapshot as source code location (URI
  without SAS, its sha256 as version), job type;
- run facets: processing engine and error message, `dataPlatformCost` (what the try cost) and
  `taskAgent` (what the agent's record adds), both described by
  `schema/openlineage/data-platform-facets.json`.

The provider fills in some standard facets itself and its values win over an operator's
(`parent` = the DAG run, `processing_engine` = Airflow, `ownership` = the DAG owner, `tags` = the
DAG's tags, which carry `tenant:NAME`, `jobType`, `errorMessage` = the task's exception, which
quotes the record); task-agent's own name and version are in the `taskAgent` facet.

Nothing here may fail or slow a task: the end-of-try lineage is built in the worker right after the
try ends, from what it already holds (no I/O); any error is logged in one line, counted in
`data_platform.lineage.failures`, and the task gets empty lineage instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attr

from data_platform import telemetry
from data_platform.storage import without_query

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage as _OperatorLineage

    #: The provider's OperatorLineage (inputs, outputs, run and job facets).
    OperatorLineage = _OperatorLineage[Any, Any]

log = logging.getLogger(__name__)

#: Where the platform's own facets are described; `_schemaURL` of each is this + `#/$defs/NAME`.
FACETS_SCHEMA = (
    "https://raw.githubusercontent.com/OWNER/REPO/main/schema/openlineage/data-platform-facets.json"
)
COST_FACET = "dataPlatformCost"
AGENT_FACET = "taskAgent"
#: Hosts of Azure Blob Storage and of Data Lake Storage Gen2 (the OpenLineage naming spec's Azure forms).
_BLOB_SUFFIX = ".blob.core.windows.net"
_DFS_SUFFIX = ".dfs.core.windows.net"


def _facet_classes() -> tuple[type, type]:
    """The platform's facet classes, made on first use (the OpenLineage client is a worker-side import)."""
    global _FACETS
    if _FACETS is None:
        from openlineage.client.facet_v2 import RunFacet

        @attr.define
        class DataPlatformCostRunFacet(RunFacet):  # type: ignore[misc]
            currency: str
            total: float
            cpu: float
            memory: float
            cpu_core_hours: float
            memory_gib_hours: float
            rates: dict[str, float]
            rule: str
            usage: dict[str, Any]
            tenant: str
            dag_id: str
            task_id: str
            size_class: str | None
            outcome: str
            try_number: int | None

            @staticmethod
            def _get_schema() -> str:
                return f"{FACETS_SCHEMA}#/$defs/DataPlatformCostRunFacet"

        @attr.define
        class TaskAgentRunFacet(RunFacet):  # type: ignore[misc]
            engine: dict[str, Any]
            tenant: str
            size_class: str | None
            verdict: str
            status: str | None = None
            phase: str | None = None
            exit_code: int | None = None
            child_exit_code: int | None = None
            signal: str | None = None
            retryable: bool | None = None
            error: dict[str, Any] | None = None
            durations_ms: dict[str, Any] | None = None
            snapshot: dict[str, Any] | None = None
            usage: dict[str, Any] | None = None
            trace_id: str | None = None

            @staticmethod
            def _get_schema() -> str:
                return f"{FACETS_SCHEMA}#/$defs/TaskAgentRunFacet"

        _FACETS = (DataPlatformCostRunFacet, TaskAgentRunFacet)
    return _FACETS


_FACETS: tuple[type, type] | None = None


def dataset_of(uri: str) -> tuple[str, str] | None:
    """(namespace, name) of a location by the OpenLineage naming spec, or None if it names none.

    `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH` → `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net`,
    `PATH`; the `dfs` host → `abfss://`; an emulator's path-style URL (Azurite:
    `http://HOST:PORT/ACCOUNT/CONTAINER/PATH`) is named as the account it stands for; `file:///PATH`
    → `file://`, `/PATH`; `sftp://HOST:PORT/PATH` as it is."""
    parts = urlsplit(without_query(uri))
    host = (parts.hostname or "").lower()
    if parts.scheme in ("https", "http"):
        segments = parts.path.lstrip("/").split("/")
        if host.endswith((_BLOB_SUFFIX, _DFS_SUFFIX)):
            container, path = segments[0], segments[1:]
            scheme = "abfss" if host.endswith(_DFS_SUFFIX) else "wasbs"
            service = host
        elif len(segments) >= 2:
            account, container, path = segments[0], segments[1], segments[2:]
            scheme, service = "wasbs", f"{account}{_BLOB_SUFFIX}"
        else:
            return None
        if not container or not path:
            return None
        return f"{scheme}://{container}@{service}", unquote("/".join(path))
    if parts.scheme == "file":
        return f"file://{parts.netloc}", unquote(parts.path)
    if parts.scheme == "sftp" and host:
        return f"sftp://{host}:{parts.port or 22}", unquote(parts.path) or "/"
    return None


def guarded(
    build: Callable[[], OperatorLineage],
    *,
    tenant: str,
    dag_id: str,
    task_id: str,
    stage: str,
    logger: Any = None,
) -> OperatorLineage:
    """`build()`, or empty lineage after one log line and one count in the metric."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    try:
        return build()
    except Exception as error:
        (logger or log).warning(
            "OpenLineage: the %s lineage of %s.%s could not be built (%s: %s); the task goes on without it",
            stage, dag_id, task_id, type(error).__name__, error,
        )  # fmt: skip
        with contextlib.suppress(Exception):  # the metric must not fail the task either
            telemetry.lineage_failed(
                tenant=tenant, dag_id=dag_id, task_id=task_id, stage=stage, reason=type(error).__name__
            )
        return OperatorLineage()


def job_facets(
    *, tenant: str, owner: str, tags: Iterable[str], snapshot: tuple[str, str | None] | None, job_type: str
) -> dict[str, Any]:
    from openlineage.client.facet_v2 import job_type_job, ownership_job, source_code_location_job, tags_job

    facets: dict[str, Any] = {
        "ownership": ownership_job.OwnershipJobFacet(
            owners=[
                ownership_job.Owner(name=f"tenant:{tenant}", type="TENANT"),
                *(ownership_job.Owner(name=name.strip(), type="OWNER") for name in owner.split(",") if name),
            ]
        ),
        "tags": tags_job.TagsJobFacet(
            tags=[
                tags_job.TagsJobFacetFields(key=tag, value=tag, source="DATA_PLATFORM")
                for tag in sorted(tags)
            ]
        ),
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DATA_PLATFORM", jobType=job_type
        ),
    }
    if snapshot is not None:
        uri, sha256 = snapshot
        facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="snapshot", url=without_query(uri), version=sha256
        )
    return facets


def input_dataset(
    uri: str, artifact: Mapping[str, Any] | None = None, *, verified_by: str | None = "task-agent"
) -> Any:
    """An input; with the record's entry, its version, statistics and the agent's sha256 check."""
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as assertions
    from openlineage.client.facet_v2 import data_quality_metrics_input_dataset as metrics
    from openlineage.client.facet_v2 import dataset_version_dataset as version
    from openlineage.client.facet_v2 import input_statistics_input_dataset as statistics

    found = dataset_of(uri)
    if found is None:
        raise ValueError(f"{without_query(uri)!r} has no OpenLineage dataset name")
    facets: dict[str, Any] = {}
    input_facets: dict[str, Any] = {}
    if artifact is not None:
        facets["version"] = version.DatasetVersionDatasetFacet(datasetVersion=artifact["sha256"])
        input_facets["inputStatistics"] = statistics.InputStatisticsInputDatasetFacet(
            size=artifact["bytes"], fileCount=artifact["files"]
        )
        input_facets["dataQualityMetrics"] = metrics.DataQualityMetricsInputDatasetFacet(
            columnMetrics={}, bytes=artifact["bytes"], fileCount=artifact["files"]
        )
    if artifact is not None and verified_by is not None:
        input_facets["dataQualityAssertions"] = assertions.DataQualityAssertionsDatasetFacet(
            assertions=[
                assertions.Assertion(
                    assertion="sha256_matches_recorded", success=True, expected=artifact["sha256"],
                    description=f"{verified_by} checked the bytes it read against the expected sha256",
                )
            ]
        )  # fmt: skip
    return InputDataset(namespace=found[0], name=found[1], facets=facets, inputFacets=input_facets)


def output_dataset(uri: str, artifact: Mapping[str, Any] | None = None) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset as version
    from openlineage.client.facet_v2 import output_statistics_output_dataset as statistics

    found = dataset_of(uri)
    if found is None:
        raise ValueError(f"{without_query(uri)!r} has no OpenLineage dataset name")
    facets: dict[str, Any] = {}
    output_facets: dict[str, Any] = {}
    if artifact is not None:
        facets["version"] = version.DatasetVersionDatasetFacet(datasetVersion=artifact["sha256"])
        output_facets["outputStatistics"] = statistics.OutputStatisticsOutputDatasetFacet(
            size=artifact["bytes"], fileCount=artifact["files"]
        )
    return OutputDataset(namespace=found[0], name=found[1], facets=facets, outputFacets=output_facets)


def run_facets(
    *,
    tenant: str,
    dag_id: str,
    task_id: str,
    size_class: str | None,
    verdict: str,
    message: str | None,
    record: Mapping[str, Any] | None,
    cost: Mapping[str, Any] | None,
    try_number: int | None,
    failed: bool,
) -> dict[str, Any]:
    """The end-of-try run facets: processing engine, error message, cost and the record's additions."""
    from openlineage.client.facet_v2 import error_message_run, processing_engine_run

    cost_class, agent_class = _facet_classes()
    version = str(record["agent_version"]) if record and record.get("agent_version") else None
    facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=version or "unknown", name="task-agent"
        ),
        AGENT_FACET: agent_class(
            engine={"name": "task-agent", "version": version},
            tenant=tenant,
            size_class=size_class,
            verdict=verdict,
            **{key: record.get(key) for key in _RECORD_FIELDS} if record else {},
        ),
    }
    if cost is not None:
        facets[COST_FACET] = cost_class(
            **{key: cost[key] for key in _COST_FIELDS},
            tenant=tenant,
            dag_id=dag_id,
            task_id=task_id,
            size_class=size_class,
            outcome=verdict,
            try_number=try_number,
        )
    if failed and message:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python"
        )
    return facets


_RECORD_FIELDS = (
    "status", "phase", "exit_code", "child_exit_code", "signal", "retryable", "error", "durations_ms",
    "snapshot", "usage", "trace_id",
)  # fmt: skip
_COST_FIELDS = (
    "currency",
    "total",
    "cpu",
    "memory",
    "cpu_core_hours",
    "memory_gib_hours",
    "rates",
    "rule",
    "usage",
)


def lineage(
    inputs: Sequence[Any] = (), outputs: Sequence[Any] = (), *, run: Mapping[str, Any] | None = None,
    job: Mapping[str, Any] | None = None,
) -> OperatorLineage:  # fmt: skip
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=list(inputs), outputs=list(outputs), run_facets=dict(run or {}), job_facets=dict(job or {})
    )


def parent_environment(ti: Any) -> dict[str, str]:
    """What a child process reads to link its own lineage to this task's run: `OPENLINEAGE_CONTEXT`
    (the JSON the current OpenLineage integrations read first) and the older
    `OPENLINEAGE_PARENT_ID` / `OPENLINEAGE_ROOT_PARENT_ID` (`NAMESPACE/JOB/RUN_ID`)."""
    import json

    from airflow.providers.openlineage.plugins import macros

    parent = macros.lineage_parent_id(ti)
    root = macros.lineage_root_parent_id(ti)
    namespace, job, run_id = parent.rsplit("/", 2)
    root_namespace, root_job, root_run_id = root.rsplit("/", 2)
    context = {
        "parent": {
            "run": {"runId": run_id},
            "job": {"namespace": namespace, "name": job},
            "root": {"run": {"runId": root_run_id}, "job": {"namespace": root_namespace, "name": root_job}},
        }
    }
    return {
        "OPENLINEAGE_CONTEXT": json.dumps(context, separators=(",", ":")),
        "OPENLINEAGE_PARENT_ID": parent,
        "OPENLINEAGE_ROOT_PARENT_ID": root,
    }
