"""The caches the passes read, kept straight from the watch, as client-go's informers keep theirs.

``handlers.wrap_kopf_watch`` hands each kind's listing and watch events to its feed before kopf
sees them:

- ``ChildFeed``, one per child kind: a whole listing replaces the kind's ``ChildCache``, a watch
  event updates it, and a pass is requested for every owner whose children changed. kopf gets
  only the listing's bookmark.
- ``OwnerCache``, the VestigeMemory resources and their Ingress claims: filled the same way, and
  kopf still gets every event (its handler requests the passes).

Before, kopf indexed all of them itself. An indexed kind costs kopf, at start, one "indexed"
toggle per object, and every toggle made or dropped wakes every waiting worker: a replica
starting beside 5,000 agents (30,000 objects) spent over 10 minutes at 100 % of a core in that
wait, and still 4 minutes with the children out of kopf's indexes (py-spy: kopf's
``ToggleSet.make_toggle``; docs/benchmarks.md, "Memory at N = 5000").

``ChildCache`` entries are ``caches.Packed`` children keyed as kopf's child indexes were:
(namespace, the owner named by the instance label) -> every child of that kind under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from vestige_operator.caches import PACKED, Key, Packed, pack_child, trim_owner, uid_of
from vestige_operator.children import IngressClaim, ingress_claim
from vestige_operator.vocabulary import LABEL_INSTANCE


class WatchFeed(Protocol):
    """Where ``handlers.wrap_kopf_watch`` sends one kind's listing and watch events."""

    #: Whether kopf gets the kind's objects too (else only its listing's bookmark).
    to_kopf: bool

    def listing(self, objs: Iterable[Mapping[str, Any]]) -> None: ...

    def event(self, event_type: str | None, obj: Mapping[str, Any]) -> None: ...


def _key(obj: Mapping[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(LABEL_INSTANCE)
    namespace = meta.get("namespace")
    return (namespace, instance) if instance and namespace else None


def _packed(obj: Mapping[str, Any]) -> Packed:
    entry = obj.get(PACKED)
    return entry if isinstance(entry, Packed) else pack_child(obj)


K = TypeVar("K")
V = TypeVar("V")


class _Groups(Mapping[K, tuple[V, ...]], Generic[K, V]):
    """``groups`` (a key -> its entries by their own id) read as kopf's indexes read: a key ->
    the tuple of its entries. A key is only present while it has an entry."""

    def __init__(self, groups: dict[K, dict[Any, V]]) -> None:
        self._groups = groups

    def __getitem__(self, key: K) -> tuple[V, ...]:
        return tuple(self._groups[key].values())

    def __contains__(self, key: object) -> bool:
        return key in self._groups

    def __iter__(self) -> Iterator[K]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)


class ChildCache(_Groups[Key, Packed]):
    """A kind's children by owner key; ``listed`` once a whole listing has been seen."""

    def __init__(self) -> None:
        super().__init__({})
        self._by_uid: dict[str, tuple[Key, Packed]] = {}
        self.listed = False

    def apply(self, event_type: str | None, obj: Mapping[str, Any]) -> set[Key]:
        """One watch event; the owner keys whose children changed (a pass is due for each)."""
        uid = uid_of(obj)
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
        self._groups.setdefault(key, {})[uid] = entry
        return {key} | ({old[0]} if old else set())

    def replace(self, objs: Iterable[Mapping[str, Any]]) -> set[Key]:
        """A whole listing: what it holds replaces everything (what was deleted while nothing
        watched is dropped); the owner keys whose children changed."""
        fresh = ChildCache()
        for obj in objs:
            fresh.apply(None, obj)
        changed = {
            key
            for key in set(self._groups) | set(fresh._groups)
            if not _same_entries(self._groups.get(key, {}), fresh._groups.get(key, {}))
        }
        self._by_uid, self._groups = fresh._by_uid, fresh._groups
        self.listed = True
        return changed

    def _drop(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        entries = self._groups.get(old[0])
        if entries is not None:
            entries.pop(uid, None)
            if not entries:
                del self._groups[old[0]]


def _same_entries(a: Mapping[str, Packed], b: Mapping[str, Packed]) -> bool:
    return a.keys() == b.keys() and all(a[uid].same(b[uid]) for uid in a)


class ChildFeed:
    """Where the watch of one child kind goes: its cache, and a pass request for each changed
    owner (kopf gets none of its objects, ``to_kopf``). Requests made before the operator's
    caches are all whole are dropped by its paused queue (``handlers.register``)."""

    to_kopf = False

    def __init__(self, request: Callable[[Key], None]) -> None:
        self.cache = ChildCache()
        self._request = request

    def listing(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """A whole listing (the first, or a relist after the watch was lost)."""
        self._changed(self.cache.replace(objs))

    def event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of the kind."""
        self._changed(self.cache.apply(event_type, obj))

    def _changed(self, keys: set[Key]) -> None:
        for key in sorted(keys):
            self._request(key)


class OwnerCache(Mapping[Key, tuple[dict[str, Any], ...]]):
    """Every VestigeMemory's cache entry (``caches.trim_owner``) by (namespace, name), shaped as
    kopf's index was (a key -> its entries), and ``hosts``: the Ingress claims by lower-cased host.

    A feed of the VestigeMemory watch whose events still reach kopf (``to_kopf``): kopf's handler
    requests the passes, and runs only after this cache holds the whole listing. A resource that a
    relist no longer holds was deleted while no watch ran, and kopf never hears of it: ``gone`` is
    told instead, as of a deletion (client-go's informers do the same). ``listed`` is called after
    each whole listing is in.
    """

    to_kopf = True

    def __init__(
        self,
        gone: Callable[[Key, str | None], None] | None = None,
        listed: Callable[[], None] | None = None,
    ) -> None:
        self._gone = gone
        self._on_listed = listed
        self._by_key: dict[Key, dict[str, Any]] = {}
        self._claims: dict[Key, IngressClaim] = {}
        self._hosts: dict[str, dict[Key, IngressClaim]] = {}
        self.hosts: Mapping[str, tuple[IngressClaim, ...]] = _Groups(self._hosts)
        self.listed = False

    def __getitem__(self, key: Key) -> tuple[dict[str, Any], ...]:
        return (self._by_key[key],)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Key]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """One watch event of a VestigeMemory."""
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            return
        key = (namespace, name)
        if event_type == "DELETED":
            old = self._by_key.get(key)
            if old is not None and uid_of(old) == meta.get("uid"):  # not a newer one of that name
                del self._by_key[key]
                self._unclaim(key)
            return
        self._by_key[key] = trim_owner(obj)
        self._unclaim(key)
        claim = ingress_claim(namespace, name, meta.get("creationTimestamp"), obj.get("spec") or {})
        if claim is not None:
            self._claims[key] = claim
            self._hosts.setdefault(claim.host, {})[key] = claim

    def listing(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """A whole listing: what it holds replaces everything (the first, or a relist)."""
        fresh = OwnerCache()
        for obj in objs:
            fresh.event(None, obj)
        old = self._by_key
        self._by_key, self._claims = fresh._by_key, fresh._claims
        self._hosts.clear()  # in place: ``hosts`` is a view of it, held by the reconciler
        self._hosts.update(fresh._hosts)
        self.listed = True
        if self._gone is not None:
            for key, entry in old.items():
                new = self._by_key.get(key)
                if new is None or uid_of(new) != uid_of(entry):
                    self._gone(key, uid_of(entry))
        if self._on_listed is not None:
            self._on_listed()

    def _unclaim(self, key: Key) -> None:
        old = self._claims.pop(key, None)
        if old is not None:
            holders = self._hosts.get(old.host, {})
            holders.pop(key, None)
            if not holders:
                self._hosts.pop(old.host, None)
