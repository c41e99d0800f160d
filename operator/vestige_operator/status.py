"""Pure computation of a VestigeMemory's status from what the reconciler observed.

Conditions have the Kubernetes shape (type, status, reason, message, lastTransitionTime,
observedGeneration) and follow the kstatus conventions that Flux, Argo CD and ``kubectl wait``
understand: ``Ready`` is the summary, ``Reconciling`` is True while the operator still works
towards the spec, ``Stalled`` is True when it cannot get there without help. ``StorageReady``
reports the data volume. A condition keeps its ``lastTransitionTime`` while its status does not
change, so an unchanged world yields an identical status and the reconciler writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vestige_operator.api import Phase, VestigeMemorySpec, parse_quantity
from vestige_operator.backup import LAST_BACKUP_SUCCEEDED, BackupSummary, continuous_enabled
from vestige_operator.children import auth_secret_ref, ingress_url
from vestige_operator.events import make_event
from vestige_operator.replication import Health
from vestige_operator.vocabulary import Owner, endpoint, pvc_name

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
STORAGE_READY = "StorageReady"
CONDITION_TYPES = (READY, RECONCILING, STALLED, STORAGE_READY)
#: Present (True) only while a token rotation request is refused (bad grace, existingSecret).
ROTATION_REFUSED = "RotationRefused"
#: Present only with spec.backup.continuous: whether the replica keeps up (replication.py).
REPLICATION_HEALTHY = "ReplicationHealthy"
#: Event reasons of ReplicationHealthy turning False (by condition reason) and back to True.
REPLICATION_EVENT_REASONS = {"Lagging": "ReplicationLagging", "NotReplicating": "ReplicationStopped"}
REPLICATION_RESUMED = "ReplicationResumed"
#: Part of the Ready condition's message while spec.bridge.allowAnonymous is true.
ANONYMOUS_NOTE = (
    "OPEN: spec.bridge.allowAnonymous is true, the bridge serves every caller that reaches it without a token"
)


@dataclass(frozen=True, slots=True)
class ChildError:
    """A child the reconciler could not apply or delete in this pass."""

    kind: str
    message: str
    transient: bool


@dataclass(frozen=True, slots=True)
class Observation:
    """What one reconcile pass saw and did; the only input of ``compute_status`` besides the spec.

    ``pvc`` and ``deployment`` are the objects as last seen (the apply response when the pass
    applied them); ``missing`` lists kinds that should exist but were not seen; ``applied`` the
    kinds this pass wrote over (applies, ``-Kind`` for deletions): not those it created, which are
    as the spec wants them, so the phase's own reason says what comes next (at creation, a
    "just created" note would cost every new resource one more status write when the next pass
    drops it); ``auth_problem`` why no token is available (missing Secret or key);
    ``ingress_conflict`` why the Ingress was not applied (another resource routes its host and
    path); ``storage_class_missing`` the named StorageClass the pending claim waits for in vain.
    """

    generation: int
    pvc: Mapping[str, Any] | None = None
    deployment: Mapping[str, Any] | None = None
    missing: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()
    errors: tuple[ChildError, ...] = ()
    auth_problem: str | None = None
    ignored_env: tuple[str, ...] = ()
    ingress_conflict: str | None = None
    storage_class_missing: str | None = None
    token_rotated_at: str | None = None
    #: (reason, message) when the data claim belongs to another agent or to an unknown one.
    volume_problem: tuple[str, str] | None = None
    #: Backups of the memory (backup.summarize): status.backup and LastBackupSucceeded.
    backup: BackupSummary | None = None
    #: Why the restore init container refused to run (the volume already holds a store).
    restore_refused: str | None = None
    #: Why a restore init container failed (the kubelet retries it); None: none failed.
    restore_failing: str | None = None
    #: (reason, message) of every child name held by an object this resource did not create.
    not_owned: tuple[tuple[str, str], ...] = ()
    #: (reason, message) of a token rotation request that is not carried out.
    rotation_refused: tuple[str, str] | None = None
    #: Why the Deployment waits for a fleet rollout slot (rollouts.py), if it does.
    rollout_waiting: str | None = None
    #: With spec.backup.continuous: what the pod said of its replica (replication.health).
    replication: Health | None = None


@dataclass(frozen=True, slots=True)
class _Cond:
    status: bool | None  # None: Unknown
    reason: str
    message: str


def _condition(
    type_: str,
    cond: _Cond,
    generation: int,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "Unknown" if cond.status is None else "True" if cond.status else "False"
    before = previous.get(type_)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    return {
        "type": type_,
        "status": status,
        "reason": cond.reason,
        "message": cond.message,
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def _storage(spec: VestigeMemorySpec, pvc: Mapping[str, Any] | None, name: str) -> tuple[_Cond, str | None]:
    """StorageReady and the observed capacity."""
    if pvc is None:
        return _Cond(False, "NotFound", f"PersistentVolumeClaim {name} not created yet"), None
    status = pvc.get("status") or {}
    phase = status.get("phase", "Pending")
    capacity = (status.get("capacity") or {}).get("storage")
    if phase == "Bound":
        requested = spec.storage.size
        if capacity is not None and _quantity_lt(capacity, requested):
            return (
                _Cond(
                    True, "ResizePending", f"bound with {capacity}; requested {requested}, expansion pending"
                ),
                capacity,
            )
        return _Cond(True, "Bound", f"bound with {capacity or 'unknown capacity'}"), capacity
    if phase == "Lost":
        return _Cond(False, "Lost", "the bound PersistentVolume no longer exists"), capacity
    return _Cond(False, "Pending", "waiting for a PersistentVolume to bind"), capacity


_REQUESTED = re.compile(r"requested (\S+), expansion pending")


def _expansion_cancelled(
    storage: _Cond,
    spec: VestigeMemorySpec,
    capacity: str | None,
    claim_request: str | None,
    before: Mapping[str, Any] | None,
    generation: int,
) -> _Cond:
    """StorageReady after ``storage.size`` went back down while an expansion was pending (the
    class refused it or the volume never grew): reason ``ExpansionCancelled``, kept until the
    next spec change so the status says what happened."""
    if storage.reason != "Bound" or before is None:
        return storage
    if before.get("reason") == "ExpansionCancelled" and before.get("observedGeneration") == generation:
        return _Cond(True, "ExpansionCancelled", str(before.get("message") or storage.message))
    match = _REQUESTED.search(str(before.get("message") or ""))
    if before.get("reason") != "ResizePending" or match is None:
        return storage
    abandoned = match.group(1)
    if not _quantity_lt(spec.storage.size, abandoned):
        return storage  # the expansion completed
    message = (
        f"bound with {capacity}; the expansion to {abandoned} did not happen and was cancelled: "
        f"storage.size went back to {spec.storage.size}"
    )
    if claim_request is not None and _quantity_lt(spec.storage.size, claim_request):
        message += (
            f"; the claim keeps requesting {claim_request} (Kubernetes lets a claim's request go back "
            "down only to above its capacity), so the storage may still grow to it later"
        )
    return _Cond(True, "ExpansionCancelled", message)


def _quantity_lt(a: str, b: str) -> bool:
    try:
        return parse_quantity(a) < parse_quantity(b)
    except ValueError:
        return False


def deployment_state(dep: Mapping[str, Any] | None, suspended: bool) -> tuple[str, str]:
    """(state, message) with state one of: missing, suspended, scaling-down, rolling, available,
    unavailable, stuck."""
    if dep is None:
        return "missing", "Deployment not created yet"
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    generation = int(meta.get("generation", 0))
    seen = int(status.get("observedGeneration", 0))
    replicas = int(status.get("replicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "stuck", f"Deployment rollout exceeded its progress deadline: {cond.get('message', '')}"
    if suspended:
        if want == 0 and seen >= generation and replicas == 0:
            return "suspended", "scaled to zero"
        return "scaling-down", f"scaling to zero ({replicas} pod(s) left)"
    if seen < generation:
        return "rolling", "Deployment controller has not observed the latest template yet"
    if updated < want:
        return "rolling", f"rolling out: {updated}/{want} pod(s) updated"
    if available < want:
        if replicas > want or updated < replicas:
            return "rolling", f"rolling out: {available}/{want} pod(s) available"
        return "unavailable", f"{available}/{want} pod(s) available"
    return "available", f"{available}/{want} pod(s) available"


def compute_status(
    owner: Owner,
    spec: VestigeMemorySpec,
    obs: Observation,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The status to write (camelCase keys, as the API server stores it)."""
    previous = previous or {}
    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    was_ready = previous.get("phase") in (Phase.READY, Phase.DEGRADED)
    gen = obs.generation

    storage_cond, capacity = _storage(spec, obs.pvc, pvc_name(owner.name))
    if obs.storage_class_missing is not None and not storage_cond.status:
        storage_cond = _Cond(
            False,
            "StorageClassNotFound",
            f"StorageClass {obs.storage_class_missing} (storage.storageClassName) does not exist: "
            "create it, or recreate this VestigeMemory with an existing class",
        )
    claim_spec = (obs.pvc or {}).get("spec") or {}
    claim_request = ((claim_spec.get("resources") or {}).get("requests") or {}).get("storage")
    storage_cond = _expansion_cancelled(
        storage_cond, spec, capacity, claim_request, prev_conditions.get(STORAGE_READY), gen
    )
    if obs.volume_problem is not None:
        storage_cond = _Cond(False, *obs.volume_problem)
    dep_state, dep_message = deployment_state(obs.deployment, spec.suspend)
    permanent = [e for e in obs.errors if not e.transient]
    transient = [e for e in obs.errors if e.transient]

    stalled: _Cond | None = None
    if obs.volume_problem is not None:
        stalled = _Cond(True, *obs.volume_problem)
    elif obs.not_owned:
        stalled = _Cond(True, obs.not_owned[0][0], "; ".join(m for _, m in obs.not_owned))
    elif obs.auth_problem is not None:
        stalled = _Cond(True, "AuthSecretUnavailable", obs.auth_problem)
    elif obs.ingress_conflict is not None:
        stalled = _Cond(True, "IngressHostConflict", obs.ingress_conflict)
    elif obs.restore_refused is not None:
        stalled = _Cond(True, "RestoreRefused", obs.restore_refused)
    elif permanent:
        stalled = _Cond(True, "ApplyRejected", "; ".join(f"{e.kind}: {e.message}" for e in permanent))
    elif storage_cond.reason == "StorageClassNotFound":
        stalled = _Cond(True, "StorageClassNotFound", storage_cond.message)
    elif storage_cond.reason == "Lost":
        stalled = _Cond(True, "VolumeLost", storage_cond.message)
    elif dep_state == "stuck":
        stalled = _Cond(True, "ProgressDeadlineExceeded", dep_message)

    # Phase and the Ready / Reconciling pair.
    if stalled is not None:
        phase = Phase.DEGRADED if dep_state == "stuck" and was_ready else Phase.FAILED
        ready = _Cond(False, stalled.reason, stalled.message)
        reconciling = _Cond(False, "Stalled", "cannot progress without a change (see Stalled)")
    elif spec.suspend:
        phase = Phase.SUSPENDED
        ready = _Cond(False, "Suspended", "spec.suspend is true: scaled to zero, data kept")
        if dep_state == "suspended" and not obs.applied and not transient:
            reconciling = _Cond(False, "Suspended", dep_message)
        else:
            reconciling = _Cond(True, "ScalingDown", dep_message)
    elif not storage_cond.status:
        phase = Phase.PENDING
        ready = _Cond(False, "StoragePending", storage_cond.message)
        reconciling = _Cond(True, "WaitingForStorage", storage_cond.message)
    elif obs.restore_failing is not None and dep_state != "available":
        phase = Phase.PROVISIONING
        message = f"restoring the new volume failed, the kubelet retries: {obs.restore_failing}"
        ready = _Cond(False, "RestoreFailing", message)
        reconciling = _Cond(True, "Restoring", message)
    elif dep_state == "available":
        phase = Phase.READY
        ready = _Cond(True, "Available", f"the bridge serves at {endpoint(owner)}")
        reconciling = _Cond(False, "Reconciled", "children match the spec")
    elif dep_state == "unavailable" and was_ready:
        phase = Phase.DEGRADED
        ready = _Cond(False, "Unavailable", dep_message)
        reconciling = _Cond(False, "WaitingForPods", dep_message)
    else:
        phase = Phase.PROVISIONING
        ready = _Cond(False, "Provisioning", dep_message)
        reconciling = _Cond(True, "Progressing", dep_message)

    if stalled is None and obs.rollout_waiting is not None:
        reconciling = _Cond(True, "RolloutPending", obs.rollout_waiting)
    if stalled is None and (obs.applied or obs.missing or transient):
        notes = []
        if obs.applied:
            notes.append(f"applied {', '.join(obs.applied)}")
        if obs.missing:
            notes.append(f"waiting to observe {', '.join(obs.missing)}")
        if transient:
            notes.append("retrying: " + "; ".join(f"{e.kind}: {e.message}" for e in transient))
        reconciling = _Cond(True, "Retrying" if transient else "Applying", "; ".join(notes))
        if phase is Phase.READY:
            ready = _Cond(True, ready.reason, ready.message)  # serving while children catch up
    if spec.bridge.allow_anonymous:
        ready = _Cond(ready.status, ready.reason, f"{ready.message}; {ANONYMOUS_NOTE}")
    if obs.ignored_env and ready.status:
        ready = _Cond(
            True, ready.reason, f"{ready.message}; ignored operator-managed env: {', '.join(obs.ignored_env)}"
        )

    conds = {
        READY: ready,
        RECONCILING: reconciling,
        STALLED: stalled or _Cond(False, "AsExpected", "no blocking problem"),
        STORAGE_READY: storage_cond,
    }
    types = list(CONDITION_TYPES)
    if obs.backup is not None and obs.backup.condition is not None:
        conds[LAST_BACKUP_SUCCEEDED] = _Cond(*obs.backup.condition)
        types.append(LAST_BACKUP_SUCCEEDED)
    if obs.rotation_refused is not None:
        conds[ROTATION_REFUSED] = _Cond(True, *obs.rotation_refused)
        types.append(ROTATION_REFUSED)
    replication = obs.replication if continuous_enabled(spec) else None
    if replication is not None:
        conds[REPLICATION_HEALTHY] = _Cond(replication.status, replication.reason, replication.message)
        types.append(REPLICATION_HEALTHY)
    secret, key = auth_secret_ref(owner.name, spec)
    status: dict[str, Any] = {
        "phase": str(phase),
        "observedGeneration": gen,
        "conditions": [_condition(t, conds[t], gen, prev_conditions, now) for t in types],
        "agentId": spec.effective_agent_id(owner.name),
        "endpoint": endpoint(owner),
        "authSecretRef": {"name": secret, "key": key},
        "pvcName": pvc_name(owner.name),
    }
    url = ingress_url(spec) if obs.ingress_conflict is None else None
    if url is not None:
        status["url"] = url
    if capacity is not None:
        status["storage"] = {"capacity": capacity}
    if obs.token_rotated_at is not None:
        status["tokenRotatedAt"] = obs.token_rotated_at
    if obs.backup is not None and obs.backup.status is not None:
        status["backup"] = obs.backup.status
    if replication is not None and replication.last_replicated_at is not None:
        status["replication"] = {"lastReplicatedAt": replication.last_replicated_at}
        if replication.lag_seconds is not None:
            status["replication"]["lagSeconds"] = replication.lag_seconds
    return status


def invalid_status(
    owner: Owner,
    generation: int,
    message: str,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """Status for a spec the operator cannot parse (it renders nothing for it)."""
    previous = previous or {}
    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    stalled = _Cond(True, "InvalidSpec", message)
    conds = {
        READY: _Cond(False, "InvalidSpec", message),
        RECONCILING: _Cond(False, "Stalled", "cannot progress without a change (see Stalled)"),
        STALLED: stalled,
        STORAGE_READY: _Cond(False, "Unknown", "spec not understood"),
    }
    return {
        "phase": str(Phase.FAILED),
        "observedGeneration": generation,
        "conditions": [_condition(t, conds[t], generation, prev_conditions, now) for t in CONDITION_TYPES],
        "endpoint": endpoint(owner),
    }


def status_patch(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch turning ``previous`` into ``new`` (None when they are equal).

    Top-level keys the new status lacks are nulled; ``kopf`` (kopf's own bookkeeping) is left
    alone. Nested values are replaced whole, which a merge patch does for lists anyway.
    """
    previous = {k: v for k, v in (previous or {}).items() if k != "kopf"}
    if previous == dict(new):
        return None
    patch: dict[str, Any] = {k: v for k, v in new.items() if previous.get(k) != v}
    for key in previous:
        if key not in new:
            patch[key] = None
    # A nested dict in a merge patch merges: send removed sub-keys as null too.
    for key, value in list(patch.items()):
        old = previous.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            patch[key] = {**{k: None for k in old if k not in value}, **value}
    return patch


def changed_conditions(previous: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[str]:
    """Condition types whose status changed (for logging)."""
    old = {c.get("type"): c.get("status") for c in previous}
    return [str(c["type"]) for c in new if old.get(c["type"]) != c["status"]]


def _find_condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def condition_event(
    owner: Owner, previous: Mapping[str, Any] | None, new: Mapping[str, Any], type_: str, now: str
) -> dict[str, Any] | None:
    """A Warning Event when the abnormal-true condition ``type_`` turns True or changes reason or
    message; else None. Tied to status transitions, so a resource that stays stuck yields one
    Event, not one per pass."""
    after = _find_condition(new, type_)
    if after is None or after.get("status") != "True":
        return None
    before = _find_condition(previous, type_)
    if (
        before is not None
        and before.get("status") == "True"
        and before.get("reason") == after.get("reason")
        and before.get("message") == after.get("message")
    ):
        return None
    return make_event(
        owner, "Warning", str(after.get("reason") or type_), str(after.get("message") or ""), now
    )


def stalled_event(
    owner: Owner, previous: Mapping[str, Any] | None, new: Mapping[str, Any], now: str
) -> dict[str, Any] | None:
    """The Warning Event of a Stalled transition (see ``condition_event``)."""
    return condition_event(owner, previous, new, STALLED, now)


def transition_events(
    owner: Owner, previous: Mapping[str, Any] | None, new: Mapping[str, Any], now: str
) -> list[dict[str, Any]]:
    """The Events a status change calls for: Stalled, a refused rotation, an agent turned open,
    replication stopping or lagging and resuming."""
    events = [condition_event(owner, previous, new, t, now) for t in (STALLED, ROTATION_REFUSED)]
    events.append(anonymous_event(owner, previous, new, now))
    events.append(replication_event(owner, previous, new, now))
    return [e for e in events if e is not None]


def replication_event(
    owner: Owner, previous: Mapping[str, Any] | None, new: Mapping[str, Any], now: str
) -> dict[str, Any] | None:
    """A Warning Event when ReplicationHealthy turns False or changes reason (not when only the
    lag in its message moves), a Normal one when it turns True again after being False."""
    after = _find_condition(new, REPLICATION_HEALTHY)
    before = _find_condition(previous, REPLICATION_HEALTHY)
    if after is None:
        return None
    was = (before or {}).get("status")
    if after.get("status") == "False":
        if was == "False" and (before or {}).get("reason") == after.get("reason"):
            return None
        reason = REPLICATION_EVENT_REASONS.get(str(after.get("reason")), "ReplicationUnhealthy")
        return make_event(owner, "Warning", reason, str(after.get("message") or ""), now)
    if after.get("status") == "True" and was == "False":
        return make_event(owner, "Normal", REPLICATION_RESUMED, str(after.get("message") or ""), now)
    return None


def _ready_message(status: Mapping[str, Any] | None) -> str:
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == READY:
            return str(cond.get("message") or "")
    return ""


def anonymous_event(
    owner: Owner, previous: Mapping[str, Any] | None, new: Mapping[str, Any], now: str
) -> dict[str, Any] | None:
    """A Warning Event when the agent becomes open (allowAnonymous), once per transition."""
    if ANONYMOUS_NOTE not in _ready_message(new) or ANONYMOUS_NOTE in _ready_message(previous):
        return None
    return make_event(
        owner,
        "Warning",
        "AnonymousAccess",
        "spec.bridge.allowAnonymous is true: the bridge of this agent serves every caller that "
        "reaches it without a token (only the NetworkPolicy restricts who can)",
        now,
    )
