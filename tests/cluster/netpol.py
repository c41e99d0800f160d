"""NetworkPolicy on the real node: kube-router's NetworkPolicy controller, run as a pod.

The node's CNI (the ``bridge`` plugin) does not enforce NetworkPolicy. kube-router
(``github.com/cloudnativelabs/kube-router``, Apache-2.0) run with ``--run-firewall`` only (no
routing, no service proxy) does, beside any CNI: iptables chains per pod and per policy, ipsets of
the allowed peers, and ``-m physdev --physdev-is-bridged`` rules in FORWARD for the traffic between
pods on the bridge ``vestige0`` (``br_netfilter`` hands bridged frames to iptables). Traffic from
the node itself (``--src-type LOCAL``: kubelet probes) stays allowed.

Why not kube-network-policies (``sigs.k8s.io/kube-network-policies`` v0.8.0, the first choice):
it built and ran here as a pod, but its nftables rules never load: they end in ``queue`` (NFQUEUE
from nftables), and this kernel has ``CONFIG_NFT_QUEUE`` unset (``nft add rule inet t c ip saddr
@s queue num 98`` fails with ENOENT; nfnetlink_queue and the iptables NFQUEUE target exist, the
nftables expression does not). Without its table it enforces nothing. See the README.

- The binary: ``go build github.com/cloudnativelabs/kube-router/v2/cmd/kube-router`` (CGO_ENABLED=0)
  in the consumer module ``tests/cluster/go/netpol``, which requires kube-router ``<VERSION>`` and
  raises the dependencies kube-router's own go.mod pins at versions with advisories; cached under
  ``<cache>/netpol/kube-router-<VERSION>/`` with a stamp like the control-plane binaries. VERSION is
  the newest release the Go module proxy serves here (later 2.x tags answer 403).
- The image: ``localhost/kube-router:<VERSION>-<hash>`` from ``tests/images/kube-router/Dockerfile``
  on the local Debian base (kube-router runs ``iptables``/``iptables-restore`` and ``ipset``:
  Debian's, nft backend like the node's kube-proxy), archived and imported into the node's
  containerd with ``tests.cluster.images``' helpers.
- The pod: a DaemonSet ``kube-system/kube-router-netpol`` on the real node (its selector and
  toleration), ``hostNetwork: true`` (the node's network namespace, where kube-proxy's rules and the
  bridge are), privileged, ServiceAccount + ClusterRole (read nodes, pods, namespaces,
  networkpolicies). kube-router uses ``rest.InClusterConfig``; a host-network process here cannot
  reach the ``kubernetes`` Service's ClusterIP (the node's namespace has no default route, so
  connect() fails before kube-proxy's DNAT could apply), so ``KUBERNETES_SERVICE_HOST/PORT`` name
  the node-local API forwarder (``NODE_IP:6443``), which the API server's certificate covers.

``install(kubectl, layout)`` is idempotent and waits until kube-router's chains are in the node's
namespace; ``uninstall`` removes it and its chains and sets (kube-router ``--cleanup-config``).
``python -m tests.cluster.netpol build|install|uninstall`` does the same for the running cluster
(``VESTIGE_CLUSTER_STATE``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cluster import build, images, launcher, node

ENGINE = "kube-router"
VERSION = "v2.1.0"
MODULE = "github.com/cloudnativelabs/kube-router/v2"
PACKAGE = f"{MODULE}/cmd/kube-router"
#: Bump when the image is made differently in a way its inputs do not show.
RECIPE = "1"
NAMESPACE = "kube-system"
NAME = "kube-router-netpol"
#: kube-router's top chain in the filter table of the node's namespace (present once it synced).
TOP_CHAIN = "KUBE-ROUTER-FORWARD"
HEALTH_PORT = 20244
IMAGE_KEY = "kube-router"
GO_MODULE = build.GO_DIR / "netpol"
DOCKERFILE = images.TESTS_IMAGES / "kube-router" / "Dockerfile"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


class NetpolError(RuntimeError):
    pass


def _log(message: str) -> None:
    print(f"[netpol] {message}", file=sys.stderr, flush=True)


# -- the binary ------------------------------------------------------------------------------


def bin_dir() -> Path:
    return build.cache_root() / "netpol" / f"{ENGINE}-{VERSION}"


def binary() -> Path:
    """The static ``kube-router`` of ``VERSION`` (built once, then reused), its LICENSE beside.

    Built from the consumer module ``tests/cluster/go/netpol``: kube-router's own go.mod pins
    dependencies with published advisories (golang.org/x/net v0.21.0, grpc v1.62.0, protobuf
    v1.32.0, docker v25.0.3, x/oauth2 v0.17.0); this module raises them (``go get``) and builds
    ``cmd/kube-router`` against them."""
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "kube-router"
    stamp_file = out / ".kube-router.stamp"
    inputs = [GO_MODULE / "go.mod", GO_MODULE / "go.sum", GO_MODULE / "tools.go"]
    stamp = build._stamp(MODULE, VERSION, "-trimpath -ldflags=-s -w", "CGO_ENABLED=0", *inputs)
    if (
        target.is_file()
        and (out / "LICENSE").is_file()
        and stamp_file.is_file()
        and stamp_file.read_text() == stamp
    ):
        return target
    env = build._env()
    cmd = [build._go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target), PACKAGE]
    build._run(cmd, GO_MODULE, env, f"kube-router {VERSION}")
    license_file = build._module_dir(MODULE, VERSION, env) / "LICENSE"
    (out / "LICENSE").write_bytes(license_file.read_bytes())
    stamp_file.write_text(stamp)
    return target


# -- the image -------------------------------------------------------------------------------


def image() -> images.Image:
    """The engine's image (archive in the images cache), built when missing or stale."""
    exe = binary()
    debian = images.ensure_bases()["debian"]
    stamp = images._hash(ENGINE, RECIPE, VERSION, debian.stamp, DOCKERFILE, exe, bin_dir() / "LICENSE")
    ref = f"localhost/kube-router:{images._tag(VERSION, stamp)}"
    with images._locked():
        return images._build(
            IMAGE_KEY, ref, stamp, DOCKERFILE, bin_dir(), {"DEBIAN_IMAGE": debian.ref}, [debian]
        )


def import_image(containerd_sock: Path) -> str:
    """The image, built when needed and imported into the node's containerd; returns its ref."""
    built = image()
    images.import_into(str(containerd_sock), images=images.ImageSet({IMAGE_KEY: built}))
    return built.ref


# -- the objects -----------------------------------------------------------------------------


def manifests(ref: str) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole(+Binding) and the DaemonSet on the real node."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "vestige-tests"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "pods", "namespaces"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                # kube-router starts informers for these in every mode (unused with the firewall only).
                {"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": True,
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-node-critical",
                        "serviceAccountName": NAME,
                        **node.POD_PLACEMENT,
                        "containers": [
                            {
                                "name": "kube-router",
                                "image": ref,
                                "imagePullPolicy": "IfNotPresent",
                                "args": [
                                    "--run-firewall=true",
                                    "--run-router=false",
                                    "--run-service-proxy=false",
                                    f"--service-cluster-ip-range={launcher.SERVICE_CIDR}",
                                    f"--health-port={HEALTH_PORT}",
                                    "--metrics-port=0",
                                    "--v=2",
                                ],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    },
                                    {"name": "KUBERNETES_SERVICE_HOST", "value": node.NODE_IP},
                                    {"name": "KUBERNETES_SERVICE_PORT", "value": str(node.API_PORT)},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/healthz", "port": HEALTH_PORT, "host": "127.0.0.1"},
                                    "periodSeconds": 3,
                                },
                                "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
                                "securityContext": {"privileged": True},
                                "volumeMounts": [{"name": "xtables-lock", "mountPath": "/run/xtables.lock"}],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "xtables-lock",
                                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                            }
                        ],
                    },
                },
            },
        },
    ]


# -- install / uninstall ---------------------------------------------------------------------

#: Chain name prefixes kube-router's NetworkPolicy controller owns (kube-proxy's differ).
CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")


def _netns(layout: node.Layout, *cmd: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        node.in_netns(layout, *cmd), input=input, capture_output=True, text=True, check=False
    )


def filter_rules(layout: node.Layout) -> str:
    """``iptables-save -t filter`` of the node's namespace (read only)."""
    return _netns(layout, "iptables-save", "-t", "filter").stdout


def _chains_present(layout: node.Layout) -> bool:
    return f":{TOP_CHAIN} " in filter_rules(layout)


def _engine_pods(kubectl: Kubectl) -> list[dict[str, Any]]:
    proc = kubectl(
        "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/name={NAME}", "-o", "json", check=False
    )
    if proc.returncode != 0:
        return []
    return list(json.loads(proc.stdout)["items"])


def installed(kubectl: Kubectl) -> bool:
    """Whether the engine's DaemonSet exists (it may still be starting)."""
    proc = kubectl("-n", NAMESPACE, "get", "daemonset", NAME, "-o", "name", check=False)
    return proc.returncode == 0


def _wait(what: str, check: Callable[[], str | None], timeout: float) -> None:
    """Poll ``check`` (None: done; a string: why not yet) until done or ``timeout``."""
    deadline = time.monotonic() + timeout
    why = "not checked"
    while time.monotonic() < deadline:
        got = check()
        if got is None:
            return
        why = got
        time.sleep(1)
    raise NetpolError(f"timed out waiting for {what}: {why}")


def install(kubectl: Kubectl, layout: node.Layout, timeout: float = 180.0) -> str:
    """Build/import the image, apply the objects (server-side, idempotent) and wait until the
    engine's pod is Ready on the current image and its chains are in the node's namespace.
    Returns the image ref. ``kubectl(*args, check=..., input=...)`` runs kubectl (admin)."""
    ref = import_image(layout.containerd_sock)
    docs = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests(ref)})
    kubectl("apply", "--server-side", "--field-manager=vestige-tests", "-f", "-", input=docs)

    def ready() -> str | None:
        pods = [p for p in _engine_pods(kubectl) if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != 1:
            return f"{len(pods)} engine pods"
        pod = pods[0]
        if pod["spec"]["containers"][0]["image"] != ref:
            return "the pod runs an older image"
        statuses = pod.get("status", {}).get("containerStatuses", [])
        if not statuses or not statuses[0].get("ready"):
            return f"pod not ready: {json.dumps(pod.get('status', {}))[:1500]}"
        if not _chains_present(layout):
            return f"no chain {TOP_CHAIN} in {layout.netns} yet"
        return None

    try:
        _wait("the NetworkPolicy engine", ready, timeout)
    except NetpolError as exc:
        logs = kubectl("-n", NAMESPACE, "logs", f"daemonset/{NAME}", "--tail=60", check=False)
        raise NetpolError(f"{exc}\n--- engine logs:\n{logs.stdout[-4000:]}{logs.stderr[-500:]}") from None
    return ref


def cleanup_script(saved: str) -> str | None:
    """The ``iptables-restore --noflush`` input that deletes kube-router's chains and the jumps to
    them from other chains, given ``iptables-save -t filter`` output; None when there are none.
    Touches no other chain or rule."""
    ours = [
        line.split()[0][1:]
        for line in saved.splitlines()
        if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)
    ]
    if not ours:
        return None
    lines = ["*filter"]
    for line in saved.splitlines():
        parts = line.split()
        jump = parts[parts.index("-j") + 1] if "-j" in parts[:-1] else ""
        from_builtin = parts[:1] == ["-A"] and not parts[1].startswith(CHAIN_PREFIXES)
        if from_builtin and jump.startswith(CHAIN_PREFIXES):
            lines.append("-D" + line[2:])
    lines += [f"-F {chain}" for chain in ours]
    lines += [f"-X {chain}" for chain in ours]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _cleanup_rules(layout: node.Layout) -> None:
    """Delete kube-router's chains from the filter table of the node's namespace (kube-router
    leaves them behind when it stops) in one transaction. Its ipsets stay (unreferenced); they
    go with the node's namespace."""
    script = cleanup_script(filter_rules(layout))
    if script is None:
        return
    proc = _netns(layout, "iptables-restore", "--noflush", input=script)
    if proc.returncode != 0:
        raise NetpolError(f"removing kube-router's chains failed: {proc.stderr}")


def uninstall(kubectl: Kubectl, layout: node.Layout, timeout: float = 120.0) -> None:
    """Remove the engine, then its chains (no pod stays judged by rules nobody keeps current)."""
    for kind, name, ns in (
        ("daemonset", NAME, NAMESPACE),
        ("clusterrolebinding", NAME, None),
        ("clusterrole", NAME, None),
        ("serviceaccount", NAME, NAMESPACE),
    ):
        kubectl(*(["-n", ns] if ns else []), "delete", kind, name, "--ignore-not-found", check=False)
    _wait("the engine's pod to go", lambda: None if not _engine_pods(kubectl) else "still there", timeout)
    _cleanup_rules(layout)


def _cli() -> int:
    from tests import cluster

    usage = "usage: python -m tests.cluster.netpol build|install|uninstall"
    if len(sys.argv) != 2 or sys.argv[1] not in ("build", "install", "uninstall"):
        print(usage, file=sys.stderr)
        return 2
    if sys.argv[1] == "build":
        print(image().ref)
        return 0
    st = cluster.ClusterState.load()
    if st is None or not st.real_node:
        print("no running cluster with the real node (VESTIGE_CLUSTER_STATE)", file=sys.stderr)
        return 1

    def kubectl(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = launcher.run_kubectl(st.kubeconfig, *args, input=input, timeout=None)
        if check and proc.returncode != 0:
            raise NetpolError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    layout = launcher.real_node_layout(st)
    if sys.argv[1] == "install":
        print(install(kubectl, layout))
    else:
        uninstall(kubectl, layout)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
