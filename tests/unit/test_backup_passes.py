"""The backup controller's pass scheduling, on the shared work queue: a request while a pass runs
is not lost, and the tick outlives a failing round (seen on the real node: a prune Job's
completion arrived while a pass ran, and nothing acted on it until the next event)."""

from __future__ import annotations

import asyncio
from typing import Any

from vestige_operator.backup_controller import BackupController


class Recording(BackupController):
    def __init__(self) -> None:
        super().__init__(None, None, interval=0.01)  # type: ignore[arg-type]
        self.calls: list[tuple[str, str]] = []
        self.gate = asyncio.Event()

    async def reconcile(self, namespace: str, name: str) -> float | None:
        self.calls.append((namespace, name))
        if len(self.calls) == 1:
            await self.gate.wait()
        return None


async def test_a_request_during_a_pass_runs_the_pass_again() -> None:
    c = Recording()
    c.request(("ns", "a"))
    await asyncio.sleep(0)
    assert c.calls == [("ns", "a")]
    c.request(("ns", "a"))  # returns at once: the running pass will go again
    c.request(("ns", "a"))  # still one more pass, not two
    assert c.calls == [("ns", "a")]
    c.gate.set()
    await c.drain()
    assert c.calls == [("ns", "a"), ("ns", "a")]
    c.request(("ns", "a"))
    await c.drain()
    assert len(c.calls) == 3


async def test_the_tick_survives_a_failing_round() -> None:
    c = Recording()
    c.gate.set()
    rounds = 0

    def keys() -> list[Any]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return [("ns", "b")]

    c.keys = keys  # type: ignore[method-assign]
    tick = asyncio.create_task(c.tick_forever())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if c.calls:
                break
    finally:
        tick.cancel()
    await c.drain()
    c.queue.close()
    assert rounds >= 2 and ("ns", "b") in c.calls
