"""Paced fleet rollouts: at most ``limit`` agents restart at once for a change that is not theirs.

A change of the operator's default images (every operator upgrade) changes every agent's pod
template at once; applied as it comes, every agent would restart in the same minute. The plan
marks such a Deployment apply ``paced`` (``plan.fleet_only``: the agent's own inputs did not
change); this tracker admits at most ``limit`` of them at a time. An admitted agent keeps its slot
until its Deployment runs the new defaults and is available again (or is stuck: it is then
Degraded and reported, and the fleet goes on); then the agent that has waited longest is woken.
A change of an agent's own spec or token is never paced, whatever the fleet does.

State lives in this process only (one operator reconciles at a time). After a restart the agents
that were mid-rollout take their slots again on their first pass, so for the first resync the
limit may be exceeded by the number of rollouts that were in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from vestige_operator.plan import Apply, Keep, Plan
from vestige_operator.status import deployment_state
from vestige_operator.vocabulary import ANNOTATION_DEFAULT_IMAGES, Images

Key = tuple[str, str]

#: Deployment states after which a rollout no longer holds its slot.
_DONE = frozenset({"available", "suspended", "stuck"})


class Rollouts:
    """Slots for fleet rollouts (``limit`` 0: no pacing)."""

    def __init__(self, limit: int, wake: Callable[[Key], None]) -> None:
        self.limit = limit
        self._wake = wake
        self._rolling: dict[Key, None] = {}
        self._waiting: dict[Key, None] = {}  # insertion order: who waited longest

    def counts(self) -> tuple[int, int]:
        """(agents rolling out new defaults, agents waiting for a slot)."""
        return len(self._rolling), len(self._waiting)

    def pace(self, key: Key, plan: Plan) -> tuple[Plan, str | None]:
        """The plan to carry out for ``key`` and, when its paced apply is held, why it waits."""
        if not any(isinstance(a, Apply) and a.paced for a in plan.actions):
            self._waiting.pop(key, None)
            return plan, None
        if key in self._rolling or self.limit <= 0 or len(self._rolling) < self.limit:
            self._waiting.pop(key, None)
            self._rolling[key] = None
            return plan, None
        self._waiting.setdefault(key, None)
        held = tuple(
            Keep(a.kind, a.observed) if isinstance(a, Apply) and a.paced else a for a in plan.actions
        )
        position = list(self._waiting).index(key) + 1
        why = (
            f"waiting to roll out the operator's new default images: {len(self._rolling)} of at most "
            f"{self.limit} agents roll out now; {position} of {len(self._waiting)} in line"
        )
        return dataclasses.replace(plan, actions=held), why

    def observe(self, key: Key, deployment: Mapping[str, Any] | None, images: Images) -> None:
        """Free the slot of ``key`` once its Deployment runs ``images`` and is rolled out."""
        if key not in self._rolling:
            return
        if deployment is not None:
            annotations = (deployment.get("metadata") or {}).get("annotations") or {}
            if Images.decode(annotations.get(ANNOTATION_DEFAULT_IMAGES)) != images:
                return  # not applied yet (or the cache has not seen it)
            suspended = int((deployment.get("spec") or {}).get("replicas", 1)) == 0
            if deployment_state(deployment, suspended)[0] not in _DONE:
                return
        self.forget(key)

    def forget(self, key: Key) -> None:
        """``key`` holds no slot and waits for none (done, or deleted); wake who waits."""
        self._waiting.pop(key, None)
        if self._rolling.pop(key, "absent") == "absent":
            return
        free = self.limit - len(self._rolling) if self.limit > 0 else len(self._waiting)
        for waiting in list(self._waiting)[: max(free, 0)]:
            self._wake(waiting)


__all__ = ["Rollouts"]
