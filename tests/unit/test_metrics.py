"""The operator's /metrics: every metric is exposed, fed by real reconciler passes and served over HTTP."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from datetime import datetime
from typing import Any

import kopf
import kubernetes.client
import pytest
from kopf._cogs.clients import watching
from prometheus_client.parser import text_string_to_metric_families
from vestige_operator import metrics as metrics_module
from vestige_operator.cluster import Cluster
from vestige_operator.config import ConfigError, OperatorConfig
from vestige_operator.metrics import Metrics
from vestige_operator.reconcile import Reconciler
from vestige_operator.workqueue import RetryLater


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def owner(name: str, phase: str | None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {},
        "status": {"phase": phase} if phase else {},
    }


class FlakyReconciler(Reconciler):
    """A reconciler whose passes end as told (the pass logic itself is tested elsewhere)."""

    outcomes: dict[str, BaseException | None]

    async def reconcile(self, namespace: str, name: str) -> None:
        outcome = self.outcomes.get(name)
        if outcome is not None:
            raise outcome


@pytest.fixture
def reconciler() -> Reconciler:
    cluster = Cluster(kubernetes.client.ApiClient(), max_workers=1)
    rec = FlakyReconciler(cluster, OperatorConfig(namespaces=("ns",)))
    rec.outcomes = {"b": RetryLater("conflict"), "c": ValueError("bug")}
    rec.attach(
        owners={
            ("ns", "a"): [owner("a", "Ready")],
            ("ns", "b"): [owner("b", "Ready")],
            ("ns", "c"): [owner("c", None)],
        },
        children={},
    )
    return rec


async def test_every_metric_reflects_what_happened(reconciler: Reconciler) -> None:
    m = Metrics(reconciler)
    before = samples(m.exposition().decode())
    assert before[("vestige_operator_reconciles_total", (("result", "success"),))] == 0
    assert before[("vestige_operator_resources", (("phase", "Ready"),))] == 2
    assert before[("vestige_operator_resources", (("phase", "Unknown"),))] == 1
    assert before[("vestige_operator_resources", (("phase", "Failed"),))] == 0

    for name in ("a", "b", "c"):
        reconciler.request(("ns", name))
    await reconciler.drain()
    reconciler.port.requests[("apply", "Deployment")] += 2
    reconciler.port.errors[("get", "Secret", 404)] += 1
    m.observe_watch("deployments", None)
    m.observe_watch("deployments", None)  # re-opened once
    m.observe_watch("services", None)

    after = samples(m.exposition().decode())
    assert after[("vestige_operator_reconciles_total", (("result", "success"),))] == 1
    assert after[("vestige_operator_reconciles_total", (("result", "retry"),))] == 1
    assert after[("vestige_operator_reconciles_total", (("result", "error"),))] == 1
    assert after[("vestige_operator_reconcile_duration_seconds_count", ())] == 3
    # b and c wait for a retry; nothing is queued or running.
    assert after[("vestige_operator_queue_depth", (("state", "backoff"),))] == 2
    assert after[("vestige_operator_queue_depth", (("state", "running"),))] == 0
    assert after[("vestige_operator_queue_depth", (("state", "queued"),))] == 0
    assert after[("vestige_operator_api_requests_total", (("kind", "Deployment"), ("verb", "apply")))] == 2
    key = ("vestige_operator_api_errors_total", (("code", "404"), ("kind", "Secret"), ("verb", "get")))
    assert after[key] == 1
    assert after[("vestige_operator_watch_restarts_total", (("resource", "deployments"),))] == 1
    assert ("vestige_operator_watch_restarts_total", (("resource", "services"),)) not in after
    for key in ("b", "c"):
        reconciler.forget(("ns", key), None)


def test_per_resource_phase_and_backup_times(reconciler: Reconciler) -> None:
    """One phase series per VestigeMemory; the newest completed backup; when the next scheduled
    run is due: the first cron time after that backup, or after the creation while none completed,
    and nothing without an active schedule."""

    def memory(name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": name, "namespace": "ns", "creationTimestamp": "2026-05-01T10:20:00Z"}
        return {"metadata": meta, "spec": spec, "status": status}

    daily = {"backup": {"schedule": "0 3 * * *"}}
    done = {"phase": "Ready", "backup": {"lastSuccessful": {"time": "2026-05-03T03:00:40Z"}}}
    m = Metrics(reconciler)
    m.attach(
        {
            ("ns", "fresh"): [memory("fresh", daily, {"phase": "Provisioning"})],
            ("ns", "backed-up"): [memory("backed-up", daily, done)],
            ("ns", "paused"): [
                memory("paused", {"backup": {"schedule": "0 3 * * *", "suspend": True}}, done)
            ],
            ("ns", "no-status"): [memory("no-status", {}, {})],
            ("ns", "gone"): [],
        }
    )
    got = samples(m.exposition().decode())

    def ts(value: str) -> float:
        return datetime.fromisoformat(value).timestamp()

    phase = {k[1]: v for k, v in got.items() if k[0] == "vestige_operator_resource_phase"}
    assert phase == {
        (("name", "fresh"), ("namespace", "ns"), ("phase", "Provisioning")): 1,
        (("name", "backed-up"), ("namespace", "ns"), ("phase", "Ready")): 1,
        (("name", "paused"), ("namespace", "ns"), ("phase", "Ready")): 1,
        (("name", "no-status"), ("namespace", "ns"), ("phase", "Unknown")): 1,
    }
    last = {
        k[1][0][1]: v
        for k, v in got.items()
        if k[0] == "vestige_operator_backup_last_success_timestamp_seconds"
    }
    assert last == {"backed-up": ts("2026-05-03T03:00:40+00:00"), "paused": ts("2026-05-03T03:00:40+00:00")}
    due = {k[1][0][1]: v for k, v in got.items() if k[0] == "vestige_operator_backup_due_timestamp_seconds"}
    assert due == {"fresh": ts("2026-05-02T03:00:00+00:00"), "backed-up": ts("2026-05-04T03:00:00+00:00")}


async def test_queue_depth_counts_waiting_and_running_passes() -> None:
    cluster = Cluster(kubernetes.client.ApiClient(), max_workers=1)
    gate = asyncio.Event()

    class Slow(Reconciler):
        async def reconcile(self, namespace: str, name: str) -> None:
            await gate.wait()

    rec = Slow(cluster, OperatorConfig(namespaces=("ns",), max_concurrent_reconciles=1))
    rec.attach(owners={("ns", n): [owner(n, None)] for n in "abc"}, children={})
    for n in "abc":
        rec.request(("ns", n))
    await asyncio.sleep(0.01)
    assert rec.queue_depth() == {"queued": 2, "running": 1, "backoff": 0}
    rec.request(("ns", "a"))  # a again while its pass runs: one more pass pending
    assert rec.queue_depth() == {"queued": 3, "running": 1, "backoff": 0}
    gate.set()
    await rec.drain()
    assert rec.queue_depth() == {"queued": 0, "running": 0, "backoff": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_served_over_http(reconciler: Reconciler) -> None:
    m = Metrics(reconciler)
    port = _free_port()
    runner = await m.serve("127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        body, ctype = await asyncio.to_thread(
            lambda: (lambda r: (r.read().decode(), r.headers["Content-Type"]))(urllib.request.urlopen(url))
        )
    finally:
        await runner.cleanup()
    assert ctype.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body)}
    assert names >= {
        "vestige_operator_reconciles",
        "vestige_operator_reconcile_duration_seconds",
        "vestige_operator_queue_depth",
        "vestige_operator_resources",
        "vestige_operator_api_requests",
        "vestige_operator_api_errors",
        "vestige_operator_watch_restarts",
    }


def test_kopf_still_opens_watches_through_the_wrapped_function(reconciler: Reconciler) -> None:
    """The watch-restart counter relies on kopf calling ``watching.watch_objs`` by its global name."""
    unwrapped = getattr(watching.continuous_watch, "__wrapped__", watching.continuous_watch)
    assert "watch_objs" in unwrapped.__code__.co_names
    original = getattr(watching.watch_objs, "__wrapped__", watching.watch_objs)
    try:
        metrics_module.install(kopf.OperatorRegistry(), reconciler, OperatorConfig(namespaces=("ns",)))
        assert watching.watch_objs.__wrapped__ is original  # type: ignore[attr-defined]
        metrics_module.install(kopf.OperatorRegistry(), reconciler, OperatorConfig(namespaces=("ns",)))
        assert watching.watch_objs.__wrapped__ is original  # never wrapped twice
    finally:
        watching.watch_objs = original


def test_metrics_port_setting() -> None:
    assert OperatorConfig.from_env({}).metrics_port == 8080
    assert OperatorConfig.from_env({"VESTIGE_METRICS_PORT": "0"}).metrics_port == 0
    assert OperatorConfig.from_env({"VESTIGE_METRICS_HOST": "127.0.0.1"}).metrics_host == "127.0.0.1"
    with pytest.raises(ConfigError):
        OperatorConfig.from_env({"VESTIGE_METRICS_PORT": "http"})
    with pytest.raises(ConfigError):
        OperatorConfig.from_env({"VESTIGE_METRICS_PORT": "70000"})


def test_per_resource_replication_position(reconciler: Reconciler) -> None:
    """status.replication becomes two gauges per memory with a continuous backup, none without."""
    m = Metrics(reconciler)
    position = {"lastReplicatedAt": "2026-05-03T03:00:40Z", "lagSeconds": 2}
    m.attach(
        {
            ("ns", "replicated"): [{**owner("replicated", "Ready"), "status": {"replication": position}}],
            ("ns", "plain"): [owner("plain", "Ready")],
        }
    )
    got = samples(m.exposition().decode())
    when = {
        k[1]: v
        for k, v in got.items()
        if k[0] == "vestige_operator_replication_last_success_timestamp_seconds"
    }
    assert when == {
        (("name", "replicated"), ("namespace", "ns")): datetime.fromisoformat(
            "2026-05-03T03:00:40+00:00"
        ).timestamp()
    }
    lag = {k[1]: v for k, v in got.items() if k[0] == "vestige_operator_replication_lag_seconds"}
    assert lag == {(("name", "replicated"), ("namespace", "ns")): 2.0}
