"""Shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _kopf_watch_as_found() -> Iterator[None]:
    """Each test leaves kopf's watch function and the child feeds as it found them
    (``handlers.register`` wraps the one and sets the other, process-wide)."""
    from kopf._cogs.clients import watching
    from vestige_operator import handlers

    real = getattr(watching.continuous_watch, "__wrapped__", watching.continuous_watch)
    feeds = dict(handlers._feeds)
    yield
    watching.continuous_watch = real
    handlers.feed_watches(feeds)
