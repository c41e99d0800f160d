"""The children as the passes read them, kept straight from the watch (no kopf index).

``handlers.wrap_kopf_watch`` hands each child kind's events to its ``ChildFeed`` instead of to
kopf: a whole listing replaces the kind's ``ChildCache``, a watch event updates it, and a pass is
requested for every owner whose children changed. kopf gets only the listing's bookmark. Before,
kopf indexed the children itself, which costs one worker task per object and, at start, one
"indexed" toggle per object that every other worker waits on: a replica starting beside 5,000
agents (30,000 objects) spent over 10 minutes at 100 % of a core in that wait
(docs/benchmarks.md, "Memory at N = 5000"). This is what client-go's informers do.

Entries are ``caches.Packed`` children keyed as kopf's child indexes were:
(namespace, the owner named by the instance label) -> every child of that kind under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from vestige_operator.caches import PACKED, Key, Packed, pack_child
from vestige_operator.vocabulary import LABEL_INSTANCE


def _key(obj: Mapping[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(LABEL_INSTANCE)
    namespace = meta.get("namespace")
    return (namespace, instance) if instance and namespace else None


def _packed(obj: Mapping[str, Any]) -> Packed:
    entry = obj.get(PACKED)
    return entry if isinstance(entry, Packed) else pack_child(obj)


class ChildCache(Mapping[Key, tuple[Packed, ...]]):
    """A kind's children by owner key; ``listed`` once a whole listing has been seen."""

    def __init__(self) -> None:
        self._by_uid: dict[str, tuple[Key, Packed]] = {}
        self._by_key: dict[Key, dict[str, Packed]] = {}
        self.listed = False

    def __getitem__(self, key: Key) -> tuple[Packed, ...]:
        return tuple(self._by_key[key].values())

    def __iter__(self) -> Iterator[Key]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def apply(self, event_type: str | None, obj: Mapping[str, Any]) -> set[Key]:
        """One watch event; the owner keys whose children changed (a pass is due for each)."""
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return set()
        old = self._by_uid.get(uid)
        key = _key(obj)
        if event_type == "DELETED" or key is None:  # gone, or no longer labelled for an owner
            self._drop(uid)
            return {old[0]} if old else set()
        entry = _packed(obj)
        if old is not None and old[0] == key and old[1].same(entry):
            return set()
        self._drop(uid)
        self._by_uid[uid] = (key, entry)
        self._by_key.setdefault(key, {})[uid] = entry
        return {key} | ({old[0]} if old else set())

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> set[Key]:
        """A whole listing: what it holds replaces everything (what was deleted while nothing
        watched is dropped); the owner keys whose children changed."""
        fresh = ChildCache()
        for obj in objs:
            fresh.apply(None, obj)
        changed = {
            key
            for key in set(self._by_key) | set(fresh._by_key)
            if not _same_entries(self._by_key.get(key, {}), fresh._by_key.get(key, {}))
        }
        self._by_uid, self._by_key = fresh._by_uid, fresh._by_key
        self.listed = True
        return changed

    def _drop(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        entries = self._by_key.get(old[0])
        if entries is not None:
            entries.pop(uid, None)
            if not entries:
                del self._by_key[old[0]]


def _same_entries(a: Mapping[str, Packed], b: Mapping[str, Packed]) -> bool:
    return a.keys() == b.keys() and all(a[uid].same(b[uid]) for uid in a)


class ChildFeed:
    """Where the watch of one child kind goes: its cache, and a pass for each changed owner.

    ``request`` is called only once ``ready()`` is true (the owners are listed and the reconciler
    runs): until then every owner's own listing event requests its pass anyway, and a pass of an
    owner not yet listed would find nothing to reconcile.
    """

    def __init__(self, request: Callable[[Key], None], ready: Callable[[], bool]) -> None:
        self.cache = ChildCache()
        self._request = request
        self._ready = ready

    def listed(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """A whole listing (the first, or a relist after the watch was lost)."""
        self._changed(self.cache.replace(objs))

    def event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of the kind."""
        self._changed(self.cache.apply(event_type, obj))

    def _changed(self, keys: set[Key]) -> None:
        if keys and self._ready():
            for key in sorted(keys):
                self._request(key)
