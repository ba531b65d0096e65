"""RFC 6962 / RFC 9162 §2.1 Merkle tree: roots, inclusion and consistency proofs, compact ranges.

Leaves are given as leaf hashes (``leaf_hash(entry)``), so the log stores 32 bytes per entry.
Proof generation raises ValueError/TypeError on bad arguments; verification never raises.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Pre-fed hash states: copying one is cheaper than building b"\x01" + left + right anew.
_LEAF_STATE = hashlib.sha256(b"\x00")
_NODE_STATE = hashlib.sha256(b"\x01")
# Sizes are < 2**64 in practice, so no valid proof has more than 64 (+1 seed) entries.
_MAX_PROOF_LEN = 65
_HEX_HASH = re.compile(r"[0-9a-fA-F]{64}")  # not bytes.fromhex alone: it skips whitespace


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    h = _LEAF_STATE.copy()
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    h = _NODE_STATE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]), computed level by level without recursion."""
    if hi <= lo:
        return EMPTY_ROOT
    level = list(hashes[lo:hi])
    copy = _NODE_STATE.copy
    while len(level) > 1:
        it, nxt = iter(level), []
        append = nxt.append
        for left, right in zip(it, it):
            h = copy()
            h.update(left)
            h.update(right)
            append(h.digest())
        # Carrying the odd last node up unhashed is equivalent to RFC 6962's split at the
        # largest power of two below n: that node is always the right-most subtree.
        if len(level) & 1:
            append(level[-1])
        level = nxt
    return level[0]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the leaf hashes; SHA-256(b"") for the empty tree."""
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int | None = None) -> list[bytes]:
    """PATH(index, D[tree_size]) (RFC 6962 §2.1.1); tree_size defaults to len(leaf_hashes)."""
    n = len(leaf_hashes) if tree_size is None else _check_int("tree_size", tree_size)
    _check_int("index", index)
    if not 0 <= n <= len(leaf_hashes):
        raise ValueError(f"tree_size {n} out of range [0, {len(leaf_hashes)}]")
    if not 0 <= index < n:
        raise ValueError(f"index {index} out of range for tree size {n}")
    # Walk down from the root; each step's sibling subtree is the proof entry for that level.
    lo, hi, path = 0, n, []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaf_hashes, lo, lo + k))
            lo += k
    path.reverse()  # PATH lists siblings leaf-first, root-last.
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 6962 §2.1.2); empty when old_size is 0 or equals new_size."""
    _check_int("old_size", old_size)
    _check_int("new_size", new_size)
    if not 0 <= new_size <= len(leaf_hashes):
        raise ValueError(f"new_size {new_size} out of range [0, {len(leaf_hashes)}]")
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old_size {old_size} out of range [0, new_size={new_size}]")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[lo:hi], b) unrolled: entries are appended after the recursive part, so
    # collect them top-down and reverse at the end.
    m, lo, hi, complete, path = old_size, 0, new_size, True, []
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaf_hashes, lo, lo + k))
            m, lo, complete = m - k, lo + k, False
    if not complete:
        path.append(_mth(leaf_hashes, lo, hi))
    path.reverse()
    return path


def _is_hash(value: object) -> bool:
    return isinstance(value, (bytes, bytearray)) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_proof(proof: object) -> bool:
    return (isinstance(proof, (list, tuple)) and len(proof) <= _MAX_PROOF_LEN
            and all(_is_hash(p) for p in proof))


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Check an inclusion proof with the RFC 9162 §2.1.3.2 algorithm; False on any malformed input."""
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_size(index) and _is_size(tree_size)
            and _is_proof(proof) and index < tree_size):
        return False
    fn, sn, r = index, tree_size - 1, bytes(leaf_hash)
    for p in proof:
        if sn == 0:
            return False  # Proof longer than the path to the root.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # fn is the right edge here: skip the levels where it has no sibling.
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """Check a consistency proof with the RFC 9162 §2.1.4.2 algorithm; False on any malformed input."""
    if not (_is_size(old_size) and _is_size(new_size) and _is_hash(old_root) and _is_hash(new_root)
            and _is_proof(proof) and old_size <= new_size):
        return False
    if old_size == new_size:
        # The empty tree's root is fixed, so an old root claimed for size 0 is checkable too.
        return not proof and old_root == new_root and (old_size > 0 or old_root == EMPTY_ROOT)
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT  # Every tree extends the empty one.
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)  # The old tree is a complete subtree: its root is the seed.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = bytes(path[0])
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class CompactRange:
    """Right edge of the tree [0, size): roots of its perfect subtrees, largest (left-most) first."""

    __slots__ = ("_size", "_hashes")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash, merging equal-height subtrees (one per trailing 1 bit of size)."""
        if not _is_hash(leaf_hash):
            raise ValueError("leaf_hash must be 32 bytes")
        hashes, s = self._hashes, self._size
        hashes.append(bytes(leaf_hash))
        while s & 1:
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            s >>= 1
        self._size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append each leaf hash in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of all leaves appended so far: fold the subtree roots right to left."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: {"size": n, "hashes": [hex, ...]}."""
        return {"size": self._size, "hashes": [h.hex() for h in self._hashes]}

    @classmethod
    def from_dict(cls, data: Any) -> CompactRange:
        """Inverse of to_dict; ValueError if the shape is wrong."""
        if not isinstance(data, dict) or set(data) != {"size", "hashes"}:
            raise ValueError('compact range must be a dict with keys "size" and "hashes"')
        size, hexes = data["size"], data["hashes"]
        if not _is_size(size) or not isinstance(hexes, list):
            raise ValueError("size must be a non-negative int and hashes a list")
        if len(hexes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, got {len(hexes)}")
        bad = [x for x in hexes if not (isinstance(x, str) and _HEX_HASH.fullmatch(x))]
        if bad:
            raise ValueError(f"not a {HASH_SIZE}-byte hex hash: {bad[0]!r}")
        cr = cls()
        cr._size, cr._hashes = size, [bytes.fromhex(x) for x in hexes]
        return cr

    @classmethod
    def from_leaves(cls, leaf_hashes: Sequence[bytes]) -> CompactRange:
        """Compact range over the given leaf hashes."""
        cr = cls()
        cr.extend(leaf_hashes)
        return cr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompactRange) and (self._size, self._hashes) == (other._size, other._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, hashes={len(self._hashes)})"
