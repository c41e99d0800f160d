"""Run an MCP server over stdio as a real process and talk JSON-RPC to it: the real Vestige
1.3.0 / 2.0.0 (``vestige-mcp --data-dir <db>``, built by ``tests.vestige.build``) or the v3
stand-in (``tests/bridge/standin.py --stdio``). Requests are written from the caller's thread,
answers read by another and kept with the time they arrived."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster.build import cache_root

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_VERSION = "2024-11-05"


def built_binary(version: str) -> Path | None:
    """The newest real ``vestige-mcp`` of ``version`` built on this machine, or None."""
    found = sorted(
        (cache_root() / "vestige" / "bin").glob(f"vestige-mcp-{version}-*"), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


class StdioServer:
    """One MCP server process on pipes; ``answers[id] = (monotonic time, message)``."""

    def __init__(
        self, argv: list[str], home: Path, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        """``log``: where the server's stderr goes (default: nowhere)."""
        full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "RUST_LOG": "error", **(env or {})}
        self.stderr = log.open("ab") if log is not None else None
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr or subprocess.DEVNULL,
            env=full_env,
            text=True,
            bufsize=1,
        )
        self.answers: dict[int, tuple[float, dict]] = {}
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @classmethod
    def vestige(cls, binary: Path, db: Path, home: Path, log: Path | None = None) -> StdioServer:
        """The real Vestige 1.x/2.x: ``--data-dir`` is the database FILE (its directory must exist)."""
        return cls([str(binary), "--data-dir", str(db)], home, log=log)

    @classmethod
    def standin(
        cls, data_dir: Path, home: Path, generation: str = "v3", log: Path | None = None
    ) -> StdioServer:
        """The stand-in of ``generation``, keeping its memories in ``<data_dir>/vestige.db``."""
        argv = [sys.executable, "-m", "tests.bridge.standin", "--generation", generation, "--stdio"]
        return cls([*argv, "--data-dir", str(data_dir)], home, {"PYTHONPATH": str(ROOT)}, log)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg:
                with self.cond:
                    self.answers[int(msg["id"])] = (time.monotonic(), msg)
                    self.cond.notify_all()

    def send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def wait(self, ids: set[int], timeout: float = 300) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: ids <= set(self.answers), timeout=timeout)
        assert ok, f"no answer for {sorted(ids - set(self.answers))[:5]}"

    def initialize(self, timeout: float = 120) -> None:
        """MCP ``initialize`` (id 0) and ``notifications/initialized``."""
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        self.wait({0}, timeout=timeout)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call_tool(self, request_id: int, name: str, arguments: dict) -> None:
        """Send one ``tools/call`` (its answer arrives in ``answers[request_id]``)."""
        params = {"name": name, "arguments": arguments}
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(OSError):  # already dead
                self.proc.stdin.close()  # Vestige exits on stdin EOF
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.stderr is not None:
            self.stderr.close()
