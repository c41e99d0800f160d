"""Pure token-Secret transformations: the internal Vestige token, rotation on request, expiry.

The operator's Secret ``<name>-auth`` holds (Secret keys, the contract with the bridge):

* ``token`` -- the agents' bearer token;
* ``vestige-token`` -- Vestige's internal token (the vestige container's ``VESTIGE_AUTH_TOKEN``
  and the bridge's upstream ``VESTIGE_MCP_TOKEN``), never handed to agents, created once;
* during a rotation's grace period ``token-previous`` and ``token-previous-expires`` (RFC 3339).

Besides the data, the Secret's annotations record what the operator did, so the watch cache
(which keeps no Secret values) can tell whether a write is due without a read:
``vestige.dev/rotate-token-handled`` (the last rotation request id carried out: one request
rotates once), ``vestige.dev/token-rotated-at`` and ``vestige.dev/token-previous-expires``.

Nothing here does I/O or reads the clock; the new token values are passed in.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from vestige_operator import GROUP
from vestige_operator.times import format_time, parse_duration, parse_time

TOKEN_KEY = "token"  # noqa: S105 (Secret key names, not secrets)
VESTIGE_TOKEN_KEY = "vestige-token"  # noqa: S105
PREVIOUS_KEY = "token-previous"
PREVIOUS_EXPIRES_KEY = "token-previous-expires"

#: On the VestigeMemory: an opaque rotation request id (never a token) and the grace period.
ANNOTATION_ROTATE = f"{GROUP}/rotate-token"
ANNOTATION_ROTATE_GRACE = f"{GROUP}/rotate-token-grace"
#: On the operator's token Secret.
ANNOTATION_HANDLED = f"{GROUP}/rotate-token-handled"
ANNOTATION_ROTATED_AT = f"{GROUP}/token-rotated-at"
ANNOTATION_PREVIOUS_EXPIRES = f"{GROUP}/token-previous-expires"

DEFAULT_GRACE = timedelta(minutes=10)
MAX_GRACE = timedelta(days=7)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _annotations(secret: Mapping[str, Any]) -> Mapping[str, str]:
    return (secret.get("metadata") or {}).get("annotations") or {}


def rotation_request(owner_annotations: Mapping[str, str]) -> tuple[str, timedelta, bool] | None:
    """(request id, grace, grace understood) of the VestigeMemory's rotation annotation, or None."""
    request = (owner_annotations.get(ANNOTATION_ROTATE) or "").strip()
    if not request:
        return None
    raw_grace = owner_annotations.get(ANNOTATION_ROTATE_GRACE)
    if raw_grace is None or not raw_grace.strip():
        return request, DEFAULT_GRACE, True
    try:
        grace = parse_duration(raw_grace)
    except ValueError:
        return request, DEFAULT_GRACE, False
    return (request, grace, True) if grace <= MAX_GRACE else (request, DEFAULT_GRACE, False)


def rotation_due(secret: Mapping[str, Any], request: str | None) -> bool:
    """Whether ``request`` has not been carried out on this Secret yet."""
    return request is not None and _annotations(secret).get(ANNOTATION_HANDLED) != request


def previous_expires(secret: Mapping[str, Any]) -> datetime | None:
    """When the previous token stops being valid, if the Secret holds one."""
    return parse_time(_annotations(secret).get(ANNOTATION_PREVIOUS_EXPIRES))


def rotated_at(secret: Mapping[str, Any]) -> str | None:
    return _annotations(secret).get(ANNOTATION_ROTATED_AT) or None


def _copy(secret: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in secret.items() if k not in ("stringData",)}
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    meta["annotations"] = dict(meta.get("annotations") or {})
    out["metadata"] = meta
    out["data"] = dict(out.get("data") or {})
    return out


def with_vestige_token(secret: Mapping[str, Any], vestige_token: str) -> dict[str, Any]:
    """The Secret with a ``vestige-token`` added; an existing one (and ``token``) is never changed."""
    out = _copy(secret)
    out["data"].setdefault(VESTIGE_TOKEN_KEY, _b64(vestige_token))
    return out


def rotated(
    secret: Mapping[str, Any], request: str, new_token: str, now: datetime, grace: timedelta
) -> dict[str, Any]:
    """The Secret after a rotation: ``token`` = ``new_token``, the old value kept as
    ``token-previous`` until ``now + grace``, the request recorded as handled."""
    out = _copy(secret)
    data = out["data"]
    expires = format_time(now + grace)
    if TOKEN_KEY in data:
        data[PREVIOUS_KEY] = data[TOKEN_KEY]
        data[PREVIOUS_EXPIRES_KEY] = _b64(expires)
        out["metadata"]["annotations"][ANNOTATION_PREVIOUS_EXPIRES] = expires
    data[TOKEN_KEY] = _b64(new_token)
    out["metadata"]["annotations"][ANNOTATION_HANDLED] = request
    out["metadata"]["annotations"][ANNOTATION_ROTATED_AT] = format_time(now)
    return out


def without_previous(secret: Mapping[str, Any]) -> dict[str, Any]:
    """The Secret with the previous token's keys (and their annotation) removed."""
    out = _copy(secret)
    out["data"].pop(PREVIOUS_KEY, None)
    out["data"].pop(PREVIOUS_EXPIRES_KEY, None)
    out["metadata"]["annotations"].pop(ANNOTATION_PREVIOUS_EXPIRES, None)
    return out


def previous_expired(secret: Mapping[str, Any], now: datetime) -> bool:
    """Whether the Secret holds a previous token whose grace period is over."""
    expires = previous_expires(secret)
    if expires is not None:
        return now >= expires
    hashes = secret.get("tokenHashes") or secret.get("data") or {}
    return PREVIOUS_KEY in hashes  # a previous token without a recorded expiry: remove it
