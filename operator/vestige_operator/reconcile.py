"""The level-based reconcile loop of one VestigeMemory, and the scheduler that runs it.

One pass: read the owner and its children from the watch caches (kopf indexes), make sure a token
exists, render every child (pure), server-side apply only the children whose live object differs
from the rendering, delete the optional children that were switched off (only objects carrying
the operator's labels AND an owner reference to this VestigeMemory), compute the status (pure)
and patch it only when it changed. In a steady state a pass sends no request at all, so a resync
of 1000 resources costs CPU, not API calls.

Passes are coalesced per resource (a burst of child events yields one or two passes), bounded in
concurrency and retried with backoff on transient API errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from vestige_operator import cluster as k8s
from vestige_operator import tokens
from vestige_operator.api import VestigeMemorySpec, parse_quantity
from vestige_operator.backup import summarize
from vestige_operator.children import (
    IngressClaim,
    auth_secret_ref,
    ignored_env,
    ingress_host_holder,
    mounts_claim,
    render_children,
    render_secret,
    render_vestige_secret,
    token_hash,
    volume_agent_id,
    with_applied_hash,
)
from vestige_operator.config import OperatorConfig
from vestige_operator.events import make_event
from vestige_operator.status import (
    ChildError,
    Observation,
    anonymous_event,
    changed_conditions,
    compute_status,
    invalid_status,
    stalled_event,
    status_patch,
)
from vestige_operator.times import format_time, utc_now
from vestige_operator.vocabulary import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_TOKEN_HASH,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    Images,
    Owner,
    pvc_name,
    vestige_secret_name,
)

logger = logging.getLogger("vestige_operator.reconcile")

Key = tuple[str, str]  # (namespace, name)
#: A watch cache: (namespace, owner name) -> the trimmed objects seen under that key.
Cache = Mapping[Key, Iterable[Mapping[str, Any]]]

CHILD_KINDS = ("Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy", "Ingress")
#: Quantities the API server may re-serialize (``0.5Gi`` -> ``512Mi``): compared by value.
_QUANTITY_PARENTS = frozenset({"requests", "limits", "capacity"})


# -- pure helpers ------------------------------------------------------------------------------


def _token_hash_of(encoded: str) -> str | None:
    try:
        return token_hash(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None


#: Strings up to this length are interned in the caches (keys, labels, images, defaults).
_INTERN_MAX = 64


def compact(value: Any) -> Any:
    """A deep copy of parsed JSON in which equal keys and short strings are one shared object.

    Every watch event is parsed on its own, so each cached child would otherwise hold its own
    copy of the same keys, labels, images and defaults: at 1000 resources that is most of the
    cache's memory (see docs/benchmarks.md).
    """
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _INTERN_MAX:
        return sys.intern(value)
    return value


def trim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the caches keep of an object: no managedFields; a Secret keeps hashes of its values,
    never the values (the operator holds no token in memory beyond one pass). Compacted."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "data", "stringData")}
    out["metadata"] = meta
    if body.get("kind") == "Secret":
        out["tokenHashes"] = {k: _token_hash_of(v) for k, v in (body.get("data") or {}).items()}
    return compact(out)


#: The only annotations of a VestigeMemory the caches keep (the rotation request).
OWNER_ANNOTATIONS = (tokens.ANNOTATION_ROTATE, tokens.ANNOTATION_ROTATE_GRACE)


_OWNER_META = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "creationTimestamp",  # scheduled backups count from it (docs/backup.md)
)


def trim_owner(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k in OWNER_ANNOTATIONS}
    return compact(
        {
            "metadata": {
                **{k: meta[k] for k in _OWNER_META if k in meta},
                **({"annotations": kept} if kept else {}),
            },
            "spec": body.get("spec") or {},
            "status": body.get("status") or {},
        }
    )


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, TypeError):
        return False


#: Lists that Kubernetes merges by key (``x-kubernetes-list-type: map``) and the key of their
#: entries. Another field manager's entry in such a list (``kubectl set env``, a sidecar injector)
#: survives every server-side apply of the operator, so it must not count as drift.
_KEYED_LISTS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "containers": lambda e: e.get("name"),
    "initContainers": lambda e: e.get("name"),
    "env": lambda e: e.get("name"),
    "volumes": lambda e: e.get("name"),
    "volumeMounts": lambda e: e.get("mountPath"),
    "imagePullSecrets": lambda e: e.get("name"),
    # container ports (containerPort, protocol) and Service ports (port, protocol)
    "ports": lambda e: (e.get("containerPort", e.get("port")), e.get("protocol") or "TCP"),
}


def _keyed_difference(
    desired: list[Any], observed: list[Any], path: str, key: Callable[[Mapping[str, Any]], Any]
) -> str | None:
    """Every desired entry must be present (by key) and match; extra observed entries are other
    managers' and ignored. Order is not compared (server-side apply keeps other entries in place)."""
    by_key: dict[Any, Any] = {}
    for entry in observed:
        if isinstance(entry, Mapping):
            by_key.setdefault(key(entry), entry)
    for i, d in enumerate(desired):
        k = key(d)
        if k not in by_key:
            return f"{path}/{i}"
        diff = first_difference(d, by_key[k], f"{path}/{i}")
        if diff is not None:
            return diff
    return None


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """Where ``observed`` fails to contain ``desired`` (None when it does).

    Maps: every desired key must match (extra observed keys are server defaults or other
    managers' fields); keyed lists (containers, env, volumes, volumeMounts, ports: see
    ``_KEYED_LISTS``): every desired entry by its key, other entries ignored; other lists: same
    length, element-wise; empty desired values match absent ones (the API server drops them).
    Quantities under requests/limits compare by value.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return path or "/"
        for key, value in desired.items():
            if key not in observed:
                if _empty(value):
                    continue
                return f"{path}/{key}"
            diff = first_difference(value, observed[key], f"{path}/{key}")
            if diff is not None:
                return diff
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return path
        key = _KEYED_LISTS.get(path.rsplit("/", 1)[-1])
        if key is not None and all(isinstance(d, Mapping) for d in desired):
            return _keyed_difference(desired, observed, path, key)
        if len(desired) != len(observed):
            return path
        for i, (d, o) in enumerate(zip(desired, observed, strict=True)):
            diff = first_difference(d, o, f"{path}/{i}")
            if diff is not None:
                return diff
        return None
    if desired == observed:
        return None
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] in _QUANTITY_PARENTS and _same_quantity(desired, observed):
        return None
    return path


def apply_reason(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> str | None:
    """Why ``desired`` must be applied over ``observed`` (None: nothing to do)."""
    if observed is None:
        return "absent"
    want = desired["metadata"].get("annotations", {}).get(ANNOTATION_APPLIED_HASH)
    have = (observed.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_APPLIED_HASH)
    if want != have:
        return "rendering changed"
    diff = first_difference(desired, observed)
    return None if diff is None else f"drift at {diff}"


def cached_uids(cache: Cache) -> set[str]:
    """Every uid held by a watch cache."""
    return {
        uid
        for objs in list(cache.values())
        for obj in list(objs)
        if (uid := (obj.get("metadata") or {}).get("uid"))
    }


def _uid(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _named(objs: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((o for o in objs if (o.get("metadata") or {}).get("name") == name), None)


class RetryLater(Exception):
    """A pass ended with transient errors; the scheduler retries it with backoff."""


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What ``_ensure_token`` found or did: the hash of Vestige's internal token (the pod template
    annotation; None when unavailable), why no token is usable, and when it was last rotated."""

    vestige_hash: str | None
    problem: str | None = None
    rotated_at: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class VolumeCheck:
    """Whether the data claim may be applied and mounted for this resource's agent.

    ``problem`` is (reason, message) when it may not: it records another agent's id, or none at
    all and nothing shows that it was this resource's. ``mountable`` False without a problem: the
    claim could not be read this time (transient, retried).
    """

    mountable: bool
    problem: tuple[str, str] | None = None


def _storage_of(obj: Mapping[str, Any] | None, *path: str) -> Any:
    node: Any = obj or {}
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def keep_unshrinkable_request(manifest: dict[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The claim manifest, keeping the claim's current request where Kubernetes forbids the smaller one.

    After an expansion that did not happen, ``storage.size`` may go back down to the capacity
    (CEL), but a claim's request may only go back down to *above* its capacity (the API server:
    "can not be less than status.capacity"). Then the claim keeps the request it has: the volume
    has the size the spec asks for, and status says so (StorageReady ``ExpansionCancelled``).
    """
    want = _storage_of(manifest, "spec", "resources", "requests", "storage")
    have = _storage_of(current, "spec", "resources", "requests", "storage")
    capacity = _storage_of(current, "status", "capacity", "storage")
    if want is None or have is None or capacity is None:
        return manifest
    try:
        if not parse_quantity(want) <= parse_quantity(capacity) < parse_quantity(have):
            return manifest
    except ValueError:
        return manifest
    spec = {**manifest["spec"], "resources": {**manifest["spec"]["resources"], "requests": {"storage": have}}}
    return with_applied_hash({**manifest, "spec": spec})


def volume_check(
    owner: Owner, agent_id: str, pvc: Mapping[str, Any] | None, deployment: Mapping[str, Any] | None
) -> VolumeCheck:
    """May the claim ``pvc`` (None: absent, it will be created and stamped) serve ``agent_id``?

    A claim that records no agent id (created before claims recorded one) is adopted, and stamped
    by the next apply, only when it is provably this resource's: it carries this resource's owner
    reference (reclaimPolicy Delete), or this resource's own Deployment already mounts it (it
    served this resource, whose agent id is immutable). Otherwise it is a retained claim of a
    deleted resource of the same name, whose agent cannot be known: it is not mounted.
    """
    if pvc is None:
        return VolumeCheck(True)
    claim = pvc_name(owner.name)
    recorded = volume_agent_id(pvc)
    if recorded == agent_id:
        return VolumeCheck(True)
    if recorded is not None:
        return VolumeCheck(
            False,
            (
                "VolumeOwnedByOtherAgent",
                f"PersistentVolumeClaim {claim} holds the memory of agent {recorded!r}, not {agent_id!r}: "
                "it is not mounted. Use another name for this VestigeMemory, or set spec.agentId "
                f"to {recorded!r} if this resource is that agent",
            ),
        )
    if owned_by(pvc, owner.uid) or (
        deployment is not None and owned_by(deployment, owner.uid) and mounts_claim(deployment, claim)
    ):
        return VolumeCheck(True)
    return VolumeCheck(
        False,
        (
            "VolumeOwnerUnknown",
            f"PersistentVolumeClaim {claim} records no agent id (created before claims recorded "
            "one, or not by the operator), so whose memory it holds is unknown: it is not mounted. "
            "If it is agent "
            f"{agent_id!r}'s, record that: kubectl annotate pvc {claim} vestige.dev/agent-id={agent_id}",
        ),
    )


# -- the reconciler ----------------------------------------------------------------------------


class Reconciler:
    """Runs reconcile passes for VestigeMemory resources, one at a time per resource."""

    def __init__(
        self,
        cluster: k8s.Cluster,
        config: OperatorConfig,
        *,
        clock: Callable[[], str] = utc_now,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.images = Images(vestige=config.default_vestige_image, bridge=config.default_bridge_image)
        self._clock = clock
        self._now = now
        #: (owner uid, request id) of rotation requests refused with an Event (existingSecret).
        self._refused_rotations: set[tuple[str, str]] = set()
        #: When to look again at a previous token whose grace period ends.
        self._expiry_timers: dict[Key, asyncio.TimerHandle] = {}
        self._owners: Cache = {}
        self._children: Mapping[str, Cache] = {}
        self._hosts: Mapping[str, Iterable[IngressClaim]] = {}
        #: VestigeBackups by (namespace, memory) and restore refusals, kept by backup_controller.
        self.backups: Cache = {}
        self.restore_problems: dict[Key, str] = {}
        self._storage_class_check_logged = False
        self._written: dict[str, dict[str, Any]] = {}  # owner uid -> last status written
        #: uids still in a watch cache whose objects are known to be gone (see verify_caches).
        self._ghosts: set[str] = set()
        self._running: set[Key] = set()
        self._pending: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._retries: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(config.max_concurrent_reconciles)
        self.ready = asyncio.Event()
        self.passes = 0
        self._active = 0  # passes holding a concurrency slot
        #: Called after every pass with its result ("success", "retry", "error") and duration.
        self.on_pass: Callable[[str, float], None] | None = None

    def attach(
        self,
        owners: Cache,
        children: Mapping[str, Cache],
        hosts: Mapping[str, Iterable[IngressClaim]] | None = None,
    ) -> None:
        """Give the reconciler its watch caches (kopf indexes, or plain mappings in tests);
        ``hosts`` maps a lower-cased Ingress host to the VestigeMemory claims on it."""
        self._owners = owners
        self._children = children
        self._hosts = hosts if hosts is not None else {}

    # -- scheduling -----------------------------------------------------------------------------

    def request(self, key: Key) -> None:
        """Ask for a pass of ``key``; coalesced with a running or already requested one."""
        if key in self._running:
            self._pending.add(key)
            return
        handle = self._retries.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key[0]}/{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, key: Key, uid: str | None) -> None:
        """Drop per-resource state once a VestigeMemory is gone."""
        handle = self._retries.pop(key, None)
        if handle is not None:
            handle.cancel()
        timer = self._expiry_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        if uid is not None:
            self._written.pop(uid, None)

    def keys(self) -> list[Key]:
        return [key for key in list(self._owners) if self._owner(key) is not None]

    def queue_depth(self) -> dict[str, int]:
        """Resources waiting for a pass (queued), in a pass (running), waiting to retry (backoff)."""
        waiting = len(self._running) - self._active + len(self._pending)
        return {"queued": waiting, "running": self._active, "backoff": len(self._retries)}

    def phases(self) -> dict[str, int]:
        """How many watched VestigeMemory resources are in each status.phase ("Unknown": none yet)."""
        counts: dict[str, int] = {}
        for key in self.keys():
            owner = self._owner(key) or {}
            uid = _uid(owner) or ""
            phase = (self._written.get(uid) or owner.get("status") or {}).get("phase") or "Unknown"
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    async def verify_caches(self) -> int:
        """Find cached objects that no longer exist; their number. Later passes ignore them.

        kopf's indexes miss a deletion that happens while a watch is down long enough to restart
        from a fresh listing: the object stays in the index for ever, and the reconciler would
        neither re-create a deleted child nor forget a deleted VestigeMemory. So every
        ``verify_resyncs`` resyncs each cache is compared with a metadata-only LIST of its kind
        (a handful of requests for the whole operator, whatever the number of resources): a uid
        cached *before* the LIST began and absent from its answer is gone.
        """
        scopes: list[str | None] = [None] if self.config.all_namespaces else list(self.config.namespaces)
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        caches: list[tuple[k8s.Kind, Cache, str | None]] = [(k8s.VESTIGE_MEMORY, self._owners, None)]
        caches += [(k8s.KINDS[kind], self._children.get(kind, {}), selector) for kind in CHILD_KINDS]
        found: set[str] = set()
        still_cached: set[str] = set()
        for kind, cache, labels in caches:
            before = cached_uids(cache)
            if not before - self._ghosts:
                still_cached |= before
                continue
            try:
                live: set[str] = set()
                for namespace in scopes:
                    live |= await self.cluster.live_uids(kind, namespace, labels)
            except k8s.ApiError as exc:
                logger.warning("cannot verify the %s cache: %s", kind.kind, exc)
                still_cached |= before
                continue
            found |= before - live - self._ghosts
            still_cached |= cached_uids(cache)
        self._ghosts = (self._ghosts | found) & still_cached
        if found:
            logger.warning(
                "%d cached object(s) were deleted while a watch was interrupted; repairing", len(found)
            )
        return len(found)

    async def resync_forever(self) -> None:
        """Request a pass of every known resource every ``resync_seconds`` (drift safety net)."""
        await self.ready.wait()
        interval = self.config.resync_seconds
        resyncs = 0
        while True:
            await asyncio.sleep(interval)
            keys = self.keys()
            resyncs += 1
            api_requests = sum(self.cluster.requests.values())
            logger.info(
                "resync #%d of %d resource(s); so far %d pass(es), %d API request(s)",
                resyncs,
                len(keys),
                self.passes,
                api_requests,
                extra={
                    "resync": resyncs,
                    "resources": len(keys),
                    "passes": self.passes,
                    "api_requests": api_requests,
                },
            )
            if resyncs % self.config.verify_resyncs == 0:
                await self.verify_caches()
                keys = self.keys()
            for key in keys:
                self.request(key)

    async def drain(self) -> None:
        """Wait for the passes in flight (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._pending.discard(key)
                async with self._semaphore:
                    await self._pass(key)
                if key not in self._pending:
                    return
        finally:
            self._running.discard(key)

    async def _pass(self, key: Key) -> None:
        started = time.monotonic()
        result = "success"
        self._active += 1
        try:
            await self.reconcile(*key)
        except RetryLater as exc:
            result = "retry"
            self._schedule_retry(key, str(exc))
        except Exception:
            result = "error"
            logger.exception("reconcile of %s/%s failed", *key)
            self._schedule_retry(key, "unexpected error")
        else:
            self._failures.pop(key, None)
        finally:
            self._active -= 1
            self.passes += 1
            took = time.monotonic() - started
            if self.on_pass is not None:
                self.on_pass(result, took)
            logger.debug("pass %s/%s took %.3fs", key[0], key[1], took)

    def _schedule_retry(self, key: Key, why: str) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self.config.resync_seconds, 2.0 ** min(failures, 10) / 2)
        logger.warning("reconcile of %s/%s will be retried in %.1fs: %s", key[0], key[1], delay, why)
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._retries[key] = loop.call_later(delay, self._retry, key)

    def _retry(self, key: Key) -> None:
        self._retries.pop(key, None)
        self.request(key)

    # -- one pass -------------------------------------------------------------------------------

    def _owner(self, key: Key) -> Mapping[str, Any] | None:
        if key not in self._owners:
            return None
        return next((o for o in self._owners.get(key, ()) if _uid(o) not in self._ghosts), None)

    def _cached(self, kind: str, key: Key) -> list[Mapping[str, Any]]:
        cache = self._children.get(kind)
        if cache is None or key not in cache:
            return []
        return [obj for obj in cache[key] if _uid(obj) not in self._ghosts]

    async def reconcile(self, namespace: str, name: str) -> None:
        """One level-based pass over the VestigeMemory ``namespace/name``."""
        key = (namespace, name)
        body = self._owner(key)
        if body is None:
            return
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return  # owner references and the garbage collector do the rest
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        generation = int(meta.get("generation") or 0)
        previous = self._written.get(owner.uid, body.get("status") or {})

        try:
            spec = VestigeMemorySpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )[:2000]
            new = invalid_status(
                owner, generation, f"spec not understood: {message}", previous, self._clock()
            )
            await self._write_status(owner, previous, new)
            return

        cached = {kind: self._cached(kind, key) for kind in CHILD_KINDS}
        errors: list[ChildError] = []
        applied: list[str] = []
        observed: dict[str, Mapping[str, Any] | None] = {}

        owner_annotations = meta.get("annotations") or {}
        token_state = await self._ensure_token(owner, spec, owner_annotations, cached["Secret"], errors)
        auth_hash, auth_problem = token_state.vestige_hash, token_state.problem
        current_deployment = _named(cached["Deployment"], name)
        if auth_hash is None and auth_problem is None and current_deployment is not None:
            # The token could not be read this time (transient): keep the pod template as it is.
            template = (current_deployment.get("spec") or {}).get("template") or {}
            auth_hash = ((template.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TOKEN_HASH)
        desired = render_children(owner, spec, self.images, auth_hash)
        observed["Deployment"] = current_deployment
        ingress_conflict = self._ingress_conflict(owner, spec)
        to_apply = desired.apply
        if ingress_conflict is not None:  # never route a URL another resource already routes
            to_apply = tuple(m for m in to_apply if m["kind"] != "Ingress")
        volume = await self._check_volume(owner, spec, cached, current_deployment, errors)
        if not volume.mountable:  # never mount one agent's memory for another
            to_apply = tuple(m for m in to_apply if m["kind"] not in ("PersistentVolumeClaim", "Deployment"))
            if (
                volume.problem is not None
                and current_deployment is not None
                and owned_by(current_deployment, owner.uid)
            ):
                # This resource's pod already runs on a claim now recorded for another agent
                # (someone re-stamped it): scale it to zero rather than keep it mounted.
                suspended = spec.model_copy(update={"suspend": True})
                to_apply += tuple(
                    m
                    for m in render_children(owner, suspended, self.images, auth_hash).apply
                    if m["kind"] == "Deployment"
                )
        current_pvc = _named(cached["PersistentVolumeClaim"], pvc_name(name))
        to_apply = tuple(
            keep_unshrinkable_request(m, current_pvc) if m["kind"] == "PersistentVolumeClaim" else m
            for m in to_apply
        )

        for manifest in to_apply:
            kind = manifest["kind"]
            current = _named(cached[kind], manifest["metadata"]["name"])
            reason = apply_reason(manifest, current)
            if reason is None:
                observed[kind] = current
                continue
            logger.info("applying %s %s/%s: %s", kind, namespace, manifest["metadata"]["name"], reason)
            try:
                observed[kind] = trim(await self.cluster.apply(manifest))
                applied.append(kind)
            except k8s.ApiError as exc:
                errors.append(ChildError(kind, exc.message or str(exc), exc.transient))
                observed[kind] = current

        for kind in desired.remove_kinds:
            for obj in cached[kind]:
                obj_meta = obj.get("metadata") or {}
                if not owned_by(obj, owner.uid):
                    continue  # labelled like ours but not ours: never touched
                logger.info("deleting %s %s/%s: switched off in the spec", kind, namespace, obj_meta["name"])
                try:
                    if await self.cluster.delete(
                        k8s.KINDS[kind], namespace, obj_meta["name"], obj_meta["uid"]
                    ):
                        applied.append(f"-{kind}")
                except k8s.ApiError as exc:
                    errors.append(ChildError(kind, exc.message or str(exc), exc.transient))

        missing = tuple(m["kind"] for m in to_apply if observed.get(m["kind"]) is None)
        storage_class_missing = await self._missing_storage_class(spec, observed.get("PersistentVolumeClaim"))
        obs = Observation(
            generation=generation,
            pvc=observed.get("PersistentVolumeClaim") if volume.mountable else None,
            deployment=observed.get("Deployment"),
            missing=missing,
            applied=tuple(applied),
            errors=tuple(errors),
            auth_problem=auth_problem,
            ignored_env=tuple(ignored_env(spec)),
            ingress_conflict=ingress_conflict,
            storage_class_missing=storage_class_missing,
            # A transient failure to read the Secret keeps the last known rotation time.
            token_rotated_at=token_state.rotated_at
            if auth_hash is not None or auth_problem is not None
            else previous.get("tokenRotatedAt"),
            volume_problem=volume.problem,
            backup=summarize(self.backups.get(key, ())) if key in self.backups else None,
            restore_refused=self.restore_problems.get(key) if spec.restore is not None else None,
        )
        new = compute_status(owner, spec, obs, previous, self._clock())
        await self._write_status(owner, previous, new)
        transient = [e for e in errors if e.transient]
        if transient:
            raise RetryLater("; ".join(f"{e.kind}: {e.message}" for e in transient))

    async def _check_volume(
        self,
        owner: Owner,
        spec: VestigeMemorySpec,
        cached: Mapping[str, list[Mapping[str, Any]]],
        deployment: Mapping[str, Any] | None,
        errors: list[ChildError],
    ) -> VolumeCheck:
        """``volume_check`` on the cached claim; a claim missing from the cache is read once (it
        may exist without the operator's labels, or the cache may lag), never applied blind."""
        name = pvc_name(owner.name)
        pvc = _named(cached["PersistentVolumeClaim"], name)
        if pvc is None:
            try:
                found = await self.cluster.get(k8s.PVC, owner.namespace, name)
            except k8s.ApiError as exc:
                errors.append(ChildError("PersistentVolumeClaim", exc.message or str(exc), exc.transient))
                return VolumeCheck(False)
            pvc = trim(found) if found is not None else None
        return volume_check(owner, spec.effective_agent_id(owner.name), pvc, deployment)

    def _ingress_conflict(self, owner: Owner, spec: VestigeMemorySpec) -> str | None:
        """Why this resource may not route its Ingress host and path (None: it may)."""
        ingress = spec.ingress
        if not ingress.enabled or not ingress.host:
            return None
        host = ingress.host.lower()
        holder = ingress_host_holder(
            owner.namespace, owner.name, host, ingress.path, self._hosts.get(host, ())
        )
        if holder is None:
            return None
        return (
            f"host {ingress.host} path {ingress.path} is already routed by VestigeMemory "
            f"{holder.namespace}/{holder.name} (created first); the Ingress is not applied"
        )

    async def _missing_storage_class(
        self, spec: VestigeMemorySpec, pvc: Mapping[str, Any] | None
    ) -> str | None:
        """The named StorageClass of a claim that is not bound, when that class does not exist.

        One GET, only while the claim waits; a class the operator may not read counts as present.
        """
        name = spec.storage.storage_class_name
        if not name or pvc is None or (pvc.get("status") or {}).get("phase") == "Bound":
            return None
        exists = await self.cluster.storage_class_exists(name)
        if exists is None and not self._storage_class_check_logged:
            self._storage_class_check_logged = True
            logger.warning("cannot read StorageClass %s (RBAC: storageclasses get): not checked", name)
        return name if exists is False else None

    async def _ensure_token(
        self,
        owner: Owner,
        spec: VestigeMemorySpec,
        owner_annotations: Mapping[str, str],
        cached_secrets: list[Mapping[str, Any]],
        errors: list[ChildError],
    ) -> TokenOutcome:
        """Make sure the agents' token and Vestige's internal token exist; carry out a requested
        rotation; drop an expired previous token. Creates ``<name>-auth`` (or, with
        ``existingSecret``, ``<name>-vestige``) once; never writes a user's Secret."""
        name, key = auth_secret_ref(owner.name, spec)
        request = tokens.rotation_request(owner_annotations)
        try:
            if spec.auth.existing_secret is not None:
                # Not labelled by the operator, hence not watched: read it (one GET per pass).
                found = await self.cluster.get(k8s.SECRET, owner.namespace, name)
                if found is None:
                    return TokenOutcome(None, f"Secret {name} (auth.existingSecret) not found")
                if (trim(found).get("tokenHashes") or {}).get(key) is None:
                    return TokenOutcome(None, f"Secret {name} has no usable key {key!r}")
                if request is not None:
                    await self._refuse_rotation(owner, request[0], name)
                internal = await self._ensure_vestige_secret(owner, cached_secrets)
                return self._outcome(internal, vestige_secret_name(owner.name), tokens.VESTIGE_TOKEN_KEY)
            secret = _named(cached_secrets, name)
            if secret is None:
                created = await self.cluster.create(
                    render_secret(owner, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
                )
                if created is not None:
                    logger.info("created Secret %s/%s", owner.namespace, name)
                    secret = trim(created)
                else:  # it exists (the cache lags, or someone else made it): use it as it is
                    found = await self.cluster.get(k8s.SECRET, owner.namespace, name)
                    if found is None:
                        raise k8s.ApiError(
                            0, "Gone", "Secret vanished while reading it", verb="get", target=name
                        )
                    secret = trim(found)
            secret, problem = await self._maintain_secret(owner, secret, request)
            if problem is not None:
                return TokenOutcome(None, problem)
            if (secret.get("tokenHashes") or {}).get(key) is None:
                return TokenOutcome(None, f"Secret {name} has no usable key {key!r}")
            self._schedule_expiry(owner, secret)
            outcome = self._outcome(secret, name, tokens.VESTIGE_TOKEN_KEY)
            return TokenOutcome(outcome.vestige_hash, outcome.problem, tokens.rotated_at(secret))
        except k8s.ApiError as exc:
            if exc.transient:
                errors.append(ChildError("Secret", exc.message or str(exc), True))
                return TokenOutcome(None)
            return TokenOutcome(None, f"Secret {name}: {exc.message or exc}")

    @staticmethod
    def _outcome(secret: Mapping[str, Any], name: str, key: str) -> TokenOutcome:
        digest = (secret.get("tokenHashes") or {}).get(key)
        if digest is None:
            return TokenOutcome(None, f"Secret {name} has no usable key {key!r}")
        return TokenOutcome(digest)

    async def _ensure_vestige_secret(
        self, owner: Owner, cached_secrets: list[Mapping[str, Any]]
    ) -> Mapping[str, Any]:
        """``<name>-vestige`` (Vestige's internal token beside a user's Secret), created once."""
        name = vestige_secret_name(owner.name)
        cached = _named(cached_secrets, name)
        if cached is not None:
            return cached
        created = await self.cluster.create(render_vestige_secret(owner, secrets.token_urlsafe(32)))
        if created is not None:
            logger.info("created Secret %s/%s", owner.namespace, name)
            return trim(created)
        found = await self.cluster.get(k8s.SECRET, owner.namespace, name)
        if found is None:
            raise k8s.ApiError(0, "Gone", "Secret vanished while reading it", verb="get", target=name)
        return trim(found)

    async def _maintain_secret(
        self,
        owner: Owner,
        secret: Mapping[str, Any],
        request: tuple[str, Any, bool] | None,
    ) -> tuple[Mapping[str, Any], str | None]:
        """The only writes of an existing token Secret: add a missing ``vestige-token`` (once),
        rotate on request, remove an expired previous token. Decided from the cache (hashes and
        annotations, no values); when a write is due the Secret is read, decided again on the
        fresh copy and replaced with its resourceVersion as a precondition (a concurrent change
        is a 409: retried later, so one request rotates exactly once)."""
        now = self._now()
        request_id = request[0] if request is not None else None

        def due(obj: Mapping[str, Any]) -> tuple[bool, bool, bool]:
            hashes = obj.get("tokenHashes") or {}
            return (
                hashes.get(tokens.VESTIGE_TOKEN_KEY) is None,
                tokens.rotation_due(obj, request_id),
                tokens.previous_expired(obj, now),
            )

        if not any(due(secret)):
            return secret, None
        name = (secret.get("metadata") or {}).get("name", "")
        if not owned_by(secret, owner.uid):
            return secret, (
                f"Secret {name} is not owned by this VestigeMemory, so the operator will not write "
                f"it (to add {tokens.VESTIGE_TOKEN_KEY!r} or rotate): delete it to have it re-created, "
                "or use auth.existingSecret"
            )
        full = await self.cluster.get(k8s.SECRET, owner.namespace, name)
        if full is None:
            raise k8s.ApiError(0, "Gone", "Secret vanished while reading it", verb="get", target=name)
        add_internal, rotate, expire = due(trim(full))
        body: dict[str, Any] = dict(full)
        notes: list[str] = []
        if add_internal:
            body = tokens.with_vestige_token(body, secrets.token_urlsafe(32))
            notes.append(f"added {tokens.VESTIGE_TOKEN_KEY}")
        event: dict[str, Any] | None = None
        if rotate and request is not None:
            _, grace, understood = request
            body = tokens.rotated(body, request[0], secrets.token_urlsafe(32), now, grace)
            expires = format_time(now + grace)
            notes.append("rotated the token")
            message = f"token rotated on request; the previous token stays valid until {expires}"
            if not understood:
                message += f" (annotation {tokens.ANNOTATION_ROTATE_GRACE} is not a duration: used 10m)"
            event = make_event(owner, "Normal", "TokenRotated", message, self._clock())
        elif expire:
            body = tokens.without_previous(body)
            notes.append("removed the expired previous token")
        if not notes:
            return trim(full), None
        result = await self.cluster.update(body)
        if result is None:
            raise k8s.ApiError(0, "Gone", "Secret vanished while writing it", verb="update", target=name)
        logger.info("updated Secret %s/%s: %s", owner.namespace, name, ", ".join(notes))
        if event is not None:
            await self.cluster.post_event(event)
        return trim(result), None

    async def _refuse_rotation(self, owner: Owner, request: str, secret: str) -> None:
        """A rotation request on a resource using a user's Secret: one Warning Event (per request
        id and operator run), nothing written."""
        if (owner.uid, request) in self._refused_rotations:
            return
        self._refused_rotations.add((owner.uid, request))
        message = (
            f"token rotation requested, but the token comes from auth.existingSecret ({secret}), "
            "which the operator never writes: rotate it in that Secret (the bridge follows it "
            "without a restart)"
        )
        event = make_event(owner, "Warning", "RotationNotApplicable", message, self._clock())
        await self.cluster.post_event(event)

    def _schedule_expiry(self, owner: Owner, secret: Mapping[str, Any]) -> None:
        """Ask for a pass when the previous token's grace period ends (it is removed then)."""
        key = (owner.namespace, owner.name)
        old = self._expiry_timers.pop(key, None)
        if old is not None:
            old.cancel()
        expires = tokens.previous_expires(secret)
        if expires is None:
            return
        delay = max(0.0, (expires - self._now()).total_seconds()) + 0.5
        loop = asyncio.get_running_loop()
        self._expiry_timers[key] = loop.call_later(delay, self._expiry_due, key)

    def _expiry_due(self, key: Key) -> None:
        self._expiry_timers.pop(key, None)
        self.request(key)

    async def _write_status(self, owner: Owner, previous: Mapping[str, Any], new: dict[str, Any]) -> None:
        patch = status_patch(previous, new)
        if patch is None:
            return
        result = await self.cluster.patch_status(owner.namespace, owner.name, owner.uid, patch)
        if result is None:
            return  # deleted or replaced meanwhile
        self._written[owner.uid] = result.get("status") or new
        event = stalled_event(owner, previous, new, self._clock())
        if event is not None:
            await self.cluster.post_event(event)
        opened = anonymous_event(owner, previous, new, self._clock())
        if opened is not None:
            await self.cluster.post_event(opened)
        changed = changed_conditions(previous.get("conditions") or [], new["conditions"])
        logger.info(
            "status of %s/%s: phase %s%s",
            owner.namespace,
            owner.name,
            new.get("phase"),
            f" (changed: {', '.join(changed)})" if changed else "",
        )
