"""Litestream (continuous replication of the SQLite store to S3) for tests and the real node.

``build.ensure()`` builds the binary once from the Go module proxy into
``~/.cache/vestige-operator/litestream/``; ``replica`` runs it as a process with the image's own
configuration file (``images/litestream/litestream.yml``) and the environment the operator's
sidecar and restore init container would get. docs/continuous-backup.md has the design.
"""
