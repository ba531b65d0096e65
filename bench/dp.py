"""DP aggregates: ours end to end against a plain group-by and OpenDP's naive Polars path.

Data: --rows synthetic settlement rows (person id as an 18-character resident-ID-like string,
institution code out of 200, month out of 12, amount in integer fen, lognormal), people in
random order, ~10 rows per person plus a heavy 1% of people with ~50 more rows each; written
as zstd Parquet and stored encrypted in a temporary local ObjectStore (Settings(data_dir=tmp)).
The query: noisy count and clamped sum of amount by institution x month, public keys,
epsilon 1, each person bounded to 24 rows, min cell 10. Timed in the same run, after one
untimed warm-up (imports, page cache): (a) and (b) alternate in one process for --repeat pairs
(both meet the same machine load; the ratio is the median of the pairs' ratios), and each also
runs once alone in its own process for its peak RSS; (c) once and (d) --repeat times, each in
its own process:
  (a) ours: decrypt the object to a temp file + `release_aggregate`;
  (b) baseline: plain `pl.scan_parquet(...).group_by(...).agg(len, sum)` on the plaintext file;
  (c) OpenDP's naive Polars path: in-memory frame, Context + identifier truncation, `release()`
      (automatic scale search);
  (d) for reference, OpenDP's Polars plan on `scan_parquet` with the scales set directly
      (its own identifier truncation, privacy map checked);
  (e) our sandbox job's own path, as `sandbox.run` executes it: decrypt, the declarative spec
      (typed scan, a derived month label; its lazy plan streams into the bounding) and the
      release gate (bound, aggregate, noise, minimum cell, last scan). Alternates with the
      baseline like (a), for its own median ratio.
Target: (a) within 2x of (b). `--rows 100000000` writes 20 files partitioned by person
(`unit_partition`), runs (a) one partition at a time (decrypt, bound, partial aggregate,
delete) and reports its peak RSS (target < 2 GiB) and (b); needs ~1.5 GB free disk.
Writes bench/results/dp.json (one entry per --rows, kept across runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

BY = ["institution", "month"]
K, UPPER, EPS = 24, 500_000, 1.0
INSTITUTIONS = [f"H320500{i:04d}" for i in range(200)]
MONTHS = list(range(202401, 202413))
CHUNK = 2_000_000


def spec():
    from authops.sandbox.dp import AggregateSpec, Measure

    return AggregateSpec(by=BY, public_keys={"institution": INSTITUTIONS, "month": MONTHS},
                         measures=[Measure("n", "count"), Measure("total", "sum", "amount", 0, UPPER)],
                         unit_column="person_id", epsilon=EPS, max_contributions=K, min_cell=10)


def chunk(rng: np.random.Generator, n: int, people: int) -> pl.DataFrame:
    heavy = rng.random(n) < 0.05  # 5% of rows go to 1% of people
    who = np.where(heavy, rng.integers(0, max(1, people // 100), n), rng.integers(0, people, n))
    return pl.DataFrame({
        "person_id": pl.Series(who).cast(pl.String).str.zfill(18).str.replace("^0000", "3205"),
        "institution": pl.Series(INSTITUTIONS).gather(rng.integers(0, len(INSTITUTIONS), n)),
        "month": rng.choice(np.asarray(MONTHS, dtype=np.int32), n),
        "amount": np.rint(rng.lognormal(9.6, 1.0, n)).astype(np.int64),
    })


def generate(folder: Path, rows: int, files: int, seed: int = 7) -> list[Path]:
    """Write `rows` rows in chunks; with files > 1, file p holds exactly the people of partition p."""
    from authops.sandbox.dp import unit_partition

    rng = np.random.default_rng(seed)
    paths = [folder / f"settlements-{p:03d}.parquet" for p in range(files)]
    writers: list[pq.ParquetWriter | None] = [None] * files
    for start in range(0, rows, CHUNK):
        df = chunk(rng, min(CHUNK, rows - start), max(1, rows // 10))
        parts = {0: df} if files == 1 else {
            k[0]: v.drop("_p") for k, v in df.with_columns(_p=unit_partition("person_id", files)).partition_by(
                "_p", as_dict=True).items()}
        for p, part in parts.items():
            table = part.to_arrow()
            if writers[p] is None:
                writers[p] = pq.ParquetWriter(paths[p], table.schema, compression="zstd")
            writers[p].write_table(table, row_group_size=256_000)  # type: ignore[union-attr]
    for w in writers:
        if w is not None:
            w.close()
    return paths


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- phases, each run in a child process --------------------------------------------------------

def run_ours(args) -> tuple[dict, object]:
    """One end-to-end run of ours: decrypt to a temp file, bound, aggregate, add noise."""
    from authops.core.settings import Settings
    from authops.core.storage.store import get_object_store
    from authops.sandbox.dp import merge_and_release, partial_aggregate, release_aggregate

    store = get_object_store(Settings(data_dir=Path(args.data_dir)))
    keys, s = args.keys.split(","), spec()
    t0 = time.perf_counter()
    decrypt = 0.0
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if len(keys) == 1:
            path = Path(tmp) / "in.parquet"
            store.get_to_file(keys[0], path)
            decrypt = time.perf_counter() - t0
            release = release_aggregate(path, s)
        else:  # one partition at a time: memory follows the largest partition
            partials = []
            for p, key in enumerate(keys):
                path = Path(tmp) / f"p{p}.parquet"
                d = time.perf_counter()
                store.get_to_file(key, path)
                decrypt += time.perf_counter() - d
                partials.append(partial_aggregate(path, s, partition=(p, len(keys))))
                path.unlink()
            release = merge_and_release(partials, s)
    return {"total_s": time.perf_counter() - t0, "decrypt_s": decrypt}, release


SPEC_MONTHS = [str(m) for m in MONTHS]


def job_plan():
    """The same query as a declarative job over a catalogue-style schema of the bench data."""
    from authops.core.data.schema import FieldSpec, Grade, Kind, PrivacyUnit, ResourceSchema
    from authops.sandbox.spec import build_plan, load_spec

    schema = ResourceSchema(fields=[
        FieldSpec(name="person_id", name_zh="身份证号", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4, pii=True),
        FieldSpec(name="institution", name_zh="机构编码", kind=Kind.CATEGORY, grade=Grade.L2, enum=INSTITUTIONS),
        FieldSpec(name="month", name_zh="结算月份", kind=Kind.COUNT, grade=Grade.L2),
        FieldSpec(name="amount", name_zh="金额", kind=Kind.MONEY, grade=Grade.L3)],
        key=[], privacy_unit=PrivacyUnit.PERSON, unit_field="person_id")
    cases = " ".join(f"when month = {m} then '{m}'" for m in MONTHS)
    spec = load_spec({
        "spec_version": 1, "name": "bench_settlements",
        "inputs": [{"resource": "bench_settlements", "version": 1,
                    "fields": ["person_id", "institution", "month", "amount"]}],
        "steps": [{"derive": {"name": "ym", "expr": f"case {cases} else 'other' end"}}],
        "outputs": [{"name": "by_institution_month", "release": {
            "policy": "aggregate", "group_by": ["institution", "ym"],
            "measures": [{"name": "n", "fn": "count"},
                         {"name": "total", "fn": "sum", "column": "amount", "bounds": [0, UPPER]}],
            "epsilon": EPS, "min_cell": 10, "max_rows_per_unit": K}}]})
    return build_plan(spec, {"bench_settlements": {1: schema}})


def run_job(args) -> tuple[dict, object]:
    """Our sandbox job's path: decrypt, run the spec (streamed to Parquet), release through the gate."""
    from authops.core.settings import Settings
    from authops.core.storage.store import get_object_store
    from authops.sandbox import gate
    from authops.sandbox.spec import lazy_outputs

    store = get_object_store(Settings(data_dir=Path(args.data_dir)))
    key = args.keys.split(",")[0]
    plan = job_plan()
    output = plan.outputs["by_institution_month"]
    fields = {(i.resource, f): i.schema.field(f) for i in plan.inputs.values() for f in i.fields}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "in.parquet"
        store.get_to_file(key, path)
        decrypt = time.perf_counter() - t0
        lf = lazy_outputs(plan, {"bench_settlements": str(path)})["by_institution_month"]
        released = gate.release(output, lf, token_key=b"\0" * 32, fields=fields)
    return {"total_s": time.perf_counter() - t0, "decrypt_s": decrypt}, released


def phase_job_paired(args) -> dict:
    """Our job's path and the baseline alternately in one process."""
    for _ in range(args.warmup):
        run_job(args), run_baseline(args)
    pairs = []
    for i in range(args.repeat):
        if i % 2 == 0:
            (ours, released), base = run_job(args), run_baseline(args)
        else:
            base, (ours, released) = run_baseline(args), run_job(args)
        pairs.append({"ours_s": ours["total_s"], "baseline_s": base["total_s"],
                      "ratio": ours["total_s"] / base["total_s"]})
    return {"runs": [{"total_s": p["ours_s"]} for p in pairs], "pairs": pairs,
            "median_ratio": round(statistics.median(p["ratio"] for p in pairs), 2),
            "cells": released.table.num_rows, "epsilon": released.epsilon}


def run_baseline(args) -> dict:
    t0 = time.perf_counter()
    pl.scan_parquet(args.plain.split(",")).group_by(BY).agg(pl.len(), pl.col("amount").sum()).collect()
    return {"total_s": time.perf_counter() - t0}


def phase_ours(args) -> dict:
    runs = [run_ours(args) for _ in range(args.warmup + args.repeat)][args.warmup:]
    release = runs[-1][1]
    return {"runs": [r for r, _ in runs], "epsilon": release.epsilon, "scales": release.scales,  # type: ignore[attr-defined]
            "cells": release.table.num_rows, "suppressed": release.suppressed}  # type: ignore[attr-defined]


def phase_baseline(args) -> dict:
    return {"runs": [run_baseline(args) for _ in range(args.warmup + args.repeat)][args.warmup:]}


def phase_paired(args) -> dict:
    """Ours and the baseline alternately in one process, so both meet the same machine load."""
    for _ in range(args.warmup):
        run_ours(args), run_baseline(args)
    pairs = []
    for i in range(args.repeat):
        first, second = (run_ours, run_baseline) if i % 2 == 0 else (run_baseline, run_ours)
        a, b = first(args), second(args)
        a = a[0] if isinstance(a, tuple) else a
        b = b[0] if isinstance(b, tuple) else b
        ours, base = (a, b) if first is run_ours else (b, a)
        pairs.append({"ours_s": ours["total_s"], "decrypt_s": ours["decrypt_s"], "baseline_s": base["total_s"],
                      "ratio": ours["total_s"] / base["total_s"]})
    return {"runs": [{"total_s": p["ours_s"]} for p in pairs], "pairs": pairs,
            "median_ratio": round(statistics.median(p["ratio"] for p in pairs), 2)}


def _keys() -> pl.DataFrame:
    return pl.DataFrame({"institution": INSTITUTIONS}).join(
        pl.DataFrame({"month": MONTHS}, schema={"month": pl.Int32}), how="cross")


def phase_naive(args) -> dict:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    t0 = time.perf_counter()
    df = pl.read_parquet(args.plain.split(","))  # the naive user loads the frame, then hands it to OpenDP
    context = dp.Context.compositor(
        data=df.lazy(), privacy_unit=dp.unit_of(contributions=1, identifier="person_id"),
        privacy_loss=dp.loss_of(epsilon=EPS), split_evenly_over=1,
        margins=[dp.polars.Margin(by=[], max_length=2**31)])
    query = (context.query().truncate_per_group(K, keep="first").group_by(BY)
             .agg(dp.len(signed=True), pl.col("amount").fill_null(0).dp.sum((0, UPPER))).with_keys(_keys()))
    out = query.release().collect()
    return {"runs": [{"total_s": time.perf_counter() - t0}], "cells": out.height}


def phase_opendp_scan(args) -> dict:
    import opendp.prelude as dp

    from authops.sandbox.dp import ensure_features

    ensure_features()
    runs = []
    for _ in range(args.warmup + args.repeat):
        t0 = time.perf_counter()
        lf = pl.scan_parquet(args.plain.split(","))
        schema = lf.collect_schema()
        types = {pl.String: "String", pl.Int64: "i64", pl.Int32: "i32"}
        domain = dp.with_margin(dp.lazyframe_domain([dp.series_domain(c, dp.option_domain(dp.atom_domain(
            T=types[t]))) for c, t in schema.items()]), dp.polars.Margin(by=[], max_length=2**31))
        plan = (pl.LazyFrame(schema=schema).filter(pl.int_range(pl.len()).over("person_id") < K).group_by(BY)
                .agg(dp.len(scale=2 * K / EPS, signed=True),
                     pl.col("amount").fill_null(0).dp.sum((0, UPPER), scale=2 * K * UPPER / EPS)))
        plan = _keys().lazy().join(plan, on=BY, how="left", nulls_equal=True)
        m = dp.m.make_private_lazyframe(domain, dp.symmetric_id_distance(pl.col("person_id")),
                                        dp.max_divergence(), plan)
        assert m.map(1) <= EPS * (1 + 1e-9)
        out = m(lf).collect()
        runs.append({"total_s": time.perf_counter() - t0})
    return {"runs": runs[args.warmup:], "cells": out.height}


PHASES = {"ours": phase_ours, "baseline": phase_baseline, "paired": phase_paired, "naive": phase_naive,
          "opendp_scan": phase_opendp_scan, "job": phase_job_paired}


def run_phase(name: str, args, **kw) -> dict:
    cmd = [sys.executable, "-m", "bench.dp", "--phase", name, "--repeat", str(kw.pop("repeat", args.repeat)),
           "--warmup", str(kw.pop("warmup", args.warmup))]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    print(f"  running {name} ...", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else f"exit {done.returncode}"}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    times = [r["total_s"] for r in out["runs"]]
    out.update(best_s=round(min(times), 3), median_s=round(statistics.median(times), 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=0, help="partitions (default 1, or 20 from 50M rows)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first in each phase (imports, caches)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dp.json"))
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    for hidden in ("--data-dir", "--keys", "--plain", "--tmp"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args)
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        print(json.dumps(result))
        return

    files = args.files or (20 if args.rows >= 50_000_000 else 1)
    big = args.rows > 20_000_000
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        root = Path(tmp)
        need = args.rows * 20  # ~8 bytes of zstd Parquet per row, plaintext + ciphertext + a decrypted copy
        free = shutil.disk_usage(root).free
        if free < need:
            sys.exit(f"not enough free disk for {args.rows} rows: {free >> 20} MiB free, ~{need >> 20} MiB needed")
        (root / "plain").mkdir(), (root / "work").mkdir()
        print(f"generating {args.rows:,} rows in {files} file(s) ...", flush=True)
        t = time.perf_counter()
        paths = generate(root / "plain", args.rows, files)
        gen_s = time.perf_counter() - t
        from authops.core.settings import Settings
        from authops.core.storage.store import get_object_store

        store = get_object_store(Settings(data_dir=root / "store"))
        keys = []
        for i, p in enumerate(paths):
            keys.append(f"datasets/bench_settlements/v1/{i:06d}.parquet")
            store.put_file(keys[-1], p, content_type="application/vnd.apache.parquet")
        size = sum(p.stat().st_size for p in paths)
        common = dict(data_dir=root / "store", keys=",".join(keys), tmp=root / "work", plain=",".join(map(str, paths)))
        load = os.getloadavg()
        # timing: ours and the baseline alternate in one process; peak RSS: one run of each alone
        pair_kw = dict(repeat=min(2, args.repeat), warmup=0) if big else {}
        results = {"paired": run_phase("paired", args, **pair_kw, **common),
                   "ours": run_phase("ours", args, repeat=1, warmup=0, **common),
                   "baseline": run_phase("baseline", args, repeat=1, warmup=0, **common)}
        if files == 1:
            results["job"] = run_phase("job", args, **pair_kw, **common)
        if not big:
            results["opendp_scan"] = run_phase("opendp_scan", args, repeat=min(3, args.repeat), **common)
            if not args.skip_naive:
                results["naive"] = run_phase("naive", args, repeat=1, warmup=0, **common)
        paired = results["paired"]
        base = statistics.median(p["baseline_s"] for p in paired.get("pairs", [])) if "pairs" in paired else None
        ratios = {k: round(results[k]["median_s"] / base, 2) for k in ("paired", "opendp_scan", "naive")
                  if "median_s" in results.get(k, {}) and base}
        ratios["ours / baseline, median of the paired ratios"] = paired.get("median_ratio")
        if "job" in results:
            ratios["our job (spec + gate) / baseline, median of its paired ratios"] = results["job"].get("median_ratio")
    report = {
        "benchmark": "DP count + sum by institution x month (public keys), per-person bound 24 rows, epsilon 1",
        "rows": args.rows, "files": files, "parquet_mib": round(size / 2**20, 1), "generate_s": round(gen_s, 1),
        "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load],
        "baseline_median_s": base, "results": results, "ratio_to_baseline_median": ratios,
        "target": "ours within 2x of the baseline" + ("; ours peak RSS < 2048 MiB" if big else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:  # one file for every size run: the 10M timing run and the 100M memory run side by side
        doc = json.loads(args.out.read_text())
        doc = doc if isinstance(doc.get("by_rows"), dict) else {"by_rows": {}}
    except (OSError, ValueError):
        doc = {"by_rows": {}}
    doc["by_rows"][str(args.rows)] = report
    doc["latest"] = args.rows
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"baseline (plain scan_parquet + group_by), median of the paired runs: {base and round(base, 3)} s")
    for name, r in results.items():
        timing = (f"median {r.get('median_s', '-')} s  best {r.get('best_s', '-')} s  ratio {ratios.get(name, '-')}"
                  if name not in ("ours", "baseline") else "(one run alone, for its peak RSS)")
        print(f"{name:12s} {timing}  peak RSS {r.get('peak_rss_mib', '-')} MiB  {r.get('error', '')}")
    print(f"ours / baseline (median of {len(paired.get('pairs', []))} alternating pairs): {paired.get('median_ratio')}")
    if "job" in results:
        print(f"our job (decrypt + spec + gate) / baseline (median of its alternating pairs): "
              f"{results['job'].get('median_ratio')}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
