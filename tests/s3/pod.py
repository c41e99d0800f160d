"""versitygw as a pod on the real node: a Deployment + Service ``s3`` in a namespace, its posix
root an emptyDir (or, ``persistent``, a claim of the node's default StorageClass, so that the
server may be stopped and started again with its objects, as an S3 outage leaves them), one
bucket created up front. The S3 server of the backup tests on the real node
(tests/node/test_backup_e2e.py) and of the demo's tour (tests/demo.py): backup Jobs and restore
init containers reach it at ``http://s3.<namespace>.svc.cluster.local:7070``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from tests.cluster import node

S3_NAME = "s3"
S3_PORT = 7070
BUCKET = "vestige-backups"

#: ``kubectl(*args, input=None)`` against the cluster; fails (raises) on a non-zero exit.
Kubectl = Callable[..., Any]


class S3Pod:
    """versitygw as a Deployment + Service in ``ns``; its keys in the Secret ``secret_name``
    (keys ``accessKeyId`` and ``secretAccessKey``, what a backup destination's
    ``credentialsSecret`` names)."""

    def __init__(
        self,
        kubectl: Kubectl,
        ns: str,
        secret_name: str = "s3-creds",  # noqa: S107 (a Secret name)
        *,
        persistent: bool = False,
    ) -> None:
        self.kubectl, self.ns, self.secret_name = kubectl, ns, secret_name
        self.persistent = persistent
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)

    @property
    def endpoint(self) -> str:
        return f"http://{S3_NAME}.{self.ns}.svc.{node.CLUSTER_DOMAIN}:{S3_PORT}"

    def destination(self) -> dict[str, Any]:
        return {
            "s3": {
                "endpoint": self.endpoint,
                "bucket": BUCKET,
                "credentialsSecret": {"name": self.secret_name},
                "forcePathStyle": True,
            }
        }

    def _apply(self, obj: dict[str, Any]) -> None:
        self.kubectl(
            "apply", "--server-side", "--field-manager=vestige-tests", "-f", "-", input=json.dumps(obj)
        )

    def start(self, image: str) -> None:
        self.kubectl(
            "-n", self.ns, "create", "secret", "generic", self.secret_name,
            f"--from-literal=accessKeyId={self.access_key}",
            f"--from-literal=secretAccessKey={self.secret_key}",
        )  # fmt: skip
        restricted = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        env = [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": key}}}
            for var, key in (("ROOT_ACCESS_KEY", "accessKeyId"), ("ROOT_SECRET_KEY", "secretAccessKey"))
        ]
        labels = {"app.kubernetes.io/name": "versitygw", "app.kubernetes.io/instance": S3_NAME}
        pod_spec = {
            **node.POD_PLACEMENT,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # The posix backend's buckets are directories: the bucket exists from the start.
            "initContainers": [
                {
                    "name": "bucket",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["mkdir", "-p", f"/s3/{BUCKET}"],
                    "securityContext": restricted,
                    "volumeMounts": [{"name": "root", "mountPath": "/s3"}],
                }
            ],
            "containers": [
                {
                    "name": "versitygw",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "env": env,
                    "args": [
                        "--access",
                        "$(ROOT_ACCESS_KEY)",
                        "--secret",
                        "$(ROOT_SECRET_KEY)",
                        "--port",
                        f":{S3_PORT}",
                        "--health",
                        "/health",
                        "posix",
                        "/s3",
                    ],
                    "ports": [{"name": "s3", "containerPort": S3_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": S3_PORT}, "periodSeconds": 2},
                    "securityContext": restricted,
                    "volumeMounts": [{"name": "root", "mountPath": "/s3"}],
                }
            ],
            "volumes": [
                {"name": "root", "persistentVolumeClaim": {"claimName": f"{S3_NAME}-root"}}
                if self.persistent
                else {"name": "root", "emptyDir": {}}
            ],
        }
        if self.persistent:
            self._apply(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": f"{S3_NAME}-root", "namespace": self.ns, "labels": labels},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            )
        self._apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": S3_NAME, "namespace": self.ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            }
        )
        self._apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": S3_NAME, "namespace": self.ns, "labels": labels},
                "spec": {
                    "selector": labels,
                    "ports": [{"name": "s3", "port": S3_PORT, "targetPort": S3_PORT}],
                },
            }
        )
        self.kubectl(
            "-n", self.ns, "rollout", "status", f"deployment/{S3_NAME}", "--timeout=180s", timeout=200
        )
