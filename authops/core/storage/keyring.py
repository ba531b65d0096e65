"""Master keyring: key ids to 32-byte master keys, one of them active for wrapping new data keys.

Configured keys come from `settings.master_keys` ("kid1:base64,kid2:base64"). Without them
(development) a keyring JSON file at `settings.keyring_path` is generated once (mode 0600)
and reused; processes notice when another process (e.g. `rotate`) rewrites it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from authops.core.clock import utcnow
from authops.core.crypto import KEY_SIZE, generate_key
from authops.core.errors import ConfigurationError
from authops.core.settings import Settings

log = logging.getLogger(__name__)

KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEYRING_FILE_VERSION = 1


def _decode_key(kid: str, text: str, source: str) -> bytes:
    standard = text.strip().replace("-", "+").replace("_", "/")  # accept the URL-safe alphabet too
    try:
        raw = base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"master key {kid!r} in {source} is not valid base64") from None
    if len(raw) != KEY_SIZE:
        raise ConfigurationError(
            f"master key {kid!r} in {source} is {len(raw)} bytes; it must be {KEY_SIZE} random "
            "bytes, base64-encoded (e.g. `python -c 'import os,base64;"
            "print(base64.b64encode(os.urandom(32)).decode())'`)")
    return raw


def _check_kid(kid: str, source: str) -> str:
    if not KEY_ID_RE.match(kid):
        raise ConfigurationError(
            f"master key id {kid!r} in {source} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -")
    return kid


def parse_master_keys(text: str, source: str = "AUTHOPS_MASTER_KEYS") -> dict[str, bytes]:
    """Parse "kid1:base64key,kid2:base64key" into {kid: key}; ConfigurationError on any flaw."""
    keys: dict[str, bytes] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep:
            raise ConfigurationError(f"{source} entries must look like 'kid:base64key' "
                                     f"(entry {len(keys) + 1} has no ':')")
        kid = _check_kid(kid.strip(), source)
        if kid in keys:
            raise ConfigurationError(f"master key id {kid!r} appears twice in {source}")
        keys[kid] = _decode_key(kid, encoded, source)
    if not keys:
        raise ConfigurationError(f"{source} holds no keys")
    return keys


class Keyring:
    """Master keys by id plus the active id; a file-backed ring reloads when the file changes."""

    def __init__(self, keys: dict[str, bytes], active_id: str, *, source: str,
                 path: Path | None = None, pinned_active: str | None = None) -> None:
        self._lock = threading.Lock()
        self.source = source
        self.path = path
        self._pinned = pinned_active
        self._stamp: tuple[int, int] | None = None
        self._set(keys, active_id)

    def _set(self, keys: dict[str, bytes], active_id: str) -> None:
        active_id = self._pinned or active_id
        if active_id not in keys:
            raise ConfigurationError(
                f"active master key id {active_id!r} is not in the keyring ({self.source}; "
                f"known ids: {', '.join(sorted(keys)) or 'none'})")
        self._keys = dict(keys)
        self._active = active_id

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except OSError:
            return  # keep what we have; the file vanishing must not make objects unreadable
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                keys, active = _read_keyring_file(self.path)
                self._set(keys, active)
                self._stamp = stamp

    @property
    def active_id(self) -> str:
        self._refresh()
        return self._active

    def active(self) -> tuple[str, bytes]:
        """(id, key) of the key that wraps new data keys."""
        self._refresh()
        with self._lock:
            return self._active, self._keys[self._active]

    def get(self, kid: str) -> bytes | None:
        """The master key with this id, or None."""
        self._refresh()
        return self._keys.get(kid)

    def ids(self) -> list[str]:
        self._refresh()
        return sorted(self._keys)

    def with_active(self, kid: str) -> Keyring:
        """A copy of this ring (not file-backed) whose active key is `kid`."""
        self._refresh()
        return Keyring(self._keys, kid, source=self.source)

    def __repr__(self) -> str:  # never show key material
        return f"Keyring(source={self.source!r}, active={self._active!r}, ids={sorted(self._keys)})"


# --- development keyring file --------------------------------------------------------------

def _read_keyring_file(path: Path) -> tuple[dict[str, bytes], str]:
    source = f"keyring file {path}"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {source}: {exc.__class__.__name__}") from None
    if not isinstance(doc, dict) or doc.get("version") != KEYRING_FILE_VERSION \
            or not isinstance(doc.get("keys"), dict) or not isinstance(doc.get("active"), str):
        raise ConfigurationError(f"{source} is not an authops keyring (version {KEYRING_FILE_VERSION})")
    keys = {_check_kid(k, source): _decode_key(k, str(v), source) for k, v in doc["keys"].items()}
    if not keys:
        raise ConfigurationError(f"{source} holds no keys")
    if st_mode := path.stat().st_mode & 0o077:
        log.warning("keyring file %s is readable by group/others (mode bits %o); chmod 600 it",
                    path, st_mode)
    return keys, doc["active"]


def _write_keyring_file(path: Path, keys: dict[str, bytes], active: str, *, replace: bool) -> bool:
    """Atomically write the ring (0600). Without `replace`, only if no file exists; True if written."""
    doc = {
        "version": KEYRING_FILE_VERSION,
        "active": active,
        "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
        "comment": "authops development master keys; production uses AUTHOPS_MASTER_KEYS",
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-keyring-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent: two first starts agree on one key
            except FileExistsError:
                return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def new_key_id() -> str:
    """A fresh, sortable key id for a generated key."""
    return f"dev-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def _ensure_keyring_file(path: Path) -> None:
    if path.exists():
        return
    with _file_lock(path):
        kid = new_key_id()
        if _write_keyring_file(path, {kid: generate_key()}, kid, replace=False):
            log.warning("generated development master keyring %s (key id %s); back it up: "
                        "objects cannot be read without it", path, kid)


def load_keyring(settings: Settings) -> Keyring:
    """The keyring the settings describe (generating the development file on first use)."""
    configured = settings.master_keys.get_secret_value().strip()
    pinned = settings.master_key_id.strip() or None
    if configured:
        keys = parse_master_keys(configured)
        if pinned is None:
            if len(keys) != 1:
                raise ConfigurationError(
                    "AUTHOPS_MASTER_KEYS holds several keys; set AUTHOPS_MASTER_KEY_ID to the "
                    f"active one (one of: {', '.join(sorted(keys))})")
            pinned = next(iter(keys))
        return Keyring(keys, pinned, source="AUTHOPS_MASTER_KEYS", pinned_active=pinned)
    path = settings.keyring_path
    _ensure_keyring_file(path)
    keys, active = _read_keyring_file(path)
    ring = Keyring(keys, active, source=f"keyring file {path}", path=path, pinned_active=pinned)
    ring._refresh()
    return ring


def rotate_keyring_file(settings: Settings, new_key_id: str | None = None) -> str:
    """Development: add a new master key to the keyring file (or reuse `new_key_id`) and make it active."""
    if settings.master_key_id.strip():
        raise ConfigurationError(
            "AUTHOPS_MASTER_KEY_ID pins the active key while the development keyring file is in "
            "use; unset it to rotate the file keyring, or configure AUTHOPS_MASTER_KEYS")
    path = settings.keyring_path
    _ensure_keyring_file(path)
    with _file_lock(path):
        keys, _ = _read_keyring_file(path)
        kid = _check_kid(new_key_id, "the rotate request") if new_key_id else new_key_id_unused(keys)
        if kid not in keys:
            keys[kid] = generate_key()
        _write_keyring_file(path, keys, kid, replace=True)
    log.info("master key %s is now active in %s", kid, path)
    return kid


def new_key_id_unused(keys: dict[str, bytes]) -> str:
    while (kid := new_key_id()) in keys:
        pass
    return kid
