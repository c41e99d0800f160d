"""vestige-backup: consistent snapshots of a Vestige store to S3-compatible object storage, and back.

Run by the operator as a Job on the agent's node (``backup``, ``prune``) and as the agent pod's
init container (``restore``). The store-handling part (``store``) needs only the standard library;
the object-storage part (``objects``) needs boto3 (the ``backup`` extra). See docs/backup.md.
"""

__version__ = "0.1.0"
