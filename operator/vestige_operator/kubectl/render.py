"""Pure parts of ``kubectl vestige``: ages, image tags, summaries, tables, commands.

Nothing here talks to the API server or reads the clock (``now`` is always passed in), so every
function is unit-tested directly (``tests/unit/test_kubectl_render.py``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vestige_operator.times import parse_time
from vestige_operator.tokens import TOKEN_KEY
from vestige_operator.vocabulary import BRIDGE_PORT, secret_name

JsonDict = dict[str, Any]

# -- ages ---------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's short age format: ``45s``, ``5m``, ``3h10m``, ``4d``, ``2y``."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age(value: str | None, now: datetime) -> str:
    """Age of an RFC 3339 timestamp relative to ``now``; ``-`` when absent."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return human_duration((now - moment).total_seconds())


# -- images -----------------------------------------------------------------------------------


def image_version(image: str | None) -> str | None:
    """The tag of an image reference (``repo:3.1.1`` -> ``3.1.1``; a digest when there is no tag;
    ``latest`` when neither); None without an image."""
    if not image:
        return None
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.split(":", 1)[1]
    if digest:
        return digest[:19]  # sha256: + 12 hex digits
    return "latest"


# -- the summary of one VestigeMemory ---------------------------------------------------------


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in _get(obj, "status", "conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def token_ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(Secret name, key) of the agent's token: ``status.authSecretRef``, else the spec's
    ``auth.existingSecret``, else the operator's own ``<name>-auth`` / ``token``."""
    for ref in (_get(obj, "status", "authSecretRef"), _get(obj, "spec", "auth", "existingSecret")):
        if isinstance(ref, Mapping) and ref.get("name"):
            return str(ref["name"]), str(ref.get("key") or TOKEN_KEY)
    return secret_name(str(obj["metadata"]["name"])), TOKEN_KEY


def vestige_version(obj: Mapping[str, Any], deployment_image: str | None = None) -> str | None:
    """The Vestige version: from status when the operator reports one, else the tag of the image
    in force (the Deployment's ``vestige`` container), else the tag of ``spec.vestige.image``."""
    for path in (("status", "vestigeVersion"), ("status", "vestige", "version")):
        value = _get(obj, *path)
        if isinstance(value, str) and value:
            return value
    return image_version(deployment_image) or image_version(_get(obj, "spec", "vestige", "image"))


def summarize(obj: Mapping[str, Any], now: datetime, *, deployment_image: str | None = None) -> JsonDict:
    """What ``status`` shows for one VestigeMemory (the ``-o json`` shape of a row)."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    ready = condition(obj, "Ready")
    backup = _get(obj, "status", "backup", "lastSuccessful")
    if isinstance(backup, Mapping):  # tolerate an object shape ({time: ...} or {completionTime: ...})
        backup = backup.get("time") or backup.get("completionTime") or backup.get("name")
    secret, key = token_ref(obj)
    return {
        "name": name,
        "namespace": meta.get("namespace"),
        "phase": _get(obj, "status", "phase"),
        "ready": ready.get("status") if ready else None,
        "agentId": _get(obj, "status", "agentId") or _get(obj, "spec", "agentId") or name,
        "endpoint": _get(obj, "status", "endpoint"),
        "url": _get(obj, "status", "url"),
        "storage": {
            "requested": _get(obj, "spec", "storage", "size"),
            "actual": _get(obj, "status", "storage", "capacity"),
            "pvc": _get(obj, "status", "pvcName"),
        },
        "vestigeVersion": vestige_version(obj, deployment_image),
        "lastBackup": backup if isinstance(backup, str) else None,
        # the continuous replica (spec.backup.continuous): ReplicationHealthy and its last time
        "replication": _replication(obj),
        "suspended": bool(_get(obj, "spec", "suspend")),
        "tokenSecret": {"name": secret, "key": key},
        "tokenRotatedAt": _get(obj, "status", "tokenRotatedAt"),
        "created": meta.get("creationTimestamp"),
        "age": age(meta.get("creationTimestamp"), now),
    }


LIST_COLUMNS = (
    "NAME",
    "AGENT",
    "PHASE",
    "READY",
    "ENDPOINT",
    "STORAGE",
    "VESTIGE",
    "LAST BACKUP",
    "REPLICATED",
    "AGE",
)


def _replication(obj: Mapping[str, Any]) -> JsonDict | None:
    healthy = condition(obj, "ReplicationHealthy")
    if healthy is None:
        return None
    return {
        "healthy": healthy.get("status"),
        "reason": healthy.get("reason"),
        "lastReplicatedAt": _get(obj, "status", "replication", "lastReplicatedAt"),
        "lagSeconds": _get(obj, "status", "replication", "lagSeconds"),
    }


def _replicated_cell(replication: Mapping[str, Any] | None, now: datetime) -> str:
    """``3s`` (how long ago the replica last held every change), with the reason when not healthy
    (``5m (Lagging)``); ``-`` without a continuous backup."""
    if not replication:
        return "-"
    when = replication.get("lastReplicatedAt")
    cell = age(when, now) if when else "never"
    return cell if replication.get("healthy") == "True" else f"{cell} ({replication.get('reason')})"


def storage_cell(summary: Mapping[str, Any]) -> str:
    """``requested/actual`` (``5Gi/5Gi``); ``-`` for an unknown side."""
    storage = summary.get("storage") or {}
    return f"{storage.get('requested') or '-'}/{storage.get('actual') or '-'}"


def list_row(summary: Mapping[str, Any], now: datetime, *, with_namespace: bool) -> list[str]:
    row = [
        summary["name"],
        summary.get("agentId") or "-",
        summary.get("phase") or "-",
        summary.get("ready") or "-",
        summary.get("endpoint") or "-",
        storage_cell(summary),
        summary.get("vestigeVersion") or "-",
        age(summary.get("lastBackup"), now) if summary.get("lastBackup") else "-",
        _replicated_cell(summary.get("replication"), now),
        summary.get("age") or "-",
    ]
    return [summary.get("namespace") or "-", *row] if with_namespace else row


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces (kubectl's layout); no trailing spaces."""
    all_rows = [list(headers), *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for r in all_rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def list_table(summaries: Sequence[Mapping[str, Any]], now: datetime, *, with_namespace: bool) -> str:
    headers = ("NAMESPACE", *LIST_COLUMNS) if with_namespace else LIST_COLUMNS
    return table(headers, (list_row(s, now, with_namespace=with_namespace) for s in summaries))


def _one_line(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def event_time(event: Mapping[str, Any]) -> str | None:
    return (
        event.get("lastTimestamp")
        or _get(event, "series", "lastObservedTime")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or _get(event, "metadata", "creationTimestamp")
    )


def recent_events(events: Iterable[Mapping[str, Any]], limit: int = 10) -> list[JsonDict]:
    """The ``limit`` most recent events (oldest first), each reduced to what ``status`` shows."""
    reduced = [
        {
            "time": event_time(e),
            "type": e.get("type"),
            "reason": e.get("reason"),
            "object": f"{_get(e, 'involvedObject', 'kind')}/{_get(e, 'involvedObject', 'name')}",
            "count": e.get("count") or _get(e, "series", "count") or 1,
            "message": e.get("message") or e.get("note"),
        }
        for e in events
    ]
    reduced.sort(key=lambda e: parse_time(e["time"]) or datetime.min.replace(tzinfo=UTC))
    return reduced[-limit:] if limit else reduced


def describe(
    summary: Mapping[str, Any],
    conditions: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] | None,
    now: datetime,
    *,
    events_note: str | None = None,
) -> str:
    """The human view of one VestigeMemory: fields, then its conditions and recent events."""
    storage = summary.get("storage") or {}
    backup = summary.get("lastBackup")
    rotated = summary.get("tokenRotatedAt")
    token = summary.get("tokenSecret") or {}
    fields = [
        ("Name", summary["name"]),
        ("Namespace", summary.get("namespace") or "-"),
        ("Phase", summary.get("phase") or "-"),
        ("Ready", summary.get("ready") or "-"),
        ("Suspended", "true" if summary.get("suspended") else "false"),
        ("Agent ID", summary.get("agentId") or "-"),
        ("Endpoint", summary.get("endpoint") or "-"),
    ]
    if summary.get("url"):
        fields.append(("URL", summary["url"]))
    fields += [
        (
            "Storage",
            f"{storage.get('requested') or '-'} requested, {storage.get('actual') or '-'} actual"
            + (f" (PVC {storage['pvc']})" if storage.get("pvc") else ""),
        ),
        ("Vestige", summary.get("vestigeVersion") or "-"),
        ("Last backup", f"{backup} ({age(backup, now)} ago)" if backup else "-"),
        (
            "Token",
            f"Secret {token.get('name')}, key {token.get('key')}"
            + (f", rotated {rotated} ({age(rotated, now)} ago)" if rotated else ""),
        ),
        ("Age", summary.get("age") or "-"),
    ]
    width = max(len(k) for k, _ in fields) + 2
    out = [f"{k + ':':<{width}}{v}" for k, v in fields]
    out.append("")
    out.append("Conditions:")
    if conditions:
        rows = [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason") or "-"),
                age(c.get("lastTransitionTime"), now),
                _one_line(c.get("message")) or "-",
            ]
            for c in conditions
        ]
        out += [
            "  " + line for line in table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows).splitlines()
        ]
    else:
        out.append("  <none>")
    out.append("")
    out.append("Events:")
    if events_note:
        out.append(f"  <{events_note}>")
    elif events:
        rows = [
            [
                age(e.get("time"), now),
                str(e.get("type") or "-"),
                str(e.get("reason") or "-"),
                str(e.get("object") or "-"),
                _one_line(e.get("message")) or "-",
            ]
            for e in events
        ]
        out += [
            "  " + line
            for line in table(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), rows).splitlines()
        ]
    else:
        out.append("  <none>")
    return "\n".join(out)


# -- connect ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KubeFlags:
    """The user's connection flags, passed on unchanged to a ``kubectl`` subprocess."""

    kubeconfig: str | None = None
    context: str | None = None
    user: str | None = None  # --as
    group: str | None = None  # --as-group

    def kubectl_args(self) -> list[str]:
        args = []
        if self.kubeconfig:
            args.append(f"--kubeconfig={self.kubeconfig}")
        if self.context:
            args.append(f"--context={self.context}")
        if self.user:
            args.append(f"--as={self.user}")
        if self.group:
            args.append(f"--as-group={self.group}")
        return args


def port_forward_command(
    kubectl: str, flags: KubeFlags, namespace: str, pod: str, local_port: int | None
) -> list[str]:
    """``kubectl port-forward`` of the pod's bridge port to 127.0.0.1 (``local_port`` None or 0:
    kubectl picks a free one and names it in its ``Forwarding from`` line)."""
    local = str(local_port) if local_port else ""
    return [
        kubectl,
        *flags.kubectl_args(),
        "port-forward",
        f"--namespace={namespace}",
        "--address=127.0.0.1",
        f"pod/{pod}",
        f"{local}:{BRIDGE_PORT}",
    ]


_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


def forwarded_port(line: str) -> int | None:
    """The local port in kubectl's ``Forwarding from 127.0.0.1:PORT -> 8000`` line, else None."""
    m = _FORWARDING.match(line.strip())
    return int(m.group(1)) if m else None


def token_command(name: str, namespace: str, flags: KubeFlags) -> str:
    """The shell command that prints the agent's token (``kubectl vestige token ...``)."""
    parts = ["kubectl", "vestige", "token", name, "-n", namespace]
    if flags.kubeconfig:
        parts.append(f"--kubeconfig={flags.kubeconfig}")
    if flags.context:
        parts.append(f"--context={flags.context}")
    return shlex.join(parts)


def connect_info(
    *,
    name: str,
    namespace: str,
    pod: str,
    local_port: int,
    agent_id: str,
    token: str | None,
    flags: KubeFlags,
    timeout_ms: int = 30000,
) -> str:
    """What ``connect`` prints once the forward is up: a working curl and the OpenClaw plugin
    config (``token`` None: a placeholder saying where to get it)."""
    url = f"http://127.0.0.1:{local_port}"
    token_cmd = token_command(name, namespace, flags)
    config = {
        "serverUrl": url,
        "authToken": token if token is not None else f"<the output of: {token_cmd}>",
        "timeoutMs": timeout_ms,
        "agentId": agent_id,
    }
    body = json.dumps({"query": "hello", "limit": 5})
    curl = (
        f'curl -sS -H "Authorization: Bearer $({token_cmd})" -H "Content-Type: application/json" '
        f"-d {shlex.quote(body)} {url}/search"
    )
    return "\n".join(
        [
            f"Forwarding {url} -> {namespace}/{pod}:{BRIDGE_PORT} (bridge of {name}); Ctrl-C to stop.",
            "",
            "Try it:",
            f'  curl -sS -H "Authorization: Bearer $({token_cmd})" {url}/health',
            f"  {curl}",
            "",
            "OpenClaw plugin config:",
            *("  " + line for line in json.dumps(config, indent=2).splitlines()),
        ]
    )
