"""Token rotation through the whole chain (issue 16, done-when 2), without a node: the operator
on the real API server rotates the Secret; a stand-in for the kubelet copies the Secret into a
directory exactly as the kubelet updates a mounted Secret volume (the ``..data`` symlink swap,
only the keys the pod's volume maps); the real bridge process reads that directory, and Vestige
(the MCP stand-in) accepts only the Secret's internal ``vestige-token``.

A client loop that uses the token of the mounted Secret runs through the whole rotation: not one
request fails; during the grace period both tokens get 200, after it the old one gets 401; the
bridge process is the same from start to end. (The real kubelet syncs after ~1 minute; the
stand-in syncs every 0.3 s, which only makes the test quick.)
"""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bridge.conftest import PYTHON, CallLog, Proc, base_env, free_port, start_bridge
from tests.bridge.test_rotation import kubelet_write
from tests.integration import operator_fixtures
from tests.integration.conftest import Kubectl
from tests.integration.helpers import must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.test_operator import apply_memory, pod_template, wait_ready

operator_factory = operator_fixtures.operator_factory
operator_process = operator_fixtures.operator_process

pytestmark = pytest.mark.timeout(300)


def secret_data(kubectl: Kubectl, ns: str, name: str) -> tuple[str, dict[str, str]]:
    secret = must_get(kubectl, ns, "secret", name)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return secret["metadata"]["resourceVersion"], data


class KubeletStandIn:
    """Copies the Secret into ``directory`` like the kubelet, with the pod volume's item mapping."""

    def __init__(self, kubectl: Kubectl, ns: str, volume: dict[str, Any], directory: Path) -> None:
        self.kubectl = kubectl
        self.ns = ns
        self.secret = volume["secret"]["secretName"]
        self.items = [(i["key"], i["path"]) for i in volume["secret"]["items"]]
        self.directory = directory
        self.version = ""
        self.syncs = 0
        self.stop = threading.Event()

    def sync(self) -> None:
        version, data = secret_data(self.kubectl, self.ns, self.secret)
        if version == self.version:
            return
        files = {path: data[key] for key, path in self.items if key in data}  # optional: skip absent
        kubelet_write(self.directory, files)
        self.version = version
        self.syncs += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.sync()
            time.sleep(0.3)


def test_rotation_through_operator_secret_volume_and_bridge(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess, tmp_path: Path
) -> None:
    apply_memory(kubectl, namespace, "chain")
    wait_ready(kubectl, namespace, "chain")
    template = pod_template(kubectl, namespace, "chain")
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "auth"]
    _, data = secret_data(kubectl, namespace, "chain-auth")
    old, internal = data["token"], data["vestige-token"]

    # Vestige accepts only its internal token; the bridge gets it as VESTIGE_MCP_TOKEN.
    port = free_port()
    calls = CallLog(tmp_path / "standin-calls.jsonl")
    argv = [PYTHON, "-m", "tests.bridge.standin", "--generation", "v3", "--port", str(port)]
    argv += ["--token", internal, "--call-log", str(calls.path)]
    # An open stdin: the stand-in, like Vestige 3.x, ends when its stdin reaches EOF.
    vestige = (
        Proc("standin", argv, base_env(), tmp_path / "standin.log", port, keep_stdin=True).start().wait_port()
    )
    kubelet = KubeletStandIn(kubectl, namespace, volume, tmp_path / "auth")
    kubelet.sync()
    syncer = threading.Thread(target=kubelet.run, daemon=True)
    syncer.start()
    bridge = start_bridge(
        tmp_path,
        None,
        token=None,
        VESTIGE_MCP_URL=f"http://127.0.0.1:{port}/mcp",
        VESTIGE_MCP_TOKEN=internal,
        VESTIGE_AUTH_TOKEN_DIR=str(kubelet.directory),
        VESTIGE_AUTH_RELOAD_SECONDS="0.2",
    )
    assert bridge.proc.popen is not None
    pid = bridge.proc.popen.pid
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=bridge.url, timeout=30) as http:
            while not stop.is_set():
                token = (kubelet.directory / "token").read_text()
                code = http.post(
                    "/search", json={"query": "chain"}, headers={"Authorization": f"Bearer {token}"}
                ).status_code
                results.append((code, token[:6]))

    def status(token: str) -> int:
        return httpx.post(
            bridge.url + "/search",
            json={"query": "x"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).status_code

    client = threading.Thread(target=loop, daemon=True)
    try:
        assert status(old) == 200
        assert status(internal) == 401  # Vestige's token does not open the bridge
        client.start()
        wait_until(lambda: len(results) >= 5, 60, "the client loop")

        kubectl(
            "-n",
            namespace,
            "annotate",
            "vmem",
            "chain",
            "vestige.dev/rotate-token=chain-1",
            "vestige.dev/rotate-token-grace=15s",
        )
        memory = wait_until(
            lambda: (
                (m := must_get(kubectl, namespace, "vmem", "chain"))["status"].get("tokenRotatedAt") and m
            ),
            30,
            "the rotation",
        )
        _, data = secret_data(kubectl, namespace, "chain-auth")
        new = data["token"]
        expires = datetime.fromisoformat(data["token-previous-expires"].replace("Z", "+00:00"))
        assert new != old and data["token-previous"] == old
        wait_until(lambda: status(new) == 200, 30, "the bridge to accept the new token")
        in_grace = 0
        while datetime.now(UTC).timestamp() < expires.timestamp() - 3:
            assert status(old) == 200
            assert status(new) == 200
            in_grace += 1
            time.sleep(0.2)
        assert in_grace > 0
        wait_until(lambda: datetime.now(UTC) >= expires, 30, "the expiry")
        assert status(old) == 401
        assert status(new) == 200

        # The operator removes the previous token; the kubelet stand-in carries it over.
        def cleaned() -> bool:
            return "token-previous" not in secret_data(kubectl, namespace, "chain-auth")[1]

        wait_until(cleaned, operator_process.resync_seconds + 30, "the previous token to be removed")
        wait_until(lambda: not (kubelet.directory / "token-previous").exists(), 30, "the volume update")
        assert status(old) == 401
        count = len(results)
        wait_until(lambda: len(results) >= count + 5, 60, "requests after the clean-up")
        assert memory["status"]["tokenRotatedAt"]
        assert pod_template(kubectl, namespace, "chain") == template  # never restarted for it
    finally:
        stop.set()
        kubelet.stop.set()
        client.join(timeout=60)
        syncer.join(timeout=30)
        alive = bridge.proc.popen.poll() is None
        bridge.stop()
        vestige.stop()

    assert alive and bridge.proc.popen.pid == pid, "the bridge restarted or died"
    failures = [r for r in results if r[0] != 200]
    assert failures == [], f"{len(failures)} failed request(s): {failures[:5]}"
    assert {t for _, t in results} == {old[:6], new[:6]}, "the loop did not run through the rotation"
    assert kubelet.syncs >= 3  # initial, rotation, clean-up
    assert calls.calls(), "no call reached Vestige"
    log = bridge.proc.output() + operator_process.log_path.read_text(errors="replace")
    events = kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    status_text = json.dumps(must_get(kubectl, namespace, "vmem", "chain")["status"])
    for secret in (old, new, internal):
        assert secret not in log and secret not in events and secret not in status_text
