"""The runner's command line and result file (in-process; no object storage needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vestige_backup import __main__ as cli
from vestige_backup import keys
from vestige_backup.errors import scrub

from tests.backup import stores
from tests.backup.conftest import run_runner


def test_scrub_replaces_every_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t/with+chars")
    assert (
        scrub("key AKIDEXAMPLE and s3cr3t/with+chars twice s3cr3t/with+chars") == "key *** and *** twice ***"
    )


def test_result_is_bounded_and_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecretvalue")
    out = tmp_path / "termination-log"
    files = [f"dir/file-{i:05d}.bin" for i in range(1000)]
    cli._write_result(str(out), {"ok": True, "key": "k", "files": files, "message": "topsecretvalue leaked?"})
    text = out.read_text()
    assert len(text.encode()) <= cli.MAX_RESULT_BYTES  # the kubelet keeps 4096 bytes
    result = json.loads(text)
    assert result["ok"] is True and "files" not in result and "topsecretvalue" not in text


def test_restore_needs_key_or_latest() -> None:
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "--data-dir", "/d", "--bucket", "bkt", "--key", "k", "--latest"])
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "--data-dir", "/d", "--bucket", "bkt"])
    identity = ["--expect-namespace", "ns", "--expect-agent-id", "a"]
    with pytest.raises(SystemExit):  # the key space and the identity are required
        parser.parse_args(["restore", "--data-dir", "/d", "--bucket", "bkt", "--latest", *identity])
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "--data-dir", "/d", "--bucket", "bkt", "--latest", "--prefix", "ns/a/"])
    args = parser.parse_args(
        ["restore", "--data-dir", "/d", "--bucket", "bkt", "--latest", "--prefix", "ns/a/", *identity]
    )
    assert args.latest and args.prefix == "ns/a/" and args.expect_agent_id == "a"


def test_snapshot_identity() -> None:
    assert keys.belongs({"namespace": "ns", "agent-id": "a"}, "ns", "a")
    assert not keys.belongs({"namespace": "ns", "agent-id": "b"}, "ns", "a")
    assert not keys.belongs({"namespace": "other", "agent-id": "a"}, "ns", "a")
    # a recorded identity wins over the legacy field
    assert not keys.belongs({"namespace": "other", "agent-id": "a", "memory": "ns/a"}, "ns", "a")
    assert keys.belongs({"memory": "ns/a"}, "ns", "a")  # written before identities were recorded
    assert not keys.belongs({}, "ns", "a")


def test_missing_credentials_become_a_failed_result(tmp_path: Path, runner_python: Path) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    res = run_runner(
        runner_python,
        ["backup", "--data-dir", str(data), "--key", "k.tar.gz", "--bucket", "bkt"],
        env={},
        result_file=tmp_path / "r.json",
    )
    assert res.returncode == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result == {
        "ok": False,
        "message": "no object-storage credentials: the credentials Secret needs the keys accessKeyId "
        "and secretAccessKey",
    }
