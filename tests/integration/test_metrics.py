"""The running operator's /metrics report what the test did on the real API server.

Three agents and one whose token Secret does not exist, then a kube-apiserver restart: the
reconcile counters, resources by phase, API requests and errors by verb and kind, the queue and
watch restarts are read from /metrics and compared with what happened (and with the operator's
own probe, an independent count of passes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests import cluster
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import must_get, wait_until
from tests.integration.operator_fixtures import OperatorFactory, OperatorProcess
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture

PHASES = ("Pending", "Provisioning", "Ready", "Degraded", "Suspended", "Failed")
#: Resources kopf watches for the operator: VestigeMemory and the six child kinds.
WATCHED = (
    "vestigememories",
    "secrets",
    "persistentvolumeclaims",
    "deployments",
    "services",
    "networkpolicies",
    "ingresses",
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(op: OperatorProcess) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def phase_of(kubectl: Kubectl, ns: str, name: str) -> str:
    return (must_get(kubectl, ns, "vmem", name).get("status") or {}).get("phase", "")


def settled(op: OperatorProcess) -> Samples | None:
    m = scrape(op)
    return m if all(v == 0 for v in m["vestige_operator_queue_depth"].values()) else None


def test_metrics_report_what_the_operator_did(
    kubectl: Kubectl, namespace: str, operator_factory: OperatorFactory
) -> None:
    ns = namespace
    op = operator_factory(ns, resync_seconds=3600)  # no resync passes during the test
    m = scrape(op)
    for name in (
        "vestige_operator_reconciles_total",
        "vestige_operator_reconcile_duration_seconds_count",
        "vestige_operator_queue_depth",
        "vestige_operator_resources",
    ):
        assert name in m, f"{name} missing from /metrics"
    assert value(m, "vestige_operator_reconciles_total", result="success") == 0
    assert all(value(m, "vestige_operator_resources", phase=p) == 0 for p in PHASES)
    assert not m.get("vestige_operator_watch_restarts_total")

    agents = ("agent-1", "agent-2", "agent-3")
    minimal = (ROOT / "manifests/examples/minimal.yaml").read_text()
    for name in agents:
        kubectl("-n", ns, "apply", "-f", "-", input=minimal.replace("name: my-agent", f"name: {name}"))
    broken = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": "no-token"},
        "spec": {"auth": {"existingSecret": {"name": "no-such-secret", "key": "token"}}},
    }
    kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(broken))
    for name in agents:
        kubectl("-n", ns, "wait", "--for=condition=Ready", f"vmem/{name}", "--timeout=120s", timeout=150)
    wait_until(lambda: phase_of(kubectl, ns, "no-token") == "Failed", 60, "no-token to fail")

    m = wait_until(lambda: settled(op), 60, "an empty queue")

    # Resources by phase: exactly what the API server shows.
    assert value(m, "vestige_operator_resources", phase="Ready") == 3
    assert value(m, "vestige_operator_resources", phase="Failed") == 1
    assert sum(value(m, "vestige_operator_resources", phase=p) for p in PHASES) == 4
    # One phase series per resource, labelled with its namespace and name (read from the watch
    # cache, which sees the status writes a moment later).
    expected = {(("name", n), ("namespace", ns), ("phase", "Ready")): 1.0 for n in agents}
    expected[(("name", "no-token"), ("namespace", ns), ("phase", "Failed"))] = 1.0
    wait_until(
        lambda: scrape(op).get("vestige_operator_resource_phase") == expected, 30, "the per-resource phases"
    )

    # Reconciles: every pass succeeded; the histogram saw each; the probe counted the same passes.
    passes = value(m, "vestige_operator_reconciles_total", result="success")
    assert passes >= 4  # at least one per resource
    assert value(m, "vestige_operator_reconciles_total", result="retry") == 0
    assert value(m, "vestige_operator_reconciles_total", result="error") == 0
    assert value(m, "vestige_operator_reconcile_duration_seconds_count") == passes
    # kopf caches probe results for 10 s: wait for a fresh one.
    probe = wait_until(lambda: (p := op.probe())["passes"] == passes and p, 30, "a fresh probe")
    assert value(m, "vestige_operator_reconcile_duration_seconds_sum") > 0
    assert value(m, "vestige_operator_reconcile_duration_seconds_bucket", le="+Inf") == passes

    # API requests by verb and kind: one token Secret created per agent (none for no-token, which
    # names its own), one Deployment, Service, PVC and NetworkPolicy created per resource at least
    # (a child absent from the cache is created, never applied: docs/operator.md).
    requests = m["vestige_operator_api_requests_total"]
    assert value(m, "vestige_operator_api_requests_total", verb="create", kind="Secret") == 3
    for kind in ("Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"):
        assert value(m, "vestige_operator_api_requests_total", verb="create", kind=kind) >= 3, kind
    assert value(m, "vestige_operator_api_requests_total", verb="patch_status", kind="VestigeMemory") >= 4
    assert sum(requests.values()) == probe["api_requests"]
    # API errors: every GET of the missing Secret answered 404; so did the one GET of each new
    # resource's claim (a claim missing from the cache is read once before it is created, so an
    # existing claim of another agent is never applied over blind: docs/operator.md "Data
    # volumes"); a created child's hand-over to server-side apply may lose a race with a
    # controller's write (422: its test op failed; read again and retried); nothing else failed.
    gets = value(m, "vestige_operator_api_requests_total", verb="get", kind="Secret")
    assert gets >= 1
    claim_gets = value(m, "vestige_operator_api_requests_total", verb="get", kind="PersistentVolumeClaim")
    assert claim_gets >= 4  # one per new resource at least (a failed pass may read again)
    errors = dict(m["vestige_operator_api_errors_total"])
    assert errors.pop((("code", "404"), ("kind", "Secret"), ("verb", "get"))) == gets
    assert (
        4 <= errors.pop((("code", "404"), ("kind", "PersistentVolumeClaim"), ("verb", "get"))) <= claim_gets
    )
    assert all(dict(labels)["verb"] == "hand over" and dict(labels)["code"] == "422" for labels in errors), (
        errors
    )
    assert not m.get("vestige_operator_watch_restarts_total")

    # Watch restarts: a kube-apiserver restart drops every watch; kopf re-opens each one.
    cluster.restart("kube-apiserver", downtime=1.0)
    wait_until(
        lambda: kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0,
        120,
        "the API server to be ready",
    )

    def every_watch_restarted() -> Samples | None:
        m = scrape(op)
        ok = all(value(m, "vestige_operator_watch_restarts_total", resource=r) >= 1 for r in WATCHED)
        return m if ok else None

    m = wait_until(every_watch_restarted, 120, "every watch to be re-opened", interval=1.0)
    # kopf's own watches (CRDs, namespaces) are counted too.
    assert {dict(k)["resource"] for k in m["vestige_operator_watch_restarts_total"]} >= set(WATCHED)

    # And the operator still works: a fourth agent becomes Ready and is counted.
    kubectl("-n", ns, "apply", "-f", "-", input=minimal.replace("name: my-agent", "name: agent-4"))
    kubectl("-n", ns, "wait", "--for=condition=Ready", "vmem/agent-4", "--timeout=120s", timeout=150)
    m = wait_until(lambda: settled(op), 60, "an empty queue")
    assert value(m, "vestige_operator_resources", phase="Ready") == 4
    assert value(m, "vestige_operator_api_requests_total", verb="create", kind="Secret") == 4
    assert op.stop() == 0


def test_operator_stops_when_it_cannot_serve_metrics(kubeconfig: str, namespace: str) -> None:
    """A taken metrics port is a startup error (exit 1), not an operator running unobserved."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "VESTIGE_METRICS_HOST": "127.0.0.1",
            "VESTIGE_METRICS_PORT": str(port),
            "VESTIGE_LOG_FORMAT": "plain",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "vestige_operator", "run", "-n", namespace, "--liveness", ""],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stdout + proc.stderr
