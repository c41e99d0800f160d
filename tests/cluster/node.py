"""The real node: kubelet, containerd (runc) and the CNI bridge, kube-proxy and CoreDNS.

kwok makes pods Ready without running them; this node runs them. Everything of the node lives
in a network namespace the launcher creates (``vestige-<id>``), so the pod network, kube-proxy's
iptables rules and the node's addresses exist only inside it and go away with it:

- a veth pair joins it to the host: ``10.254.0.1`` (host end) <-> ``10.254.0.2`` (node end, the
  node's InternalIP). The API server (on the host, 127.0.0.1) reaches the kubelet there for
  logs, exec and port-forward (``--kubelet-preferred-address-types=InternalIP``);
- the node's processes reach the API server through a forwarder: socat listens on
  ``10.254.0.2:6443`` inside the namespace and hands each connection over a unix socket to a
  second socat on the host that dials 127.0.0.1 (the API server binds nothing else). The
  ``kubernetes`` Service's endpoint is that address, so pods reach the API server too;
- pods sit on the bridge ``vestige0`` (host-local IPAM, ``10.244.1.0/24``, no masquerade); their
  default route ends in the node's namespace, which has no default route at all, and a mangle
  rule drops anything the namespace would forward out of the veth: no pod traffic can leave
  the node's namespace, let alone the machine (``network_guard()`` reads this back for a test);
- CoreDNS (built with just the plugins it needs) answers on ``10.254.0.2:53`` for
  ``cluster.local`` only (no upstream): the kubelet's ``clusterDNS``.

The node is tainted ``vestige.dev/real-node=true:NoSchedule`` so the many kwok-node tests never
land on it; real-pod tests tolerate the taint and select it (``POD_PLACEMENT``). Storage on it
is a ``local`` PersistentVolume per claim under the state directory (``local_volume()``,
StorageClass ``real-local``): the in-tree host-path provisioner creates root-owned 0750
directories and hostPath volumes get no fsGroup, so a pod running as uid 1000 could not write.

Five settings the machine needs (found by hand, ``shared/reference/real-node.md``): kubelet
``failCgroupV1: false`` and ``cgroupDriver: cgroupfs`` (cgroup v1, no systemd), containerd's
``restrict_oom_score_adj`` (root may not lower oom_score_adj here), runc (crun refuses this cgroup
layout) and a local pause image (nothing can be pulled).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "vestige-node-0"
HOST_IP = "10.254.0.1"
NODE_IP = "10.254.0.2"
NODE_NET_PREFIX = 30
POD_CIDR = "10.244.1.0/24"
BRIDGE = "vestige0"
API_PORT = 6443  # the forwarder's port on NODE_IP
DNS_IP = NODE_IP
CLUSTER_DOMAIN = "cluster.local"
TAINT_KEY = "vestige.dev/real-node"
NODE_LABEL = "vestige.dev/node"
STORAGE_CLASS = "real-local"
SANDBOX_IMAGE = "localhost/pause:3.10"
#: What a pod spec needs to run on the real node (VestigeMemory ``spec.pod`` takes the same keys).
POD_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {NODE_LABEL: "real"},
    "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}
#: Ports the launcher picks free for the node's processes (all on 127.0.0.1 or NODE_IP).
PORTS = (
    "kubelet",
    "kubelet-healthz",
    "kube-proxy-healthz",
    "kube-proxy-metrics",
    "coredns-health",
    "coredns-ready",
)
#: Start order; stop order is the reverse.
ORDER = ("api-forward-host", "api-forward-node", "containerd", "kubelet", "kube-proxy", "coredns")
REQUIRED = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "iptables": "iptables",
    "socat": "socat",
    "buildah": "buildah",
}
CNI_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CGROUP_V1 = Path("/sys/fs/cgroup")


class NodeError(RuntimeError):
    pass


def missing() -> str | None:
    """Why the real node cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the real node needs root (network namespaces, mounts, cgroups)"
    absent = sorted({pkg for tool, pkg in REQUIRED.items() if shutil.which(tool) is None})
    if not (CNI_DIR / "bridge").exists():
        absent.append("containernetworking-plugins")
    if absent:
        return "missing Debian packages: " + " ".join(sorted(set(absent)))
    return None


@dataclass(frozen=True)
class Layout:
    """Every path and name of one node, derived from the cluster's state directory."""

    state: Path

    @property
    def id(self) -> str:
        return hashlib.sha256(str(self.state).encode()).hexdigest()[:6]

    @property
    def dir(self) -> Path:
        return self.state / "node"

    @property
    def netns(self) -> str:
        return f"vestige-{self.id}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def veth_host(self) -> str:
        return f"vh-{self.id}"

    @property
    def veth_node(self) -> str:
        return f"vn-{self.id}"

    @property
    def cgroup_root(self) -> str:
        return f"/vestige-{self.id}"

    @property
    def containerd_sock(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def api_sock(self) -> Path:
        return self.dir / "apiserver.sock"

    @property
    def volumes(self) -> Path:
        return self.dir / "volumes"


def _run(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, check=False, timeout=120)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def in_netns(lay: Layout, *cmd: str) -> list[str]:
    """argv running ``cmd`` in the node's network namespace (only the network: ``ip netns exec``
    would also remount /sys, hiding the cgroup hierarchy the kubelet and runc need)."""
    return ["nsenter", f"--net={lay.netns_path}", *cmd]


# -- network -------------------------------------------------------------------------------------


def setup_network(lay: Layout) -> None:
    """Namespace, veth pair, addresses, sysctls and the guard against forwarding out of it."""
    teardown_network(lay)
    taken = _run("ip", "-o", "addr", "show", "to", f"{HOST_IP}/32").stdout.strip()
    if taken:
        raise NodeError(
            f"{HOST_IP} is already configured on this machine ({taken.split()[1]}): another real node "
            "is running (one per machine); stop it with `python -m tests.cluster down`"
        )
    _run("ip", "netns", "add", lay.netns)
    _run("ip", "link", "add", lay.veth_host, "type", "veth", "peer", "name", lay.veth_node)
    _run("ip", "link", "set", lay.veth_node, "netns", lay.netns)
    _run("ip", "addr", "add", f"{HOST_IP}/{NODE_NET_PREFIX}", "dev", lay.veth_host)
    _run("ip", "link", "set", lay.veth_host, "up")
    ns = ("ip", "-n", lay.netns)
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "addr", "add", f"{NODE_IP}/{NODE_NET_PREFIX}", "dev", lay.veth_node)
    _run(*ns, "link", "set", lay.veth_node, "up")
    sysctls = {
        # Routing between pods and to Service addresses (kube-proxy DNAT) inside the namespace.
        "net.ipv4.ip_forward": "1",
        # Bridged pod-to-pod traffic passes iptables, so Service replies are un-NATed.
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.ipv4.conf.all.route_localnet": "0",
    }
    for key, value in sysctls.items():
        _run(*in_netns(lay, "sysctl", "-q", "-w", f"{key}={value}"))
    # Nothing is forwarded out of the namespace: pods reach each other, the node's own address
    # (API forwarder, DNS, kubelet) and Service addresses, never the host or beyond. The mangle
    # table is not managed by kube-proxy, so its rule stays first.
    _run(*in_netns(lay, "iptables", "-t", "mangle", "-A", "FORWARD", "-o", lay.veth_node, "-j", "DROP"))


def teardown_network(lay: Layout) -> None:
    if lay.netns_path.exists():
        _run("ip", "netns", "del", lay.netns, check=False)
    _run("ip", "link", "del", lay.veth_host, check=False)


def network_guard(lay: Layout) -> dict[str, Any]:
    """What a test checks instead of sending traffic out: the namespace's routes, its forwarding
    rules, and that the host does not forward at all."""
    routes = _run("ip", "-n", lay.netns, "-j", "route", "show", "table", "all").stdout
    mangle = _run(*in_netns(lay, "iptables", "-t", "mangle", "-S", "FORWARD")).stdout.splitlines()
    nat = _run(*in_netns(lay, "iptables", "-t", "nat", "-S")).stdout.splitlines()
    return {
        "routes": json.loads(routes or "[]"),
        "mangle_forward": mangle,
        "masquerade": [r for r in nat if "MASQUERADE" in r],
        "host_ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "veth_node": lay.veth_node,
    }


# -- configuration files ---------------------------------------------------------------------------


def containerd_config(lay: Layout) -> str:
    d = lay.dir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{lay.containerd_sock}"

[ttrpc]
  address = "{lay.dir / "containerd-ttrpc.sock"}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "runc"}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_DIR}"
  conf_dir = "{lay.dir / "cni" / "net.d"}"
"""


def cni_config(lay: Layout) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "vestige",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # no NAT: pod addresses never leave the namespace
                "hairpinMode": True,  # a pod reaches itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(lay.dir / "cni" / "ipam"),
                },
            },
            {"type": "loopback"},
        ],
    }


def kubeconfig(server: str, ca: Path, cert: Path, key: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}],
        "current-context": "local",
    }


def kubelet_config(
    lay: Layout, ca: Path, serving: tuple[Path, Path], ports: dict[str, int]
) -> dict[str, Any]:
    d = lay.dir
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # the machine is cgroup v1
        "cgroupDriver": "cgroupfs",  # no systemd
        "cgroupRoot": lay.cgroup_root,  # this node's pods under their own cgroup, removed by down
        "cgroupsPerQOS": True,
        "address": NODE_IP,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(d / "resolv.conf"),  # empty: pods get cluster DNS only, no upstream
        "containerRuntimeEndpoint": f"unix://{lay.containerd_sock}",
        "podLogsDir": str(d / "pod-logs"),
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "failSwapOn": False,
        "maxPods": 60,
        "serializeImagePulls": False,
        # The machine's disk is shared: no evictions or image GC because another tenant fills it.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "volumeStatsAggPeriod": "1m",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
    }


def kube_proxy_config(kubeconfig_path: Path, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        # The namespace's conntrack table is the kernel's: leave its size alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"masqueradeAll": False, "localhostNodePorts": False, "minSyncPeriod": "1s"},
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }


def corefile(kubeconfig_path: Path, ports: dict[str, int]) -> str:
    return f""".:53 {{
    bind {DNS_IP}
    errors
    health 127.0.0.1:{ports["coredns-health"]}
    ready 127.0.0.1:{ports["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig_path} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


# -- objects the node needs in the API ---------------------------------------------------------


def bootstrap_objects() -> list[dict[str, Any]]:
    return [
        # The `kubernetes` Service's endpoint: the forwarder inside the node's namespace (the API
        # server's own endpoint reconciler is off: it would publish 127.0.0.1).
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes-real-node",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "vestige-test-cluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": API_PORT, "protocol": "TCP"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "vestige-test:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
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
            "metadata": {"name": "vestige-test:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "vestige-test:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vestige-test:coredns"}
            ],
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": False,
        },
    ]


def local_volume(lay: Layout, name: str, capacity: str = "20Gi") -> dict[str, Any]:
    """A `local` PersistentVolume on the real node (its directory created here, root-owned 0700:
    the kubelet gives the pod's fsGroup access when it mounts it)."""
    path = lay.volumes / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {NODE_LABEL: "real"}},
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                            ]
                        }
                    ]
                }
            },
        },
    }


# -- teardown helpers ----------------------------------------------------------------------------


def _cgroup_dirs(lay: Layout) -> list[Path]:
    if not CGROUP_V1.exists():
        return []
    out = []
    for ctrl in sorted(CGROUP_V1.iterdir()):
        d = ctrl / lay.cgroup_root.lstrip("/")
        if d.is_dir():
            out.append(d)
    return out


def make_cgroups(lay: Layout) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy (cpuset needs cpus/mems copied)."""
    for ctrl in sorted(CGROUP_V1.iterdir()):
        if not (ctrl / "cgroup.procs").exists():
            continue
        d = ctrl / lay.cgroup_root.lstrip("/")
        d.mkdir(exist_ok=True)
        if ctrl.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((ctrl / f).read_text())


def kill_pods(lay: Layout) -> int:
    """SIGKILL every process in the node's pod cgroups (containers and their pause processes)."""
    killed = 0
    for _ in range(20):
        pids: set[int] = set()
        for d in _cgroup_dirs(lay):
            for procs in d.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    continue
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def kill_shims(lay: Layout) -> None:
    """containerd's shims detach from containerd (they outlive it on purpose): stop ours."""
    needle = str(lay.containerd_sock).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in argv and needle in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def remove_cgroups(lay: Layout) -> None:
    for d in _cgroup_dirs(lay):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


_MNT_DETACH = 2


def unmount_under(root: Path) -> list[str]:
    """Unmount everything mounted under ``root`` (deepest first); return what stayed mounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    prefix = str(root.resolve()) + "/"
    left: list[str] = []
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4].encode().decode("unicode_escape")
            if (target + "/").startswith(prefix):
                mounts.append(target)
        if not mounts:
            return []
        left = []
        for target in sorted(set(mounts), key=len, reverse=True):
            if libc.umount2(target.encode(), _MNT_DETACH) != 0:
                left.append(target)
    return left
