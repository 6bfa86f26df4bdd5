"""Pydantic's validation errors as a tenant's problems: located in the YAML, in plain words, with the fix.

Pydantic reports every branch of a union it tried (`str` and `OutputSpec` for an output); the
branch whose kind matches what the author wrote (text, mapping or list) is the one they meant, so
only its errors are kept, and a value matching no branch gets one message listing the forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from data_platform.pipelines import model
from data_platform.pipelines.problems import Problem, dotted
from data_platform.pipelines.yaml_source import Document

_MODELS: dict[str, type[BaseModel]] = {
    cls.__name__: cls
    for cls in (
        model.Pipeline, model.Snapshot, model.OutputSpec, model.OutputOf, model.AksPythonTask,
        model.PythonTask, model.DummyTask, model.SftpUploadTask,
    )
}  # fmt: skip
_TAGS: dict[str, type[BaseModel]] = {
    "aks_python": model.AksPythonTask,
    "python": model.PythonTask,
    "dummy": model.DummyTask,
    "sftp_upload": model.SftpUploadTask,
}
_KIND_WORDS = {str: "a text", dict: "a mapping", list: "a list", int: "a whole number", bool: "true or false"}


def _label_kind(label: str) -> type | None:
    """The kind of YAML value a union branch label accepts; None: not a branch label."""
    if label in ("str", "constrained-str"):
        return str
    if label.startswith("list["):
        return list
    if label.startswith("dict[") or label in _MODELS:
        return dict
    if label in ("int", "constrained-int"):
        return int
    if label == "bool":
        return bool
    return None


def _kind_of(value: Any) -> type:
    for kind in (bool, int, str, dict, list):
        if isinstance(value, kind):
            return kind
    return type(value)


def _walk(data: Any, loc: Sequence[str | int]) -> tuple[tuple[str | int, ...], list[tuple[Any, str]], Any]:
    """The data path of a pydantic location, the union branches on the way (value, label), the value."""
    path: list[str | int] = []
    branches: list[tuple[Any, str]] = []
    value = data
    for part in loc:
        in_dict = isinstance(value, dict) and isinstance(part, str) and part in value
        if in_dict or (isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)):
            path.append(part)
            value = value[part]
        elif isinstance(part, str) and _label_kind(part) is not None:
            branches.append((value, part))
        # anything else is a discriminator tag (aks_python) or a field the data lacks (missing)
    return tuple(path), branches, value


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    owner: type[BaseModel] = model.Pipeline if len(loc) == 1 else model.AksPythonTask
    for part in reversed(loc[:-1]):
        if isinstance(part, str) and (part in _MODELS or part in _TAGS):
            owner = _MODELS.get(part) or _TAGS[part]
            break
    else:
        if len(loc) != 1:
            return []
    return [field.alias or name for name, field in owner.model_fields.items()]


def _message(error: Any, value: Any) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    got = f"got {value!r}"
    if kind == "missing":
        return f"required field {loc[-1]!r} is missing; add it"
    if kind == "extra_forbidden":
        known = ", ".join(_known_fields(loc))
        return f"unknown field {loc[-1]!r} (known: {known}); remove it or fix its spelling"
    if kind == "union_tag_invalid":
        return (
            f"type {ctx.get('tag')!r} is not an approved task type; use one of: {', '.join(model.TASK_TYPES)}"
        )
    if kind == "union_tag_not_found":
        return f"the task has no `type`; add type: one of {', '.join(model.TASK_TYPES)}"
    if kind == "string_pattern_mismatch":
        form = model.PATTERN_FORMS.get(str(ctx.get("pattern")), f"text matching {ctx.get('pattern')}")
        return f"expected {form}, {got}"
    if kind == "string_type":
        return f"expected a text, {got}; quote it if it is meant as text"
    if kind in ("int_type", "int_parsing"):
        return f"expected a whole number, {got}"
    if kind == "bool_type":
        return f"expected true or false, {got}"
    if kind in ("dict_type", "model_type"):
        return f"expected a mapping (key: value lines), {got}"
    if kind == "list_type":
        return f"expected a list ([a, b] or - lines), {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, {got}"
    if kind == "too_short":
        return f"must not be empty, {got}"
    return f"{error['msg']}, {got}"


def schema_problems(error: ValidationError, document: Document, file: str) -> list[Problem]:
    problems: dict[tuple[str | int, ...], Problem] = {}
    unmatched: dict[tuple[str | int, ...], tuple[Any, set[str]]] = {}
    for entry in error.errors():
        loc = entry["loc"]
        path, branches, value = _walk(document.data, loc)
        wrong_branch = [(v, label) for v, label in branches if _label_kind(label) is not _kind_of(v)]
        if wrong_branch:
            # Remember what forms were possible, in case no branch matches the value at all.
            for branch_value, label in wrong_branch:
                branch_path, _, _ = _walk(document.data, loc[: loc.index(label)])
                forms = unmatched.setdefault(branch_path, (branch_value, set()))[1]
                forms.add(_KIND_WORDS.get(_label_kind(label) or str, "a value"))
            continue
        # An unknown field is reported at its key (its value may be a whole block).
        mark = document.mark(path, key=entry["type"] == "extra_forbidden")
        problems.setdefault(
            (*path, str(loc[-1])) if entry["type"] in ("missing", "extra_forbidden") else path,
            Problem(file, mark.line, mark.column, dotted(path), _message(entry, value)),
        )
    for path, (value, forms) in unmatched.items():
        if any(other[: len(path)] == path for other in problems):
            continue  # a matching branch explained it
        mark = document.mark(path)
        problems[path] = Problem(
            file,
            mark.line,
            mark.column,
            dotted(path),
            f"expected {' or '.join(sorted(forms))}, got {value!r}",
        )
    return sorted(problems.values(), key=lambda p: (p.line, p.column))
