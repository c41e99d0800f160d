"""Remove what an interrupted benchmark left behind on the shared cluster: namespaces labelled
``vestige.dev/benchmark=true`` and the cluster-scoped objects named ``vestige-bench-*``
(FlowSchemas, ClusterRoles, ClusterRoleBindings). Touches nothing else.

    .venv/bin/python -m tests.bench.cleanup
"""

from __future__ import annotations

from tests.bench.kube import Kube, delete_namespace, shared_cluster

CLUSTER_SCOPED = (
    "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles",
)


def main() -> None:
    kube = Kube(shared_cluster().kubeconfig)
    try:
        for base in CLUSTER_SCOPED:
            for item in kube.request("GET", base)["items"]:
                name = item["metadata"]["name"]
                if name.startswith("vestige-bench-"):
                    print(f"deleting {base.rsplit('/', 1)[1]}/{name}")
                    kube.delete(f"{base}/{name}")
        listing = kube.request(
            "GET", "/api/v1/namespaces", query=[("labelSelector", "vestige.dev/benchmark=true")]
        )
        for item in listing["items"]:
            ns = item["metadata"]["name"]
            print(f"deleting namespace {ns}", flush=True)
            delete_namespace(kube, ns)
    finally:
        kube.close()


if __name__ == "__main__":
    main()
