"""S3-compatible object storage through boto3, with failures turned into messages that name the
cause (and never a credential)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from vestige_backup.errors import ObjectStoreError, scrub
from vestige_backup.keys import METADATA_SHA256

SNAPSHOT_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"
CHECKING_BUCKET = "checking the bucket"
#: Object metadata in which Litestream records the time of each of its files (RFC 3339).
LITESTREAM_TIMESTAMP = "litestream-timestamp"


@dataclass(frozen=True, slots=True)
class Target:
    """Where snapshots go: endpoint, bucket, region, addressing, CA bundle."""

    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = False
    ca_file: str | None = None

    @property
    def where(self) -> str:
        return f"bucket {self.bucket} at {self.endpoint or 'AWS S3 (' + self.region + ')'}"


class Store:
    """A bucket of snapshots."""

    def __init__(self, target: Target) -> None:
        if not os.environ.get("AWS_ACCESS_KEY_ID") or not os.environ.get("AWS_SECRET_ACCESS_KEY"):
            raise ObjectStoreError(
                "no object-storage credentials: the credentials Secret needs the keys accessKeyId "
                "and secretAccessKey"
            )
        self.target = target
        config = botocore.config.Config(
            region_name=target.region,
            s3={"addressing_style": "path" if target.force_path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.client(
            "s3", endpoint_url=target.endpoint, config=config, verify=target.ca_file or True
        )

    # -- errors ------------------------------------------------------------------------------

    def _explain(self, exc: Exception, doing: str) -> ObjectStoreError:
        where = self.target.where
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or str(
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            )
            if code == "NoSuchBucket" or (code in ("404", "NotFound") and doing == CHECKING_BUCKET):
                text = f"{doing}: {where}: the bucket does not exist (NoSuchBucket)"
            elif code in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
                "InvalidToken",
            ):
                text = (
                    f"{doing}: {where}: access denied ({code}): check the credentials Secret "
                    "(accessKeyId, secretAccessKey) and the bucket policy"
                )
            elif code in ("NoSuchKey", "404"):
                text = f"{doing}: {where}: no such object"
            else:
                text = f"{doing}: {where}: the server answered {code}: {err.get('Message', '')}".rstrip(": ")
        elif isinstance(exc, botocore.exceptions.SSLError):
            text = f"{doing}: {where}: TLS verification failed (set caSecret for a private CA)"
        elif isinstance(
            exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
        ):
            text = f"{doing}: {where}: cannot connect to the endpoint (server down or unreachable)"
        elif isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.ReadTimeoutError):
            text = f"{doing}: {where}: the connection failed ({type(exc).__name__})"
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            text = f"{doing}: no object-storage credentials"
        else:
            text = f"{doing}: {where}: {type(exc).__name__}"
        return ObjectStoreError(scrub(text))

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._explain(exc, doing) from None

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.target.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._explain(exc, f"checking {key}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._explain(exc, f"checking {key}") from None
        return True

    def _put_new(self, doing: str, key: str, body: Any, **extra: Any) -> None:
        """PUT ``key`` only if no object has it: ``If-None-Match: *`` (a conditional write, S3's
        answer 412 when another writer won the race); checked before as well, for servers that
        ignore the condition."""
        if self._exists(key):
            raise ObjectStoreError(
                f"{doing}: {self.target.where}: an object {key} already exists: refusing to overwrite it"
            )
        try:
            self.client.put_object(Bucket=self.target.bucket, Key=key, Body=body, IfNoneMatch="*", **extra)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ObjectStoreError(
                    f"{doing}: {self.target.where}: an object {key} was written meanwhile: "
                    "refusing to overwrite it"
                ) from None
            raise self._explain(exc, doing) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._explain(exc, doing) from None

    # -- operations --------------------------------------------------------------------------

    def upload(self, path: Path, key: str, sha256: str, metadata: dict[str, str]) -> int:
        """Upload the snapshot with its checksum (object metadata and a ``.sha256`` sidecar) and
        check what the server stored; its size. Never replaces an object: a key that exists
        fails the run (keys are unique per run; an existing one was written by someone else)."""
        self._call(CHECKING_BUCKET, self.client.head_bucket, Bucket=self.target.bucket)
        if self._exists(key + CHECKSUM_SUFFIX):
            raise ObjectStoreError(
                f"uploading {key}: {self.target.where}: an object {key}{CHECKSUM_SUFFIX} already "
                "exists: refusing to overwrite it"
            )
        with path.open("rb") as body:
            self._put_new(
                f"uploading {key}",
                key,
                body,
                Metadata={METADATA_SHA256: sha256, **metadata},
                ContentType="application/gzip",
            )
        sidecar = f"{sha256}  {key.rsplit('/', 1)[-1]}\n".encode()
        self._put_new(
            f"uploading {key}{CHECKSUM_SUFFIX}", key + CHECKSUM_SUFFIX, sidecar, ContentType="text/plain"
        )
        head = self._call(f"verifying {key}", self.client.head_object, Bucket=self.target.bucket, Key=key)
        size = int(head["ContentLength"])
        if size != path.stat().st_size or head.get("Metadata", {}).get(METADATA_SHA256) != sha256:
            raise ObjectStoreError(f"verifying {key}: the stored object differs from the snapshot")
        return size

    def metadata(self, key: str) -> dict[str, str]:
        """The object metadata recorded with ``key``."""
        head = self._call(f"reading {key}", self.client.head_object, Bucket=self.target.bucket, Key=key)
        return {str(k): str(v) for k, v in (head.get("Metadata") or {}).items()}

    def latest(self, prefix: str, belongs: Callable[[dict[str, str]], bool]) -> str:
        """The newest snapshot key under ``prefix`` whose metadata ``belongs`` to the agent
        (objects of anyone else under the same prefix are skipped, never restored)."""
        found: list[tuple[Any, str]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.target.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(SNAPSHOT_SUFFIX):
                        found.append((obj["LastModified"], obj["Key"]))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._explain(exc, f"listing {prefix}") from None
        for _, key in sorted(found, reverse=True):
            if belongs(self.metadata(key)):
                return key
        raise ObjectStoreError(f"no snapshot of this agent under {prefix!r} in {self.target.where}")

    def list_keys(self, prefix: str) -> list[tuple[str, datetime]]:
        """Every (key, LastModified) under ``prefix``."""
        found: list[tuple[str, datetime]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.target.bucket, Prefix=prefix):
                found += [(obj["Key"], obj["LastModified"]) for obj in page.get("Contents", [])]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._explain(exc, f"listing {prefix}") from None
        return found

    def replica_time(self, key: str, last_modified: datetime) -> datetime:
        """The time Litestream records for one of its files (metadata ``litestream-timestamp``,
        which its restore plan uses), else the object's LastModified (as Litestream falls back)."""
        head = self._call(f"reading {key}", self.client.head_object, Bucket=self.target.bucket, Key=key)
        recorded = (head.get("Metadata") or {}).get(LITESTREAM_TIMESTAMP)
        if recorded:
            try:
                return datetime.fromisoformat(recorded.replace("Z", "+00:00"))
            except ValueError:
                pass
        return last_modified

    def download(self, key: str, path: Path) -> None:
        """Download ``key`` to ``path``."""
        self._call(f"downloading {key}", self.client.download_file, self.target.bucket, key, str(path))

    def recorded_sha256(self, key: str, metadata: dict[str, str]) -> str | None:
        """The sha256 written with ``key``: its metadata and its ``.sha256`` sidecar must agree
        (None when neither exists; a mismatch is an error)."""
        recorded = metadata.get(METADATA_SHA256)
        try:
            side = self.client.get_object(Bucket=self.target.bucket, Key=key + CHECKSUM_SUFFIX)
            sidecar: str | None = side["Body"].read(1024).decode(errors="replace").split()[0]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, IndexError):
            sidecar = None
        if recorded and sidecar and recorded != sidecar:
            raise ObjectStoreError(
                f"reading {key}: its metadata and its {CHECKSUM_SUFFIX} disagree on the sha256"
            )
        return recorded or sidecar

    def delete(self, keys: list[str]) -> list[str]:
        """Delete snapshots and their sidecars; the keys deleted (absent ones count as deleted)."""
        for key in keys:
            for name in (key, key + CHECKSUM_SUFFIX):
                self._call(f"deleting {name}", self.client.delete_object, Bucket=self.target.bucket, Key=name)
        return keys
