"""The encrypted object store: envelope encryption over a local or S3 backend.

Per object `K` (see `authops.core.crypto` for the chunked blob format):
  * `K` holds the chunked AES-256-GCM blob, under a subkey of a fresh random data key,
    with `K` bound into every chunk's associated data;
  * `.authops/keys/K.json` (the key record) holds the data key wrapped by a master key
    (AAD: key id and `K`) and the encrypted size/sha256/content type. Rotation rewrites
    only key records. The record is written last: it is the commit point of a put.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authops.core.crypto import (
    DEFAULT_CHUNK_SIZE, aead_decrypt, aead_encrypt, derive_key, generate_key, stream_decrypt,
    stream_encrypt,
)
from authops.core.errors import ConfigurationError, IntegrityViolation, InvalidInput, NotFound
from authops.core.settings import Settings, get_settings
from authops.core.storage.backends import Backend, LocalBackend, S3Backend
from authops.core.storage.keyring import Keyring, load_keyring, rotate_keyring_file

RESERVED_PREFIX = ".authops/keys/"
RECORD_SUFFIX = ".json"
RECORD_FORMAT = "authops-object-key"
RECORD_VERSION = 1
RECORD_ALG = "A256GCM-STREAM/HKDF-SHA256"
_RECORD_FIELDS = {"format", "v", "alg", "object", "kid", "wrapped_key", "meta"}
MAX_KEY_BYTES = 900
MAX_SEGMENT_BYTES = 200
_READ_PIECE = 1 << 20
_READ_ATTEMPTS = 3


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str
    key_id: str
    content_type: str = "application/octet-stream"


def validate_key(key: object) -> str:
    """Return `key` if it is a safe relative object name, else InvalidInput naming it."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"invalid object key {key!r}: it must be a non-empty string")
    shown = key if len(key) <= 120 else key[:117] + "..."

    def bad(reason: str) -> InvalidInput:
        return InvalidInput(f"invalid object key {shown!r}: {reason}", details={"key": shown})

    if key.startswith("/"):
        raise bad("absolute paths are not allowed")
    if "\\" in key:
        raise bad("backslashes are not allowed; separate segments with '/'")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise bad("control characters are not allowed")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad("it is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise bad(f"longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if not segment:
            raise bad("empty path segment (leading, trailing or doubled '/')")
        if segment in (".", ".."):
            raise bad("'.' and '..' segments are not allowed")
        if segment.startswith("."):
            raise bad("segments starting with '.' are reserved for storage internals")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise bad(f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def _validate_prefix(prefix: str) -> str:
    if prefix and (prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/")):
        raise InvalidInput(f"invalid object prefix {prefix[:120]!r}: use a relative '/'-separated prefix",
                           details={"prefix": prefix[:120]})
    return prefix


def _is_valid_key(name: str) -> bool:
    try:
        validate_key(name)
    except InvalidInput:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _violation(key: str, problem: str) -> IntegrityViolation:
    return IntegrityViolation(f"object {key!r} failed its integrity check: {problem}",
                              details={"key": key})


def _wrap_aad(kid: str, key: str) -> bytes:
    return b"authops/data-key/v1\x00" + kid.encode() + b"\x00" + key.encode()


def _object_aad(key: str) -> bytes:
    return b"authops/object/v1\x00" + key.encode()


@dataclass(frozen=True)
class _Record:
    kid: str
    data_key: bytes
    meta: dict[str, Any]
    meta_blob: str

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self.meta["size"], self.meta["sha256"], self.kid, self.meta["content_type"])


class ObjectStore:
    """Encrypted objects by key over one backend; see the module docstring for the layout."""

    def __init__(self, backend: Backend, keyring: Keyring, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.backend = backend
        self.keyring = keyring
        self.chunk_size = chunk_size

    @classmethod
    def from_settings(cls, settings: Settings, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> ObjectStore:
        """A fresh store for these settings (not cached)."""
        return cls(make_backend(settings), load_keyring(settings), chunk_size=chunk_size)

    @property
    def location(self) -> str:
        return self.backend.location

    # --- key records --------------------------------------------------------------------
    @staticmethod
    def _record_name(key: str) -> str:
        return RESERVED_PREFIX + key + RECORD_SUFFIX

    def _seal_record(self, key: str, kid: str, master: bytes, data_key: bytes, meta_blob: str) -> bytes:
        wrapped = aead_encrypt(master, data_key, _wrap_aad(kid, key))
        return _canonical({"format": RECORD_FORMAT, "v": RECORD_VERSION, "alg": RECORD_ALG,
                           "object": key, "kid": kid, "wrapped_key": _b64(wrapped), "meta": meta_blob})

    def _open_record(self, key: str, raw: bytes) -> _Record:
        """Parse and authenticate a key record; any flaw is IntegrityViolation naming `key`."""
        try:
            doc = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _violation(key, "its key record is not valid JSON (damaged)") from None
        if not isinstance(doc, dict) or set(doc) != _RECORD_FIELDS or _canonical(doc) != raw:
            raise _violation(key, "its key record has been altered (not in canonical form)")
        if (doc["format"], doc["v"], doc["alg"]) != (RECORD_FORMAT, RECORD_VERSION, RECORD_ALG) \
                or type(doc["v"]) is not int:
            raise _violation(key, "its key record has an unknown format or version")
        if doc["object"] != key:
            raise _violation(key, "its key record belongs to another object (swapped)")
        kid = doc["kid"]
        master = self.keyring.get(kid) if isinstance(kid, str) else None
        if master is None:
            raise _violation(key, f"its data key is wrapped by master key {kid!r}, which is not in "
                                  f"the keyring ({self.keyring.source}): a missing key or a tampered record")
        wrapped = _strict_b64(key, doc["wrapped_key"])
        data_key = aead_decrypt(master, wrapped, _wrap_aad(kid, key), what=f"key record of object {key!r}")
        meta_raw = aead_decrypt(derive_key(data_key, "object-meta"), _strict_b64(key, doc["meta"]),
                                _object_aad(key), what=f"metadata of object {key!r}")
        meta = json.loads(meta_raw)
        return _Record(kid, data_key, meta, doc["meta"])

    def _read_record(self, key: str) -> bytes:
        try:
            return self.backend.read(self._record_name(key))
        except NotFound:
            raise NotFound(f"object {key!r} does not exist", details={"key": key}) from None

    # --- writing ------------------------------------------------------------------------
    def _put(self, key: str, pieces: Iterable[bytes], content_type: str) -> ObjectInfo:
        validate_key(key)
        kid, master = self.keyring.active()
        data_key = generate_key()
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                yield piece

        blob = stream_encrypt(derive_key(data_key, "object-data"), counted(), _object_aad(key),
                              chunk_size=self.chunk_size)
        self.backend.write(key, blob)  # data first ...
        meta = {"size": size, "sha256": digest.hexdigest(), "content_type": content_type}
        meta_blob = _b64(aead_encrypt(derive_key(data_key, "object-meta"), _canonical(meta), _object_aad(key)))
        self.backend.write(self._record_name(key), [self._seal_record(key, kid, master, data_key, meta_blob)])
        return ObjectInfo(key, size, meta["sha256"], kid, content_type)  # ... key record last: committed

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Encrypt and store `data` under `key`, replacing any previous object."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"object {key!r}: data must be bytes, not {type(data).__name__}")
        return self._put(key, [bytes(data)], content_type)

    def put_file(self, key: str, path: str | os.PathLike[str], *,
                 content_type: str = "application/octet-stream") -> ObjectInfo:
        """Encrypt and store a file, streaming it in chunks."""
        validate_key(key)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidInput(f"cannot read {os.fspath(path)!r} to store as {key!r}: {exc.strerror}") from None
        with fh:
            return self._put(key, iter(lambda: fh.read(_READ_PIECE), b""), content_type)

    # --- reading ------------------------------------------------------------------------
    def _decrypt_into(self, key: str, sink: Callable[[bytes], None], restart: Callable[[], None]) -> ObjectInfo:
        """Stream the plaintext of `key` into `sink`, retrying if it was overwritten meanwhile."""
        validate_key(key)
        for attempt in range(_READ_ATTEMPTS):
            raw = self._read_record(key)
            try:
                return self._decrypt_once(key, raw, sink)
            except IntegrityViolation:
                # A concurrent put replaces data then record: re-read if the record moved on.
                if attempt + 1 < _READ_ATTEMPTS and self._record_changed(key, raw):
                    restart()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _decrypt_once(self, key: str, raw: bytes, sink: Callable[[bytes], None]) -> ObjectInfo:
        record = self._open_record(key, raw)
        digest = hashlib.sha256()
        size = 0
        try:
            with self.backend.open(key) as fh:
                for chunk in stream_decrypt(derive_key(record.data_key, "object-data"), fh,
                                            _object_aad(key), what=f"object {key!r}"):
                    digest.update(chunk)
                    size += len(chunk)
                    sink(chunk)
        except NotFound:
            raise _violation(key, "its data is missing although its key record exists") from None
        if size != record.meta["size"] or digest.hexdigest() != record.meta["sha256"]:
            raise _violation(key, "decrypted size or checksum differs from its key record")
        return record.info(key)

    def _record_changed(self, key: str, raw: bytes) -> bool:
        try:
            return self.backend.read(self._record_name(key)) != raw
        except NotFound:
            return True

    def get(self, key: str) -> bytes:
        """Decrypt and return the object; NotFound, or IntegrityViolation if it fails authentication."""
        out = bytearray()
        self._decrypt_into(key, out.extend, out.clear)
        return bytes(out)

    def get_to_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Decrypt the object into `path`; the file appears only once everything authenticated."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                def restart() -> None:
                    fh.seek(0)
                    fh.truncate()
                info = self._decrypt_into(key, fh.write, restart)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            return info
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def stat(self, key: str) -> ObjectInfo:
        """Size, checksum, key id and content type from the (authenticated) key record."""
        validate_key(key)
        return self._open_record(key, self._read_record(key)).info(key)

    def exists(self, key: str) -> bool:
        """True when the object is fully written (data and key record present)."""
        validate_key(key)
        return self.backend.exists(self._record_name(key)) and self.backend.exists(key)

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        """Remove the object (key record first, so a crash leaves only unreadable ciphertext)."""
        validate_key(key)
        present = self.backend.exists(self._record_name(key))
        self.backend.delete(self._record_name(key))
        self.backend.delete(key)
        if not present and not missing_ok:
            raise NotFound(f"object {key!r} does not exist", details={"key": key})

    def list(self, prefix: str = "") -> list[str]:
        """Keys of complete objects starting with `prefix`, sorted; never key records or temp files."""
        _validate_prefix(prefix)
        data = {n for n in self.backend.list(prefix) if _is_valid_key(n)}
        start, end = len(RESERVED_PREFIX), -len(RECORD_SUFFIX)
        committed = {n[start:end] for n in self.backend.list(RESERVED_PREFIX + prefix)
                     if n.endswith(RECORD_SUFFIX)}
        return sorted(data & committed)

    def ping(self) -> None:
        """Raise Unavailable (or ConfigurationError) unless the store can be used right now."""
        self.keyring.active()
        self.backend.ping()

    # --- rotation -----------------------------------------------------------------------
    def rewrap_all(self, kid: str | None = None) -> dict[str, Any]:
        """Rewrap every data key under master key `kid` (default: active); data objects untouched."""
        target = kid or self.keyring.active_id
        master = self.keyring.get(target)
        if master is None:
            raise ConfigurationError(f"master key {target!r} is not in the keyring ({self.keyring.source})")
        rewrapped = current = 0
        failed: list[str] = []
        start, end = len(RESERVED_PREFIX), -len(RECORD_SUFFIX)
        for name in list(self.backend.list(RESERVED_PREFIX)):
            key = name[start:end]
            if not name.endswith(RECORD_SUFFIX) or not _is_valid_key(key):
                continue
            try:
                raw = self.backend.read(name)
            except NotFound:
                continue  # deleted meanwhile
            try:
                record = self._open_record(key, raw)
            except IntegrityViolation:
                failed.append(key)
                continue
            if record.kid == target:
                current += 1
                continue
            self.backend.write(name, [self._seal_record(key, target, master, record.data_key, record.meta_blob)])
            rewrapped += 1
        report = {"active_key_id": target, "rewrapped": rewrapped, "already_current": current,
                  "objects": rewrapped + current + len(failed)}
        if failed:
            shown = ", ".join(repr(k) for k in failed[:10]) + (" ..." if len(failed) > 10 else "")
            raise IntegrityViolation(
                f"key rotation rewrapped {rewrapped} objects but {len(failed)} key records failed "
                f"their integrity check and stay under their old key: {shown}",
                details={"report": report, "failed": failed})
        return report


def _strict_b64(key: str, text: object) -> bytes:
    """Decode canonical base64 only, so no edited character can decode to the same bytes."""
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or _b64(raw) != text:
        raise _violation(key, "its key record has a damaged field")
    return raw


def make_backend(settings: Settings) -> Backend:
    """S3/MinIO when `storage_url` is set, else the local `objects_dir`."""
    if settings.storage_url.strip():
        return S3Backend(settings.storage_url.strip(), settings.storage_bucket, settings.storage_access_key,
                         settings.storage_secret_key.get_secret_value())
    return LocalBackend(settings.objects_dir)


_stores: dict[int, tuple[Settings, ObjectStore]] = {}
_stores_lock = threading.Lock()


def get_object_store(settings: Settings | None = None) -> ObjectStore:
    """The object store for these settings (default: the process settings), cached per settings object."""
    settings = settings or get_settings()
    with _stores_lock:
        cached = _stores.get(id(settings))
        if cached is None or cached[0] is not settings:
            cached = (settings, ObjectStore.from_settings(settings))
            _stores[id(settings)] = cached
        return cached[1]


def reset_object_stores() -> None:
    """Forget cached stores (after settings changed)."""
    with _stores_lock:
        _stores.clear()


def rotate_master_key(settings: Settings, new_key_id: str | None = None) -> dict[str, Any]:
    """Make a new (development) or the given/active (configured) master key current and rewrap every data key.

    Returns {"active_key_id", "rewrapped", "already_current", "objects"}. Re-running is safe:
    records already under the target key are left alone.
    """
    if settings.master_keys.get_secret_value().strip():
        ring = load_keyring(settings)
        target = new_key_id or ring.active_id
        if ring.get(target) is None:
            raise ConfigurationError(f"cannot rotate to master key {target!r}: it is not in "
                                     f"AUTHOPS_MASTER_KEYS (known ids: {', '.join(ring.ids())})")
        ring = ring.with_active(target)
    else:
        target = rotate_keyring_file(settings, new_key_id)
        ring = load_keyring(settings)
    return ObjectStore(make_backend(settings), ring).rewrap_all(target)
