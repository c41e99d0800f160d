"""Helpers for tests on the real node: agents as VestigeMemory resources placed on it, their
pods, ``kubectl port-forward`` to their Services, exec, and containerd's view of a container."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests import cluster
from tests.cluster import images as image_builds
from tests.cluster import launcher, node
from tests.integration.helpers import wait_until
from tests.integration.operator_fixtures import OperatorFactory, OperatorProcess

#: First start of an agent on this node: image already imported, so seconds, not the 15 minutes
#: of a first model download; generous because the machine is small and shared.
READY_TIMEOUT = 240.0


@dataclass
class RealNode:
    state: cluster.ClusterState
    layout: node.Layout
    kubeconfig: str

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120):
        proc = launcher.run_kubectl(self.kubeconfig, *args, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get(self, ns: str, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("-n", ns, "get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl(
            "apply", "--server-side", "--field-manager=vestige-tests", "-f", "-", input=json.dumps(obj)
        )

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ctr", "-a", str(self.layout.containerd_sock), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {proc.stderr}")
        return proc


@dataclass
class PortForward:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def port_forward(rn: RealNode, ns: str, target: str, remote: int = 8000) -> Iterator[PortForward]:
    """``kubectl port-forward <target> :<remote>`` on 127.0.0.1; yields once it listens."""
    proc = subprocess.Popen(
        [
            cluster.kubectl_binary(),
            f"--kubeconfig={rn.kubeconfig}",
            "-n",
            ns,
            "port-forward",
            "--address=127.0.0.1",
            target,
            f":{remote}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"port-forward to {ns}/{target} did not start: {line}{proc.stderr.read()}")
    pf = PortForward(proc, int(found.group(1)))
    try:
        yield pf
    finally:
        pf.close()


@dataclass
class Agent:
    name: str
    namespace: str
    rn: RealNode

    def resource(self) -> dict[str, Any]:
        obj = self.rn.get(self.namespace, "vestigememory", self.name)
        assert obj is not None, f"VestigeMemory {self.name} is gone"
        return obj

    def token(self) -> str:
        ref = self.resource()["status"]["authSecretRef"]
        secret = self.rn.get(self.namespace, "secret", ref["name"])
        assert secret is not None
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    def pod(self) -> dict[str, Any]:
        proc = self.rn.kubectl(
            "-n",
            self.namespace,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=memory",
            "-o",
            "json",
        )
        pods = [p for p in json.loads(proc.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, f"expected one pod of {self.name}, found {len(pods)}"
        return pods[0]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.resource()
            conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            return obj if conds.get("Ready", {}).get("status") == "True" else None

        try:
            return wait_until(ready, timeout=timeout, what=f"{self.name} Ready", interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """Pod status, events and container logs: what a failed wait shows."""
        out = [json.dumps(self.resource().get("status", {}), indent=1)[:3000]]
        pods = self.rn.kubectl(
            "-n", self.namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={self.name}", "-o", "json"
        )
        for pod in json.loads(pods.stdout)["items"]:
            out.append(json.dumps(pod.get("status", {}), indent=1)[:4000])
            containers = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
            for c in containers:
                for previous in ((), ("--previous",)):  # a restarted container's last run says why
                    logs = self.rn.kubectl(
                        "-n",
                        self.namespace,
                        "logs",
                        pod["metadata"]["name"],
                        "-c",
                        c["name"],
                        "--tail=40",
                        *previous,
                        check=False,
                    )
                    if logs.stdout or not previous:
                        label = f"{c['name']}{' (previous)' if previous else ''}"
                        out.append(f"--- logs {label}:\n{logs.stdout[-3000:]}{logs.stderr[-500:]}")
        events = self.rn.kubectl(
            "-n", self.namespace, "get", "events", "--sort-by=.lastTimestamp", check=False
        )
        out.append(events.stdout[-3000:])
        return "\n".join(out)

    def restart_counts(self) -> dict[str, int]:
        statuses = self.pod()["status"].get("containerStatuses", [])
        return {s["name"]: int(s.get("restartCount", 0)) for s in statuses}

    def container_id(self, container: str) -> str:
        for s in self.pod()["status"].get("containerStatuses", []):
            if s["name"] == container:
                return str(s["containerID"]).split("://", 1)[1]
        raise AssertionError(f"no container {container} in {self.name}'s pod")

    def exec(self, container: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        pod = self.pod()["metadata"]["name"]
        return self.rn.kubectl("-n", self.namespace, "exec", pod, "-c", container, "--", *cmd, check=check)

    @contextlib.contextmanager
    def client(self, token: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client to the agent's bridge through ``kubectl port-forward svc/<name>``."""
        with port_forward(self.rn, self.namespace, f"svc/{self.name}") as pf:
            headers = {"Authorization": f"Bearer {token if token is not None else self.token()}"}
            with httpx.Client(base_url=pf.url, headers=headers, timeout=30) as http:
                yield http

    def volume_dir(self) -> Path:
        pvc = self.rn.get(self.namespace, "pvc", f"{self.name}-data")
        assert pvc is not None and pvc["spec"].get("volumeName"), f"{self.name}'s claim is not bound"
        pv = self.rn.get("", "pv", pvc["spec"]["volumeName"])
        assert pv is not None
        return Path(pv["spec"]["local"]["path"])


def remember(http: httpx.Client, content: str, tags: list[str] | None = None) -> dict[str, Any]:
    resp = http.post("/ingest", json={"content": content, "tags": tags or ["realnode"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True, body
    return body


def recall(http: httpx.Client, query: str) -> str:
    """The search answer as text (shapes differ between Vestige generations)."""
    resp = http.post("/search", json={"query": query, "limit": 10})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True, body
    return json.dumps(body["data"])


def found_after(http_factory, query: str, needle: str, timeout: float = 60.0) -> str:
    """Search until ``needle`` appears (a restarted pod may take a moment to answer)."""

    def attempt() -> str | None:
        try:
            with http_factory() as http:
                text = recall(http, query)
        except (httpx.HTTPError, AssertionError):
            return None
        return text if needle in text else None

    return str(
        wait_until(attempt, timeout=timeout, what=f"a search for {query!r} to find {needle!r}", interval=2)
    )


@dataclass
class Agents:
    """A namespace with its own operator; agents made here run on the real node. ``operator``
    is the operator process on the host (None: an operator in the cluster watches the namespace,
    tests/node/release.py)."""

    rn: RealNode
    images: image_builds.ImageRefs
    namespace: str
    operator: OperatorProcess | None
    made: list[str] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        rn: RealNode,
        refs: image_builds.ImageRefs,
        factory: OperatorFactory,
        env: dict[str, str] | None = None,
    ) -> Iterator[Agents]:
        ns = f"real-{uuid.uuid4().hex[:6]}"
        rn.kubectl("create", "namespace", ns)
        rn.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
        op = factory(
            ns,
            env={"VESTIGE_DEFAULT_IMAGE": refs.standin, "VESTIGE_BRIDGE_IMAGE": refs.bridge, **(env or {})},
        )
        made = cls(rn, refs, ns, op)
        try:
            yield made
        finally:
            made.cleanup()

    def create(
        self,
        name: str,
        *,
        image: str | None = None,
        generation: str | None = None,
        spec: dict[str, Any] | None = None,
        volume: bool = True,
        seed: Path | None = None,
    ) -> Agent:
        """A VestigeMemory placed on the real node, with a fresh local volume for its claim
        (holding a copy of the directory ``seed``, owner and modes kept, when given)."""
        if volume:
            pv_name = f"{self.namespace}-{name}-{uuid.uuid4().hex[:4]}"
            pv = node.local_volume(self.rn.layout, pv_name)
            if seed is not None:
                subprocess.run(["cp", "-a", f"{seed}/.", pv["spec"]["local"]["path"]], check=True)
            self.rn.apply(pv)
            self.made.append(pv_name)
        vestige: dict[str, Any] = {"imagePullPolicy": "IfNotPresent"}
        if image:
            vestige["image"] = image
        if generation:
            vestige["generation"] = generation
        body: dict[str, Any] = {
            "storage": {"size": "1Gi", "storageClassName": node.STORAGE_CLASS},
            "vestige": vestige,
            "bridge": {"imagePullPolicy": "IfNotPresent"},
            "pod": dict(node.POD_PLACEMENT),
        }
        for key, value in (spec or {}).items():
            body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
        self.rn.apply(
            {
                "apiVersion": "vestige.dev/v1alpha1",
                "kind": "VestigeMemory",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": body,
            }
        )
        return Agent(name, self.namespace, self.rn)

    def cleanup(self) -> None:
        self.rn.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        for pv in self.made:
            self.rn.kubectl("delete", "pv", pv, "--wait=false", check=False)


def wait_gone(fn, timeout: float = 120.0, what: str = "deletion") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn() is None:
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")
