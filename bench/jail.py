"""Start-up overhead of the partner-code jail, per job, beside running the same function in-process.

Ours: `authops.sandbox.jail.run_partner_code` on a trivial job (group-by over a 1,000-row
input): bubblewrap + prlimit + setpriv + seccomp, a fresh Python that imports pandas/pyarrow,
reads the input Parquet, calls run(), writes the output Parquet, and the worker checks it.
Baseline, same run, same data: the same function in this process (read Parquet, call run(),
write Parquet). Also shown: a plain `python -I -S` subprocess that only imports pandas and
pyarrow, the floor for any design that runs partner code in a separate process.
Writes bench/results/jail.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from authops.platform.sandbox.jobs import jail_slot
from authops.sandbox.jail import JailConfig, JailStatus, run_partner_code

CODE = """
def run(inputs, params):
    df = inputs["sales"]
    return df.groupby("city", as_index=False)["amount"].sum()
"""


def _interleaved(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Round-robin, so load from other processes on the machine hits every variant alike."""
    for fn in fns.values():
        fn()  # warm caches (page cache, imports) once; not counted
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "min_ms": round(ordered[0] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/jail.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-jail-"))
    try:
        source = work / "sales.parquet"
        pd.DataFrame({"city": [f"c{i % 17}" for i in range(1000)],
                      "amount": range(1000)}).to_parquet(source)
        source.chmod(0o644)
        namespace: dict[str, object] = {}
        exec(compile(CODE, "partner.py", "exec"), namespace)  # noqa: S102 - our own fixed code

        def in_process() -> None:
            result = namespace["run"]({"sales": pd.read_parquet(source)}, {})
            result.to_parquet(work / "in-process.parquet", index=False)

        def jailed() -> None:
            out = work / "jail-out"
            with jail_slot() as slot:  # as the worker does: a slot no job on this host holds (slot 0 was
                # taken blindly, and a worker starting a job in it killed the bench's process)
                result = run_partner_code(CODE, {"sales": source}, {}, config=JailConfig(), slot=slot,
                                          output_dir=out)
            assert result.status is JailStatus.OK, result
            shutil.rmtree(out)

        site = sysconfig.get_paths()["purelib"]
        plain_cmd = [sys.executable, "-I", "-S", "-c",
                     f"import sys; sys.path.append({site!r}); import pandas, pyarrow.parquet"]

        def plain_python() -> None:
            subprocess.run(plain_cmd, check=True, env={"PATH": "/usr/bin:/bin"})

        times = _interleaved({"base": in_process, "plain": plain_python, "ours": jailed}, args.runs)
        base, plain, ours = (_summary(times[k]) for k in ("base", "plain", "ours"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "partner-code jail start-up overhead per job",
        "runs": args.runs,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "baseline: same function in-process (read Parquet, run, write Parquet)": base,
        "reference: plain subprocess importing pandas + pyarrow, no jail": plain,
        "ours: run_partner_code, trivial job": ours,
        "overhead p50 vs in-process (ms)": round(ours["p50_ms"] - base["p50_ms"], 1),
        "overhead p50 vs plain subprocess (ms)": round(ours["p50_ms"] - plain["p50_ms"], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
