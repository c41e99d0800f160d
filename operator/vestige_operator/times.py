"""Timestamps and durations, written and read one way everywhere (operator and kubectl plugin).

* Timestamps are RFC 3339 in UTC with a ``Z`` (what the API server writes for metav1.Time):
  ``format_time`` writes them, ``parse_time`` reads them back (any offset; a time without a zone
  is refused, never guessed).
* Durations use Go's ``time.ParseDuration`` syntax, as kubectl's flags do: ``90s``, ``10m``,
  ``1h30m``, ``1.5h``, ``0``. ``parse_duration`` has no default and no upper bound: each caller
  checks its own limits (the token grace period: tokens.MAX_GRACE).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from fractions import Fraction

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
RFC3339_FRACTION = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Longer texts are refused unread (a duration or a timestamp is never this long).
MAX_TEXT = 64

# -- timestamps ------------------------------------------------------------------------------------


def format_time(moment: datetime, *, fraction: bool = False) -> str:
    """``moment`` as UTC RFC 3339 with a ``Z`` (microseconds when ``fraction``)."""
    return moment.astimezone(UTC).strftime(RFC3339_FRACTION if fraction else RFC3339)


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset, optional fraction) as an aware UTC datetime;
    None when absent, unparseable or without a time zone."""
    if not text or len(text) > MAX_TEXT:
        return None
    raw = text.strip()
    if raw[-1:] in ("Z", "z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else None


def utc_now() -> str:
    """The current time, formatted (the clock of the status conditions and events)."""
    return format_time(datetime.now(UTC))


# -- durations -------------------------------------------------------------------------------------

#: Nanoseconds per unit (U+00B5 and U+03BC are both accepted for micro, as Go does).
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_SYNTAX = "a number and a unit h, m, s, ms, us or ns, e.g. 90s, 10m, 1h30m or 0"


def parse_duration(text: str) -> timedelta:
    """A Go duration (``90s``, ``10m``, ``1h30m``, ``200h``, ``1.5h``, ``0``) as a timedelta
    (rounded to the microsecond); surrounding whitespace is ignored.

    ValueError (naming the problem) for an empty, signed, malformed or absurdly long text. No
    default and no bound: the caller checks the range it accepts.
    """
    if len(text) > MAX_TEXT:
        raise ValueError(f"duration of {len(text)} characters: at most {MAX_TEXT}")
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration: expected " + _SYNTAX)
    if raw[0] == "-":
        raise ValueError(f"duration {raw!r} is negative: a sign is not allowed")
    if raw[0] == "+":
        raise ValueError(f"duration {raw!r} has a sign: a sign is not allowed, write {raw[1:]!r}")
    if raw == "0":
        return timedelta(0)
    total = Fraction(0)
    pos = 0
    while pos < len(raw):
        match = _PART.match(raw, pos)
        if match is None:
            raise ValueError(f"invalid duration {raw!r}: expected {_SYNTAX}")
        total += Fraction(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    try:
        return timedelta(microseconds=round(total / 1000))
    except OverflowError:
        raise ValueError(f"duration {raw!r} is out of range") from None


def format_duration(value: timedelta) -> str:
    """``value`` in the syntax ``parse_duration`` reads, shortest form: ``10m``, ``1h30m``,
    ``168h``, ``1m30.5s``, ``0s``. Negative values are refused (ValueError)."""
    if value < timedelta(0):
        raise ValueError(f"negative duration {value}")
    micros = value // timedelta(microseconds=1)
    hours, micros = divmod(micros, 3600 * 10**6)
    minutes, micros = divmod(micros, 60 * 10**6)
    seconds, micros = divmod(micros, 10**6)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if micros:
        out += f"{seconds}.{micros:06d}".rstrip("0") + "s"
    elif seconds or not out:
        out += f"{seconds}s"
    return out
