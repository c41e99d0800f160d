"""Consistency against the REAL Vestige 1.3.0 / 2.0.0 (built by tests/vestige from the vendored
sources into ~/.cache/vestige-operator/vestige/bin/): while the server ingests 200 memories sent
over its stdio MCP transport, the runner takes a backup; the restored store passes
``PRAGMA integrity_check`` and holds every memory whose ingest had returned before the backup
started. Skips (with the reason) while no binary has been built on this machine.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.backup.conftest import RUNNER_PATH, run_runner
from tests.s3.server import S3Server
from tests.vestige.stdio import StdioServer, built_binary

BUCKET = "vestige-real"


@pytest.mark.parametrize("version", ["1.3.0", "2.0.0"])
def test_backup_of_the_real_vestige_while_it_ingests(
    version: str, tmp_path: Path, s3: S3Server, runner_python: Path
) -> None:
    binary = built_binary(version)
    if binary is None:
        pytest.skip(
            f"no real vestige-mcp {version} built yet (python -m tests.vestige build, branch vestige-real)"
        )
    s3.make_bucket(BUCKET)
    creds = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    data = tmp_path / "data" / "vestige"
    data.mkdir(parents=True)
    server = StdioServer.vestige(binary, data / "vestige.db", tmp_path)
    try:
        server.initialize()

        def ingest(i: int) -> None:
            server.call_tool(i, "ingest", {"content": f"backup consistency memory number {i} marker{i:04d}"})

        for i in range(1, 101):
            ingest(i)
        server.wait(set(range(1, 101)))
        # The key space and identity the operator derives for agent real-<version> of namespace ns.
        agent = "real-" + version.replace(".", "-")
        key = f"ns/{agent}/{agent}.tar.gz"
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(runner_python), "-m", "vestige_backup", "backup", "--data-dir", str(data), "--key", key,
             "--work-dir", str(tmp_path / "work"), "--metadata", "namespace=ns", "--metadata",
             f"agent-id={agent}", "--endpoint", s3.endpoint, "--bucket", BUCKET, "--force-path-style"],
            env={**creds, "PYTHONPATH": str(RUNNER_PATH), "HOME": str(tmp_path),
                 "VESTIGE_BACKUP_RESULT_FILE": str(tmp_path / "backup.json")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for i in range(101, 201):  # the next 100 while the backup runs
            ingest(i)
            time.sleep(0.01)
        _, err = proc.communicate(timeout=300)
        server.wait(set(range(101, 201)))
        assert proc.returncode == 0, err
        before = {i for i, (t, msg) in server.answers.items() if 1 <= i <= 200 and t < started}
        for i in range(1, 201):
            assert "error" not in server.answers[i][1], server.answers[i][1]
    finally:
        server.close()
    result = json.loads((tmp_path / "backup.json").read_text())
    assert result["files"] == ["vestige.db"], result  # 1.x/2.x: the database file (+ its WAL, inside)
    target = tmp_path / "restored" / "vestige"
    res = run_runner(
        runner_python,
        ["restore", "--data-dir", str(target), "--key", key, "--prefix", f"ns/{agent}/",
         "--expect-namespace", "ns", "--expect-agent-id", agent, "--endpoint", s3.endpoint, "--bucket",
         BUCKET, "--force-path-style"],
        env=creds,
        result_file=tmp_path / "restore.json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(target / "vestige.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        contents = [row[0] for row in con.execute("SELECT content FROM knowledge_nodes")]
    finally:
        con.close()
    restored = {int(c.rsplit("marker", 1)[1]) for c in contents if "marker" in c}
    assert before <= restored, (
        f"missing memories acknowledged before the backup: {sorted(before - restored)[:10]}"
    )
    print(f"vestige {version}: {len(before)} acknowledged before the backup, {len(restored)} restored")
