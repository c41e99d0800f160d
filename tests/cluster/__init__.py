"""A real local Kubernetes control plane for the tests and the demo.

`python -m tests.cluster up|down|status` (see README). Built from the registries, cached under
`~/.cache/vestige-operator/cluster/<version>/`, run on 127.0.0.1 only.
"""

from tests.cluster.build import ETCD_VERSION, K8S_VERSION, KWOK_VERSION
from tests.cluster.launcher import ClusterError, ClusterState, down, kubectl_binary, restart, status, up

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "KWOK_VERSION",
    "ClusterError",
    "ClusterState",
    "down",
    "kubectl_binary",
    "restart",
    "status",
    "up",
]
