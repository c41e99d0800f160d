"""The demo: the operator, run as a local process, on the local control plane.

`bash tests/demo.sh` (up) brings the cluster up, installs the CRD, starts the operator for the
namespace `demo`, applies both examples, waits until they are Ready and prints them.
`bash tests/demo.sh down` stops the operator and the cluster.

Simulated nodes run no containers: pods are scheduled and reported Ready by kwok, so the demo
shows the operator's side (children, status, `kubectl get`), not Vestige answering queries.
"""

from __future__ import annotations

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
    proc = subprocess.run(
        [cluster.kubectl_binary(), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_operator(kubeconfig: str) -> int:
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

    pid = _start_operator(kc)
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


def down() -> None:
    info = _pidfile()
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
