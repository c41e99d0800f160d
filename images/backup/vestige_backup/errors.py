"""Failures of the runner and the scrubbing of credentials from every message (no boto3 here)."""

from __future__ import annotations

import os


class ObjectStoreError(Exception):
    """An object-storage request failed; the message names the cause."""


def _secrets() -> list[str]:
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return [v for v in (os.environ.get(n) for n in names) if v]


def scrub(text: str) -> str:
    """``text`` with every credential value replaced (defence in depth: messages are built from
    error codes, but a server may echo a key id in its error text)."""
    for value in _secrets():
        text = text.replace(value, "***")
    return text
