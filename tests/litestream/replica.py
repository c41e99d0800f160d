"""Litestream as real processes, configured exactly as its image is: the image's
``/etc/litestream.yml`` (``images/litestream/litestream.yml``) plus environment variables, with
the S3 credentials only in the environment (as the sidecar gets them from a Secret).

``replica_path`` is the operator's key space rule of continuous backups
(``vestige_operator.backup.replica_path``): derived from namespace and agent id, never free text,
so one agent's replica can never be written or restored by another.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vestige_bridge import replication
from vestige_operator import backup
from vestige_operator.api import DNS1123_LABEL_PATTERN, BackupDestination

from tests.litestream import build
from tests.s3.server import S3Server

ROOT = Path(__file__).resolve().parents[2]
#: The configuration file the image carries as /etc/litestream.yml.
CONFIG = ROOT / "images" / "litestream" / "litestream.yml"
#: What `litestream restore` prints (on stderr, exit status 1) when no snapshot and chain of
#: changes covers the requested time (before the retained window, or nothing replicated).
NOT_AVAILABLE = "no matching backup files available"


def replica_path(namespace: str, agent_id: str, prefix: str = "") -> str:
    """``<prefix><namespace>/<agentId>/litestream``: the replica's key path in the bucket.

    ``namespace`` and ``agent_id`` are DNS labels (no ``/``, no ``..``), so the path cannot
    leave the agent's own key space; ``prefix`` is the platform's optional bucket folder (empty,
    or ending in ``/``, no ``..`` segment)."""
    for what, value in (("namespace", namespace), ("agent id", agent_id)):
        if not re.match(DNS1123_LABEL_PATTERN, value) or len(value) > 63:
            raise ValueError(f"{what} must be a DNS label: {value!r}")
    if prefix and (not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/")):
        raise ValueError(f"prefix must be empty or end with '/' (no leading '/', no '..'): {prefix!r}")
    destination = BackupDestination.model_validate(
        {"s3": {"bucket": "any-bucket", "prefix": prefix or None, "credentialsSecret": {"name": "any"}}}
    )
    return backup.replica_path(destination, namespace, agent_id)


@dataclass(frozen=True)
class Settings:
    """The sidecar's environment (what the operator would render from spec.backup.continuous)."""

    bucket: str
    path: str
    endpoint: str = ""
    region: str = "us-east-1"
    force_path_style: bool = True
    monitor_interval: str = "250ms"
    sync_interval: str = "500ms"
    snapshot_interval: str = ""
    retention: str = ""
    l0_retention: str = ""
    metrics_addr: str = ""
    #: the control API's Unix socket ("" = off)
    socket: str = ""

    def env(self, db: Path) -> dict[str, str]:
        return {
            "LITESTREAM_DB": str(db),
            "LITESTREAM_BUCKET": self.bucket,
            "LITESTREAM_PATH": self.path,
            "LITESTREAM_ENDPOINT": self.endpoint,
            "LITESTREAM_REGION": self.region,
            "LITESTREAM_FORCE_PATH_STYLE": "true" if self.force_path_style else "false",
            "LITESTREAM_MONITOR_INTERVAL": self.monitor_interval,
            "LITESTREAM_SYNC_INTERVAL": self.sync_interval,
            "LITESTREAM_SNAPSHOT_INTERVAL": self.snapshot_interval,
            "LITESTREAM_RETENTION": self.retention,
            "LITESTREAM_L0_RETENTION": self.l0_retention,
            "LITESTREAM_METRICS_ADDR": self.metrics_addr,
            "LITESTREAM_SOCKET_ENABLED": "true" if self.socket else "false",
            "LITESTREAM_SOCKET": self.socket,
        }


def settings_for(s3: S3Server, bucket: str, path: str, **overrides: str) -> Settings:
    return Settings(bucket=bucket, path=path, endpoint=s3.endpoint, **overrides)  # type: ignore[arg-type]


def _env(db: Path, settings: Settings, credentials: dict[str, str], home: Path) -> dict[str, str]:
    # Nothing of the caller's environment (no stray AWS_* variable): PATH, HOME, the settings
    # and the credentials, as in the container.
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **settings.env(db), **credentials}


@dataclass
class Litestream:
    """``litestream replicate`` (the sidecar) on ``db``; its output goes to ``log``."""

    db: Path
    settings: Settings
    credentials: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Litestream:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(build.ensure()), "replicate", "-config", str(CONFIG)],
                env=_env(self.db, self.settings, self.credentials, self.log.parent),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing is flushed (a node crash or OOM kill of the container)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM (Kubernetes' stop): Litestream syncs what is left, then exits."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def last_sync_at(socket: Path) -> datetime | None:
    """When the replica last held every change of the store: the bridge's reader of the control
    socket (``vestige_bridge.replication``, the one place the lag is measured), run here."""
    return asyncio.run(replication.last_sync_at(socket, seconds=5))


def restore(
    output: Path,
    settings: Settings,
    credentials: dict[str, str],
    *,
    timestamp: str | None = None,
    if_db_not_exists: bool = True,
    if_replica_exists: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``litestream restore`` into ``output`` from the replica ``settings`` name, as the restore
    init container runs it: the image's configuration names the database ``output`` (the path
    the agent's Vestige will open) and its replica; ``timestamp`` is RFC 3339 or None (latest)."""
    args = [str(build.ensure()), "restore", "-config", str(CONFIG)]
    if if_db_not_exists:
        args.append("-if-db-not-exists")
    if if_replica_exists:
        args.append("-if-replica-exists")
    if timestamp is not None:
        args += ["-timestamp", timestamp]
    args.append(str(output))
    return subprocess.run(
        args,
        env=_env(output, settings, credentials, output.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
