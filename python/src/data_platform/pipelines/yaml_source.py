"""Reads a pipeline file as plain data (dicts, lists, strings, numbers, booleans, None), with the
line and column of every value, and refuses hostile input before it costs memory or time.

One pass over PyYAML's event stream (libyaml's when installed), with no recursion and no object
construction: a tag that would build an object (`!!python/object/apply:…`) is an error, not a
call; an alias bomb is stopped by counting the values aliases expand to; deep nesting by a depth
limit; a huge file by its size, checked before it is read. Duplicate keys are errors (YAML
loaders otherwise keep the last one silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

#: A pipeline of 200 tasks with every option is under 100 KiB.
MAX_BYTES = 512 * 1024
#: The format nests at most 6 deep (pipeline, tasks, task, inputs, source, field); room to spare.
MAX_DEPTH = 24
#: Values, counting each alias as everything it stands for.
MAX_VALUES = 50_000

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    _STR,
    # A date such as 2026-01-01 stays the text the author wrote.
    "tag:yaml.org,2002:timestamp",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """1-based line and column, as editors and `file:line:col` messages count."""

    line: int
    column: int


@dataclass
class Document:
    data: Any
    #: Where each value starts, by its path (`("tasks", "validate", "size")`).
    marks: dict[Path, Mark] = field(default_factory=dict)
    #: Where each mapping key starts: a misspelt or unknown key is reported there.
    key_marks: dict[Path, Mark] = field(default_factory=dict)

    def mark(self, path: Path, *, key: bool = False) -> Mark:
        """The mark of `path`, or of its nearest ancestor that has one (values inside an alias)."""
        if key and path in self.key_marks:
            return self.key_marks[path]
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), Mark(1, 1))


class YamlProblem(ValueError):
    def __init__(self, message: str, mark: Mark) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _mark(event: Any) -> Mark:
    return Mark(event.start_mark.line + 1, event.start_mark.column + 1)


class _Container:
    """A mapping or sequence being read: its value, path, and (for a mapping) a pending key."""

    def __init__(self, value: dict[str, Any] | list[Any], path: Path, mark: Mark, anchor: str | None) -> None:
        self.value = value
        self.path = path
        self.mark = mark
        self.anchor = anchor
        self.key: str | None = None
        self.key_mark: Mark | None = None
        #: Values it holds, itself included (what an alias to it expands to).
        self.size = 1

    def child_path(self, mark: Mark) -> Path:
        if isinstance(self.value, list):
            return (*self.path, len(self.value))
        if self.key is None:
            raise YamlProblem("a mapping key must be a plain text such as `validate`", mark)
        return (*self.path, self.key)


class _Reader:
    """Builds the data from the event stream with an explicit stack (no recursion)."""

    def __init__(self) -> None:
        self.document = Document(None)
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.stack: list[_Container] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.values = 0
        self.documents = 0

    def count(self, size: int, mark: Mark) -> None:
        self.values += size
        if self.values > MAX_VALUES:
            raise YamlProblem(
                f"the document expands to more than {MAX_VALUES} values (an alias counts as all it "
                "stands for); write the pipeline without nested aliases",
                mark,
            )

    def place(self, value: Any, size: int, mark: Mark, anchor: str | None) -> None:
        """Puts a finished value into its parent (or makes it the document)."""
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.document.data = value
            return
        parent = self.stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            self.document.marks[parent.child_path(mark)] = mark
            parent.value.append(value)
        elif parent.key is None:
            if isinstance(value, dict | list) or value is None:
                raise YamlProblem("a mapping key must be a plain text such as `validate`", mark)
            key = str(value)
            if key in parent.value:
                raise YamlProblem(f"duplicate key {key!r}: each key may appear once in a mapping", mark)
            parent.key, parent.key_mark = key, mark
        else:
            path = parent.child_path(mark)
            self.document.marks[path] = mark
            assert parent.key_mark is not None
            self.document.key_marks[path] = parent.key_mark
            parent.value[parent.key] = value
            parent.key = None

    def event(self, event: Any) -> None:
        mark = _mark(event)
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlProblem("a pipeline file holds one YAML document; remove the second one", mark)
        elif isinstance(event, yaml.ScalarEvent):
            self.count(1, mark)
            self.place(_scalar(event, self.resolver, self.constructor), 1, mark, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise YamlProblem(f"alias *{event.anchor} names no anchor defined before it", mark)
            value, size = self.anchors[event.anchor]
            self.count(size, mark)
            self.place(value, size, mark, None)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            is_map = isinstance(event, yaml.MappingStartEvent)
            _check_tag(event, _MAP_TAG if is_map else _SEQ_TAG)
            if len(self.stack) >= MAX_DEPTH:
                raise YamlProblem(
                    f"the document nests deeper than {MAX_DEPTH} levels; a pipeline needs far fewer", mark
                )
            self.count(1, mark)
            path = self.stack[-1].child_path(mark) if self.stack else ()
            if not path:
                self.document.marks[()] = mark
            self.stack.append(_Container({} if is_map else [], path, mark, event.anchor))
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            done = self.stack.pop()
            self.place(done.value, done.size, done.mark, done.anchor)


def read_yaml(text: str) -> Document:
    """The document in `text`, or a YamlProblem at the offending line and column."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(
            f"the file is {len(text)} characters, above the limit of {MAX_BYTES}; a pipeline file "
            "holds one pipeline: split it",
            Mark(1, 1),
        )
    reader = _Reader()
    try:
        for event in yaml.parse(text, Loader=_Parser):
            reader.event(event)
    except yaml.MarkedYAMLError as error:
        where = error.problem_mark or error.context_mark
        mark = Mark(where.line + 1, where.column + 1) if where else Mark(1, 1)
        raise YamlProblem(f"not valid YAML: {error.problem or error.context}", mark) from None
    except yaml.YAMLError as error:
        raise YamlProblem(f"not valid YAML: {error}", Mark(1, 1)) from None
    return reader.document


def _check_tag(event: Any, default: str) -> None:
    tag = event.tag
    if tag is None or tag == "!" or tag == default:
        return
    raise YamlProblem(
        f"tag {tag} is not allowed: a pipeline file is plain data (no objects, no code); remove the tag",
        _mark(event),
    )


def _scalar(event: Any, resolver: Resolver, constructor: SafeConstructor) -> Any:
    implicit = event.tag in (None, "!")
    tag = resolver.resolve(ScalarNode, event.value, event.implicit) if implicit else event.tag
    if tag == "tag:yaml.org,2002:merge":
        raise YamlProblem("merge keys (<<) are not supported; write the fields out", _mark(event))
    if tag not in _SCALAR_TAGS:
        raise YamlProblem(
            f"tag {event.tag or tag} is not allowed: a pipeline file is plain data (no objects, no "
            "code); remove the tag",
            _mark(event),
        )
    if tag in (_STR, "tag:yaml.org,2002:timestamp"):
        return event.value
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark)
    try:
        return constructor.construct_object(node, deep=True)
    except ConstructorError:
        raise YamlProblem(f"not a valid {tag.rsplit(':', 1)[-1]}: {event.value!r}", _mark(event)) from None
