"""One keyed work queue for both controllers (VestigeMemory passes and backup passes).

The rules, in one place:

* **merging**: a request for a key that is queued, waiting or running yields at most one more
  pass (a request during a pass makes the pass go once more when it ends, so an event it started
  too early to see is acted on now);
* **one pass per key** at a time, and at most ``concurrency`` passes at once;
* **backoff**: a pass that raises is retried after ``base * 2**failures`` seconds, capped at
  ``max_backoff`` (``RetryLater``: an expected transient error, logged as a warning; anything
  else: logged with its traceback); a successful pass resets the count;
* **requeue-after**: a pass returns when it wants to run again (seconds, None: not by itself),
  e.g. when a previous token's grace period ends or a backup is next due. A later request
  replaces that timer (the new pass returns its own), so passes never arm timers themselves.

* **pause** (a replica that does not lead, leader.py): requests and timers are dropped and a
  pass in flight re-arms nothing (its writes are refused by the API port meanwhile); ``resume``
  takes requests again (the caller then requests every key: a full resync).

``depth()`` (queued / running / backoff) and ``passes`` feed the operator's metrics; ``on_pass``
is called after every pass with its result ("success", "retry", "error") and duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger("vestige_operator.workqueue")

K = TypeVar("K", bound=Hashable)
#: A pass: its key in, the seconds after which it wants to run again out (None: only on request).
Worker = Callable[[K], Awaitable[float | None]]


class RetryLater(Exception):
    """A pass ended on a transient error: the queue retries it with backoff."""


class WorkQueue(Generic[K]):
    """Schedules passes of ``worker`` per key (see the module docstring for the rules)."""

    def __init__(
        self,
        name: str,
        worker: Worker[K],
        *,
        concurrency: int,
        max_backoff: float,
        base_backoff: float = 0.5,
        on_pass: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self._worker = worker
        self._max_backoff = max_backoff
        self._base_backoff = base_backoff
        self.on_pass = on_pass
        self._semaphore = asyncio.Semaphore(concurrency)
        self._running: set[K] = set()  # keys with a task (waiting for a slot or in a pass)
        self._pending: set[K] = set()  # keys requested again while their task runs
        self._active = 0  # passes holding a slot
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._backoff: set[K] = set()  # keys whose timer is a retry after a failure
        self._tasks: set[asyncio.Task[None]] = set()
        self.passes = 0
        self.paused = False

    # -- requests ----------------------------------------------------------------------------

    def request(self, key: K) -> None:
        """Ask for a pass of ``key`` now; merged with a queued, waiting or running one."""
        if self.paused:
            return
        if key in self._running:
            self._pending.add(key)
            return
        self._cancel_timer(key)
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key), name=f"{self.name} {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_after(self, key: K, seconds: float, *, backoff: bool = False) -> None:
        """Ask for a pass of ``key`` in ``seconds`` (replacing the key's earlier timer)."""
        if self.paused:
            return
        self._cancel_timer(key)
        self._timers[key] = asyncio.get_running_loop().call_later(max(0.0, seconds), self._fire, key)
        if backoff:
            self._backoff.add(key)

    def forget(self, key: K) -> None:
        """Drop a key's timers and failure count (its object is gone)."""
        self._cancel_timer(key)
        self._failures.pop(key, None)

    def depth(self) -> dict[str, int]:
        """Keys waiting for a pass (queued), in a pass (running), waiting to retry (backoff)."""
        waiting = len(self._running) - self._active + len(self._pending)
        return {"queued": waiting, "running": self._active, "backoff": len(self._backoff)}

    def scheduled(self, key: K) -> bool:
        """Whether a timer (requeue-after or backoff) is armed for ``key``."""
        return key in self._timers

    async def drain(self) -> None:
        """Wait for the passes in flight (timers are not waited for)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Cancel every timer (shutdown)."""
        for key in list(self._timers):
            self._cancel_timer(key)

    def pause(self) -> None:
        """Take no request until ``resume``: timers and repeat requests are dropped, failure
        counts forgotten; passes in flight end on their own and re-arm nothing."""
        self.paused = True
        self.close()
        self._pending.clear()
        self._failures.clear()

    def resume(self) -> None:
        """Take requests again (the caller requests every key it knows)."""
        self.paused = False

    # -- internals ---------------------------------------------------------------------------

    def _cancel_timer(self, key: K) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._backoff.discard(key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._backoff.discard(key)
        self.request(key)

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._pending.discard(key)
                async with self._semaphore:
                    if self.paused:  # stopped leading while this key waited for a slot
                        return
                    self._cancel_timer(key)  # this pass decides when to run again
                    after = await self._pass(key)
                if key not in self._pending:
                    if after is not None:
                        self.request_after(key, after[0], backoff=after[1])
                    return
        finally:
            self._running.discard(key)

    async def _pass(self, key: K) -> tuple[float, bool] | None:
        started = time.monotonic()
        result = "success"
        self._active += 1
        again: tuple[float, bool] | None = None
        try:
            requeue = await self._worker(key)
        except Exception as exc:
            if self.paused:  # its writes were refused: this replica stopped leading meanwhile
                result = "retry"
                logger.debug("%s pass of %s ended while paused: %s", self.name, key, exc)
            elif isinstance(exc, RetryLater):
                result = "retry"
                again = (self._next_backoff(key), True)
                logger.warning("%s pass of %s will be retried in %.1fs: %s", self.name, key, again[0], exc)
            else:
                result = "error"
                again = (self._next_backoff(key), True)
                logger.exception("%s pass of %s failed (retried in %.1fs)", self.name, key, again[0])
        else:
            self._failures.pop(key, None)
            if requeue is not None and not self.paused:
                again = (requeue, False)
        finally:
            self._active -= 1
            self.passes += 1
            took = time.monotonic() - started
            if self.on_pass is not None:
                self.on_pass(result, took)
            logger.debug("%s pass of %s took %.3fs", self.name, key, took)
        return again

    def _next_backoff(self, key: K) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return min(self._max_backoff, self._base_backoff * 2.0 ** min(failures, 16))
