"""The agent's result record, read back from the container's termination message. Pure.

The record's format is `schema/task-result.schema.json`, shipped inside this package; the
agent's tests check the same file, so neither half can drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_FILE = Path(__file__).resolve().parent / "task-result.schema.json"
#: Kubernetes keeps at most 4096 bytes of a termination message.
MESSAGE_LIMIT = 4096


@dataclass(frozen=True)
class Record:
    """A validated record. `data` is the whole JSON object (pushed as the `task_result` XCom)."""

    data: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def exit_code(self) -> int | None:
        code = self.data["exit_code"]
        return code if isinstance(code, int) else None

    @property
    def child_exit_code(self) -> int | None:
        code = self.data["child_exit_code"]
        return code if isinstance(code, int) else None

    @property
    def retryable(self) -> bool:
        return bool(self.data["retryable"])

    @property
    def error_kind(self) -> str | None:
        error = self.data["error"]
        return str(error["kind"]) if isinstance(error, dict) else None

    @property
    def error_message(self) -> str | None:
        error = self.data["error"]
        return str(error["message"]) if isinstance(error, dict) else None

    @property
    def peak_memory_bytes(self) -> int | None:
        value = self.data["resources"]["peak_memory_bytes"]
        return value if isinstance(value, int) else None

    @property
    def memory_limit_bytes(self) -> int | None:
        value = self.data["resources"]["memory_limit_bytes"]
        return value if isinstance(value, int) else None

    @property
    def return_value(self) -> Any:
        return self.data["return_value"]

    @property
    def return_value_ref(self) -> dict[str, Any] | None:
        ref = self.data["return_value_ref"]
        return ref if isinstance(ref, dict) else None


@dataclass(frozen=True)
class Unreadable:
    """Why there is no record: the message is empty, not JSON, or not a record."""

    reason: str
    #: The message itself, cut short, when it was not a record (FallbackToLogsOnError text).
    text: str | None = None


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    validator_class = jsonschema.validators.validator_for(schema())
    validator: jsonschema.protocols.Validator = validator_class(schema())
    return validator


def parse(message: str | None) -> Record | Unreadable:
    """A termination message → the record, or why it is not one."""
    if message is None or not message.strip():
        return Unreadable("the container wrote no termination message")
    text = message.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return Unreadable("the termination message is not a task-agent record", _excerpt(text))
    if not isinstance(data, dict):
        return Unreadable("the termination message is JSON but not a record object", _excerpt(text))
    errors = sorted(_validator().iter_errors(data), key=lambda error: list(error.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "the record"
        return Unreadable(
            f"the termination message does not match the record schema at {where}: {first.message}",
            _excerpt(text),
        )
    return Record(data)


def _excerpt(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
