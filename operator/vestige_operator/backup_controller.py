"""Scheduled backups, VestigeBackup runs, retention and restore refusals: the I/O around backup.py.

One pass per VestigeMemory, run by the shared work queue (workqueue.py: merged per memory,
bounded, retried with backoff), triggered by events of its VestigeBackups and Jobs, by a tick
every ``VESTIGE_BACKUP_INTERVAL_SECONDS`` and by its own requeue-after (the next cron time):

1. finish Running backups whose Job ended: read the runner's result from the Job pod's
   termination message, set the VestigeBackup Completed or Failed (one Warning Event on the
   VestigeMemory per failure), delete the Job;
2. start the oldest Pending backup when none of this memory runs (one at a time per memory);
3. create the scheduled VestigeBackup ``<memory>-<UTC time>`` when a cron time has passed
   (one run for the newest missed time; skipped while a backup of the memory is still active);
4. retention: a prune Job deletes expired snapshots, then their VestigeBackup objects go;
5. restore: while the agent is not available, read why its restore init container refused.

The VestigeMemory's ``status.backup`` and condition ``LastBackupSucceeded`` are written by the
reconciler (the single writer of that status), which reads them through this controller's
read-only view (``summary``, ``restore_problem``); this controller asks for a reconcile of a
memory through ``on_change`` when either changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from vestige_operator import BACKUP_KIND, GROUP, VERSION
from vestige_operator import backup as b
from vestige_operator import cluster as k8s
from vestige_operator.api import BackupPhase, VestigeMemorySpec
from vestige_operator.caches import Cache, Key, unpacked
from vestige_operator.events import make_event
from vestige_operator.plan import ownership
from vestige_operator.port import ApiPort
from vestige_operator.times import format_time, parse_time
from vestige_operator.vocabulary import (
    ANNOTATION_PRUNES,
    COMPONENT_BACKUP,
    COMPONENT_PRUNE,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MEMORY,
    MANAGED_BY,
    Images,
    Owner,
    memory_pod_selector,
)
from vestige_operator.workqueue import RetryLater, WorkQueue

logger = logging.getLogger("vestige_operator.backup")

DEFAULT_INTERVAL_SECONDS = 10.0
DEFAULT_CONCURRENCY = 4
MISSING_MEMORY_GRACE = timedelta(seconds=60)


def _now() -> datetime:
    return datetime.now(UTC)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _backup_owner(memory: Owner, backup: Mapping[str, Any]) -> Owner:
    """The VestigeBackup as the owner of its Job."""
    meta = _meta(backup)
    return Owner(name=meta["name"], namespace=memory.namespace, uid=meta["uid"])


def _phase(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


class BackupController:
    """Runs backup passes. ``owners``, ``backups``, ``jobs`` and ``deployments`` are watch caches
    keyed by (namespace, memory name) (``attach``); the tests may pass plain dicts built from LISTs."""

    def __init__(
        self,
        port: ApiPort,
        images: Images,
        *,
        clock: Callable[[], datetime] = _now,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        on_change: Callable[[Key], None] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.port = port
        self.images = images
        self.clock = clock
        self.interval = interval
        self.on_change = on_change or (lambda key: None)
        self.owners: Cache = {}
        self.backups: Cache = {}
        self.jobs: Cache = {}
        self.deployments: Cache = {}
        self._restore_problems: dict[Key, str] = {}
        self._restore_failures: dict[Key, str] = {}
        #: Newest cron time a run was created for, per memory (the objects may lag or be pruned).
        self._scheduled: dict[Key, datetime] = {}
        #: The last "prune Job name taken" message per memory (one Warning event each).
        self._blocked: dict[Key, str] = {}
        self.queue: WorkQueue[Key] = WorkQueue(
            "backup", self._pass, concurrency=concurrency, max_backoff=max(interval, 1.0) * 6
        )

    def attach(self, owners: Cache, backups: Cache, jobs: Cache, deployments: Cache) -> None:
        self.owners, self.backups, self.jobs, self.deployments = owners, backups, jobs, deployments

    # -- the reconciler's read-only view --------------------------------------------------------

    def summary(self, key: Key) -> b.BackupSummary | None:
        """The memory's backups for its status (None: the cache holds none under ``key``)."""
        return b.summarize(list(self.backups.get(key, ()))) if key in self.backups else None

    def restore_problem(self, key: Key) -> str | None:
        """Why the memory's restore init container refused to run, as last read."""
        return self._restore_problems.get(key)

    def restore_failure(self, key: Key) -> str | None:
        """Why a restore init container of the memory failed (the kubelet retries), as last read."""
        return self._restore_failures.get(key)

    # -- scheduling of passes -------------------------------------------------------------------

    @property
    def passes(self) -> int:
        return self.queue.passes

    def request(self, key: Key) -> None:
        self.queue.request(key)

    def keys(self) -> list[Key]:
        """Memories with something to do: a backup spec, VestigeBackups, or a restore."""
        keys = set(self.backups.keys())
        for key, objs in list(self.owners.items()):
            for obj in list(objs):
                spec = obj.get("spec") or {}
                if spec.get("backup") or spec.get("restore"):
                    keys.add(key)
        return sorted(keys)

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.queue.paused:  # a standby (leader.py)
                continue
            try:
                for key in self.keys():
                    self.request(key)
            except Exception:  # the tick must outlive any one bad round (it is the safety net)
                logger.exception("backup tick failed")

    async def drain(self) -> None:
        await self.queue.drain()

    async def _pass(self, key: Key) -> float | None:
        try:
            return await self.reconcile(*key)
        except k8s.ApiError as exc:
            if exc.transient:
                raise RetryLater(str(exc)) from exc
            raise

    # -- one pass -------------------------------------------------------------------------------

    def _owner(self, key: Key) -> Mapping[str, Any] | None:
        return next(iter(list(self.owners.get(key, ()))), None) if key in self.owners else None

    def _list(self, cache: Cache, key: Key) -> list[Mapping[str, Any]]:
        return list(cache.get(key, ())) if key in cache else []

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; the seconds until the next scheduled run is due (None: no schedule)."""
        key = (namespace, name)
        body = self._owner(key)
        backups = self._list(self.backups, key)
        jobs = self._list(self.jobs, key)
        now = self.clock()
        if body is None or _meta(body).get("deletionTimestamp"):
            for obj in backups:
                created = parse_time(_meta(obj).get("creationTimestamp")) or now
                # A grace period: a VestigeBackup created with its memory may be seen first.
                if _phase(obj) in (None, BackupPhase.PENDING) and now - created > MISSING_MEMORY_GRACE:
                    await self._finish(namespace, obj, False, {}, f"VestigeMemory {name} not found", None)
            return None
        meta = _meta(body)
        memory = Owner(name=name, namespace=namespace, uid=meta["uid"])
        try:
            spec = VestigeMemorySpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None  # the reconciler reports an invalid spec
        changed = False
        changed |= await self._finish_running(memory, backups, jobs)
        changed |= await self._start_pending(memory, spec, backups)
        changed |= await self._schedule(memory, spec, backups, meta.get("creationTimestamp"), now)
        changed |= await self._retention(memory, spec, backups, jobs, now)
        changed |= await self._restore_refusal(memory, spec)
        if changed:
            self.on_change(key)
        if spec.backup is None or not spec.backup.schedule or spec.backup.suspend:
            return None
        fire = b.next_fire(spec.backup.schedule, now)
        return None if fire is None else max(0.0, (fire - now).total_seconds()) + 1.0

    async def _finish(
        self,
        namespace: str,
        obj: Mapping[str, Any],
        ok: bool,
        result: Mapping[str, Any],
        message: str,
        memory: Owner | None,
    ) -> None:
        meta = _meta(obj)
        patch: dict[str, Any] = {
            "phase": str(BackupPhase.COMPLETED if ok else BackupPhase.FAILED),
            "completedAt": format_time(self.clock()),
            "message": message[:2000],
        }
        if ok:
            patch.update(
                {"key": result.get("key"), "size": result.get("size"), "sha256": result.get("sha256")}
            )
        done = await self.port.patch_status(
            namespace,
            meta["name"],
            meta["uid"],
            patch,
            kind=k8s.VESTIGE_BACKUP,
            resource_version=meta.get("resourceVersion"),
        )
        if done is None:
            return  # deleted, or changed since this pass read it (a later pass decides again)
        logger.info("VestigeBackup %s/%s %s: %s", namespace, meta["name"], patch["phase"], message)
        if not ok and memory is not None:
            await self.port.post_event(
                make_event(
                    memory,
                    "Warning",
                    "BackupFailed",
                    f"VestigeBackup {meta['name']} failed: {message}",
                    format_time(self.clock()),
                )
            )

    async def _finish_running(
        self, memory: Owner, backups: list[Mapping[str, Any]], jobs: list[Mapping[str, Any]]
    ) -> bool:
        changed = False
        by_name = {_meta(j).get("name"): j for j in jobs}
        for obj in backups:
            if _phase(obj) != BackupPhase.RUNNING:
                continue
            name = _meta(obj)["name"]
            job = by_name.get(b.job_name(name))
            if job is None:
                job_obj = await self.port.get(k8s.JOB, memory.namespace, b.job_name(name))
                if job_obj is None:
                    await self._finish(memory.namespace, obj, False, {}, "the backup Job disappeared", memory)
                    changed = True
                    continue
                job = job_obj
            verdict = ownership("Job", job, _backup_owner(memory, obj), owner_kind=BACKUP_KIND)
            if verdict.state != "owned":
                # Never read a result from, or delete, a Job this VestigeBackup did not create.
                if verdict.state == "foreign":
                    await self._finish(memory.namespace, obj, False, {}, verdict.message, memory)
                    changed = True
                continue
            outcome = await self._outcome(memory.namespace, job, "backup")
            if outcome is None:
                pods = await self.port.list_objects(
                    k8s.POD, memory.namespace, f"job-name={_meta(job)['name']}"
                )
                stuck = b.stuck_reason(pods, "backup")
                if stuck is None:
                    continue
                outcome = b.JobOutcome(False, {}, stuck)
            await self._finish(
                memory.namespace, obj, outcome.succeeded, outcome.result, outcome.message, memory
            )
            await self._delete(k8s.JOB, memory.namespace, job)
            changed = True
        return changed

    async def _outcome(self, namespace: str, job: Mapping[str, Any], container: str) -> b.JobOutcome | None:
        if not any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        ):
            return None
        pods = await self.port.list_objects(k8s.POD, namespace, f"job-name={_meta(job)['name']}")
        return b.job_outcome(job, pods, container)

    async def _start_pending(
        self, memory: Owner, spec: VestigeMemorySpec, backups: list[Mapping[str, Any]]
    ) -> bool:
        pending = b.active(backups)
        if not pending or any(_phase(o) == BackupPhase.RUNNING for o in pending):
            return False
        obj = pending[0]
        meta = _meta(obj)
        for waiting in pending[1:]:  # queued behind the first one: Pending, not silent
            if _phase(waiting) is None:
                wmeta = _meta(waiting)
                await self.port.patch_status(
                    memory.namespace,
                    wmeta["name"],
                    wmeta["uid"],
                    {"phase": str(BackupPhase.PENDING), "message": f"waiting for {meta['name']}"},
                    kind=k8s.VESTIGE_BACKUP,
                    resource_version=wmeta.get("resourceVersion"),
                )
        if spec.backup is None:
            await self._finish(
                memory.namespace, obj, False, {}, "the VestigeMemory has no spec.backup", memory
            )
            return True
        job = b.render_backup_job(meta["name"], meta["uid"], memory, spec, self.images)
        if await self.port.create(job) is None:  # the name is taken: by an earlier pass, or not
            existing = await self.port.get(k8s.JOB, memory.namespace, job["metadata"]["name"])
            verdict = ownership("Job", existing, _backup_owner(memory, obj), owner_kind=BACKUP_KIND)
            if verdict.state == "foreign":
                await self._finish(memory.namespace, obj, False, {}, verdict.message, memory)
                return True
            if verdict.state != "owned":
                return False  # gone meanwhile, or an earlier VestigeBackup's: a later pass retries
        key = job["spec"]["template"]["spec"]["containers"][0]["args"]
        patch = {
            "phase": str(BackupPhase.RUNNING),
            "startedAt": format_time(self.clock()),
            "job": job["metadata"]["name"],
            "key": key[key.index("--key") + 1],
            "vestigeVersion": b.vestige_version(spec, self.images),
            "message": "the backup Job runs",
        }
        done = await self.port.patch_status(
            memory.namespace,
            meta["name"],
            meta["uid"],
            patch,
            kind=k8s.VESTIGE_BACKUP,
            resource_version=meta.get("resourceVersion"),
        )
        if done is None:
            return True
        logger.info("VestigeBackup %s/%s started (Job %s)", memory.namespace, meta["name"], patch["job"])
        return True

    async def _schedule(
        self,
        memory: Owner,
        spec: VestigeMemorySpec,
        backups: list[Mapping[str, Any]],
        created: str | None,
        now: datetime,
    ) -> bool:
        if spec.backup is None or not spec.backup.schedule or spec.backup.suspend:
            return False
        key = (memory.namespace, memory.name)
        # Only the scheduler's own runs move the schedule on (a VestigeBackup anyone else made,
        # with any annotation, never makes a run skip).
        own = [o for o in backups if ownership(BACKUP_KIND, o, memory).state == "owned"]
        known = [t for t in (b.last_scheduled(own), self._scheduled.get(key)) if t is not None]
        baseline = max(known) if known else (parse_time(created) or now)
        due = b.due_run(spec.backup.schedule, baseline, now)
        if due is None or b.active(backups):
            return False  # nothing due, or a backup of this memory is still active (one at a time)
        manifest = b.backup_manifest(memory, b.scheduled_name(memory.name, due), due)
        name = manifest["metadata"]["name"]
        if await self.port.create(manifest) is None:
            existing = await self.port.get(k8s.VESTIGE_BACKUP, memory.namespace, name)
            if existing is None:
                return False  # deleted meanwhile: the next pass creates it
            if not b.is_scheduled_run(existing, memory, due) or (
                ownership(BACKUP_KIND, existing, memory).state != "owned"
            ):
                # The name is taken by an object the scheduler did not create for this run: the
                # run still happens, under a generated name, and the memory says so once.
                manifest = b.backup_manifest(memory, name, due, generate=True)
                created = await self.port.create(manifest)
                taken = (
                    f"VestigeBackup {name} exists and was not created by the scheduler for the run "
                    f"due at {format_time(due)}"
                )
                await self.port.post_event(
                    make_event(
                        memory,
                        "Warning",
                        "BackupNameTaken",
                        f"{taken}; the run is VestigeBackup {_meta(created or {}).get('name', '?')}",
                        format_time(now),
                    )
                )
                logger.warning("%s/%s: %s", memory.namespace, memory.name, taken)
        else:
            logger.info("scheduled VestigeBackup %s/%s", memory.namespace, name)
        self._scheduled[key] = due  # also when it existed: the cache lags behind the create
        return True

    async def _retention(
        self,
        memory: Owner,
        spec: VestigeMemorySpec,
        backups: list[Mapping[str, Any]],
        jobs: list[Mapping[str, Any]],
        now: datetime,
    ) -> bool:
        if spec.backup is None:
            return False
        key = (memory.namespace, memory.name)
        changed = False
        plan = b.retention_plan(backups, spec.backup.retention, now)
        for obj in plan.delete_failed:
            changed |= await self._delete(k8s.VESTIGE_BACKUP, memory.namespace, obj)
        prune_jobs = [
            j
            for j in jobs
            if (_meta(j).get("labels") or {}).get(LABEL_COMPONENT) == COMPONENT_PRUNE
            and ownership("Job", j, memory).state == "owned"
        ]
        for job in prune_jobs:
            outcome = await self._outcome(memory.namespace, job, "prune")
            if outcome is None:
                return changed  # one prune at a time
            names = set(json.loads((_meta(job).get("annotations") or {}).get(ANNOTATION_PRUNES, "[]")))
            if outcome.succeeded:
                for obj in backups:
                    if _meta(obj).get("name") in names:
                        await self._delete(k8s.VESTIGE_BACKUP, memory.namespace, obj)
                logger.info(
                    "retention removed %d backup(s) of %s/%s", len(names), memory.namespace, memory.name
                )
            else:
                await self.port.post_event(
                    make_event(
                        memory,
                        "Warning",
                        "PruneFailed",
                        f"deleting expired snapshots failed: {outcome.message}",
                        format_time(now),
                    )
                )
            await self._delete(k8s.JOB, memory.namespace, job)
            return True
        if plan.prune:
            job = b.render_prune_job(memory, spec, self.images, plan.prune)
            if await self.port.create(job) is not None:
                logger.info(
                    "prune Job %s/%s for %d snapshot(s)",
                    memory.namespace,
                    job["metadata"]["name"],
                    len(plan.prune),
                )
                changed = True
            else:
                existing = await self.port.get(k8s.JOB, memory.namespace, job["metadata"]["name"])
                verdict = ownership("Job", existing, memory)
                if verdict.state == "foreign" and self._blocked.get(key) != verdict.message:
                    self._blocked[key] = verdict.message  # one event, not one per pass
                    await self.port.post_event(
                        make_event(memory, "Warning", "PruneFailed", verdict.message, format_time(now))
                    )
                changed = verdict.state == "owned"
        return changed

    async def _restore_refusal(self, memory: Owner, spec: VestigeMemorySpec) -> bool:
        key = (memory.namespace, memory.name)
        problem = failure = None
        if spec.restore is not None:
            deployment = next(iter(unpacked(self.deployments, key)), None)
            available = ((deployment or {}).get("status") or {}).get("availableReplicas")
            if not available:
                pods = await self.port.list_objects(
                    k8s.POD, memory.namespace, memory_pod_selector(memory.name)
                )
                problem = b.restore_refusal(pods)
                failure = None if problem else b.restore_failure(pods)
        changed = False
        for found, seen in ((problem, self._restore_problems), (failure, self._restore_failures)):
            if seen.get(key) == found:
                continue
            changed = True
            if found is None:
                seen.pop(key, None)
            else:
                seen[key] = found
        return changed

    async def _delete(self, kind: k8s.Kind, namespace: str, obj: Mapping[str, Any]) -> bool:
        meta = _meta(obj)
        return await self.port.delete(kind, namespace, meta["name"], meta["uid"])


__all__ = ["BACKUP_KIND", "BackupController"]


# -- kopf wiring -----------------------------------------------------------------------------------

BACKUP_INDEX = "vestige_backups"
JOB_INDEX = "vestige_backup_jobs"
JOB_RESOURCE = ("batch", "v1", "jobs")


def interval_from_env(env: Mapping[str, str] | None = None) -> float:
    import os

    raw = (env if env is not None else os.environ).get("VESTIGE_BACKUP_INTERVAL_SECONDS", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_INTERVAL_SECONDS
    except ValueError:
        value = DEFAULT_INTERVAL_SECONDS
    return value if value > 0 else DEFAULT_INTERVAL_SECONDS


def trim_backup(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(body)
    return {
        "metadata": {
            k: meta[k]
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "labels",
                "annotations",
                "ownerReferences",
                "deletionTimestamp",
            )
            if k in meta
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def register_backups(
    registry: Any, reconciler: Any, owners: Cache, deployments: Cache, seen: Callable[[], None]
) -> BackupController:
    """Register the backup watches and loop in ``registry`` (called by handlers.register);
    ``owners`` and ``deployments`` are the caches of the VestigeMemory resources and their
    Deployments (``watch_cache``); ``seen`` is called first by every handler (kopf ran one)."""
    import kopf

    from vestige_operator import BACKUP_PLURAL

    controller = BackupController(
        reconciler.port, reconciler.images, interval=interval_from_env(), on_change=reconciler.request
    )

    @kopf.index(GROUP, VERSION, BACKUP_PLURAL, id=BACKUP_INDEX, registry=registry)
    def vestige_backups(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
        memory = (body.get("spec") or {}).get("memory")
        return {(namespace, memory): trim_backup(body)} if memory else {}

    @kopf.on.event(GROUP, VERSION, BACKUP_PLURAL, id="vestige_backup_event", registry=registry)
    async def vestige_backup_event(body: kopf.Body, namespace: str, **_: Any) -> None:
        seen()
        memory = (body.get("spec") or {}).get("memory")
        if memory:
            controller.request((namespace, memory))
            reconciler.request((namespace, memory))

    selector = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: kopf.PRESENT, LABEL_MEMORY: kopf.PRESENT}

    @kopf.index(*JOB_RESOURCE, id=JOB_INDEX, labels=selector, registry=registry)
    def vestige_backup_jobs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
        if labels.get(LABEL_COMPONENT) not in (COMPONENT_BACKUP, COMPONENT_PRUNE):
            return {}
        meta = _meta(body)
        trimmed = {
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")
                if k in meta
            },
            "status": dict(body.get("status") or {}),
        }
        return {(namespace, labels[LABEL_MEMORY]): trimmed}

    @kopf.on.event(*JOB_RESOURCE, id="vestige_backup_job_event", labels=selector, registry=registry)
    async def vestige_backup_job_event(namespace: str, labels: kopf.Labels, **_: Any) -> None:
        seen()
        controller.request((namespace, labels[LABEL_MEMORY]))

    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_backups(**kwargs: Any) -> None:
        controller.attach(
            owners=owners,
            backups=kwargs[BACKUP_INDEX],
            jobs=kwargs[JOB_INDEX],
            deployments=deployments,
        )
        tasks.append(asyncio.get_running_loop().create_task(controller.tick_forever(), name="backup-tick"))

    @kopf.on.cleanup(registry=registry)
    async def stop_backups(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        controller.queue.close()
        await controller.drain()

    return controller
