"""Sandbox jobs: 20 independent jobs on two workers beside the same 20 on one worker (target >= 1.8x).

Setup (not timed): a temporary data folder; a migrated database, a SQLite file or (--db postgresql,
the default when 127.0.0.1:5432 answers) a temporary PostgreSQL database dropped at the end; the
built-in catalogue; synthetic enterprise_basic_info + enterprise_tax at --scale, stored encrypted;
a partner's workspace and privacy budget; the embedded broker (valkey in the data folder).

Jobs, all the same size, submitted through `jobs.submit_job` like the API does:
  --kind code (default): partner code in the jail (bubblewrap; needs root): decrypt and project the
      input, start the jail, run() fits a one-feature logistic model by --iterations of gradient
      descent over every enterprise and returns bounded scores; release gate, store, commit.
  --kind spec: the tax_arrears_by_industry aggregate spec (polars, streaming) with its ε 1
      release through OpenDP; the budget is set high enough for every job.
Workers: real `celery worker` processes, prefork with --concurrency=1 each, started and pinged
before timing. Every job is single-threaded: the workers run with POLARS_MAX_THREADS=1,
OMP_NUM_THREADS=1 (Arrow's thread pool follows it) and RAYON/BLAS threads 1, and the jail already
runs partner code with one thread. So the comparison measures scale-out over worker processes
(one core each), not threads inside one job.
Baseline, same run: the partner's computation alone (same code, same number of rows, synthetic
values) --jobs times on one, then two plain single-threaded processes: what this machine's two
cores give two CPU-bound processes (on a VM often less than 2x), i.e. the ceiling for the ratio.
Each of --rounds rounds: baseline 1 and 2 processes, then (1) one worker, (2) two workers. Each
phase starts its workers, runs --warmup untimed jobs (imports, page cache), then dispatches --jobs
jobs at once; its wall time runs from the dispatch to the last job's finish (the job table's
finished_at). The ratio reported is the median over rounds; the machine's CPU use during each
phase (all processes, from /proc/stat) is shown, since other load on the machine moves the figures.
Writes bench/results/sandbox_workers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.pg import scratch_database

REPO = Path(__file__).resolve().parents[1]
SINGLE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
RESOURCES = ("enterprise_basic_info", "enterprise_tax")
GRANTS = [{"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "vat_amount", "has_violation_record"]},
          {"resource": "enterprise_basic_info", "fields": ["uscc", "enterprise_name", "registered_capital"]}]
MANIFEST = {"name": "capital_logit",
            "inputs": [{"alias": "basic", "resource": "enterprise_basic_info", "version": 1,
                        "fields": ["uscc", "registered_capital"]}],
            "outputs": [{"name": "scores", "release": {"policy": "model", "key": "uscc", "score": "score",
                                                       "bounds": [0, 1]}}]}
CODE = """
import numpy as np
import pandas as pd

def run(inputs, params):
    df = inputs["basic"]
    x = np.log1p(df["registered_capital"].fillna(0).astype("float64").to_numpy())
    x = (x - x.mean()) / (x.std() or 1.0)
    y = (x > 0).astype("float64")
    w = b = 0.0
    for _ in range(params["iterations"]):  # gradient descent, one feature
        p = 1.0 / (1.0 + np.exp(-(w * x + b)))
        w -= 0.1 * float(np.mean((p - y) * x))
        b -= 0.1 * float(np.mean(p - y))
    return {"scores": pd.DataFrame({"uscc": df["uscc"], "score": 1.0 / (1.0 + np.exp(-(w * x + b)))})}
"""


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    """A migrated, empty database URL; a temporary PostgreSQL database is dropped afterwards."""
    from authops.core import db as core_db
    from authops.core.settings import Settings

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'authops.sqlite3'}"
        core_db.upgrade(Settings(data_dir=folder, database_url=url))
        try:
            yield url
        finally:
            core_db.dispose_engines()
        return
    with scratch_database(folder) as url:
        yield url


# --- workers ---------------------------------------------------------------------------------------

def _start_worker(name: str, folder: Path, broker_url: str, timeout: float = 90.0) -> subprocess.Popen[bytes]:
    from celery import Celery

    env = {**os.environ, **SINGLE_THREAD,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = folder / f"worker-{name}.log"
    cmd = [sys.executable, "-m", "celery", "-A", "authops.worker:celery_app", "worker", "--loglevel=WARNING",
           "--concurrency=1", "--pool=prefork", "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log  # type: ignore[attr-defined]
    app = Celery("bench-ping", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = 2.0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}; see {log}")
            with contextlib.suppress(Exception):
                if any(k.startswith(f"{name}@") for r in app.control.ping(timeout=1.0) for k in r):
                    return proc
            time.sleep(0.2)
    finally:
        app.close()
    _stop_worker(proc)
    raise RuntimeError(f"worker {name} not ready after {timeout:.0f} s; see {log}")


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): pool leftovers
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _cpu_seconds() -> float:
    """CPU time spent by the whole machine so far (all cores, everything but idle and iowait), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


# --- jobs ------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, settings: Any) -> None:
        self.args, self.settings = args, settings

    def setup(self) -> None:
        from sqlmodel import Session

        from authops.audit import log as audit_log
        from authops.core import db as core_db
        from authops.core.identity import OrgKind
        from authops.platform.catalog import csvload, flows, service
        from authops.platform.identity import service as identity_service
        from authops.platform.sandbox import workspace
        from authops.policies import budget

        self.actor = audit_log.Actor(kind="system", name="bench")
        with Session(core_db.get_engine(self.settings), expire_on_commit=False) as session:
            service.load_catalog(session, csvload.BUILTIN, actor=self.actor)
            session.commit()
        flows.load_synthetic(self.settings, scale=self.args.scale, seed=5, only=set(RESOURCES))
        with Session(core_db.get_engine(self.settings), expire_on_commit=False) as session:
            org = identity_service.create_org(session, kind=OrgKind.PARTNER, code="bench-partner",
                                              name_zh="基准测试伙伴", name_en="Bench partner")
            self.ws = workspace.create_workspace(session, org_id=org.id, name="bench lab", grants=GRANTS,
                                                 actor=self.actor)
            for code in RESOURCES:  # room for every spec job of both phases (ε 1 each)
                budget.set_budget(session, org_id=org.id, resource_code=code, epsilon=budget.MAX_EPSILON,
                                  actor=self.actor)
            session.commit()
            from authops.platform.catalog.models import Dataset

            basic = service.get_resource(session, "enterprise_basic_info")
            self.enterprises = session.get(Dataset, basic.dataset_id).rows

    def submit(self, count: int) -> list[int]:
        from sqlmodel import Session

        from authops.core import db as core_db
        from authops.platform.sandbox import jobs
        from authops.sandbox.spec import EXAMPLES
        from authops.sandbox.spec.models import parse_text

        ids = []
        with Session(core_db.get_engine(self.settings), expire_on_commit=False) as session:
            for _ in range(count):
                if self.args.kind == "code":
                    _, job = jobs.submit_job(session, ws=self.ws, kind="code", spec=MANIFEST, code=CODE,
                                             params={"iterations": self.args.iterations}, actor=self.actor)
                else:
                    spec = parse_text((EXAMPLES / "tax_arrears_by_industry.yaml").read_text(encoding="utf-8"))
                    _, job = jobs.submit_job(session, ws=self.ws, kind="spec", spec=spec, actor=self.actor)
                session.commit()
                ids.append(job.id)
        return ids

    def run(self, ids: list[int], workers: list[subprocess.Popen[bytes]], timeout: float) -> dict[str, Any]:
        """Dispatch `ids` at once and wait for all; the figures come from the job table."""
        from sqlmodel import select

        from authops.core import db as core_db
        from authops.core.clock import utcnow
        from authops.core.jobs import service as job_service
        from authops.core.jobs.models import TERMINAL_STATES, Job, JobAttempt, JobState

        dispatched, cpu_before = utcnow(), _cpu_seconds()
        job_service.dispatch_pending(self.settings, job_ids=ids)
        deadline = time.monotonic() + timeout
        while True:
            with core_db.session_scope(self.settings) as s:
                rows = s.exec(select(Job).where(Job.id.in_(ids))).all()
            if len(rows) == len(ids) and all(JobState(j.state) in TERMINAL_STATES for j in rows):
                break
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"jobs not done after {timeout:.0f} s: {Counter(j.state for j in rows)}; "
                                   f"see {', '.join(str(w.log_path) for w in workers)}")  # type: ignore[attr-defined]
            time.sleep(0.5)  # the figures come from finished_at; polling less leaves the cores to the workers
        cpu = _cpu_seconds() - cpu_before
        states = Counter(JobState(j.state).value for j in rows)
        if states != {"succeeded": len(ids)}:
            errors = Counter(j.error_message for j in rows if j.state != JobState.SUCCEEDED.value)
            raise RuntimeError(f"not every job succeeded: {dict(states)}; errors: {dict(errors)}")
        last: datetime = max(j.finished_at for j in rows)  # type: ignore[type-var,assignment]
        wall = (last - dispatched).total_seconds()
        busy = sum((j.finished_at - j.started_at).total_seconds() for j in rows)  # type: ignore[operator]
        with core_db.session_scope(self.settings) as s:  # who ran each job
            owners = s.exec(select(JobAttempt.worker).where(JobAttempt.job_id.in_(ids),
                                                            JobAttempt.outcome == "succeeded")).all()
        per_worker = Counter(w.split("@")[0] for w in owners)
        return {"jobs": len(ids), "wall_s": round(wall, 2), "jobs_per_min": round(60 * len(ids) / wall, 1),
                "mean_job_s": round(busy / len(ids), 2), "busy_over_wall": round(busy / wall, 2),
                "machine_cpu_s_per_job": round(cpu / len(ids), 2), "cores_busy": round(cpu / wall, 2),
                "jobs_per_worker": dict(sorted(per_worker.items()))}

    def phase(self, n_workers: int, folder: Path, broker_url: str) -> dict[str, Any]:
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(n_workers):
                workers.append(_start_worker(f"bench-{n_workers}w-{i + 1}", folder, broker_url))
            if self.args.warmup:
                self.run(self.submit(max(self.args.warmup, n_workers)), workers, self.args.timeout)
            ids = self.submit(self.args.jobs)
            load_before = os.getloadavg()[0]
            result = self.run(ids, workers, self.args.timeout)
            result["loadavg_1min_before"] = round(load_before, 2)
            return result
        finally:
            for w in workers:
                _stop_worker(w)


# --- the machine's own ceiling ----------------------------------------------------------------------

def _baseline_job(n: int, iterations: int) -> float:
    """The partner's run() on n synthetic enterprises, in a plain process: no database, no jail."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(n)
    frame = pd.DataFrame({"uscc": [f"91320500MA{i:08d}" for i in range(n)],
                          "registered_capital": rng.lognormal(14, 2, n).round()})
    namespace: dict[str, Any] = {}
    exec(compile(CODE, "partner.py", "exec"), namespace)  # noqa: S102 - our own fixed code
    out = namespace["run"]({"basic": frame}, {"iterations": iterations})["scores"]
    return float(out["score"].mean())


def _warm(_: int) -> None:
    import numpy  # noqa: F401
    import pandas  # noqa: F401


def baseline(processes: int, jobs: int, n: int, iterations: int) -> dict[str, Any]:
    """The same computation as many times, on `processes` plain single-threaded processes."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, with SINGLE_THREAD in their environment
    with ctx.Pool(processes) as pool:
        pool.map(_warm, range(processes), chunksize=1)
        started = time.perf_counter()
        pool.starmap(_baseline_job, [(n, iterations)] * jobs, chunksize=1)
        wall = time.perf_counter() - started
    return {"jobs": jobs, "wall_s": round(wall, 2), "jobs_per_min": round(60 * jobs / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--kind", choices=["code", "spec"], default="code")
    parser.add_argument("--db", choices=["auto", "sqlite", "postgresql"], default="auto")
    parser.add_argument("--scale", type=float, default=0.05,
                        help="synthetic data scale (0.05: 5,000 enterprises, 60,000 tax rows)")
    parser.add_argument("--iterations", type=int, default=15000, help="gradient-descent steps per code job")
    parser.add_argument("--warmup", type=int, default=2, help="untimed jobs per phase (at least one per worker)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the ratio is their median")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sandbox_workers.json")
    args = parser.parse_args()
    db = args.db if args.db != "auto" else ("postgresql" if _port_open("127.0.0.1", 5432) else "sqlite")
    if args.kind == "code" and (shutil.which("bwrap") is None or os.geteuid() != 0):
        sys.exit("--kind code runs partner code in the jail: it needs bubblewrap and root; try --kind spec")

    folder = Path(tempfile.mkdtemp(prefix="bench-sandbox-workers-"))
    saved = {k: os.environ.get(k) for k in ("AUTHOPS_DATA_DIR", "AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL")}
    try:
        with _database(db, folder) as url:
            os.environ.update({"AUTHOPS_DATA_DIR": str(folder), "AUTHOPS_DATABASE_URL": url, "AUTHOPS_BROKER_URL": ""})
            from authops.core.broker import EmbeddedBroker
            from authops.core.settings import Settings, reset_settings

            reset_settings()
            settings = Settings()
            bench = Bench(args, settings)
            t = time.perf_counter()
            bench.setup()
            print(f"setup: {db}, synthetic scale {args.scale}, {time.perf_counter() - t:.1f} s; "
                  f"{os.cpu_count()} cores; {args.jobs} {args.kind} jobs"
                  + (f" of {args.iterations} gradient-descent steps" if args.kind == "code" else ""))
            print("each job single-threaded (workers: " + ", ".join(f"{k}={v}" for k, v in SINGLE_THREAD.items())
                  + ("; partner code: one thread in the jail" if args.kind == "code" else "")
                  + "); workers: prefork --concurrency=1 each")
            os.environ.update(SINGLE_THREAD)  # for the baseline's processes (the workers get it too)
            # code: exactly the partner's work; spec: the same loop, sized near one spec job's time
            size = ((bench.enterprises, args.iterations) if args.kind == "code"
                    else (min(bench.enterprises, 5000), max(1, args.iterations // 8)))
            print(f"{args.rounds} round(s), each: (a) the partner computation alone ({size[1]} steps over "
                  f"{size[0]} enterprises) x{args.jobs} on 1 then 2 plain processes, no authops: what "
                  f"this machine gives two CPU-bound processes; (b) {args.jobs} sandbox {args.kind} jobs through "
                  f"submit_job, the broker and real workers, on 1 then 2 workers")
            rounds = []
            with EmbeddedBroker(settings) as broker:
                for r in range(1, args.rounds + 1):
                    plain = [baseline(k, args.jobs, *size) for k in (1, 2)]
                    one = bench.phase(1, folder, broker.url)
                    two = bench.phase(2, folder, broker.url)
                    got = {"baseline_one_process": plain[0], "baseline_two_processes": plain[1],
                           "baseline_ratio": round(plain[1]["jobs_per_min"] / plain[0]["jobs_per_min"], 2),
                           "one_worker": one, "two_workers": two,
                           "ratio": round(two["jobs_per_min"] / one["jobs_per_min"], 2)}
                    rounds.append(got)
                    print(f"round {r}:")
                    print(f"  plain 1 process  : {plain[0]['wall_s']:7.2f} s  {plain[0]['jobs_per_min']:6.1f} jobs/min")
                    print(f"  plain 2 processes: {plain[1]['wall_s']:7.2f} s  {plain[1]['jobs_per_min']:6.1f} jobs/min"
                          f"  -> {got['baseline_ratio']:.2f}x")
                    for label, ph in (("authops 1 worker ", one), ("authops 2 workers", two)):
                        print(f"  {label}: {ph['wall_s']:7.2f} s  {ph['jobs_per_min']:6.1f} jobs/min  (mean job "
                              f"{ph['mean_job_s']} s; machine CPU {ph['machine_cpu_s_per_job']} s/job, "
                              f"{ph['cores_busy']} cores busy; load {ph['loadavg_1min_before']} before; "
                              f"jobs per worker {ph['jobs_per_worker']})")
                    print(f"  {'':17}  -> {got['ratio']:.2f}x")
            ratio = statistics.median(g["ratio"] for g in rounds)
            ceiling = statistics.median(g["baseline_ratio"] for g in rounds)
            print(f"throughput, 2 workers / 1 worker: {ratio:.2f}x (median of {len(rounds)}: "
                  f"{', '.join(str(g['ratio']) for g in rounds)}); "
                  f"target >= 1.8x: {'met' if ratio >= 1.8 else 'NOT met'}")
            print(f"this machine's ceiling, plain processes: {ceiling:.2f}x (median of "
                  f"{', '.join(str(g['baseline_ratio']) for g in rounds)})")
            result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.platform(),
                      "cores": os.cpu_count(), "db": db, "kind": args.kind, "scale": args.scale, "jobs": args.jobs,
                      "iterations": args.iterations if args.kind == "code" else None,
                      "enterprises": bench.enterprises, "ratio_median": ratio, "baseline_ratio_median": ceiling,
                      "rounds": rounds}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"wrote {args.out}")
    finally:
        with contextlib.suppress(Exception):
            from authops.core.broker import stop_broker
            from authops.core.settings import Settings

            stop_broker(Settings(data_dir=folder))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
