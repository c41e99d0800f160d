"""kopf registrations: thin wiring from watch events to ``Reconciler.request``.

Only watch-level primitives are used (indexes and ``on.event``), never kopf's create/update/
resume handlers or timers: those persist progress and a diff base in annotations and need a
finalizer, which would mean writes on every change and a VestigeMemory that cannot be deleted
while the operator is down. Here kopf writes nothing to any object; create, update and resume
(the initial listing) all arrive as events, and a single resync loop replaces per-object timers.

- The passes read caches kept from kopf's own listing and watch of each kind (``watch_cache``,
  fed by ``wrap_kopf_watch``), complete before any handler runs: the VestigeMemory resources
  (``OwnerCache``) and the operator's children, watched with a server-side label selector
  ``app.kubernetes.io/managed-by=vestige-operator`` (a ``ChildFeed`` per kind). Children never
  reach kopf's per-object workers; each child kind has a kopf index that nothing fills, so kopf
  holds its handlers until that kind's listing is cached. kopf's indexes would cost, at start,
  a toggle per object that wakes every waiting worker: a replica starting beside 5,000 agents
  spent over 10 minutes at 100 % of a core. Only the small kinds (backups, their Jobs, grants)
  stay kopf indexes. No pass reads a partial cache, in either controller: both work queues stay
  paused until every cache holds a whole listing (``register``'s ``settle``: the VestigeMemory
  listing is in, each child kind's listing is in, and a kopf handler ran, which kopf allows only
  once its own indexes are listed; ``Reconciler.ready``). Requests made before are dropped, and
  opening the queues requests a pass of every cached key. Before, a backup event handled before
  the VestigeMemory listing was in made the backup controller fail a pending VestigeBackup older
  than a minute as "VestigeMemory not found".
- Any event of a VestigeMemory or of one of its children requests a reconcile of that
  VestigeMemory (coalesced), so Deployment rollouts and PVC binding refresh the status and a
  deleted or edited child is restored at once, not only at the next resync.
- No finalizer: owner references let the garbage collector delete the children, and the data
  PVC follows ``reclaimPolicy`` through the presence or absence of its owner reference.
- Leadership (leader.py): every replica keeps its watches and caches; only the leader's work
  queues take requests. Losing the lead pauses both queues (and kopf's posting of Events);
  taking it resumes them with a full resync of every cached key. At shutdown the passes in
  flight end first, then the Lease is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kopf._core.reactor import inventory  # private: kopf.run(memories=) takes one

from vestige_operator import GRANT_PLURAL, GROUP, PLURAL, VERSION
from vestige_operator.backup_controller import JOB_RESOURCE, register_backups
from vestige_operator.caches import slim_child, slim_owner
from vestige_operator.leader import Elector, Leadership
from vestige_operator.reconcile import Reconciler
from vestige_operator.vocabulary import LABEL_MANAGED_BY, MANAGED_BY, MANAGED_SELECTOR
from vestige_operator.watch_cache import ChildFeed, OwnerCache, WatchFeed

GRANT_INDEX = "vestige_backup_grants"

logger = logging.getLogger("vestige_operator.handlers")

#: kind -> (group, version, plural, index id) of every child kind the operator manages (the kopf
#: index is the one nothing fills: see the module's docstring).
CHILD_RESOURCES: Mapping[str, tuple[str, str, str, str]] = {
    "Secret": ("", "v1", "secrets", "children_secrets"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", "children_pvcs"),
    "Deployment": ("apps", "v1", "deployments", "children_deployments"),
    "Service": ("", "v1", "services", "children_services"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies", "children_networkpolicies"),
    "Ingress": ("networking.k8s.io", "v1", "ingresses", "children_ingresses"),
}


@dataclass
class WatchCaches:
    """The caches the watches fill (``register``): the VestigeMemory resources with their Ingress
    claims, and each child kind's feed; ``kopf_listed`` once a kopf handler ran (kopf runs none
    before its own indexes, the backups, their Jobs and the grants, are listed)."""

    owners: OwnerCache
    children: Mapping[str, ChildFeed]
    kopf_listed: bool = False

    def whole(self) -> bool:
        """Whether every cache a pass reads holds a whole listing."""
        listed = self.owners.listed and all(feed.cache.listed for feed in self.children.values())
        return self.kopf_listed and listed


class RetryForever:
    """kopf's delays between attempts of one API request, never exhausted.

    kopf's default gives up after eight retries (about 54 s); a watch stream that gives up is
    not restarted, so after a longer API outage the operator would live on with frozen caches.
    This ramps up like kopf's default, then retries every ``cap`` seconds until the API is back.
    """

    def __init__(self, ramp: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13), cap: float = 15.0) -> None:
        self.ramp = ramp
        self.cap = cap

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.ramp, itertools.repeat(self.cap))


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled" state: kopf builds one for every watch event (a deep copy of the object,
    then two more while clearing it) to detect the causes of create/update/resume handlers. The
    operator registers none (only indexes and ``on.event``: tests/unit/test_handlers.py), so the
    copy was never read: ~13 % of the operator's CPU during convergence (py-spy at 5,000)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class NoMemories(inventory.ResourceMemories):
    """kopf's per-object memories, never kept between events.

    kopf keeps one ``ResourceMemory`` per watched object until it is deleted (~0.8 KiB of small
    long-lived objects each: at 5,000 agents 30,000 of them, allocated in the event bursts and
    pinning the allocator's arenas). Its fields serve what the operator does not use: daemons and
    timers, create/update/resume handlers, admission, retries of a failing index function, the
    per-object ``memo``. With only indexes and ``on.event`` handlers (tests/unit/test_handlers.py)
    a memory made for one event and dropped with it loses nothing.
    """

    async def recall(
        self,
        raw_body: Any,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> inventory.ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )


#: (group, plural) -> where the watch of that kind goes (``feed_watches``). Module-wide, as the
#: kopf function ``wrap_kopf_watch`` replaces is.
_feeds: dict[tuple[str, str], WatchFeed] = {}


def feed_watches(feeds: Mapping[tuple[str, str], WatchFeed]) -> None:
    """Send the listing and watch events of each (group, plural) to its feed from now on."""
    _feeds.clear()
    _feeds.update(feeds)


def wrap_kopf_watch() -> None:
    """Changes to what kopf's listing and watch of each kind yield (kopf has no hook for them:
    this wraps its ``watching.continuous_watch``, which ``infinite_watch`` calls by its global
    name for every listing and watch; tests/unit/test_handlers.py fails if a kopf release changes
    that). Idempotent.

    - A kind with a feed (``feed_watches``) goes to it first: a whole listing (before kopf gets
      any of it, and the bookmark that tells kopf the kind is listed), each watch event. A feed
      that is not ``to_kopf`` (the children's) keeps its kind's objects from kopf altogether.
    - Every watched child becomes its ``caches.slim_child`` stub before anything holds it, every
      VestigeMemory its ``caches.slim_owner`` (no managedFields).
    - A listing reaches kopf only once it is whole: its pages are read back to back (a listing
      fed to kopf object by object waits on every object's new worker task: a standby listing
      30,000 objects took over 5 minutes) and an aborted listing never reaches kopf.
    - A paged listing whose continue token expired anyway (HTTP 410: it took longer than the API
      server keeps the listing's snapshot, ~5 minutes) is started again, as client-go's reflector
      does. kopf would end the operator.
    """
    from kopf._cogs.clients import errors, watching  # private: no public hook exists

    original = getattr(watching.continuous_watch, "__wrapped__", watching.continuous_watch)
    slimmers: dict[tuple[str, str], Callable[[Mapping[str, Any]], dict[str, Any]]] = {
        (group, plural): slim_child for group, _, plural, _ in CHILD_RESOURCES.values()
    }
    slimmers[GROUP, PLURAL] = slim_owner

    async def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        slim = slimmers.get((resource.group, resource.plural))
        feed = _feeds.get((resource.group, resource.plural))
        while True:
            listing: list[Any] | None = []  # the listing's events until it is whole, then None
            stream = original(resource=resource, **kwargs)
            try:
                async for event in stream:
                    is_object = isinstance(event, dict) and event.get("type") not in ("ERROR", "BOOKMARK")
                    if is_object and slim:
                        obj = event.get("object")
                        if isinstance(obj, dict) and obj.get("metadata"):
                            event["object"] = slim(obj)
                    if event is watching.Bookmark.LISTED and listing is not None:
                        if feed is not None:
                            feed.listing(listed.get("object") or {} for listed in listing)
                        if feed is None or feed.to_kopf:
                            for listed in listing:
                                yield listed
                        listing = None
                        yield event
                    elif is_object and listing is not None and event.get("type") is None:
                        listing.append(event)
                    else:
                        if is_object and feed is not None:
                            feed.event(event.get("type"), event.get("object") or {})
                        if not is_object or feed is None or feed.to_kopf:
                            yield event
                return
            except errors.APIClientError as exc:
                if exc.status != 410 or listing is None:
                    raise
                logger.warning("the listing of %s expired before it ended; listing again", resource.plural)
            finally:
                await stream.aclose()

    continuous_watch.__wrapped__ = original  # type: ignore[attr-defined]
    watching.continuous_watch = continuous_watch


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep the operator light and silent on the objects it watches."""
    wrap_kopf_watch()
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.standalone = True
    settings.networking.error_backoffs = RetryForever()
    settings.posting.level = 30  # logging.WARNING: only problems become Kubernetes Events
    settings.execution.max_workers = 2  # all handlers are async; this pool is for kopf itself
    # kopf keeps one worker task (and queue) per watched object until it has been idle this long
    # (default 5 s): with 6 objects per resource, a burst of events keeps thousands alive at
    # once. Our handlers are cheap and level-based, so a worker may exit sooner (docs/benchmarks.md).
    settings.queueing.idle_timeout = 1.0
    # (Re)listing 1000 Deployments at once parses ~15 MB of JSON into one response; chunks of
    # 200 keep the memory peak of a relist (start, watch expiry, API server restart) lower.
    settings.watching.chunk_size = 200
    for group, version, plural, _ in CHILD_RESOURCES.values():
        settings.watching.label_selectors[group, version, plural] = MANAGED_SELECTOR
    settings.watching.label_selectors[JOB_RESOURCE] = MANAGED_SELECTOR  # backup and prune Jobs


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    *,
    leadership: Leadership | None = None,
    elector: Elector | None = None,
    settings: kopf.OperatorSettings | None = None,
) -> WatchCaches:
    """Register every handler of the operator in ``registry``; without ``leadership`` it leads
    alone (no election). The caches the watches will fill."""
    lead = leadership if leadership is not None else Leadership(elect=False)
    kopf.on.login(registry=registry)(kopf.login_via_client)

    def settle() -> None:
        """Open the queues once every cache is whole (called after the VestigeMemory listing and
        by every kopf handler): the one place that decides when passes may start."""
        if not reconciler.ready.is_set() and caches.whole():
            reconciler.ready.set()
            on_leading(lead.leading)

    def kopf_ran() -> None:
        caches.kopf_listed = True
        settle()

    caches = WatchCaches(
        owners=OwnerCache(gone=reconciler.forget, listed=settle),
        children={kind: ChildFeed(reconciler.request) for kind in CHILD_RESOURCES},
    )
    feeds: dict[tuple[str, str], WatchFeed] = {(GROUP, PLURAL): caches.owners}
    feeds.update({(res[0], res[2]): caches.children[kind] for kind, res in CHILD_RESOURCES.items()})
    feed_watches(feeds)
    wrap_kopf_watch()  # without it the children would reach kopf's index below, not the feeds

    @kopf.on.event(GROUP, VERSION, PLURAL, id="vestige_event", registry=registry)
    async def vestige_event(type: str | None, namespace: str, name: str, uid: str, **_: Any) -> None:
        kopf_ran()
        if type == "DELETED":
            reconciler.forget((namespace, name), uid)
        else:
            reconciler.request((namespace, name))

    def listed_only(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        # The watch sends every child to its feed; kopf only learns when the kind is listed.
        raise RuntimeError(f"a watched child reached kopf, not its cache: {body.get('kind')}")

    selector = {LABEL_MANAGED_BY: MANAGED_BY}
    for group, version, plural, index_id in CHILD_RESOURCES.values():
        kopf.index(group, version, plural, id=index_id, labels=selector, registry=registry)(listed_only)

    @kopf.index(GROUP, VERSION, GRANT_PLURAL, id=GRANT_INDEX, registry=registry)
    def vestige_backup_grants(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
        return {namespace: dict(body.get("spec") or {})}

    @kopf.on.event(GROUP, VERSION, GRANT_PLURAL, id="vestige_backup_grant_event", registry=registry)
    async def vestige_backup_grant_event(namespace: str, **_: Any) -> None:
        kopf_ran()
        for key in reconciler.restore_sources_in(namespace):
            reconciler.request(key)

    backups = register_backups(
        registry, reconciler, caches.owners, caches.children["Deployment"].cache, seen=kopf_ran
    )

    queues = (reconciler.queue, backups.queue)

    def on_leading(leading: bool) -> None:
        if settings is not None:
            settings.posting.enabled = leading  # kopf's Events too: a standby posts none
        if not (leading and reconciler.ready.is_set()):
            for queue in queues:
                queue.pause()
            return
        for queue in queues:
            queue.resume()
        for controller in (reconciler, backups):  # a full resync from the warm caches
            for key in list(controller.keys()):
                controller.request(key)

    lead.listen(on_leading)
    on_leading(lead.leading)  # paused until the caches are whole (settle)

    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start(**kwargs: Any) -> None:
        reconciler.attach(
            owners=caches.owners,
            children={kind: feed.cache for kind, feed in caches.children.items()},
            hosts=caches.owners.hosts,
            backups=backups,
            grants=kwargs[GRANT_INDEX],
        )
        loop = asyncio.get_running_loop()
        tasks.append(loop.create_task(reconciler.resync_forever(), name="resync"))
        tasks.append(loop.create_task(lead.watch(), name="leadership"))
        if elector is not None:
            elector.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in queues:  # the passes in flight end while the Lease is still held
            queue.close()
        await reconciler.drain()
        await backups.drain()
        if elector is not None:
            await elector.stop()  # then the standby takes over at its next retry
        reconciler.port.close()
        if reconciler.probe is not None:
            await reconciler.probe.aclose()

    @kopf.on.probe(id="reconciler", registry=registry)
    def reconciler_stats(**_: Any) -> dict[str, Any]:
        requests = reconciler.port.requests
        return {
            "leader": lead.leading,
            "identity": lead.identity,
            "passes": reconciler.passes,
            "api_requests": sum(requests.values()),
            "api_requests_by_verb": {f"{verb} {kind}": n for (verb, kind), n in sorted(requests.items())},
        }

    return caches
