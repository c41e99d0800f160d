"""Health as GitOps tools compute it, for the tests: Argo CD's Lua checks and kstatus.

``argocd_health`` runs a health script of ``manifests/argocd/`` in Lua 5.1 (PyPI ``lupa``'s
``lua51`` runtime; Argo CD runs these scripts in gopher-lua, a Lua 5.1 implementation) with the
object as the global ``obj``, like Argo CD does, and returns ``(status, message)``.
``kstatus`` (tests/tools.py) runs the real cli-utils kstatus on the same objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARGOCD = ROOT / "manifests" / "argocd"
#: Argo CD's resource.customizations key -> script file.
SCRIPTS = {
    "vestige.dev_VestigeMemory": ARGOCD / "vestigememory-health.lua",
    "vestige.dev_VestigeBackup": ARGOCD / "vestigebackup-health.lua",
}
CONFIGMAP_PATCH = ARGOCD / "argocd-cm-patch.yaml"


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON to Lua like Argo CD: objects and arrays become tables (arrays 1-based), null nil."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's health (status, message) of ``obj`` by the script for its kind."""
    from lupa import lua51  # Lua 5.1 semantics, like gopher-lua

    group = obj["apiVersion"].split("/")[0]
    script = SCRIPTS[f"{group}_{obj['kind']}"].read_text()
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    # Argo CD opens only the base, table, string and math libraries (no os, io, require).
    lua.execute("os = nil; io = nil; require = nil; dofile = nil; loadfile = nil; package = nil")
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"] or "")


def configmap_patch() -> str:
    """The argocd-cm merge patch holding every script (what CONFIGMAP_PATCH must contain)."""
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {f"resource.customizations.health.{k}": v.read_text() for k, v in SCRIPTS.items()},
    }
    header = (
        "# Argo CD health checks for vestige.dev resources (generated from the .lua files next to\n"
        "# this one by `python -m tests.health`; tests/unit/test_argocd_health.py keeps it in sync).\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-patch.yaml\n"
    )

    class Literal(str):
        pass

    def literal(dumper: yaml.SafeDumper, data: Literal) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")

    yaml.SafeDumper.add_representer(Literal, literal)
    doc["data"] = {k: Literal(v) for k, v in doc["data"].items()}
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)


if __name__ == "__main__":
    CONFIGMAP_PATCH.write_text(configmap_patch())
    print(CONFIGMAP_PATCH)
