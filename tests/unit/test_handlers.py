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
from vestige_operator.caches import LAST_APPLIED, PACKED, trim, trim_owner
from vestige_operator.tokens import ANNOTATION_ROTATE

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


async def test_watched_children_reach_kopf_as_stubs_with_their_packed_entry() -> None:
    from kopf._cogs.clients import watching
    from kopf._cogs.structs.references import Resource

    raw = _deployment()
    error = {"type": "ERROR", "object": {"code": 410}}
    out = await _through_watch(
        Resource("apps", "v1", "deployments"),
        [watching.Bookmark.LISTED, {"type": None, "object": copy.deepcopy(raw)}, error],
    )
    assert out[0] is watching.Bookmark.LISTED and out[2] == error
    stub = out[1]["object"]
    assert set(stub) == {"apiVersion", "kind", "metadata", PACKED}
    assert stub["metadata"] == {k: v for k, v in raw["metadata"].items() if k != "managedFields"}
    assert stub[PACKED].unpack() == trim(raw)


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
