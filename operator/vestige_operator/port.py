"""The operator's API port: every call the controllers make to the Kubernetes API server.

``cluster.Cluster`` implements it over HTTP; ``tests/unit/fake_port.py`` in memory, so the
reconcile and backup passes run in-process in unit tests. Nothing else in the operator talks to
the API server (kopf's watches aside). Errors are ``cluster.ApiError`` (``transient`` says
whether retrying later may help).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from vestige_operator.cluster import Kind

JsonDict = dict[str, Any]


class ApiPort(Protocol):
    """The API server as the controllers use it."""

    #: Requests sent, by (verb, kind); failed ones by (verb, kind, HTTP status; 0: no answer).
    requests: Counter[tuple[str, str]]
    errors: Counter[tuple[str, str, int]]
    #: The leader gate (leader.py): while it is false every write raises ``cluster.NotLeading``
    #: unsent (``post_event`` returns quietly); reads pass.
    may_write: Callable[[], bool]

    async def apply(self, manifest: JsonDict, *, hand_over: bool = False) -> JsonDict:
        """Server-side apply (forced) over an object the operator owns; the result. ``hand_over``:
        the object still holds fields under the operator's ``create``; they are
        handed to its apply entry first, so an apply that leaves one out removes it."""
        ...

    async def create(self, manifest: JsonDict) -> JsonDict | None:
        """Create; None when an object of that name exists (it is never overwritten)."""
        ...

    async def get(self, kind: Kind, namespace: str, name: str) -> JsonDict | None:
        """The object, or None when it does not exist."""
        ...

    async def update(self, manifest: JsonDict) -> JsonDict | None:
        """Replace if ``metadata.resourceVersion`` is current (409 otherwise); None when gone."""
        ...

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> bool:
        """Delete if the object still has ``uid``; False when gone or replaced."""
        ...

    async def patch_status(
        self,
        namespace: str,
        name: str,
        uid: str,
        patch: JsonDict,
        kind: Kind = ...,
        resource_version: str | None = None,
    ) -> JsonDict | None:
        """Merge-patch the status subresource (uid, and resourceVersion if given, as
        preconditions); None when gone, replaced or changed."""
        ...

    async def post_event(self, event: JsonDict) -> None:
        """Create a core/v1 Event (best effort)."""
        ...

    async def live_uids(self, kind: Kind, namespace: str | None, label_selector: str | None) -> set[str]:
        """The uids of the objects of ``kind`` that exist now (metadata-only LIST)."""
        ...

    async def list_objects(
        self, kind: Kind, namespace: str, label_selector: str | None = None
    ) -> list[JsonDict]:
        """The objects of ``kind`` in ``namespace`` (small sets: one Job's pods, one agent's)."""
        ...

    async def storage_class_exists(self, name: str) -> bool | None:
        """Whether the StorageClass exists; None when it cannot be told."""
        ...

    def close(self) -> None:
        """Release connections (shutdown)."""
        ...
