"""The only code of the operator that talks to the Kubernetes API server (kopf's watches aside).

It uses the official ``kubernetes`` client's configuration and connection pool but sends raw JSON
(no model classes): server-side apply (``application/apply-patch+yaml``, field manager
``vestige-operator``, ``force=true``), create-if-absent, get, delete with a uid precondition and a
JSON merge patch of the ``status`` subresource. Blocking calls run in a small thread pool so the
kopf event loop never blocks. Every request is counted in ``Cluster.requests`` (verb, kind) so a
benchmark can report requests per resync. Writes pass the leader gate (``may_write``, leader.py)
in the sending thread, just before they are sent: a replica that does not lead sends none.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from vestige_operator import BACKUP_KIND, BACKUP_PLURAL, FIELD_MANAGER, GROUP, KIND, PLURAL, VERSION

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
REQUEST_TIMEOUT = (10.0, 30.0)  # connect, read (seconds)
#: Accept header of a metadata-only LIST.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


@dataclass(frozen=True, slots=True)
class Kind:
    """A namespaced API resource the operator reads or writes."""

    api_version: str
    kind: str
    plural: str

    @property
    def display(self) -> str:
        """``vestigememories.vestige.dev``, ``pods``: how RBAC and kubectl name the resource."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The object's (or, without a name, the collection's) path; no namespace: all namespaces."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is None:
            return f"{base}/{self.plural}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


SECRET = Kind("v1", "Secret", "secrets")
PVC = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
SERVICE = Kind("v1", "Service", "services")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
VESTIGE_MEMORY = Kind(f"{GROUP}/{VERSION}", KIND, PLURAL)
EVENT = Kind("v1", "Event", "events")
JOB = Kind("batch/v1", "Job", "jobs")
POD = Kind("v1", "Pod", "pods")
VESTIGE_BACKUP = Kind(f"{GROUP}/{VERSION}", BACKUP_KIND, BACKUP_PLURAL)
STORAGE_CLASS = Kind("storage.k8s.io/v1", "StorageClass", "storageclasses")  # cluster-scoped

KINDS: Mapping[str, Kind] = {
    k.kind: k
    for k in (SECRET, PVC, SERVICE, DEPLOYMENT, NETWORK_POLICY, INGRESS, VESTIGE_MEMORY, JOB, VESTIGE_BACKUP)
}


def kind_of(manifest: Mapping[str, Any]) -> Kind:
    """The Kind of a manifest (KeyError for a kind the operator does not manage)."""
    kind = KINDS[manifest["kind"]]
    if kind.api_version != manifest["apiVersion"]:
        raise KeyError(f"unexpected apiVersion {manifest['apiVersion']!r} for {kind.kind}")
    return kind


class ApiError(Exception):
    """A request the API server refused or that did not reach it."""

    def __init__(self, status: int, reason: str, message: str, *, verb: str, target: str) -> None:
        super().__init__(f"{verb} {target}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later may succeed (network, throttling, 5xx, conflicts)."""
        return self.status == 0 or self.status in (408, 409, 429) or self.status >= 500


class NotLeading(ApiError):
    """A write this replica did not send: it does not hold the leader Lease (transient)."""

    def __init__(self, verb: str, target: str) -> None:
        super().__init__(0, "NotLeading", "this replica does not lead", verb=verb, target=target)


def refuse_unless(may_write: Callable[[], bool], verb: str, target: str) -> None:
    """The leader gate of every write of the API port: NotLeading unless ``may_write()``."""
    if not may_write():
        raise NotLeading(verb, target)


def _error_from(status: int, reason: str, data: bytes | str | None, verb: str, target: str) -> ApiError:
    message = ""
    if data:
        try:
            doc = json.loads(data)
            message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
            reason = str(doc.get("reason", reason)) if isinstance(doc, dict) else reason
        except ValueError:
            message = data.decode(errors="replace") if isinstance(data, bytes) else data
    return ApiError(status, reason or "", message[:2000], verb=verb, target=target)


def make_api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """An API client for the in-cluster service account, else the kubeconfig (``$KUBECONFIG``)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


class Cluster:
    """Asynchronous, counted access to the API server for the reconciler."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        max_workers: int = 8,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self._api = api_client
        self._field_manager = field_manager
        #: The leader gate (leader.Leadership.leading), read in the sending thread.
        self.may_write = may_write
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vestige-api")
        self.requests: Counter[tuple[str, str]] = Counter()
        #: Failed requests by (verb, kind, HTTP status; 0: no answer), for the metrics.
        self.errors: Counter[tuple[str, str, int]] = Counter()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    # -- transport ---------------------------------------------------------------------------

    def _request_sync(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: JsonDict | list[JsonDict] | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        headers = {"Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
            )
            data = response.read() or b""
            return response.status, data
        except ApiException as exc:  # TLS errors and the client's own refusals
            return exc.status or 0, (exc.body or str(exc.reason) or "").encode()
        except OSError as exc:  # connection refused/reset, timeouts (urllib3 errors subclass OSError)
            return 0, str(exc).encode()
        except Exception as exc:  # urllib3's MaxRetryError & co. do not all subclass OSError
            if type(exc).__module__.startswith("urllib3"):
                return 0, str(exc).encode()
            raise

    async def _request(
        self,
        verb: str,
        kind: Kind,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> tuple[int, bytes]:
        def send() -> tuple[int, bytes]:
            if method != "GET":  # checked here, not before queueing: the pool may be busy for long
                refuse_unless(self.may_write, verb, f"{kind.kind} {path}")
            self.requests[(verb, kind.kind)] += 1
            return self._request_sync(method, path, **kwargs)

        status, data = await asyncio.get_running_loop().run_in_executor(self._executor, send)
        if status == 0 or status >= 400:
            self.errors[(verb, kind.kind, status)] += 1
        return status, data

    # -- operations --------------------------------------------------------------------------

    async def apply(self, manifest: JsonDict, *, hand_over: bool = False) -> JsonDict:
        """Server-side apply ``manifest`` (forcing ownership of the fields it sets); the result.

        ``hand_over``: the object was made by a plain create (children are: a create never takes
        over an object of that name, an apply would), which records its fields under an
        ``Update`` entry of the field manager; an apply that leaves one of them out would not
        remove it. So that entry is first handed to ``Apply`` (one JSON patch of
        ``managedFields``: what kubectl's csaupgrade does; read again and retried when a
        controller wrote the object meanwhile). Done only before the first apply that changes
        the object, so a child that never changes costs its create alone. If the hand-over
        keeps failing it is logged and the apply goes on (the next change tries again).
        """
        kind = kind_of(manifest)
        meta = manifest["metadata"]
        path = kind.path(meta["namespace"], meta["name"])
        if hand_over:
            await self._hand_over_live(kind, meta["namespace"], meta["name"])
        status, data = await self._request(
            "apply",
            kind,
            "PATCH",
            path,
            query=[("fieldManager", self._field_manager), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        if status != 200 and status != 201:
            raise _error_from(status, "", data, "apply", f"{kind.kind} {meta['namespace']}/{meta['name']}")
        return json.loads(data)

    async def create(self, manifest: JsonDict) -> JsonDict | None:
        """Create ``manifest``; None when an object of that name already exists (never overwritten)."""
        kind = kind_of(manifest)
        meta = manifest["metadata"]
        status, data = await self._request(
            "create",
            kind,
            "POST",
            kind.path(meta["namespace"]),
            query=[("fieldManager", self._field_manager)],
            body=manifest,
            content_type="application/json",
        )
        if status == 409:
            return None
        if status != 201 and status != 200:
            name = meta.get("name") or f"{meta.get('generateName', '')}*"
            raise _error_from(status, "", data, "create", f"{kind.kind} {meta['namespace']}/{name}")
        return json.loads(data)

    async def _hand_over_live(self, kind: Kind, namespace: str, name: str) -> None:
        """Hand the field manager's Update entries of the object to Apply (``apply``)."""
        for _ in range(3):  # controllers write status at any time (the PV binder): read again
            current = await self.get(kind, namespace, name)
            if current is None or await self._hand_over(kind, current) is not None:
                return
        logger.warning(
            "could not hand the created fields of %s %s/%s to server-side apply", kind.kind, namespace, name
        )

    async def _hand_over(self, kind: Kind, obj: JsonDict) -> JsonDict | None:
        """``obj`` with the field manager's Update entries turned into Apply entries (None: the
        patch failed). Each changed entry is tested first (same manager, still an Update at that
        index), not the resourceVersion: controllers write a new object's status at once (the
        Deployment controller, the PV binder), which does not touch these entries."""
        meta = obj.get("metadata") or {}
        ops: list[JsonDict] = []
        for i, entry in enumerate(meta.get("managedFields") or []):
            if entry.get("manager") == self._field_manager and entry.get("operation") == "Update":
                path = f"/metadata/managedFields/{i}"
                ops += [
                    {"op": "test", "path": f"{path}/manager", "value": self._field_manager},
                    {"op": "test", "path": f"{path}/operation", "value": "Update"},
                    {"op": "replace", "path": f"{path}/operation", "value": "Apply"},
                ]
        if not ops:
            return obj
        status, data = await self._request(
            "hand over",
            kind,
            "PATCH",
            kind.path(meta["namespace"], meta["name"]),
            body=ops,
            content_type="application/json-patch+json",
        )
        if status != 200:
            error = _error_from(
                status, "", data, "hand over", f"{kind.kind} {meta['namespace']}/{meta['name']}"
            )
            logger.debug("handing over the fields of a created object: %s", error)
            return None
        return json.loads(data)

    async def update(self, manifest: JsonDict) -> JsonDict | None:
        """Replace ``manifest`` (PUT) if its ``metadata.resourceVersion`` is still current; None
        when it is gone. A concurrent change raises a transient 409 (read again, decide again)."""
        kind = kind_of(manifest)
        meta = manifest["metadata"]
        if not meta.get("resourceVersion"):
            raise ValueError("update needs metadata.resourceVersion (optimistic concurrency)")
        status, data = await self._request(
            "update",
            kind,
            "PUT",
            kind.path(meta["namespace"], meta["name"]),
            query=[("fieldManager", self._field_manager)],
            body=manifest,
            content_type="application/json",
        )
        if status == 404:
            return None
        if status != 200:
            raise _error_from(status, "", data, "update", f"{kind.kind} {meta['namespace']}/{meta['name']}")
        return json.loads(data)

    async def get(self, kind: Kind, namespace: str, name: str) -> JsonDict | None:
        """The object, or None when it does not exist."""
        status, data = await self._request("get", kind, "GET", kind.path(namespace, name))
        if status == 404:
            return None
        if status != 200:
            raise _error_from(status, "", data, "get", f"{kind.kind} {namespace}/{name}")
        return json.loads(data)

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> bool:
        """Delete the object if it is still the one with ``uid``; False if it is gone or was replaced."""
        status, data = await self._request(
            "delete",
            kind,
            "DELETE",
            kind.path(namespace, name),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"uid": uid},
                "propagationPolicy": "Background",
            },
            content_type="application/json",
        )
        if status in (404, 409):
            return False
        if status not in (200, 202):
            raise _error_from(status, "", data, "delete", f"{kind.kind} {namespace}/{name}")
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
        """JSON-merge-patch the status of a VestigeMemory (or ``kind``); None when gone or replaced
        (or, with ``resource_version``, changed since that version)."""
        meta: JsonDict = {"uid": uid}  # a uid in the patch acts as a precondition
        if resource_version is not None:
            meta["resourceVersion"] = resource_version  # so does a resourceVersion
        body = {"metadata": meta, "status": patch}
        status, data = await self._request(
            "patch_status",
            kind,
            "PATCH",
            kind.path(namespace, name, "status"),
            query=[("fieldManager", self._field_manager)],
            body=body,
            content_type="application/merge-patch+json",
        )
        if status in (404, 409):
            return None
        if status != 200:
            raise _error_from(status, "", data, "patch status", f"{kind.kind} {namespace}/{name}")
        return json.loads(data)

    async def live_uids(self, kind: Kind, namespace: str | None, label_selector: str | None) -> set[str]:
        """The uids of the objects of ``kind`` that exist now (``namespace`` None: all namespaces).

        A metadata-only LIST (PartialObjectMetadataList), paged: cheap even at thousands of objects.
        """
        uids: set[str] = set()
        query = [("limit", "500")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        token = ""
        while True:
            page = query + ([("continue", token)] if token else [])
            status, data = await self._request(
                "list", kind, "GET", kind.path(namespace), query=page, accept=METADATA_LIST
            )
            if status != 200:
                raise _error_from(status, "", data, "list", f"{kind.kind} in {namespace or 'all namespaces'}")
            body = json.loads(data)
            uids.update(item["metadata"]["uid"] for item in body.get("items") or ())
            token = (body.get("metadata") or {}).get("continue") or ""
            if not token:
                return uids

    async def list_objects(
        self, kind: Kind, namespace: str, label_selector: str | None = None
    ) -> list[JsonDict]:
        """The objects of ``kind`` in ``namespace`` (one page of at most 500; used for small sets:
        the pods of one Job, the pods of one agent)."""
        query = [("limit", "500")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        status, data = await self._request("list", kind, "GET", kind.path(namespace), query=query)
        if status != 200:
            raise _error_from(status, "", data, "list", f"{kind.kind} in {namespace}")
        return list(json.loads(data).get("items") or [])

    async def storage_class_exists(self, name: str) -> bool | None:
        """Whether the StorageClass exists; None when it cannot be told (no permission, API error)."""
        path = f"/apis/{STORAGE_CLASS.api_version}/{STORAGE_CLASS.plural}/{quote(name, safe='')}"
        status, _ = await self._request("get", STORAGE_CLASS, "GET", path)
        if status == 200:
            return True
        if status == 404:
            return False
        logger.debug("cannot tell whether StorageClass %s exists: HTTP %s", name, status)
        return None

    async def post_event(self, event: JsonDict) -> None:
        """Create a core/v1 Event (best effort: an Event that cannot be posted is only logged)."""
        namespace = event["metadata"]["namespace"]
        try:
            status, data = await self._request(
                "create", EVENT, "POST", EVENT.path(namespace), body=event, content_type="application/json"
            )
        except NotLeading:
            return
        if status not in (200, 201):
            error = _error_from(status, "", data, "create", f"Event in {namespace}")
            logger.warning("could not post an Event: %s", error)
