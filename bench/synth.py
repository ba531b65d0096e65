"""Synthetic source data: rows per second for all 53 catalogue resources, and column checks.

Ours: `authops.platform.synth.generate` over every resource at --scale (default 0.1, about
2.9 million rows), timed by wall clock and by this process's CPU time (rows per core-second).
Baseline, same run: a plain per-row Python generator (the `random` module, one dict per row, the
way a hand-written fixture script fills a table) for --baseline-rows rows of the widest resource,
medical_insurance_settlements. Also times `valid_mask` on a million resident IDs, USCCs and VINs.
Writes bench/results/synth.json. Target: 1,000,000 rows per core-second overall.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from authops.core.data import identifiers as ids
from authops.core.data.schema import Check, DType, arrow_schema
from authops.platform.catalog.csvload import BUILTIN, load_definitions
from authops.platform.synth import generate


def naive_rows(defn, n: int, rng: random.Random) -> pa.Table:
    """One Python dict per row, each value drawn with `random`: the baseline."""
    digits = "0123456789"
    start = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    rows = []
    for k in range(n):
        row = {}
        for f in defn.schema.fields:
            if f.check == Check.RESIDENT_ID:
                body = "3205" + "".join(rng.choice(digits) for _ in range(2)) + (
                    dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(30_000))).strftime("%Y%m%d") + \
                    "".join(rng.choice(digits) for _ in range(3))
                row[f.name] = body + ids.resident_id_check_char(body)
            elif f.enum:
                row[f.name] = rng.choice(f.enum)
            elif f.dtype == DType.INT:
                row[f.name] = int(rng.lognormvariate(10, 1))
            elif f.dtype == DType.FLOAT:
                row[f.name] = round(rng.random(), 4)
            elif f.dtype == DType.BOOL:
                row[f.name] = rng.random() < 0.05
            elif f.dtype == DType.DATE:
                row[f.name] = dt.date(2024, 7, 1) + dt.timedelta(days=rng.randrange(365))
            elif f.dtype == DType.TIMESTAMP:
                row[f.name] = start + dt.timedelta(seconds=rng.randrange(365 * 86400))
            elif f.name in defn.schema.key:
                row[f.name] = f"{f.name[:2].upper()}{k:012d}"
            else:
                row[f.name] = "".join(rng.choice("王李张刘陈杨黄赵吴周") for _ in range(rng.randint(2, 8)))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=arrow_schema(defn.schema))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-rows", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth.json"))
    args = parser.parse_args()
    defs = load_definitions(BUILTIN)
    list(generate(defs, scale=0.001, seed=args.seed + 1))  # warm-up: imports and first-call set-up

    wall, cpu = time.perf_counter(), time.process_time()
    per_table = {}
    for code, table in generate(defs, scale=args.scale, seed=args.seed):
        per_table[code] = table.num_rows
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    total = sum(per_table.values())

    wide = next(d for d in defs if d.code == "medical_insurance_settlements")
    s_cpu = time.process_time()  # ours on the baseline's table alone (its pools included)
    same = sum(t.num_rows for _, t in generate([wide], scale=args.scale, seed=args.seed + 2))
    s_cpu = time.process_time() - s_cpu
    b_wall, b_cpu = time.perf_counter(), time.process_time()
    naive_rows(wide, args.baseline_rows, random.Random(args.seed))
    b_wall, b_cpu = time.perf_counter() - b_wall, time.process_time() - b_cpu

    rng = np.random.default_rng(args.seed)
    n = 1_000_000
    samples = {
        Check.RESIDENT_ID: pa.array(ids.make_resident_ids(rng, np.full(n, 320505), np.datetime64("1950-01-01")
                                                          + rng.integers(0, 27_000, n).astype("timedelta64[D]"),
                                                          rng.random(n) < 0.5)),
        Check.USCC: pa.array(ids.make_usccs(rng, n)), Check.VIN: pa.array(ids.make_vins(rng, n))}
    checks = {}
    for check, values in samples.items():
        t = time.process_time()
        ok = ids.valid_mask(check, values)
        checks[check.name] = {"values": n, "all_valid": bool(ok.all()),
                              "values_per_cpu_s": round(n / (time.process_time() - t))}

    result = {
        "benchmark": "synthetic source data, all catalogue resources",
        "scale": args.scale, "resources": len(per_table), "rows": total,
        "ours (vectorized numpy/pyarrow)": {
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rows_per_s_wall": round(total / wall),
            "rows_per_cpu_s": round(total / cpu)},
        "ours, medical_insurance_settlements alone": {"rows": same, "cpu_s": round(s_cpu, 3),
                                                      "rows_per_cpu_s": round(same / s_cpu)},
        "baseline (per-row Python, random module, medical_insurance_settlements)": {
            "rows": args.baseline_rows, "fields": len(wide.schema.fields), "wall_s": round(b_wall, 3),
            "cpu_s": round(b_cpu, 3), "rows_per_s_wall": round(args.baseline_rows / b_wall),
            "rows_per_cpu_s": round(args.baseline_rows / b_cpu)},
        "target_rows_per_cpu_s": 1_000_000,
        "valid_mask": checks,
        "largest_tables": dict(sorted(per_table.items(), key=lambda kv: -kv[1])[:8]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
