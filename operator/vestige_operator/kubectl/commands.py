"""The plugin's commands. Each takes a :class:`Context` and the parsed arguments and returns the
exit code; failures raise :class:`PluginError` (one line on stderr, see ``cli.main``)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from vestige_operator import GROUP
from vestige_operator.api import LATEST, BackupPhase, VestigeMemorySpec
from vestige_operator.backup import backup_manifest, scheduled_name
from vestige_operator.cluster import DEPLOYMENT, EVENT, POD, SECRET, VESTIGE_BACKUP, VESTIGE_MEMORY
from vestige_operator.kubectl import render
from vestige_operator.kubectl.kube import Forbidden, Kube, NotFound, PluginError
from vestige_operator.times import format_duration, format_time, parse_duration
from vestige_operator.tokens import ANNOTATION_ROTATE, ANNOTATION_ROTATE_GRACE, MAX_GRACE
from vestige_operator.vocabulary import (
    APP_NAME,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    Owner,
    instance_selector,
    label_selector,
    memory_pod_selector,
)

BACKUP_DONE = (str(BackupPhase.COMPLETED), str(BackupPhase.FAILED))


@dataclass
class Context:
    kube: Kube
    namespace: str
    flags: render.KubeFlags
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    poll_interval: float = 1.0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def get_memory(ctx: Context, name: str) -> dict[str, Any]:
    return ctx.kube.get(VESTIGE_MEMORY, ctx.namespace, name)


def agent_pods(ctx: Context, name: str) -> list[dict[str, Any]]:
    """The agent's pods, the best candidate first: Ready, then Running, then newest."""
    pods = ctx.kube.list(POD, ctx.namespace, label_selector=memory_pod_selector(name))

    def rank(pod: Mapping[str, Any]) -> tuple[bool, bool, bool, str]:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
        )
        deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        return (
            not deleting,
            ready,
            status.get("phase") == "Running",
            pod["metadata"].get("creationTimestamp", ""),
        )

    return sorted(pods, key=rank, reverse=True)


def running_pod(ctx: Context, memory: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's running pod, or a PluginError that says why there is none."""
    name = memory["metadata"]["name"]
    pods = agent_pods(ctx, name)
    if not pods:
        if (memory.get("spec") or {}).get("suspend"):
            raise PluginError(
                f'VestigeMemory "{name}" in namespace "{ctx.namespace}" is suspended (no pod); '
                f"resume it with: kubectl vestige resume {name} -n {ctx.namespace}"
            )
        phase = (memory.get("status") or {}).get("phase") or "unknown"
        raise PluginError(
            f'VestigeMemory "{name}" in namespace "{ctx.namespace}" has no pod yet (phase {phase})'
        )
    pod = pods[0]
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise PluginError(
            f'pod "{pod["metadata"]["name"]}" of {name} is {phase or "not running"}, not Running'
        )
    return pod


def read_token(ctx: Context, memory: Mapping[str, Any]) -> str:
    secret_name, key = render.token_ref(memory)
    secret = ctx.kube.get(SECRET, ctx.namespace, secret_name)
    value = (secret.get("data") or {}).get(key)
    if value is None:
        raise PluginError(f'Secret "{secret_name}" in namespace "{ctx.namespace}" has no key "{key}"')
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise PluginError(f'Secret "{secret_name}" key "{key}" is not valid base64 UTF-8 text') from None


# -- status -----------------------------------------------------------------------------------


def _vestige_images(ctx: Context, namespace: str | None) -> dict[tuple[str, str], str]:
    """(namespace, name) -> image of the ``vestige`` container of the operator's Deployments;
    empty when Deployments may not be listed (the version then comes from the spec)."""
    try:
        deployments = ctx.kube.list(
            DEPLOYMENT,
            namespace,
            label_selector=label_selector({LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: APP_NAME}),
        )
    except (Forbidden, NotFound):
        return {}
    images = {}
    for d in deployments:
        meta = d.get("metadata") or {}
        for c in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or ():
            if c.get("name") == "vestige" and c.get("image"):
                images[(meta.get("namespace", ""), meta.get("name", ""))] = c["image"]
    return images


def _events(ctx: Context, memory: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Events of the VestigeMemory and of its children (same name, its PVC, its pods)."""
    name = memory["metadata"]["name"]
    names = {name, f"{name}-data", f"{name}-auth"}
    with contextlib.suppress(Forbidden):
        names |= {
            p["metadata"]["name"]
            for p in ctx.kube.list(POD, ctx.namespace, label_selector=instance_selector(name))
        }
    events: list[dict[str, Any]] = []
    try:
        for n in sorted(names):
            events += ctx.kube.list(EVENT, ctx.namespace, field_selector=f"involvedObject.name={n}")
    except Forbidden as exc:
        return [], f"events not shown: {exc.message}"
    return render.recent_events(events), None


def _emit(ctx: Context, doc: Any, output: str) -> None:
    if output == "json":
        ctx.say(json.dumps(doc, indent=2))
    else:
        ctx.say(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip())


def cmd_status(ctx: Context, args: Namespace) -> int:
    now = ctx.clock()
    if args.name:
        memory = get_memory(ctx, args.name)
        images = _vestige_images(ctx, ctx.namespace)
        summary = render.summarize(memory, now, deployment_image=images.get((ctx.namespace, args.name)))
        conditions = list((memory.get("status") or {}).get("conditions") or [])
        events, note = _events(ctx, memory)
        if args.output:
            _emit(ctx, {**summary, "conditions": conditions, "events": events}, args.output)
        else:
            ctx.say(render.describe(summary, conditions, events, now, events_note=note))
        return 0
    namespace = None if args.all_namespaces else ctx.namespace
    memories = ctx.kube.list(VESTIGE_MEMORY, namespace)
    images = _vestige_images(ctx, namespace)
    summaries = [
        render.summarize(
            m,
            now,
            deployment_image=images.get((m["metadata"].get("namespace", ""), m["metadata"]["name"])),
        )
        for m in sorted(memories, key=lambda m: (m["metadata"].get("namespace", ""), m["metadata"]["name"]))
    ]
    if args.output:
        _emit(ctx, {"items": summaries}, args.output)
    elif not summaries:
        where = "any namespace" if namespace is None else f'namespace "{namespace}"'
        ctx.note(f"No VestigeMemory resources found in {where}.")
    else:
        ctx.say(render.list_table(summaries, now, with_namespace=namespace is None))
    return 0


# -- token ------------------------------------------------------------------------------------


def cmd_token(ctx: Context, args: Namespace) -> int:
    memory = get_memory(ctx, args.name)
    ctx.say(read_token(ctx, memory))
    return 0


# -- suspend / resume -------------------------------------------------------------------------


def _set_suspend(ctx: Context, name: str, suspend: bool) -> int:
    memory = get_memory(ctx, name)
    word = "suspended" if suspend else "resumed"
    if bool((memory.get("spec") or {}).get("suspend")) == suspend:
        ctx.say(
            f"vestigememory.{GROUP}/{name} already {'suspended' if suspend else 'running (not suspended)'}"
        )
        return 0
    ctx.kube.merge_patch(VESTIGE_MEMORY, ctx.namespace, name, {"spec": {"suspend": suspend}})
    ctx.say(f"vestigememory.{GROUP}/{name} {word}")
    return 0


def cmd_suspend(ctx: Context, args: Namespace) -> int:
    return _set_suspend(ctx, args.name, True)


def cmd_resume(ctx: Context, args: Namespace) -> int:
    return _set_suspend(ctx, args.name, False)


# -- rotate-token -----------------------------------------------------------------------------


def _wait_for(ctx: Context, timeout: float, what: str, probe: Callable[[], Any]) -> Any:
    """Poll ``probe`` every ``ctx.poll_interval`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise PluginError(f"timed out after {render.human_duration(timeout)} waiting for {what}")
        time.sleep(ctx.poll_interval)


def parse_grace(text: str) -> timedelta:
    """``--grace``: a duration the operator accepts as a rotation's grace period (tokens.py), ``0``
    included (the old token is revoked at once); PluginError (exit 2) otherwise."""
    try:
        grace = parse_duration(text)
    except ValueError as exc:
        raise PluginError(f"--grace: {exc}", code=2) from None
    if grace > MAX_GRACE:
        raise PluginError(
            f"--grace {text.strip()}: longer than the operator's maximum grace period "
            f"{format_duration(MAX_GRACE)} ({MAX_GRACE.days} days)",
            code=2,
        )
    return grace


def cmd_rotate_token(ctx: Context, args: Namespace) -> int:
    grace = parse_grace(args.grace)
    memory = get_memory(ctx, args.name)
    meta = memory.get("metadata") or {}
    before = (memory.get("status") or {}).get("tokenRotatedAt")
    request_id = format_time(ctx.clock())
    if (meta.get("annotations") or {}).get(ANNOTATION_ROTATE) == request_id:  # same second: stay unique
        request_id = format_time(ctx.clock(), fraction=True)
    patch = {
        "metadata": {
            "annotations": {ANNOTATION_ROTATE: request_id, ANNOTATION_ROTATE_GRACE: args.grace},
            # Optimistic lock: the `before` above is the state this request is compared against.
            "resourceVersion": meta.get("resourceVersion"),
        }
    }
    ctx.kube.merge_patch(VESTIGE_MEMORY, ctx.namespace, args.name, patch)
    ctx.say(
        f"vestigememory.{GROUP}/{args.name} token rotation requested ({ANNOTATION_ROTATE}={request_id}, "
        f"grace {args.grace})"
    )
    if not args.wait:
        return 0

    def rotated() -> str | None:
        now = (get_memory(ctx, args.name).get("status") or {}).get("tokenRotatedAt")
        return now if now and now != before else None

    at = _wait_for(ctx, args.timeout, f"status.tokenRotatedAt of {args.name} to change", rotated)
    if grace:
        ctx.say(f"token rotated at {at}; the previous token stays valid for {args.grace}")
    else:
        ctx.say(f"token rotated at {at}; the previous token is no longer accepted")
    return 0


# -- backup -----------------------------------------------------------------------------------


def cmd_backup(ctx: Context, args: Namespace) -> int:
    memory = get_memory(ctx, args.name)  # a clear "not found" before creating anything
    owner = Owner(name=args.name, namespace=ctx.namespace, uid=memory["metadata"]["uid"])
    name = scheduled_name(args.name, ctx.clock())
    manifest = backup_manifest(owner, name, None)  # as the operator's scheduler makes them
    ctx.kube.create(VESTIGE_BACKUP, ctx.namespace, manifest)
    ctx.say(f"vestigebackup.{GROUP}/{name} created")
    if not args.wait:
        return 0
    last: list[str | None] = [None]

    def done() -> dict[str, Any] | None:
        status = ctx.kube.get(VESTIGE_BACKUP, ctx.namespace, name).get("status") or {}
        phase = status.get("phase")
        if phase != last[0]:
            ctx.note(f"{name}: {phase or 'waiting for the operator'}")
            last[0] = phase
        return status if phase in BACKUP_DONE else None

    status = _wait_for(ctx, args.timeout, f"VestigeBackup {name} to complete", done)
    if status.get("phase") == BackupPhase.FAILED:
        reason = status.get("message") or next(
            (c.get("message") for c in status.get("conditions") or () if c.get("message")), "no message"
        )
        raise PluginError(f'VestigeBackup "{name}" failed: {reason}')
    ctx.say(f"vestigebackup.{GROUP}/{name} completed")
    return 0


# -- restore ----------------------------------------------------------------------------------


def restore_manifest(
    name: str, namespace: str, source: Mapping[str, Any], *, at: str | None, key: str | None
) -> dict[str, Any]:
    """A NEW VestigeMemory ``namespace/name`` that starts from the backups of ``source`` (a
    VestigeMemory): its destination and key space (namespace/agentId), its Vestige and storage;
    ``at`` a moment of its continuous replica (RFC 3339 or ``latest``), else ``key`` a snapshot
    (an object key or ``latest``). Checked with the operator's own model before it is sent."""
    meta = source.get("metadata") or {}
    spec = source.get("spec") or {}
    src = f"{meta.get('namespace')}/{meta.get('name')}"
    backup = spec.get("backup") or {}
    if not backup.get("destination"):
        raise PluginError(f"VestigeMemory {src} has no spec.backup.destination: nothing to restore from")
    if at is not None and not (backup.get("continuous") or {}).get("enabled"):
        raise PluginError(f"VestigeMemory {src} has no continuous backup: --at needs one (use --snapshot)")
    agent = (source.get("status") or {}).get("agentId") or spec.get("agentId") or meta.get("name")
    from_backup: dict[str, Any] = {
        "destination": backup["destination"],
        "source": f"{meta.get('namespace')}/{agent}",
    }
    if at is not None:
        from_backup["pointInTime"] = at
    elif key in (None, LATEST):
        from_backup["latest"] = True
    else:
        from_backup["key"] = key
    new_spec: dict[str, Any] = {"restore": {"fromBackup": from_backup}}
    for part in ("vestige", "storage"):  # the same server generation, a volume as large
        if spec.get(part):
            new_spec[part] = {k: v for k, v in spec[part].items() if k != "reclaimPolicy"}
    try:
        VestigeMemorySpec.model_validate(new_spec)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise PluginError(f"the restore would not be accepted: {problems}") from None
    return {
        "apiVersion": VESTIGE_MEMORY.api_version,
        "kind": "VestigeMemory",
        "metadata": {"name": name, "namespace": namespace},
        "spec": new_spec,
    }


def cmd_restore(ctx: Context, args: Namespace) -> int:
    src_ns, _, src_name = args.source.rpartition("/")
    source = ctx.kube.get(VESTIGE_MEMORY, src_ns or ctx.namespace, src_name)
    manifest = restore_manifest(args.name, ctx.namespace, source, at=args.at, key=args.snapshot)
    ctx.kube.create(VESTIGE_MEMORY, ctx.namespace, manifest)
    what = f"as of {args.at}" if args.at else f"snapshot {args.snapshot or LATEST}"
    ctx.say(
        f"vestigememory.{GROUP}/{args.name} created, restoring {src_ns or ctx.namespace}/{src_name} {what}"
    )
    return 0


# -- logs -------------------------------------------------------------------------------------


def cmd_logs(ctx: Context, args: Namespace) -> int:
    memory = get_memory(ctx, args.name)
    pods = agent_pods(ctx, args.name)
    if not pods:
        state = "suspended" if (memory.get("spec") or {}).get("suspend") else "has no pod yet"
        raise PluginError(f'VestigeMemory "{args.name}" in namespace "{ctx.namespace}" {state}: no logs')
    pod = pods[0]["metadata"]["name"]
    query = [("container", args.container)]
    if args.follow:
        query.append(("follow", "true"))
    if args.tail is not None:
        query.append(("tailLines", str(args.tail)))
    if args.previous:
        query.append(("previous", "true"))
    out = getattr(ctx.out, "buffer", None)
    try:
        for chunk in ctx.kube.stream("get logs of", POD, ctx.namespace, pod, "log", query):
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                ctx.out.write(chunk.decode(errors="replace"))
                ctx.out.flush()
    except KeyboardInterrupt:
        return 0
    return 0


# -- connect ----------------------------------------------------------------------------------


def kubectl_binary() -> str:
    found = os.environ.get("VESTIGE_KUBECTL") or shutil.which("kubectl")
    if not found:
        raise PluginError(
            "kubectl not found on PATH (connect runs `kubectl port-forward`; set VESTIGE_KUBECTL)"
        )
    return found


class PortForward:
    """``kubectl port-forward`` as a child process: ``start`` returns the local port once kubectl
    says it forwards; ``wait`` blocks until it exits; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 30.0) -> int:
        try:
            self.proc = self._spawn()
        except OSError as exc:
            raise PluginError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        return self._await_forwarding(timeout)

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches us only; we stop kubectl ourselves
        )

    def _await_forwarding(self, timeout: float) -> int:
        assert self.proc is not None
        ready = threading.Event()
        port: list[int] = []

        def read_stdout() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                found = render.forwarded_port(line)
                if found is not None and not port:
                    port.append(found)
                    ready.set()
            ready.set()

        def read_stderr() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip())
                if ready.is_set() and port:
                    print(f"kubectl: {line.rstrip()}", file=sys.stderr, flush=True)

        for target in (read_stdout, read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        if not ready.wait(timeout):
            self.stop()
            raise PluginError(f"kubectl port-forward did not start forwarding within {timeout:.0f}s")
        if not port:
            self.proc.wait(timeout=10)
            self._threads[1].join(timeout=5)
            raise PluginError(f"port-forward failed: {self.failure()}")
        return port[0]

    def failure(self) -> str:
        lines = [ln for ln in self.stderr_lines if ln.strip()]
        if not lines:
            code = self.proc.returncode if self.proc else None
            return f"kubectl exited with code {code}"
        last = lines[-1]
        return last[len("error: ") :] if last.startswith("error: ") else last

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def cmd_connect(ctx: Context, args: Namespace) -> int:
    if args.port is not None and not 0 <= args.port <= 65535:
        raise PluginError(f"--port {args.port}: not a TCP port", code=2)
    memory = get_memory(ctx, args.name)
    token = None if args.no_token else read_token(ctx, memory)
    pod_obj = running_pod(ctx, memory)
    pod = pod_obj["metadata"]["name"]
    if not any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod_obj.get("status") or {}).get("conditions") or ()
    ):
        ctx.note(f'warning: pod "{pod}" is not Ready yet; the bridge may answer 503 until it is')
    agent_id = (
        (memory.get("status") or {}).get("agentId") or (memory.get("spec") or {}).get("agentId") or args.name
    )
    forward = PortForward(
        render.port_forward_command(kubectl_binary(), ctx.flags, ctx.namespace, pod, args.port)
    )
    try:
        local_port = forward.start()
        ctx.say(
            render.connect_info(
                name=args.name,
                namespace=ctx.namespace,
                pod=pod,
                local_port=local_port,
                agent_id=agent_id,
                token=token,
                flags=ctx.flags,
            )
        )
        code = forward.wait()
    except KeyboardInterrupt:
        forward.stop()
        ctx.note("port-forward stopped")
        return 0
    finally:
        forward.stop()
    raise PluginError(f"port-forward ended (kubectl exit code {code}): {forward.failure()}")
