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
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from vestige_operator import cluster as k8s
from vestige_operator.api import VestigeMemorySpec, parse_quantity
from vestige_operator.backup import summarize
from vestige_operator.children import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_TOKEN_HASH,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    Images,
    IngressClaim,
    Owner,
    auth_secret_ref,
    ignored_env,
    ingress_host_holder,
    render_children,
    render_secret,
    token_hash,
)
from vestige_operator.config import OperatorConfig
from vestige_operator.status import (
    ChildError,
    Observation,
    changed_conditions,
    compute_status,
    invalid_status,
    stalled_event,
    status_patch,
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


def trim_owner(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return compact(
        {
            "metadata": {
                k: meta[k]
                for k in (
                    "name",
                    "namespace",
                    "uid",
                    "generation",
                    "resourceVersion",
                    "deletionTimestamp",
                    "creationTimestamp",
                )
                if k in meta
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


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """Where ``observed`` fails to contain ``desired`` (None when it does).

    Maps: every desired key must match (extra observed keys are server defaults or other
    managers' fields); lists: same length, element-wise; empty desired values match absent ones
    (the API server drops them). Quantities under requests/limits compare by value.
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
        if not isinstance(observed, list) or len(desired) != len(observed):
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


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RetryLater(Exception):
    """A pass ended with transient errors; the scheduler retries it with backoff."""


# -- the reconciler ----------------------------------------------------------------------------


class Reconciler:
    """Runs reconcile passes for VestigeMemory resources, one at a time per resource."""

    def __init__(
        self,
        cluster: k8s.Cluster,
        config: OperatorConfig,
        *,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.images = Images(vestige=config.default_vestige_image, bridge=config.default_bridge_image)
        self._clock = clock
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
        self._failures.pop(key, None)
        if uid is not None:
            self._written.pop(uid, None)

    def keys(self) -> list[Key]:
        return [key for key in list(self._owners) if self._owner(key) is not None]

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
        try:
            await self.reconcile(*key)
        except RetryLater as exc:
            self._schedule_retry(key, str(exc))
        except Exception:
            logger.exception("reconcile of %s/%s failed", *key)
            self._schedule_retry(key, "unexpected error")
        else:
            self._failures.pop(key, None)
        finally:
            self.passes += 1
            logger.debug("pass %s/%s took %.3fs", key[0], key[1], time.monotonic() - started)

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

        auth_hash, auth_problem = await self._ensure_token(owner, spec, cached["Secret"], errors)
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
            pvc=observed.get("PersistentVolumeClaim"),
            deployment=observed.get("Deployment"),
            missing=missing,
            applied=tuple(applied),
            errors=tuple(errors),
            auth_problem=auth_problem,
            ignored_env=tuple(ignored_env(spec)),
            ingress_conflict=ingress_conflict,
            storage_class_missing=storage_class_missing,
            backup=summarize(self.backups.get(key, ())) if key in self.backups else None,
            restore_refused=self.restore_problems.get(key) if spec.restore is not None else None,
        )
        new = compute_status(owner, spec, obs, previous, self._clock())
        await self._write_status(owner, previous, new)
        transient = [e for e in errors if e.transient]
        if transient:
            raise RetryLater("; ".join(f"{e.kind}: {e.message}" for e in transient))

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
        cached_secrets: list[Mapping[str, Any]],
        errors: list[ChildError],
    ) -> tuple[str | None, str | None]:
        """(hash of the token, problem). Creates ``<name>-auth`` once; never overwrites a Secret."""
        name, key = auth_secret_ref(owner.name, spec)
        try:
            if spec.auth.existing_secret is not None:
                # Not labelled by the operator, hence not watched: read it (one GET per pass).
                found = await self.cluster.get(k8s.SECRET, owner.namespace, name)
                if found is None:
                    return None, f"Secret {name} (auth.existingSecret) not found"
                return self._hash_from(trim(found), name, key)
            cached = _named(cached_secrets, name)
            if cached is not None:
                return self._hash_from(cached, name, key)
            token = secrets.token_urlsafe(32)
            created = await self.cluster.create(render_secret(owner, token))
            if created is not None:
                logger.info("created Secret %s/%s", owner.namespace, name)
                return token_hash(token.encode()), None
            # It exists (the cache lags, or someone else made it): use it as it is.
            found = await self.cluster.get(k8s.SECRET, owner.namespace, name)
            if found is None:
                raise k8s.ApiError(0, "Gone", "Secret vanished while reading it", verb="get", target=name)
            return self._hash_from(trim(found), name, key)
        except k8s.ApiError as exc:
            if exc.transient:
                errors.append(ChildError("Secret", exc.message or str(exc), True))
                return None, None
            return None, f"Secret {name}: {exc.message or exc}"

    @staticmethod
    def _hash_from(secret: Mapping[str, Any], name: str, key: str) -> tuple[str | None, str | None]:
        digest = (secret.get("tokenHashes") or {}).get(key)
        if digest is None:
            return None, f"Secret {name} has no usable key {key!r}"
        return digest, None

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
        changed = changed_conditions(previous.get("conditions") or [], new["conditions"])
        logger.info(
            "status of %s/%s: phase %s%s",
            owner.namespace,
            owner.name,
            new.get("phase"),
            f" (changed: {', '.join(changed)})" if changed else "",
        )
