"""The demo: the operator, run as a local process, on the local control plane.

`bash tests/demo.sh` (up) brings the cluster up, installs the CRD, starts the operator for the
namespace `demo`, applies both examples, waits until they are Ready and prints them.
`bash tests/demo.sh down` stops the operator and the cluster.

The two examples land on the simulated (kwok) node: pods are scheduled and reported Ready
without running. Where the real node runs (root and Debian's container tools: the default
here), a third agent, `demo-agent`, runs for real on it (images built here, the v3 stand-in as
its Vestige): the demo stores a memory through `kubectl port-forward`, leaves the forward
running, and prints a `curl` that finds the memory again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests import cluster
from tests.cluster import launcher

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"
# What the full example refers to and a real cluster would already have.
PREREQUISITES = [
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "agent-memory"},
        "value": 1000,
        "description": "Agent memories (used by manifests/examples/full.yaml)",
    },
]


def _pidfile() -> Path:
    return launcher.state_dir() / "demo-operator.json"


def _kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    proc = launcher.run_kubectl(kubeconfig, *args, input=input, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_operator(kubeconfig: str, images: dict[str, str] | None = None) -> int:
    info = _pidfile()
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        if Path(f"/proc/{pid}").exists():
            return pid
    log = launcher.state_dir() / "logs" / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "VESTIGE_LOG_FORMAT": "plain",
        "VESTIGE_RESYNC_SECONDS": "30",
        "VESTIGE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{_free_port()}/healthz",
        "VESTIGE_METRICS_HOST": "127.0.0.1",
        "VESTIGE_METRICS_PORT": str(_free_port()),
        **(images or {}),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vestige_operator", "run", "--namespace", NAMESPACE],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info.write_text(json.dumps({"pid": proc.pid, "log": str(log)}))
    return proc.pid


def up() -> None:
    st = cluster.up()
    kc = st.kubeconfig
    for crd in sorted((ROOT / "crds").glob("vestige.dev_*.yaml")):  # VestigeMemory, VestigeBackup
        _kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for name in ("vestigememories.vestige.dev", "vestigebackups.vestige.dev"):
        _kubectl(kc, "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    token_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "research-assistant-token", "namespace": NAMESPACE},
        "stringData": {"token": secrets.token_urlsafe(32)},
    }
    items = [ns, *PREREQUISITES]
    _kubectl(
        kc,
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    exists = subprocess.run(
        [
            cluster.kubectl_binary(),
            f"--kubeconfig={kc}",
            "get",
            "secret",
            "research-assistant-token",
            "-n",
            NAMESPACE,
        ],
        capture_output=True,
        check=False,
    )
    if exists.returncode != 0:  # an existing token is never replaced
        _kubectl(kc, "create", "-f", "-", input=json.dumps(token_secret))

    images = _real_node_images(st) if st.real_node else None
    pid = _start_operator(kc, images)
    if st.real_node:
        _apply_real_agent(st)
    for example in ("minimal.yaml", "full.yaml"):
        _kubectl(kc, "apply", "-n", NAMESPACE, "-f", str(ROOT / "manifests" / "examples" / example))
    print("[demo] waiting for both agents to be Ready ...", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 240
    while True:
        res = subprocess.run(
            [
                cluster.kubectl_binary(),
                f"--kubeconfig={kc}",
                "wait",
                "--for=condition=Ready",
                "vmem",
                "--all",
                "-n",
                NAMESPACE,
                "--timeout=10s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode == 0:
            break
        if not Path(f"/proc/{pid}").exists():
            raise SystemExit(f"the operator exited; see {launcher.state_dir() / 'logs' / 'operator.log'}")
        if time.monotonic() > deadline:
            print(_kubectl(kc, "get", "vmem", "-n", NAMESPACE, "-o", "yaml"))
            raise SystemExit("the agents did not become Ready in time")

    print(_kubectl(kc, "get", "vmem", "-n", NAMESPACE, "-o", "wide"))
    if st.real_node:
        _answer_from_the_real_agent(kc)
    else:
        print(f"[demo] no real node here ({st.node_reason}): the agents run on kwok only", file=sys.stderr)
    print(_kubectl(kc, "get", "deploy,svc,pvc,secret,networkpolicy,ingress", "-n", NAMESPACE))
    log = launcher.state_dir() / "logs" / "operator.log"
    print(
        "Read an agent's token (the bridge's bearer token):\n"
        f"  kubectl -n {NAMESPACE} get secret my-agent-auth -o jsonpath='{{.data.token}}' | base64 -d\n"
        f"Operator log: {log}\n"
        "Stop everything: bash tests/demo.sh down\n"
        "Use kubectl against the demo cluster:"
    )
    print(f"export KUBECONFIG={kc}")


REAL_AGENT = "demo-agent"


def _real_node_images(st: cluster.ClusterState) -> dict[str, str]:
    """Build (or reuse) the images and import them into the real node's containerd."""
    from tests.cluster import images

    print("[demo] building the images for the real node (minutes the first time) ...", file=sys.stderr)
    built = images.ensure_images(vestige_versions=())
    images.import_into(str(launcher.real_node_layout(st).containerd_sock), images=built)
    return {"VESTIGE_DEFAULT_IMAGE": built.refs.standin, "VESTIGE_BRIDGE_IMAGE": built.refs.bridge}


def _apply_real_agent(st: cluster.ClusterState) -> None:
    from tests.cluster import node

    lay = launcher.real_node_layout(st)
    agent = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": REAL_AGENT, "namespace": NAMESPACE},
        "spec": {
            "storage": {"size": "1Gi", "storageClassName": node.STORAGE_CLASS},
            "vestige": {"imagePullPolicy": "IfNotPresent"},
            "bridge": {"imagePullPolicy": "IfNotPresent"},
            "pod": node.POD_PLACEMENT,
        },
    }
    items = [node.local_volume(lay, f"{NAMESPACE}-{REAL_AGENT}"), agent]
    _kubectl(
        st.kubeconfig,
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )


def _answer_from_the_real_agent(kc: str) -> None:
    """Forward 127.0.0.1:<port> to the agent's Service (left running until `down`), store a
    memory, and print the curl that finds it."""
    import base64

    import httpx

    port = _free_port()
    log = launcher.state_dir() / "logs" / "demo-port-forward.log"
    with log.open("ab") as out:
        fwd = subprocess.Popen(
            [
                cluster.kubectl_binary(),
                f"--kubeconfig={kc}",
                "-n",
                NAMESPACE,
                "port-forward",
                "--address=127.0.0.1",
                f"svc/{REAL_AGENT}",
                f"{port}:8000",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info = json.loads(_pidfile().read_text())
    _pidfile().write_text(json.dumps({**info, "port_forward": fwd.pid}))
    secret = json.loads(_kubectl(kc, "-n", NAMESPACE, "get", "secret", f"{REAL_AGENT}-auth", "-o", "json"))
    token = base64.b64decode(secret["data"]["token"]).decode()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 60
    while True:
        try:
            resp = httpx.post(
                f"{url}/ingest",
                headers=headers,
                json={"content": "The demo agent's favourite tea is oolong", "tags": ["demo"]},
                timeout=10,
            )
            resp.raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or fwd.poll() is not None:
                raise SystemExit(
                    f"the real agent did not answer through the port-forward; see {log}"
                ) from None
            time.sleep(1)
    token_cmd = (
        f"kubectl -n {NAMESPACE} get secret {REAL_AGENT}-auth -o jsonpath='{{.data.token}}' | base64 -d"
    )
    curl = (
        f'curl -s -H "Authorization: Bearer $({token_cmd})" -H "Content-Type: application/json" '
        f'-d \'{{"query": "oolong"}}\' {url}/search'
    )
    found = httpx.post(f"{url}/search", headers=headers, json={"query": "oolong"}, timeout=10).json()
    print(f"[demo] {REAL_AGENT} runs on the real node; kubectl port-forward svc/{REAL_AGENT} -> {url}")
    print("[demo] it stored a memory; this finds it again (with KUBECONFIG set as below):")
    print(f"  {curl}")
    print(f"[demo] answer: {json.dumps(found)[:400]}")


def down() -> None:
    info = _pidfile()
    if info.exists() and "port_forward" in json.loads(info.read_text()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(json.loads(info.read_text())["port_forward"], signal.SIGTERM)
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        info.unlink()
    cluster.down()
    print("[demo] stopped", file=sys.stderr)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command not in ("up", "down"):
        raise SystemExit("usage: bash tests/demo.sh [up|down]")
    up() if command == "up" else down()
