"""Continuous backup (Litestream) under a steady ingest load, against the same store without it:
real processes only (the real Vestige when built, else the v3 stand-in; Litestream configured as
its image is; versitygw as S3).

- replication lag per memory: from its acknowledgement to the moment the first level-0 change
  file (LTX) read after it is complete in the bucket (the header's creation time >= the
  acknowledgement; the object's mtime on the S3 server's posix root), p50 / p99 / max;
- the agent's added latency: ingest round trip p50 / p99 with and without replication;
- CPU: the memory server's and Litestream's CPU seconds (utime + stime from /proc) per memory;
- object-store bytes per memory: what was uploaded (every LTX object seen) and what is stored at
  the end, beside the snapshot method's figure (a gzip'd tar of an online-backup copy of the same
  store, what one snapshot run uploads: the whole store every time).

    .venv/bin/python -m tests.bench.bench_continuous --flavour vestige-2.0.0 --rate 5 --seconds 60
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import struct
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.kube import environment, write_result
from tests.continuous.conftest import BUCKET, FLAVOURS, Flavour, ingestor
from tests.litestream.build import LITESTREAM_VERSION
from tests.litestream.replica import Litestream, replica_path, settings_for
from tests.s3.server import S3Server

LIMITS = {
    "lag": "monitor-interval (WAL read, 250 ms) + sync-interval (upload period, 500 ms) + one PUT; "
    "on a loaded machine, scheduling delays of the two loops",
    "bytes_per_memory": "a level-0 LTX file per sync holds every page the sync's transactions "
    "changed (table, indexes, FTS shadow tables), LZ4-compressed; a snapshot uploads the whole store",
}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ltx_header_ms(path: Path) -> int:
    with path.open("rb") as fh:
        head = fh.read(40)
    return int(struct.unpack(">Q", head[32:40])[0])  # ltx Header.Timestamp (ms since the epoch)


class L0Watcher:
    """Polls the bucket's level-0 directory: for every LTX object, its creation time (header) and
    the time it was complete on the server (mtime; versitygw writes an upload under .sgwtmp and
    moves it into place when complete). Litestream's layout: ``<path>/<level, 4 digits>/<min
    TXID>-<max TXID>.ltx``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, tuple[float, float, int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.scan()
            time.sleep(0.05)

    def scan(self) -> None:
        for path in self.root.glob("0000/*.ltx") if self.root.exists() else []:
            if path.name not in self.files:
                try:
                    stat = path.stat()
                    self.files[path.name] = (_ltx_header_ms(path) / 1000, stat.st_mtime, stat.st_size)
                except (OSError, struct.error):
                    continue


def _snapshot_bytes(db: Path) -> int:
    """Bytes of one snapshot of ``db`` as the snapshot runner packs it (online backup, tar.gz)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "vestige.db"
        src, dst = sqlite3.connect(db), sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(copy, arcname="vestige.db")
        return len(buf.getvalue())


def run(
    flavour: Flavour, s3: S3Server, work: Path, rate: float, seconds: float, replicate: bool
) -> dict[str, Any]:
    agent = f"bench-{'on' if replicate else 'off'}-{int(time.time())}"
    volume = work / agent
    settings = settings_for(s3, BUCKET, replica_path("bench", agent))
    server = flavour.start(volume, work)
    server.initialize()
    ing = ingestor(server, flavour)
    replicator = Litestream(Flavour.db(volume), settings, {
        "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }, work / f"{agent}.log")  # fmt: skip
    keyspace = s3.root / BUCKET / settings.path
    watcher = L0Watcher(keyspace)
    latencies: list[float] = []
    assert ing.ingest(1)
    if replicate:
        replicator.start()
        watcher.thread.start()
        time.sleep(2)
    cpu0 = _cpu_seconds(server.proc.pid)
    ls_cpu0 = _cpu_seconds(replicator.process.pid) if replicator.process else 0.0
    n, started = 2, time.monotonic()
    while time.monotonic() - started < seconds:
        due = started + (n - 2) / rate
        time.sleep(max(0.0, due - time.monotonic()))
        sent = time.time()
        assert ing.ingest(n)
        latencies.append(ing.acked[n] - sent)
        n += 1
    cpu = _cpu_seconds(server.proc.pid) - cpu0
    result: dict[str, Any] = {
        "memories": n - 2,
        "rate_per_s": rate,
        "ingest_latency_ms": {
            "p50": round(1000 * (_percentile(latencies, 0.5) or 0), 2),
            "p99": round(1000 * (_percentile(latencies, 0.99) or 0), 2),
        },
        "server_cpu_s_per_memory": round(cpu / (n - 2), 5),
    }
    if replicate:
        time.sleep(3)  # the last memories reach the bucket
        ls_cpu = _cpu_seconds(replicator.process.pid) - ls_cpu0 if replicator.process else 0.0
        watcher.stop.set()
        watcher.thread.join()
        watcher.scan()
        files = sorted(watcher.files.values())
        lags = []
        for m in range(2, n):
            acked = ing.acked[m]
            first = next(((c, done) for c, done, _ in files if c >= acked), None)
            if first is not None:
                lags.append(first[1] - acked)
        stored = sum(p.stat().st_size for p in keyspace.rglob("*.ltx"))
        uploaded = sum(size for _, _, size in files)
        result.update(
            {
                "litestream_cpu_s_per_memory": round(ls_cpu / (n - 2), 5),
                "replication_lag_s": {
                    "p50": _percentile(lags, 0.5),
                    "p99": _percentile(lags, 0.99),
                    "max": max(lags) if lags else None,
                    "samples": len(lags),
                },
                "level0_files": len(files),
                "bytes_uploaded_level0_per_memory": round(uploaded / (n - 2)),
                "bytes_stored_per_memory": round(stored / (n - 2)),
                "store_bytes": Flavour.db(volume).stat().st_size,
            }
        )
        replicator.stop()
    result["snapshot_bytes"] = _snapshot_bytes(Flavour.db(volume))
    result["snapshot_bytes_per_memory"] = round(result["snapshot_bytes"] / (n - 1))
    server.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flavour", default="vestige-2.0.0", choices=sorted(FLAVOURS))
    parser.add_argument("--rate", type=float, default=5.0, help="memories per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    flavour = FLAVOURS[args.flavour]
    with tempfile.TemporaryDirectory(prefix="bench-continuous-") as scratch:
        work = Path(scratch)
        s3 = S3Server(work / "s3").start()
        s3.make_bucket(BUCKET)
        try:
            off = run(flavour, s3, work, args.rate, args.seconds, replicate=False)
            on = run(flavour, s3, work, args.rate, args.seconds, replicate=True)
        finally:
            s3.stop()
    env = environment()
    env["versions"]["litestream"] = LITESTREAM_VERSION
    env["load_at_end"] = list(os.getloadavg())
    doc = {**env, "flavour": flavour.name, "without": off, "with": on}
    path = write_result("continuous", f"{flavour.name}-{args.rate:g}per_s", doc, LIMITS)
    lag = on["replication_lag_s"]
    print(
        f"{flavour.name} at {args.rate:g}/s: lag p50 {lag['p50']:.3f} s p99 {lag['p99']:.3f} s; latency p50 "
        f"{off['ingest_latency_ms']['p50']} -> {on['ingest_latency_ms']['p50']} ms, p99 "
        f"{off['ingest_latency_ms']['p99']} -> {on['ingest_latency_ms']['p99']} ms; "
        f"{on['bytes_uploaded_level0_per_memory']} B uploaded/memory (snapshot {on['snapshot_bytes']} B "
        f"per run) -> {path}",
        flush=True,
    )


if __name__ == "__main__":
    main()
