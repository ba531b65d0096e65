"""Merkle root over 1,000,000 leaf hashes, beside plain SHA-256 of the same leaves.

Ours: `authops.audit.merkle.root` (RFC 6962 MTH, level by level; n - 1 node hashes) and the
incremental `CompactRange`. Baseline, same run, same data: one `hashlib.sha256(h).digest()` per
leaf hash, i.e. the floor for any hash-per-item work in CPython. Best of --repeat runs.
Writes bench/results/merkle.json. Target: root() within ~1 s per million leaves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from authops.audit import merkle


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/merkle.json"))
    args = parser.parse_args()
    n, rep = args.leaves, args.repeat

    leaves = [merkle.leaf_hash(b"audit-entry-%d" % i) for i in range(n)]
    sha = hashlib.sha256
    baseline_s = _best(lambda: [sha(h).digest() for h in leaves], rep)
    root_s = _best(lambda: merkle.root(leaves), rep)
    compact_s = _best(lambda: merkle.CompactRange.from_leaves(leaves), rep)
    incl_s = _best(lambda: merkle.inclusion_proof(leaves, n // 3), 1)
    cons_s = _best(lambda: merkle.consistency_proof(leaves, n // 3, n), 1)

    r = merkle.root(leaves)
    assert merkle.CompactRange.from_leaves(leaves).root() == r
    proof = merkle.inclusion_proof(leaves, n // 3)
    k = 2_000
    t = time.perf_counter()
    for _ in range(k):
        assert merkle.verify_inclusion(leaves[n // 3], n // 3, n, proof, r)
    verify_us = (time.perf_counter() - t) / k * 1e6

    result = {
        "benchmark": "RFC 6962 Merkle tree head",
        "leaves": n,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "baseline: sha256 of each leaf hash (s)": round(baseline_s, 3),
        "ours: root() (s)": round(root_s, 3),
        "ratio root / baseline": round(root_s / baseline_s, 2),
        "ours: CompactRange, append each leaf then root (s)": round(compact_s, 3),
        "inclusion_proof, one leaf (s)": round(incl_s, 3),
        "consistency_proof n/3 -> n (s)": round(cons_s, 3),
        "verify_inclusion (us)": round(verify_us, 1),
        "root_hex": r.hex(),
        "target_root_s": 1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
