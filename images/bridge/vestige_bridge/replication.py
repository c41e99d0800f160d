"""The continuous-backup sidecar's replication position, read from Litestream's control socket
(``GET /list`` on a Unix socket in an emptyDir shared with the sidecar): the ONE place the lag is
measured (docs/continuous-backup.md).

``last_sync_at`` is recorded by Litestream after every sync that left nothing to upload, so it
advances every sync interval while replication is healthy (idle or busy) and stops while uploads
fail: ``now - last_sync_at`` is the replication lag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

#: Go writes nanoseconds; Python reads at most microseconds.
_NANOS = re.compile(r"(\.\d{6})\d+")


class ReplicationUnknown(Exception):
    """The socket did not answer (sidecar not running yet, stopped, or not configured)."""


def parse_sync_time(value: str) -> datetime:
    """A Litestream (Go, RFC 3339 with nanoseconds) time."""
    return datetime.fromisoformat(_NANOS.sub(r"\1", value).replace("Z", "+00:00"))


def parse_list(body: object) -> datetime | None:
    """``last_sync_at`` of the (one) database in a ``GET /list`` answer; None before the first sync."""
    databases = body.get("databases") if isinstance(body, dict) else None
    if not isinstance(databases, list) or not databases or not isinstance(databases[0], dict):
        return None
    stamp = databases[0].get("last_sync_at")
    return parse_sync_time(stamp) if isinstance(stamp, str) and stamp else None


async def last_sync_at(socket: Path, seconds: float = 2.0) -> datetime | None:
    """When the replica last held every change of the store (None: not synced yet); ``seconds``
    bounds each step of the request."""
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://litestream", timeout=seconds
        ) as http:
            answer = await http.get("/list")
            answer.raise_for_status()
            return parse_list(answer.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise ReplicationUnknown(f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of the socket: when the replica last held every change (None: no answer or
    no sync yet), the lag at ``now`` and why there is no answer."""

    last_sync: datetime | None
    now: datetime
    error: str | None = None

    @property
    def lag_seconds(self) -> float | None:
        if self.last_sync is None:
            return None
        return max(0.0, (self.now - self.last_sync).total_seconds())


async def read(socket: Path, seconds: float = 2.0) -> Reading:
    """The replication position now (never raises): what /replication and /metrics report."""
    try:
        synced = await last_sync_at(socket, seconds)
    except ReplicationUnknown as exc:
        return Reading(None, datetime.now(UTC), f"the replication sidecar did not answer: {exc}")
    if synced is None:
        return Reading(None, datetime.now(UTC), "the replication sidecar has not synced yet")
    return Reading(synced, datetime.now(UTC))
