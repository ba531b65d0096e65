"""Acceptance: N random tamperings of an exported log of M events are all detected, and the
untouched export verifies. Defaults: 1,000 tamperings of 100,000 events.

    python -m bench.audit_tamper [--events 100000] [--tamperings 1000]
Writes bench/results/audit_tamper.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_lines: list[bytes] = []
_pems: list[str] = []


def _init(lines, pems):
    global _lines, _pems
    _lines, _pems = lines, pems


def _one(job: tuple[int, str, str]) -> tuple[str, bool, str]:
    from authops.audit.verify import load_keys, verify_file
    from tests.support.tamper import tamper

    seed, kind, folder = job
    rng = random.Random(seed)
    path = Path(folder) / f"t{seed}.jsonl"
    path.write_bytes(b"".join(tamper(_lines, kind, rng, Ed25519PrivateKey.generate())))
    report = verify_file(path, load_keys(_pems))
    path.unlink()
    return kind, not report.ok, report.summary()[:160]


def main() -> None:
    from sqlmodel import Session

    from authops.audit import log as audit_log
    from authops.audit.export import export
    from authops.audit.signing import load_signing_keys
    from authops.audit.verify import load_keys, verify_file
    from authops.core import db
    from authops.core.settings import Settings
    from tests.support.tamper import KINDS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tamperings", type=int, default=1_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_tamper.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        db.upgrade(settings)
        actor = audit_log.Actor(kind="user", id=3, name="scb-dev", org_id=9, ip="10.2.3.4", region="intranet")
        done = 0
        while done < args.events:
            with Session(db.get_engine(settings)) as s:
                n = min(20_000, args.events - done)
                audit_log.append(s, [audit_log.PendingEvent(actor=actor, action="product.call", rows=1,
                                                            details={"i": done + i}) for i in range(n)])
                s.commit()
            done += n
            if done % 40_000 == 0 or done == args.events:
                from authops.audit.checkpoints import checkpoint_now
                checkpoint_now(settings)
        path = Path(tmp) / "audit.jsonl"
        export(settings, path)
        pems = [k.public_pem for k in load_signing_keys(settings)]
        t = time.perf_counter()
        clean = verify_file(path, load_keys(pems))
        clean_s = time.perf_counter() - t
        lines = path.read_bytes().splitlines(keepends=True)
        rng = random.Random(2026)
        jobs = [(rng.randrange(1 << 30), KINDS[i % len(KINDS)], tmp) for i in range(args.tamperings)]
        t = time.perf_counter()
        with Pool(args.processes, initializer=_init, initargs=(lines, pems)) as pool:
            results = pool.map(_one, jobs, chunksize=4)
        elapsed = time.perf_counter() - t
    by_kind = Counter(k for k, _, _ in results)
    detected = Counter(k for k, d, _ in results if d)
    missed = [r for r in results if not r[1]]
    result = {"events": clean.events, "checkpoints": clean.checkpoints,
              "untouched_export_verifies": clean.ok, "clean_verify_s": round(clean_s, 2),
              "tamperings": len(results), "detected": sum(detected.values()),
              "by_kind": {k: f"{detected[k]}/{by_kind[k]}" for k in by_kind},
              "missed_examples": missed[:5], "tamper_phase_s": round(elapsed, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
