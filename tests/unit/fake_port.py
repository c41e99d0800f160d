"""An in-memory fake of the operator's API port (vestige_operator.port.ApiPort).

It keeps objects by (kind, namespace, name) with uids, resourceVersions and owner references,
answers like the API server where the controllers depend on it
(create of a taken name: None; update with a stale resourceVersion: 409; delete with a uid
precondition; status merge patch with uid precondition), records every write in ``writes`` and
every Event in ``events``, and counts requests like ``cluster.Cluster``. Server-side apply is
modelled as "merge the manifest over the object" (enough for the pass: the tests compare what
the operator sent and what it left alone, not the field-manager arithmetic, which the
real-cluster tests cover). Of managedFields it keeps only the operator's entries: a create
records an ``Update`` entry, an apply an ``Apply`` one, and ``apply(..., hand_over=True)`` turns
the former into the latter first; ``applied_over_create`` lists the applies sent while an
``Update`` entry of the create was still there (their dropped fields would stay).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from vestige_operator import FIELD_MANAGER
from vestige_operator.cluster import VESTIGE_MEMORY, ApiError, Kind, NotLeading, kind_of, refuse_unless

JsonDict = dict[str, Any]
Ref = tuple[str, str, str]  # (kind, namespace, name)


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(out.get(k), v)
        return out
    return copy.deepcopy(patch)


def _managers(operations: Any) -> list[JsonDict]:
    """The operator's managedFields entries, one per operation (fields are not modelled)."""
    return [{"manager": FIELD_MANAGER, "operation": op} for op in dict.fromkeys(operations)]


class FakePort:
    """The API server, in memory."""

    def __init__(self) -> None:
        self.objects: dict[Ref, JsonDict] = {}
        self.events: list[JsonDict] = []
        self.writes: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str, int]] = Counter()
        self.storage_classes: set[str] = {"standard"}
        self._rv = itertools.count(1)
        #: (verb, kind) -> an ApiError raised once by the next such request.
        self.fail_next: dict[tuple[str, str], ApiError] = {}
        #: The leader gate, as in cluster.Cluster: a write is refused (not sent, not counted).
        self.may_write: Callable[[], bool] = lambda: True
        #: Writes refused by the gate, by (verb, kind).
        self.refused: Counter[tuple[str, str]] = Counter()
        #: (kind, name) of applies sent over an object whose create's fields were not handed over.
        self.applied_over_create: list[tuple[str, str]] = []

    # -- helpers for tests ---------------------------------------------------------------------

    def put(self, obj: JsonDict) -> JsonDict:
        """Store ``obj`` as if someone else created it (a uid and resourceVersion are added)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def find(self, kind: str, namespace: str, name: str) -> JsonDict | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def of_kind(self, kind: str) -> list[JsonDict]:
        return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    def _count(self, verb: str, kind: str) -> None:
        if verb not in ("get", "list"):
            try:
                refuse_unless(self.may_write, verb, kind)
            except NotLeading:
                self.refused[(verb, kind)] += 1
                raise
        self.requests[(verb, kind)] += 1
        error = self.fail_next.pop((verb, kind), None)
        if error is not None:
            self.errors[(verb, kind, error.status)] += 1
            raise error

    def _write(self, verb: str, obj: JsonDict) -> None:
        self.writes.append((verb, obj["kind"], obj["metadata"]["name"]))

    # -- the port ------------------------------------------------------------------------------

    async def apply(self, manifest: JsonDict, *, hand_over: bool = False) -> JsonDict:
        kind_of(manifest)
        meta = manifest["metadata"]
        ref = (manifest["kind"], meta["namespace"], meta["name"])
        if hand_over:
            self._count("get", manifest["kind"])
            self._count("hand over", manifest["kind"])
            if ref in self.objects:
                self.objects[ref]["metadata"]["managedFields"] = _managers(
                    "Apply" if m["operation"] == "Update" else m["operation"]
                    for m in self.objects[ref]["metadata"].get("managedFields", [])
                )
                self._write("hand over", manifest)
        self._count("apply", manifest["kind"])
        current = self.objects.get(ref)
        if current is None:
            self._write("apply", manifest)
            return self.put({**manifest, "metadata": {**meta, "managedFields": _managers(["Apply"])}})
        operations = [m["operation"] for m in current["metadata"].get("managedFields", [])]
        if "Update" in operations:
            self.applied_over_create.append((manifest["kind"], meta["name"]))
        merged = _merge(current, manifest)
        merged["metadata"]["managedFields"] = _managers([*operations, "Apply"])
        merged["metadata"]["resourceVersion"] = str(next(self._rv))
        if merged.get("spec") != current.get("spec"):  # as the API server does: a spec change
            merged["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
        self.objects[ref] = merged
        self._write("apply", manifest)
        return copy.deepcopy(merged)

    async def create(self, manifest: JsonDict) -> JsonDict | None:
        kind_of(manifest)
        self._count("create", manifest["kind"])
        meta = manifest["metadata"]
        if "name" not in meta:  # generateName: the API server adds 5 random characters
            manifest = copy.deepcopy(manifest)
            meta = manifest["metadata"]
            meta["name"] = meta.pop("generateName") + uuid.uuid4().hex[:5]
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            self.errors[("create", manifest["kind"], 409)] += 1
            return None
        self._write("create", manifest)
        return self.put({**manifest, "metadata": {**meta, "managedFields": _managers(["Update"])}})

    async def get(self, kind: Kind, namespace: str, name: str) -> JsonDict | None:
        self._count("get", kind.kind)
        found = self.find(kind.kind, namespace, name)
        if found is None:
            self.errors[("get", kind.kind, 404)] += 1
        return found

    async def update(self, manifest: JsonDict) -> JsonDict | None:
        kind_of(manifest)
        self._count("update", manifest["kind"])
        meta = manifest["metadata"]
        ref = (manifest["kind"], meta["namespace"], meta["name"])
        current = self.objects.get(ref)
        if current is None:
            return None
        if current["metadata"]["resourceVersion"] != meta.get("resourceVersion"):
            raise ApiError(
                409, "Conflict", "the object has been modified", verb="update", target=meta["name"]
            )
        new = copy.deepcopy(manifest)
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        new["metadata"]["uid"] = current["metadata"]["uid"]
        self.objects[ref] = new
        self._write("update", manifest)
        return copy.deepcopy(new)

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> bool:
        self._count("delete", kind.kind)
        current = self.objects.get((kind.kind, namespace, name))
        if current is None or current["metadata"]["uid"] != uid:
            return False
        del self.objects[(kind.kind, namespace, name)]
        self.writes.append(("delete", kind.kind, name))
        return True

    async def patch_status(
        self,
        namespace: str,
        name: str,
        uid: str,
        patch: JsonDict,
        kind: Kind = VESTIGE_MEMORY,
        resource_version: str | None = None,
    ) -> JsonDict | None:
        self._count("patch_status", kind.kind)
        ref = (kind.kind, namespace, name)
        current = self.objects.get(ref)
        if current is None or current["metadata"]["uid"] != uid:
            return None
        if resource_version is not None and current["metadata"]["resourceVersion"] != resource_version:
            return None
        current["status"] = _merge(current.get("status") or {}, patch)
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self.writes.append(("patch_status", kind.kind, name))
        return copy.deepcopy(current)

    async def post_event(self, event: JsonDict) -> None:
        try:
            self._count("create", "Event")
        except NotLeading:
            return  # best effort, as cluster.Cluster
        self.events.append(copy.deepcopy(event))

    async def live_uids(self, kind: Kind, namespace: str | None, label_selector: str | None) -> set[str]:
        self._count("list", kind.kind)
        return {
            o["metadata"]["uid"]
            for (k, ns, _), o in self.objects.items()
            if k == kind.kind and (namespace is None or ns == namespace)
        }

    async def list_objects(
        self, kind: Kind, namespace: str, label_selector: str | None = None
    ) -> list[JsonDict]:
        self._count("list", kind.kind)
        wanted = dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else {}
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind.kind
            and ns == namespace
            and all(((o["metadata"].get("labels") or {}).get(a) == v) for a, v in wanted.items())
        ]

    async def storage_class_exists(self, name: str) -> bool | None:
        self._count("get", "StorageClass")
        return name in self.storage_classes

    def close(self) -> None:
        pass
