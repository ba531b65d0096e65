"""RFC 6962 Merkle tree: published test vectors, a recursive reference, and properties."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authops.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# Test vectors. Source: transparency-dev/merkle proof/verify_test.go (Trillian's merkle package,
# inherited from Google certificate-transparency's C++ merkletree tests). Those files number
# leaves from 1 in the inclusion table; the indices below are converted to 0-based.
# ---------------------------------------------------------------------------------------------
LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = {  # tree size -> MTH(D[size])
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
INCLUSION = [  # (0-based leaf index, tree size, PATH)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (old size, new size, PROOF)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
VEC_HASHES = [leaf_hash(d) for d in LEAVES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hx(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


def _root(n: int) -> bytes:
    return bytes.fromhex(ROOTS[n])


# --- A straight transcription of the recursive definitions in RFC 6962 §2.1, for cross-checks.
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]  # d holds leaf hashes already
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    return ref_path(m, d[:k]) + [ref_mth(d[k:])] if m < k else ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


# A 320-leaf log shared by the property tests; ROOT_AT[n] is the root of its first n leaves.
MAX = 300
BIG = [leaf_hash(b"entry-%d" % i) for i in range(MAX + 20)]
ROOT_AT = [root(BIG[:n]) for n in range(len(BIG) + 1)]


def _flip(h: bytes, pos: int, mask: int = 0x01) -> bytes:
    return h[:pos] + bytes([h[pos] ^ mask]) + h[pos + 1:]


# ---------------------------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------------------------
def test_hash_primitives() -> None:
    assert leaf_hash(b"") == _root(1)
    assert node_hash(VEC_HASHES[0], VEC_HASHES[1]) == _root(2)
    assert root([]) == EMPTY_ROOT == _root(0)


@pytest.mark.parametrize("n", range(0, 9))
def test_vector_roots(n: int) -> None:
    assert root(VEC_HASHES[:n]) == _root(n)
    assert CompactRange.from_leaves(VEC_HASHES[:n]).root() == _root(n)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_vector_inclusion(index: int, size: int, path: list[str]) -> None:
    proof = _hx(path)
    assert inclusion_proof(VEC_HASHES[:size], index) == proof
    assert inclusion_proof(VEC_HASHES, index, tree_size=size) == proof
    assert verify_inclusion(VEC_HASHES[index], index, size, proof, _root(size))


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_vector_inclusion_corruptions_fail(index: int, size: int, path: list[str]) -> None:
    """The probes of transparency-dev/merkle's corruptInclusionProof."""
    proof, r, lh = _hx(path), _root(size), VEC_HASHES[index]
    probes = [
        (lh, index - 1, size, proof, r), (lh, index + 1, size, proof, r), (lh, index ^ 2, size, proof, r),
        (lh, index, size * 2, proof, r), (lh, index, size // 2, proof, r),
        (b"WrongLeaf", index, size, proof, r), (leaf_hash(b"wrong"), index, size, proof, r),
        (lh, index, size, proof, EMPTY_ROOT), (lh, index, size, proof, SOME_HASH),
        (lh, index, size, proof + [b""], r), (lh, index, size, proof + [r], r),
        (lh, index, size, [b""] + proof, r), (lh, index, size, [r] + proof, r),
        (lh, index, size, proof[:-1], r), (lh, index, size, [proof[0], SOME_HASH] + proof[1:], r),
    ]
    probes += [(lh, index, size, proof[:i] + [_flip(p, 0, 8)] + proof[i + 1:], r) for i, p in enumerate(proof)]
    assert not any(verify_inclusion(*p) for p in probes)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_vector_consistency(old: int, new: int, path: list[str]) -> None:
    proof = _hx(path)
    assert consistency_proof(VEC_HASHES, old, new) == proof
    assert consistency_proof(VEC_HASHES[:new], old, new) == proof
    assert verify_consistency(old, new, _root(old), _root(new), proof)


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY if v[2]])
def test_vector_consistency_corruptions_fail(old: int, new: int, path: list[str]) -> None:
    """The probes of transparency-dev/merkle's corruptConsistencyProof."""
    proof, r1, r2 = _hx(path), _root(old), _root(new)
    probes = [
        (old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof), (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof), (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof), (old, new, r1, b"WrongRoot", proof), (old, new, r2, r1, proof),
        (old, new, r1, r2, []), (old, new, r1, r2, proof[:-1]),
        (old, new, r1, r2, proof + [b""]), (old, new, r1, r2, proof + [r1]), (old, new, r1, r2, proof + [r2]),
        (old, new, r1, r2, [b""] + proof), (old, new, r1, r2, [r1] + proof), (old, new, r1, r2, [r2] + proof),
        (old, new, r1, r2, [proof[0]] + proof),
    ]
    probes += [(old, new, r1, r2, proof[:i] + [_flip(p, 0, 16)] + proof[i + 1:]) for i, p in enumerate(proof)]
    assert not any(verify_consistency(*p) for p in probes)


def test_consistency_edge_cases() -> None:
    """Trivial sizes, after transparency-dev/merkle's TestVerifyConsistency, but with checked roots."""
    r1 = _root(1)
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, _root(5), [])  # every tree extends the empty one
    assert verify_consistency(1, 1, r1, r1, [])
    assert not verify_consistency(0, 5, r1, _root(5), [])  # the empty tree has one root
    assert not verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])
    assert not verify_consistency(1, 1, r1, _root(2), [])
    assert not verify_consistency(1, 0, r1, EMPTY_ROOT, [])  # time travel
    assert not verify_consistency(2, 1, _root(2), r1, [])
    assert not verify_consistency(1, 2, r1, _root(2), [])  # empty proof
    assert not verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])  # roots match but proof not empty
    assert not verify_consistency(0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT])
    assert consistency_proof(VEC_HASHES, 0, 8) == consistency_proof(VEC_HASHES, 8, 8) == []


def test_size_is_bound_to_root_only_by_the_checkpoint() -> None:
    """A proof fixes the path's shape, not the tree size: leaf 1 of tree 2 also "verifies" as leaf 2
    of tree 3 against tree 2's root. Callers must take (size, root) from one signed checkpoint."""
    assert verify_inclusion(VEC_HASHES[1], 2, 3, [VEC_HASHES[0]], _root(2))
    assert not verify_inclusion(VEC_HASHES[1], 2, 3, [VEC_HASHES[0]], _root(3))


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
@PROPS
@given(st.lists(st.binary(max_size=40), max_size=70), st.data())
def test_matches_rfc_recursive_definitions(entries: list[bytes], data: st.DataObject) -> None:
    d = [leaf_hash(e) for e in entries]
    assert root(d) == ref_mth(d)
    if d:
        i = data.draw(st.integers(0, len(d) - 1))
        assert inclusion_proof(d, i) == ref_path(i, d)
        old = data.draw(st.integers(1, len(d)))
        assert consistency_proof(d, old, len(d)) == ref_subproof(old, d, True)


@PROPS
@given(st.data())
def test_inclusion_roundtrip_and_tamper(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    proof, r, lh = inclusion_proof(BIG, i, n), ROOT_AT[n], BIG[i]
    assert proof == inclusion_proof(BIG[:n], i)
    assert verify_inclusion(lh, i, n, proof, r)
    pos, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    for k, p in enumerate(proof):  # every proof element, one byte each
        assert not verify_inclusion(lh, i, n, proof[:k] + [_flip(p, pos, mask)] + proof[k + 1:], r)
    for b in range(32):  # every byte of the leaf and of the root
        assert not verify_inclusion(_flip(lh, b, mask), i, n, proof, r)
        assert not verify_inclusion(lh, i, n, proof, _flip(r, b, mask))
    # Another index in the same tree never verifies, with this leaf or with its own.
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i) if n > 1 else st.just(i))
    if j != i:
        assert not verify_inclusion(lh, j, n, proof, r)
        assert not verify_inclusion(BIG[j], j, n, proof, r)
    # Another size, taken with its true root (as a checkpoint gives it), never verifies.
    m = data.draw(st.integers(i + 1, len(BIG)).filter(lambda x: x != n), label="other size")
    assert not verify_inclusion(lh, i, m, proof, ROOT_AT[m])
    assert not verify_inclusion(lh, i, n * 2, proof, r)
    assert not verify_inclusion(lh, i, n // 2, proof, r)
    assert not verify_inclusion(lh, i, n, proof + [r], r)
    if proof:
        assert not verify_inclusion(lh, i, n, proof[:-1], r)


@PROPS
@given(st.data())
def test_consistency_roundtrip_and_tamper(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX), label="new size")
    m = data.draw(st.integers(1, n), label="old size")
    proof, r1, r2 = consistency_proof(BIG, m, n), ROOT_AT[m], ROOT_AT[n]
    assert verify_consistency(m, n, r1, r2, proof)
    assume(m != n)  # the rest needs a non-empty proof
    pos, mask = data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))
    for k, p in enumerate(proof):
        assert not verify_consistency(m, n, r1, r2, proof[:k] + [_flip(p, pos, mask)] + proof[k + 1:])
    for b in range(32):
        assert not verify_consistency(m, n, _flip(r1, b, mask), r2, proof)
        assert not verify_consistency(m, n, r1, _flip(r2, b, mask), proof)
    assert not verify_consistency(m, n, r1, r2, proof[:-1])
    assert not verify_consistency(m, n, r1, r2, proof + [r2])
    assert not verify_consistency(m, n, r2, r1, proof)
    # Other sizes with their true roots verify only if this happens to be their proof too.
    m2 = data.draw(st.integers(0, len(BIG)), label="other old size")
    n2 = data.draw(st.integers(m2, len(BIG)), label="other new size")
    ok = verify_consistency(m2, n2, ROOT_AT[m2], ROOT_AT[n2], proof)
    assert ok == (proof == consistency_proof(BIG, m2, n2))
    for m3, n3 in ((m - 1, n), (m + 1, n), (m ^ 2, n), (m, n * 2), (m, n // 2)):
        assert not verify_consistency(m3, n3, r1, r2, proof)


@PROPS
@given(st.data())
def test_compact_range_tracks_root_and_roundtrips(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, MAX), label="checkpoint size")
    end = data.draw(st.integers(cut, MAX), label="next size")
    cr = CompactRange.from_leaves(BIG[:cut])
    assert cr.size == cut and len(cr.hashes) == bin(cut).count("1")
    assert cr.root() == ROOT_AT[cut]
    saved = json.loads(json.dumps(cr.to_dict()))
    restored = CompactRange.from_dict(saved)
    assert restored == cr and restored.to_dict() == saved
    restored.extend(BIG[cut:end])  # the next checkpoint costs only the new leaves
    assert restored.root() == ROOT_AT[end] and restored.size == end
    assert cr.size == cut  # restoring copied, it did not alias


def test_compact_range_every_size() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT and cr.to_dict() == {"size": 0, "hashes": []}
    for n, h in enumerate(BIG, start=1):
        cr.append(h)
        assert cr.root() == ROOT_AT[n], n


def test_root_large_tree_matches_compact_range() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(70_001)]
    assert root(leaves) == CompactRange.from_leaves(leaves).root()


# ---------------------------------------------------------------------------------------------
# Malformed input: verifiers answer False, generators raise
# ---------------------------------------------------------------------------------------------
GOOD_I = (VEC_HASHES[5], 5, 8, _hx(INCLUSION[2][2]), _root(8))
GOOD_C = (6, 8, _root(6), _root(8), _hx(CONSISTENCY[2][2]))
JUNK = [None, "", "00" * 32, 1.5, True, -1, 2**200, b"", b"\x00" * 31, b"\x00" * 33, bytearray(33),
        [], [b"\x00" * 32] * 200, object(), {"a": 1}, iter([b"\x00" * 32])]


@pytest.mark.parametrize("slot", range(5))
@pytest.mark.parametrize("junk", JUNK, ids=[f"junk{i}" for i in range(len(JUNK))])  # stable ids (xdist)
def test_verifiers_reject_junk_without_raising(slot: int, junk: object) -> None:
    assert verify_inclusion(*GOOD_I) and verify_consistency(*GOOD_C)
    args_i, args_c = list(GOOD_I), list(GOOD_C)
    args_i[slot], args_c[slot] = junk, junk
    assert verify_inclusion(*args_i) is False
    assert verify_consistency(*args_c) is False


def test_verifiers_accept_bytearray_and_tuple() -> None:
    lh, i, n, proof, r = GOOD_I
    assert verify_inclusion(bytearray(lh), i, n, tuple(bytearray(p) for p in proof), bytearray(r))


def test_verifiers_reject_bad_proof_elements() -> None:
    lh, i, n, proof, r = GOOD_I
    for bad in (proof[0].hex(), None, proof[0][:31], proof[0] + b"\x00", 7):
        assert verify_inclusion(lh, i, n, [bad] + proof[1:], r) is False
        assert verify_consistency(6, 8, _root(6), _root(8), [bad] + GOOD_C[4][1:]) is False
    assert verify_inclusion(lh, i, n, b"".join(proof), r) is False  # bytes is not a list of hashes
    assert verify_inclusion(lh, 8, 8, proof, r) is False  # index == size
    # Without the index < size check (RFC 9162 step 1) these would pass: the loop never runs.
    assert verify_inclusion(VEC_HASHES[0], 1, 1, [], _root(1)) is False
    assert verify_inclusion(VEC_HASHES[0], 2**70, 1, [], _root(1)) is False
    assert verify_inclusion(lh, 0, 0, [], EMPTY_ROOT) is False


anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
                     st.binary(max_size=40), st.lists(st.binary(min_size=31, max_size=33), max_size=80))


@PROPS
@given(anything, anything, anything, anything, anything)
def test_verifiers_never_raise(a: object, b: object, c: object, d: object, e: object) -> None:
    assert verify_inclusion(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]
    assert verify_consistency(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "err"), [
    ((VEC_HASHES, 8), ValueError), ((VEC_HASHES, -1), ValueError), (([], 0), ValueError),
    ((VEC_HASHES, 0, 9), ValueError), ((VEC_HASHES, 3, 3), ValueError), ((VEC_HASHES, 0, -1), ValueError),
    ((VEC_HASHES, "0"), TypeError), ((VEC_HASHES, True), TypeError), ((VEC_HASHES, 0, 2.0), TypeError),
])
def test_inclusion_proof_rejects_bad_arguments(args: tuple, err: type[Exception]) -> None:
    with pytest.raises(err):
        inclusion_proof(*args)


@pytest.mark.parametrize(("args", "err"), [
    ((VEC_HASHES, 1, 9), ValueError), ((VEC_HASHES, 5, 4), ValueError), ((VEC_HASHES, -1, 4), ValueError),
    ((VEC_HASHES, 1, -1), ValueError), ((VEC_HASHES, 1.0, 4), TypeError), ((VEC_HASHES, 1, None), TypeError),
])
def test_consistency_proof_rejects_bad_arguments(args: tuple, err: type[Exception]) -> None:
    with pytest.raises(err):
        consistency_proof(*args)


@pytest.mark.parametrize("bad", [
    None, [], {"size": 1}, {"size": 1, "hashes": []}, {"size": -1, "hashes": []}, {"size": True, "hashes": ["00" * 32]},
    {"size": 3, "hashes": ["00" * 32]}, {"size": 1, "hashes": ["zz" * 32]}, {"size": 1, "hashes": ["00" * 31]},
    {"size": 1, "hashes": [" 0" * 32]}, {"size": 1, "hashes": [b"\x00" * 32]}, {"size": 1, "hashes": "00" * 32},
    {"size": 0, "hashes": [], "extra": 1}, {"size": "1", "hashes": ["00" * 32]},
])
def test_compact_range_from_dict_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        CompactRange.from_dict(bad)


def test_compact_range_append_rejects_bad_hash() -> None:
    cr = CompactRange()
    for bad in (b"", b"\x00" * 31, "00" * 32, None):
        with pytest.raises(ValueError):
            cr.append(bad)  # type: ignore[arg-type]
    assert cr.size == 0
