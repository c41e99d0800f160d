"""One benchmark session against the shared local cluster: its own namespace, an operator
subprocess authenticated as its own ServiceAccount (so FlowSchemas can attribute every request
it makes), N VestigeMemory resources created at a bounded concurrency, a watch that timestamps
when each becomes Ready, and the floor (the same children and statuses applied directly).

Everything created here is deleted at the end (namespaces, the FlowSchemas and the cluster-scoped
RBAC objects, all named ``vestige-bench-<id>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vestige_operator import GROUP, KIND, PLURAL, VERSION
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.caches import trim
from vestige_operator.children import render_children, render_secret, token_hash
from vestige_operator.cluster import KINDS
from vestige_operator.status import Observation, compute_status
from vestige_operator.vocabulary import LABEL_INSTANCE, Images, Owner

from tests.bench.kube import (
    ROOT,
    ClusterInfo,
    JsonDict,
    Kube,
    KubeError,
    create_namespace,
    delete_namespace,
    dispatched_by_flow_schema,
    refused,
    shared_cluster,
)
from tests.cluster import kubectl_binary

IMAGES = Images(
    vestige="example.org/vestige:3.0.0",
    bridge="example.org/vestige-bridge:0.1.0",
    litestream="example.org/litestream:0.5.18",
)
#: The operator's default VESTIGE_MAX_CONCURRENT_RECONCILES: the client concurrency of both runs.
CONCURRENCY = 8
FLOW_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
SA_NAME = "bench-operator"
#: Every benchmark resource: the defaults except small resource requests, so that 1000 pods fit on
#: the kwok node (1Ti allocatable; the default requests, 640Mi a pod, would stop at ~1,600) and
#: leave room for the other users of the shared cluster.
SPEC: JsonDict = {
    "vestige": {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}},
    "bridge": {"resources": {"requests": {"cpu": "5m", "memory": "32Mi"}}},
}
MEMORIES = f"/apis/{GROUP}/{VERSION}"
#: How often a wait re-checks that its run can still succeed.
CHECK_SECONDS = 0.5


class HarnessError(RuntimeError):
    """The benchmark cannot produce a result (not a slow run): reported at once."""


#: What a FailedScheduling event says when the simulated node is full (no retry helps); the
#: transient ones (a claim not bound yet) do not match.
_NO_ROOM = ("Too many pods", "Insufficient cpu", "Insufficient memory")
#: How often the scheduler's events are read (one filtered LIST).
SCHEDULING_CHECK_SECONDS = 10.0


class SchedulingCheck:
    """Raises once a pod of ``namespace`` cannot be scheduled for want of room on the node: the
    run would wait out its timeout otherwise (5,000 agents on a node sized for 2,000 did)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._next = 0.0

    def __call__(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + SCHEDULING_CHECK_SECONDS
        events = self.kube.request(
            "GET", f"/api/v1/namespaces/{self.namespace}/events?fieldSelector=reason%3DFailedScheduling"
        )
        for event in events.get("items") or []:
            message = str(event.get("message") or "")
            if any(reason in message for reason in _NO_ROOM):
                raise HarnessError(
                    f"pods of {self.namespace} cannot be scheduled (the simulated node is full: raise its "
                    f"capacity in tests/cluster/launcher.py): {message[:300]}"
                )


def checks(*each: Callable[[], None]) -> Callable[[], None]:
    """One check running ``each`` in turn (for ``ReadyTracker.wait_all``)."""

    def check() -> None:
        for one in each:
            one()

    return check


def memories_path(ns: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"{MEMORIES}/namespaces/{ns}/{PLURAL}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def ensure_crd(kubeconfig: str) -> None:
    """Apply the CRD the way the test fixture does (same field manager: no conflict)."""
    kubectl = [kubectl_binary(), f"--kubeconfig={kubeconfig}"]
    for crd in sorted((ROOT / "crds").glob("vestige.dev_*.yaml")):
        subprocess.run(
            [
                *kubectl,
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=vestige-tests",
                "-f",
                crd,
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}"],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def bench_cluster() -> Iterator[tuple[ClusterInfo, Kube]]:
    """The running local cluster, a client for it and the CRD installed; the client closed after."""
    info = shared_cluster()
    kube = Kube(info.kubeconfig)
    try:
        ensure_crd(info.kubeconfig)
        yield info, kube
    finally:
        kube.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- identity and request attribution --------------------------------------------------------------


@dataclass
class Identity:
    """A ServiceAccount for the operator, its RBAC and one FlowSchema per verb matching only it."""

    kube: Kube
    info: ClusterInfo
    namespace: str
    run_id: str
    kubeconfig: Path
    flow_schemas: dict[str, str] = field(default_factory=dict)  # flow schema name -> verb

    @property
    def prefix(self) -> str:
        return f"vestige-bench-{self.run_id}"

    def setup(self) -> None:
        k, ns = self.kube, self.namespace
        k.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": SA_NAME}})
        subject = [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": ns}]
        # All rights inside its own namespace only; CRD discovery cluster-wide (kopf needs it).
        k.create(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "metadata": {"name": SA_NAME},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": subject,
            },
        )
        k.create(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            {
                "metadata": {"name": "vestige"},
                "rules": [
                    {"apiGroups": [GROUP], "resources": ["*"], "verbs": ["*"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                    # The leader Lease (bench_failover runs two replicas with leader election).
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
                ],
            },
        )
        k.create(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "metadata": {"name": "vestige"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vestige"},
                "subjects": subject,
            },
        )
        k.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {
                "metadata": {"name": self.prefix},
                "rules": [
                    {
                        "apiGroups": ["apiextensions.k8s.io"],
                        "resources": ["customresourcedefinitions"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
                ],
            },
        )
        k.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": self.prefix},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": self.prefix,
                },
                "subjects": subject,
            },
        )
        sa_subject = [{"kind": "ServiceAccount", "serviceAccount": {"name": SA_NAME, "namespace": ns}}]
        for verb in (*FLOW_VERBS, "nonresource"):
            rule: JsonDict = {"subjects": sa_subject}
            if verb == "nonresource":
                rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
            else:
                rule["resourceRules"] = [
                    {
                        "verbs": [verb],
                        "apiGroups": ["*"],
                        "resources": ["*"],
                        "namespaces": ["*"],
                        "clusterScope": True,
                    }
                ]
            name = f"{self.prefix}-{verb}"
            k.create(
                "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
                {
                    "metadata": {"name": name},
                    "spec": {
                        # Same priority level as the default "service-accounts" schema.
                        "priorityLevelConfiguration": {"name": "workload-low"},
                        "matchingPrecedence": 500,
                        "distinguisherMethod": {"type": "ByUser"},
                        "rules": [rule],
                    },
                },
            )
            self.flow_schemas[name] = verb
        self._wait_flow_schemas()
        self._write_kubeconfig()

    def _wait_flow_schemas(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.flow_schemas)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                fs = self.kube.get(f"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{name}") or {}
                conds = (fs.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Dangling" and c.get("status") == "False" for c in conds):
                    pending.discard(name)
            time.sleep(0.2)
        time.sleep(1.0)  # the APF config controller has seen them; let the dispatcher switch

    def _write_kubeconfig(self) -> None:
        token = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{SA_NAME}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 4 * 3600},
            },
            content_type="application/json",
        )["status"]["token"]
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.info.server,
                        "certificate-authority": str(self.info.pki_dir / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": SA_NAME, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {"cluster": "local", "user": SA_NAME, "namespace": self.namespace},
                }
            ],
            "current-context": "local",
        }
        self.kubeconfig.write_text(json.dumps(doc))
        self.kubeconfig.chmod(0o600)

    def wait_watching(
        self, watches: int, timeout: float = 60, check: Callable[[], None] | None = None
    ) -> None:
        """Wait until the operator has opened ``watches`` watches (its caches are being filled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.by_verb(dispatched_by_flow_schema(self.kube.metrics())).get("watch", 0) >= watches:
                return
            if check is not None:
                check()
            time.sleep(0.25)
        raise RuntimeError(f"the operator did not open {watches} watches within {timeout:.0f}s")

    def by_verb(self, dispatched: Counter[str]) -> dict[str, int]:
        """The operator's requests by verb, from the API server's APF dispatch counters."""
        return {verb: int(dispatched.get(name, 0)) for name, verb in self.flow_schemas.items()}

    def teardown(self) -> None:
        k = self.kube
        for name in self.flow_schemas:
            with contextlib.suppress(KubeError):
                k.delete(f"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{name}")
        with contextlib.suppress(KubeError):
            k.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{self.prefix}")
        with contextlib.suppress(KubeError):
            k.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{self.prefix}")
        with contextlib.suppress(OSError):
            self.kubeconfig.unlink()


# -- readiness ---------------------------------------------------------------------------------------


def is_ready(obj: JsonDict) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class ReadyTracker:
    """Watches the VestigeMemory resources of a namespace; when each first became Ready."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._refused: str | None = None
        listing = kube.request("GET", memories_path(namespace))
        self._thread = threading.Thread(
            target=kube.watch,
            args=(
                memories_path(namespace),
                listing["metadata"]["resourceVersion"],
                self._on_event,
                self._stop,
            ),
            kwargs={"on_error": self._on_watch_error},
            daemon=True,
        )
        self._thread.start()

    def _on_watch_error(self, exc: Exception) -> None:
        if refused(exc):
            with self._lock:
                self._refused = f"the watch of {memories_path(self.namespace)} was refused: {exc}"
                self._lock.notify_all()

    def _on_event(self, type_: str, obj: JsonDict) -> None:
        if type_ == "DELETED" or not is_ready(obj):
            return
        with self._lock:
            self.ready_at.setdefault(obj["metadata"]["name"], time.monotonic())
            self._lock.notify_all()

    def wait_all(self, n: int, timeout: float, check: Callable[[], None] | None = None) -> bool:
        """Wait until ``n`` resources were Ready; ``check`` runs every CHECK_SECONDS and raises
        when the run can no longer succeed (a harness error, the operator gone), so that the
        failure is reported at once rather than after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.ready_at) < n:
                if self._refused is not None:
                    raise HarnessError(self._refused)
                if check is not None:
                    check()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, CHECK_SECONDS))
            return True

    def stop(self) -> None:
        self._stop.set()


def memory_name(i: int) -> str:
    return f"agent-{i:04d}"


def create_memories(kube: Kube, namespace: str, n: int, on_created: Any = None) -> tuple[float, float]:
    """Create ``n`` minimal VestigeMemory resources with CONCURRENCY client threads.

    ``on_created(body)`` runs in the creating thread after each creation. (start, end) monotonic."""

    def one(i: int) -> None:
        body = kube.create(
            memories_path(namespace),
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": memory_name(i)},
                "spec": SPEC,
            },
        )
        if on_created is not None:
            on_created(body)

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="create") as pool:
        for future in [pool.submit(one, i) for i in range(n)]:
            future.result()
    return started, time.monotonic()


# -- the operator under test -------------------------------------------------------------------------


@dataclass
class OperatorUnderTest:
    proc: subprocess.Popen[bytes]
    log_path: Path
    liveness_url: str
    resync_seconds: float

    @classmethod
    def start(
        cls,
        kubeconfig: Path,
        namespace: str,
        resync_seconds: float,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> OperatorUnderTest:
        """``extra_env`` adds to (or overrides) the operator's environment (leader election)."""
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "VESTIGE_RESYNC_SECONDS": str(resync_seconds),
            "VESTIGE_LOG_FORMAT": "json",
            "VESTIGE_DEFAULT_IMAGE": IMAGES.vestige,
            "VESTIGE_BRIDGE_IMAGE": IMAGES.bridge,
            "VESTIGE_METRICS_PORT": "0",
            **(extra_env or {}),
        }
        argv = [
            sys.executable,
            "-m",
            "vestige_operator",
            "run",
            f"--namespace={namespace}",
            "--liveness",
            liveness,
        ]
        log = log_path.open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        op = cls(proc, log_path, liveness, resync_seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"operator exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                op.probe()
                return op
            except OSError:
                time.sleep(0.2)
        op.stop()
        raise RuntimeError("operator did not become live within 60s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def probe(self) -> JsonDict:
        """The operator's counters (kopf caches probe results for 10 s; the resync log is exact)."""
        with urllib.request.urlopen(self.liveness_url, timeout=5) as resp:
            return dict(json.loads(resp.read())["reconciler"])

    def resync_lines(self) -> list[JsonDict]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and "resync" in line:
                    out.append(line)
        return out

    def wait_resync(self, after: int, timeout: float) -> JsonDict:
        """The first resync log line numbered greater than ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.resync_lines():
                if int(line["resync"]) > after:
                    return line
            self.check_running()
            time.sleep(0.2)
        raise RuntimeError(f"no resync after #{after} within {timeout:.0f}s")

    def check_running(self) -> None:
        """Raise at once when the operator process has exited (its log's tail says why)."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise HarnessError(f"the operator exited with {self.proc.returncode}:\n{tail}")

    def warnings(self) -> list[str]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and str(
                    line.get("severity", line.get("levelname", ""))
                ).lower() in (
                    "warning",
                    "error",
                ):
                    out.append(str(line.get("message", ""))[:300])
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


# -- the floor ---------------------------------------------------------------------------------------


class Floor:
    """The operator's work without the operator: for every created VestigeMemory, create its token
    Secret and server-side apply the children rendered by ``vestige_operator.children``; watch
    the Deployments and PVCs, and once ``compute_status`` says Ready, server-side apply that status.
    All writes go through one pool of CONCURRENCY threads, like the operator's."""

    FIELD_MANAGER = "vestige-bench-floor"

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="floor")
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[Owner, VestigeMemorySpec, int]] = {}
        self._seen: dict[tuple[str, str], JsonDict] = {}  # (kind, instance) -> trimmed object
        self._status_sent: set[str] = set()
        self._futures: list[Future[None]] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._threads = []
        selector = "app.kubernetes.io/managed-by=vestige-operator"
        for kind in ("Deployment", "PersistentVolumeClaim"):
            path = KINDS[kind].path(namespace)
            rv = kube.request("GET", path, query=[("labelSelector", selector)])["metadata"]["resourceVersion"]
            t = threading.Thread(
                target=kube.watch,
                args=(path, rv, lambda typ, obj, kind=kind: self._on_child(kind, typ, obj), self._stop),
                kwargs={"label_selector": selector, "on_error": self._on_watch_error},
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def on_created(self, body: JsonDict) -> None:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        spec = VestigeMemorySpec.model_validate(body.get("spec") or {})
        with self._lock:
            self._owners[owner.name] = (owner, spec, int(meta.get("generation") or 1))
            self._futures.append(self.pool.submit(self._children, owner, spec))

    def _on_watch_error(self, exc: Exception) -> None:
        if refused(exc):
            with self._lock:
                self._errors.append(f"watch: {exc}")

    def _count(self, what: str) -> None:
        with self._lock:
            self.requests[what] += 1

    def _children(self, owner: Owner, spec: VestigeMemorySpec) -> None:
        try:
            # The agents' token and Vestige's internal token, as the operator creates them; the pod
            # template carries the hash of the internal one.
            vestige_token = secrets.token_urlsafe(32)
            secret = render_secret(owner, secrets.token_urlsafe(32), vestige_token)
            self._count("create")
            self.kube.create(KINDS["Secret"].path(owner.namespace), secret, self.FIELD_MANAGER)
            desired = render_children(owner, spec, IMAGES, token_hash(vestige_token.encode()))
            for manifest in desired.apply:
                self._count("apply")
                result = self.kube.apply(
                    KINDS[manifest["kind"]].path(owner.namespace, manifest["metadata"]["name"]),
                    manifest,
                    self.FIELD_MANAGER,
                )
                if manifest["kind"] in ("Deployment", "PersistentVolumeClaim"):
                    self._on_child(manifest["kind"], "APPLIED", result)
        except Exception as exc:  # recorded and reported; a floor that failed is not a floor
            with self._lock:
                self._errors.append(f"{owner.name}: {exc}")

    def _on_child(self, kind: str, type_: str, obj: JsonDict) -> None:
        if type_ == "DELETED":
            return
        instance = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_INSTANCE)
        if not instance:
            return
        with self._lock:
            self._seen[(kind, instance)] = trim(obj)
            if instance in self._status_sent or instance not in self._owners:
                return
            deployment = self._seen.get(("Deployment", instance))
            pvc = self._seen.get(("PersistentVolumeClaim", instance))
            if deployment is None or pvc is None:
                return
            owner, spec, generation = self._owners[instance]
            obs = Observation(generation=generation, pvc=pvc, deployment=deployment)
            status = compute_status(owner, spec, obs, {}, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if status.get("phase") != "Ready":
                return
            self._status_sent.add(instance)
            self._futures.append(self.pool.submit(self._status, owner, status))

    def _status(self, owner: Owner, status: JsonDict) -> None:
        try:
            self._count("apply_status")
            self.kube.apply(
                memories_path(owner.namespace, owner.name, "status"),
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "metadata": {"name": owner.name, "namespace": owner.namespace},
                    "status": status,
                },
                self.FIELD_MANAGER,
            )
        except Exception as exc:
            with self._lock:
                self._errors.append(f"{owner.name} status: {exc}")

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def check(self) -> None:
        """Raise at once when a write failed: a floor that failed is not a floor."""
        errors = self.errors
        if errors:
            raise HarnessError(f"floor: {len(errors)} write(s) failed, first: {errors[:3]}")

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- namespaces ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_namespace(kube: Kube, tag: str, run_id: str, timings: dict[str, float]) -> Iterator[str]:
    """A fresh namespace ``vb-<tag>-<id>``; deleted (and waited for) on exit."""
    ns = f"vb-{tag}-{run_id}"
    create_namespace(kube, ns)
    try:
        yield ns
    finally:
        timings[f"delete_namespace_{tag}_s"] = round(delete_namespace(kube, ns), 1)


def new_run_id() -> str:
    return secrets.token_hex(3)


def rv_snapshot(kube: Kube, namespace: str) -> dict[str, dict[str, str]]:
    """kind -> {name: resourceVersion} of everything in the namespace the benchmark cares about."""
    paths = {
        KIND: memories_path(namespace),
        "Secret": KINDS["Secret"].path(namespace),
        "PersistentVolumeClaim": KINDS["PersistentVolumeClaim"].path(namespace),
        "Deployment": KINDS["Deployment"].path(namespace),
        "Service": KINDS["Service"].path(namespace),
        "NetworkPolicy": KINDS["NetworkPolicy"].path(namespace),
        "ReplicaSet": f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        "Pod": f"/api/v1/namespaces/{namespace}/pods",
    }
    out = {}
    for kind, path in paths.items():
        items = kube.request("GET", path)["items"]
        out[kind] = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
    return out


def rv_changes(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, int]:
    out = {}
    for kind in before:
        a, b = after.get(kind, {}), before[kind]
        out[kind] = sum(1 for name in set(a) | set(b) if a.get(name) != b.get(name))
    return out


__all__ = [
    "CONCURRENCY",
    "Floor",
    "HarnessError",
    "Identity",
    "OperatorUnderTest",
    "ReadyTracker",
    "bench_namespace",
    "create_memories",
    "ensure_crd",
    "new_run_id",
    "rv_changes",
    "rv_snapshot",
]
