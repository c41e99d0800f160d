"""The demo: the operator, run as a local process, on the local control plane.

``bash tests/demo.sh`` (up) brings the cluster up, installs the CRDs, starts the operator for the
demo's namespace and applies both examples (manifests/examples/minimal.yaml and full.yaml). Where
the real node runs (root and Debian's container tools: the default here), every agent runs on it
with the real Vestige 2.0.0 built from ../shared/vendor/vestige (the examples keep the default
images of a real cluster: the demo sets the image, the storage class and the placement of this
cluster when it applies them, and says so). For each agent it prints the Vestige version the
running server reports, its node and containers, leaves a ``kubectl port-forward`` running, stores
a memory through it and prints a ``curl`` and an MCP client command (tests/demo_mcp.py) that find it.
Without the real node the agents land on the simulated kwok node, where nothing runs, and the
demo says so.

``bash tests/demo.sh tour``: day two on the running demo (rotate a token, back up to the local S3
server, restore into a new agent, suspend and resume), printing what it does.
``bash tests/demo.sh stop``: stop the demo's operator and port-forwards, delete its namespace and
volumes; the cluster keeps running. ``bash tests/demo.sh down``: stop, then stop the cluster.

``VESTIGE_DEMO_NAMESPACE`` (default ``demo``) runs a second demo beside the first one (its test does).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests import cluster, demo_mcp
from tests.cluster import launcher, node

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
NAMESPACE = os.environ.get("VESTIGE_DEMO_NAMESPACE", "demo")
#: The Vestige the agents run (v1 shape: stdio behind mcp-proxy, generation v1).
VESTIGE_VERSION = "2.0.0"
#: What each agent stores and finds again.
QUERY = "oolong"
READY_SECONDS = 300
PLUGIN = Path(sys.executable).parent / "kubectl-vestige"
#: Labels the demo's PersistentVolumes (cluster-scoped) so `stop` finds them.
DEMO_LABEL = "vestige.dev/demo"
S3_SECRET = "backup-s3-credentials"  # the name full.yaml's backup destination refers to


def say(message: str = "") -> None:
    print(message, flush=True)


def _state_file() -> Path:
    return launcher.state_dir() / f"demo-{NAMESPACE}.json"


def _load() -> dict[str, Any]:
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save(state: dict[str, Any]) -> None:
    _state_file().write_text(json.dumps(state, indent=1))


def _alive(pid: int | None) -> bool:
    return bool(pid) and Path(f"/proc/{pid}").exists()


def _kubectl(kubeconfig: str, *args: str, input: str | None = None, timeout: float = 300) -> str:
    proc = launcher.run_kubectl(kubeconfig, *args, input=input, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _get(kc: str, *args: str) -> dict[str, Any] | None:
    proc = launcher.run_kubectl(kc, "-n", NAMESPACE, "get", *args, "-o", "json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _apply(kc: str, *items: dict[str, Any]) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(items)}
    _kubectl(kc, "apply", "--server-side", "--field-manager=vestige-demo", "-f", "-", input=json.dumps(doc))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plugin_env(kc: str) -> dict[str, str]:
    path = os.pathsep.join(
        [str(PLUGIN.parent), str(Path(cluster.kubectl_binary()).parent), os.environ["PATH"]]
    )
    return {**os.environ, "PATH": path, "KUBECONFIG": kc}


def _vestige(kc: str, *args: str, timeout: float = 600) -> str:
    """Run and echo `kubectl vestige ARGS -n <namespace>` (the plugin from this virtualenv)."""
    say(f"$ kubectl vestige {' '.join(args)} -n {NAMESPACE}")
    proc = subprocess.run(
        [str(PLUGIN), *args, "-n", NAMESPACE],
        env=_plugin_env(kc),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # its progress notes in order with its results
        text=True,
        check=False,
        timeout=timeout,
    )
    out = proc.stdout.strip()
    if out:
        say("  " + out.replace("\n", "\n  "))
    if proc.returncode != 0:
        raise SystemExit(f"kubectl vestige {args[0]} failed ({proc.returncode})")
    return proc.stdout


# -- the operator ------------------------------------------------------------------------------


def _start_operator(kc: str, env: dict[str, str]) -> int:
    state = _load()
    if _alive(state.get("operator")):
        return int(state["operator"])
    log = launcher.state_dir() / "logs" / f"demo-{NAMESPACE}-operator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vestige_operator", "run", "--namespace", NAMESPACE],
            cwd=ROOT,
            env={
                **os.environ,
                "KUBECONFIG": kc,
                "VESTIGE_LOG_FORMAT": "plain",
                "VESTIGE_RESYNC_SECONDS": "30",
                "VESTIGE_BACKUP_INTERVAL_SECONDS": "5",
                "VESTIGE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{_free_port()}/healthz",
                "VESTIGE_METRICS_HOST": "127.0.0.1",
                "VESTIGE_METRICS_PORT": str(_free_port()),
                **env,
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _save({**state, "operator": proc.pid, "operator_log": str(log)})
    return proc.pid


# -- what the examples need here ---------------------------------------------------------------


def _prerequisites(kc: str) -> None:
    """The namespace, and what full.yaml refers to that a real cluster would already have."""
    _apply(
        kc,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "agent-memory"},
            "value": 1000,
            "description": "Agent memories (used by manifests/examples/full.yaml)",
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "vestige-settings", "namespace": NAMESPACE},
            "data": {"extra": "demo"},
        },
    )
    created = {
        # auth.existingSecret: a token of our own (never replaced once it exists).
        "research-assistant-token": {"stringData": {"token": secrets.token_urlsafe(32)}},
        # pod.imagePullSecrets: nothing is pulled here (the images are imported), an empty config.
        "registry-credentials": {
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": '{"auths": {}}'},
        },
    }
    for name, body in created.items():
        if _get(kc, "secret", name) is None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NAMESPACE},
            }
            _kubectl(kc, "create", "-f", "-", input=json.dumps({**secret, **body}))


def _example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _on_the_real_node(doc: dict[str, Any], vestige_image: str, s3: dict[str, Any]) -> dict[str, Any]:
    """An example as this cluster runs it: the real Vestige image (v1 generation), the bridge
    image built here (both imported into the node's containerd), a local volume on the real node,
    the node's placement, and backups to the local S3 server instead of a cloud one."""
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = NAMESPACE
    spec = doc.setdefault("spec", {})
    spec["storage"] = {**spec.get("storage", {}), "storageClassName": node.STORAGE_CLASS}
    spec["vestige"] = {
        **spec.get("vestige", {}),
        "image": vestige_image,
        "generation": "v1",
        "imagePullPolicy": "IfNotPresent",
    }
    spec.get("bridge", {}).pop("image", None)  # the operator's default: the bridge built here
    pod = spec.setdefault("pod", {})
    pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **node.POD_PLACEMENT["nodeSelector"]}
    pod["tolerations"] = [*pod.get("tolerations", []), *node.POD_PLACEMENT["tolerations"]]
    for holder in (spec.get("backup"), (spec.get("restore") or {}).get("fromBackup")):
        if holder and "destination" in holder:
            prefix = holder["destination"]["s3"].get("prefix")
            holder["destination"] = {"s3": {**s3, **({"prefix": prefix} if prefix else {})}}
    restore = (spec.get("restore") or {}).get("fromBackup")
    if restore:  # the examples' namespace is `agents`; a restore takes only its own namespace's snapshots
        restore["source"] = f"{NAMESPACE}/{restore['source'].split('/', 1)[1]}"
    return doc


def _volume_for(kc: str, lay: node.Layout, agent: str, fresh: bool = False) -> None:
    """A local PersistentVolume on the real node reserved for the agent's claim (``claimRef``:
    no other claim of the shared cluster takes it); kept as it is when it exists (an agent's
    data). ``fresh``: a new, empty one."""
    name = f"demo-{NAMESPACE}-{agent}" + (f"-{uuid.uuid4().hex[:4]}" if fresh else "")
    if launcher.run_kubectl(kc, "get", "pv", name).returncode == 0:
        return
    pv = node.local_volume(lay, name)
    pv["metadata"]["labels"][DEMO_LABEL] = NAMESPACE
    pv["spec"]["claimRef"] = {"namespace": NAMESPACE, "name": f"{agent}-data"}
    _apply(kc, pv)


def _images(st: cluster.ClusterState) -> tuple[dict[str, str], str, str]:
    """Build (or reuse) the images, import them into the real node's containerd; returns the
    operator's image settings, the Vestige image and the S3 server's image."""
    from tests.cluster import images

    say(
        f"[demo] images: the bridge, Vestige {VESTIGE_VERSION} (from ../shared/vendor/vestige), "
        "versitygw, Litestream"
    )
    say("[demo]   (a cold machine builds them first: minutes; then seconds)")
    built = images.ensure_images(vestige_versions=(VESTIGE_VERSION,))
    s3 = images.versitygw_image()
    litestream = images.litestream_image()  # full.yaml's continuous backup: sidecar and restore
    sock = str(launcher.real_node_layout(st).containerd_sock)
    images.import_into(sock, images=built)
    images.import_into(sock, images=images.ImageSet({"versitygw": s3, "litestream": litestream}))
    env = {"VESTIGE_BRIDGE_IMAGE": built.refs.bridge, "VESTIGE_LITESTREAM_IMAGE": litestream.ref}
    return env, built.refs.vestige[VESTIGE_VERSION], s3.ref


def _real_node_reason(st: cluster.ClusterState) -> str | None:
    """Why the agents cannot run a real Vestige on the real node here (None: they can)."""
    if not st.real_node:
        return f"no real node here ({st.node_reason or 'the cluster runs the kwok node only'})"
    from tests.cluster import images

    why = images.vestige_unavailable()
    return f"no real Vestige can be built here ({why})" if why else None


def _s3_server(kc: str, image: str) -> dict[str, Any]:
    """versitygw in the demo's namespace (tests/s3/pod.py): the backup destination of the demo."""
    from tests.s3 import pod

    s3 = pod.S3Pod(lambda *a, **k: _kubectl(kc, *a, **k), NAMESPACE, secret_name=S3_SECRET)
    if _get(kc, "secret", S3_SECRET) is None:
        s3.start(image)
    else:
        _kubectl(kc, "-n", NAMESPACE, "rollout", "status", f"deployment/{pod.S3_NAME}", "--timeout=180s")
    dest = s3.destination()["s3"]
    return {**dest, "region": "us-east-1"}


# -- up ----------------------------------------------------------------------------------------


AGENTS = {"my-agent": "minimal.yaml", "research-assistant": "full.yaml"}


def up() -> None:
    started = time.monotonic()
    st = cluster.up()
    kc = st.kubeconfig
    say(f"[demo] cluster {st.version} up, nodes: {st.node}; namespace {NAMESPACE}")
    for crd in sorted((ROOT / "crds").glob("vestige.dev_*.yaml")):  # VestigeMemory, VestigeBackup
        _kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for name in ("vestigememories.vestige.dev", "vestigebackups.vestige.dev"):
        _kubectl(kc, "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    _prerequisites(kc)

    why_not = _real_node_reason(st)
    if why_not is None:
        env, vestige_image, s3_image = _images(st)
        s3 = _s3_server(kc, s3_image)
        _save({**_load(), "vestige_image": vestige_image, "s3": s3})
        lay = launcher.real_node_layout(st)
        docs = {}
        for agent, example in AGENTS.items():
            _volume_for(kc, lay, agent)
            docs[agent] = _on_the_real_node(_example(example), vestige_image, s3)
        say(f"[demo] on this cluster the examples get: vestige.image {vestige_image} (generation v1),")
        say(f"[demo]   storageClassName {node.STORAGE_CLASS} (a 20Gi local volume each), the real node's")
        say(f"[demo]   nodeSelector and toleration; backups go to the local S3 server ({s3['endpoint']})")
    else:
        env = {}
        docs = {agent: _example(ex) for agent, ex in AGENTS.items()}
        for doc in docs.values():
            doc["metadata"]["namespace"] = NAMESPACE
        say(f"[demo] {why_not}: the agents land on the simulated kwok node, where NOTHING runs")
        say("[demo]   (no Vestige, no port-forward; the examples are applied as they are)")
    pid = _start_operator(kc, env)
    say(f"[demo] operator running (pid {pid}), watching namespace {NAMESPACE}")
    for agent, example in AGENTS.items():
        say(f"[demo] applying manifests/examples/{example} -> vestigememory/{agent}")
        _apply(kc, docs[agent])
    say("[demo] waiting for the agents to be Ready ...")
    _wait_ready(kc, pid, list(AGENTS))
    say(_kubectl(kc, "-n", NAMESPACE, "get", "vmem", "-o", "wide").rstrip())
    if why_not is None:
        for agent in AGENTS:
            _show_agent(kc, agent, _fact(agent), remember=True)
    say()
    say(f"[demo] ready in {time.monotonic() - started:.0f}s. To use kubectl and kubectl vestige here:")
    say(f"  export KUBECONFIG={kc} PATH={PLUGIN.parent}:$PATH")
    say(f"[demo] operator log: {_load().get('operator_log')}")
    say(
        "[demo] day two: bash tests/demo.sh tour    stop: bash tests/demo.sh stop (or down: also the cluster)"
    )


def _wait_ready(kc: str, pid: int, names: list[str], timeout: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = launcher.run_kubectl(
            kc,
            "wait",
            "--for=condition=Ready",
            "-n",
            NAMESPACE,
            *(f"vmem/{n}" for n in names),
            "--timeout=10s",
        )
        if res.returncode == 0:
            return
        if not _alive(pid):
            raise SystemExit(f"the operator exited; see {_load().get('operator_log')}")
        if time.monotonic() > deadline:
            for what in (("vmem", "-o", "wide"), ("pods", "-o", "wide"), ("events",)):
                say(_kubectl(kc, "get", *what, "-n", NAMESPACE))  # what the agents wait for
            raise SystemExit(f"{', '.join(names)} did not become Ready in {timeout:.0f}s")


def _token(kc: str, agent: str) -> str:
    ref = (_get(kc, "vmem", agent) or {})["status"]["authSecretRef"]
    secret = _get(kc, "secret", ref["name"])
    assert secret is not None
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def _forward(kc: str, agent: str) -> str:
    """The agent's port-forward (127.0.0.1, left running until `stop`): started, or restarted on
    the same port when its pod changed (suspend/resume); returns its URL once it answers."""
    state = _load()
    forwards = state.setdefault("forwards", {})
    fwd = forwards.get(agent) or {}
    port = int(fwd.get("port") or _free_port())
    url = f"http://127.0.0.1:{port}"
    with contextlib.suppress(httpx.HTTPError):
        if _alive(fwd.get("pid")) and httpx.get(f"{url}/livez", timeout=5).status_code == 200:
            return url
    if _alive(fwd.get("pid")):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(fwd["pid"]), signal.SIGTERM)
    log = launcher.state_dir() / "logs" / f"demo-{NAMESPACE}-port-forward-{agent}.log"
    deadline = time.monotonic() + 90
    while True:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [cluster.kubectl_binary(), f"--kubeconfig={kc}", "-n", NAMESPACE, "port-forward",
                 "--address=127.0.0.1", f"svc/{agent}", f"{port}:8000"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        forwards[agent] = {"pid": proc.pid, "port": port}
        _save(state)
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/livez", timeout=5).status_code == 200:
                    return url
            time.sleep(1)
        if time.monotonic() >= deadline:
            raise SystemExit(f"the port-forward to {agent} does not answer; see {log}")
        time.sleep(2)  # it exited (the pod was not ready yet): once more


def _search(url: str, token: str, query: str = QUERY) -> str:
    resp = httpx.post(
        f"{url}/search", headers={"Authorization": f"Bearer {token}"}, json={"query": query}, timeout=60
    )
    resp.raise_for_status()
    return json.dumps(resp.json().get("data"))


def _fact(agent: str) -> str:
    return f"{agent}'s favourite tea is {QUERY}"


def _show_agent(kc: str, agent: str, fact: str, remember: bool = False) -> None:
    """Which Vestige runs where (from the running server and the pod), the port-forward, and
    ``fact`` (stored first when ``remember``) found through REST and MCP, with the commands to
    do it again."""
    url = _forward(kc, agent)
    token = _token(kc, agent)
    health = httpx.get(f"{url}/health", timeout=30).json()
    pods = json.loads(
        _kubectl(
            kc, "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={agent}", "-o", "json"
        )
    )["items"]
    pod = next(p for p in pods if p["status"].get("phase") == "Running")
    node_name = pod["spec"]["nodeName"]
    runtime = json.loads(_kubectl(kc, "get", "node", node_name, "-o", "json"))["status"]["nodeInfo"][
        "containerRuntimeVersion"
    ]
    containers = ", ".join(
        f"{c['name']} {c['containerID'].split('://', 1)[1][:12]}" for c in pod["status"]["containerStatuses"]
    )
    if remember and fact not in _search(url, token):
        resp = httpx.post(
            f"{url}/ingest",
            headers={"Authorization": f"Bearer {token}"},
            json={"content": fact, "tags": ["demo"]},
            timeout=60,
        )
        resp.raise_for_status()
    found = _search(url, token)
    if fact not in found:
        raise SystemExit(f"{agent}: the search did not find {fact!r}: {found[:500]}")
    mcp = demo_mcp.ask(f"{url}/mcp", token, QUERY)
    if fact not in mcp.found:
        raise SystemExit(f"{agent}: the MCP search did not find what was stored: {mcp.found[:500]}")
    say()
    say(
        f"{agent}: Vestige {health.get('vestige_version')} (as the running server reports it; "
        f"tool generation {health.get('tool_generation')})"
    )
    say(f"  runs on node {node_name} ({runtime}), pod {pod['metadata']['name']}, containers {containers}")
    say(f"  port-forward (left running): {url} -> svc/{agent}:8000")
    how = "stored and found" if remember else "found"
    say(f'  {how} through REST and through MCP ({len(mcp.tools)} tools): "{fact}"')
    tok = f"$(kubectl vestige token {agent} -n {NAMESPACE})"
    say(
        f'  REST: curl -s -H "Authorization: Bearer {tok}" -H "Content-Type: application/json" '
        f'-d \'{{"query": "{QUERY}"}}\' {url}/search'
    )
    say(f"  MCP:  VESTIGE_TOKEN={tok} python tests/demo_mcp.py {url}/mcp {QUERY}")


# -- the tour (day two) ------------------------------------------------------------------------


def tour() -> None:
    st = cluster.ClusterState.load()
    state = _load()
    if st is None or not _alive(state.get("operator")):
        raise SystemExit("the demo is not running: bash tests/demo.sh first")
    if (why_not := _real_node_reason(st)) is not None:
        raise SystemExit(f"the tour needs agents that really run: {why_not}")
    kc = st.kubeconfig
    started = time.monotonic()
    say("== 1. Rotate my-agent's token (the old one keeps working for the grace period) ==")
    url = _forward(kc, "my-agent")
    old = _token(kc, "my-agent")
    _vestige(kc, "rotate-token", "my-agent", "--grace", "5m", "--wait")
    new = _token(kc, "my-agent")
    t0 = time.monotonic()
    while _status(url, new) != 200:  # the kubelet refreshes the Secret's volume; the bridge follows
        if time.monotonic() - t0 > 180:
            raise SystemExit("the bridge did not take the new token")
        time.sleep(2)
    say(
        f"  the bridge took the new token {time.monotonic() - t0:.0f}s later, same pod, no restart; "
        f"old token now: HTTP {_status(url, old)} (valid for 5m), new token: HTTP {_status(url, new)}"
    )

    say("== 2. Back up research-assistant to the local S3 server (versitygw) ==")
    _vestige(kc, "backup", "research-assistant", "--wait")
    say(_kubectl(kc, "-n", NAMESPACE, "get", "vbak").rstrip())

    say("== 3. Restore the newest backup into a NEW agent (manifests/examples/restore.yaml) ==")
    restored = _example("restore.yaml")
    name = restored["metadata"]["name"]
    if _get(kc, "vmem", name) is not None:  # an earlier tour's: the demo's own objects go
        say(f"  (removing {name} of an earlier tour, its claim and volume)")
        _kubectl(kc, "-n", NAMESPACE, "delete", "vmem", name, "--wait=true")
        _kubectl(kc, "-n", NAMESPACE, "delete", "pvc", f"{name}-data", "--ignore-not-found", "--wait=true")
    _delete_volumes(kc, f"demo-{NAMESPACE}-{name}-")
    _volume_for(kc, launcher.real_node_layout(st), name, fresh=True)
    _apply(kc, _on_the_real_node(restored, state["vestige_image"], state["s3"]))
    say(f"  applied vestigememory/{name} (restore.fromBackup: {NAMESPACE}/research-assistant-prod, latest)")
    _wait_ready(kc, state["operator"], [name])
    _show_agent(kc, name, _fact("research-assistant"))  # research-assistant's memory, restored
    say("  => the new agent started from the backup: it finds research-assistant's memory")

    say("== 4. Suspend my-agent (zero pods, data and token kept), then resume it ==")
    _vestige(kc, "suspend", "my-agent")
    t0 = time.monotonic()
    while _phase(kc, "my-agent") != "Suspended" or _pods(kc, "my-agent"):
        if time.monotonic() - t0 > 180:
            raise SystemExit("my-agent did not reach phase Suspended")
        time.sleep(2)
    say(_kubectl(kc, "-n", NAMESPACE, "get", "vmem", "my-agent").rstrip())
    say("  no pod runs for my-agent")
    _vestige(kc, "resume", "my-agent")
    _wait_ready(kc, state["operator"], ["my-agent"])
    say(_kubectl(kc, "-n", NAMESPACE, "get", "vmem", "my-agent").rstrip())
    _show_agent(kc, "my-agent", _fact("my-agent"))
    say("  => after the resume my-agent still finds its memory (new pod, same volume, new token)")
    say()
    say(f"[demo] tour done in {time.monotonic() - started:.0f}s")


def _status(url: str, token: str) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/search", headers=auth, json={"query": QUERY}, timeout=60).status_code


def _phase(kc: str, agent: str) -> str | None:
    return ((_get(kc, "vmem", agent) or {}).get("status") or {}).get("phase")


def _pods(kc: str, agent: str) -> list[dict[str, Any]]:
    out = _kubectl(
        kc, "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={agent}", "-o", "json"
    )
    return json.loads(out)["items"]


def _delete_volumes(kc: str, prefix: str = "") -> None:
    pvs = json.loads(_kubectl(kc, "get", "pv", "-l", f"{DEMO_LABEL}={NAMESPACE}", "-o", "json"))["items"]
    names = [pv["metadata"]["name"] for pv in pvs if pv["metadata"]["name"].startswith(prefix)]
    if names:
        _kubectl(kc, "delete", "pv", *names, "--wait=false")


# -- stop and down -----------------------------------------------------------------------------


def stop() -> None:
    """Stop this demo's processes, delete its namespace and volumes; the cluster keeps running."""
    state = _load()
    pids = [f.get("pid") for f in state.get("forwards", {}).values()] + [state.get("operator")]
    st = cluster.ClusterState.load()
    if st is not None and cluster.status().get("up"):
        kc = st.kubeconfig
        launcher.run_kubectl(kc, "delete", "namespace", NAMESPACE, "--ignore-not-found", timeout=300)
        _delete_volumes(st.kubeconfig)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGTERM)
    for pid in pids:
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)
    _state_file().unlink(missing_ok=True)
    say(f"[demo] stopped; namespace {NAMESPACE} and its volumes deleted")


def down() -> None:
    stop()
    cluster.down()
    say("[demo] cluster stopped")


COMMANDS = {"up": up, "tour": tour, "stop": stop, "down": down}

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command not in COMMANDS:
        raise SystemExit("usage: bash tests/demo.sh [up|tour|stop|down]")
    COMMANDS[command]()
