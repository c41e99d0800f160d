"""The VestigeMemory reconciler: its watch caches, the resync, and one short level-based pass.

One pass: read the owner and its children from the watch caches (watch_cache.py); the token
Secret's outcome (token_secret.py); the plan (plan.py: render, ownership, drift, overrides);
carry it out through the API port (create absent children, apply owned ones that drifted, delete
owned optional ones switched off); compute the status (status.py) and patch it only when it
changed; return when to run again (the previous token's expiry). In a steady state a pass sends
no request at all, so a resync of 1000 resources costs CPU, not API calls.

Passes run on the shared work queue (workqueue.py): merged per resource, bounded in
concurrency, retried with backoff on transient API errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from vestige_operator import cluster as k8s
from vestige_operator import plan as p
from vestige_operator import replication
from vestige_operator.api import VestigeBackupGrantSpec, VestigeMemorySpec
from vestige_operator.backup import BackupSummary, continuous_enabled, restore_source
from vestige_operator.caches import CREATED_FIELDS, Cache, Key, cached_uids, trim, unpacked
from vestige_operator.children import IngressClaim, ignored_env, ingress_host_holder, operator_peer
from vestige_operator.config import OperatorConfig
from vestige_operator.port import ApiPort
from vestige_operator.rollouts import Rollouts
from vestige_operator.status import (
    ChildError,
    Observation,
    changed_conditions,
    compute_status,
    invalid_status,
    status_patch,
    transition_events,
)
from vestige_operator.times import parse_time, utc_now
from vestige_operator.token_secret import TokenSecrets
from vestige_operator.vocabulary import (
    ANNOTATION_TOKEN_HASH,
    MANAGED_SELECTOR,
    Images,
    Owner,
    memory_pod_selector,
    pvc_name,
)
from vestige_operator.workqueue import RetryLater, WorkQueue

logger = logging.getLogger("vestige_operator.reconcile")

CHILD_KINDS = ("Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy", "Ingress")
#: A requeue-after a little past a deadline (the pass after it sees it passed).
_DEADLINE_SLACK = 0.5


class BackupView(Protocol):
    """What the reconciler reads of the backup controller (it writes status.backup)."""

    def summary(self, key: Key) -> BackupSummary | None: ...

    def restore_problem(self, key: Key) -> str | None: ...

    def restore_failure(self, key: Key) -> str | None: ...


def _uid(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def _named(objs: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((o for o in objs if (o.get("metadata") or {}).get("name") == name), None)


def _now() -> datetime:
    return datetime.now(UTC)


# -- the reconciler ----------------------------------------------------------------------------


class Reconciler:
    """The VestigeMemory controller: caches, resync, and the pass run by its work queue."""

    def __init__(
        self,
        port: ApiPort,
        config: OperatorConfig,
        *,
        clock: Callable[[], str] = utc_now,
        now: Callable[[], datetime] = _now,
        new_token: Callable[[], str] | None = None,
        probe: replication.ReplicationProbe | None = None,
    ) -> None:
        self.port = port
        self.config = config
        #: The NetworkPolicy peer of the operator's own pods (None: not running in a pod).
        self.operator_peer = operator_peer(config.own_namespace())
        #: Asks agents' pods for their replication position (spec.backup.continuous). Outside a
        #: pod there is none: pod IPs are not this host's to dial (they would go to its gateway).
        self.probe: replication.ReplicationProbe | None = probe
        if probe is None and self.operator_peer is not None:
            self.probe = replication.HttpProbe()
        self.images = Images(
            vestige=config.default_vestige_image,
            bridge=config.default_bridge_image,
            litestream=config.default_litestream_image,
        )
        self._clock = clock
        self._now = now
        self.tokens = (
            TokenSecrets(port, now=now, clock=clock)
            if new_token is None
            else TokenSecrets(port, now=now, clock=clock, new_token=new_token)
        )
        self.queue: WorkQueue[Key] = WorkQueue(
            "reconcile",
            self._pass,
            concurrency=config.max_concurrent_reconciles,
            max_backoff=config.resync_seconds,
        )
        #: Slots for rollouts of new operator default images (at most max_fleet_rollouts at once).
        self.rollouts = Rollouts(config.max_fleet_rollouts, self.request)
        self._owners: Cache = {}
        self._children: Mapping[str, Cache] = {}
        self._hosts: Mapping[str, Iterable[IngressClaim]] = {}
        self._grants: Mapping[str, Iterable[Mapping[str, Any]]] = {}
        self._backups: BackupView | None = None
        self._storage_class_check_logged = False
        #: owner uid -> (resourceVersion, status) of the last status written, until the watch
        #: cache shows that very version (then the cached status is the same and this is dropped).
        self._written: dict[str, tuple[str | None, dict[str, Any]]] = {}
        #: uids still in a watch cache whose objects are known to be gone (see verify_caches).
        self._ghosts: set[str] = set()
        self.ready = asyncio.Event()

    def attach(
        self,
        owners: Cache,
        children: Mapping[str, Cache],
        hosts: Mapping[str, Iterable[IngressClaim]] | None = None,
        backups: BackupView | None = None,
        grants: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        """Give the reconciler its watch caches (``watch_cache``, or plain mappings in tests);
        ``hosts`` maps a lower-cased Ingress host to the VestigeMemory claims on it; ``backups``
        is the backup controller's read-only view (status.backup, restore refusals); ``grants``
        maps a namespace to the specs of its VestigeBackupGrants."""
        self._owners = owners
        self._children = children
        self._hosts = hosts if hosts is not None else {}
        self._backups = backups
        self._grants = grants if grants is not None else {}

    # -- queue -------------------------------------------------------------------------------

    def request(self, key: Key) -> None:
        """Ask for a pass of ``key`` (merged with a queued or running one)."""
        self.queue.request(key)

    def forget(self, key: Key, uid: str | None) -> None:
        """Drop per-resource state once a VestigeMemory is gone."""
        self.queue.forget(key)
        self.rollouts.forget(key)
        if uid is not None:
            self._written.pop(uid, None)

    @property
    def passes(self) -> int:
        return self.queue.passes

    def queue_depth(self) -> dict[str, int]:
        return self.queue.depth()

    async def drain(self) -> None:
        """Wait for the passes in flight (used at shutdown and in tests)."""
        await self.queue.drain()

    def keys(self) -> list[Key]:
        return [key for key in list(self._owners) if self._owner(key) is not None]

    def phases(self) -> dict[str, int]:
        """How many watched VestigeMemory resources are in each status.phase ("Unknown": none yet)."""
        counts: dict[str, int] = {}
        for key in self.keys():
            owner = self._owner(key) or {}
            uid = _uid(owner) or ""
            phase = self._last_status(uid, owner).get("phase") or "Unknown"
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    async def verify_caches(self) -> int:
        """Find cached objects that no longer exist; their number. Later passes ignore them.

        A cache that missed a deletion (kopf's indexes did, when a watch was down long enough to
        restart from a fresh listing; the watch caches are replaced by each listing) would keep the
        object for ever, and the reconciler would neither re-create a deleted child nor forget a
        deleted VestigeMemory. So, as a safety net, every
        ``verify_resyncs`` resyncs each cache is compared with a metadata-only LIST of its kind
        (a handful of requests for the whole operator, whatever the number of resources): a uid
        cached *before* the LIST began and absent from its answer is gone.
        """
        scopes: list[str | None] = [None] if self.config.all_namespaces else list(self.config.namespaces)
        selector = MANAGED_SELECTOR
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
                    live |= await self.port.live_uids(kind, namespace, labels)
            except k8s.ApiError as exc:
                logger.warning("cannot verify the %s cache: %s", kind.kind, exc)
                still_cached |= before
                continue
            found |= before - live - self._ghosts
            still_cached |= cached_uids(cache)
        self._ghosts = (self._ghosts | found) & still_cached
        if found:
            for key, entries in list(self._owners.items()):  # a deleted agent frees what it held
                for uid in {_uid(entry) for entry in entries} & found:
                    self.forget(key, uid)
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
            if self.queue.paused:  # a standby: no pass, no cache check (leader.py)
                continue
            keys = self.keys()
            resyncs += 1
            api_requests = sum(self.port.requests.values())
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

    # -- one pass -------------------------------------------------------------------------------

    def _owner(self, key: Key) -> Mapping[str, Any] | None:
        if key not in self._owners:
            return None
        return next((o for o in self._owners.get(key, ()) if _uid(o) not in self._ghosts), None)

    def _last_status(self, uid: str, body: Mapping[str, Any], *, settle: bool = False) -> Mapping[str, Any]:
        """The newest status known of a resource: the one this replica last wrote while the watch
        cache does not show it yet, else the cached one. ``settle``: forget the written one once the
        cache shows its very resourceVersion (it then holds the same status)."""
        cached = body.get("status") or {}
        written = self._written.get(uid)
        if written is None:
            return cached
        version, status = written
        if version is not None and version == (body.get("metadata") or {}).get("resourceVersion"):
            if settle:
                del self._written[uid]
            return cached
        return status

    def _cached(self, kind: str, key: Key) -> list[Mapping[str, Any]]:
        return unpacked(self._children.get(kind, {}), key, self._ghosts)

    async def _pass(self, key: Key) -> float | None:
        try:
            return await self.reconcile(*key)
        except k8s.NotLeading as exc:  # lost the lead during the pass: nothing more was sent
            raise RetryLater(str(exc)) from exc

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One level-based pass over ``namespace/name``; seconds until it wants to run again."""
        key = (namespace, name)
        body = self._owner(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.rollouts.forget(key)  # holds no rollout slot: a deleted agent never frees its own
            return None  # gone, or going: owner references and the garbage collector do the rest
        meta = body["metadata"]
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        generation = int(meta.get("generation") or 0)
        previous = self._last_status(owner.uid, body, settle=True)
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
            return None

        cached = {kind: self._cached(kind, key) for kind in CHILD_KINDS}
        errors: list[ChildError] = []
        token = await self.tokens.ensure(owner, spec, meta.get("annotations") or {}, cached["Secret"])
        auth_hash = token.vestige_hash
        if token.unavailable is not None:
            errors.append(ChildError("Secret", token.unavailable, True))
            current = _named(cached["Deployment"], name)
            if current is not None:  # keep the pod template as it is
                template = (current.get("spec") or {}).get("template") or {}
                auth_hash = ((template.get("metadata") or {}).get("annotations") or {}).get(
                    ANNOTATION_TOKEN_HASH
                )
        pvc, pvc_readable = await self._claim(owner, cached, errors)
        plan = p.plan(
            owner,
            spec,
            self.images,
            auth_hash,
            cached,
            pvc=pvc,
            pvc_readable=pvc_readable,
            ingress_holder=self._ingress_holder(owner, spec),
            restore_grants=self._restore_grants(spec),
            operator_peer=self.operator_peer,
        )
        self.rollouts.observe(key, _named(cached["Deployment"], name), self.images)
        plan, rollout_waiting = self.rollouts.pace(key, plan)
        observed, applied, not_owned = await self._carry_out(owner, plan, errors)
        if token.not_owned is not None:
            not_owned.insert(0, token.not_owned[1:])
        backups = self._backups
        obs = Observation(
            generation=generation,
            pvc=observed.get("PersistentVolumeClaim") if plan.volume.mountable else None,
            deployment=observed.get("Deployment", _named(cached["Deployment"], name)),
            missing=tuple(k for k, v in observed.items() if v is None),
            applied=tuple(applied),
            errors=tuple(errors),
            auth_problem=token.problem,
            ignored_env=tuple(ignored_env(spec)),
            ingress_conflict=plan.ingress_conflict,
            storage_class_missing=await self._missing_storage_class(
                spec, observed.get("PersistentVolumeClaim")
            ),
            # A transient failure to read the Secret keeps the last known rotation time.
            token_rotated_at=previous.get("tokenRotatedAt") if token.unavailable else token.rotated_at,
            volume_problem=plan.volume.problem,
            backup=backups.summary(key) if backups is not None else None,
            restore_refused=plan.restore_refused
            or (backups.restore_problem(key) if backups is not None and spec.restore else None),
            restore_failing=backups.restore_failure(key) if backups is not None and spec.restore else None,
            not_owned=tuple(not_owned),
            rotation_refused=token.refused,
            rollout_waiting=rollout_waiting,
            replication=await self._replication(owner, spec, previous) if continuous_enabled(spec) else None,
        )
        new = compute_status(owner, spec, obs, previous, self._clock())
        await self._write_status(owner, previous, new)
        transient = [e for e in errors if e.transient]
        if transient:
            raise RetryLater("; ".join(f"{e.kind}: {e.message}" for e in transient))
        again: list[float] = []
        if token.previous_expires is not None:
            again.append(max(0.0, (token.previous_expires - self._now()).total_seconds()) + _DEADLINE_SLACK)
        if continuous_enabled(spec) and not spec.suspend:  # the replica's position is asked for
            again.append(float(self.config.replication_check_seconds))
        return min(again) if again else None

    async def _claim(
        self, owner: Owner, cached: Mapping[str, list[Mapping[str, Any]]], errors: list[ChildError]
    ) -> tuple[Mapping[str, Any] | None, bool]:
        """The object holding the claim's name: cached, else read once (a claim without the
        operator's labels is not cached, and the plan must know whose it is)."""
        name = pvc_name(owner.name)
        pvc = _named(cached["PersistentVolumeClaim"], name)
        if pvc is not None:
            return pvc, True
        try:
            found = await self.port.get(k8s.PVC, owner.namespace, name)
        except k8s.ApiError as exc:
            errors.append(ChildError("PersistentVolumeClaim", exc.message or str(exc), exc.transient))
            return None, False
        return (trim(found) if found is not None else None), True

    async def _carry_out(
        self, owner: Owner, plan: p.Plan, errors: list[ChildError]
    ) -> tuple[dict[str, Mapping[str, Any] | None], list[str], list[tuple[str, str]]]:
        """Send the plan's writes; what each kind looks like now, what was written, and the
        (reason, message) of every name held by an object this resource did not create."""
        observed: dict[str, Mapping[str, Any] | None] = {}
        applied: list[str] = []
        not_owned: list[tuple[str, str]] = []
        claim_unsettled = False
        for action in plan.actions:
            if claim_unsettled and action.kind == "Deployment":
                continue  # never mount a claim whose owner this pass could not settle
            try:
                if isinstance(action, p.Create):
                    observed[action.kind] = None
                    meta = action.manifest["metadata"]
                    created = await self.port.create(action.manifest)
                    if created is not None:
                        logger.info("created %s %s/%s", action.kind, meta["namespace"], meta["name"])
                        observed[action.kind] = trim(created)
                        continue
                    if action.kind == "PersistentVolumeClaim":  # read before the plan: a race
                        claim_unsettled = True
                        errors.append(ChildError(action.kind, "appeared while being created", True))
                        continue
                    found = await self.port.get(k8s.KINDS[action.kind], meta["namespace"], meta["name"])
                    action = p.decide(action.manifest, trim(found) if found is not None else None, owner)
                    if isinstance(action, p.Create):
                        errors.append(ChildError(action.kind, "deleted while being created", True))
                        continue
                if isinstance(action, p.Keep):
                    observed[action.kind] = action.observed
                elif isinstance(action, p.Apply):
                    meta = action.manifest["metadata"]
                    logger.info(
                        "applying %s %s/%s: %s", action.kind, meta["namespace"], meta["name"], action.why
                    )
                    observed[action.kind] = action.observed
                    observed[action.kind] = trim(
                        await self.port.apply(
                            action.manifest, hand_over=bool(action.observed.get(CREATED_FIELDS))
                        )
                    )
                    applied.append(action.kind)
                elif isinstance(action, p.Delete):
                    logger.info("deleting %s %s/%s: switched off", action.kind, owner.namespace, action.name)
                    if await self.port.delete(
                        k8s.KINDS[action.kind], owner.namespace, action.name, action.uid
                    ):
                        applied.append(f"-{action.kind}")
                elif isinstance(action, p.Foreign):
                    if action.kind != "PersistentVolumeClaim":  # the claim's says it (volume_problem)
                        not_owned.append((action.reason, action.message))
                elif isinstance(action, p.Wait):
                    errors.append(ChildError(action.kind, action.message, True))
            except k8s.ApiError as exc:
                errors.append(ChildError(action.kind, exc.message or str(exc), exc.transient))
        return observed, applied, not_owned

    async def _replication(
        self, owner: Owner, spec: VestigeMemorySpec, previous: Mapping[str, Any]
    ) -> replication.Health:
        """ReplicationHealthy from the memory's running pod (one LIST of its pods, one GET to it)."""
        position: replication.Position | None = None
        age: float | None = None
        if self.probe is None:
            position = replication.Position(False, error=replication.NOT_IN_CLUSTER)
        elif not spec.suspend:
            try:
                pods = await self.port.list_objects(k8s.POD, owner.namespace, memory_pod_selector(owner.name))
            except k8s.ApiError as exc:
                position = replication.Position(False, error=f"its pods could not be listed: {exc.message}")
                pods = []
            pod = replication.serving_pod(pods)
            if pod is not None:
                position = await self.probe.position(str(pod["status"]["podIP"]))
                since = parse_time((pod.get("status") or {}).get("startTime"))
                if since is not None:
                    age = (self._now() - since).total_seconds()
        return replication.health(spec, position, previous.get("replication"), age)

    def _restore_grants(self, spec: VestigeMemorySpec) -> list[VestigeBackupGrantSpec]:
        """The VestigeBackupGrants of the restore source's namespace (an invalid one counts as none)."""
        if spec.restore is None:
            return []
        namespace = restore_source(spec)[0]
        grants = []
        for body in list(self._grants.get(namespace, ())) if namespace in self._grants else []:
            try:
                grants.append(VestigeBackupGrantSpec.model_validate(body))
            except ValidationError:
                continue
        return grants

    def restore_sources_in(self, namespace: str) -> list[Key]:
        """The resources whose spec.restore reads from ``namespace`` (a grant there changed)."""
        found = []
        for key in self.keys():
            source = (((self._owner(key) or {}).get("spec") or {}).get("restore") or {}).get("fromBackup")
            if isinstance(source, Mapping) and str(source.get("source", "")).split("/")[0] == namespace:
                found.append(key)
        return found

    def _ingress_holder(self, owner: Owner, spec: VestigeMemorySpec) -> IngressClaim | None:
        """The earlier resource that routes this one's Ingress host and path, if any."""
        ingress = spec.ingress
        if not ingress.enabled or not ingress.host:
            return None
        host = ingress.host.lower()
        return ingress_host_holder(owner.namespace, owner.name, host, self._hosts.get(host, ()))

    async def _missing_storage_class(
        self, spec: VestigeMemorySpec, pvc: Mapping[str, Any] | None
    ) -> str | None:
        """The named StorageClass of a claim that is not bound, when that class does not exist.

        One GET, only while the claim waits; a class the operator may not read counts as present.
        """
        name = spec.storage.storage_class_name
        if not name or pvc is None or (pvc.get("status") or {}).get("phase") == "Bound":
            return None
        exists = await self.port.storage_class_exists(name)
        if exists is None and not self._storage_class_check_logged:
            self._storage_class_check_logged = True
            logger.warning("cannot read StorageClass %s (RBAC: storageclasses get): not checked", name)
        return name if exists is False else None

    async def _write_status(self, owner: Owner, previous: Mapping[str, Any], new: dict[str, Any]) -> None:
        patch = status_patch(previous, new)
        if patch is None:
            return
        result = await self.port.patch_status(owner.namespace, owner.name, owner.uid, patch)
        if result is None:
            return  # deleted or replaced meanwhile
        self._written[owner.uid] = (
            (result.get("metadata") or {}).get("resourceVersion"),
            result.get("status") or new,
        )
        for event in transition_events(owner, previous, new, self._clock()):
            await self.port.post_event(event)
        changed = changed_conditions(previous.get("conditions") or [], new["conditions"])
        logger.info(
            "status of %s/%s: phase %s%s",
            owner.namespace,
            owner.name,
            new.get("phase"),
            f" (changed: {', '.join(changed)})" if changed else "",
        )
