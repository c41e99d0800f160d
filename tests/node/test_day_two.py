"""Day-two operations on a running agent (issue 16), on the real node: `kubectl vestige connect`
and `logs` against a real bridge, and a token rotation without downtime in a real pod (the bridge
follows the Secret the kubelet refreshes in its volume; no restart, no failed request)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_until
from tests.integration.test_kubectl_plugin import PLUGIN, plugin_env, run_connect, sigint_as_from_a_terminal
from tests.node.helpers import Agent, Agents

pytestmark = pytest.mark.timeout(1800)
GRACE_SECONDS = 90


@pytest.fixture(scope="module")
def live(agents: Agents) -> Agent:
    agent = agents.create("day-two")
    agent.wait_ready()
    return agent


def plugin(rn_kubeconfig: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(PLUGIN), *args],
        env=plugin_env(rn_kubeconfig),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"kubectl vestige {' '.join(args)}: {proc.stderr}"
    return proc


def test_connect_and_logs_reach_the_real_bridge(agents: Agents, live: Agent) -> None:
    kc = agents.rn.kubeconfig
    session = run_connect(plugin_env(kc), live.name, live.namespace)
    try:
        token = plugin(kc, "token", live.name, "-n", live.namespace).stdout.strip()
        assert token == live.token()
        assert session.config["authToken"] == token
        assert session.config["agentId"] == live.name
        health = httpx.get(f"{session.url}/health", timeout=30)  # a probe path: no token needed
        assert health.status_code == 200 and health.json()["vestige_connected"] is True, health.text
        auth = {"Authorization": f"Bearer {token}"}
        ok = httpx.post(f"{session.url}/search", json={"query": "x"}, headers=auth, timeout=30)
        assert ok.status_code == 200, ok.text
        assert httpx.post(f"{session.url}/search", json={"query": "x"}, timeout=30).status_code == 401
    finally:
        code = session.interrupt()
    assert code == 0
    logs = plugin(kc, "logs", live.name, "-n", live.namespace, "-c", "bridge", "--tail", "50").stdout
    assert logs.strip()
    follow = subprocess.Popen(
        [str(PLUGIN), "logs", live.name, "-n", live.namespace, "-c", "bridge", "-f", "--tail", "1"],
        env=plugin_env(kc),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_from_a_terminal,
    )
    assert follow.stdout is not None and follow.stdout.readline()
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=30) == 0


def _status(http: httpx.Client, token: str) -> int:
    resp = http.post("/search", json={"query": "rotation"}, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code


def test_token_rotation_without_downtime(agents: Agents, live: Agent) -> None:
    kc = agents.rn.kubeconfig
    old = live.token()
    before_pod = live.pod()
    bridge_id = live.container_id("bridge")
    failures: list[Any] = []
    calls: list[float] = []  # when each call through the old token answered 200
    stop = threading.Event()
    with live.client(token=old) as http:

        def loop() -> None:
            while not stop.is_set():
                try:
                    code = _status(http, old)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                else:
                    if code != 200:
                        failures.append(code)
                    else:
                        calls.append(time.monotonic())
                time.sleep(0.25)

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        try:
            time.sleep(2)
            started = time.monotonic()
            grace = f"{GRACE_SECONDS}s"
            plugin(kc, "rotate-token", live.name, "-n", live.namespace, "--grace", grace, "--wait")
            rotated = time.monotonic()
            new = live.token()
            assert new != old
            # The kubelet refreshes the mounted Secret; the bridge follows it without a restart.
            wait_until(
                lambda: _status(http, new) == 200,
                timeout=GRACE_SECONDS - 20,
                what="the new token",
                interval=1,
            )
            new_works = time.monotonic()
            time.sleep(2)  # the loop keeps going once the new token works
            assert _status(http, old) == 200, "the old token stopped working inside the grace period"
            assert time.monotonic() - rotated < GRACE_SECONDS - 5
        finally:
            stop.set()
            worker.join(timeout=30)
        # The old token answered 200 all along: before the rotation, while the kubelet refreshed
        # the Secret, and after the bridge took the new one; no call failed.
        assert not failures, f"failures through the rotation: {failures[:10]}"
        assert any(t < started for t in calls), "no call before the rotation"
        assert any(started <= t <= new_works for t in calls), "no call while the token rotated"
        assert any(t > new_works for t in calls), "no call after the new token worked"
        # After the grace period the old token is refused; the new one keeps working.
        wait_until(
            lambda: _status(http, old) == 401,
            timeout=GRACE_SECONDS + 60,
            what="the old token to expire",
            interval=2,
        )
        assert _status(http, new) == 200
    after = live.pod()
    assert after["metadata"]["uid"] == before_pod["metadata"]["uid"], "the pod was replaced"
    assert live.container_id("bridge") == bridge_id, "the bridge container was restarted"
    assert live.restart_counts() == {"vestige": 0, "bridge": 0}
    status = live.resource()["status"]
    assert status.get("tokenRotatedAt"), status
    assert old not in str(status) and new not in str(status)
