"""The REST API's rules, applied to the tool arguments MCP clients send through ``/mcp``.

The REST endpoints never let a caller choose where Vestige reads or writes files, lift its path
confinement, or confirm an irreversible action implicitly; the ``/mcp`` pass-through forwards a
client's own arguments, so it checks them against the same rules before anything reaches Vestige
(pure functions; the pass-through turns a refusal into a JSON-RPC ``invalid params`` error that
names the argument):

* **Override flags** the REST API never sends, anywhere in the arguments (nested ``items`` too):
  ``allowAnyPath`` (Vestige's ``restore`` escape from its backups folder) and ``allowSecrets``
  (store a detected credential) -- refused when set to anything but ``false``.
* **File arguments** of the tools that touch the filesystem (``maintain``, ``export``,
  ``backup``, ``restore``, ``import``): a path-like argument (``path``, ``file``, ``filename``,
  ``backupPath``, ...) must be a plain file name, the rule of ``POST /export``'s ``filename``
  (``^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$``): no directory, no ``..``, no absolute path.
* **Confirmation flags** of irreversible actions: ``confirm: true`` on ``memory`` purge/delete and
  on ``purge`` retire a memory for good; over MCP (an LLM's tool call) that is refused, the REST
  call ``POST /memory`` with ``action: delete`` is the explicit confirmation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The rule of ``POST /export``'s ``filename`` (models.ExportRequest).
FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
OVERRIDE_FLAGS = frozenset({"allowanypath", "allowsecrets"})
FILE_TOOLS = frozenset({"maintain", "export", "backup", "restore", "import"})
PATH_ARGUMENTS = frozenset(
    {
        "path",
        "file",
        "filename",
        "filepath",
        "dir",
        "directory",
        "backup",
        "backuppath",
        "backupfile",
        "exportpath",
        "outputpath",
        "output",
        "inputpath",
        "input",
        "destination",
        "target",
        "source",
        "from",
        "to",
    }
)
DESTRUCTIVE_ACTIONS = frozenset({"purge", "delete"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is refused: the argument (dotted path) and the rule it breaks."""

    argument: str
    reason: str

    def message(self, tool: str) -> str:
        return f"argument '{self.argument}' of '{tool}' refused by the bridge: {self.reason}"


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _overrides(value: Any, where: str) -> Refusal | None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _key(str(key)) in OVERRIDE_FLAGS and inner is not False and inner is not None:
                return Refusal(
                    path, "the bridge never lifts Vestige's safety checks (only false is accepted)"
                )
            found = _overrides(inner, path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = _overrides(inner, f"{where}.{i}")
            if found is not None:
                return found
    return None


def check_arguments(tool: str, arguments: Mapping[str, Any]) -> Refusal | None:
    """The first rule ``arguments`` of ``tool`` break (None: forward the call)."""
    found = _overrides(arguments, "")
    if found is not None:
        return found
    if tool in FILE_TOOLS:
        for key, value in arguments.items():
            if _key(str(key)) not in PATH_ARGUMENTS or value is None:
                continue
            if not isinstance(value, str) or not FILENAME.match(value):
                return Refusal(
                    str(key),
                    "must be a file name inside Vestige's own folder (letters, digits, '.', '_', "
                    "'-'; no directory), as POST /export's filename",
                )
    confirm = arguments.get("confirm")
    if confirm is not None and confirm is not False:
        action = arguments.get("action")
        if tool == "purge" or (
            tool == "memory" and isinstance(action, str) and action in DESTRUCTIVE_ACTIONS
        ):
            return Refusal(
                "confirm",
                "irreversible deletion is not confirmed over /mcp; use the REST call POST /memory "
                "with action 'delete' (the explicit confirmation)",
            )
    return None
