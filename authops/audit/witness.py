"""Witnesses: places a checkpoint is copied to that the operator cannot rewrite.

Development: a write-once folder (files created exclusively, then read-only). Production: the
bureau's own S3 bucket with object lock in compliance mode, reached with the bureau's
credentials, so not even the bucket's owner can shorten the retention or delete a copy.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

from authops.core.errors import Conflict, ConfigurationError, NotFound, Unavailable
from authops.core.settings import Settings


class Witness:
    name: str

    def put(self, name: str, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def get(self, name: str) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


class FolderWitness(Witness):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"folder:{folder}"

    def put(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            if path.read_bytes() == data:
                return
            raise Conflict(f"witness already holds a different {name}: refusing to overwrite") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def get(self, name: str) -> bytes:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"witness has no {name}") from None


class ObjectLockWitness(Witness):
    """An S3 bucket with object lock (compliance retention) owned by the bureau."""

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str,
                 retention_days: int) -> None:
        from minio import Minio

        parsed = urlparse(endpoint)
        self.client = Minio(parsed.netloc, access_key=access_key, secret_key=secret_key,
                            secure=parsed.scheme == "https")
        self.bucket = bucket
        self.retention_days = retention_days
        self.name = f"s3:{parsed.netloc}/{bucket}"

    def put(self, name: str, data: bytes) -> None:
        from minio.commonconfig import COMPLIANCE
        from minio.error import S3Error
        from minio.retention import Retention

        until = datetime.now(timezone.utc) + timedelta(days=self.retention_days)
        try:
            try:
                existing = self.client.get_object(self.bucket, name).read()
                if existing == data:
                    return
                raise Conflict(f"witness already holds a different {name}: refusing to overwrite")
            except S3Error as exc:
                if exc.code not in ("NoSuchKey", "NoSuchObject"):
                    raise
            result = self.client.put_object(self.bucket, name, io.BytesIO(data), len(data),
                                            content_type="application/json")
            # A separate retention call (it carries the Content-MD5 that S3 requires for locks).
            self.client.set_object_retention(self.bucket, name, Retention(COMPLIANCE, until),
                                             version_id=result.version_id)
        except S3Error as exc:
            raise Unavailable(f"witness {self.name} refused the checkpoint: {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise Unavailable(f"witness {self.name} unreachable ({type(exc).__name__})") from None

    def get(self, name: str) -> bytes:
        from minio.error import S3Error

        try:
            return self.client.get_object(self.bucket, name).read()
        except S3Error:
            raise NotFound(f"witness has no {name}") from None


def get_witness(settings: Settings) -> Witness:
    url = settings.audit_witness_url
    if not url:
        return FolderWitness(settings.data_path / "witness")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FolderWitness(Path(parsed.path))
    if parsed.scheme == "s3":
        if not settings.audit_witness_endpoint:
            raise ConfigurationError("AUTHOPS_AUDIT_WITNESS_ENDPOINT is needed with an s3:// witness")
        return ObjectLockWitness(settings.audit_witness_endpoint, parsed.netloc,
                                 settings.audit_witness_access_key,
                                 settings.audit_witness_secret_key.get_secret_value(),
                                 settings.audit_witness_retention_days)
    raise ConfigurationError(f"AUTHOPS_AUDIT_WITNESS_URL must be file:///path or s3://bucket, not {url!r}")
