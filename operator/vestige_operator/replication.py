"""Replication health of a continuous backup (spec.backup.continuous): what the operator asks the
agent's pod, and what it makes of the answer (the ``ReplicationHealthy`` condition and
``status.replication``).

The bridge reads the Litestream sidecar's position from its control socket (the one place the lag
is measured, ``vestige_bridge.replication``) and serves it at ``GET /replication`` on the bridge
port, without a token (times only, never memory content). The operator asks the pod directly on its
IP, as CloudNativePG's operator asks its instance managers: only a Running pod of the memory's own
ReplicaSet (controller owner reference), whose IP the kubelet set; the memory's NetworkPolicy admits
the operator's pods on that port (``children.operator_peer``). An operator outside the cluster (no
pod namespace) asks nothing, since a pod IP is not its host's to dial, and reports ``Unknown`` /
``Unreachable``, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from vestige_operator.api import VestigeMemorySpec, duration_seconds
from vestige_operator.times import format_time, parse_time
from vestige_operator.vocabulary import BRIDGE_PORT

#: The bridge path that answers with the position (vestige_bridge.app).
PATH = "/replication"
#: Seconds one question may take (connect and answer).
TIMEOUT_SECONDS = 3.0
#: Why an operator outside the cluster asks no pod.
NOT_IN_CLUSTER = "the operator runs outside the cluster, where pod IPs are not reachable"
#: Lagging once the replica is this many sync intervals behind, and never below MIN_LAG_SECONDS.
LAG_INTERVALS = 10
MIN_LAG_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Position:
    """One answer (or the lack of one): when the replica last held every change, the lag the pod
    measured, and why there is no position. ``reachable`` False: the bridge itself did not answer."""

    reachable: bool
    last_sync_at: str | None = None
    lag_seconds: float | None = None
    error: str | None = None


class ReplicationProbe(Protocol):
    """How the reconciler asks a pod (HTTP here; a fake in unit tests)."""

    async def position(self, pod_ip: str) -> Position: ...

    async def aclose(self) -> None: ...


class HttpProbe:
    """``GET http://<pod IP>:8000/replication`` with one pooled client."""

    def __init__(self, timeout: float = TIMEOUT_SECONDS) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def position(self, pod_ip: str) -> Position:
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        try:
            answer = await self._http.get(f"http://{host}:{BRIDGE_PORT}{PATH}")
            answer.raise_for_status()
            return parse(answer.json())
        except (httpx.HTTPError, ValueError) as exc:
            return Position(False, error=f"the bridge at {pod_ip} did not answer: {type(exc).__name__}")

    async def aclose(self) -> None:
        await self._http.aclose()


def parse(body: object) -> Position:
    """A ``GET /replication`` answer; anything malformed counts as no position."""
    if not isinstance(body, Mapping):
        return Position(True, error="the bridge answered /replication with something else")
    synced = body.get("last_sync_at")
    lag = body.get("lag_seconds")
    error = body.get("error")
    if isinstance(synced, str) and isinstance(lag, int | float) and not isinstance(lag, bool):
        moment = parse_time(synced)
        if moment is None:
            return Position(True, error="the bridge answered /replication with a bad time")
        return Position(True, last_sync_at=format_time(moment), lag_seconds=max(0.0, float(lag)))
    if body.get("enabled") is False:
        return Position(True, error="the pod runs no replication sidecar yet")
    return Position(True, error=str(error)[:300] if error else "no replication position yet")


def lag_threshold(spec: VestigeMemorySpec) -> float:
    """Seconds behind after which replication counts as lagging."""
    continuous = spec.backup.continuous if spec.backup is not None else None
    if continuous is None:
        return MIN_LAG_SECONDS
    return max(MIN_LAG_SECONDS, LAG_INTERVALS * duration_seconds(continuous.sync_interval))


def serving_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod to ask: Running, not being deleted, with an IP, controlled by a ReplicaSet (the
    memory's Deployment's); the newest when a rollout leaves two."""
    candidates = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        owners = meta.get("ownerReferences") or []
        if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
            continue
        if not any(o.get("kind") == "ReplicaSet" and o.get("controller") for o in owners):
            continue
        candidates.append(pod)
    if not candidates:
        return None
    return max(candidates, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


@dataclass(frozen=True, slots=True)
class Health:
    """The ReplicationHealthy condition (``status`` None: Unknown) and status.replication."""

    status: bool | None
    reason: str
    message: str
    last_replicated_at: str | None = None
    lag_seconds: int | None = None


def health(
    spec: VestigeMemorySpec,
    position: Position | None,
    previous: Mapping[str, Any] | None,
    pod_age_seconds: float | None = None,
) -> Health:
    """What ``position`` (None: no pod to ask) says; an unknown position keeps the last time seen.
    A pod younger than the lag threshold that has not replicated yet is still starting."""
    before = previous or {}
    kept = before.get("lastReplicatedAt") if isinstance(before.get("lastReplicatedAt"), str) else None
    if spec.suspend:
        return Health(None, "Suspended", "spec.suspend is true: no pod, nothing to replicate", kept)
    if position is None:
        return Health(None, "PodNotRunning", "no running pod of this memory to ask yet", kept)
    if not position.reachable:
        return Health(None, "Unreachable", f"{position.error}; the operator cannot tell the lag", kept)
    threshold = lag_threshold(spec)
    if position.last_sync_at is None or position.lag_seconds is None:
        if pod_age_seconds is not None and pod_age_seconds < threshold:
            return Health(None, "Starting", position.error or "no replication position yet", kept)
        return Health(False, "NotReplicating", position.error or "no replication position", kept)
    lag = round(position.lag_seconds)
    if position.lag_seconds > threshold:
        return Health(
            False,
            "Lagging",
            f"the replica is {lag}s behind the store (last complete at {position.last_sync_at}; "
            f"lagging beyond {threshold:g}s): memories since then are only on the volume",
            position.last_sync_at,
            lag,
        )
    return Health(
        True,
        "Replicating",
        f"the replica keeps up with the store (less than {threshold:g}s behind)",
        position.last_sync_at,
        lag,
    )
