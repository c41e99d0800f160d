"""Which files make up a Vestige store, how to snapshot them consistently, and how to put them back.

Layouts (docs/backup.md, "What a snapshot contains"):

- Vestige 1.x/2.x run as ``vestige-mcp --data-dir <dir>/vestige.db``: the argument is the SQLite
  database FILE. The store is ``vestige.db`` plus its ``vestige.db-wal`` and ``vestige.db-shm``
  (WAL mode) in ``<dir>``.
- Vestige 3.x take a data DIRECTORY (``VESTIGE_DATA_DIR``): ``vestige.db`` (+ ``-wal``/``-shm``)
  and derived sidecars next to it (the HNSW vector index ``vestige.hnsw*``), plus ``backups/`` and
  ``exports/`` written by its own backup/export tools.

The operator points both at ``/data/vestige``, so one rule covers both: every SQLite database
under the directory is copied with SQLite's online backup API (a consistent snapshot of the last
committed transaction, while Vestige keeps reading and writing in WAL mode); its ``-wal``,
``-shm`` and ``-journal`` files are never copied (their content is in the snapshot); other regular
files (sidecars) are copied as they are; Vestige's own ``backups/``/``exports/`` and temporary
files are left out. Never a plain copy of a live database file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Side files of a SQLite database: their content is inside the consistent copy.
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
#: Directories and files never part of a snapshot.
EXCLUDED_DIRS = frozenset({"backups", "exports", "lost+found"})
EXCLUDED_SUFFIXES = (".tmp", ".lock")
#: Written into the data directory by a restore; never part of a snapshot.
RESTORE_MARKER = ".vestige-restored.json"
#: Name of the manifest inside every snapshot archive.
MANIFEST = "vestige-snapshot.json"
SNAPSHOT_FORMAT = 1


class StoreError(Exception):
    """The store cannot be snapshotted or restored; the message says why."""


class RestoreRefused(StoreError):
    """The target already holds a store that a restore would overwrite."""


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One member of a store: its path relative to the data directory and how it is copied."""

    path: str
    sqlite: bool


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def _is_side_file(name: str) -> bool:
    return name.endswith(SQLITE_SIDE_SUFFIXES)


def store_files(data_dir: Path) -> list[StoreFile]:
    """The files a snapshot of ``data_dir`` contains, in a stable order."""
    if not data_dir.is_dir():
        raise StoreError(f"data directory {data_dir} does not exist")
    found: list[StoreFile] = []
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        dirs[:] = sorted(d for d in dirs if not (rel_root == Path(".") and d in EXCLUDED_DIRS))
        for name in sorted(files):
            if name == RESTORE_MARKER or _is_side_file(name) or name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = (rel_root / name).as_posix()
            found.append(StoreFile(rel, is_sqlite(path)))
    return found


def holds_store(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a Vestige store: a non-empty SQLite database, or the WAL of a
    database being created (a write-ahead log alone still holds commits)."""
    if not data_dir.is_dir():
        return False
    if any(f.sqlite and (data_dir / f.path).stat().st_size > 0 for f in store_files(data_dir)):
        return True
    return any(p.name.endswith("-wal") and p.stat().st_size > 0 for p in data_dir.iterdir() if p.is_file())


def _backup_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live database: the online backup API in one step (one read
    transaction, so the copy is the database as of one commit; WAL writers are not blocked)."""
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
            (result,) = dst.execute("PRAGMA integrity_check").fetchone()
            if result != "ok":
                raise StoreError(f"the copy of {source.name} fails integrity_check: {result}")
        finally:
            dst.close()
    finally:
        src.close()


@dataclass
class Snapshot:
    """A compressed snapshot archive on local disk."""

    path: Path
    sha256: str
    size: int
    files: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def create_snapshot(data_dir: Path, work_dir: Path, name: str = "snapshot.tar.gz") -> Snapshot:
    """Snapshot the store in ``data_dir`` into ``work_dir/name`` (tar, gzip) with a manifest."""
    files = store_files(data_dir)
    if not any(f.sqlite for f in files):
        raise StoreError(f"{data_dir} holds no Vestige database (no SQLite file): nothing to back up")
    work_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="snapshot-", dir=work_dir))
    try:
        for f in files:
            target = staging / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.sqlite:
                _backup_sqlite(data_dir / f.path, target)
            else:
                shutil.copyfile(data_dir / f.path, target)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "files": [{"path": f.path, "sqlite": f.sqlite} for f in files],
        }
        archive = work_dir / name
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            data = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            for f in files:
                tar.add(staging / f.path, arcname=f.path, recursive=False, filter=_normalize)
        return Snapshot(archive, _sha256(archive), archive.stat().st_size, [f.path for f in files])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 1000
    info.uname = info.gname = ""
    info.mode = 0o600 if info.isfile() else 0o700
    return info


def _safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise StoreError(f"snapshot holds an unsafe entry: {member.name!r}")
        yield member


def restore_snapshot(
    archive: Path, data_dir: Path, expected_sha256: str, origin: dict[str, str]
) -> list[str]:
    """Fill the EMPTY ``data_dir`` from ``archive``; the restored files.

    Refuses (RestoreRefused) when ``data_dir`` already holds a store; verifies the checksum, the
    archive's entries and every database's ``PRAGMA integrity_check`` before anything is moved
    into place; writes the restore marker last.
    """
    if holds_store(data_dir):
        raise RestoreRefused(
            f"{data_dir} already holds a Vestige store: refusing to overwrite it "
            "(restore needs a new, empty volume)"
        )
    actual = _sha256(archive)
    if actual != expected_sha256:
        raise StoreError(f"snapshot checksum mismatch: expected sha256 {expected_sha256}, got {actual}")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = list(_safe_members(tar))
            names = {m.name for m in members}
            if MANIFEST not in names:
                raise StoreError("not a vestige snapshot: the archive has no manifest")
            tar.extractall(staging, members=members)  # noqa: S202 (members checked above)
        manifest = json.loads((staging / MANIFEST).read_text())
        if manifest.get("format") != SNAPSHOT_FORMAT:
            raise StoreError(f"unsupported snapshot format {manifest.get('format')!r}")
        restored = []
        for entry in manifest["files"]:
            path = staging / entry["path"]
            if not path.is_file():
                raise StoreError(f"snapshot is missing {entry['path']}")
            if entry["sqlite"]:
                con = sqlite3.connect(path)
                try:
                    (result,) = con.execute("PRAGMA integrity_check").fetchone()
                finally:
                    con.close()
                if result != "ok":
                    raise StoreError(f"restored {entry['path']} fails integrity_check: {result}")
            restored.append(entry["path"])
        for rel in restored:
            target = data_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
        write_restore_marker(data_dir, {**origin, "files": restored})
        return restored
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_restore_marker(data_dir: Path, marker: dict[str, object]) -> None:
    """Record in ``data_dir`` that a restore filled it (a pod restart then passes the check)."""
    (data_dir / RESTORE_MARKER).write_text(json.dumps(marker, indent=1))


def restore_marker(data_dir: Path) -> dict[str, object] | None:
    """The marker a previous restore left in ``data_dir`` (None: not restored by us)."""
    try:
        return json.loads((data_dir / RESTORE_MARKER).read_text())
    except (OSError, ValueError):
        return None
