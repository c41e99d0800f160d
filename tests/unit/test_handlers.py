"""The kopf wiring: the operator registers only watch-level handlers, so kopf's per-event diff
base (the "last handled" state of create/update handlers) may be switched off."""

from __future__ import annotations

import kopf
from vestige_operator import handlers

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
    assert registry._watching.get_all_handlers()
    assert registry._indexing.get_all_handlers()


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
