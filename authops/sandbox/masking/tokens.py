"""Keyed tokenization: the same identifier gives the same token for one customer and product, and
nothing anyone without the key can recompute.

The PRF is AES-256-CMAC (NIST SP 800-38B, RFC 4493; a PRF per RFC 4615), computed for a whole
column at once: values are grouped by byte length into (k, 16·b) block matrices, and the CBC chain
runs column-block by column-block, each step one AES-ECB call over all k rows inside OpenSSL
(AES-NI). That is the vectorized form of a keyed PRF that the standard library cannot give:
`hmac`/`hashlib` take one message per call, so HMAC-SHA256 or keyed BLAKE2b cost a Python call per
value (bench/masking.py measures both). The 128-bit MAC is written as `length` characters of
Crockford base32 (5 bits each; 20 characters = 100 bits).

Keys: `token_key(master, customer, product)` derives a 256-bit key per customer and product with
HKDF, and `tokenize` derives a further subkey per `domain`, so tokens of one ID differ between two
customers, two products and two domains. No unkeyed hash is offered.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from authops.core import crypto
from authops.core.errors import InvalidInput
from authops.sandbox.masking._arrow import (Values, as_arrow, as_strings, matrix_to_strings, per_chunk, string_buffers,
                                            validity)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case: never confused with an ID
MIN_LENGTH, MAX_LENGTH = 16, 25  # 80 .. 125 bits of the 128-bit MAC
_ALPHABET_B = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
_BATCH = 1 << 20  # rows per pass: bounds the block matrices to ~32 MB for short values


def token_key(master: bytes, customer_id: int, product_id: int) -> bytes:
    """The tokenization key of one customer for one product (HKDF-SHA256 of the 32-byte master key)."""
    for what, v in (("customer_id", customer_id), ("product_id", product_id)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidInput(f"{what} must be a non-negative integer")
    return crypto.derive_key(master, f"sandbox/token/customer/{customer_id}/product/{product_id}")


def _domain_key(key: bytes, domain: str) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != crypto.KEY_SIZE:
        raise InvalidInput(f"a tokenization key is {crypto.KEY_SIZE} bytes (see token_key); there is no "
                           "unkeyed token")
    if not isinstance(domain, str) or not domain:
        raise InvalidInput("tokenization needs a non-empty domain (e.g. the field kind)")
    return crypto.derive_key(bytes(key), f"sandbox/token/domain/{domain}")


class _Cmac:
    """AES-256-CMAC over many messages at once."""

    def __init__(self, key: bytes) -> None:
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        k0 = int.from_bytes(self._encrypt(np.zeros((1, 16), np.uint8)).tobytes(), "big")
        k1 = self._double(k0)
        self._k1 = np.frombuffer(k1.to_bytes(16, "big"), dtype=np.uint8)
        self._k2 = np.frombuffer(self._double(k1).to_bytes(16, "big"), dtype=np.uint8)

    @staticmethod
    def _double(v: int) -> int:
        v <<= 1
        return (v ^ 0x87) & ((1 << 128) - 1) if v >> 128 else v

    def _encrypt(self, blocks: np.ndarray) -> np.ndarray:
        out = self._ecb.update(np.ascontiguousarray(blocks).tobytes())
        return np.frombuffer(out, dtype=np.uint8).reshape(-1, 16)

    def fixed(self, m: np.ndarray) -> np.ndarray:
        """MACs of k messages of the same length L, given as a (k, L) byte matrix."""
        k, length = m.shape
        nblocks = max(1, -(-length // 16))
        padded = np.zeros((k, nblocks * 16), dtype=np.uint8)
        padded[:, :length] = m
        if length == 0 or length % 16:
            padded[:, length] = 0x80
            padded[:, -16:] ^= self._k2
        else:
            padded[:, -16:] ^= self._k1
        x = self._encrypt(padded[:, :16])
        for j in range(1, nblocks):
            x = self._encrypt(x ^ padded[:, 16 * j:16 * (j + 1)])
        return x

    def array(self, c: pa.Array) -> np.ndarray:
        """(n, 16) MACs of the UTF-8 bytes of every entry of a string array (nulls: MAC of b'')."""
        n = len(c)
        out = np.empty((n, 16), dtype=np.uint8)
        for start in range(0, n, _BATCH):
            part = c.slice(start, _BATCH)
            out[start:start + len(part)] = self._batch(part)
        return out

    def _batch(self, c: pa.Array) -> np.ndarray:
        valid = validity(c)
        if valid is not None:
            c = c.fill_null("")  # a null slot may still hold bytes; make it hold none
        offsets, data = string_buffers(c)
        lengths = np.diff(offsets)
        n = len(lengths)
        if n and (lengths == lengths[0]).all():  # fixed-width column (IDs, codes): no copy
            return self.fixed(data.reshape(n, int(lengths[0])))
        if valid is not None and valid.any():  # fixed width but for nulls
            width = lengths[valid]
            if (width == width[0]).all() and not lengths[~valid].any():
                out = np.zeros((n, 16), dtype=np.uint8)
                out[valid] = self.fixed(data.reshape(len(width), int(width[0])))
                return out
        # Group rows by byte length; one Arrow take lays each group's bytes out contiguously.
        order = np.argsort(lengths.astype(np.uint16) if lengths.max() < 1 << 16 else lengths,
                           kind="stable")  # radix sort for 16-bit keys
        grouped = c.take(pa.array(order))
        g_offsets, g_data = string_buffers(grouped)
        g_len = lengths[order]
        bounds = np.flatnonzero(np.diff(g_len)) + 1
        out = np.empty((n, 16), dtype=np.uint8)
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, n], strict=True):
            width = int(g_len[lo])
            block = g_data[g_offsets[lo]:g_offsets[hi]].reshape(hi - lo, width)
            out[order[lo:hi]] = self.fixed(block)
        return out


def _pair_tables() -> np.ndarray:
    """For a 10-bit unit at bit offset r (0, 2, 4, 6) of a 16-bit window: window -> two characters."""
    w = np.arange(1 << 16, dtype=np.uint32)
    return np.stack([_ALPHABET_B[(w >> (11 - r)) & 31].astype(np.uint16)
                     | (_ALPHABET_B[(w >> (6 - r)) & 31].astype(np.uint16) << 8) for r in (0, 2, 4, 6)])


_PAIRS = _pair_tables()  # 4 x 65536 little-endian character pairs (512 KB)


def _base32(mac: np.ndarray, length: int) -> np.ndarray:
    """The first 5·length bits of each 128-bit MAC as an (n, length) matrix of base32 characters."""
    units = (length + 1) // 2  # two characters (10 bits) per table look-up
    cols = np.zeros((18, len(mac)), dtype=np.uint16)  # byte columns, two zero bytes past the end
    cols[:16] = mac.T
    out = np.empty((units, len(mac)), dtype=np.uint16)
    for u in range(units):
        j, r = divmod(10 * u, 8)
        out[u] = _PAIRS[r // 2].take((cols[j] << 8) | cols[j + 1])
    return np.ascontiguousarray(out.T).view(np.uint8)[:, :length]


def mac128(values, key: bytes, *, domain: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, 16) keyed MACs of the values (as strings) and their validity (None: no nulls); one Array only."""
    cmac = _Cmac(_domain_key(key, domain))
    c = as_strings(values)
    if isinstance(c, pa.ChunkedArray):
        c = c.combine_chunks() if c.num_chunks != 1 else c.chunk(0)
    return cmac.array(c), validity(c)


def tokenize(values, key: bytes, *, domain: str, length: int = 20) -> Values:
    """Keyed tokens (AES-CMAC, base32, `length` characters) of the values' UTF-8 text; nulls stay null.

    Exact: callers normalise first (mask_by_field upper-cases and trims identifiers). Empty strings
    get a token too. `key` is a 32-byte key from `token_key`; `domain` separates uses of one key.
    """
    if not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(f"token length must be {MIN_LENGTH}..{MAX_LENGTH} characters")
    cmac = _Cmac(_domain_key(key, domain))
    values = as_arrow(values, pa.string())

    def plain(c: pa.Array) -> pa.Array:
        c = as_strings(c)
        return matrix_to_strings(_base32(cmac.array(c), length), validity(c))

    def one(c: pa.Array) -> pa.Array:
        if pa.types.is_dictionary(c.type):  # each distinct value once, then spread by the indices
            return plain(c.dictionary).take(c.indices)
        return plain(c)

    return per_chunk(one, values, pa.string())

