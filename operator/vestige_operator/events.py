"""The one builder of the Kubernetes Events the operator posts about a VestigeMemory.

Callers pass fixed text: an Event never carries a token or a credential. Pure.
"""

from __future__ import annotations

from vestige_operator import FIELD_MANAGER, GROUP, KIND, VERSION
from vestige_operator.vocabulary import Manifest, Owner

#: The API server refuses longer Event messages.
MAX_MESSAGE = 1024


def make_event(owner: Owner, type_: str, reason: str, message: str, now: str) -> Manifest:
    """A core/v1 Event (``type_`` Normal or Warning) about the VestigeMemory ``owner``; ``now`` is
    an RFC 3339 timestamp (times.format_time)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{owner.name}.", "namespace": owner.namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
    }
