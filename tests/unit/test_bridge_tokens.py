"""The bridge's token store (vestige_bridge/tokens.py): files, the kubelet's ..data layout, expiry."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vestige_bridge.tokens import FileTokens, NoTokens, StaticTokens, parse_time

from tests.bridge.test_rotation import kubelet_write

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_static_and_anonymous() -> None:
    static = StaticTokens("s3cret")
    assert static.accepts(bearer("s3cret"))
    assert static.accepts("bearer  s3cret ")
    assert not static.accepts(bearer("s3cre"))
    assert not static.accepts(None)
    assert not static.accepts("Basic s3cret")
    assert NoTokens().accepts(None) and not NoTokens().enabled


def test_previous_token_only_until_its_expiry(tmp_path: Path) -> None:
    expires = NOW + timedelta(minutes=10)
    kubelet_write(
        tmp_path, {"token": "new", "token-previous": "old", "token-previous-expires": "2026-12-02T10:10:00Z"}
    )
    tokens = FileTokens(tmp_path)
    assert tokens.reload()
    assert tokens.accepts(bearer("new"), NOW)
    assert tokens.accepts(bearer("old"), NOW)
    assert tokens.accepts(bearer("old"), expires - timedelta(seconds=1))
    assert not tokens.accepts(bearer("old"), expires)
    assert tokens.accepts(bearer("new"), expires + timedelta(days=1))
    assert "new" not in repr(tokens.current()) and "old" not in repr(tokens.current())


def test_previous_without_valid_expiry_is_never_accepted(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"token": "new", "token-previous": "old", "token-previous-expires": "soon"})
    tokens = FileTokens(tmp_path)
    tokens.reload()
    assert not tokens.accepts(bearer("old"), NOW)
    kubelet_write(tmp_path, {"token": "new", "token-previous": "old"})
    assert not tokens.accepts(bearer("old"), NOW)


def test_a_miss_checks_for_a_new_generation_at_once(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"token": "one"})
    tokens = FileTokens(tmp_path, interval=3600)  # the poller would not run within this test
    tokens.reload()
    kubelet_write(tmp_path, {"token": "two"})
    assert tokens.accepts(bearer("two"))  # found through the ..data change, no poll needed
    assert not tokens.accepts(bearer("one"))
    reloads = tokens.reloads
    assert not tokens.accepts(bearer("guess"))  # an unchanged directory is not re-read
    assert tokens.reloads == reloads


def test_plain_directory_and_missing_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("plain\n")
    tokens = FileTokens(tmp_path)
    tokens.reload()
    assert tokens.accepts(bearer("plain"))
    os.remove(tmp_path / "token")
    assert tokens.reload()
    assert not tokens.accepts(bearer("plain"))  # fail closed
    assert not tokens.accepts(None)


def test_vanished_generation_keeps_the_last_tokens(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"token": "kept"})
    tokens = FileTokens(tmp_path)
    tokens.reload()
    os.symlink("..gone", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    assert not tokens.reload()
    assert tokens.accepts(bearer("kept"))


def test_parse_time() -> None:
    assert parse_time("2026-12-02T10:10:00Z") == NOW + timedelta(minutes=10)
    assert parse_time("2026-12-02T10:10:00+00:00") == NOW + timedelta(minutes=10)
    assert parse_time("2026-12-02T10:10:00") is None  # no zone: not trusted
    assert parse_time("") is None and parse_time("x") is None
