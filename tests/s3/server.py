"""Run versitygw (posix backend) on 127.0.0.1 with a free port, for tests."""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.s3 import build


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A versitygw process serving ``root`` (each directory a bucket)."""

    root: Path
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: HTTPS with this serving certificate and key (signed by ``ca``, e.g. a platform's private CA)
    tls: tuple[Path, Path] | None = None
    ca: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        binary = build.ensure()
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root.parent / f"versitygw-{self.port}.log").open("ab")
        tls = ["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []
        context = ssl.create_default_context(cafile=str(self.ca)) if self.tls else None
        self.process = subprocess.Popen(
            [
                str(binary),
                *tls,
                "--access",
                self.access_key,
                "--secret",
                self.secret_key,
                "--port",
                f"127.0.0.1:{self.port}",
                "--health",
                "/health",
                "posix",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"versitygw exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1, context=context):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("versitygw did not answer /health in time")

    def make_bucket(self, name: str) -> None:
        """Buckets of the posix backend are directories (created directly: no client needed)."""
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def objects(self, bucket: str) -> dict[str, int]:
        """Object keys in ``bucket`` and their sizes, read from the backend's directory."""
        base = self.root / bucket
        return {
            p.relative_to(base).as_posix(): p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
