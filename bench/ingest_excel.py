"""Reading a filled Excel template: N household-population rows (default 1,000,000).

The file is written with xlsxwriter in constant-memory mode as a department would send it:
the template's two header rows, text cells for ID numbers and categories, real date cells
(numbers with a date format) for birth dates. Values are synthetic but well-formed (resident
IDs with valid GB 11643 check digits, distinct; categories from the resource's enumerations).

Ours: `excel.read_upload` (expat over the streamed sheet XML into string columns), then, when
`catalog.validate` is importable, `validate` on its batch. Baseline, same run, same file:
`pandas.read_excel(path, dtype=str)` (openpyxl). Each contender runs in its own forked process,
so its peak memory is its own; wall and CPU seconds are both kept (the CPU figure is steadier
when other work shares the machine). Also timed: `read_csv_upload` on the same rows saved as CSV.
Writes bench/results/ingest_excel.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import xlsxwriter

from authops.platform.catalog import excel
from authops.platform.catalog.csvload import load_definitions

CATALOG = Path("/work/shared/catalog")
ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
REGIONS = ["110105", "320505", "320583", "440305", "510107", "330106"]


def _resident_id(region: str, born: date, seq: int) -> str:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]


def write_file(path: Path, schema, n: int, seed: int = 7) -> None:
    """An n-row filled template for `schema` (household_population's fields)."""
    rng = random.Random(seed)
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet(excel.DATA_SHEET)
    text, day = wb.add_format({"num_format": "@"}), wb.add_format({"num_format": "yyyy-mm-dd"})
    ws.write_row(0, 0, [f.name_zh for f in schema.fields])
    ws.write_row(1, 0, schema.names)
    epoch = date(1899, 12, 30).toordinal()
    first_day = date(1940, 1, 1).toordinal()
    for i in range(n):
        born = date.fromordinal(first_day + (i // 1000) % 25_000)
        seq = (i % 1000) // 2 * 2 + (i % 2)  # odd for men
        region = REGIONS[(i // 25_000_000) % len(REGIONS)]
        r = i + 2
        for c, f in enumerate(schema.fields):
            if f.name == "id_number":
                ws.write_string(r, c, _resident_id(region, born, seq), text)
            elif f.name == "sex":
                ws.write_string(r, c, "男" if seq % 2 else "女")
            elif f.kind.value == "date":
                ws.write_number(r, c, born.toordinal() - epoch, day)
            elif f.enum:
                ws.write_string(r, c, f.enum[rng.randrange(len(f.enum))])
            else:
                ws.write_string(r, c, f"值{rng.randrange(1000)}")
    wb.close()


def _in_child(fn: Callable[[], int]) -> dict:
    """Run fn in a forked process; return its row count, seconds and peak memory."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def run() -> None:
        t, cpu = time.perf_counter(), time.process_time()
        try:
            rows = fn()
            child.send({"rows": rows, "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            child.send({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})

    p = ctx.Process(target=run)
    p.start()
    out = parent.recv() if parent.poll(timeout=7200) else {"error": "no answer in two hours"}
    p.join()
    if "seconds" in out:
        out["rows_per_s"] = round(out["rows"] / out["seconds"])
        out["rows_per_cpu_s"] = round(out["rows"] / out["cpu_s"])  # steadier than wall time on a busy machine
        out["seconds"], out["cpu_s"] = round(out["seconds"], 2), round(out["cpu_s"], 2)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resource", default="household_population")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run pandas.read_excel")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest_excel.json"))
    args = parser.parse_args()
    d = {d.code: d for d in load_definitions(CATALOG)}[args.resource]
    schema, n = d.schema, args.rows
    try:
        from authops.platform.catalog.validate import validate
    except ImportError:
        validate = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{d.code}.xlsx"
        t = time.perf_counter()
        write_file(path, schema, n)
        made_s = time.perf_counter() - t
        size = path.stat().st_size
        print(f"wrote {n:,} rows, {len(schema.fields)} columns, {size / 2**20:.1f} MB in {made_s:.1f} s", flush=True)
        csv_path = Path(tmp) / f"{d.code}.csv"

        def ours() -> int:
            return excel.read_upload(path.read_bytes(), schema).table.num_rows

        def make_csv() -> int:  # the CSV contender's input (not a contender)
            import pyarrow.csv as pacsv

            batch = excel.read_upload(path.read_bytes(), schema)
            pacsv.write_csv(batch.table, csv_path)
            return batch.table.num_rows

        def ours_validated() -> int:
            batch = excel.read_upload(path.read_bytes(), schema)
            return validate(schema, batch.table, first_row=batch.first_row).num_rows

        def ours_csv() -> int:
            return excel.read_csv_upload(csv_path.read_bytes(), schema).table.num_rows

        def baseline() -> int:
            import pandas as pd

            return len(pd.read_excel(path, dtype=str, header=None, skiprows=2))

        gc.collect()  # the writer's garbage stays in the parent, not in each forked contender
        gc.freeze()
        results: dict[str, object] = {}
        results["ours: read_upload (expat stream -> string columns)"] = mine = _in_child(ours)
        if validate is not None:
            results["ours: read_upload + validate (typed Arrow table)"] = _in_child(ours_validated)
        else:
            results["ours: read_upload + validate"] = "skipped: authops.platform.catalog.validate not importable"
        _in_child(make_csv)
        if csv_path.exists():
            results["ours: read_csv_upload, same rows as UTF-8 CSV"] = {
                **_in_child(ours_csv), "csv_mb": round(csv_path.stat().st_size / 2**20, 1)}
        base = {"skipped": "--skip-baseline"} if args.skip_baseline else _in_child(baseline)
        results["baseline: pandas.read_excel(dtype=str), openpyxl"] = base
    ours_rate, base_rate = mine.get("rows_per_cpu_s", 0), base.get("rows_per_cpu_s", 0)
    result = {
        "benchmark": "reading a filled Excel template (.xlsx upload)",
        "resource": d.code, "rows": n, "columns": len(schema.fields), "xlsx_mb": round(size / 2**20, 1),
        "write_s": round(made_s, 1), "cpus": os.cpu_count(), **results,
        "speedup_vs_pandas_cpu": round(ours_rate / base_rate, 2) if base_rate else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
