"""Durations and Kubernetes quantities, written the way the agent and Kubernetes write them. Pure."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


class UnitError(ValueError):
    """A duration or quantity that cannot be read; the message says what form is expected."""


def parse_duration(value: str | int | float | timedelta, what: str) -> timedelta:
    """`90s`, `30m`, `1h30m`, `2d`, or a number of seconds, as the agent's flags accept them."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise UnitError(f"{what}: expected a duration like 90s, 30m or 2h, got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise UnitError(f"{what}: expected a duration like 90s, 30m, 2h or 1h30m, got {value!r}")
    return sum((int(number) * _DURATION_UNITS[unit] for number, unit in parts), timedelta())


def format_duration(value: timedelta) -> str:
    """Whole seconds in the agent's syntax (`7140s`): exact, and readable by `humantime`."""
    return f"{int(value.total_seconds())}s"


def parse_quantity(value: str | int, what: str) -> Decimal:
    """A Kubernetes quantity (`512Mi`, `2Gi`, `1G`, `250m`, `2`) as a number of base units."""
    if isinstance(value, bool):
        raise UnitError(f"{what}: expected a Kubernetes quantity like 512Mi, 2Gi or 250m, got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY.match(value.strip())
    if not match:
        raise UnitError(f"{what}: expected a Kubernetes quantity like 512Mi, 2Gi or 250m, got {value!r}")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as error:  # the regex admits only digits, but say so if not
        raise UnitError(f"{what}: {value!r} is not a number") from error
    if suffix is None:
        return amount
    if suffix == "m":
        return amount / 1000
    return amount * (_BINARY_SUFFIXES.get(suffix) or _DECIMAL_SUFFIXES[suffix])


def parse_bytes(value: str | int, what: str) -> int:
    amount = parse_quantity(value, what)
    if amount != amount.to_integral_value() or amount < 0:
        raise UnitError(f"{what}: expected a whole number of bytes like 512Mi or 2Gi, got {value!r}")
    return int(amount)


def format_bytes(amount: int) -> str:
    """Bytes in the largest binary unit that divides them (`1536Mi`), as Kubernetes prints them."""
    for suffix, size in sorted(_BINARY_SUFFIXES.items(), key=lambda item: -item[1]):
        if amount >= size and amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)


def human_bytes(amount: int | None) -> str:
    """For messages: `1.5 GiB`."""
    if amount is None:
        return "unknown"
    size = float(amount)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{amount} B"
