"""Small helpers shared by the integration tests (reads through kubectl, polling)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.integration.conftest import Kubectl


def get(kubectl: Kubectl, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object (with its managedFields), or None when it does not exist."""
    proc = kubectl("-n", ns, "get", kind, name, "-o", "json", "--show-managed-fields", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def must_get(kubectl: Kubectl, ns: str, kind: str, name: str) -> dict[str, Any]:
    obj = get(kubectl, ns, kind, name)
    assert obj is not None, f"{kind} {ns}/{name} not found"
    return obj


def wait_until(
    fn: Callable[[], Any], timeout: float = 30, what: str = "condition", interval: float = 0.3
) -> Any:
    """Poll ``fn`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
