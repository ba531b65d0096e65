"""Byte stores under the encrypted object layer: a local directory and S3/MinIO.

Backends see opaque names and ciphertext only. Every write is all-or-nothing: the local
backend writes a temp file in the target directory, fsyncs and renames; S3 PUTs are atomic.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from authops.core.errors import ConfigurationError, Conflict, NotFound, Unavailable

TEMP_PREFIX = ".tmp-"
_SPOOL_IN_MEMORY = 8 << 20


class Backend(Protocol):
    location: str

    def write(self, name: str, chunks: Iterable[bytes]) -> None: ...
    def read(self, name: str) -> bytes: ...
    def open(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def ping(self) -> None: ...


def _missing(name: str) -> NotFound:
    return NotFound(f"stored object {name!r} does not exist")


# --- local directory ----------------------------------------------------------------------

class LocalBackend:
    """Objects as files under one directory; names map to relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = f"local directory {self.root}"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*name.split("/"))

    def _clash(self, name: str) -> Conflict:
        return Conflict(f"object name {name!r} clashes with an existing object in {self.location}: "
                        "a local directory cannot hold both 'a' and 'a/b'")

    def write(self, name: str, chunks: Iterable[bytes]) -> None:
        path = self._path(name)
        for attempt in range(3):  # a concurrent delete may prune the directory in between
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise Unavailable(f"cannot write to {self.location}: directory keeps vanishing") from None
            except (NotADirectoryError, FileExistsError):
                raise self._clash(name) from None
            except OSError as exc:
                raise Unavailable(f"cannot write to {self.location}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.replace(tmp, path)
            except IsADirectoryError:
                raise self._clash(name) from None
            _fsync_dir(path.parent)
        except OSError as exc:
            raise Unavailable(f"cannot write to {self.location}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        try:
            fh = open(self._path(name), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise _missing(name) from None
        except OSError as exc:
            raise Unavailable(f"cannot read from {self.location}: {exc.strerror}") from None
        with fh:
            yield fh

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise Unavailable(f"cannot delete from {self.location}: {exc.strerror}") from None
        # Prune now-empty directories so a later 'a' can replace a deleted 'a/b'.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the deepest directory the prefix pins down.
        base = prefix.rpartition("/")[0]
        start = self._path(base) if base else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            head = "" if rel == "." else rel + "/"
            for fname in sorted(filenames):
                name = head + fname
                if not fname.startswith(TEMP_PREFIX) and name.startswith(prefix):
                    yield name

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"{self.location} cannot be created: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise Unavailable(f"{self.location} is not writable by this process")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


# --- S3 / MinIO ---------------------------------------------------------------------------

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_BUCKET_TAKEN_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class S3Backend:
    """Objects in one bucket of an S3-compatible service, through the `minio` client."""

    def __init__(self, url: str, bucket: str, access_key: str, secret_key: str, *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, retries: int = 2) -> None:
        import urllib3
        from minio import Minio

        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigurationError(
                "AUTHOPS_STORAGE_URL must look like http(s)://host:port (no path; the bucket is "
                f"AUTHOPS_STORAGE_BUCKET), not {parts.scheme}://{parts.hostname}{parts.path}")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.endpoint = f"{parts.scheme}://{netloc}"  # never shows credentials
        self.bucket = bucket
        self.location = f"object storage {self.endpoint} (bucket {bucket!r})"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(total=retries, connect=retries, read=retries, backoff_factor=0.2,
                                  status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(netloc, access_key=access_key or None, secret_key=secret_key or None,
                            secure=parts.scheme == "https", http_client=http)
        self._bucket_ready = False

    @contextlib.contextmanager
    def _errors(self, action: str, name: str | None = None) -> Iterator[None]:
        """Turn client/transport errors into NotFound (missing object) or Unavailable."""
        import urllib3
        from minio.error import MinioException, S3Error

        try:
            yield
        except S3Error as exc:
            if name is not None and exc.code in _NOT_FOUND_CODES:
                raise _missing(name) from None
            if exc.code == "NoSuchBucket":
                self._bucket_ready = False
            raise Unavailable(f"{self.location} refused to {action}: {exc.code}: {exc.message}",
                              details={"s3_code": exc.code}) from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"{self.location} is unreachable or failing ({action}): "
                              f"{_short(exc)}") from None

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from minio.error import S3Error

        with self._errors("check the bucket"):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in _BUCKET_TAKEN_CODES:  # another process won the race
                        raise
        self._bucket_ready = True

    def write(self, name: str, chunks: Iterable[bytes]) -> None:
        self._ensure_bucket()
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            for chunk in chunks:
                spool.write(chunk)
            length = spool.tell()
            spool.seek(0)
            with self._errors("store an object", None):
                self.client.put_object(self.bucket, name, spool, length,  # type: ignore[arg-type]
                                       content_type="application/octet-stream")

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        self._ensure_bucket()
        with self._errors("read an object", name):
            response = self.client.get_object(self.bucket, name)
        try:
            yield _GuardedReader(response, self)  # type: ignore[misc]
        finally:
            response.close()
            response.release_conn()

    def exists(self, name: str) -> bool:
        self._ensure_bucket()
        try:
            with self._errors("look up an object", name):
                self.client.stat_object(self.bucket, name)
        except NotFound:
            return False
        return True

    def delete(self, name: str) -> None:
        self._ensure_bucket()
        with self._errors("delete an object", name):
            self.client.remove_object(self.bucket, name)

    def list(self, prefix: str) -> Iterator[str]:
        self._ensure_bucket()
        with self._errors("list objects"):
            names = [o.object_name for o in self.client.list_objects(
                self.bucket, prefix=prefix or None, recursive=True) if o.object_name]
        yield from sorted(names)

    def ping(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()


class _GuardedReader(io.RawIOBase):
    """A response body whose transport errors surface as Unavailable."""

    def __init__(self, response, backend: S3Backend) -> None:  # noqa: ANN001 - urllib3 response
        self._response = response
        self._backend = backend

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._backend._errors("read an object"):
            return self._response.read(None if size is None or size < 0 else size)


def _short(exc: BaseException) -> str:
    """One line about a transport error, without the urllib3 retry-chain noise."""
    reason = getattr(exc, "reason", None) or exc
    text = f"{reason.__class__.__name__}: {reason}"
    return text if len(text) <= 200 else text[:197] + "..."
