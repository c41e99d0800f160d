"""Token rotation without a restart (issue 16): the real bridge process reads its tokens from a
directory that the test updates exactly as the kubelet updates a mounted Secret volume.

The kubelet's AtomicWriter layout: the files live in a hidden timestamped directory
(``..2026_01_02_03_04_05.123456789``), ``..data`` is a symlink to it, and each key is a symlink
``token -> ..data/token``. An update writes a new timestamped directory, points a temporary
symlink at it and renames that over ``..data`` (atomic), then adds symlinks for new keys, removes
those of deleted keys and removes the old directory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.bridge.conftest import Bridge, Upstream, start_bridge

OLD = "old-agent-token-7f1d2c3b4a5968778695a4b3"
NEW = "new-agent-token-0a9b8c7d6e5f4a3b2c1d0e9f"
POLL = "0.2"  # VESTIGE_AUTH_RELOAD_SECONDS: the kubelet's sync is ~1 min; speed only


def kubelet_write(directory: Path, files: dict[str, str]) -> None:
    """Update ``directory`` the way the kubelet's AtomicWriter does (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "..data"
    old_target = os.readlink(data) if data.is_symlink() else None
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f") + f"{time.monotonic_ns() % 1000:03d}"
    generation = directory / stamp
    generation.mkdir()
    for name, content in files.items():
        (generation / name).write_text(content)
        os.chmod(generation / name, 0o644)
    tmp_link = directory / "..data_tmp"
    os.symlink(stamp, tmp_link)
    os.rename(tmp_link, data)  # the atomic switch
    for name in files:
        link = directory / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old_target is not None and (directory / old_target).is_dir():
        for inner in (directory / old_target).iterdir():
            inner.unlink()
        (directory / old_target).rmdir()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(bridge: Bridge, token: str) -> int:
    response = httpx.post(
        bridge.url + "/search",
        json={"query": "rotation"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.status_code


@dataclass
class Agent:
    """A client in a loop that, like a real agent, uses whatever token its Secret holds now."""

    bridge: Bridge
    directory: Path
    results: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.bridge.url, timeout=30) as http:
            while not self.stop.is_set():
                token = (self.directory / "token").read_text().strip()
                try:
                    code = http.post(
                        "/search", json={"query": "loop"}, headers={"Authorization": f"Bearer {token}"}
                    ).status_code
                except httpx.HTTPError as exc:
                    code = -1
                    token = type(exc).__name__
                self.results.append((code, token[:8]))


@pytest.fixture
def token_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "auth"
    kubelet_write(directory, {"token": OLD})
    yield directory


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_rotation_with_grace_and_no_restart(tmp_path: Path, token_dir: Path, v3_upstream: Upstream) -> None:
    bridge = start_bridge(
        tmp_path,
        v3_upstream,
        token=None,
        VESTIGE_AUTH_TOKEN_DIR=str(token_dir),
        VESTIGE_AUTH_RELOAD_SECONDS=POLL,
    )
    assert bridge.proc.popen is not None
    pid = bridge.proc.popen.pid
    agent = Agent(bridge, token_dir)
    loop = threading.Thread(target=agent.run, daemon=True)
    try:
        assert status(bridge, OLD) == 200
        assert status(bridge, NEW) == 401
        loop.start()
        wait_for(lambda: len(agent.results) >= 5, 60, "the request loop to run")

        # The operator's rotation: new token, the old one kept until its expiry.
        grace = timedelta(seconds=8)
        expires = datetime.now(UTC).replace(microsecond=0) + grace
        kubelet_write(
            token_dir, {"token": NEW, "token-previous": OLD, "token-previous-expires": rfc3339(expires)}
        )
        wait_for(lambda: status(bridge, NEW) == 200, 30, "the bridge to accept the new token")
        # During the grace period both tokens get 200 (checked only while clearly inside it).
        checked_in_grace = 0
        while datetime.now(UTC) < expires - timedelta(seconds=2):
            assert status(bridge, OLD) == 200
            assert status(bridge, NEW) == 200
            checked_in_grace += 1
        assert checked_in_grace > 0, "the grace period passed before it could be checked"
        # After it the old token gets 401, at once (the expiry is checked per request).
        wait_for(lambda: datetime.now(UTC) >= expires, 30, "the end of the grace period")
        assert status(bridge, OLD) == 401
        assert status(bridge, NEW) == 200

        # The operator removes the previous-token keys after the expiry.
        kubelet_write(token_dir, {"token": NEW})
        time.sleep(float(POLL) * 3)
        assert status(bridge, OLD) == 401
        assert status(bridge, NEW) == 200

        def metrics() -> str:
            return httpx.get(bridge.url + "/metrics", timeout=30).text

        # start, rotation, clean-up
        wait_for(lambda: "vestige_bridge_token_reloads_total 3.0" in metrics(), 30, "three token loads")
        assert "vestige_bridge_previous_token_expiry_timestamp_seconds 0.0" in metrics()
        count = len(agent.results)
        wait_for(lambda: len(agent.results) >= count + 5, 60, "more requests after the clean-up")
    finally:
        agent.stop.set()
        if loop.is_alive():
            loop.join(timeout=60)
        alive = bridge.proc.popen.poll() is None
        bridge.stop()

    assert alive, "the bridge process died"
    assert bridge.proc.popen.pid == pid
    failures = [r for r in agent.results if r[0] != 200]
    assert failures == [], f"{len(failures)} failed request(s) in the loop: {failures[:5]}"
    used = {token for _, token in agent.results}
    assert used == {OLD[:8], NEW[:8]}, "the loop did not run through the rotation"
    log = bridge.proc.output()
    assert "tokens reloaded" in log
    for secret in (OLD, NEW):
        assert secret not in log


def test_unreadable_generation_keeps_the_last_tokens(
    tmp_path: Path, token_dir: Path, v3_upstream: Upstream
) -> None:
    """A ``..data`` pointing at a directory that is gone (the kubelet mid-swap) changes nothing;
    a directory without ``token`` refuses everyone (fail closed)."""
    bridge = start_bridge(
        tmp_path,
        v3_upstream,
        token=None,
        VESTIGE_AUTH_TOKEN_DIR=str(token_dir),
        VESTIGE_AUTH_RELOAD_SECONDS=POLL,
    )
    try:
        assert status(bridge, OLD) == 200
        data = token_dir / "..data"
        os.symlink("..gone", token_dir / "..data_tmp")
        os.rename(token_dir / "..data_tmp", data)
        time.sleep(float(POLL) * 5)
        assert status(bridge, OLD) == 200
        kubelet_write(token_dir, {"token-previous": OLD, "token-previous-expires": "not a time"})
        wait_for(lambda: status(bridge, OLD) == 401, 30, "a directory without token to refuse everyone")
        kubelet_write(token_dir, {"token": NEW})
        wait_for(lambda: status(bridge, NEW) == 200, 30, "the new token")
    finally:
        bridge.stop()


def test_refuses_to_start_with_an_empty_token_dir(tmp_path: Path) -> None:
    from tests.bridge.test_security import run_bridge_expecting_exit

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_bridge_expecting_exit({"VESTIGE_AUTH_TOKEN_DIR": str(empty)})
    assert result.returncode == 2
    assert "refusing to start" in result.stderr
    assert "no readable 'token'" in result.stderr
