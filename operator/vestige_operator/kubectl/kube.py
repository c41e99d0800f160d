"""The plugin's access to the API server: the user's kubeconfig, raw JSON requests, clear errors.

Like the operator's ``cluster.py`` it uses the official ``kubernetes`` client's configuration
(kubeconfig loading, exec/OIDC credential plugins, TLS) and connection pool and sends raw JSON,
so every request knows its verb and target and a refusal becomes one readable line
(:class:`PluginError`) instead of a stack trace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from vestige_operator.cluster import Kind
from vestige_operator.kubectl.render import KubeFlags

JsonDict = dict[str, Any]


class PluginError(Exception):
    """A failure the user can act on: printed as one line on stderr, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(PluginError):
    pass


class Forbidden(PluginError):
    pass


class Unreachable(PluginError):
    pass


def _doc(data: bytes) -> JsonDict:
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def api_error(
    status: int, data: bytes, *, verb: str, resource: Kind, namespace: str | None, name: str | None
) -> PluginError:
    """The one-line error for a refused request (status >= 400)."""
    doc = _doc(data)
    message = str(doc.get("message") or data.decode(errors="replace").strip() or f"HTTP {status}")
    where = f' in namespace "{namespace}"' if namespace else ""
    what = f'{resource.kind} "{name}"' if name else resource.display
    if status == 404:
        details = doc.get("details") if isinstance(doc.get("details"), dict) else {}
        if name and details.get("name") == name:
            return NotFound(f"{what} not found{where}")
        # No object name in the answer: the URL itself is unknown, i.e. the resource type.
        return NotFound(
            f"the API server does not serve {resource.display} ({resource.api_version}): "
            f"is the {resource.kind} CRD installed?"
        )
    if status == 403:
        # "<what> is forbidden: User "x" cannot get resource "y" in API group "z" in the namespace "n""
        why = message.split(" is forbidden: ", 1)[-1]
        return Forbidden(f"not allowed to {verb} {what}{where}: {why}")
    if status == 401:
        return PluginError(f"unauthorized: the API server rejected the credentials ({message})")
    if status == 409:
        return PluginError(f"conflict on {what}{where}: {message}")
    if status == 422:
        return PluginError(f"invalid {what}{where}: {message}")
    return PluginError(f"{verb} {what}{where} failed: HTTP {status}: {message}")


def _kubeconfig_files(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    env = os.environ.get("KUBECONFIG")
    paths = env.split(os.pathsep) if env else [KUBE_CONFIG_DEFAULT_LOCATION]
    return [p for p in (os.path.expanduser(p) for p in paths) if p]


@dataclass
class Connection:
    api: kubernetes.client.ApiClient
    server: str
    namespace: str  # the context's namespace, else "default"


def connect(flags: KubeFlags) -> Connection:
    """An API client from ``--kubeconfig``/``$KUBECONFIG``/``~/.kube/config`` and ``--context``
    (in a pod without a kubeconfig: the service account), with ``--as``/``--as-group``."""
    configuration = kubernetes.client.Configuration()
    files = _kubeconfig_files(flags.kubeconfig)
    existing = [f for f in files if os.path.isfile(f)]
    namespace = "default"
    if flags.kubeconfig and not existing:
        raise PluginError(f"kubeconfig {flags.kubeconfig} does not exist")
    if not existing:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not flags.context:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException as exc:
                raise PluginError(f"no kubeconfig and no usable in-cluster config: {exc}") from None
            ns_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
            if os.path.isfile(ns_file):
                with open(ns_file) as f:
                    namespace = f.read().strip() or namespace
        else:
            raise PluginError(
                f"no kubeconfig: none of {', '.join(files)} exists (use --kubeconfig or set KUBECONFIG)"
            )
    else:
        config_file = os.pathsep.join(existing) if not flags.kubeconfig else flags.kubeconfig
        try:
            kubernetes.config.load_kube_config(
                config_file=config_file, context=flags.context, client_configuration=configuration
            )
            _, active = kubernetes.config.list_kube_config_contexts(config_file=config_file)
            if flags.context:
                contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=config_file)
                active = next((c for c in contexts if c.get("name") == flags.context), active)
            namespace = (active or {}).get("context", {}).get("namespace") or namespace
        except kubernetes.config.ConfigException as exc:
            raise PluginError(f"kubeconfig {config_file}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise PluginError(f"cannot read kubeconfig {config_file}: {exc}") from None
    configuration.retries = 1
    api = kubernetes.client.ApiClient(configuration)
    if flags.user:
        api.set_default_header("Impersonate-User", flags.user)
    if flags.group:
        api.set_default_header("Impersonate-Group", flags.group)
    return Connection(api, str(configuration.host), namespace)


REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)


class Kube:
    """Raw JSON requests with one-line errors."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.api = conn.api

    def close(self) -> None:
        self.api.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: Any = REQUEST_TIMEOUT,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
        except ApiException as exc:  # TLS failures and the client's own refusals
            raise Unreachable(
                f"cannot talk to the Kubernetes API server at {self.conn.server}: {exc.reason or exc}"
            ) from None
        except Exception as exc:  # urllib3: connection refused, timeouts, TLS, name resolution
            if isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3"):
                cause = _root_cause(exc)
                if "SSL" in cause or "certificate" in cause:
                    raise Unreachable(
                        f"TLS with the Kubernetes API server at {self.conn.server} failed: {cause}"
                    ) from None
                raise Unreachable(
                    f"cannot reach the Kubernetes API server at {self.conn.server}: {cause}"
                ) from None
            raise
        if response.status == 401:
            raise PluginError(
                f"unauthorized: the Kubernetes API server at {self.conn.server} rejected the credentials "
                "of this kubeconfig context"
            )
        return response

    def request(
        self,
        verb: str,
        resource: Kind,
        method: str,
        namespace: str | None,
        name: str | None = None,
        *,
        sub: str | None = None,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> JsonDict:
        response = self._send(
            method, resource.path(namespace, name, sub), query=query, body=body, content_type=content_type
        )
        data = response.read() or b""
        if response.status >= 400:
            raise api_error(
                response.status, data, verb=verb, resource=resource, namespace=namespace, name=name
            )
        return _doc(data)

    def get(self, resource: Kind, namespace: str, name: str) -> JsonDict:
        return self.request("get", resource, "GET", namespace, name)

    def list(
        self, resource: Kind, namespace: str | None, *, label_selector: str = "", field_selector: str = ""
    ) -> list[JsonDict]:
        """Every item (all namespaces when ``namespace`` is None), following ``continue``."""
        items: list[JsonDict] = []
        token = ""
        while True:
            query = [("limit", "500")]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            doc = self.request("list", resource, "GET", namespace, query=query)
            items += doc.get("items") or []
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def merge_patch(self, resource: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        return self.request(
            "patch",
            resource,
            "PATCH",
            namespace,
            name,
            body=dict(patch),
            content_type="application/merge-patch+json",
        )

    def create(self, resource: Kind, namespace: str, manifest: Mapping[str, Any]) -> JsonDict:
        name = manifest["metadata"]["name"]
        response = self._send(
            "POST",
            resource.path(namespace),
            query=[("fieldManager", "kubectl-vestige")],
            body=dict(manifest),
            content_type="application/json",
        )
        data = response.read() or b""
        if response.status >= 400:
            err = api_error(
                response.status, data, verb="create", resource=resource, namespace=namespace, name=name
            )
            if response.status == 404:  # a POST to a collection: only the type can be missing
                err = NotFound(
                    f"the {resource.kind} CRD ({resource.display}) is not installed in this cluster "
                    f"(server {self.conn.server})"
                )
            elif response.status == 409:
                err = PluginError(f'{resource.kind} "{name}" already exists in namespace "{namespace}"')
            raise err
        return _doc(data)

    def stream(
        self, verb: str, resource: Kind, namespace: str, name: str, sub: str, query: list[tuple[str, str]]
    ) -> Iterator[bytes]:
        """Chunks of a streaming GET (pod logs); errors raised before the first chunk."""
        response = self._send(
            "GET", resource.path(namespace, name, sub), query=query, timeout=(REQUEST_TIMEOUT[0], None)
        )
        raw = response.response
        if response.status >= 400:
            data = response.read() or b""
            raise api_error(
                response.status, data, verb=verb, resource=resource, namespace=namespace, name=name
            )
        try:
            yield from raw.stream(4096, decode_content=True)
        finally:
            raw.release_conn()


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a urllib3 error chain ("Connection refused", "timed out", ...)."""
    reason: Any = exc
    while getattr(reason, "reason", None) is not None and reason.reason is not reason:
        reason = reason.reason
    text = str(reason)
    # urllib3: "<urllib3.connection.HTTPSConnection object at 0x..>: Failed to establish a new
    # connection: [Errno 111] Connection refused"
    if "Failed to establish a new connection: " in text:
        text = text.split("Failed to establish a new connection: ", 1)[1]
    return text
