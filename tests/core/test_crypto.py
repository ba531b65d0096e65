"""Crypto helpers: AEAD, the chunked STREAM format (property-tested) and Ed25519."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authops.core import crypto
from authops.core.crypto import (
    STREAM_HEADER_SIZE, TAG_SIZE, aead_decrypt, aead_encrypt, chunked_decrypt, chunked_encrypt,
    ciphertext_size, generate_key, generate_signing_key, sign, stream_decrypt, stream_encrypt, verify,
)
from authops.core.errors import IntegrityViolation, InvalidInput

CHUNK = 64  # small chunks: many boundaries in few bytes
KEY = bytes(range(32))
AAD = b"object:reports/2024.csv"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sizes_near_boundaries() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 5 * CHUNK),
        st.builds(lambda k, d: max(0, k * CHUNK + d), st.integers(0, 6), st.integers(-2, 2)),
    )


def _chunks(blob: bytes) -> list[bytes]:
    body = blob[STREAM_HEADER_SIZE:]
    step = CHUNK + TAG_SIZE
    return [body[i:i + step] for i in range(0, len(body), step)]


# --- single-shot AEAD ----------------------------------------------------------------------

def test_aead_round_trip_and_binding():
    key = generate_key()
    assert len(key) == 32 and key != generate_key()
    blob = aead_encrypt(key, b"secret payload", b"ctx")
    assert b"secret payload" not in blob
    assert aead_decrypt(key, blob, b"ctx") == b"secret payload"
    assert aead_encrypt(key, b"x", b"ctx") != aead_encrypt(key, b"x", b"ctx")  # random nonces
    for bad_key, aad, data in [(generate_key(), b"ctx", blob), (key, b"other", blob),
                               (key, b"ctx", blob[:-1]), (key, b"ctx", blob[:5])]:
        with pytest.raises(IntegrityViolation) as err:
            aead_decrypt(bad_key, data, aad, what="session token")
        assert "session token" in err.value.message and "secret payload" not in err.value.message


def test_aead_refuses_wrong_key_size():
    with pytest.raises(InvalidInput, match="32-byte key"):
        aead_encrypt(b"short", b"x")


# --- chunked format --------------------------------------------------------------------------

@FAST
@given(size=sizes_near_boundaries(), data=st.data())
def test_chunked_round_trip_any_size(size, data):
    plaintext = data.draw(st.binary(min_size=size, max_size=size))
    # the plaintext arrives in arbitrary pieces; chunking must not depend on them
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=4)))
    pieces = [plaintext[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    blob = b"".join(stream_encrypt(KEY, pieces, AAD, chunk_size=CHUNK))
    assert len(blob) == ciphertext_size(size, CHUNK)
    assert chunked_decrypt(KEY, blob, AAD) == plaintext
    # a reader that returns short reads (like a socket) gives the same answer
    assert b"".join(stream_decrypt(KEY, _Trickle(blob), AAD)) == plaintext


class _Trickle(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 7) if size and size > 0 else 7)


@FAST
@given(size=sizes_near_boundaries(), data=st.data())
def test_chunked_any_single_byte_flip_fails(size, data):
    blob = chunked_encrypt(KEY, b"m" * size, AAD, chunk_size=CHUNK)
    pos = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(blob)
    damaged[pos] ^= 1 << bit
    with pytest.raises(IntegrityViolation) as err:
        chunked_decrypt(KEY, bytes(damaged), AAD, what="object 'r.csv'")
    assert "object 'r.csv'" in err.value.message


@FAST
@given(size=sizes_near_boundaries(), data=st.data())
def test_chunked_any_truncation_or_extension_fails(size, data):
    blob = chunked_encrypt(KEY, b"m" * size, AAD, chunk_size=CHUNK)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(IntegrityViolation):
        chunked_decrypt(KEY, blob[:cut], AAD)
    extra = data.draw(st.binary(min_size=1, max_size=CHUNK + 2 * TAG_SIZE))
    with pytest.raises(IntegrityViolation):
        chunked_decrypt(KEY, blob + extra, AAD)


def test_chunked_detects_reorder_duplicate_and_drop():
    plaintext = bytes(range(256)) * 2  # 8 chunks of 64
    blob = chunked_encrypt(KEY, plaintext, AAD, chunk_size=CHUNK)
    header, chunks = blob[:STREAM_HEADER_SIZE], _chunks(blob)
    assert len(chunks) == 8
    variants = {
        "swap": [chunks[1], chunks[0], *chunks[2:]],
        "duplicate": [chunks[0], *chunks],
        "drop middle": [chunks[0], *chunks[2:]],
        "drop last at boundary": chunks[:-1],
        "append last again": [*chunks, chunks[-1]],
    }
    for name, parts in variants.items():
        with pytest.raises(IntegrityViolation):
            chunked_decrypt(KEY, header + b"".join(parts), AAD)
            pytest.fail(name)


def test_chunked_binds_aad_key_and_header():
    blob = chunked_encrypt(KEY, b"payload" * 50, AAD, chunk_size=CHUNK)
    with pytest.raises(IntegrityViolation):
        chunked_decrypt(KEY, blob, b"object:other.csv")
    with pytest.raises(IntegrityViolation):
        chunked_decrypt(generate_key(), blob, AAD)
    # a header claiming another chunk size is rejected, not misparsed
    magic, version, log2, reserved, prefix = struct.unpack(">4sBBH8s", blob[:STREAM_HEADER_SIZE])
    forged = struct.pack(">4sBBH8s", magic, version, log2 + 1, reserved, prefix) + blob[STREAM_HEADER_SIZE:]
    with pytest.raises(IntegrityViolation):
        chunked_decrypt(KEY, forged, AAD)
    with pytest.raises(IntegrityViolation, match="bad magic"):
        chunked_decrypt(KEY, b"PK\x03\x04" + blob[4:], AAD)
    with pytest.raises(IntegrityViolation, match="unsupported or damaged header"):
        chunked_decrypt(KEY, blob[:4] + b"\x02" + blob[5:], AAD)


def test_chunked_splits_exact_multiples_without_empty_tail():
    blob = chunked_encrypt(KEY, b"a" * (3 * CHUNK), AAD, chunk_size=CHUNK)
    assert len(_chunks(blob)) == 3
    assert len(chunked_encrypt(KEY, b"", AAD, chunk_size=CHUNK)) == STREAM_HEADER_SIZE + TAG_SIZE
    with pytest.raises(InvalidInput, match="power of two"):
        chunked_encrypt(KEY, b"", AAD, chunk_size=1000)


def test_default_chunk_is_one_mebibyte():
    assert crypto.DEFAULT_CHUNK_SIZE == 1 << 20
    blob = chunked_encrypt(KEY, b"z" * ((1 << 20) + 1), AAD)
    assert len(blob) == STREAM_HEADER_SIZE + (1 << 20) + 1 + 2 * TAG_SIZE


# --- Ed25519 -------------------------------------------------------------------------------

def test_ed25519_sign_and_verify():
    private_pem, public_pem = generate_signing_key()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    sig = sign(private_pem, b"release manifest")
    assert len(sig) == 64
    assert verify(public_pem, b"release manifest", sig)
    assert verify(public_pem.decode(), b"release manifest", sig)  # str PEM accepted too
    assert not verify(public_pem, b"release manifesT", sig)
    assert not verify(public_pem, b"release manifest", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(generate_signing_key()[1], b"release manifest", sig)


def test_ed25519_bad_keys_are_invalid_input():
    private_pem, public_pem = generate_signing_key()
    with pytest.raises(InvalidInput):
        sign(b"not a pem", b"x")
    with pytest.raises(InvalidInput):
        verify(b"not a pem", b"x", b"sig")
    with pytest.raises(InvalidInput):
        sign(public_pem, b"x")
