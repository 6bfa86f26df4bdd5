"""Durations and Kubernetes quantities: what the policy file, the DAG and the agent's flags share."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from data_platform.units import (
    UnitError,
    format_bytes,
    format_duration,
    human_bytes,
    parse_bytes,
    parse_duration,
    parse_quantity,
)

GI = 2**30
MI = 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("250ms", timedelta(milliseconds=250)),
        ("  45s ", timedelta(seconds=45)),
        (45, timedelta(seconds=45)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=7), timedelta(minutes=7)),
    ],
)
def test_durations_are_read_as_the_agent_writes_them(text, expected):
    assert parse_duration(text, "timeout") == expected


@pytest.mark.parametrize(
    "bad", ["", "   ", "10", "abc", "10 s", "1x", "-5s", "5s-", "1.5h", "h", "10S", "1h 30m"]
)
def test_a_bad_duration_names_the_field_the_value_and_the_expected_form(bad):
    with pytest.raises(UnitError) as caught:
        parse_duration(bad, "platform.retry_delay")
    message = str(caught.value)
    assert message.startswith("platform.retry_delay: ")
    assert "90s, 30m" in message
    assert repr(bad) in message


def test_a_boolean_is_not_a_duration():
    with pytest.raises(UnitError, match=r"timeout: expected a duration like 90s, 30m or 2h, got True"):
        parse_duration(True, "timeout")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=2), "7200s"),
        (timedelta(seconds=90), "90s"),
        (timedelta(0), "0s"),
        # Whole seconds only: the agent's flag is never longer than what the platform computed.
        (timedelta(seconds=1, milliseconds=900), "1s"),
    ],
)
def test_durations_are_written_in_whole_seconds(value, text):
    assert format_duration(value) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 3599, 7140, 86400, 12 * 3600 + 1])
def test_formatted_durations_read_back_unchanged(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value), "x") == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", Decimal(512 * MI)),
        ("2Gi", Decimal(2 * GI)),
        ("1.5Gi", Decimal(3 * GI // 2)),
        ("1Ki", Decimal(1024)),
        ("1Ti", Decimal(2**40)),
        ("1G", Decimal(10**9)),
        ("1k", Decimal(1000)),
        ("3M", Decimal(3 * 10**6)),
        ("250m", Decimal("0.25")),
        ("2", Decimal(2)),
        ("0.5", Decimal("0.5")),
        (3, Decimal(3)),
    ],
)
def test_quantities_are_read_as_kubernetes_writes_them(text, expected):
    assert parse_quantity(text, "memory") == expected


@pytest.mark.parametrize("bad", ["", "Mi", "1.2.3Gi", "10Xi", "-1Gi", "1 Gi", "1gi", "one", "1e3x"])
def test_a_bad_quantity_names_the_field_the_value_and_the_expected_form(bad):
    with pytest.raises(UnitError) as caught:
        parse_quantity(bad, "size_classes.small.memory_limit")
    message = str(caught.value)
    assert message.startswith("size_classes.small.memory_limit: ")
    assert "512Mi, 2Gi or 250m" in message
    assert repr(bad) in message


def test_a_boolean_is_not_a_quantity():
    with pytest.raises(UnitError, match="memory: expected a Kubernetes quantity"):
        parse_quantity(True, "memory")


@pytest.mark.parametrize(
    ("text", "expected"), [("1Gi", GI), ("1.5Ki", 1536), ("1G", 10**9), ("7", 7), (0, 0)]
)
def test_bytes_are_whole_numbers(text, expected):
    assert parse_bytes(text, "memory") == expected


@pytest.mark.parametrize("fractional", ["0.5", "100m", "1.0001Ki"])
def test_a_fraction_of_a_byte_is_refused_with_the_expected_form(fractional):
    with pytest.raises(UnitError, match=r"memory: expected a whole number of bytes like 512Mi or 2Gi, got "):
        parse_bytes(fractional, "memory")


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (GI, "1Gi"),
        (1536 * MI, "1536Mi"),
        (6 * GI, "6Gi"),
        (2**40, "1Ti"),
        (1024, "1Ki"),
        (1000, "1000"),
        (0, "0"),
    ],
)
def test_bytes_are_written_in_the_largest_binary_unit_that_divides_them(amount, text):
    assert format_bytes(amount) == text


@pytest.mark.parametrize("amount", [0, 1, 1000, 1024, 1536 * MI, 3 * GI, 6442450944, 2**50 + 2**20])
def test_formatted_bytes_read_back_unchanged(amount):
    assert parse_bytes(format_bytes(amount), "memory") == amount


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, "unknown"),
        (0, "0 B"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (1536 * MI, "1.5 GiB"),
        (3 * 2**40, "3.0 TiB"),
    ],
)
def test_bytes_for_people(amount, text):
    assert human_bytes(amount) == text
