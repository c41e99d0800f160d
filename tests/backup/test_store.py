"""Which files make up a store (1.x/2.x db file, 3.x data dir) and why a snapshot is not a copy."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from vestige_backup import store

from tests.backup import stores


def _live_store(data_dir: Path, rows: int = 50) -> sqlite3.Connection:
    """A store with committed rows still in the WAL (no checkpoint), connection kept open."""
    con = stores.create(data_dir / "vestige.db")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    for i in range(rows):
        stores.ingest(con, f"memory number {i}")
    return con


def test_v1_layout_is_the_database_file_and_its_wal(tmp_path: Path) -> None:
    # Vestige 1.x/2.x: `vestige-mcp --data-dir /data/vestige/vestige.db` (the operator's args).
    data = tmp_path / "vestige"
    con = _live_store(data)
    (data / "backups").mkdir()
    (data / "backups" / "old.json").write_text("{}")  # its own POST /backup output (not ours)
    try:
        on_disk = sorted(p.name for p in data.iterdir())
        assert on_disk == ["backups", "vestige.db", "vestige.db-shm", "vestige.db-wal"]
        assert store.store_files(data) == [store.StoreFile("vestige.db", sqlite=True)]
        assert store.holds_store(data)
    finally:
        con.close()


def test_v3_layout_is_the_data_dir_with_sidecars(tmp_path: Path) -> None:
    # Vestige 3.x: VESTIGE_DATA_DIR=/data/vestige holds vestige.db (+ -wal/-shm) and the HNSW
    # vector index sidecars next to it; backups/ and exports/ are its own tools' output.
    data = tmp_path / "vestige"
    con = _live_store(data)
    (data / "vestige.hnsw").write_bytes(b"\x01" * 1000)
    (data / "vestige.hnsw.meta.json").write_text('{"count": 50}')
    for sub in ("backups", "exports"):
        (data / sub).mkdir()
        (data / sub / "x.json").write_text("{}")
    (data / store.RESTORE_MARKER).write_text("{}")
    (data / "index.tmp").write_text("partial")
    try:
        assert store.store_files(data) == [
            store.StoreFile("vestige.db", sqlite=True),
            store.StoreFile("vestige.hnsw", sqlite=False),
            store.StoreFile("vestige.hnsw.meta.json", sqlite=False),
        ]
    finally:
        con.close()


def test_empty_or_missing_dir_holds_no_store(tmp_path: Path) -> None:
    assert not store.holds_store(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert not store.holds_store(tmp_path / "empty")
    with pytest.raises(store.StoreError, match="no Vestige database"):
        store.create_snapshot(tmp_path / "empty", tmp_path / "work")


def test_snapshot_holds_what_the_wal_holds_and_a_file_copy_does_not(tmp_path: Path) -> None:
    data = tmp_path / "vestige"
    con = _live_store(data, rows=200)
    try:
        expected = stores.ids(data / "vestige.db")
        assert len(expected) == 200
        # The control: a plain copy of the database file alone misses the WAL's commits.
        # (Here even the schema is only in the WAL: the copy has no table at all.)
        shutil.copyfile(data / "vestige.db", tmp_path / "copy.db")
        try:
            copied = len(stores.ids(tmp_path / "copy.db"))
        except sqlite3.OperationalError:
            copied = 0
        assert copied < 200
        snap = store.create_snapshot(data, tmp_path / "work")
    finally:
        con.close()
    target = tmp_path / "restored"
    files = store.restore_snapshot(snap.path, target, snap.sha256, {"key": "k"})
    assert files == ["vestige.db"]
    assert stores.ids(target / "vestige.db") == expected
    assert stores.check(target / "vestige.db") == ("ok", 200)


def test_restore_refuses_a_directory_that_holds_a_store(tmp_path: Path) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    snap = store.create_snapshot(data, tmp_path / "work")
    other = tmp_path / "other"
    con = _live_store(other, rows=3)
    con.close()
    before = (other / "vestige.db").read_bytes()
    with pytest.raises(store.RestoreRefused, match="refusing to overwrite"):
        store.restore_snapshot(snap.path, other, snap.sha256, {})
    assert (other / "vestige.db").read_bytes() == before


def test_restore_checks_the_checksum_and_the_entries(tmp_path: Path) -> None:
    data = tmp_path / "vestige"
    stores.create(data / "vestige.db").close()
    snap = store.create_snapshot(data, tmp_path / "work")
    with pytest.raises(store.StoreError, match="checksum mismatch"):
        store.restore_snapshot(snap.path, tmp_path / "t1", "0" * 64, {})
    assert not (tmp_path / "t1" / "vestige.db").exists()
    import tarfile

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(data / "vestige.db", arcname="../escape.db")
    with pytest.raises(store.StoreError, match="unsafe entry"):
        store.restore_snapshot(evil, tmp_path / "t2", hashlib.sha256(evil.read_bytes()).hexdigest(), {})
    assert not (tmp_path / "escape.db").exists()
