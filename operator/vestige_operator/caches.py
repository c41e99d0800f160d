"""What the operator's watch caches keep of each object (watch_cache.py; pure functions).

Two forms, chosen by how often an entry is read:

- the VestigeMemory resources (``trim_owner``): plain dicts, compacted (``compact``); every
  resync, metrics scrape and backup tick reads them all;
- the children (``Packed``): trimmed (``trim``), then kept as zlib-compressed JSON with only the
  uid outside. A pass unpacks the few children of its one resource. A Deployment as parsed dicts
  costs ~16 KiB of Python objects and ~2 KiB packed; with five children per resource the packed
  caches hold ~4.5 KiB a resource instead of ~24 (docs/benchmarks.md, "Memory at N = 5000").

No cache keeps a Secret's values (only their hashes) or any object's managedFields.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from vestige_operator import FIELD_MANAGER, tokens
from vestige_operator.token_secret import secret_hashes

Key = tuple[str, str]  # (namespace, name)
#: A watch cache: (namespace, owner name) -> the entries seen under that key (dicts for the
#: VestigeMemory resources, ``Packed`` for the children).
Cache = Mapping[Key, Iterable[Any]]

#: Strings up to this length are interned in the caches (keys, labels, images, defaults).
_INTERN_MAX = 64


def compact(value: Any) -> Any:
    """A deep copy of parsed JSON in which equal keys and short strings are one shared object.

    Every watch event is parsed on its own, so each cached object would otherwise hold its own
    copy of the same keys, labels and defaults.
    """
    if isinstance(value, Mapping):
        return {sys.intern(str(k)): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= _INTERN_MAX:
        return sys.intern(value)
    return value


#: Marks a trimmed child whose fields the operator set by its create are still held by that
#: create's ``Update`` entry (not yet handed to server-side apply: ``ApiPort.apply``'s ``hand_over``).
CREATED_FIELDS = "fieldsFromCreate"


def trim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a child: no managedFields (only whether the operator's create
    still holds fields, ``CREATED_FIELDS``); a Secret keeps hashes of its values, never the values
    (the operator holds no token in memory beyond one pass)."""
    raw_meta = body.get("metadata") or {}
    meta = {k: v for k, v in raw_meta.items() if k != "managedFields"}
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "data", "stringData")}
    out["metadata"] = meta
    if any(
        m.get("manager") == FIELD_MANAGER and m.get("operation") == "Update"
        for m in raw_meta.get("managedFields") or ()
    ):
        out[CREATED_FIELDS] = True
    if body.get("kind") == "Secret":
        out["tokenHashes"] = secret_hashes(body)
    return out


class Packed:
    """One cached child: its ``trim`` as compressed JSON; ``unpack`` gives it back as dicts."""

    __slots__ = ("_data", "uid")

    def __init__(self, trimmed: Mapping[str, Any]) -> None:
        self.uid: str | None = (trimmed.get("metadata") or {}).get("uid")
        self._data = zlib.compress(json.dumps(trimmed, separators=(",", ":")).encode(), 1)

    def unpack(self) -> dict[str, Any]:
        return dict(json.loads(zlib.decompress(self._data)))

    def same(self, other: Packed) -> bool:
        """Whether ``other`` holds the same child, field for field."""
        return self.uid == other.uid and self._data == other._data

    def __repr__(self) -> str:
        return f"Packed(uid={self.uid!r}, {len(self._data)} bytes)"


def pack_child(body: Mapping[str, Any]) -> Packed:
    """A child's watch-cache entry."""
    return Packed(trim(body))


#: Where a slimmed watch event's object carries its packed cache entry (``slim_child``).
PACKED = "vestigePacked"

#: The metadata kopf reads of an object (identity, selection, deletion) and a stub keeps.
_STUB_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)


def slim_child(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What the watch keeps of a child while its listing is read: a stub with its metadata and,
    under ``PACKED``, the child's cache entry, built here once.

    A listing is held whole before it replaces the cache (``handlers.wrap_kopf_watch``): at 5,000
    agents 25,000 children, ~60 KiB of dicts each as parsed (~425 MiB for a replica's first
    listing). The stub is what controller-runtime's cache transforms do for Go operators: drop what
    the controller never reads before anything holds it. Secret values never stay in memory (the
    packed entry holds their hashes only).
    """
    meta = raw.get("metadata") or {}
    return {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": {k: meta[k] for k in _STUB_META if k in meta},
        PACKED: pack_child(raw),
    }


#: An annotation kubectl apply writes: a second copy of the whole spec that nothing here reads.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim_owner(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What kopf gets of a watched VestigeMemory: the object without ``managedFields`` and
    kubectl's last-applied annotation, which no handler reads.

    Together they are most of a resource's JSON once the operator writes its status (one field
    set per manager and subresource), and kopf holds every event's object while it waits.
    """
    meta = raw.get("metadata") or {}
    annotations = meta.get("annotations")
    slim_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if annotations and LAST_APPLIED in annotations:
        slim_meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**raw, "metadata": slim_meta}


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
    """A VestigeMemory's watch-cache entry: the metadata the passes read, spec and status."""
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


def uid_of(entry: Any) -> str | None:
    """The uid of a cache entry (a ``Packed`` child or an owner's dict)."""
    if isinstance(entry, Packed):
        return entry.uid
    return (entry.get("metadata") or {}).get("uid")


def cached_uids(cache: Cache) -> set[str]:
    """Every uid held by a watch cache."""
    return {uid for entries in list(cache.values()) for entry in list(entries) if (uid := uid_of(entry))}


def unpacked(cache: Cache, key: Key, skip: AbstractSet[str] = frozenset()) -> list[dict[str, Any]]:
    """The children cached under ``key`` as dicts, without those whose uid is in ``skip``."""
    if key not in cache:
        return []
    return [entry.unpack() for entry in list(cache[key]) if entry.uid not in skip]
