"""The operator's shared vocabulary: names, labels, annotations, paths, ports and the pieces of
pod and object metadata that both the memory's manifests (children.py) and the backup manifests
(backup.py) use, and that the kubectl plugin reads.

The bottom layer: it imports nothing of the operator but the package constants, so every other
module may import it and no import cycle can go through it. Pure: no I/O, no clock.

The token Secret's keys (``token``, ``vestige-token``, ...) and the rotation annotations are the
token lifecycle's own contract and live in tokens.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vestige_operator import GROUP, KIND, VERSION

Manifest = dict[str, Any]

# -- labels and annotations ----------------------------------------------------------------------

APP_NAME = "vestige"
MANAGED_BY = "vestige-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: Hash of the applied manifest (without this annotation): lets the reconciler skip an apply
#: whose result is already in place, and notice fields it must remove after a spec change.
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
#: Hash of Vestige's internal token on the pod template: the vestige container reads it from its
#: environment, so a new internal token restarts the pod. The agents' token is NOT hashed here: the
#: bridge follows it from a mounted volume, so a rotation never restarts the pod.
ANNOTATION_TOKEN_HASH = f"{GROUP}/vestige-token-hash"
#: The agent id a data claim was created for (annotation: the record; label: for selection). A
#: VestigeMemory whose agent id differs never mounts the claim (docs/operator.md, "Data volumes").
ANNOTATION_AGENT_ID = f"{GROUP}/agent-id"
#: On an agent's Deployment: the operator-wide default images it was rendered with (Images.encode),
#: so a change of those defaults is told apart from a change of the agent's own spec (paced rollouts).
ANNOTATION_DEFAULT_IMAGES = f"{GROUP}/default-images"
LABEL_AGENT_ID = f"{GROUP}/agent-id"
#: On VestigeBackups (the memory they belong to) and on the operator's Jobs.
LABEL_MEMORY = f"{GROUP}/memory"
#: On a backup Job: the VestigeBackup it runs.
LABEL_BACKUP = f"{GROUP}/backup"
#: On scheduled VestigeBackups: the cron time they were created for (RFC 3339).
ANNOTATION_SCHEDULED_AT = f"{GROUP}/scheduled-at"
#: On a prune Job: the VestigeBackups whose snapshots it deletes (JSON list of names).
ANNOTATION_PRUNES = f"{GROUP}/prunes"

#: Values of ``app.kubernetes.io/component``.
COMPONENT_AUTH = "auth"
COMPONENT_DATA = "data"
COMPONENT_MEMORY = "memory"
COMPONENT_BACKUP = "backup"
COMPONENT_PRUNE = "prune"

# -- ports, paths, user ----------------------------------------------------------------------------

#: The bridge's port (the image's ``--port``): the pod's only listening port.
BRIDGE_PORT = 8000
BRIDGE_PORT_NAME = "http"
#: Vestige listens inside the pod only.
VESTIGE_HOST = "127.0.0.1"
VESTIGE_PORT = 3100
VESTIGE_MCP_URL = f"http://{VESTIGE_HOST}:{VESTIGE_PORT}/mcp"
#: Where the bridge reads the agents' token files (a volume of the token Secret).
AUTH_MOUNT = "/var/run/vestige/auth"
AUTH_VOLUME = "auth"
#: The data volume, in the agent's pod and in the backup Jobs.
DATA_MOUNT = "/data"
VESTIGE_DATA_DIR = f"{DATA_MOUNT}/vestige"
#: Vestige's SQLite store (every generation; 1.x takes the file itself as its ``--data-dir``).
VESTIGE_DATABASE = f"{VESTIGE_DATA_DIR}/vestige.db"
#: The containers' only writable scratch space (an emptyDir: the root filesystem is read-only).
TMP_DIR = "/tmp"  # noqa: S108 (a path inside the pod)
#: uid and gid of every container the operator runs (the images' USER).
RUN_AS = 1000


@dataclass(frozen=True, slots=True)
class Owner:
    """Identity of the VestigeMemory the children belong to."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True, slots=True)
class Images:
    """Operator-wide default images (``spec.*.image`` overrides them; the Litestream sidecar's is
    the operator's only)."""

    vestige: str
    bridge: str
    litestream: str

    def encode(self) -> str:
        """The annotation value (compact JSON, stable key order)."""
        return json.dumps(
            {"bridge": self.bridge, "litestream": self.litestream, "vestige": self.vestige},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, value: str | None) -> Images | None:
        """The images an ``encode`` value names (None: absent or not understood)."""
        try:
            data = json.loads(value or "")
            # Written before the Litestream sidecar existed: no memory of that operator ran one, so
            # any value renders its pods alike (and an upgrade's rollout stays paced).
            litestream = str(data.get("litestream", ""))
            return cls(vestige=str(data["vestige"]), bridge=str(data["bridge"]), litestream=litestream)
        except (ValueError, TypeError, KeyError):
            return None


# -- names -----------------------------------------------------------------------------------------


def secret_name(owner_name: str) -> str:
    """The operator's token Secret."""
    return f"{owner_name}-auth"


def vestige_secret_name(owner_name: str) -> str:
    """The operator's Secret for Vestige's internal token when ``auth.existingSecret`` is used."""
    return f"{owner_name}-vestige"


def pvc_name(owner_name: str) -> str:
    return f"{owner_name}-data"


def endpoint(owner: Owner) -> str:
    """In-cluster URL of the bridge (cluster-domain independent)."""
    return f"http://{owner.name}.{owner.namespace}.svc:{BRIDGE_PORT}"


# -- metadata --------------------------------------------------------------------------------------


def labels(owner_name: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: owner_name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector_labels(owner_name: str) -> dict[str, str]:
    """The Deployment's (immutable) pod selector, also used by the Service and NetworkPolicy."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: owner_name, LABEL_COMPONENT: COMPONENT_MEMORY}


def label_selector(labels: Mapping[str, str]) -> str:
    """``labels`` as the ``labelSelector`` string of a LIST (every one must match)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def memory_pod_selector(owner_name: str) -> str:
    """The LIST selector of a memory's own pods (its Deployment's; not its backup Jobs' pods)."""
    return label_selector(selector_labels(owner_name))


def instance_selector(owner_name: str) -> str:
    """The LIST selector of every pod the operator runs for a memory (its own, its backup and
    prune Jobs')."""
    return label_selector({LABEL_NAME: APP_NAME, LABEL_INSTANCE: owner_name})


#: The LIST selector of everything the operator created.
MANAGED_SELECTOR = label_selector({LABEL_MANAGED_BY: MANAGED_BY})


def owner_reference(owner: Owner, kind: str = KIND) -> dict[str, Any]:
    """The controller reference to ``owner`` (a VestigeMemory unless ``kind`` says otherwise)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# -- security contexts -----------------------------------------------------------------------------


def container_security_context() -> dict[str, Any]:
    """PSA ``restricted`` for every container: no privilege, no capability, read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """PSA ``restricted`` at pod level, uid/gid 1000 owning the volumes (agent pods, backup Jobs)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
