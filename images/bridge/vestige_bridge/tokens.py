"""The bearer tokens a bridge accepts: fixed (an environment variable) or read from files.

In a pod the operator mounts the agent's token Secret as a volume (``VESTIGE_AUTH_TOKEN_DIR``,
default mount ``/var/run/vestige/auth``) with up to three files:

* ``token`` -- the current bearer token;
* ``token-previous`` -- the token it replaced, during a rotation's grace period;
* ``token-previous-expires`` -- when ``token-previous`` stops being accepted (RFC 3339).

The kubelet updates such a volume in place, without restarting the container: it writes the new
files into a fresh timestamped directory, then atomically renames the ``..data`` symlink to point
at it (``token -> ..data/token``). :class:`FileTokens` polls the directory every few seconds and
reads every file from ONE resolved ``..data`` target, so a poll never mixes two generations of
the Secret; a read that fails half-way (the old directory removed under it) keeps the last good
set and tries again at the next poll. A plain directory (no ``..data``) works the same way.

Fail closed: no readable ``token`` means no request is accepted (401), a ``token-previous``
without a parseable expiry is never accepted, and an expired one is refused at once (the expiry
is checked on every request, not at the next poll).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("vestige_bridge.tokens")

TOKEN_FILE = "token"  # noqa: S105 (file names, not secrets)
PREVIOUS_FILE = "token-previous"
PREVIOUS_EXPIRES_FILE = "token-previous-expires"
DATA_LINK = "..data"


def parse_time(raw: str) -> datetime | None:
    """An RFC 3339 timestamp (``2026-01-02T03:04:05Z``) as an aware datetime; None if unparseable."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _credential(header: str | None) -> bytes | None:
    scheme, _, credential = (header or "").strip().partition(" ")
    ok_scheme = hmac.compare_digest(scheme.lower().encode(), b"bearer")
    return credential.strip().encode() if ok_scheme else None


@dataclass(frozen=True, slots=True)
class TokenSet:
    """One generation of accepted tokens (values are never logged or repr'd)."""

    current: bytes | None
    previous: bytes | None = None
    previous_expires: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"TokenSet(current={'set' if self.current else None}, previous_expires={self.previous_expires})"
        )

    def accepted(self, now: datetime) -> list[bytes]:
        tokens = [self.current] if self.current else []
        if self.previous and self.previous_expires is not None and now < self.previous_expires:
            tokens.append(self.previous)
        return tokens


class Tokens:
    """What the guard asks: is authentication on, and does this Authorization header pass."""

    enabled: bool = True

    def current(self) -> TokenSet:  # pragma: no cover - overridden
        raise NotImplementedError

    def refresh(self) -> bool:
        """Pick up a change the next poll would see, now (True when the tokens changed)."""
        return False

    def _matches(self, credential: bytes | None, now: datetime) -> bool:
        candidates = self.current().accepted(now)
        ok = False
        for token in candidates or [b"\0"]:  # compare against something even when nothing is valid
            ok |= hmac.compare_digest(credential or b"", token)
        return ok and credential is not None and bool(candidates)

    def accepts(self, header: str | None, now: datetime | None = None) -> bool:
        """Whether ``header`` is ``Bearer <an accepted token>``; every candidate is compared in
        constant time, whichever matches (or none). On a miss the source is checked for a change
        first (a client may hold the new token before the next poll)."""
        credential = _credential(header)
        when = now or datetime.now(UTC)
        if self._matches(credential, when):
            return True
        return self.refresh() and self._matches(credential, when)


class StaticTokens(Tokens):
    """One fixed token (``VESTIGE_AUTH_TOKEN``)."""

    def __init__(self, token: str) -> None:
        self._set = TokenSet(token.encode())

    def current(self) -> TokenSet:
        return self._set


class NoTokens(Tokens):
    """Anonymous access (``VESTIGE_ALLOW_ANONYMOUS=true`` without a token)."""

    enabled = False

    def current(self) -> TokenSet:
        return TokenSet(None)

    def accepts(self, header: str | None, now: datetime | None = None) -> bool:
        return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


class FileTokens(Tokens):
    """Tokens read from a directory (a mounted Secret), re-read every ``interval`` seconds."""

    def __init__(self, directory: Path, interval: float = 2.0) -> None:
        self.directory = directory
        self.interval = interval
        self._set = TokenSet(None)
        self._loaded = False
        self._signature: object = None
        self.reloads = 0  # generations loaded (for metrics and tests)
        self.on_change: Callable[[TokenSet], None] | None = None

    def current(self) -> TokenSet:
        return self._set

    def _source(self) -> Path:
        """The directory to read this generation from: ``..data``'s target when it is a symlink."""
        link = self.directory / DATA_LINK
        try:
            target = os.readlink(link)
        except OSError:
            return self.directory
        return (self.directory / target).resolve() if not os.path.isabs(target) else Path(target)

    def signature(self) -> object:
        """Cheap fingerprint of the directory's current generation: the ``..data`` target (one
        readlink), else the files' inode, size and mtime."""
        try:
            return ("..data", os.readlink(self.directory / DATA_LINK))
        except OSError:
            pass
        out = []
        for name in (TOKEN_FILE, PREVIOUS_FILE, PREVIOUS_EXPIRES_FILE):
            try:
                st = os.stat(self.directory / name)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def refresh(self) -> bool:
        if self.signature() == self._signature:
            return False
        return self.reload()

    def read(self) -> TokenSet:
        """The token set as the directory holds it now (OSError while the kubelet swaps it)."""
        source = self._source()
        current = _read(source / TOKEN_FILE)
        previous = _read(source / PREVIOUS_FILE)
        expires_raw = _read(source / PREVIOUS_EXPIRES_FILE)
        if source != self.directory and not source.is_dir():
            raise FileNotFoundError(f"{source} vanished while reading it")
        expires = parse_time(expires_raw) if expires_raw else None
        if previous and expires is None:
            log.warning(
                "%s is present without a valid %s: not accepted", PREVIOUS_FILE, PREVIOUS_EXPIRES_FILE
            )
        return TokenSet(
            current.encode() if current else None,
            previous.encode() if previous else None,
            expires,
        )

    def reload(self) -> bool:
        """Re-read the directory; True when the accepted tokens changed. Keeps the last good set
        when the directory cannot be read right now."""
        signature = self.signature()
        try:
            fresh = self.read()
        except OSError as exc:
            log.warning(
                "cannot read the tokens in %s (%s); keeping the last ones", self.directory, type(exc).__name__
            )
            return False
        self._signature = signature
        if self._loaded and fresh == self._set:
            return False
        first = not self._loaded
        self._set = fresh
        self._loaded = True
        self.reloads += 1
        if fresh.current is None:
            log.warning("no token in %s: every authenticated request is refused", self.directory / TOKEN_FILE)
        elif not first:
            log.info(
                "tokens reloaded from %s (previous token %s)",
                self.directory,
                f"accepted until {fresh.previous_expires.isoformat()}"
                if fresh.previous and fresh.previous_expires
                else "not accepted",
            )
        if self.on_change is not None:
            self.on_change(fresh)
        return True

    async def watch(self) -> None:
        """Poll for changes for ever (run as a task in the app's lifespan)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.reload()  # a full re-read: also catches an in-place edit the signature misses
            except Exception:  # never let the watcher die: the last good tokens stay in force
                log.exception("token reload failed")
