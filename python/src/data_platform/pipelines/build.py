"""A checked pipeline file becomes an Airflow DAG, through the very factories a Python DAG uses,
so a YAML pipeline can ask for exactly what a Python one may, under the same policy.

Everything is checked before the DAG is returned — schema, graph (unknown upstream tasks,
cycles), policy (through the factories), data flow (ambiguous inputs) — and every problem
found becomes one `file:line:col: error:` line of a PipelineError. Nothing here reads a file but
the pipeline's own (and the policy, through load_policy's cache); no imports by name, no code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import DAG
from pydantic import ValidationError

from data_platform.agent_command import Snapshot
from data_platform.artifacts import Output, OutputRef, check_data_flow, check_output_ref
from data_platform.dag_factory import CustomerDAGFactory
from data_platform.pipelines import model
from data_platform.pipelines.callables import APPROVED_CALLABLES
from data_platform.pipelines.problems import PipelineError, Problem, dotted
from data_platform.pipelines.schema_errors import schema_problems
from data_platform.pipelines.yaml_source import Document, Path, YamlProblem, read_yaml
from data_platform.policy import PlatformPolicy, PolicyError
from data_platform.task_factory import PlatformTaskFactory
from data_platform.units import UnitError

_FIELD_AT_START = re.compile(r"^(\w+)(?:\[(\d+)\])?")


@dataclass
class _Context:
    file: str
    document: Document
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path, message: str, *, key: bool = False) -> None:
        mark = self.document.mark(path, key=key)
        self.problems.append(Problem(self.file, mark.line, mark.column, dotted(path), message))

    def fail_if_any(self) -> None:
        if self.problems:
            raise PipelineError(sorted(self.problems, key=lambda p: (p.line, p.column)))


def parse(text: str, file: str) -> tuple[model.Pipeline, Document]:
    """The validated pipeline of `text`, or a PipelineError with every schema problem."""
    try:
        document = read_yaml(text)
    except YamlProblem as problem:
        raise PipelineError(
            [Problem(file, problem.mark.line, problem.mark.column, "", problem.message)]
        ) from None
    if not isinstance(document.data, dict):
        raise PipelineError(
            [Problem(file, 1, 1, "", "expected a mapping starting with `apiVersion: data-platform/v1`")]
        )
    if document.data.get("apiVersion") != model.API_VERSION and "apiVersion" in document.data:
        mark = document.mark(("apiVersion",))
        raise PipelineError(
            [
                Problem(
                    file, mark.line, mark.column, "apiVersion",
                    f"unknown version {document.data['apiVersion']!r}; this platform reads "
                    f"{model.API_VERSION}",
                )
            ]
        )  # fmt: skip
    try:
        pipeline = model.Pipeline.model_validate(document.data)
    except ValidationError as error:
        raise PipelineError(schema_problems(error, document, file)) from None
    return pipeline, document


def build_dag(text: str, file: str, *, dag_id: str, tenant: str, policy: PlatformPolicy) -> DAG:
    """The DAG `text` describes, for `tenant`, or a PipelineError listing every problem found."""
    pipeline, document = parse(text, file)
    context = _Context(file, document)
    order = _task_order(pipeline, context)
    context.fail_if_any()
    try:
        dag = CustomerDAGFactory.create(
            dag_id,
            tenant=tenant,
            schedule=pipeline.schedule,
            start_date=None if pipeline.start_date is None else _date(pipeline.start_date),
            retries=pipeline.retries,
            retry_delay=pipeline.retry_delay,
            max_retry_delay=pipeline.max_retry_delay,
            execution_timeout=pipeline.execution_timeout,
            run_deadline=pipeline.run_deadline,
            tags=pipeline.tags,
            owner=pipeline.owner,
            description=pipeline.description,
            policy=policy,
        )
    except (PolicyError, UnitError) as error:
        message = _strip(str(error), f"{dag_id}: ")
        context.add(_locate(message, (), document.data), message)
        context.fail_if_any()
        raise AssertionError("unreachable") from None
    factory = PlatformTaskFactory(dag)
    for task_id in order:
        spec = pipeline.tasks[task_id]
        where = ("tasks", task_id)
        try:
            _add_task(factory, dag, task_id, spec, pipeline)
        except (PolicyError, UnitError, ValueError) as error:
            message = _strip(str(error), f"{dag_id}.{task_id}: ")
            context.add(_locate(message, where, document.data["tasks"][task_id]), message)
    context.fail_if_any()
    for task_id in order:
        for upstream in pipeline.tasks[task_id].upstream:
            dag.get_task(upstream) >> dag.get_task(task_id)
    try:
        check_data_flow(dag)
    except PolicyError as error:
        message = _strip(str(error), f"{dag_id}.")
        task_id = message.split(":", 1)[0]
        message = _strip(message, f"{task_id}: ")
        path: Path = ("tasks", task_id, "inputs") if task_id in pipeline.tasks else ()
        context.add(path, _yaml_fix(message))
    context.fail_if_any()
    return dag


def _task_order(pipeline: model.Pipeline, context: _Context) -> list[str]:
    """Tasks upstream first (a named output's producer must exist before its reader); unknown
    upstream tasks and cycles are problems at the line that names them."""
    edges: dict[str, list[str]] = {}
    for task_id, spec in pipeline.tasks.items():
        needs = []
        for index, upstream in enumerate(spec.upstream):
            if upstream not in pipeline.tasks:
                context.add(
                    ("tasks", task_id, "upstream", index),
                    f"unknown upstream task {upstream!r} (tasks: {', '.join(pipeline.tasks)}); fix the name",
                )
            elif upstream == task_id:
                context.add(("tasks", task_id, "upstream", index), "a task cannot be upstream of itself")
            else:
                needs.append(upstream)
        for path, ref in _output_refs(spec):
            if ref.task not in pipeline.tasks:
                context.add(
                    ("tasks", task_id, *path, "task"),
                    f"unknown task {ref.task!r} (tasks: {', '.join(pipeline.tasks)}); fix the name",
                )
            elif ref.task != task_id:
                needs.append(ref.task)
        edges[task_id] = needs
    if context.problems:
        return []
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in pipeline.tasks:
        stack: list[tuple[str, int]] = [(root, 0)]
        trail: list[str] = []
        while stack:
            task_id, next_edge = stack.pop()
            if next_edge == 0:
                if state.get(task_id) == 2:
                    continue
                if state.get(task_id) == 1:
                    cycle = [*trail[trail.index(task_id) :], task_id]
                    context.add(
                        ("tasks", cycle[0], "upstream"),
                        f"dependency cycle: {' -> '.join(reversed(cycle))} (each must run before the next); "
                        "remove one of these upstream entries or named outputs",
                        key=True,
                    )
                    return []
                state[task_id] = 1
                trail.append(task_id)
            if next_edge < len(edges[task_id]):
                stack.append((task_id, next_edge + 1))
                stack.append((edges[task_id][next_edge], 0))
            else:
                state[task_id] = 2
                trail.pop()
                order.append(task_id)
    return order


def _output_refs(spec: Any) -> list[tuple[Path, model.OutputOf]]:
    refs: list[tuple[Path, model.OutputOf]] = []
    if isinstance(spec, model.AksPythonTask) and spec.inputs is not None:
        items = spec.inputs.items() if isinstance(spec.inputs, dict) else enumerate(spec.inputs)
        refs += [(("inputs", key), value) for key, value in items if isinstance(value, model.OutputOf)]
    if isinstance(spec, model.SftpUploadTask) and isinstance(spec.source, model.OutputOf):
        refs.append((("source",), spec.source))
    return refs


def _add_task(
    factory: PlatformTaskFactory, dag: DAG, task_id: str, spec: Any, pipeline: model.Pipeline
) -> None:
    common: dict[str, Any] = {
        name: getattr(spec, name)
        for name in ("retries", "retry_delay", "max_retry_delay", "trigger_rule")
        if getattr(spec, name) is not None
    }
    if spec.doc is not None:
        common["doc_md"] = spec.doc
    if isinstance(spec, model.AksPythonTask):
        snapshot = spec.snapshot or pipeline.snapshot
        if snapshot is None:
            raise PolicyError(
                "snapshot: the task has no snapshot; set `snapshot:` on the task or the pipeline"
            )
        factory.aks_python(
            task_id,
            snapshot if isinstance(snapshot, str) else Snapshot(snapshot.uri, snapshot.sha256),
            spec.script,
            args=spec.args,
            secrets=spec.secrets,
            secret_files=spec.secret_files,
            size=spec.size or "small",
            timeout=spec.timeout,
            env=spec.env,
            image=spec.image,
            outputs=None if spec.outputs is None else [_output(item) for item in spec.outputs],
            inputs=_inputs(dag, spec.inputs),
            **common,
        )
    elif isinstance(spec, model.PythonTask):
        function = APPROVED_CALLABLES.get(spec.callable)
        if function is None:
            raise PolicyError(
                f"callable {spec.callable!r} is not one the platform registered "
                f"(registered: {', '.join(sorted(APPROVED_CALLABLES)) or 'none'}); ask the platform team"
            )
        factory.python(task_id, function, op_kwargs=spec.op_kwargs, timeout=spec.timeout, **common)
    elif isinstance(spec, model.DummyTask):
        factory.dummy(task_id, **common)
    else:
        assert isinstance(spec, model.SftpUploadTask)
        source = spec.source if isinstance(spec.source, str) else _ref(dag, spec.source)
        factory.sftp_upload(task_id, source, spec.remote_path, spec.conn_id, **common)


def _output(item: str | model.OutputSpec) -> str | Output:
    if isinstance(item, str):
        return item
    return Output(item.path, archive=item.archive, optional=item.optional, asset=item.asset)


def _ref(dag: DAG, ref: model.OutputOf) -> OutputRef:
    """`{task: T, output: PATH}`: T must declare PATH (as `T.output(PATH)` checks in Python)."""
    return check_output_ref(dag.get_task(ref.task), ref.output)  # type: ignore[arg-type]


def _inputs(
    dag: DAG, inputs: list[str | model.OutputOf] | dict[str, str | model.OutputOf] | None
) -> list[str | OutputRef] | dict[str, str | OutputRef] | None:
    if inputs is None:
        return None
    convert: Callable[[str | model.OutputOf], str | OutputRef] = lambda item: (  # noqa: E731
        item if isinstance(item, str) else _ref(dag, item)
    )
    if isinstance(inputs, Mapping):
        return {path: convert(source) for path, source in inputs.items()}
    return [convert(item) for item in inputs]


def _date(text: str) -> Any:
    from datetime import datetime

    try:
        return datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise PolicyError(f"start_date: {text!r} is not a calendar date; write it as 2026-01-01") from None


def _strip(message: str, prefix: str) -> str:
    return message[len(prefix) :] if message.startswith(prefix) else message


def _locate(message: str, base: Path, spec: Any) -> Path:
    """The field a factory's message is about: the word it starts with (`size 'large' is not…`,
    `secrets[DB]: …`, `outputs[0]: …`, `retries=9 …`) if the author wrote that field, else the
    first field it mentions, else the task (or pipeline) itself."""
    if not isinstance(spec, dict):
        return base
    match = _FIELD_AT_START.match(message)
    if match and match.group(1) in spec:
        path: Path = (*base, match.group(1))
        value = spec[match.group(1)]
        if match.group(2) is not None and isinstance(value, list) and int(match.group(2)) < len(value):
            path = (*path, int(match.group(2)))
        return path
    for name in sorted(spec, key=len, reverse=True):
        if re.search(rf"\b{re.escape(str(name))}\b", message):
            return (*base, name)
    return base


def _yaml_fix(message: str) -> str:
    """check_data_flow speaks Python (`T.output(PATH)`, `a >> b`); say it the YAML way too."""
    named = re.search(r"(\w+)\.output\('([^']*)'\)", message)
    if named and "name one" in message:
        return f"{message} (in YAML: {{task: {named.group(1)}, output: {named.group(2)}}})"
    if "is not upstream of" in message:
        return f"{message} (in YAML: add it to the task's upstream: list)"
    return message
