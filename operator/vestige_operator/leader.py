"""Leader election: of the operator's replicas exactly one writes, chosen with a Lease.

The election is the official ``kubernetes`` client's ``kubernetes.leaderelection`` (a port of
client-go's: a ``coordination.k8s.io/v1`` Lease, create or replace guarded by the
resourceVersion read just before, a candidate takes an unrenewed Lease only ``lease duration``
after it *saw* the last renewal on its own clock). It is blocking, so it runs in one daemon
thread; this module adds what the operator needs around it:

* **the gate** (``Leadership.leading``): true only while the library holds the Lease AND the
  last successful create/replace of the Lease was *sent* less than ``renew deadline`` ago. Any
  other replica can take the Lease only ``lease duration`` after it saw that write, so with
  renew deadline < lease duration this replica stops before another can start, even when a
  request hangs or the library's thread is late. ``cluster.Cluster`` checks it in its sending
  thread just before every write (so a write queued behind a hung request is refused too);
* **transitions on the event loop** (``watch``): the listeners (handlers.py) pause the work
  queues on a loss and resume them with a full resync of every cached key on a gain;
* **request timeouts** (the library sets none, so a hung GET would stall it for ever), the
  operator's own API client, and a quiet library logger (it logs every 2 s at INFO);
* **release** on a clean shutdown: the Lease's holder is cleared (guarded by its
  resourceVersion, only if this replica still holds it), so a standby takes over at its next
  retry instead of waiting out the lease duration; the library has no release.

A standby keeps kopf's watches and caches warm (they are reads), so a takeover starts with a
full resync from memory, not a relist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from vestige_operator.config import DEFAULT_LEASE_RENEW_DEADLINE_SECONDS, OperatorConfig

logger = logging.getLogger("vestige_operator.leader")

Listener = Callable[[bool], None]


def candidate_identity(env: dict[str, str] | None = None) -> str:
    """The candidate's identity: the pod name (downward API ``POD_NAME``), else host and pid
    (two local processes must differ)."""
    env = dict(os.environ) if env is None else env
    return env.get("POD_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}"


class Leadership:
    """Whether this replica may write, and the listeners told when that changes.

    Without election (``elect=False``) it always leads. ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        elect: bool,
        renew_deadline: float = DEFAULT_LEASE_RENEW_DEADLINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        identity: str = "",
    ) -> None:
        self.elect = elect
        self.identity = identity
        self.renew_deadline = renew_deadline
        self._clock = clock
        self._held = False  # the election library says: leader
        self._renewed_at: float | None = None  # when the last successful Lease write was sent
        self._listeners: list[Listener] = []
        self._acted = not elect  # the state the listeners were last told
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transitions = 0

    @property
    def leading(self) -> bool:
        """True while this replica may write (read from any thread)."""
        if not self.elect:
            return True
        renewed = self._renewed_at
        return self._held and renewed is not None and self._clock() - renewed < self.renew_deadline

    def listen(self, listener: Listener) -> None:
        """Call ``listener(leading)`` on the event loop at every change (after ``watch`` starts)."""
        self._listeners.append(listener)

    # -- fed by the election (any thread) -------------------------------------------------------

    def renewed(self, sent_at: float) -> None:
        """A create/replace of the Lease sent at ``sent_at`` succeeded: held until sent_at + deadline."""
        self._renewed_at = sent_at
        self._notify()

    def held(self, held: bool) -> None:
        """The election library started (True) or stopped (False) leading."""
        self._held = held
        self._notify()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the process is stopping
                loop.call_soon_threadsafe(wake.set)

    # -- on the event loop ----------------------------------------------------------------------

    async def watch(self) -> None:
        """Tell the listeners about every change of ``leading``, including the renew deadline
        passing without a renewal (a timer, not the library, decides that)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            leading = self.leading
            if leading != self._acted:
                self._acted = leading
                self.transitions += 1
                logger.log(
                    logging.INFO if leading else logging.WARNING,
                    "%s the lead (%s)",
                    "took" if leading else "lost",
                    self.identity,
                    extra={"leading": leading, "identity": self.identity},
                )
                for listener in self._listeners:
                    try:
                        listener(leading)
                    except Exception:
                        logger.exception("a leadership listener failed")
            timeout = None
            if leading and self._renewed_at is not None:
                timeout = max(0.0, self._renewed_at + self.renew_deadline - self._clock()) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


class _TimedLeases:
    """The three Lease calls the library makes, each with a request timeout. A refusal other than
    "absent" or "conflict" (RBAC, an unreachable API server) is logged as a warning once until a
    call succeeds again: the library logs it at INFO only, and a replica that can never lead
    should say why."""

    def __init__(self, api: kubernetes.client.CoordinationV1Api, timeout: float) -> None:
        self._api = api
        self._timeout = timeout
        self._failing: str | None = None

    def _call(self, verb: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except ApiException as exc:
            if exc.status not in (404, 409):
                self._warn(f"{verb} of the Lease failed: {exc.status} {exc.reason}")
            raise
        except Exception as exc:  # urllib3: connection refused, timeouts
            self._warn(f"{verb} of the Lease failed: {exc}")
            # As an ApiException the library counts it as one failed attempt (and retries
            # within the renew deadline) instead of ending its run.
            raise ApiException(status=0, reason=str(exc)[:200]) from exc
        if self._failing is not None:
            logger.info("the Lease is reachable again")
            self._failing = None
        return result

    def _warn(self, message: str) -> None:
        if message != self._failing:
            logger.warning(message)
            self._failing = message

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        return self._call(
            "get", lambda: self._api.read_namespaced_lease(name, namespace, _request_timeout=self._timeout)
        )

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return self._call(
            "create",
            lambda: self._api.create_namespaced_lease(namespace, body, _request_timeout=self._timeout),
        )

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return self._call(
            "update",
            lambda: self._api.replace_namespaced_lease(
                name=name, namespace=namespace, body=body, _request_timeout=self._timeout
            ),
        )


class _Lock(LeaseLock):  # type: ignore[misc]  # the library is untyped
    """The library's LeaseLock on the operator's API client, reporting each successful write (by
    when it was sent) to ``Leadership`` and refusing every request once closed (released)."""

    def __init__(
        self,
        name: str,
        namespace: str,
        leadership: Leadership,
        api_client: kubernetes.client.ApiClient,
        timeout: float,
    ) -> None:
        super().__init__(name, namespace, leadership.identity)
        self.api_instance = _TimedLeases(kubernetes.client.CoordinationV1Api(api_client), timeout)
        self._leadership = leadership
        self._mutex = threading.Lock()
        self.closed = False

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        if self.closed:
            return False, ApiException(status=0, reason="released")
        found, record = super().get(name, namespace)
        holder = getattr(record, "holder_identity", None) if found else None
        if found and holder and holder != self.identity and self._leadership._held:
            self._leadership.held(False)  # someone else holds it: stop now, not at the deadline
        return found, record

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return self._write(lambda: super(_Lock, self).create(name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return self._write(lambda: super(_Lock, self).update(name, namespace, updated_record))

    def _write(self, send: Callable[[], bool]) -> bool:
        with self._mutex:
            if self.closed:
                return False
            sent_at = self._leadership._clock()
            ok = bool(send())
            if ok:
                self._leadership.renewed(sent_at)
            return ok

    def release(self) -> bool:
        """Clear the holder if it is still this replica (resourceVersion-guarded); whether it did.
        No request of the election is sent afterwards."""
        with self._mutex:
            self.closed = True
            api = self.api_instance
            try:
                lease = api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return False
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = datetime.now(UTC)
                api.replace_namespaced_lease(self.name, self.namespace, lease)  # carries its resourceVersion
                return True
            except Exception as exc:  # a conflict (someone took it), an unreachable API server
                logger.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, exc)
                return False


class Elector:
    """Runs the election for ``leadership`` in a daemon thread (``start``), releases on ``stop``."""

    def __init__(
        self,
        leadership: Leadership,
        config: OperatorConfig,
        namespace: str,
        api_client: kubernetes.client.ApiClient,
    ) -> None:
        self.leadership = leadership
        self.name = config.lease_name
        self.namespace = namespace
        self._config = config
        timeout = max(1.0, config.lease_renew_deadline_seconds / 2)
        self._lock = _Lock(config.lease_name, namespace, leadership, api_client, timeout)
        self._thread: threading.Thread | None = None
        # The library logs each attempt (every retry period) at INFO; transitions are logged here.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c = self._config
        while not self._lock.closed:
            election = leaderelection.LeaderElection(
                electionconfig.Config(
                    self._lock,
                    lease_duration=c.lease_duration_seconds,
                    renew_deadline=c.lease_renew_deadline_seconds,
                    retry_period=c.lease_retry_period_seconds,
                    onstarted_leading=lambda: self.leadership.held(True),
                    onstopped_leading=lambda: self.leadership.held(False),
                )
            )
            try:
                election.run()  # returns once a held Lease could not be renewed
            except Exception:
                logger.exception("leader election failed; retrying")
                self.leadership.held(False)
                time.sleep(c.lease_retry_period_seconds)

    async def stop(self) -> None:
        """Stop leading and release the Lease (call after the passes in flight ended)."""
        self.leadership.held(False)
        released = await asyncio.get_running_loop().run_in_executor(None, self._lock.release)
        if released:
            logger.info("released the Lease %s/%s", self.namespace, self.name)
