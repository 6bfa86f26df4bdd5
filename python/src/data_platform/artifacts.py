"""Data between tasks: the files a pod task declares it writes (outputs) and reads (inputs), where
they live in the tenant's storage, and how a declared path becomes the upstream task's recorded
blob. See docs/data-between-tasks.md.

Parse time (pure: no I/O, no XCom): declarations are checked and turned into the agent's
`--artifacts`/`--output` arguments (templates Airflow renders per try) and, for static blob
inputs, `--input`. `check_data_flow` runs once the DAG's edges exist (`PlatformDAG.validate`,
which the DAG processor calls) and refuses a bare path two upstream tasks declare.

Run time: an input naming an upstream output is looked up in that task's `outputs` XCom (pushed
only by a successful try), checked against the tenant's storage before anything is requested,
and handed to the agent with the recorded sha256, which the agent verifies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from airflow.sdk.exceptions import AirflowFailException

from data_platform.agent_command import check_storage
from data_platform.pod_paths import check_pod_path
from data_platform.policy import PolicyError, Tenant
from data_platform.storage import storage_violation, without_query

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of a task's recorded outputs: a list of {path, uri, kind, bytes, files, sha256}.
OUTPUTS_XCOM_KEY = "outputs"
KINDS = ("file", "directory", "archive")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: `=` splits PATH from URI in `--output PATH=URI`, `#` starts the options and `,` separates them.
_PATH_FORBIDDEN = re.compile(r"[=#,\x00-\x1f\x7f]")
#: Airflow renders these per try: the try's own folder, so a retry never overwrites what an
#: earlier try wrote, and `urlencode` keeps a run id's `:` and `+` out of the blob URL's syntax.
RUN_ID_SEGMENT = "{{ run_id | urlencode }}"
MAP_INDEX_SEGMENT = "{{ ti.map_index }}"
TRY_NUMBER_SEGMENT = "{{ ti.try_number }}"
OUTPUT_FORMS = "a path string or Output(path, archive=False, optional=False, asset=False)"
INPUT_FORMS = (
    "a list of paths, or a mapping {PATH: SOURCE} where SOURCE is an upstream path, "
    "task.output(PATH), or https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH[#sha256=HEX]"
)


@dataclass(frozen=True)
class Output:
    """A file or directory the command writes, uploaded after it exits 0.

    `archive`: a directory packed into one `.tar.gz` blob; `optional`: a missing path is
    skipped; `asset`: the output is an Airflow Asset (outlet) other DAGs can be scheduled on.
    """

    path: str
    archive: bool = False
    optional: bool = False
    asset: bool = False


@dataclass(frozen=True)
class OutputRef:
    """An output an upstream task declared: `transform.output("/data/out.csv")`."""

    dag_id: str
    task_id: str
    path: str


@dataclass(frozen=True)
class UpstreamPath:
    """A bare path: the one upstream task that declared it as an output. Not `required` (an
    `sftp_upload` source), no such task means a local file, as before outputs existed."""

    path: str
    required: bool = True


@dataclass(frozen=True)
class BlobInput:
    """A static blob of the tenant's storage (checked at parse time)."""

    uri: str
    sha256: str | None = None
    archive: bool = False


Source = OutputRef | UpstreamPath | BlobInput


@dataclass(frozen=True)
class Input:
    """What the command reads at `path`, and where it comes from."""

    path: str
    source: Source


@dataclass(frozen=True)
class RecordedOutput:
    """An output as the producer's agent recorded it (the `outputs` XCom entry)."""

    path: str
    uri: str
    kind: str
    bytes: int
    files: int
    sha256: str

    def as_xcom(self) -> dict[str, Any]:
        return {"path": self.path, "uri": self.uri, "kind": self.kind, "bytes": self.bytes,
                "files": self.files, "sha256": self.sha256}  # fmt: skip


class DataTask(Protocol):
    """What `check_data_flow` and the resolver read off a task (pod tasks and SFTP uploads)."""

    @property
    def dag_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def data_outputs(self) -> tuple[Output, ...]: ...


# --- Parse time -----------------------------------------------------------------------------------


def check_path(path: object, field: str) -> str:
    """A declared path, normalised (`/data//out/` is `/data/out`), or a PolicyError."""
    if not isinstance(path, str) or not path.strip():
        raise PolicyError(
            f"{field}: {path!r} is not a path; expected a file or directory path such as /data/out.csv"
        )
    if _PATH_FORBIDDEN.search(path):
        raise PolicyError(
            f"{field}: {path!r} contains '=', '#', ',' or a control character, which the agent's "
            "PATH=URI#OPTIONS syntax cannot carry; rename the file"
        )
    pure = PurePosixPath(path)
    if ".." in pure.parts or str(pure) in ("/", "."):
        raise PolicyError(
            f"{field}: {path!r} must name a file or directory without '..' (relative paths are "
            "relative to the task's working directory); for example /data/out.csv"
        )
    return str(pure)


def parse_outputs(outputs: Iterable[str | Output] | None) -> tuple[Output, ...]:
    if outputs is None:
        return ()
    if isinstance(outputs, str | Output) or not isinstance(outputs, Iterable):
        raise PolicyError(f"outputs: expected a list of {OUTPUT_FORMS}, got {outputs!r}; wrap it in [...]")
    checked: dict[str, Output] = {}
    for index, entry in enumerate(outputs):
        field = f"outputs[{index}]"
        if isinstance(entry, str):
            entry = Output(entry)
        if not isinstance(entry, Output):
            raise PolicyError(f"{field}: expected {OUTPUT_FORMS}, got {entry!r}")
        for flag in ("archive", "optional", "asset"):
            if not isinstance(getattr(entry, flag), bool):
                raise PolicyError(f"{field}: {flag}={getattr(entry, flag)!r} must be True or False")
        path = check_path(entry.path, field)
        check_pod_path(path, field)
        if entry.optional and entry.asset:
            raise PolicyError(
                f"{field}: {path!r} is both optional and an asset; Airflow records the asset event "
                "whenever the task succeeds, written or not, so make it required or not an asset"
            )
        if _blob_name(path) in {_blob_name(p) for p in checked}:
            raise PolicyError(f"{field}: {path!r} is declared twice; declare each output once")
        checked[path] = Output(path, entry.archive, entry.optional, entry.asset)
    return tuple(checked.values())


def parse_inputs(
    inputs: Iterable[str | OutputRef] | Mapping[str, str | OutputRef] | None, tenant: Tenant
) -> tuple[Input, ...]:
    if inputs is None:
        return ()
    if isinstance(inputs, Mapping):
        pairs = [(path, source, f"inputs[{path!r}]") for path, source in inputs.items()]
    elif isinstance(inputs, str | OutputRef) or not isinstance(inputs, Iterable):
        raise PolicyError(f"inputs: expected {INPUT_FORMS}, got {inputs!r}")
    else:
        pairs = []
        for index, entry in enumerate(inputs):
            if isinstance(entry, OutputRef):
                pairs.append((entry.path, entry, f"inputs[{index}]"))
            elif isinstance(entry, str) and "://" in entry:
                raise PolicyError(
                    f"inputs[{index}]: {without_query(entry)!r} is a blob URI; give the path the command "
                    f"reads it at: inputs={{'/data/in.csv': {without_query(entry)!r}}}"
                )
            else:
                pairs.append((entry, entry, f"inputs[{index}]"))
    checked: dict[str, Input] = {}
    for path, source, field in pairs:
        path = check_path(path, field)
        check_pod_path(path, field)
        if path in checked:
            raise PolicyError(f"{field}: {path!r} is read twice; give each input path once")
        checked[path] = Input(path, _source(source, field, tenant))
    return tuple(checked.values())


def _source(source: object, field: str, tenant: Tenant) -> Source:
    if isinstance(source, OutputRef):
        return source
    if not isinstance(source, str):
        raise PolicyError(f"{field}: expected {INPUT_FORMS}, got {source!r}")
    if "://" not in source:
        return UpstreamPath(check_path(source, field))
    return static_blob(source, field, tenant)


def static_blob(uri: str, field: str, tenant: Tenant) -> BlobInput:
    """`https://…/PATH[#sha256=HEX,archive]` in the tenant's storage, or a PolicyError."""
    location, _, options = uri.partition("#")
    check_storage(location, tenant, field=field)
    sha256, archive = None, False
    for option in filter(None, options.split(",")):
        name, _, value = option.partition("=")
        if name == "archive" and not value:
            archive = True
        elif name == "sha256" and _SHA256.match(value):
            sha256 = value
        else:
            raise PolicyError(
                f"{field}: option {option!r} of {without_query(location)!r} is not understood; "
                "expected #sha256=HEX (64 lowercase hex digits) and/or archive, comma-separated"
            )
    return BlobInput(location, sha256, archive)


def check_output_ref(producer: DataTask, path: str) -> OutputRef:
    """`producer.output(path)`: the path must be one the producer declared."""
    checked = check_path(path, f"{producer.task_id}.output()")
    declared = [output.path for output in producer.data_outputs]
    if checked not in declared:
        raise PolicyError(
            f"{producer.task_id}.output({path!r}): {producer.task_id} declares no such output "
            f"(declared: {', '.join(declared) or 'none'}); add it to {producer.task_id}'s outputs=[...]"
        )
    return OutputRef(producer.dag_id, producer.task_id, checked)


def artifacts_prefix(artifacts: str, dag_id: str, task_id: str) -> str:
    """The try's own folder `{artifacts}/{dag_id}/{run_id}/{task_id}/{map_index}/{try}/`, as a
    template Airflow renders per try."""
    base = without_query(artifacts).rstrip("/")
    return (
        f"{base}/{quote(dag_id, safe='')}/{RUN_ID_SEGMENT}/{quote(task_id, safe='')}/"
        f"{MAP_INDEX_SEGMENT}/{TRY_NUMBER_SEGMENT}/"
    )


def _blob_name(path: str) -> str:
    """Where an output goes under the try's folder. The operator names it itself (rather than
    leaving it to the agent) so it can tell which recorded entry is which declaration."""
    return "files/" + quote(path.lstrip("/"), safe="/")


def output_arguments(prefix: str, outputs: Sequence[Output]) -> list[str]:
    """`--artifacts PREFIX --output PATH=URI[#archive,optional] …` for the agent."""
    if not outputs:
        return []
    arguments = ["--artifacts", prefix]
    for output in outputs:
        options = [name for name in ("archive", "optional") if getattr(output, name)]
        suffix = f"#{','.join(options)}" if options else ""
        arguments += ["--output", f"{output.path}={prefix}{_blob_name(output.path)}{suffix}"]
    return arguments


def input_argument(path: str, uri: str, sha256: str | None, archive: bool) -> list[str]:
    options = [f"sha256={sha256}"] if sha256 else []
    if archive:
        options.append("archive")
    return ["--input", f"{path}={uri}{'#' + ','.join(options) if options else ''}"]


def asset_uri(artifacts: str, dag_id: str, task_id: str, path: str) -> str:
    """The stable URI of an output declared `asset=True`: the same for every run and try, so other
    DAGs can be scheduled on it; each event's `extra` holds that run's blob and sha256."""
    return f"{without_query(artifacts).rstrip('/')}/{dag_id}/{task_id}/{path.lstrip('/')}"


def upstream_tasks(task: Any) -> list[Any]:
    """Every task `task` depends on, directly or not."""
    relatives: list[Any] = task.get_flat_relatives(upstream=True)
    return relatives


def producers_of(task: Any, path: str) -> list[str]:
    """The upstream tasks that declare `path` as an output, by task id (sorted)."""
    return sorted(
        upstream.task_id
        for upstream in upstream_tasks(task)
        if any(output.path == path for output in getattr(upstream, "data_outputs", ()))
    )


def check_data_flow(dag: Any) -> None:
    """Once the DAG's edges exist: every bare input path names exactly one upstream producer, and
    every `task.output(...)` is upstream of its reader. Pure; raises PolicyError."""
    for task in dag.tasks:
        for item in getattr(task, "data_inputs", ()):
            where = f"{dag.dag_id}.{task.task_id}: inputs[{item.path!r}]"
            source = item.source
            if isinstance(source, UpstreamPath):
                producers = producers_of(task, source.path)
                if len(producers) > 1:
                    first, second = producers[:2]
                    raise PolicyError(
                        f"{where}: {source.path!r} is an output of both {first} and {second}, upstream "
                        f"of {task.task_id}; name one: inputs={{{item.path!r}: "
                        f"{first}.output({source.path!r})}}"
                    )
                if not producers and source.required:
                    raise PolicyError(
                        f"{where}: no upstream task of {task.task_id} declares {source.path!r} as an "
                        f"output; add outputs=[{source.path!r}] to the task that writes it and make it "
                        "upstream, or give a blob URI of the tenant's storage"
                    )
            elif isinstance(source, OutputRef):
                upstream = {t.task_id for t in upstream_tasks(task)}
                if source.task_id not in upstream:
                    raise PolicyError(
                        f"{where}: {source.task_id}.output({source.path!r}) is not upstream of "
                        f"{task.task_id}; set {source.task_id} >> {task.task_id}"
                    )


# --- Run time ------------------------------------------------------------------------------------


def producer_of(task: Any, source: OutputRef | UpstreamPath) -> str | None:
    """The task id whose recorded output `source` names, or None (a bare path nobody declares)."""
    if isinstance(source, OutputRef):
        return source.task_id
    producers = producers_of(task, source.path)
    if len(producers) > 1:
        raise AirflowFailException(
            f"{source.path!r} is an output of both {producers[0]} and {producers[1]}: name one with "
            f"{producers[0]}.output({source.path!r})"
        )
    if not producers and source.required:
        raise AirflowFailException(f"no upstream task declares {source.path!r} as an output")
    return producers[0] if producers else None


def upstream_inputs(
    task: Any, inputs: Sequence[Input], context: Context, allowed_storage: Sequence[str]
) -> Iterator[tuple[Input, str, RecordedOutput]]:
    """Each of `inputs` that names an upstream output, with its producer and what the producer
    recorded in this run (tenant-checked); static blob inputs and bare paths nobody declares are
    not among them."""
    for item in inputs:
        if isinstance(item.source, BlobInput):
            continue
        producer = producer_of(task, item.source)
        if producer is None:
            continue
        yield (
            item,
            producer,
            recorded_output(context, producer, item.source.path, allowed_storage, "the tenant"),
        )


def recorded_output(
    context: Context, producer: str, path: str, allowed_storage: Sequence[str], owner: str
) -> RecordedOutput:
    """`producer`'s recorded output `path` in this run, after the tenant check: a URI outside the
    tenant's storage fails the task (no retry) before any request is sent."""
    ti = context["ti"]
    pushed = ti.xcom_pull(task_ids=producer, key=OUTPUTS_XCOM_KEY)
    if pushed is None:
        raise AirflowFailException(
            f"{producer} recorded no outputs in this run (it did not succeed, or ran before it declared "
            f"outputs): {path!r} cannot be read; rerun {producer}"
        )
    entries = [_recorded(entry, f"{producer}'s outputs XCom") for entry in _as_list(pushed, producer)]
    found = next((entry for entry in entries if entry.path == path), None)
    if found is None:
        listed = ", ".join(entry.path for entry in entries) or "none"
        raise AirflowFailException(
            f"{producer} succeeded without {path!r} among its recorded outputs (recorded: {listed}); "
            "an optional output that was not written cannot be read"
        )
    problem = storage_violation(found.uri, allowed_storage, owner)
    if problem is not None:
        raise AirflowFailException(
            f"policy: {producer}'s recorded output {path!r} points outside the tenant's storage, so no "
            f"request was sent: {problem}"
        )
    return found


def recorded_outputs(entries: object, declared: Sequence[Output], what: str) -> list[RecordedOutput]:
    """The record's `outputs` entries matched to the declarations, under the declared paths.

    An entry matches by path, or by its blob (the operator named each declaration's blob, so
    this holds even if the agent saw the path under another name, e.g. resolved)."""
    # None: an agent that knows nothing of outputs; the missing entries below say so.
    recorded = [_recorded(entry, what) for entry in _as_list([] if entries is None else entries, what)]
    matched = []
    for output in declared:
        name = "/" + _blob_name(output.path)
        entry = next(
            (e for e in recorded if e.path == output.path or without_query(e.uri).rstrip("/").endswith(name)),
            None,
        )
        if entry is None:
            if output.optional:
                continue
            raise AirflowFailException(
                f"{what} has no entry for the declared output {output.path!r}, yet the task succeeded: "
                "the agent image may predate outputs; use an agent that supports --output"
            )
        uri = without_query(entry.uri)
        matched.append(RecordedOutput(output.path, uri, entry.kind, entry.bytes, entry.files, entry.sha256))
    return matched


def input_arguments_for(recorded: RecordedOutput, path: str) -> list[str]:
    uri = recorded.uri
    if recorded.kind == "directory" and not uri.endswith("/"):
        uri += "/"  # the agent reads a URI ending in / as a folder
    return input_argument(path, uri, recorded.sha256, recorded.kind == "archive")


def _as_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise AirflowFailException(f"{what} is not a list of outputs: {type(value).__name__}")
    return value


def _recorded(entry: object, what: str) -> RecordedOutput:
    if not isinstance(entry, Mapping):
        raise AirflowFailException(f"{what}: an entry is not an object: {entry!r}")
    try:
        recorded = RecordedOutput(
            path=str(entry["path"]),
            uri=str(entry["uri"]),
            kind=str(entry["kind"]),
            bytes=int(entry["bytes"]),
            files=int(entry.get("files", 1)),
            sha256=str(entry["sha256"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise AirflowFailException(
            f"{what}: entry {without_query(str(entry.get('uri', '')))!r} lacks {error}; "
            "expected {path, uri, kind, bytes, files, sha256}"
        ) from None
    if recorded.kind not in KINDS or not _SHA256.match(recorded.sha256):
        raise AirflowFailException(
            f"{what}: entry {recorded.path!r} has kind {recorded.kind!r} and sha256 {recorded.sha256!r}; "
            f"expected one of {', '.join(KINDS)} and 64 lowercase hex digits"
        )
    return recorded
