"""A real S3-compatible server for tests: versitygw (Apache-2.0) with its posix backend.

``build.ensure()`` builds it once from the Go module proxy into ``~/.cache/vestige-operator/s3/``;
``server.S3Server`` runs the plain binary on 127.0.0.1 with a free port (the same binary can be
put into an image for the real node: ``versitygw --access A --secret S --port :7070 posix /data``).
"""
