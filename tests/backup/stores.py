"""Vestige-shaped SQLite stores for the runner tests.

Written here (not copied) in the shape of Vestige 1.3.0's first migration: a ``knowledge_nodes``
table, an FTS5 index over it kept by triggers, WAL journal and ``synchronous=NORMAL`` (the
pragmas Vestige sets), so a snapshot has the same kinds of pages to get right (table, index,
virtual-table shadow tables). The real binaries are used where they are available (see
docs/backup.md, "What was tested").
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS knowledge_nodes (
    id TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    node_type TEXT NOT NULL DEFAULT 'fact',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_accessed TEXT NOT NULL,
    tags TEXT DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS idx_nodes_created ON knowledge_nodes(created_at);
CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_fts USING fts5(
    id, content, tags, content='knowledge_nodes', content_rowid='rowid'
);
CREATE TRIGGER IF NOT EXISTS knowledge_ai AFTER INSERT ON knowledge_nodes BEGIN
    INSERT INTO knowledge_fts(rowid, id, content, tags) VALUES (NEW.rowid, NEW.id, NEW.content, NEW.tags);
END;
"""


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def create(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = connect(db)
    con.executescript(SCHEMA)
    return con


def ingest(con: sqlite3.Connection, content: str) -> str:
    """One memory in one transaction (as one ingest call of Vestige); its id once committed."""
    now = datetime.now(UTC).isoformat()
    node_id = str(uuid.uuid4())
    con.execute("BEGIN IMMEDIATE")
    con.execute(
        "INSERT INTO knowledge_nodes (id, content, created_at, updated_at, last_accessed, tags) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (node_id, content, now, now, now, '["test"]'),
    )
    con.execute("COMMIT")
    return node_id


def ids(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {row[0] for row in con.execute("SELECT id FROM knowledge_nodes")}
    finally:
        con.close()


def check(db: Path) -> tuple[str, int]:
    """(``PRAGMA integrity_check``, rows found by the FTS index for a word every memory has)."""
    con = sqlite3.connect(db)
    try:
        (integrity,) = con.execute("PRAGMA integrity_check").fetchone()
        con.execute("INSERT INTO knowledge_fts(knowledge_fts) VALUES('integrity-check')")
        (hits,) = con.execute(
            "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH 'memory'"
        ).fetchone()
        return integrity, hits
    finally:
        con.close()
