"""Leader gating in-process: a standby sends no write, a lost lead stops the writes at the renew
deadline, a gained lead resyncs every cached key (the Lease itself is exercised against the real
API server in tests/integration/test_leader_election.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vestige_operator import handlers
from vestige_operator.cluster import NotLeading
from vestige_operator.config import ConfigError, OperatorConfig
from vestige_operator.leader import Leadership, candidate_identity
from vestige_operator.metrics import Metrics
from vestige_operator.workqueue import WorkQueue

from tests.unit.test_pass import NS, World

#: Short enough to let the renew deadline pass inside a unit test (the gate is clock-computed).
DEADLINE = 0.3


def writes(world: World) -> int:
    return len(world.port.writes) + len(world.port.events)


def kopf_handler(registry: kopf.OperatorRegistry, handler_id: str) -> Any:
    """The function of the watch handler ``handler_id`` registered in ``registry``."""
    (handler,) = [h for h in registry._watching.get_all_handlers() if h.id == handler_id]
    return handler.fn


class Wired:
    """A World whose reconciler and backup controller are wired like the operator (handlers.py),
    with a Leadership that the test drives as the election thread would."""

    def __init__(self) -> None:
        self.world = World()
        self.lead = Leadership(elect=True, renew_deadline=DEADLINE, identity="me")
        self.world.port.may_write = lambda: self.lead.leading
        self.settings = kopf.OperatorSettings()
        self.registry = kopf.OperatorRegistry()
        self.caches = handlers.register(
            self.registry, self.world.rec, leadership=self.lead, settings=self.settings
        )
        for name in ("a", "b"):
            self.world.memory(name)
        self.world.attach()
        self.task: asyncio.Task[None] | None = None

    async def list_caches(self) -> None:
        """What the operator's start does: every listing reaches its cache, then kopf runs its
        first handler (the first VestigeMemory's listing event)."""
        memories = self.world.port.of_kind("VestigeMemory")
        self.caches.owners.listing(memories)
        for feed in self.caches.children.values():
            feed.listing([])
        first = memories[0]["metadata"]
        await kopf_handler(self.registry, "vestige_event")(
            type=None, namespace=NS, name=first["name"], uid=first.get("uid")
        )

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.lead.watch())

    def take(self) -> None:
        self.lead.renewed(time.monotonic())
        self.lead.held(True)

    async def until(self, leading: bool) -> None:
        for _ in range(500):
            await asyncio.sleep(0.01)
            if self.world.rec.queue.paused is not leading:
                return
        raise AssertionError(f"the queues never became {'active' if leading else 'paused'}")

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.world.rec.drain()


@pytest.fixture
async def wired() -> Any:
    w = Wired()
    await w.list_caches()
    w.start()
    yield w
    await w.stop()


async def test_a_standby_runs_no_pass_and_sends_nothing(wired: Wired) -> None:
    rec = wired.world.rec
    assert rec.queue.paused and not wired.settings.posting.enabled
    for name in ("a", "b"):
        rec.request((NS, name))  # what the watch events do
    await rec.drain()
    await asyncio.sleep(0.05)
    assert rec.passes == 0
    assert sum(wired.world.port.requests.values()) == 0
    assert writes(wired.world) == 0


async def test_taking_the_lead_before_the_caches_are_whole_runs_no_pass_until_they_are() -> None:
    w = Wired()  # the listings are still being read: a pass could miss a child or a claim
    w.start()
    try:
        rec = w.world.rec
        w.take()
        await asyncio.sleep(0.05)
        assert w.lead.leading and rec.queue.paused
        rec.request((NS, "a"))  # what a backup or grant event does
        await rec.drain()
        assert rec.passes == 0 and writes(w.world) == 0
        await w.list_caches()
        await w.until(leading=True)
        await rec.drain()
        assert rec.passes == 2  # every cached key, once the caches are whole
    finally:
        await w.stop()


async def test_taking_the_lead_resyncs_every_cached_key(wired: Wired) -> None:
    rec = wired.world.rec
    wired.take()
    await wired.until(leading=True)
    await rec.drain()
    assert rec.passes == 2  # a and b, from the caches, no event needed
    assert wired.settings.posting.enabled
    created = {(kind, name) for verb, kind, name in wired.world.port.writes if verb == "create"}
    assert ("Deployment", "a") in created and ("Deployment", "b") in created


async def test_the_lead_ends_at_the_renew_deadline_without_the_library(wired: Wired) -> None:
    """No renewal within the deadline: the gate closes at once and the queues pause, although
    the election library still says "leader" (a hung request, a late thread)."""
    rec = wired.world.rec
    wired.take()
    await wired.until(leading=True)
    await rec.drain()
    before = writes(wired.world)
    await asyncio.sleep(DEADLINE)
    assert wired.lead._held and not wired.lead.leading
    await wired.until(leading=False)
    assert not wired.settings.posting.enabled
    wired.world.memory("a", {"vestige": {"logLevel": "debug"}})  # a change a leader would apply
    wired.world.attach()
    rec.request((NS, "a"))
    await rec.drain()
    assert writes(wired.world) == before


async def test_a_pass_in_flight_when_the_lead_is_lost_sends_no_further_write() -> None:
    """The port refuses every write once the gate is closed, even before the queues pause."""
    world = World()
    world.memory("a")
    leading = [True]
    world.port.may_write = lambda: leading[0]
    world.attach()
    leading[0] = False
    with pytest.raises(NotLeading):
        await world.rec.reconcile(NS, "a")
    assert world.port.writes == [] and world.port.events == []
    # Each write the pass tried was refused unsent (the children, then the status).
    assert world.port.refused[("patch_status", "VestigeMemory")] == 1
    assert world.port.refused[("create", "Service")] == 1
    assert sum(world.port.requests.values()) == sum(
        n for (verb, _), n in world.port.requests.items() if verb in ("get", "list")
    )


async def test_the_queue_turns_a_refused_pass_into_a_quiet_retry() -> None:
    world = World()
    world.memory("a")
    world.port.may_write = lambda: False
    world.attach()
    world.rec.request((NS, "a"))
    await world.rec.drain()
    assert world.port.writes == []
    assert world.rec.queue.depth()["backoff"] == 1  # retried (RetryLater), not logged as a bug
    world.rec.forget((NS, "a"), None)


async def test_a_regained_lead_resumes_with_a_full_resync(wired: Wired) -> None:
    rec = wired.world.rec
    wired.take()
    await wired.until(leading=True)
    await rec.drain()
    await asyncio.sleep(DEADLINE)
    await wired.until(leading=False)
    wired.take()
    await wired.until(leading=True)
    await rec.drain()
    assert rec.passes == 4
    assert wired.lead.transitions == 3


async def test_the_pause_drops_timers_and_requests() -> None:
    ran: list[str] = []

    async def worker(key: str) -> float | None:
        ran.append(key)
        return 0.05  # wants to run again soon

    queue: WorkQueue[str] = WorkQueue("q", worker, concurrency=2, max_backoff=1)
    queue.request("x")
    await queue.drain()
    assert queue.scheduled("x")
    queue.pause()
    assert not queue.scheduled("x")
    queue.request("y")
    queue.request_after("z", 0)
    await asyncio.sleep(0.1)
    await queue.drain()
    assert ran == ["x"]
    queue.resume()
    queue.request("y")
    await queue.drain()
    queue.close()
    assert ran == ["x", "y"]


def test_without_election_a_replica_always_leads() -> None:
    lead = Leadership(elect=False)
    assert lead.leading
    lead.held(False)
    assert lead.leading


def test_the_leader_gauge(wired: Wired) -> None:
    def gauge() -> float:
        for family in text_string_to_metric_families(
            Metrics(wired.world.rec, wired.lead).exposition().decode()
        ):
            for sample in family.samples:
                if sample.name == "vestige_operator_leader":
                    return sample.value
        raise AssertionError("no vestige_operator_leader")

    assert gauge() == 0
    wired.take()
    assert gauge() == 1


# -- settings ----------------------------------------------------------------------------------


def test_lease_defaults_and_overrides() -> None:
    config = OperatorConfig.from_env({})
    assert (config.leader_election, config.lease_name, config.lease_namespace) == (
        "auto",
        "vestige-operator",
        "",
    )
    timings = (
        config.lease_duration_seconds,
        config.lease_renew_deadline_seconds,
        config.lease_retry_period_seconds,
    )
    assert timings == (10, 7, 2)
    config = OperatorConfig.from_env(
        {
            "VESTIGE_LEADER_ELECTION": "false",
            "VESTIGE_LEASE_NAME": "ops",
            "VESTIGE_LEASE_NAMESPACE": "sys",
            "VESTIGE_LEASE_DURATION_SECONDS": "30",
            "VESTIGE_LEASE_RENEW_DEADLINE_SECONDS": "20",
            "VESTIGE_LEASE_RETRY_PERIOD_SECONDS": "4",
        }
    )
    assert (config.leader_election, config.lease_name, config.lease_namespace) == ("off", "ops", "sys")
    assert config.lease_duration_seconds == 30 and config.lease_renew_deadline_seconds == 20


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"VESTIGE_LEASE_RENEW_DEADLINE_SECONDS": "10"}, "must be less than"),
        ({"VESTIGE_LEASE_DURATION_SECONDS": "6"}, "must be less than"),
        ({"VESTIGE_LEASE_RETRY_PERIOD_SECONDS": "6"}, "must exceed 1.2"),
        ({"VESTIGE_LEASE_RETRY_PERIOD_SECONDS": "0"}, "at least 1"),
        ({"VESTIGE_LEASE_DURATION_SECONDS": "1.5"}, "integer"),
        ({"VESTIGE_LEADER_ELECTION": "maybe"}, "auto, true or false"),
    ],
)
def test_contradicting_lease_timings_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        OperatorConfig.from_env(env)


@pytest.fixture
def no_service_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("vestige_operator.config.SERVICE_ACCOUNT_NAMESPACE_FILE", "/nonexistent/namespace")
    yield


@pytest.mark.usefixtures("no_service_account")
def test_the_lease_namespace_is_the_setting_else_the_pods() -> None:
    assert OperatorConfig().lease_namespace_in({}) == ""  # not in a pod: auto means no election
    assert OperatorConfig().lease_namespace_in({"POD_NAMESPACE": "vestige-system"}) == "vestige-system"
    configured = OperatorConfig(lease_namespace="ops")
    assert configured.lease_namespace_in({"POD_NAMESPACE": "vestige-system"}) == "ops"


def test_the_identity_is_the_pod_name_else_host_and_pid() -> None:
    assert candidate_identity({"POD_NAME": "vestige-operator-7d9-abcde"}) == "vestige-operator-7d9-abcde"
    assert candidate_identity({}) != candidate_identity({"POD_NAME": "x"})
    assert candidate_identity({}).endswith(f"-{__import__('os').getpid()}")


def test_lease_call_failures_are_retried_attempts_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A connection error becomes a failed attempt for the library (an ApiException, not the end
    of its run); a refusal other than absent/conflict is logged once as a warning."""
    from kubernetes.client.exceptions import ApiException
    from vestige_operator.leader import _TimedLeases

    class Api:
        error: Exception | None = None

        def read_namespaced_lease(self, name: str, namespace: str, _request_timeout: float) -> str:
            if self.error is not None:
                raise self.error
            return "lease"

    api = Api()
    leases = _TimedLeases(api, 1.0)  # type: ignore[arg-type]
    api.error = ConnectionRefusedError("refused")
    for _ in range(3):
        with pytest.raises(ApiException) as raised:
            leases.read_namespaced_lease("l", "ns")
        assert raised.value.status == 0
    api.error = ApiException(status=409, reason="Conflict")
    with pytest.raises(ApiException):
        leases.read_namespaced_lease("l", "ns")
    api.error = ApiException(status=403, reason="Forbidden")
    with pytest.raises(ApiException):
        leases.read_namespaced_lease("l", "ns")
    api.error = None
    assert leases.read_namespaced_lease("l", "ns") == "lease"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["get of the Lease failed: refused", "get of the Lease failed: 403 Forbidden"]


async def test_the_gate_is_checked_when_a_write_is_sent_not_when_it_is_queued() -> None:
    """A write queued behind a busy API thread pool while this replica led is refused if the lead
    ended meanwhile: nothing is sent (no connection is even tried), nothing counted."""
    import threading

    import kubernetes.client
    from vestige_operator.cluster import Cluster

    leading = [True]
    cluster = Cluster(kubernetes.client.ApiClient(), max_workers=1, may_write=lambda: leading[0])
    busy, release = threading.Event(), threading.Event()

    def block() -> None:
        busy.set()
        release.wait(5)

    loop = asyncio.get_running_loop()
    blocker = loop.run_in_executor(cluster._executor, block)
    await loop.run_in_executor(None, busy.wait, 5)
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
    }
    write = asyncio.ensure_future(cluster.apply(manifest))
    await asyncio.sleep(0.05)  # queued behind the blocker, the gate still open
    leading[0] = False
    release.set()
    await blocker
    with pytest.raises(NotLeading):
        await write
    assert sum(cluster.requests.values()) == 0 and sum(cluster.errors.values()) == 0
    cluster.close()


async def test_a_backup_event_before_the_memories_are_listed_fails_no_backup() -> None:
    """kopf may run the backup handlers before the VestigeMemory listing is in (it is not a kopf
    index). Before the queues waited for whole caches, that backup pass found no VestigeMemory
    and failed a pending VestigeBackup older than a minute as "VestigeMemory not found"."""
    from vestige_operator.backup_controller import BACKUP_INDEX, JOB_INDEX, trim_backup

    w = Wired()
    s3 = {"endpoint": "http://s3:7070", "bucket": "backups", "credentialsSecret": {"name": "creds"}}
    w.world.memory("a", {"backup": {"destination": {"s3": s3}}})
    created = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    backup = w.world.port.put(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeBackup",
            "metadata": {"name": "nightly", "namespace": NS, "creationTimestamp": created},
            "spec": {"memory": "a"},
        }
    )
    activities = {h.id.rsplit(".", 1)[-1]: h.fn for h in w.registry._activities.get_all_handlers()}
    await activities["start_backups"](**{BACKUP_INDEX: {(NS, "a"): [trim_backup(backup)]}, JOB_INDEX: {}})
    w.start()
    try:
        w.take()
        await asyncio.sleep(0.05)
        await kopf_handler(w.registry, "vestige_backup_event")(body=backup, namespace=NS)
        await asyncio.sleep(0.05)
        assert w.world.port.writes == []  # no pass yet: the memories are not listed
        await w.list_caches()
        jobs: list[str] = []
        for _ in range(500):  # until the backup pass, which runs beside the reconciler's, is done
            w.take()  # renewed, as the election thread would: a slow machine keeps the lead
            await asyncio.sleep(0.01)
            jobs = [name for verb, kind, name in w.world.port.writes if (verb, kind) == ("create", "Job")]
            if jobs:
                break
        await w.world.rec.drain()
        phase = (w.world.port.find("VestigeBackup", NS, "nightly") or {}).get("status", {}).get("phase")
        assert phase != "Failed"
        assert len(jobs) == 1  # the backup started, with its memory found
    finally:
        await activities["stop_backups"]()
        await w.stop()
