"""Pulling a department's table: N medical-insurance settlement rows from PostgreSQL (default 10,000,000).

Ours: `pull_table` (COPY (SELECT ...) TO STDOUT as CSV, parsed by pyarrow into typed Arrow
chunks: ints, dates, UTC timestamps, money as exact text). Baseline, same run, same table:
`pandas.read_sql` over SQLAlchemy + psycopg, with `chunksize` over all N rows, and whole
(no chunksize) on at most --whole-max-rows rows: it holds every value as a Python object
first, ~1.7 GB per million rows here, so 10 million would need ~17 GB. Reference: the COPY
bytes alone, nothing parsed. Each contender runs in its own forked process, so its peak
memory is its own. The table is created with `INSERT ... SELECT generate_series` and
dropped at the end. Writes bench/results/ingest_db.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from authops.platform.catalog.sources import TableSource, pull_table

COLUMNS = ["settlement_id", "insured_id_number", "insured_name", "hospital_code", "admission_date",
           "discharge_date", "settled_at", "total_amount", "fund_paid", "self_paid", "diagnosis_code",
           "stay_days", "updated_at"]
DDL = """CREATE UNLOGGED TABLE {t} (
  settlement_id bigint, insured_id_number varchar(18), insured_name varchar(20), hospital_code varchar(12),
  admission_date date, discharge_date date, settled_at timestamp, total_amount numeric(14,2),
  fund_paid numeric(14,2), self_paid numeric(14,2), diagnosis_code varchar(10), stay_days int,
  updated_at timestamptz)"""
FILL = """INSERT INTO {t} SELECT g,
  '3205' || lpad((g % 100000000)::text, 10, '0') || lpad((g % 9973)::text, 4, '0'),
  '参保人' || (g % 100000), 'H' || lpad((g % 3000)::text, 6, '0'),
  date '2020-01-01' + (g % 1800)::int, date '2020-01-01' + (g % 1800)::int + (g % 15)::int,
  timestamp '2020-01-01' + (g % 150000000) * interval '1 second',
  round(((g * 7919) % 5000000)::numeric / 100, 2), round(((g * 7919) % 5000000)::numeric * 0.007, 2),
  round(((g * 7919) % 5000000)::numeric * 0.003, 2), 'J' || lpad((g % 999)::text, 3, '0'), (g % 30)::int,
  timestamptz '2024-01-01 00:00+08' + (g % 1000000) * interval '1 minute'
  FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g"""
BYTES_PER_ROW_PANDAS = 1800  # measured peak of pandas.read_sql on this table: ~1.7 GB per million rows


def _in_child(fn: Callable[[], int]) -> dict:
    """Run fn in a forked process; return its row count, seconds and peak memory."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def run() -> None:
        t = time.perf_counter()
        try:
            rows = fn()
            child.send({"rows": rows, "seconds": time.perf_counter() - t,
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            child.send({"error": f"{type(exc).__name__}: {exc}"})

    p = ctx.Process(target=run)
    p.start()
    out = parent.recv() if parent.poll(timeout=3600) else {"error": "no answer in an hour"}
    p.join()
    if "seconds" in out:
        out["rows_per_s"] = round(out["rows"] / out["seconds"])
        out["seconds"] = round(out["seconds"], 2)
    print(json.dumps(out), flush=True)
    return out


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--url", default=os.environ.get("AUTHOPS_BENCH_POSTGRES",
                                                         "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--whole-max-rows", type=int, default=2_000_000,
                        help="read_sql without chunksize on at most this many rows (it needs ~1.7 GB per million)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest_db.json"))
    args = parser.parse_args()
    n, name = args.rows, f"bench_settlement_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://"))
    select = f"SELECT {', '.join(COLUMNS)} FROM {name}"
    try:
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text(DDL.format(t=name)))
            for lo in range(1, n + 1, 1_000_000):
                conn.execute(sa.text(FILL.format(t=name)), {"lo": lo, "hi": min(n, lo + 999_999)})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {name}"))  # hint bits set once, not by the first reader
            size = conn.execute(sa.text(f"SELECT pg_total_relation_size('{name}')")).scalar()
        print(f"created {n:,} rows ({size / 2**20:.0f} MB) in {time.perf_counter() - t:.1f} s", flush=True)
        engine.dispose()

        def ours() -> int:
            return sum(c.num_rows for c in pull_table(TableSource(args.url, name), COLUMNS,
                                                      chunk_rows=args.chunk_rows))

        def copy_only() -> int:
            import psycopg

            with psycopg.connect(args.url) as conn, conn.cursor() as cur:
                with cur.copy(f"COPY ({select}) TO STDOUT (FORMAT csv)") as copy:
                    return sum(1 for _ in copy)

        whole_rows = min(n, args.whole_max_rows, int(0.5 * _available_bytes() / BYTES_PER_ROW_PANDAS))

        def pandas_whole() -> int:
            import pandas as pd

            eng = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://"))
            limit = "" if whole_rows == n else f" LIMIT {whole_rows}"
            return len(pd.read_sql(select + limit, eng))

        def pandas_chunked() -> int:
            import pandas as pd

            eng = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://"))
            with eng.connect() as conn:
                return sum(len(df) for df in pd.read_sql(select, conn, chunksize=args.chunk_rows))

        results = {}
        for label, fn in [("ours: pull_table (COPY CSV -> pyarrow)", ours),
                          ("reference: COPY rows read, nothing parsed", copy_only),
                          ("baseline: pandas.read_sql, chunksize", pandas_chunked),
                          ("baseline: pandas.read_sql, whole" +
                           ("" if whole_rows == n else f" (first {whole_rows:,} rows, to bound its memory)"),
                           pandas_whole)]:
            print(f"{label} ...", flush=True)
            results[label] = _in_child(fn)
        ours_rate = results["ours: pull_table (COPY CSV -> pyarrow)"].get("rows_per_s", 0)
        base_rate = results["baseline: pandas.read_sql, chunksize"].get("rows_per_s", 0)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()
    result = {
        "benchmark": "full pull of a department's database table (PostgreSQL)",
        "rows": n, "columns": len(COLUMNS), "table_mb": round(size / 2**20), "cpus": os.cpu_count(),
        "chunk_rows": args.chunk_rows, **results,
        "speedup_vs_pandas_chunked": round(ours_rate / base_rate, 2) if base_rate else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
