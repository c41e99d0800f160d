"""The operator as a real subprocess (`python -m vestige_operator run`) against the local cluster.

Import the fixtures into a test module with
``from tests.integration.operator_fixtures import operator_factory, operator_process  # noqa: F401``.
``operator_process`` runs one operator for the test's fresh namespace; ``operator_factory``
starts more (other namespaces, other settings) and lets a fault test stop or kill them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Short enough that "restored within the resync interval" is quick to observe.
RESYNC_SECONDS = 3.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    """A running operator; its JSON log lines and its liveness/probe endpoint."""

    proc: subprocess.Popen[bytes]
    namespaces: tuple[str, ...]
    log_path: Path
    liveness_url: str
    resync_seconds: float
    metrics_url: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(repr=False, default_factory=dict)
    _log_file: Any = field(repr=False, default=None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def probe(self) -> dict[str, Any]:
        """The operator's probe results (reconcile passes and API requests by verb)."""
        with urllib.request.urlopen(self.liveness_url, timeout=5) as resp:
            return dict(json.loads(resp.read())["reconciler"])

    def metrics(self) -> str:
        """The operator's Prometheus exposition (``/metrics``)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return resp.read().decode()

    def api_requests(self) -> int:
        return int(self.probe()["api_requests"])

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                self.probe()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"operator not live after {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return int(self.proc.returncode)

    def restart(self) -> None:
        """Stop (if running) and start the same command again, appending to the same log."""
        self.stop()
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL (a crash, for fault tests)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(scope="session")
def operator_factory(
    kubeconfig: str, crd_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorFactory]:
    """Start operators as subprocesses; all are stopped at the end of the session."""
    started: list[OperatorProcess] = []
    logs = tmp_path_factory.mktemp("operator-logs")

    def start(
        *namespaces: str,
        resync_seconds: float = RESYNC_SECONDS,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> OperatorProcess:
        port = free_port()
        liveness = f"http://127.0.0.1:{port}/healthz"
        metrics_port = free_port()
        log_path = logs / f"operator-{'-'.join(namespaces) or 'all'}-{len(started)}.log"
        log_file = log_path.open("wb")
        args = [sys.executable, "-m", "vestige_operator", "run", "--liveness", liveness]
        args += [f"--namespace={ns}" for ns in namespaces] or ["--all-namespaces"]
        args += list(extra_args)
        process_env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "VESTIGE_RESYNC_SECONDS": str(resync_seconds),
            "VESTIGE_LOG_FORMAT": "json",
            "VESTIGE_DEFAULT_IMAGE": "example.org/vestige:3.0.0",
            "VESTIGE_BRIDGE_IMAGE": "example.org/vestige-bridge:0.1.0",
            "VESTIGE_METRICS_HOST": "127.0.0.1",
            "VESTIGE_METRICS_PORT": str(metrics_port),
            **(env or {}),
        }
        proc = subprocess.Popen(args, cwd=ROOT, env=process_env, stdout=log_file, stderr=subprocess.STDOUT)
        op = OperatorProcess(
            proc,
            tuple(namespaces),
            log_path,
            liveness,
            resync_seconds,
            f"http://127.0.0.1:{metrics_port}/metrics",
            args,
            process_env,
            log_file,
        )
        started.append(op)
        op.wait_ready()
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator_process(operator_factory: OperatorFactory, namespace: str) -> Iterator[OperatorProcess]:
    """One operator watching the test's namespace."""
    op = operator_factory(namespace)
    yield op
    code = op.stop()
    assert code == 0, f"operator exited with {code}:\n{op.log_path.read_text()}"
