"""Fixtures of the continuous-backup tests: the S3 server (versitygw), Litestream built from the
module proxy, and the memory servers whose SQLite store it replicates, all as real processes.

A flavour is one store generation the project runs: the real Vestige 1.3.0 and 2.0.0 (built by
tests/vestige from the vendored sources; skipped with the reason while not built here) and the
v3 stand-in (tests/bridge/standin.py, which keeps its memories in SQLite in WAL mode).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.litestream import build
from tests.litestream.replica import Litestream, Settings
from tests.s3.server import S3Server
from tests.vestige.stdio import StdioServer, built_binary

BUCKET = "vestige-continuous"


@dataclass(frozen=True)
class Flavour:
    """How to start one store generation on a volume, ingest into it and read a restored copy."""

    name: str
    tool: str
    start: Callable[[Path, Path], StdioServer]
    #: SQL that returns the content of every memory of a store.
    contents_sql: str
    content_of: Callable[[str], str] = lambda value: value

    @staticmethod
    def db(volume: Path) -> Path:
        """The store on the volume (the operator's layout: /data/vestige/vestige.db)."""
        return volume / "vestige" / "vestige.db"

    def markers(self, db: Path) -> set[int]:
        """The numbers of the memories ``ingest`` wrote (``marker<n>``) found in ``db``."""
        con = sqlite3.connect(db)
        try:
            rows = [self.content_of(row[0]) for row in con.execute(self.contents_sql)]
        finally:
            con.close()
        return {int(c.rsplit("marker", 1)[1]) for c in rows if "marker" in c}


def _real(version: str) -> Flavour:
    def start(volume: Path, home: Path) -> StdioServer:
        binary = built_binary(version)
        if binary is None:
            pytest.skip(f"no real vestige-mcp {version} built yet (python -m tests.vestige build)")
        Flavour.db(volume).parent.mkdir(parents=True, exist_ok=True)  # 1.x/2.x do not create it
        return StdioServer.vestige(binary, Flavour.db(volume), home, volume.with_name(f"{volume.name}.log"))

    return Flavour(f"vestige-{version}", "ingest", start, "SELECT content FROM knowledge_nodes")


def _standin() -> Flavour:
    def start(volume: Path, home: Path) -> StdioServer:
        log = volume.with_name(f"{volume.name}.log")
        return StdioServer.standin(Flavour.db(volume).parent, home, log=log)

    return Flavour(
        "standin-v3",
        "smart_ingest",
        start,
        "SELECT body FROM nodes WHERE kind = 'memory'",
        lambda body: str(json.loads(body)["content"]),
    )


FLAVOURS = {f.name: f for f in (_real("1.3.0"), _real("2.0.0"), _standin())}


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return FLAVOURS[request.param]


#: The generation the long tests run by default (the demo's and the real node's); the others with
#: ``--slow`` (each long variant costs 20-65 s; the short tests run every generation always).
DEFAULT_FLAVOUR = "vestige-2.0.0"


@pytest.fixture(
    params=[
        name if name == DEFAULT_FLAVOUR else pytest.param(name, marks=pytest.mark.slow)
        for name in sorted(FLAVOURS)
    ]
)
def long_flavour(request: pytest.FixtureRequest) -> Flavour:
    """``flavour`` for the long tests: the other generations only with ``--slow``."""
    return FLAVOURS[request.param]


@pytest.fixture(scope="session")
def litestream_binary() -> Path:
    return build.ensure()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "root").start()
    server.make_bucket(BUCKET)
    yield server
    server.stop()


@dataclass
class Ingestor:
    """Memories sent one at a time (the next after the answer), each acknowledgement timed."""

    server: StdioServer
    tool: str
    #: memory number -> wall-clock time (time.time()) its ingest was acknowledged
    acked: dict[int, float]
    sent: int = 0

    def ingest(self, n: int, timeout: float = 60) -> bool:
        """Ingest memory ``n``; True once acknowledged, False if the server died first."""
        self.sent = max(self.sent, n)
        content = f"continuous backup memory number {n} marker{n:05d}"
        try:
            self.server.call_tool(n, self.tool, {"content": content})
        except OSError:  # BrokenPipeError: killed (the crash test) between two ingests
            return False
        with self.server.cond:
            self.server.cond.wait_for(
                lambda: n in self.server.answers or self.server.proc.poll() is not None, timeout=timeout
            )
            answer = self.server.answers.get(n)
        if answer is None:
            return False
        mono, msg = answer
        assert "error" not in msg and not msg.get("result", {}).get("isError"), msg
        self.acked[n] = time.time() - (time.monotonic() - mono)
        return True


def ingestor(server: StdioServer, flavour: Flavour) -> Ingestor:
    return Ingestor(server, flavour.tool, {})


MakeSidecar = Callable[[Path, Settings, dict[str, str]], Litestream]


@pytest.fixture
def replicator(tmp_path: Path) -> Iterator[MakeSidecar]:
    """Makes (not starts) ``Litestream`` sidecars; whatever still runs at the end is killed."""
    made: list[Litestream] = []

    def make(db: Path, settings: Settings, credentials: dict[str, str]) -> Litestream:
        made.append(Litestream(db, settings, credentials, tmp_path / f"litestream-{len(made)}.log"))
        return made[-1]

    yield make
    for sidecar in made:
        sidecar.kill()
