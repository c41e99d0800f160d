"""The operator's Prometheus metrics on ``/metrics`` (prometheus-client, served by aiohttp).

All instrumentation lives here. Counters and the histogram are fed by two hooks: the
reconciler's ``on_pass`` (result and duration of every pass) and a wrapper around kopf's watch
request (re-opened watch streams). Everything else is read at scrape time, on the event loop, from
the state the operator already keeps: the scheduler's queue, the phase of every cached
VestigeMemory, and ``Cluster.requests`` / ``Cluster.errors`` (API requests by verb and kind).

| metric | type | labels |
|---|---|---|
| ``vestige_operator_reconciles_total`` | counter | ``result``: success, retry, error |
| ``vestige_operator_reconcile_duration_seconds`` | histogram | |
| ``vestige_operator_queue_depth`` | gauge | ``state``: queued, running, backoff |
| ``vestige_operator_resources`` | gauge | ``phase`` |
| ``vestige_operator_fleet_rollouts`` | gauge | ``state``: rolling, waiting |
| ``vestige_operator_api_requests_total`` | counter | ``verb``, ``kind`` |
| ``vestige_operator_api_errors_total`` | counter | ``verb``, ``kind``, ``code`` |
| ``vestige_operator_watch_restarts_total`` | counter | ``resource`` |
| ``vestige_operator_leader`` | gauge | (1: this replica leads and reconciles; 0: a standby) |
| ``vestige_operator_resource_phase`` | gauge | ``namespace``, ``name``, ``phase`` (value 1) |
| ``vestige_operator_backup_last_success_timestamp_seconds`` | gauge | ``namespace``, ``name`` |
| ``vestige_operator_backup_due_timestamp_seconds`` | gauge | ``namespace``, ``name`` |

The per-resource families are read from the VestigeMemory watch cache (``watch_cache.OwnerCache``): one
series per resource (a fleet of 5,000 agents: 5,000 phase series), labelled like
kube-state-metrics (``namespace``, ``name``: scrape with ``honor_labels``, as the chart's
ServiceMonitor does). The monitoring pack's alert rules read them (manifests/helm/vestige-operator,
templates/monitoring.yaml).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from vestige_operator.api import Phase
from vestige_operator.backup import next_fire
from vestige_operator.config import OperatorConfig
from vestige_operator.leader import Leadership
from vestige_operator.reconcile import Reconciler
from vestige_operator.times import parse_time

logger = logging.getLogger(__name__)

PREFIX = "vestige_operator"
#: Results of a reconcile pass: it completed (whatever the resource's phase); it hit a transient
#: API error and is retried with backoff; it raised an unexpected error (also retried).
RESULTS = ("success", "retry", "error")
QUEUE_STATES = ("queued", "running", "backoff")
#: Passes usually take milliseconds (no request) to a few hundred (several applies).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A resource the operator has not written a status for yet.
NO_PHASE = "Unknown"
#: (namespace, name) -> the cached VestigeMemory bodies of that key (``watch_cache.OwnerCache``).
Owners = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]


def backup_due(body: Mapping[str, Any]) -> datetime | None:
    """When the next scheduled backup of a VestigeMemory is due: the first cron time after its
    newest completed backup (after its creation while none completed). None without an active
    schedule (none set, or ``backup.suspend``). A backup is overdue once a grace period after this
    time has passed without a newer completed backup (the monitoring pack's alert)."""
    backup = (body.get("spec") or {}).get("backup") or {}
    schedule = backup.get("schedule")
    if not schedule or backup.get("suspend"):
        return None
    baseline = last_backup(body) or parse_time((body.get("metadata") or {}).get("creationTimestamp"))
    return next_fire(schedule, baseline) if baseline is not None else None


def last_backup(body: Mapping[str, Any]) -> datetime | None:
    """When the newest completed backup of a VestigeMemory completed (its status says)."""
    last = ((body.get("status") or {}).get("backup") or {}).get("lastSuccessful") or {}
    return parse_time(last.get("time"))


class _StateCollector(Collector):
    """Gauges and counters read from the operator's own state at scrape time."""

    def __init__(self, reconciler: Reconciler, leadership: Leadership) -> None:
        self._reconciler = reconciler
        self._leadership = leadership
        self.owners: Owners = {}

    def collect(self) -> Iterator[Any]:
        rec = self._reconciler
        yield GaugeMetricFamily(
            f"{PREFIX}_leader",
            "1 while this replica holds the leader Lease and reconciles; 0: a standby (watches "
            "warm, sends no writes). Without leader election always 1.",
            value=1 if self._leadership.leading else 0,
        )
        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "VestigeMemory resources waiting for a reconcile pass (queued: requested, not started; "
            "running: a pass in progress; backoff: waiting to retry after an error).",
            labels=["state"],
        )
        depth = rec.queue_depth()
        for state in QUEUE_STATES:
            queue.add_metric([state], depth.get(state, 0))
        yield queue

        rollouts = GaugeMetricFamily(
            f"{PREFIX}_fleet_rollouts",
            "Agents restarting for new operator default images (rolling: holding one of the "
            "VESTIGE_MAX_FLEET_ROLLOUTS slots; waiting: in line for one).",
            labels=["state"],
        )
        rolling, waiting = rec.rollouts.counts()
        rollouts.add_metric(["rolling"], rolling)
        rollouts.add_metric(["waiting"], waiting)
        yield rollouts

        phases = GaugeMetricFamily(
            f"{PREFIX}_resources",
            "VestigeMemory resources the operator watches, by status.phase (Unknown: no status yet).",
            labels=["phase"],
        )
        counts = rec.phases()
        for phase in [*(p.value for p in Phase), *sorted(set(counts) - {p.value for p in Phase})]:
            phases.add_metric([phase], counts.get(phase, 0))
        yield phases

        requests = CounterMetricFamily(
            f"{PREFIX}_api_requests",
            "Requests the reconciler sent to the API server, by verb and kind (kopf's watches aside).",
            labels=["verb", "kind"],
        )
        for (verb, kind), n in sorted(rec.port.requests.items()):
            requests.add_metric([verb, kind], n)
        yield requests

        errors = CounterMetricFamily(
            f"{PREFIX}_api_errors",
            "Reconciler API requests that failed: code 0 = no answer (connection, timeout), else the "
            "HTTP status (404 and 409 included: a GET of an absent object, a create that found one).",
            labels=["verb", "kind", "code"],
        )
        for (verb, kind, code), n in sorted(rec.port.errors.items()):
            errors.add_metric([verb, kind, str(code)], n)
        yield errors
        yield from self._per_resource()

    def _per_resource(self) -> Iterator[Any]:
        keys = ["namespace", "name"]
        phase = GaugeMetricFamily(
            f"{PREFIX}_resource_phase",
            "Each VestigeMemory's status.phase (value 1; Unknown: no status yet).",
            labels=[*keys, "phase"],
        )
        last = GaugeMetricFamily(
            f"{PREFIX}_backup_last_success_timestamp_seconds",
            "Unix time the newest completed backup of a VestigeMemory completed (status.backup).",
            labels=keys,
        )
        due = GaugeMetricFamily(
            f"{PREFIX}_backup_due_timestamp_seconds",
            "Unix time of the first scheduled backup after the newest completed one (after the "
            "resource's creation while none completed); only with an active backup.schedule.",
            labels=keys,
        )
        replicated = GaugeMetricFamily(
            f"{PREFIX}_replication_last_success_timestamp_seconds",
            "Unix time the continuous replica of a VestigeMemory last held every change of its store "
            "(status.replication.lastReplicatedAt; only with backup.continuous).",
            labels=keys,
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_replication_lag_seconds",
            "Seconds the continuous replica was behind the store at the operator's last check "
            "(status.replication.lagSeconds, measured in the agent's pod).",
            labels=keys,
        )
        for (namespace, name), bodies in sorted(self.owners.items()):
            body = next(iter(bodies), None)
            if body is None:
                continue
            replication = (body.get("status") or {}).get("replication") or {}
            when = parse_time(replication.get("lastReplicatedAt"))
            if when is not None:
                replicated.add_metric([namespace, name], when.timestamp())
            if isinstance(replication.get("lagSeconds"), int | float):
                lag.add_metric([namespace, name], float(replication["lagSeconds"]))
            phase.add_metric([namespace, name, (body.get("status") or {}).get("phase") or NO_PHASE], 1)
            when = last_backup(body)
            if when is not None:
                last.add_metric([namespace, name], when.timestamp())
            when = backup_due(body)
            if when is not None:
                due.add_metric([namespace, name], when.timestamp())
        yield phase
        yield last
        yield due
        yield replicated
        yield lag


class Metrics:
    """The operator's metrics, in their own registry (no process-global state)."""

    def __init__(self, reconciler: Reconciler, leadership: Leadership | None = None) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Reconcile passes by result (success, retry: a transient API error, error: unexpected).",
            ["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.reconciles.labels(result)
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one reconcile pass (from its start, not from the request).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.watch_restarts = Counter(
            f"{PREFIX}_watch_restarts",
            "Watch streams re-opened after their first start (a dropped connection, a server-side "
            "timeout, an expired resourceVersion that forces a relist, an API outage).",
            ["resource"],
            registry=self.registry,
        )
        self._state = _StateCollector(reconciler, leadership or Leadership(elect=False))
        self.registry.register(self._state)
        reconciler.queue.on_pass = self.observe_pass
        self._watches: set[tuple[str, str | None]] = set()

    def attach(self, owners: Owners) -> None:
        """Read the per-resource families from ``owners`` (the VestigeMemory cache)."""
        self._state.owners = owners

    def observe_pass(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.duration.observe(seconds)

    def observe_watch(self, resource: str, namespace: str | None) -> None:
        key = (resource, namespace)
        if key in self._watches:
            self.watch_restarts.labels(resource).inc()
        self._watches.add(key)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, _: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """Serve ``/metrics`` on ``host:port`` from the running event loop."""
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner


def _count_watches(metrics: Metrics) -> None:
    """Count every watch request kopf opens (kopf has no hook for it: wrap its ``watch_objs``).

    ``continuous_watch`` calls ``watching.watch_objs`` once per watch request: the first after the
    initial listing, then again after each disconnection or relist. A kopf release that renames
    it fails ``tests/unit/test_metrics.py`` rather than silently reporting zero.
    """
    from kopf._cogs.clients import watching  # private: no public hook exists

    original = getattr(watching.watch_objs, "__wrapped__", watching.watch_objs)

    async def watch_objs(*, resource: Any, namespace: str | None, **kwargs: Any) -> AsyncIterator[Any]:
        metrics.observe_watch(str(resource.plural), namespace)
        async for event in original(resource=resource, namespace=namespace, **kwargs):
            yield event

    watch_objs.__wrapped__ = original  # type: ignore[attr-defined]
    watching.watch_objs = watch_objs


def install(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    config: OperatorConfig,
    leadership: Leadership | None = None,
    owners: Owners | None = None,
) -> Metrics:
    """Create the metrics, hook them in, and serve them while the operator runs (port 0: off);
    ``owners``: the VestigeMemory cache the per-resource families are read from."""
    metrics = Metrics(reconciler, leadership)
    _count_watches(metrics)
    runners: list[web.AppRunner] = []

    @kopf.on.startup(id="metrics", registry=registry)
    async def start_metrics(**kwargs: Any) -> None:
        if owners is not None:
            metrics.attach(owners)
        if config.metrics_port:
            try:
                runners.append(await metrics.serve(config.metrics_host, config.metrics_port))
            except OSError as exc:  # e.g. the port is taken: stop, rather than run unobserved
                raise kopf.PermanentError(
                    f"cannot serve metrics on {config.metrics_host}:{config.metrics_port}: {exc}"
                ) from exc
            logger.info("metrics on http://%s:%d/metrics", config.metrics_host, config.metrics_port)

    @kopf.on.cleanup(id="metrics", registry=registry)
    async def stop_metrics(**_: Any) -> None:
        for runner in runners:
            await runner.cleanup()

    return metrics
