"""Fixtures for the bridge tests: real processes on 127.0.0.1 only.

* ``standin`` processes: the MCP stand-in (tests/bridge/standin.py) as v3 over Streamable HTTP
  with Vestige's HTTP rules, or as v1 over stdio behind a gateway.
* gateways: PyPI ``mcp-proxy`` in its own venv (it pins ``mcp<2``) under
  ``~/.cache/vestige-operator/venvs/mcp-proxy``, and npm ``supergateway`` under
  ``~/.cache/vestige-operator/npm``; both are installed here when missing. supergateway has no
  bind option, so it runs with a preload that binds its listener to 127.0.0.1.
* the bridge itself, ``python -m vestige_bridge``, as a uvicorn subprocess.

Every process is started with a log file in the test's tmp dir and stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.build import cache_root

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(__file__).parent / "data"
PYTHON = sys.executable
CACHE = cache_root()
MCP_PROXY_VENV = CACHE / "venvs" / "mcp-proxy"
MCP_PROXY_SPEC = "mcp-proxy>=0.13,<0.14"
NPM_PREFIX = CACHE / "npm"
SUPERGATEWAY_SPEC = "supergateway@4"
LOOPBACK_PRELOAD = Path(__file__).parent / "force_loopback.cjs"
TOKEN = "bridge-test-token-5f0c2a9e"
UPSTREAM_TOKEN = "vestige-upstream-token-8d41b7c3"
AGENT = "agent-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_address(port: int) -> str | None:
    """Local address of the LISTEN socket on `port` from /proc/net/tcp (IPv4), e.g. 127.0.0.1."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                if len(addr) == 8:
                    return socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                return "::" if set(addr) == {"0"} else addr
    return None


@dataclass
class Proc:
    """A subprocess with its log file; stopped by pid."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    keep_stdin: bool = False
    """Give the process an open stdin pipe (Kubernetes `stdin: true`): Vestige exits at stdin EOF."""
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        stdin = subprocess.PIPE if self.keep_stdin else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT, stdin=stdin
        )
        fh.close()
        return self

    def close_stdin(self) -> None:
        if self.popen is not None and self.popen.stdin is not None:
            self.popen.stdin.close()

    def wait_port(self, timeout: float = 120.0) -> Proc:
        """Wait until the port accepts connections (generous: importing the SDK alone takes a
        minute on this 2-core machine when other test suites run)."""
        assert self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}"
                )
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()  # never leave it running behind a failed fixture
        raise RuntimeError(f"{self.name} did not listen on 127.0.0.1:{self.port}:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        finally:
            if p.stdin is not None:
                p.stdin.close()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VESTIGE_", "STANDIN_"))}
    env.pop("LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class CallLog:
    """The stand-in's JSON-lines call log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def clear(self) -> None:
        self.path.write_text("")

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def last(self) -> dict[str, Any]:
        calls = self.calls()
        assert calls, "the stand-in received no tools/call"
        return calls[-1]


@dataclass
class Upstream:
    """A running MCP server the bridge can point at."""

    generation: str
    mcp_url: str
    calls: CallLog
    procs: list[Proc]
    token: str | None = None
    sse_url: str | None = None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_standin_http(
    tmp: Path,
    generation: str = "v3",
    *,
    port: int | None = None,
    version: str | None = None,
    name: str = "standin",
) -> Upstream:
    port = port or free_port()
    calls = CallLog(tmp / f"{name}-calls.jsonl")
    argv = [PYTHON, "-m", "tests.bridge.standin", "--generation", generation, "--port", str(port)]
    argv += ["--token", UPSTREAM_TOKEN, "--call-log", str(calls.path)]
    if version:
        argv += ["--server-version", version]
    # stdin stays open like `stdin: true` in the pod: the stand-in, like Vestige 3.x, exits at EOF
    proc = Proc(name, argv, base_env(), tmp / f"{name}.log", port, keep_stdin=True).start().wait_port()
    return Upstream(generation, f"http://127.0.0.1:{port}/mcp", calls, [proc], token=UPSTREAM_TOKEN)


# ----------------------------------------------------------------------------- gateways
def _ensure_mcp_proxy() -> Path:
    exe = MCP_PROXY_VENV / "bin" / "mcp-proxy"
    if exe.exists():
        return exe
    MCP_PROXY_VENV.parent.mkdir(parents=True, exist_ok=True)
    python = shutil.which("python3.11") or shutil.which("python3") or PYTHON
    try:
        subprocess.run(
            [python, "-m", "venv", str(MCP_PROXY_VENV)], check=True, capture_output=True, timeout=300
        )
        subprocess.run(
            [str(MCP_PROXY_VENV / "bin" / "pip"), "install", "-q", MCP_PROXY_SPEC],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(MCP_PROXY_VENV, ignore_errors=True)
        pytest.skip(f"cannot install {MCP_PROXY_SPEC} into {MCP_PROXY_VENV}: {exc}")
    return exe


def _ensure_supergateway() -> Path:
    entry = NPM_PREFIX / "node_modules" / "supergateway" / "dist" / "index.js"
    if entry.exists():
        return entry
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("supergateway test needs node and npm; neither is installed")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX), SUPERGATEWAY_SPEC],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not entry.exists():
        pytest.skip(
            f"npm install {SUPERGATEWAY_SPEC} failed (exit {result.returncode}): {result.stderr[-500:]}"
        )
    return entry


@pytest.fixture(scope="session")
def mcp_proxy() -> Path:
    return _ensure_mcp_proxy()


@pytest.fixture(scope="session")
def supergateway() -> Path:
    return _ensure_supergateway()


def standin_stdio_argv(generation: str = "v1") -> list[str]:
    return [PYTHON, "-m", "tests.bridge.standin", "--generation", generation, "--stdio"]


def start_v1_behind_mcp_proxy(tmp: Path, exe: Path, name: str = "mcp-proxy") -> Upstream:
    port = free_port()
    calls = CallLog(tmp / f"{name}-calls.jsonl")
    argv = [
        str(exe),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--pass-environment",
        "--",
        *standin_stdio_argv(),
    ]
    env = base_env(STANDIN_CALL_LOG=str(calls.path))
    proc = Proc(name, argv, env, tmp / f"{name}.log", port).start().wait_port()
    base = f"http://127.0.0.1:{port}"
    return Upstream("v1", f"{base}/mcp", calls, [proc], sse_url=f"{base}/sse")


def start_v1_behind_supergateway(tmp: Path, entry: Path, name: str = "supergateway") -> Upstream:
    port = free_port()
    calls = CallLog(tmp / f"{name}-calls.jsonl")
    command = " ".join(standin_stdio_argv())
    argv = ["node", "--require", str(LOOPBACK_PRELOAD), str(entry), "--stdio", command, "--port", str(port)]
    argv += ["--outputTransport", "streamableHttp", "--streamableHttpPath", "/mcp", "--stateful"]
    argv += ["--sessionTimeout", "600000", "--healthEndpoint", "/healthz", "--logLevel", "info"]
    env = base_env(STANDIN_CALL_LOG=str(calls.path))
    proc = Proc(name, argv, env, tmp / f"{name}.log", port).start().wait_port()
    return Upstream("v1", f"http://127.0.0.1:{port}/mcp", calls, [proc])


# ----------------------------------------------------------------------------- the bridge
@dataclass
class Bridge:
    url: str
    proc: Proc
    token: str | None

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra)
        return headers

    def client(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, headers=self.headers(), **kw)

    def stop(self) -> None:
        self.proc.stop()


def start_bridge(
    tmp: Path,
    upstream: Upstream | None,
    *,
    name: str = "bridge",
    token: str | None = TOKEN,
    **env: str,
) -> Bridge:
    port = free_port()
    settings = {
        "VESTIGE_AGENT_ID": AGENT,
        "VESTIGE_REQUEST_TIMEOUT": "15",
        "VESTIGE_CONNECT_TIMEOUT": "10",
        "LOG_LEVEL": "INFO",
    }
    if token is not None:
        settings["VESTIGE_AUTH_TOKEN"] = token
    if upstream is not None:
        settings["VESTIGE_MCP_URL"] = upstream.mcp_url
        if upstream.token:
            settings["VESTIGE_MCP_TOKEN"] = upstream.token
        if upstream.sse_url:
            settings["VESTIGE_SSE_URL"] = upstream.sse_url
    settings.update(env)
    argv = [PYTHON, "-m", "vestige_bridge", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(name, argv, base_env(**settings), tmp / f"{name}.log", port).start()
    try:
        proc.wait_port()
    except BaseException:
        proc.stop()  # a bridge that did not come up in time is not left running
        raise
    return Bridge(f"http://127.0.0.1:{port}", proc, token)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def v3_upstream(module_tmp: Path) -> Iterator[Upstream]:
    upstream = start_standin_http(module_tmp, "v3", name="standin-v3")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def v3_bridge(module_tmp: Path, v3_upstream: Upstream) -> Iterator[Bridge]:
    bridge = start_bridge(module_tmp, v3_upstream, name="bridge-v3")
    yield bridge
    bridge.stop()
