"""The kopf wiring: the operator registers only watch-level handlers, so kopf's per-event diff
base (the "last handled" state of create/update handlers) may be switched off."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
import pytest
from vestige_operator import handlers
from vestige_operator.caches import LAST_APPLIED, trim, trim_owner
from vestige_operator.tokens import ANNOTATION_ROTATE
from vestige_operator.watch_cache import ChildFeed, OwnerCache

from tests.unit.test_pass import World


def _registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, World().rec, settings=kopf.OperatorSettings())
    return registry


def test_only_indexes_and_event_handlers_watch_resources() -> None:
    registry = _registry()
    # kopf's diff base (switched off by configure_settings) would be needed by any of these.
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._webhooks.get_all_handlers()
    assert registry._watching.get_all_handlers()
    assert registry._indexing.get_all_handlers()


async def test_kopf_keeps_no_memory_of_an_object_between_events() -> None:
    # Safe only with the handlers above: no daemons, timers, changing handlers or webhooks.
    memories = handlers.NoMemories()
    body = {"metadata": {"uid": "u1", "name": "a", "namespace": "ns"}}
    first = await memories.recall(body, noticed_by_listing=True)
    second = await memories.recall(body)
    assert first is not second and first.noticed_by_listing and not second.noticed_by_listing
    assert not list(memories.iter_all_memories())


def test_the_diff_base_is_never_built_nor_stored() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_settings(settings)
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, handlers.NoDiffBase)
    body = kopf.Body(
        {"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {"big": list(range(100))}}
    )
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence())
    assert not patch


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u-a",
            "resourceVersion": "7",
            "labels": {"app.kubernetes.io/instance": "a"},
            "managedFields": [{"manager": "vestige-operator", "operation": "Update", "fieldsV1": {}}],
        },
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "vestige"}]}}},
        "status": {"availableReplicas": 1},
    }


@contextlib.contextmanager
def _wrapped_watch(*runs: list[Any], seen: list[Any] | None = None) -> Iterator[Any]:
    """kopf's ``continuous_watch`` as the operator wraps it, over a fake: each call yields the
    next of ``runs`` (an exception in a run is raised there), recording into ``seen`` what the
    fake yielded so far."""
    from kopf._cogs.clients import watching

    real = getattr(watching.continuous_watch, "__wrapped__", watching.continuous_watch)
    calls = iter(runs)

    async def fake(*, resource: Any, **_: Any) -> AsyncIterator[Any]:
        for event in next(calls):
            if isinstance(event, BaseException):
                raise event
            if seen is not None:
                seen.append(event)
            yield event

    try:
        watching.continuous_watch = fake
        handlers.wrap_kopf_watch()
        handlers.wrap_kopf_watch()  # idempotent: wrapped once
        assert watching.continuous_watch.__wrapped__ is fake  # type: ignore[attr-defined]
        yield watching.continuous_watch
    finally:
        watching.continuous_watch = real


async def _through_watch(resource: Any, *runs: list[Any]) -> list[Any]:
    """The events kopf's listing/watch would yield for ``resource``, as the operator changes them."""
    with _wrapped_watch(*runs) as watch:
        return [e async for e in watch(resource=resource, namespace="ns")]


def test_kopf_lists_and_watches_through_continuous_watch_by_its_global_name() -> None:
    from kopf._cogs.clients import watching

    assert "continuous_watch" in watching.infinite_watch.__code__.co_names


class _Feed:
    """A ChildFeed for the deployments, recording the passes it requests."""

    def __init__(self) -> None:
        self.requested: list[Any] = []
        self.feed = ChildFeed(self.requested.append)

    def __enter__(self) -> ChildFeed:
        handlers.feed_watches({("apps", "deployments"): self.feed})
        return self.feed

    def __exit__(self, *_: Any) -> None:
        handlers.feed_watches({})


def _event(kind: str | None, raw: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": copy.deepcopy(raw)}


async def test_watched_children_reach_their_cache_and_kopf_only_their_listing_bookmark() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    raw = _deployment()
    other = {**_deployment(), "metadata": {**raw["metadata"], "name": "b", "uid": "u-b"}}
    changed = copy.deepcopy(raw)
    changed["status"]["availableReplicas"] = 0
    error = {"type": "ERROR", "object": {"code": 410}}
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    recorder = _Feed()
    with recorder as feed:
        seen_in_cache: list[Any] = []
        out = []
        with _wrapped_watch(
            [
                _event(None, raw),
                _event(None, other),
                watching.Bookmark.LISTED,
                bookmark,
                _event("MODIFIED", changed),
            ],
            [_event("DELETED", changed), error],
        ) as watch:
            stream = watch(resource=Resource("apps", "v1", "deployments"), namespace="ns")
            async for event in stream:
                out.append(event)
                seen_in_cache.append(feed.cache.listed)
            out += [e async for e in watch(resource=Resource("apps", "v1", "deployments"), namespace="ns")]
    # kopf: the bookmark only, once the listing is in the cache (and the API server's own
    # BOOKMARK and ERROR events, which kopf reads itself).
    assert out == [watching.Bookmark.LISTED, bookmark, error]
    assert seen_in_cache[0] is True
    # Both listed Deployments belong to the owner "a" (their instance label): one key, two entries
    # after the listing; the change requested a pass, the deletion another and left one entry.
    assert [p.uid for p in feed.cache[("ns", "a")]] == ["u-b"]
    assert recorder.requested == [("ns", "a"), ("ns", "a"), ("ns", "a")]
    (entry,) = feed.cache[("ns", "a")]
    assert entry.unpack() == trim(other)


async def test_a_relist_drops_children_deleted_while_no_watch_ran_and_requests_their_owner() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    def labelled(name: str, owner: str) -> dict[str, Any]:
        raw = _deployment()
        raw["metadata"] = {**raw["metadata"], "name": name, "uid": f"u-{name}"}
        raw["metadata"]["labels"] = {"app.kubernetes.io/instance": owner}
        return raw

    a, b = labelled("a", "a"), labelled("b", "b")
    recorder = _Feed()
    with (
        recorder as feed,
        _wrapped_watch(
            [_event(None, a), _event(None, b), watching.Bookmark.LISTED],
            [_event(None, b), watching.Bookmark.LISTED],
        ) as watch,
    ):
        first = [e async for e in watch(resource=Resource("apps", "v1", "deployments"))]
        assert set(feed.cache) == {("ns", "a"), ("ns", "b")}
        assert recorder.requested == [("ns", "a"), ("ns", "b")]
        second = [e async for e in watch(resource=Resource("apps", "v1", "deployments"))]
    assert first == second == [watching.Bookmark.LISTED]
    assert set(feed.cache) == {("ns", "b")}
    assert recorder.requested[2:] == [("ns", "a")]  # "b" is unchanged: no pass


async def test_memories_are_cached_before_kopf_gets_any_and_kopf_still_gets_each() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    def memory(name: str, phase: str) -> dict[str, Any]:
        meta = {"name": name, "namespace": "ns", "uid": f"u-{name}", "managedFields": [{"manager": "x"}]}
        return {"kind": "VestigeMemory", "metadata": meta, "spec": {}, "status": {"phase": phase}}

    owners = OwnerCache()
    handlers.feed_watches({("vestige.dev", "vestigememories"): owners})
    listed = [_event(None, memory("a", "Pending")), _event(None, memory("b", "Ready"))]
    with _wrapped_watch(
        [*listed, watching.Bookmark.LISTED, _event("MODIFIED", memory("a", "Ready"))]
    ) as watch:
        stream = watch(resource=Resource("vestige.dev", "v1alpha1", "vestigememories"))
        first = await anext(stream)
        assert owners.listed and sorted(owners) == [("ns", "a"), ("ns", "b")]
        out = [first, *[e async for e in stream]]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in out if isinstance(e, dict)] == [
        (None, "a"),
        (None, "b"),
        ("MODIFIED", "a"),
    ]
    assert watching.Bookmark.LISTED in out and "managedFields" not in out[0]["object"]["metadata"]
    assert owners[("ns", "a")][0]["status"] == {"phase": "Ready"}


def test_register_gives_the_reconciler_the_watch_caches_and_kopf_no_memory_index() -> None:
    from kopf._cogs.structs.references import Resource

    registry = kopf.OperatorRegistry()
    caches = handlers.register(registry, World().rec, settings=kopf.OperatorSettings())
    memories = Resource("vestige.dev", "v1alpha1", "vestigememories")
    assert not registry._indexing.has_handlers(memories)  # no toggle per VestigeMemory at start
    assert registry._watching.has_handlers(memories)
    assert handlers._feeds[("vestige.dev", "vestigememories")] is caches.owners
    assert handlers._feeds[("apps", "deployments")] is caches.children["Deployment"]


def test_child_kinds_have_an_index_kopf_waits_for_but_no_handler_kopf_runs() -> None:
    from kopf._cogs.structs.references import Resource

    registry = _registry()
    for group, version, plural, index_id in handlers.CHILD_RESOURCES.values():
        resource = Resource(group, version, plural)
        assert registry._indexing.has_handlers(resource)
        assert not registry._watching.has_handlers(resource)
        (index,) = [h for h in registry._indexing.get_all_handlers() if h.id == index_id]
        with pytest.raises(RuntimeError, match="not its cache"):
            index.fn(body={"kind": "Deployment"})


async def test_watched_memories_reach_kopf_without_managed_fields_or_last_applied() -> None:
    from kopf._cogs.structs.references import Resource

    meta = {
        "name": "a",
        "namespace": "team-a",
        "uid": "u1",
        "resourceVersion": "7",
        "labels": {"team": "a"},
        "finalizers": ["x"],
        "annotations": {LAST_APPLIED: '{"spec": {}}', ANNOTATION_ROTATE: "now"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    body = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": meta,
        "spec": {"storage": {"size": "1Gi"}},
        "status": {"phase": "Ready"},
    }
    out = await _through_watch(
        Resource("vestige.dev", "v1alpha1", "vestigememories"),
        [{"type": "ADDED", "object": copy.deepcopy(body)}],
    )
    slim = out[0]["object"]
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    assert slim == {**body, "metadata": {**kept, "annotations": {ANNOTATION_ROTATE: "now"}}}
    # What the caches keep of it is what they keep of the whole object.
    assert trim_owner(slim) == trim_owner(body)


async def test_other_watched_kinds_reach_kopf_whole() -> None:
    from kopf._cogs.structs.references import Resource

    body = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeBackup",
        "metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]},
        "spec": {},
    }
    out = await _through_watch(
        Resource("vestige.dev", "v1alpha1", "vestigebackups"), [{"type": "ADDED", "object": body}]
    )
    assert out == [{"type": "ADDED", "object": body}]


def _gone() -> Exception:
    from kopf._cogs.clients import errors

    return errors.APIClientError({"code": 410, "message": "continue too old"}, status=410, headers={})


async def test_an_expired_listing_is_listed_again() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    first = {"type": None, "object": {"metadata": {"name": "a", "uid": "1"}}}
    second = {"type": None, "object": {"metadata": {"name": "b", "uid": "2"}}}
    out = await _through_watch(
        Resource("vestige.dev", "v1alpha1", "vestigememories"),
        [first, _gone()],
        [first, second, watching.Bookmark.LISTED],
    )
    # The aborted listing never reached kopf: each object once.
    assert out == [first, second, watching.Bookmark.LISTED]


async def test_a_listing_reaches_kopf_whole_and_watch_events_at_once() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    listed = [{"type": None, "object": {"metadata": {"name": n, "uid": n}}} for n in "ab"]
    added = {"type": "ADDED", "object": {"metadata": {"name": "c", "uid": "c"}}}
    seen: list[Any] = []
    with _wrapped_watch([*listed, watching.Bookmark.LISTED, added], seen=seen) as watch:
        stream = watch(resource=Resource("vestige.dev", "v1alpha1", "vestigebackups"))
        first = await anext(stream)
        # kopf got the first listed object only after the whole listing was read.
        assert first == listed[0] and seen == [*listed, watching.Bookmark.LISTED]
        rest = [e async for e in stream]
    assert rest == [listed[1], watching.Bookmark.LISTED, added]


async def test_a_410_after_the_listing_is_kopfs_to_handle() -> None:
    from kopf._cogs.clients import errors, watching
    from kopf._cogs.structs.references import Resource

    with pytest.raises(errors.APIClientError):
        await _through_watch(
            Resource("vestige.dev", "v1alpha1", "vestigememories"), [watching.Bookmark.LISTED, _gone()]
        )
