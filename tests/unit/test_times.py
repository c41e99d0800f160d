"""The one timestamp format and the one duration parser (times.py), shared by the operator and the
kubectl plugin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from vestige_operator.times import MAX_TEXT, format_duration, format_time, parse_duration, parse_time

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("10m", timedelta(minutes=10)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("200h", timedelta(hours=200)),  # no upper bound here: callers check their own
        ("1.5h", timedelta(minutes=90)),
        ("1.h", timedelta(hours=1)),
        (".5s", timedelta(milliseconds=500)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        ("500ms", timedelta(milliseconds=500)),
        ("1us", timedelta(microseconds=1)),
        ("1\u00b5s", timedelta(microseconds=1)),  # micro sign
        ("1\u03bcs", timedelta(microseconds=1)),  # greek mu
        ("1500ns", timedelta(microseconds=2)),  # rounded to the microsecond
        (" 5m ", timedelta(minutes=5)),  # surrounding whitespace, as a shell would strip it
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+5m", "sign"),
        ("-1m", "negative"),
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "invalid duration"),
        ("10", "invalid duration"),  # a unit is required (except for 0)
        ("10 m", "invalid duration"),
        ("1h-5m", "invalid duration"),
        ("10min", "invalid duration"),
        ("1d", "invalid duration"),
        ("m", "invalid duration"),
        (".s", "invalid duration"),
        ("9" * 60 + "h", "out of range"),
        ("1" * (MAX_TEXT + 1), "at most"),
        ("1s" * 1000, "at most"),
    ],
)
def test_parse_duration_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=10), "10m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=7), "168h"),
        (timedelta(seconds=90.5), "1m30.5s"),
        (timedelta(hours=2, seconds=1), "2h1s"),
        (timedelta(microseconds=1), "0.000001s"),
    ],
)
def test_format_duration_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


def test_timestamps() -> None:
    assert format_time(NOW) == "2026-12-02T12:00:00Z"
    assert format_time(NOW + timedelta(microseconds=5), fraction=True) == "2026-12-02T12:00:00.000005Z"
    plus_one = timezone(timedelta(hours=1))
    assert format_time(datetime(2026, 12, 2, 13, 0, tzinfo=plus_one)) == "2026-12-02T12:00:00Z"
    assert parse_time("2026-12-02T12:00:00Z") == NOW
    assert parse_time("2026-12-02T12:00:00z") == NOW
    assert parse_time(" 2026-12-02T13:00:00+01:00 ") == NOW
    assert parse_time("2026-12-02T12:00:00.000005Z") == NOW + timedelta(microseconds=5)
    assert parse_time(format_time(NOW)) == NOW
    assert parse_time("2026-12-02T12:00:00") is None  # no zone: never guessed
    for bad in (None, "", "x", "2026-13-02T12:00:00Z", "2026-12-02T12:00:00Z" + " " * MAX_TEXT):
        assert parse_time(bad) is None
