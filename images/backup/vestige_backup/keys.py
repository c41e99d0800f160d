"""Whose a snapshot is: the identity every backup run records in the object's metadata, and the
key space of one agent (no boto3 here: the operator's contract tests import it)."""

from __future__ import annotations

#: Object metadata naming the agent a snapshot belongs to (the operator passes them to every run).
METADATA_NAMESPACE = "namespace"
METADATA_AGENT_ID = "agent-id"
#: Written before the identity was recorded: ``<namespace>/<memory name>`` (the agent id by default).
METADATA_LEGACY_MEMORY = "memory"
METADATA_SHA256 = "sha256"


def under(prefix: str, key: str) -> bool:
    """Is ``key`` inside the key space ``prefix`` (which ends with ``/``)?"""
    return bool(prefix) and prefix.endswith("/") and key.startswith(prefix) and ".." not in key.split("/")


def belongs(metadata: dict[str, str], namespace: str, agent_id: str) -> bool:
    """Does a snapshot's recorded identity name this agent? A recorded identity wins; snapshots
    written before it was recorded carry only ``memory=<namespace>/<name>``."""
    if METADATA_AGENT_ID in metadata or METADATA_NAMESPACE in metadata:
        return metadata.get(METADATA_NAMESPACE) == namespace and metadata.get(METADATA_AGENT_ID) == agent_id
    return metadata.get(METADATA_LEGACY_MEMORY) == f"{namespace}/{agent_id}"
