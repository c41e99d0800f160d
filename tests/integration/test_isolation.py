"""Isolation and trust (issue 13) against the real local control plane: a data claim serves only
its own agent (1), other managers' list entries are not drift (5), the operator's Secret access
(6) and a failed expansion can be undone (7). The platform admission policy: test_admission.py."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.integration import operator_fixtures
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.test_install import cleanup as cleanup  # fixture: removes the install

operator_factory = operator_fixtures.operator_factory
operator_process = operator_fixtures.operator_process

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("crd_installed")]

AGENT_ID = "vestige.dev/agent-id"


# -- helpers ------------------------------------------------------------------------------------


def memory(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name},
    }
    if spec is not None:
        doc["spec"] = spec
    return doc


def apply_memory(kubectl: Kubectl, ns: str, name: str, spec: dict[str, Any] | None = None) -> None:
    kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(memory(name, spec)))


def patch_spec(kubectl: Kubectl, ns: str, name: str, patch: dict[str, Any], check: bool = True) -> Any:
    return kubectl(
        "-n", ns, "patch", "vmem", name, "--type=merge", "-p", json.dumps({"spec": patch}), check=check
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_)


def wait_settled(
    kubectl: Kubectl, ns: str, name: str, phase: str = "Ready", timeout: float = 60
) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        obj = must_get(kubectl, ns, "vmem", name)
        status = obj.get("status", {})
        if (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("phase") == phase
            and condition(obj, "Reconciling")["status"] == "False"
        ):
            return obj
        return None

    return wait_until(settled, timeout, f"vmem {ns}/{name} settled in phase {phase}")


def warning_events(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    events = json.loads(kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    return [
        e
        for e in events
        if e["involvedObject"].get("name") == name
        and e["involvedObject"].get("kind") == "VestigeMemory"
        and e.get("type") == "Warning"
    ]


def resync_lines(op: OperatorProcess) -> list[dict[str, Any]]:
    return [line for line in op.log_lines() if "resync" in line and "api_requests" in line]


def wait_resyncs(op: OperatorProcess, count: int) -> list[dict[str, Any]]:
    """The resync log lines of the next ``count`` resyncs (with the one before them first)."""
    seen = len(resync_lines(op))
    wait_until(lambda: len(resync_lines(op)) >= seen + count, (count + 1) * op.resync_seconds + 10, "resyncs")
    return resync_lines(op)[max(seen - 1, 0) :]


def claim_applies(op: OperatorProcess, ns: str, claim: str) -> list[str]:
    target = f"applying PersistentVolumeClaim {ns}/{claim}"
    return [line["message"] for line in op.log_lines() if target in line.get("message", "")]


def pods_mounting(kubectl: Kubectl, ns: str, claim: str) -> list[str]:
    pods = json.loads(kubectl("-n", ns, "get", "pods", "-o", "json").stdout)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") == claim
            for v in p["spec"].get("volumes", [])
        )
    ]


# -- 1. a data claim serves only the agent it was created for -----------------------------------


def test_a_retained_claim_is_never_mounted_for_another_agent(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "alice", {"agentId": "agent-a"})
    wait_settled(kubectl, namespace, "alice")
    claim = must_get(kubectl, namespace, "pvc", "alice-data")

    # Delete (Retain keeps the claim) and create the same name for another agent.
    kubectl("-n", namespace, "delete", "vmem", "alice", "--wait=true", "--timeout=60s")
    wait_until(lambda: get(kubectl, namespace, "deployment", "alice") is None, 60, "GC of the Deployment")
    wait_until(lambda: not pods_mounting(kubectl, namespace, "alice-data"), 60, "the old pod to go")
    applied_before = len(claim_applies(operator_process, namespace, "alice-data"))
    apply_memory(kubectl, namespace, "alice", {"agentId": "agent-b"})
    stalled = wait_settled(kubectl, namespace, "alice", phase="Failed")
    cond = condition(stalled, "Stalled")
    assert cond["status"] == "True" and cond["reason"] == "VolumeOwnedByOtherAgent", cond
    assert "agent-a" in cond["message"] and "agent-b" in cond["message"]
    assert condition(stalled, "StorageReady")["reason"] == "VolumeOwnedByOtherAgent"
    assert "storage" not in stalled["status"]  # the other agent's capacity is not reported either

    wait_resyncs(operator_process, 2)  # it stays so, and the Event is not repeated
    assert get(kubectl, namespace, "deployment", "alice") is None
    assert not pods_mounting(kubectl, namespace, "alice-data")
    after = must_get(kubectl, namespace, "pvc", "alice-data")
    assert after["metadata"]["uid"] == claim["metadata"]["uid"]
    # The claim records the agent it was made for (annotation: the record; label: to select by).
    assert claim["metadata"]["annotations"][AGENT_ID] == "agent-a"
    assert claim["metadata"]["labels"][AGENT_ID] == "agent-a"
    assert after["metadata"]["annotations"][AGENT_ID] == "agent-a"  # never re-stamped
    assert after["spec"]["resources"] == claim["spec"]["resources"]
    assert len(claim_applies(operator_process, namespace, "alice-data")) == applied_before  # not applied
    events = [
        e for e in warning_events(kubectl, namespace, "alice") if e["reason"] == "VolumeOwnedByOtherAgent"
    ]
    assert len(events) == 1 and events[0].get("count", 1) == 1, events

    # The same agent again (same name, same agentId) re-adopts its memory.
    kubectl("-n", namespace, "delete", "vmem", "alice", "--wait=true", "--timeout=60s")
    apply_memory(kubectl, namespace, "alice", {"agentId": "agent-a"})
    wait_settled(kubectl, namespace, "alice")
    dep = must_get(kubectl, namespace, "deployment", "alice")
    assert dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "alice-data"
    assert must_get(kubectl, namespace, "pvc", "alice-data")["metadata"]["uid"] == claim["metadata"]["uid"]


def test_objects_of_a_childs_name_the_operator_did_not_create_are_never_taken_over(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    """Issue 21 (1): a Service, NetworkPolicy and Ingress that exist with a child's name and no
    operator labels (the label-filtered caches do not see them) are not modified, adopted or
    deleted; the resource stalls naming each one, with one Warning Event."""
    theirs = {"app": "theirs"}
    foreign = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "f", "labels": theirs},
            "spec": {"selector": theirs, "ports": [{"port": 80}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "f", "labels": theirs},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},  # a default-deny
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "f", "labels": theirs},
            "spec": {"defaultBackend": {"service": {"name": "other", "port": {"number": 80}}}},
        },
    ]
    before = {}
    for obj in foreign:
        kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(obj))
        before[obj["kind"]] = must_get(kubectl, namespace, obj["kind"].lower(), "f")
    apply_memory(kubectl, namespace, "f", {"ingress": {"enabled": True, "host": "f.example.com"}})
    stalled = wait_settled(kubectl, namespace, "f", phase="Failed")
    cond = condition(stalled, "Stalled")
    assert cond["status"] == "True" and cond["reason"] == "ChildNotOwned", cond
    for kind in before:
        assert f"{kind} f exists and is not owned by this VestigeMemory" in cond["message"]
    assert must_get(kubectl, namespace, "deployment", "f")["metadata"]["ownerReferences"][0]["name"] == "f"

    wait_resyncs(operator_process, 2)
    for kind, obj in before.items():
        now = must_get(kubectl, namespace, kind.lower(), "f")
        assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], kind
        assert not now["metadata"].get("ownerReferences"), kind
        assert now["spec"] == obj["spec"], kind
    events = [e for e in warning_events(kubectl, namespace, "f") if e["reason"] == "ChildNotOwned"]
    assert len(events) == 1 and events[0].get("count", 1) == 1, events

    kubectl("-n", namespace, "delete", "vmem", "f", "--wait=true", "--timeout=60s")
    wait_until(lambda: get(kubectl, namespace, "deployment", "f") is None, 60, "GC of the Deployment")
    for kind, obj in before.items():
        assert must_get(kubectl, namespace, kind.lower(), "f")["metadata"]["uid"] == obj["metadata"]["uid"]


def test_a_created_child_is_owned_by_server_side_apply_so_a_dropped_field_goes(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    """Children are created (not applied, so a taken name is never taken over). The create's
    fields stay under its Update entry (no write is spent on a child that never changes) until
    the first change, which hands them to the operator's Apply entry first: a field set at
    creation and later dropped from the spec is removed from the object."""
    apply_memory(kubectl, namespace, "made", {"vestige": {"env": [{"name": "RUST_LOG", "value": "debug"}]}})
    wait_settled(kubectl, namespace, "made")

    def managers(kind: str) -> set[tuple[str, str]]:
        name = "made-data" if kind == "pvc" else "made"
        return {
            (m["manager"], m["operation"])
            for m in must_get(kubectl, namespace, kind, name)["metadata"]["managedFields"]
            if m["manager"] == "vestige-operator"
        }

    for kind in ("deployment", "service", "networkpolicy", "pvc"):
        assert managers(kind) == {("vestige-operator", "Update")}, kind
    kubectl(
        "-n", namespace, "patch", "vmem", "made", "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/vestige/env"}]),
    )  # fmt: skip
    wait_until(
        lambda: (
            "RUST_LOG"
            not in {
                e["name"]
                for e in must_get(kubectl, namespace, "deployment", "made")["spec"]["template"]["spec"][
                    "containers"
                ][0]["env"]
            }
        ),
        60,
        "the env entry set at creation to be removed",
    )
    assert managers("deployment") == {("vestige-operator", "Apply")}
    assert managers("service") == {("vestige-operator", "Update")}, "an unchanged child is not written"


def test_a_claim_without_agent_record_is_adopted_only_when_provably_its_own(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    # A running agent whose claim predates the record (an older operator made it): adopted and stamped.
    apply_memory(kubectl, namespace, "old")
    wait_settled(kubectl, namespace, "old")
    kubectl("-n", namespace, "annotate", "pvc", "old-data", f"{AGENT_ID}-")
    kubectl("-n", namespace, "label", "pvc", "old-data", f"{AGENT_ID}-")
    wait_until(
        lambda: (
            must_get(kubectl, namespace, "pvc", "old-data")["metadata"].get("annotations", {}).get(AGENT_ID)
            == "old"
        ),
        30,
        "the claim of the running agent to be stamped",
    )
    assert wait_settled(kubectl, namespace, "old")["status"]["phase"] == "Ready"

    # The running agent's claim re-stamped for another agent (someone who may edit PVCs): the
    # pod that mounts it is scaled to zero, and the resource stalls.
    kubectl("-n", namespace, "annotate", "--overwrite", "pvc", "old-data", f"{AGENT_ID}=someone-else")
    stalled = wait_settled(kubectl, namespace, "old", phase="Failed")
    assert condition(stalled, "Stalled")["reason"] == "VolumeOwnedByOtherAgent"
    wait_until(
        lambda: must_get(kubectl, namespace, "deployment", "old")["spec"]["replicas"] == 0,
        30,
        "the Deployment on the re-stamped claim to scale to zero",
    )
    wait_until(lambda: not pods_mounting(kubectl, namespace, "old-data"), 60, "no pod mounting the claim")

    # A retained claim without record and without a resource that provably used it: not mounted.
    orphan = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "orphan-data",
            "labels": {
                "app.kubernetes.io/name": "vestige",
                "app.kubernetes.io/instance": "orphan",
                "app.kubernetes.io/component": "data",
                "app.kubernetes.io/managed-by": "vestige-operator",
            },
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(orphan))
    apply_memory(kubectl, namespace, "orphan", {"storage": {"size": "1Gi"}})
    stalled = wait_settled(kubectl, namespace, "orphan", phase="Failed")
    cond = condition(stalled, "Stalled")
    assert cond["reason"] == "VolumeOwnerUnknown", cond
    assert f"kubectl annotate pvc orphan-data {AGENT_ID}=orphan" in cond["message"]
    assert get(kubectl, namespace, "deployment", "orphan") is None
    # An administrator who knows whose it is records it; then it is mounted.
    kubectl("-n", namespace, "annotate", "pvc", "orphan-data", f"{AGENT_ID}=orphan")
    wait_settled(kubectl, namespace, "orphan")
    assert must_get(kubectl, namespace, "deployment", "orphan")


# -- 5. another field manager's list entries are not drift --------------------------------------


def test_another_managers_env_entry_keeps_the_operator_idle(
    kubectl: Kubectl, namespace: str, operator_factory: operator_fixtures.OperatorFactory
) -> None:
    # The periodic cache verification (a few metadata LISTs every VESTIGE_VERIFY_RESYNCS resyncs)
    # is not what is measured here: keep it out of the window.
    operator_process = operator_factory(namespace, env={"VESTIGE_VERIFY_RESYNCS": "1000"})
    try:
        apply_memory(kubectl, namespace, "envy")
        wait_settled(kubectl, namespace, "envy")
        kubectl("-n", namespace, "set", "env", "deployment/envy", "-c", "bridge", "FOO=bar")
        kubectl("-n", namespace, "rollout", "status", "deployment/envy", "--timeout=60s")
        wait_settled(kubectl, namespace, "envy")
        wait_resyncs(operator_process, 1)  # trailing events of the rollout settle

        window = wait_resyncs(operator_process, 3)
        assert window[-1]["passes"] > window[0]["passes"], "the resyncs ran no pass"
        assert window[-1]["api_requests"] == window[0]["api_requests"], (
            "another manager's env entry made the idle operator send requests"
        )
        bridge = must_get(kubectl, namespace, "deployment", "envy")["spec"]["template"]["spec"]["containers"][
            1
        ]
        assert {"name": "FOO", "value": "bar"} in bridge["env"]  # left alone, not fought over
        applies = [
            line
            for line in operator_process.log_lines()
            if "applying Deployment" in line.get("message", "") and "drift" in line.get("message", "")
        ]
        assert not applies, applies
    finally:
        assert operator_process.stop() == 0


# -- 6. the operator reads only its own Secrets (and existingSecret ones, by name) --------------


class RecordingProxy:
    """A plain-HTTP reverse proxy on 127.0.0.1 in front of the API server (TLS upstream, verified
    with the cluster CA) that records every request line: what the operator really asks for."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.requests: list[tuple[str, str]] = []
        self.port = operator_fixtures.free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

        ssl_ctx = ssl.create_default_context(cafile=self.ca_file)
        self._session = ClientSession(
            connector=TCPConnector(ssl=ssl_ctx), timeout=ClientTimeout(total=None), auto_decompress=False
        )
        hop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests.append((request.method, request.path_qs))
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            body = await request.read()
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body or None
            ) as upstream:
                out = web.StreamResponse(
                    status=upstream.status,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in hop},
                )
                await out.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await out.write(chunk)
                    await out.write_eof()
                except (ConnectionError, ClientError):  # a watch the client (or we) closed
                    pass
                return out

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self._session.close()  # ends the open watch streams first
        await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _kubeconfig_via(proxy_url: str, token: str, path: Path) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": proxy_url}}],
        "users": [{"name": "vestige-operator", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "vestige-operator"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.usefixtures("cleanup")
def test_the_operator_reads_only_its_own_secrets(
    kubectl: Kubectl,
    kubeconfig: str,
    operator_factory: operator_fixtures.OperatorFactory,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Cluster-wide install, run as its ServiceAccount: every Secret list/watch carries the
    operator's label selector, every other Secret read is a GET of a name a resource gave."""
    kubectl("apply", "-k", str(ROOT / "manifests"))
    token = kubectl(
        "create", "token", "vestige-operator", "-n", "vestige-system", "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]
    ca_file = tmp_path / "ca.crt"
    if "certificate-authority-data" in admin:
        ca_file.write_bytes(base64.b64decode(admin["certificate-authority-data"]))
    else:
        ca_file.write_text(Path(admin["certificate-authority"]).read_text())
    kubectl("-n", namespace, "create", "secret", "generic", "bystander", "--from-literal=password=hunter2")
    kubectl(
        "-n", namespace, "create", "secret", "generic", "byo-token", "--from-literal=bearer=mine-1234567890"
    )

    with RecordingProxy(admin["server"], str(ca_file)) as proxy:
        sa_kc = _kubeconfig_via(proxy.url, token, tmp_path / "sa.kubeconfig")
        op = operator_factory(env={"KUBECONFIG": sa_kc, "VESTIGE_VERIFY_RESYNCS": "1"})
        try:
            apply_memory(kubectl, namespace, "own")
            apply_memory(
                kubectl,
                namespace,
                "byo",
                {"auth": {"existingSecret": {"name": "byo-token", "key": "bearer"}}},
            )
            wait_settled(kubectl, namespace, "own")
            wait_settled(kubectl, namespace, "byo")
            wait_resyncs(op, 2)  # resync passes and a cache verification (metadata LIST) included
        finally:
            kubectl(
                "-n", namespace, "delete", "vmem", "own", "byo", "--wait=true", "--timeout=60s", check=False
            )
            assert op.stop() == 0
        secret_requests = [(m, p) for m, p in proxy.requests if "/secrets" in urlsplit(p).path]

    print("Secret requests seen:", *sorted(set(secret_requests)), sep="\n  ")
    assert secret_requests, "the operator sent no Secret request through the proxy"
    reads_by_name: set[str] = set()
    for method, path_qs in secret_requests:
        parts = urlsplit(path_qs)
        segments = parts.path.rstrip("/").split("/")
        if segments[-1] == "secrets":  # the collection: list, watch, create
            if method == "GET":
                selectors = parse_qs(parts.query).get("labelSelector", [])
                assert selectors == ["app.kubernetes.io/managed-by=vestige-operator"], path_qs
            else:
                assert method == "POST", path_qs
        else:
            assert method == "GET", path_qs  # never update, patch or delete a Secret
            reads_by_name.add(segments[-1])
    assert "bystander" not in reads_by_name
    assert reads_by_name <= {"byo-token", "own-auth"}, reads_by_name
    assert "byo-token" in reads_by_name  # existingSecret: read by name when needed


# -- 7. a failed expansion can be undone ---------------------------------------------------------


def test_storage_size_may_go_back_down_to_the_actual_capacity_only(kubectl: Kubectl, namespace: str) -> None:
    """The CEL transition rule on the real API server (no operator: the status is written here)."""
    apply_memory(kubectl, namespace, "cel", {"storage": {"size": "5Gi"}})
    assert patch_spec(kubectl, namespace, "cel", {"storage": {"size": "10Gi"}})
    refused = patch_spec(kubectl, namespace, "cel", {"storage": {"size": "5Gi"}}, check=False)
    assert refused.returncode != 0 and "spec.storage.size" in refused.stderr, (
        refused.stderr
    )  # no capacity known
    kubectl(
        "-n", namespace, "patch", "vmem", "cel", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"storage": {"capacity": "5Gi"}}}),
    )  # fmt: skip
    below = patch_spec(kubectl, namespace, "cel", {"storage": {"size": "4Gi"}}, check=False)
    assert below.returncode != 0 and "spec.storage.size" in below.stderr, below.stderr
    assert "capacity" in below.stderr
    patch_spec(kubectl, namespace, "cel", {"storage": {"size": "5120Mi"}})  # == capacity, other unit
    assert must_get(kubectl, namespace, "vmem", "cel")["spec"]["storage"]["size"] == "5120Mi"
    patch_spec(kubectl, namespace, "cel", {"storage": {"size": "7Gi"}})  # growing stays allowed
    patch_spec(kubectl, namespace, "cel", {"storage": {"size": "6Gi"}})  # still above the capacity


@pytest.fixture
def no_expansion_class(kubectl: Kubectl) -> Iterator[str]:
    name = f"no-expand-{uuid.uuid4().hex[:6]}"
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/host-path",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }
    kubectl("apply", "-f", "-", input=json.dumps(sc))
    yield name
    kubectl("delete", "storageclass", name, "--ignore-not-found", check=False)


def test_a_refused_expansion_is_undone_and_reported(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess, no_expansion_class: str
) -> None:
    apply_memory(
        kubectl, namespace, "fixed", {"storage": {"size": "1Gi", "storageClassName": no_expansion_class}}
    )
    ready = wait_settled(kubectl, namespace, "fixed")
    assert ready["status"]["storage"]["capacity"] == "1Gi"

    patch_spec(kubectl, namespace, "fixed", {"storage": {"size": "2Gi"}})
    stalled = wait_settled(kubectl, namespace, "fixed", phase="Failed")
    assert condition(stalled, "Stalled")["reason"] == "ApplyRejected"
    assert "PersistentVolumeClaim" in condition(stalled, "Stalled")["message"]

    patch_spec(kubectl, namespace, "fixed", {"storage": {"size": "1Gi"}})  # back to the capacity
    recovered = wait_settled(kubectl, namespace, "fixed")
    assert condition(recovered, "Stalled")["status"] == "False"
    storage = condition(recovered, "StorageReady")
    assert storage["status"] == "True" and storage["reason"] == "ExpansionCancelled", storage
    assert "2Gi" in storage["message"] and "1Gi" in storage["message"]
    pvc = must_get(kubectl, namespace, "pvc", "fixed-data")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_an_expansion_the_volume_never_does_is_undone(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    """StorageClass ``standard`` allows expansion but the host-path plugin never expands."""
    apply_memory(kubectl, namespace, "grow", {"storage": {"size": "1Gi"}})
    wait_settled(kubectl, namespace, "grow")
    patch_spec(kubectl, namespace, "grow", {"storage": {"size": "3Gi"}})
    wait_until(
        lambda: (
            must_get(kubectl, namespace, "pvc", "grow-data")["spec"]["resources"]["requests"]["storage"]
            == "3Gi"
        ),
        30,
        "the claim to request 3Gi",
    )
    pending = wait_settled(kubectl, namespace, "grow")
    assert condition(pending, "StorageReady")["reason"] == "ResizePending"

    patch_spec(kubectl, namespace, "grow", {"storage": {"size": "1Gi"}})
    recovered = wait_settled(kubectl, namespace, "grow")
    storage = condition(recovered, "StorageReady")
    assert storage["reason"] == "ExpansionCancelled", storage
    assert "expansion to 3Gi did not happen" in storage["message"]
    # Kubernetes refuses a claim request back down to exactly its capacity: the claim keeps
    # requesting 3Gi (harmless: the volume has the 1Gi the spec asks for), and the status says so.
    assert "the claim keeps requesting 3Gi" in storage["message"]
    pvc = must_get(kubectl, namespace, "pvc", "grow-data")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert condition(recovered, "Stalled")["status"] == "False"
    # Back down to above the capacity is what the claim accepts: it is applied.
    patch_spec(kubectl, namespace, "grow", {"storage": {"size": "2Gi"}})
    wait_until(
        lambda: (
            must_get(kubectl, namespace, "pvc", "grow-data")["spec"]["resources"]["requests"]["storage"]
            == "2Gi"
        ),
        30,
        "the claim to request 2Gi",
    )
    assert condition(wait_settled(kubectl, namespace, "grow"), "Stalled")["status"] == "False"
