"""The shared work queue: merging per key, the concurrency limit, backoff, requeue-after."""

from __future__ import annotations

import asyncio

from vestige_operator.workqueue import RetryLater, WorkQueue


async def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_requests_for_a_running_key_merge_into_one_more_pass() -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def work(key: str) -> float | None:
        calls.append(key)
        await gate.wait()
        return None

    q: WorkQueue[str] = WorkQueue("t", work, concurrency=4, max_backoff=1)
    q.request("a")
    await asyncio.sleep(0)
    for _ in range(5):
        q.request("a")
    assert q.depth() == {"queued": 1, "running": 1, "backoff": 0}
    gate.set()
    await q.drain()
    assert calls == ["a", "a"]
    assert q.passes == 2


async def test_at_most_concurrency_passes_run_at_once() -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def work(key: int) -> float | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return None

    q: WorkQueue[int] = WorkQueue("t", work, concurrency=2, max_backoff=1)
    for key in range(5):
        q.request(key)
    await until(lambda: running == 2, "two passes running")
    assert q.depth() == {"queued": 3, "running": 2, "backoff": 0}
    gate.set()
    await q.drain()
    assert peak == 2 and q.passes == 5


async def test_a_failing_pass_backs_off_exponentially_and_success_resets_it() -> None:
    outcomes: list[BaseException | None] = [RetryLater("conflict"), ValueError("bug"), None]
    results: list[str] = []

    async def work(key: str) -> float | None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return None

    q: WorkQueue[str] = WorkQueue(
        "t", work, concurrency=1, max_backoff=0.05, base_backoff=0.001, on_pass=lambda r, _: results.append(r)
    )
    assert [q._next_backoff("x") for _ in range(3)] == [0.002, 0.004, 0.008]
    assert q._next_backoff("x") <= 0.05 and max(q._next_backoff("x") for _ in range(20)) == 0.05
    q.forget("x")
    q.request("a")
    await until(lambda: results == ["retry", "error", "success"], "two retries then success")
    await q.drain()
    assert q.depth() == {"queued": 0, "running": 0, "backoff": 0}
    assert "a" not in q._failures


async def test_a_pass_returns_when_it_wants_to_run_again() -> None:
    calls = 0

    async def work(key: str) -> float | None:
        nonlocal calls
        calls += 1
        return 0.01 if calls == 1 else None

    q: WorkQueue[str] = WorkQueue("t", work, concurrency=1, max_backoff=1)
    q.request("a")
    await q.drain()
    assert calls == 1 and q.scheduled("a")
    assert q.depth()["backoff"] == 0, "a requeue-after is not a backoff"
    await until(lambda: calls == 2, "the requeue-after pass")
    await q.drain()
    assert not q.scheduled("a")


async def test_a_request_replaces_the_timer_and_forget_drops_it() -> None:
    calls = 0

    async def work(key: str) -> float | None:
        nonlocal calls
        calls += 1
        return 3600.0

    q: WorkQueue[str] = WorkQueue("t", work, concurrency=1, max_backoff=1)
    q.request("a")
    await q.drain()
    assert q.scheduled("a")
    q.request("a")  # runs now; the pass arms its own timer again
    await q.drain()
    assert calls == 2 and q.scheduled("a")
    q.forget("a")
    assert not q.scheduled("a")
    q.close()
