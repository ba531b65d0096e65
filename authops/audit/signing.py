"""Ed25519 keys that sign audit checkpoints. Key ids derive from the public key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authops.core.errors import ConfigurationError, InvalidInput
from authops.core.settings import Mode, Settings


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey

    @property
    def public_pem(self) -> str:
        return public_pem(self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: str | bytes) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) from a PEM public key; InvalidInput when it is not an Ed25519 PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError):
        raise InvalidInput("not a PEM public key (expected the file `authops audit public-key` prints)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("not an Ed25519 public key")
    return key_id_of(key), key


def _from_seed(seed_b64: str) -> SigningKey:
    try:
        seed = base64.b64decode(seed_b64.strip(), validate=True)
    except ValueError:
        raise ConfigurationError("an audit signing key is not valid base64") from None
    if len(seed) != 32:
        raise ConfigurationError("an audit signing key must be a 32-byte Ed25519 seed (base64)")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return SigningKey(key_id_of(private.public_key()), private)


def _seed_of(key: SigningKey) -> str:
    raw = key.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def _ring_path(settings: Settings) -> Path:
    return settings.data_path / "keys" / "audit-signing.json"


def load_signing_keys(settings: Settings) -> list[SigningKey]:
    """All signing keys, the active one first."""
    configured = settings.audit_signing_keys.get_secret_value()
    if configured:
        return [_from_seed(s) for s in configured.split(",") if s.strip()]
    if settings.mode is Mode.PRODUCTION:
        raise ConfigurationError("AUTHOPS_AUDIT_SIGNING_KEYS is empty; production needs an Ed25519 seed")
    path = _ring_path(settings)
    if not path.exists():
        _write_ring(path, [_from_seed(base64.b64encode(os.urandom(32)).decode())])
    return [_from_seed(s) for s in json.loads(path.read_text())["keys"]]


def rotate_signing_key(settings: Settings) -> SigningKey:
    """Development keyring: a new active key; older keys stay to verify old checkpoints."""
    if settings.audit_signing_keys.get_secret_value():
        raise ConfigurationError("signing keys come from AUTHOPS_AUDIT_SIGNING_KEYS: put the new seed first there")
    keys = load_signing_keys(settings)
    new = _from_seed(base64.b64encode(os.urandom(32)).decode())
    _write_ring(_ring_path(settings), [new, *keys])
    return new


def _write_ring(path: Path, keys: list[SigningKey]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": [_seed_of(k) for k in keys]}, fh)
    os.replace(tmp, path)
