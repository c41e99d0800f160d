"""kopf's identity in a pod whose uid has no passwd entry (the operator image runs as 1000)."""

from __future__ import annotations

import getpass
import os
import pwd

import pytest
from vestige_operator.runner import own_identity


def test_identity_needs_no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)

    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", missing)
    with pytest.raises(KeyError):
        getpass.getuser()  # what kopf's own detection calls
    assert own_identity().startswith(f"uid-{os.getuid()}@")


def test_identity_uses_the_user_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "alice")
    assert own_identity().startswith("alice@")
