"""Pure token-Secret transformations (operator/vestige_operator/tokens.py) and the status notes
about tokens (issues 13 and 16)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from vestige_operator import tokens
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.caches import trim, trim_owner
from vestige_operator.children import render_secret
from vestige_operator.status import ANONYMOUS_NOTE, Observation, anonymous_event, compute_status
from vestige_operator.vocabulary import Owner

OWNER = Owner("agent-a", "team", "uid-1")
NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(**data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "agent-a-auth",
            "namespace": "team",
            "resourceVersion": "7",
            "managedFields": [],
        },
        "data": {k.replace("_", "-"): b64(v) for k, v in data.items()},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        ("0", timedelta(0)),  # what `kubectl vestige rotate-token --grace 0` writes
        ("168h", tokens.MAX_GRACE),
        ("10", None),
        ("-5m", None),
        ("+5m", None),
        ("tomorrow", None),
        ("200h", None),  # more than a week
    ],
)
def test_grace_annotation(raw: str, expected: timedelta | None) -> None:
    """The grace annotation is read with times.parse_duration, bounded by MAX_GRACE; a bad one is
    refused (never replaced by a default)."""
    got = tokens.rotation_request({tokens.ANNOTATION_ROTATE: "r1", tokens.ANNOTATION_ROTATE_GRACE: raw})
    assert got is not None
    if expected is not None:
        assert got == tokens.RotationRequest("r1", expected)
    else:
        assert got.problem is not None and repr(raw) in got.problem


def test_rotation_request_defaults() -> None:
    assert tokens.rotation_request({}) is None
    assert tokens.rotation_request({tokens.ANNOTATION_ROTATE: " "}) is None
    assert tokens.rotation_request({tokens.ANNOTATION_ROTATE: "r1"}) == tokens.RotationRequest(
        "r1", timedelta(minutes=10)
    )


def test_grace_zero_keeps_no_previous_token() -> None:
    after = tokens.rotated(secret(token="old", vestige_token="internal"), "leak", "new", NOW, timedelta(0))
    assert after["data"]["token"] == b64("new")
    assert "token-previous" not in after["data"] and "token-previous-expires" not in after["data"]
    assert tokens.ANNOTATION_PREVIOUS_EXPIRES not in after["metadata"]["annotations"]


def test_vestige_token_is_added_once_and_never_touches_token() -> None:
    added = tokens.with_vestige_token(secret(token="agent"), "internal-1")
    assert added["data"] == {"token": b64("agent"), "vestige-token": b64("internal-1")}
    assert added["metadata"]["resourceVersion"] == "7"  # the write is conditional
    assert "managedFields" not in added["metadata"]
    again = tokens.with_vestige_token(added, "internal-2")
    assert again["data"]["vestige-token"] == b64("internal-1")


def test_rotation_keeps_the_previous_token_until_the_grace_ends() -> None:
    before = secret(token="old", vestige_token="internal")
    after = tokens.rotated(before, "req-1", "new", NOW, timedelta(minutes=10))
    assert after["data"]["token"] == b64("new")
    assert after["data"]["token-previous"] == b64("old")
    assert after["data"]["token-previous-expires"] == b64("2026-12-02T10:10:00Z")
    assert after["data"]["vestige-token"] == b64("internal")  # the internal token never rotates
    annotations = after["metadata"]["annotations"]
    assert annotations[tokens.ANNOTATION_HANDLED] == "req-1"
    assert annotations[tokens.ANNOTATION_ROTATED_AT] == "2026-12-02T10:00:00Z"
    assert annotations[tokens.ANNOTATION_PREVIOUS_EXPIRES] == "2026-12-02T10:10:00Z"
    assert not tokens.rotation_due(after, "req-1")  # one request rotates once
    assert tokens.rotation_due(after, "req-2")
    assert not tokens.rotation_due(after, None)
    assert before["data"]["token"] == b64("old")  # the input is not modified
    assert "old" not in json.dumps(after["metadata"]) and "new" not in json.dumps(after["metadata"])

    assert not tokens.previous_expired(after, NOW + timedelta(minutes=9))
    assert tokens.previous_expired(after, NOW + timedelta(minutes=10))
    cleaned = tokens.without_previous(after)
    assert set(cleaned["data"]) == {"token", "vestige-token"}
    assert tokens.ANNOTATION_PREVIOUS_EXPIRES not in cleaned["metadata"]["annotations"]
    assert cleaned["metadata"]["annotations"][tokens.ANNOTATION_HANDLED] == "req-1"
    assert not tokens.previous_expired(cleaned, NOW + timedelta(days=1))


def test_a_previous_token_without_recorded_expiry_counts_as_expired() -> None:
    cached = trim(secret(token="a", token_previous="b"))
    assert tokens.previous_expired(cached, NOW)


def test_owner_cache_keeps_only_the_rotation_annotations() -> None:
    body = {
        "metadata": {
            "name": "agent-a",
            "uid": "u",
            "annotations": {
                tokens.ANNOTATION_ROTATE: "r1",
                tokens.ANNOTATION_ROTATE_GRACE: "1m",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            },
        },
        "spec": {},
    }
    assert trim_owner(body)["metadata"]["annotations"] == {
        tokens.ANNOTATION_ROTATE: "r1",
        tokens.ANNOTATION_ROTATE_GRACE: "1m",
    }


def test_anonymous_agent_is_said_open_in_ready_and_warned_once() -> None:
    spec = VestigeMemorySpec.model_validate({"bridge": {"allowAnonymous": True}})
    status = compute_status(OWNER, spec, Observation(generation=1), None, "2026-12-02T10:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ANONYMOUS_NOTE in ready["message"]
    event = anonymous_event(OWNER, None, status, "2026-12-02T10:00:00Z")
    assert event is not None and event["type"] == "Warning" and event["reason"] == "AnonymousAccess"
    assert anonymous_event(OWNER, status, status, "2026-12-02T10:00:01Z") is None
    closed = compute_status(OWNER, VestigeMemorySpec(), Observation(generation=1), None, "t")
    assert all(ANONYMOUS_NOTE not in c["message"] for c in closed["conditions"])
    assert anonymous_event(OWNER, None, closed, "t") is None


def test_status_records_rotation_time_never_a_token() -> None:
    s = render_secret(OWNER, "agent-token-value", "internal-token-value")
    status = compute_status(
        OWNER,
        VestigeMemorySpec(),
        Observation(generation=1, token_rotated_at="2026-12-02T10:00:00Z"),
        None,
        "t",
    )
    assert status["tokenRotatedAt"] == "2026-12-02T10:00:00Z"
    for value in s["data"].values():
        assert base64.b64decode(value).decode() not in json.dumps(status)
