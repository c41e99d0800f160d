"""A release of the operator's Helm chart on the real node: the operator really running in a pod
(its own namespace, PSA ``restricted``), watching one agent namespace of its own, with the images
built here and the node's placement; used by the tests that need an in-cluster operator (the
operator pod, high availability, and everything the operator asks of agents' pods over the pod
network, which the host cannot reach)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from tests import tools
from tests.cluster import images as image_builds
from tests.cluster import node
from tests.integration.conftest import ROOT
from tests.integration.helpers import wait_until
from tests.node.helpers import READY_TIMEOUT, Agent, RealNode, port_forward

CHART = ROOT / "manifests" / "helm" / "vestige-operator"
CRD = "vestigememories.vestige.dev"


class Release:
    """A release of the chart; ``replicas`` 1 here (one pod to follow through an upgrade), the
    chart's default of 2 in test_operator_ha.py."""

    def __init__(
        self,
        rn: RealNode,
        refs: image_builds.ImageRefs,
        replicas: int = 1,
        operator: dict[str, Any] | None = None,
    ) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.replicas = replicas
        #: More of the chart's ``operator:`` values (e.g. defaultLitestreamImage, extraEnv).
        self.operator = dict(operator or {})
        self.rn = rn
        self.refs = refs
        self.name = f"vop-{suffix}"  # also the fullname: cluster-scoped RBAC names stay unique
        self.namespace = f"vop-sys-{suffix}"
        self.agents = f"vop-agents-{suffix}"
        self.pvs: list[str] = []
        self.binary = str(tools.helm_binary())

    def helm(self, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, f"--kubeconfig={self.rn.kubeconfig}", "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{self.diagnose()}"
            )
        return proc

    def values(self) -> list[str]:
        repo, tag = self.refs.operator.rsplit(":", 1)
        placement = {
            "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
            "fullnameOverride": self.name,
            "replicaCount": self.replicas,
            "crds": {"install": False},
            "watch": {"namespaces": [self.agents]},
            "operator": {
                "defaultVestigeImage": self.refs.standin,
                "defaultBridgeImage": self.refs.bridge,
                "resyncSeconds": 60,
                **self.operator,
            },
            "metrics": {"enabled": True},
            # The release's admission policy (on by default, scoped to the watched namespace)
            # lets its agents onto the real node, in the one place (docs/admission.md).
            "admissionPolicy": {
                "params": {
                    "nodeSelectors": [
                        "kubernetes.io/os=*",
                        "kubernetes.io/arch=*",
                        *(f"{key}={value}" for key, value in node.POD_PLACEMENT["nodeSelector"].items()),
                    ],
                    "tolerationKeys": [t["key"] for t in node.POD_PLACEMENT["tolerations"]],
                }
            },
            **node.POD_PLACEMENT,
        }
        return ["--set-json", f"image={json.dumps(placement.pop('image'))}"] + [
            arg for key, value in placement.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")
        ]

    @classmethod
    @contextlib.contextmanager
    def opened(
        cls,
        rn: RealNode,
        refs: image_builds.ImageRefs,
        replicas: int = 1,
        operator: dict[str, Any] | None = None,
    ) -> Iterator[Release]:
        """Its two namespaces (PSA ``restricted`` enforced) made; uninstalled and removed at the end.
        Installing is the caller's: tests check what ``helm install`` itself does."""
        made = cls(rn, refs, replicas=replicas, operator=operator)
        for ns in (made.namespace, made.agents):
            rn.kubectl("create", "namespace", ns)
            rn.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
        try:
            yield made
        finally:
            made.cleanup()

    def install(self) -> None:
        """``helm install --wait`` and the operator pod Ready (one replica)."""
        self.helm("install", self.name, str(CHART), *self.values(), "--wait", "--timeout=5m")
        if self.replicas == 1:
            self.wait_ready("the operator pod Ready")

    def pods(self) -> list[dict[str, Any]]:
        proc = self.rn.kubectl(
            "-n", self.namespace, "get", "pods", "-l", "app.kubernetes.io/component=operator", "-o", "json"
        )
        return [p for p in json.loads(proc.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]

    def pod(self) -> dict[str, Any]:
        pods = self.pods()
        assert len(pods) == 1, f"expected one operator pod, found {len(pods)}"
        return pods[0]

    def ready_pod(self) -> dict[str, Any] | None:
        pods = self.pods()
        if len(pods) != 1:
            return None
        conds = {c["type"]: c["status"] for c in pods[0].get("status", {}).get("conditions", [])}
        return pods[0] if conds.get("Ready") == "True" else None

    def logs(self) -> str:
        proc = self.rn.kubectl(
            "-n",
            self.namespace,
            "logs",
            "-l",
            "app.kubernetes.io/component=operator",
            "--tail=60",
            check=False,
        )
        return proc.stdout[-6000:] + proc.stderr[-500:]

    def diagnose(self) -> str:
        out = []
        for ns in (self.namespace, self.agents):
            pods = self.rn.kubectl("-n", ns, "get", "pods", "-o", "json", check=False)
            if pods.returncode == 0:
                for pod in json.loads(pods.stdout)["items"]:
                    out.append(f"{ns}/{pod['metadata']['name']}: {json.dumps(pod.get('status', {}))[:2500]}")
            events = self.rn.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False)
            out.append(events.stdout[-2500:])
        out.append("--- operator logs:\n" + self.logs())
        return "\n".join(out)

    def wait_ready(self, what: str) -> dict[str, Any]:
        try:
            return wait_until(self.ready_pod, timeout=READY_TIMEOUT, what=what, interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None

    def agent(self, name: str) -> Agent:
        pv = f"{self.agents}-{name}"
        self.rn.apply(node.local_volume(self.rn.layout, pv))
        self.pvs.append(pv)
        self.rn.apply(
            {
                "apiVersion": "vestige.dev/v1alpha1",
                "kind": "VestigeMemory",
                "metadata": {"name": name, "namespace": self.agents},
                "spec": {
                    "storage": {"size": "1Gi", "storageClassName": node.STORAGE_CLASS},
                    "vestige": {"imagePullPolicy": "IfNotPresent"},
                    "bridge": {"imagePullPolicy": "IfNotPresent"},
                    "pod": dict(node.POD_PLACEMENT),
                },
            }
        )
        return Agent(name, self.agents, self.rn)

    def metrics(self) -> str:
        with port_forward(self.rn, self.namespace, f"svc/{self.name}-metrics", remote=8080) as pf:
            resp = httpx.get(f"{pf.url}/metrics", timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.text

    def cleanup(self) -> None:
        subprocess.run(
            [self.binary, f"--kubeconfig={self.rn.kubeconfig}", "-n", self.namespace, "uninstall", self.name,
             "--ignore-not-found", "--wait", "--timeout=2m"],
            capture_output=True, check=False, timeout=180,
        )  # fmt: skip
        for ns in (self.agents, self.namespace):
            self.rn.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for pv in self.pvs:
            self.rn.kubectl("delete", "pv", pv, "--wait=false", check=False)
