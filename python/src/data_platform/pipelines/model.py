"""The pipeline file format, version 1: what a tenant may write, as pydantic models.

These definitions are the single source of both the loader's schema check and the published
JSON Schema (`schema/pipeline.schema.json`, written by `python -m data_platform.pipelines.schema`).
They describe shapes only; what the tenant may *ask for* (sizes, vaults, storage, limits) is the
platform policy's, checked by the same factories a Python DAG uses (data_platform.pipelines.build).

The tenant is deliberately not a field: it is the folder the file lives in.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "data-platform/v1"
KIND = "Pipeline"

#: Human forms of the patterns below, for error messages (a regex is no help to a tenant).
PATTERN_FORMS: dict[str, str] = {}


def _text(pattern: str, form: str, **extra: object) -> object:
    PATTERN_FORMS[pattern] = form
    return Field(pattern=pattern, description=form, **extra)  # type: ignore[call-overload]


DURATION = r"^([0-9]+(ms|s|m|h|d))+$"
Duration = Annotated[str, _text(DURATION, "a duration such as 90s, 30m, 2h or 1h30m")]
TASK_ID = r"^[A-Za-z0-9_-]{1,100}$"
TaskId = Annotated[str, _text(TASK_ID, "a task id: letters, digits, _ and -, at most 100")]
PATH = r"^[^=#,\x00-\x1f\x7f]+$"
DataPath = Annotated[str, _text(PATH, "a file or directory path such as /data/out.csv (no = # or ,)")]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, _text(ENV_NAME, "a variable name: letters, digits and _, not starting with a digit")]
SHA256 = r"^[0-9a-f]{64}$"
Sha256 = Annotated[str, _text(SHA256, "a sha256: 64 lowercase hex digits, as `task-agent pack` prints")]
BLOB_URI = r"^https://"
BlobUri = Annotated[str, _text(BLOB_URI, "an https:// blob URI of the tenant's storage")]
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
Date = Annotated[str, _text(DATE, "a date such as 2026-01-01")]
TRIGGER_RULES = (
    "all_success", "all_failed", "all_done", "all_done_min_one_success", "all_skipped", "one_success",
    "one_done", "one_failed", "none_failed", "none_skipped", "none_failed_min_one_success", "always",
)  # fmt: skip
TriggerRule = Literal[
    "all_success", "all_failed", "all_done", "all_done_min_one_success", "all_skipped", "one_success",
    "one_done", "one_failed", "none_failed", "none_skipped", "none_failed_min_one_success", "always",
]  # fmt: skip
Text = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    """No coercion ("5" is not 5), no unknown fields (a misspelt key would silently be ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Snapshot(Strict):
    """The tenant's code: a .tar.gz published by `task-agent publish`, and its digest."""

    uri: BlobUri
    sha256: Sha256 | None = None


class OutputSpec(Strict):
    """An output with options; a plain path string is the same with every option off."""

    path: DataPath
    archive: bool = Field(False, description="a directory packed into one .tar.gz blob")
    optional: bool = Field(False, description="a missing path is skipped instead of failing")
    asset: bool = Field(False, description="an Airflow Asset other DAGs can be scheduled on")


class OutputOf(Strict):
    """A named output of an upstream task of this pipeline (`task.output(PATH)` in Python)."""

    task: TaskId
    output: DataPath


class TaskBase(Strict):
    upstream: list[TaskId] = Field(default_factory=list, description="tasks that must finish first")
    retries: Annotated[int, Field(ge=0)] | None = Field(None, description="at most the policy's limit")
    retry_delay: Duration | None = None
    max_retry_delay: Duration | None = None
    trigger_rule: TriggerRule | None = None
    doc: str | None = Field(None, description="shown in Airflow's task details")


class AksPythonTask(TaskBase):
    """`python SCRIPT ARGS` from the snapshot, in a pod of the tenant, under task-agent."""

    type: Literal["aks_python"]
    snapshot: BlobUri | Snapshot | None = Field(None, description="defaults to the pipeline's snapshot")
    script: Text
    args: list[str] = Field(default_factory=list)
    size: Text | None = Field(None, description="a size class the tenant may use (default small)")
    timeout: Duration | None = Field(None, description="at most the pipeline's execution_timeout")
    secrets: dict[EnvName, Text] | None = Field(None, description="VARIABLE: vault/secret[/version]")
    secret_files: dict[DataPath, Text] | None = Field(
        None, description="path under /run/secrets: vault/secret"
    )
    env: dict[EnvName, str] | None = None
    image: Text | None = Field(None, description="an approved runtime image name (default python)")
    outputs: list[DataPath | OutputSpec] | None = None
    inputs: list[DataPath | OutputOf] | dict[DataPath, str | OutputOf] | None = Field(
        None,
        description="paths upstream tasks declare, or {PATH: upstream path | {task, output} | blob URI}",
    )


class PythonTask(TaskBase):
    """A callable the platform registered, on the Airflow worker (no pod): glue only."""

    type: Literal["python"]
    callable: Text = Field(description="the name of a callable the platform registered")
    op_kwargs: dict[str, str | int | float | bool | None] | None = None
    timeout: Duration | None = None


class DummyTask(TaskBase):
    """Nothing (EmptyOperator): joins and fan-outs."""

    type: Literal["dummy"]


class SftpUploadTask(TaskBase):
    """Uploads an upstream output, a local file or a blob of the tenant's storage to a partner."""

    type: Literal["sftp_upload"]
    source: str | OutputOf
    remote_path: Text
    conn_id: Text = Field(description="the Airflow connection of the partner's SFTP server")


Task = Annotated[AksPythonTask | PythonTask | DummyTask | SftpUploadTask, Field(discriminator="type")]
TASK_TYPES = ("aks_python", "python", "dummy", "sftp_upload")


class Pipeline(Strict):
    """One pipeline (one Airflow DAG) of the tenant whose folder holds the file."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="data-platform Pipeline (v1)",
        json_schema_extra={"$id": "https://data-platform.io/schema/pipeline.schema.json"},
    )

    api_version: Literal["data-platform/v1"] = Field(alias="apiVersion")
    kind: Literal["Pipeline"]
    description: str | None = None
    schedule: str | None = Field(None, description="a cron expression or preset (@daily); null: manual")
    start_date: Date | None = None
    tags: list[Text] = Field(default_factory=list)
    owner: Text | None = None
    retries: Annotated[int, Field(ge=0)] | None = Field(None, description="at most the policy's limit")
    retry_delay: Duration | None = None
    max_retry_delay: Duration | None = None
    execution_timeout: Duration | None = Field(None, description="every task's budget, within the policy")
    run_deadline: Duration | None = Field(None, description="a DeadlineAlert from the run's queued time")
    snapshot: BlobUri | Snapshot | None = Field(None, description="the aks_python tasks' default snapshot")
    tasks: dict[TaskId, Task] = Field(min_length=1)
