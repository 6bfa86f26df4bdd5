"""The callables a pipeline file's `python` tasks may name. A YAML file is data: it cannot import
code, so the platform registers the glue it offers here, and tenants pick one by name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def log_message(message: str = "", **fields: Any) -> None:
    """Writes `message` and any other op_kwargs to the task log (markers, run notes)."""
    log.info("%s %s", message, fields)


APPROVED_CALLABLES: dict[str, Callable[..., Any]] = {"log_message": log_message}
