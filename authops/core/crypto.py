"""Cryptographic primitives: AES-256-GCM (single-shot and chunked STREAM format) and Ed25519.

Every failure to authenticate becomes `IntegrityViolation`; no raw `cryptography`
exception and no plaintext ever leaves this module in an error.

Chunked format (version 1), used for objects at rest::

    header  = MAGIC(4) | VERSION(1) | log2(chunk_size)(1) | 0x0000(2) | nonce_prefix(8)
    chunk_i = AES-256-GCM(key, nonce = nonce_prefix | i (u32 BE),
                          aad = header | i (u64 BE) | last_flag(1) | caller_aad)

Every chunk holds `chunk_size` plaintext bytes except the last (0..chunk_size bytes, flag 1).
Binding the header, counter and last flag into each chunk detects truncation, reordering,
duplication, appending and header edits; the caller's AAD binds the blob to its name.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authops.core.errors import IntegrityViolation, InvalidInput

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

STREAM_MAGIC = b"AOE\x89"
STREAM_VERSION = 1
STREAM_HEADER_SIZE = 16
STREAM_NONCE_PREFIX_SIZE = 8
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_LOG2 = 6  # 64 bytes: tiny chunks let tests cross many boundaries cheaply
MAX_CHUNK_LOG2 = 24  # 16 MiB: a forged header cannot make a reader allocate more
_MAX_CHUNKS = 1 << 32
_HEADER = struct.Struct(">4sBBH8s")
_CHUNK_AAD = struct.Struct(">QB")

__all__ = [
    "DEFAULT_CHUNK_SIZE", "KEY_SIZE", "aead_decrypt", "aead_encrypt", "chunked_decrypt",
    "chunked_encrypt", "ciphertext_size", "constant_time_equal", "derive_key", "generate_key",
    "generate_signing_key", "sha256_hex", "sign", "stream_decrypt", "stream_encrypt", "verify",
]


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def _check_key(key: bytes) -> AESGCM:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise InvalidInput(f"AES-256-GCM needs a {KEY_SIZE}-byte key")
    return AESGCM(bytes(key))


def derive_key(key: bytes, purpose: str) -> bytes:
    """A 256-bit subkey of `key` for one purpose (HKDF-SHA256), so one secret never serves two uses."""
    _check_key(key)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None,
                info=b"authops/" + purpose.encode()).derive(key)


def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM with a random nonce: returns nonce | ciphertext | tag."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + _check_key(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, blob: bytes, aad: bytes = b"", *, what: str = "ciphertext") -> bytes:
    """Inverse of `aead_encrypt`; IntegrityViolation naming `what` if it does not authenticate."""
    aead = _check_key(key)
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise IntegrityViolation(f"{what} is truncated ({len(blob)} bytes)")
    try:
        return aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityViolation(
            f"{what} failed authentication (tampered, swapped or wrong key)") from None


# --- chunked STREAM format ---------------------------------------------------------------

def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact size of the chunked encryption of `plaintext_size` bytes."""
    chunks = max(1, -(-plaintext_size // chunk_size))
    return STREAM_HEADER_SIZE + plaintext_size + chunks * TAG_SIZE


def _chunk_log2(chunk_size: int) -> int:
    log2 = chunk_size.bit_length() - 1
    if chunk_size != 1 << log2 or not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
        raise InvalidInput(f"chunk size must be a power of two between 2**{MIN_CHUNK_LOG2} "
                           f"and 2**{MAX_CHUNK_LOG2}, not {chunk_size}")
    return log2


def stream_encrypt(key: bytes, pieces: Iterable[bytes], aad: bytes = b"", *,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Encrypt plaintext pieces of any size into the chunked format, yielding header then chunks."""
    aead = _check_key(key)
    prefix = os.urandom(STREAM_NONCE_PREFIX_SIZE)
    header = _HEADER.pack(STREAM_MAGIC, STREAM_VERSION, _chunk_log2(chunk_size), 0, prefix)
    yield header
    counter = 0

    def seal(chunk: bytes, last: bool) -> bytes:
        if counter >= _MAX_CHUNKS:
            raise InvalidInput("object too large for the chunked format (2**32 chunks)")
        nonce = prefix + struct.pack(">I", counter)
        return aead.encrypt(nonce, chunk, header + _CHUNK_AAD.pack(counter, last) + aad)

    buf = bytearray()
    for piece in pieces:
        buf += piece
        # Keep at least one byte back: only the end of input decides which chunk is last.
        while len(buf) > chunk_size:
            yield seal(bytes(buf[:chunk_size]), False)
            del buf[:chunk_size]
            counter += 1
    yield seal(bytes(buf), True)


def _read_upto(reader: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, fewer only at end of stream (raw streams may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = reader.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def stream_decrypt(key: bytes, reader: BinaryIO, aad: bytes = b"", *,
                   what: str = "ciphertext") -> Iterator[bytes]:
    """Decrypt the chunked format chunk by chunk; each yielded chunk is already authenticated.

    A failure can surface after earlier chunks were yielded: callers that must not expose
    a prefix of a damaged object collect the output and commit it only at the end.
    """
    aead = _check_key(key)
    header = _read_upto(reader, STREAM_HEADER_SIZE)
    if len(header) < STREAM_HEADER_SIZE:
        raise IntegrityViolation(f"{what} is truncated (no complete header)")
    magic, version, log2, reserved, prefix = _HEADER.unpack(header)
    if magic != STREAM_MAGIC:
        raise IntegrityViolation(f"{what} is not an authops encrypted blob (bad magic)")
    if version != STREAM_VERSION or reserved or not MIN_CHUNK_LOG2 <= log2 <= MAX_CHUNK_LOG2:
        raise IntegrityViolation(f"{what} has an unsupported or damaged header")
    block = (1 << log2) + TAG_SIZE
    current = _read_upto(reader, block)
    counter = 0
    while True:
        following = _read_upto(reader, block) if len(current) == block else b""
        last = not following
        if len(current) < TAG_SIZE or counter >= _MAX_CHUNKS:
            raise IntegrityViolation(f"{what} is truncated (chunk {counter} incomplete)")
        nonce = prefix + struct.pack(">I", counter)
        try:
            yield aead.decrypt(nonce, current, header + _CHUNK_AAD.pack(counter, last) + aad)
        except InvalidTag:
            raise IntegrityViolation(
                f"{what} failed authentication at chunk {counter} "
                "(tampered, truncated, reordered, swapped or wrong key)") from None
        if last:
            return
        current = following
        counter += 1


def chunked_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"", *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Encrypt a whole buffer into the chunked format."""
    return b"".join(stream_encrypt(key, [plaintext], aad, chunk_size=chunk_size))


def chunked_decrypt(key: bytes, blob: bytes, aad: bytes = b"", *, what: str = "ciphertext") -> bytes:
    """Decrypt a whole chunked blob; IntegrityViolation on any damage."""
    return b"".join(stream_decrypt(key, io.BytesIO(blob), aad, what=what))


# --- Ed25519 -----------------------------------------------------------------------------

def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode() if isinstance(pem, str) else bytes(pem)


def sign(private_pem: bytes | str, data: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of `data`."""
    try:
        key = serialization.load_pem_private_key(_as_bytes(private_pem), password=None)
    except (ValueError, TypeError):
        raise InvalidInput("signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput("signing key is not an Ed25519 key")
    return key.sign(data)


def verify(public_pem: bytes | str, data: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `data` under `public_pem`."""
    try:
        key = serialization.load_pem_public_key(_as_bytes(public_pem))
    except (ValueError, TypeError):
        raise InvalidInput("verification key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("verification key is not an Ed25519 key")
    try:
        key.verify(bytes(signature), data)
    except InvalidSignature:
        return False
    return True


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    """Compare secrets without leaking where they differ."""
    return hmac.compare_digest(_as_bytes(a), _as_bytes(b))
