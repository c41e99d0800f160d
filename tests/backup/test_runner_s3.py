"""The runner as a process (as in its pod) against a live store and a real S3 server (versitygw).

Proves: a consistent snapshot while 200 memories are ingested concurrently (restored store passes
integrity_check and holds every memory whose write returned before the backup started), the upload
with its sha256, restore (and its refusal to overwrite), and failure messages that name the cause
and never contain a credential.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.backup import stores
from tests.backup.conftest import RUNNER_PATH, run_runner
from tests.s3.server import S3Server, free_port

BUCKET = "vestige-backups"


@pytest.fixture
def creds(s3: S3Server) -> dict[str, str]:
    s3.make_bucket(BUCKET)
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}


def _target(s3: S3Server, bucket: str = BUCKET) -> list[str]:
    return ["--endpoint", s3.endpoint, "--bucket", bucket, "--force-path-style"]


def identity(agent: str) -> list[str]:
    """The identity a backup run records (the operator passes it): namespace ``ns``, ``agent``.
    The S3 server lives for the session: each test uses its own agent, hence its own key space."""
    return ["--metadata", "namespace=ns", "--metadata", f"agent-id={agent}"]


def expect(agent: str) -> list[str]:
    """What a restore of ``agent``'s snapshots expects: its key space and identity."""
    return ["--prefix", f"ns/{agent}/", "--expect-namespace", "ns", "--expect-agent-id", agent]


def _backup(
    s3: S3Server, creds: dict[str, str], runner_python: Path, tmp_path: Path, data: Path, key: str, *meta: str
) -> subprocess.CompletedProcess[str]:
    args = ["backup", "--data-dir", str(data), "--key", key, "--work-dir", str(tmp_path / "w")]
    return run_runner(runner_python, [*args, *meta, *_target(s3)], env=creds, result_file=tmp_path / "b.json")


def _result(path: Path) -> dict:
    return json.loads(path.read_text())


def _no_secret(s3: S3Server, *texts: str) -> None:
    for text in texts:
        assert s3.secret_key not in text
        assert s3.access_key not in text


def test_consistent_backup_while_200_memories_are_ingested(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    writers = 8
    local = threading.local()
    connections: list = []
    done: list[tuple[float, str]] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        con = getattr(local, "con", None)
        if con is None:  # one connection per writer thread, as concurrent clients would have
            con = local.con = stores.connect(data / "vestige.db")
            with lock:
                connections.append(con)
        node = stores.ingest(con, f"memory {i} about topic {i % 7}")
        with lock:
            done.append((time.monotonic(), node))

    def paced(i: int) -> None:
        time.sleep(0.05)  # spread the second half over the runner's start and snapshot
        write(i)

    key = "ns/consistent/consistent-20260101000000.tar.gz"
    result_file = tmp_path / "result.json"
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(100)))  # the first 100, concurrently
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(runner_python), "-m", "vestige_backup", "backup", "--data-dir", str(data), "--key", key,
             "--work-dir", str(tmp_path / "work"), *identity("consistent"), *_target(s3)],
            env={**creds, "PYTHONPATH": str(RUNNER_PATH), "HOME": str(tmp_path),
                 "VESTIGE_BACKUP_RESULT_FILE": str(result_file)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        list(pool.map(paced, range(100, 200)))  # the next 100 while the backup runs
        out, err = proc.communicate(timeout=300)
    for con in connections:
        con.close()
    assert proc.returncode == 0, err
    result = _result(result_file)
    assert result["ok"] is True and result["key"] == key and result["files"] == ["vestige.db"]
    before = {node for t, node in done if t < started}
    assert len(before) == 100

    target = tmp_path / "restored" / "vestige"
    res = run_runner(
        runner_python,
        [
            "restore",
            "--data-dir",
            str(target),
            "--key",
            key,
            *expect("consistent"),
            *_target(s3),
        ],
        env=creds,
        result_file=tmp_path / "restore.json",
    )
    assert res.returncode == 0, res.stderr
    restored = stores.ids(target / "vestige.db")
    integrity, fts_hits = stores.check(target / "vestige.db")
    assert integrity == "ok"
    assert before <= restored, f"{len(before - restored)} memories committed before the backup are missing"
    assert restored <= {node for _, node in done}
    assert fts_hits == len(restored)  # the FTS index agrees with the table
    print(f"restored {len(restored)} of 200 memories ({len(restored) - 100} written during the backup)")
    _no_secret(s3, out, err, res.stdout, res.stderr)


def test_upload_records_the_sha256(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    data = tmp_path / "vestige"
    con = stores.create(data / "vestige.db")
    for i in range(20):
        stores.ingest(con, f"memory {i}")
    con.close()
    key = "ns/a/a-1.tar.gz"
    res = run_runner(
        runner_python,
        ["backup", "--data-dir", str(data), "--key", key, "--work-dir", str(tmp_path / "w"), *_target(s3)],
        env=creds,
        result_file=tmp_path / "r.json",
    )
    assert res.returncode == 0, res.stderr
    result = _result(tmp_path / "r.json")
    stored = (s3.root / BUCKET / key).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result["sha256"]
    assert len(stored) == result["size"]
    sidecar = (s3.root / BUCKET / (key + ".sha256")).read_text()
    assert sidecar == f"{result['sha256']}  a-1.tar.gz\n"
    # The work dir is cleaned up: the snapshot is not left on the pod's scratch volume.
    assert list((tmp_path / "w").glob("*.tar.gz")) == []

    # prune deletes the snapshot and its sidecar
    res = run_runner(
        runner_python,
        ["prune", "--key", key, "--prefix", "ns/a/", *_target(s3)],
        env=creds,
        result_file=tmp_path / "p.json",
    )
    assert res.returncode == 0, res.stderr
    assert _result(tmp_path / "p.json") == {"ok": True, "deleted": [key]}
    assert not (s3.root / BUCKET / key).exists() and not (s3.root / BUCKET / (key + ".sha256")).exists()


def test_restore_latest_refuses_to_overwrite_and_is_idempotent(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    data = tmp_path / "vestige"
    con = stores.create(data / "vestige.db")
    for i in range(5):
        stores.ingest(con, f"memory {i}")
    first = stores.ids(data / "vestige.db")
    for n, key in enumerate(["ns/src/src-20260101000000.tar.gz", "ns/src/src-20260102000000.tar.gz"]):
        if n == 1:
            stores.ingest(con, "memory newest")
        res = run_runner(
            runner_python,
            [
                "backup",
                "--data-dir",
                str(data),
                "--key",
                key,
                "--work-dir",
                str(tmp_path / "w"),
                *identity("src"),
                *_target(s3),
            ],
            env=creds,
            result_file=tmp_path / "b.json",
        )
        assert res.returncode == 0, res.stderr
        time.sleep(1.1)  # distinct LastModified seconds
    con.close()
    target = tmp_path / "new" / "vestige"
    args = [
        "restore",
        "--data-dir",
        str(target),
        "--latest",
        *expect("src"),
        *_target(s3),
    ]
    res = run_runner(runner_python, args, env=creds, result_file=tmp_path / "r1.json")
    assert res.returncode == 0, res.stderr
    assert _result(tmp_path / "r1.json")["key"] == "ns/src/src-20260102000000.tar.gz"
    restored = stores.ids(target / "vestige.db")
    assert first < restored and len(restored) == len(first) + 1
    # The pod restarts: the init container runs again and leaves the restored store alone.
    con = stores.connect(target / "vestige.db")
    stores.ingest(con, "memory written after the restore")
    con.close()
    res = run_runner(runner_python, args, env=creds, result_file=tmp_path / "r2.json")
    assert res.returncode == 0 and "already restored" in _result(tmp_path / "r2.json")["message"]
    assert len(stores.ids(target / "vestige.db")) == len(first) + 2
    # A volume holding a store that no restore put there: refused, exit 3, untouched.
    other = tmp_path / "other" / "vestige"
    con = stores.create(other / "vestige.db")
    stores.ingest(con, "memory of another agent")
    con.close()
    before = (other / "vestige.db").read_bytes()
    args[2] = str(other)
    res = run_runner(runner_python, args, env=creds, result_file=tmp_path / "r3.json")
    assert res.returncode == 3
    result = _result(tmp_path / "r3.json")
    assert result["refused"] is True and "refusing to overwrite" in result["message"]
    assert (other / "vestige.db").read_bytes() == before


@pytest.mark.parametrize("case", ["wrong-credentials", "missing-bucket", "server-down"])
def test_failures_name_the_cause_without_credentials(
    case: str, tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    env = dict(creds)
    target = _target(s3)
    expected = ""
    if case == "wrong-credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-" + s3.secret_key[6:]
        expected = "access denied"
    elif case == "missing-bucket":
        target = _target(s3, "no-such-bucket")
        expected = "bucket does not exist"
    else:
        target = ["--endpoint", f"http://127.0.0.1:{free_port()}", "--bucket", BUCKET, "--force-path-style"]
        expected = "cannot connect to the endpoint"
    res = run_runner(
        runner_python,
        ["backup", "--data-dir", str(data), "--key", "k.tar.gz", "--work-dir", str(tmp_path / "w"), *target],
        env=env,
        result_file=tmp_path / "r.json",
    )
    assert res.returncode == 1
    result = _result(tmp_path / "r.json")
    assert result["ok"] is False and expected in result["message"], result
    assert "bucket" in result["message"]
    for text in (res.stdout, res.stderr, json.dumps(result)):
        assert env["AWS_SECRET_ACCESS_KEY"] not in text and env["AWS_ACCESS_KEY_ID"] not in text


def test_upload_never_replaces_an_object(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    """Keys are unique per run: an existing object (another writer's, or a replayed run) fails the
    run and stays as it was, sidecar included."""
    data = tmp_path / "vestige"
    con = stores.create(data / "vestige.db")
    stores.ingest(con, "first")
    key = "ns/keep/keep-1.tar.gz"
    assert _backup(s3, creds, runner_python, tmp_path, data, key, *identity("keep")).returncode == 0
    stored = (s3.root / BUCKET / key).read_bytes()
    sidecar = (s3.root / BUCKET / (key + ".sha256")).read_bytes()
    stores.ingest(con, "second")
    con.close()
    res = _backup(s3, creds, runner_python, tmp_path, data, key, *identity("keep"))
    assert res.returncode == 1
    assert "refusing to overwrite" in _result(tmp_path / "b.json")["message"]
    assert (s3.root / BUCKET / key).read_bytes() == stored
    assert (s3.root / BUCKET / (key + ".sha256")).read_bytes() == sidecar
    # Only the sidecar there (a half-written run of someone else): refused as well.
    (s3.root / BUCKET / "ns/keep/keep-2.tar.gz.sha256").write_text("0" * 64 + "  keep-2.tar.gz\n")
    res = _backup(s3, creds, runner_python, tmp_path, data, "ns/keep/keep-2.tar.gz", *identity("keep"))
    assert res.returncode == 1 and "refusing to overwrite" in _result(tmp_path / "b.json")["message"]
    assert not (s3.root / BUCKET / "ns/keep/keep-2.tar.gz").exists()


def test_restore_takes_only_the_agents_own_verified_snapshot(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    """`latest` skips objects under the prefix that record another agent; a key outside the
    agent's key space, a snapshot recording another agent, or a checksum other than the one the
    operator recorded is refused and the volume stays empty."""
    data = tmp_path / "vestige"
    con = stores.create(data / "vestige.db")
    stores.ingest(con, "the agent's own memory")
    con.close()
    own_ids = stores.ids(data / "vestige.db")
    own = "ns/own/own-1.tar.gz"
    assert _backup(s3, creds, runner_python, tmp_path, data, own, *identity("own")).returncode == 0
    own_sha = _result(tmp_path / "b.json")["sha256"]
    time.sleep(1.1)
    evil = tmp_path / "evil"
    con = stores.create(evil / "vestige.db")
    stores.ingest(con, "planted by another tenant")
    con.close()
    planted = "ns/own/own-9.tar.gz"  # newer, under the same prefix, recording another agent
    meta = ["--metadata", "namespace=attacker", "--metadata", "agent-id=own"]
    assert _backup(s3, creds, runner_python, tmp_path, evil, planted, *meta).returncode == 0
    planted_sha = _result(tmp_path / "b.json")["sha256"]

    def restore(name: str, *which: str) -> tuple[int, dict, Path]:
        target = tmp_path / name / "vestige"
        args = [
            "restore",
            "--data-dir",
            str(target),
            *which,
            *expect("own"),
            *_target(s3),
        ]
        res = run_runner(runner_python, args, env=creds, result_file=tmp_path / f"{name}.json")
        return res.returncode, _result(tmp_path / f"{name}.json"), target

    code, result, target = restore("latest", "--latest")
    assert code == 0 and result["key"] == own, result
    assert stores.ids(target / "vestige.db") == own_ids

    code, result, target = restore("foreign", "--key", planted)
    assert code == 1 and "does not record agent ns/own" in result["message"]
    assert not target.exists() or not any(target.iterdir())

    code, result, target = restore("outside", "--key", "other/agent/x.tar.gz")
    assert code == 1 and "key space" in result["message"]
    assert not target.exists() or not any(target.iterdir())

    # The sha256 the operator recorded (VestigeBackup status) is trusted over the object's own.
    code, result, target = restore("wrongsum", "--key", own, "--expect-sha256", planted_sha)
    assert code == 1 and "checksum mismatch" in result["message"]
    assert not (target / "vestige.db").exists()
    code, result, target = restore("rightsum", "--key", own, "--expect-sha256", own_sha)
    assert code == 0 and result["sha256"] == own_sha


def test_prune_deletes_only_inside_the_agents_key_space(
    tmp_path: Path, s3: S3Server, creds: dict[str, str], runner_python: Path
) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    other = "other/agent/agent-1.tar.gz"
    assert _backup(s3, creds, runner_python, tmp_path, data, other).returncode == 0
    res = run_runner(
        runner_python,
        ["prune", "--key", "ns/src/src-1.tar.gz", "--key", other, "--prefix", "ns/src/", *_target(s3)],
        env=creds,
        result_file=tmp_path / "p.json",
    )
    assert res.returncode == 1 and "outside ns/src/" in _result(tmp_path / "p.json")["message"]
    assert (s3.root / BUCKET / other).exists()
