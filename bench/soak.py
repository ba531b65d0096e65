"""Soak: a steady mixed load for --minutes on one machine, with the servers' resources sampled.

Setup (not timed): a temporary data folder and a scratch PostgreSQL database (bench/pg.py, dropped
at the end); the built-in catalogue and synthetic truck_violations, enterprise_basic_info and
enterprise_tax (--scale); a registered, consent-checked truck score product with an agreement and
signed consents (as bench/product_call.py); a partner's sandbox workspace over the enterprise
resources with a privacy budget for every job of the run; a department data officer, a partner
engineer and a customer user. The anomaly rules stay enabled and evaluated but alert instead of
blocking (a load test is agreed with the bureau, as in bench/product_call.py).

Servers, each its own process tree: the embedded broker (valkey, append-only, as `authops serve`
runs it), --celery-workers real `celery worker` processes (prefork, --concurrency each; each main
process also runs the maintenance loop: leases, re-dispatch, audit checkpoints) and `uvicorn
authops.app:create_app` with --api-workers worker processes.

Load, open loop (each operation starts at its scheduled time whether or not earlier ones were
answered; latency counts from the scheduled time, so a stall shows as latency, not as a pause):
  - product calls: --rate per second, API key, a consented VIN, a fresh Idempotency-Key (200);
  - console: --console-rate page views per second with the session cookie of a logged-in partner
    engineer or data officer (home, jobs, a job's progress cell, a resource page, disclosure) (200);
  - sandbox jobs: one every --job-every seconds through the API, alternately partner code in the
    jail (model release) and the tax_arrears_by_industry DP aggregate spec; polled until done;
  - ingestion: a CSV upload of --upload-rows rows of enterprise_credit_rating every --upload-every
    seconds by the department's data officer; polled until its job and its load have succeeded.
People log in again every 20 minutes (tokens and sessions last 30).
An error is any unexpected status, transport error, job or load that did not succeed, or an
operation the generator had to drop because --max-inflight were already waiting.

Every --sample-every seconds: RSS, open file descriptors, threads and CPU seconds of each server
process tree (its main process and its direct children: uvicorn's workers, celery's pool; the jail's
short-lived processes below the pool are not counted), the scratch database's connections
(pg_stat_activity) and size, the data folder's size, operation counts and the window's latency.

Verdict over the second half of the run (the first half includes warm-up): the least-squares slope
of each series, as growth per hour, must stay within its bound (BOUNDS below, stated in the JSON),
and errors must be 0. The database and data folder grow by design (append-only audit log, a new
dataset version per upload): shown, not judged. Writes bench/results/soak.json after every sample
(so a cut-off run still leaves its figures) and bench/results/soak.svg at the end.

    python -m bench.soak --minutes 60 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.pg import POSTGRES_ADMIN, scratch_database
from bench.product_call import sign_usage, truck_product

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Soak-password-42"
PURPOSE = "货车保险承保定价"
PRODUCT = "truck_risk_score"
UPLOAD_RESOURCE = "enterprise_credit_rating"
JOB_RESOURCES = ("enterprise_basic_info", "enterprise_tax")
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
    for _ in range(params["iterations"]):
        p = 1.0 / (1.0 + np.exp(-(w * x + b)))
        w -= 0.1 * float(np.mean((p - y) * x))
        b -= 0.1 * float(np.mean(p - y))
    return {"scores": pd.DataFrame({"uscc": df["uscc"], "score": 1.0 / (1.0 + np.exp(-(w * x + b)))})}
"""
RELOGIN_SECONDS = 20 * 60
# Judged series and their bounds: growth per hour (slope of a least-squares line over the second half,
# times 3600) at most max(relative x the series' median there, absolute).
BOUNDS = {
    "rss_mib": {"relative": 0.05, "absolute": 16.0, "unit": "MiB", "judged": True},
    "fds": {"relative": 0.05, "absolute": 4.0, "unit": "fds", "judged": True},
    "threads": {"relative": 0.05, "absolute": 4.0, "unit": "threads", "judged": True},
    "pg_connections": {"relative": 0.0, "absolute": 2.0, "unit": "connections", "judged": True},
    "p50_ms": {"relative": 0.25, "absolute": 5.0, "unit": "ms", "judged": False},
}


# --- setup (in this process, before the servers start) ----------------------------------------------

def _consents(s, settings, product, customer_org_id: int, actor, subjects: list[str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from authops.core.clock import utcnow
    from authops.platform.governance import consent

    now = utcnow().replace(microsecond=0)
    for vin in subjects:
        terms = dict(subject_id=vin, subject_kind="person", purpose=PURPOSE, scope=["risk_score"],
                     valid_from=now - timedelta(minutes=1), valid_until=now + timedelta(days=180))
        sk = Ed25519PrivateKey.generate()
        pk = base64.b64encode(sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        cert = consent.issue_subject_certificate(consent.demo_issuer_key(settings), subject_id=vin,
                                                 subject_kind="person", public_key=sk.public_key(),
                                                 valid_until=now + timedelta(days=365))
        t = consent.prepare_text(s, settings, product=product, customer_org_id=customer_org_id,
                                 subject_certificate=cert, **terms)
        consent.grant(s, settings, product=product, customer_org_id=customer_org_id, actor=actor, public_key=pk,
                      subject_certificate=cert, signature=base64.b64encode(sk.sign(t["text"].encode())).decode(),
                      **terms)


def _upload_csv(settings, rows: int) -> bytes:
    """enterprise_credit_rating rows as the department's system exports them (CSV, template header)."""
    import io

    import pyarrow.csv as pacsv

    from authops.demo.catalog_story import department_form
    from authops.platform import synth
    from authops.platform.catalog.csvload import BUILTIN, load_definitions

    defn = next(d for d in load_definitions(BUILTIN) if d.code == UPLOAD_RESOURCE)
    scale = 0.01
    while True:
        table = dict(synth.generate([defn], scale=scale, seed=11))[UPLOAD_RESOURCE]
        if table.num_rows >= rows or scale >= 1:
            break
        scale *= 4
    out = io.BytesIO()
    pacsv.write_csv(department_form(table.slice(0, rows), defn.schema), out)
    return out.getvalue()


def setup(settings, args) -> dict[str, Any]:
    import pyarrow.compute as pc
    from sqlmodel import Session, select

    from authops.audit import log as audit_log
    from authops.audit.anomaly.models import AnomalyRule
    from authops.core.data.datasets import read_dataset
    from authops.core.db import get_engine
    from authops.core.identity import OrgKind
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog import csvload, flows, service
    from authops.platform.catalog.models import Dataset
    from authops.platform.governance import agreements
    from authops.platform.identity import service as ids
    from authops.platform.identity.models import Organisation
    from authops.platform.products import precompute
    from authops.platform.sandbox import workspace
    from authops.policies import budget

    actor = audit_log.Actor(kind="system", name="soak")
    with Session(get_engine(settings), expire_on_commit=False) as s:
        service.load_catalog(s, csvload.BUILTIN, actor=actor)
        s.commit()
    flows.load_synthetic(settings, scale=args.scale, seed=7, only={"truck_violations", *JOB_RESOURCES})
    with Session(get_engine(settings), expire_on_commit=False) as s:
        org = {k: ids.create_org(s, kind=k, code=f"soak-{k.value}", name_zh=f"浸泡{k.value}", name_en=k.value)
               for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
        s.flush()
        dept = s.get(Organisation, service.get_resource(s, UPLOAD_RESOURCE).org_id)
        for o, user, role in ((org[OrgKind.CUSTOMER], "soak-customer", "customer_admin"),
                              (org[OrgKind.PARTNER], "soak-engineer", "partner_engineer"),
                              (dept, "soak-officer", "provider_data_officer")):
            ids.create_user(s, org=o, username=user, display_name="浸泡测试", password=PASSWORD, roles=[role])
        d = agreements.today()
        agreements.create(s, kind="operator_authorization", party_a_org_id=org[OrgKind.BUREAU].id,
                          party_b_org_id=org[OrgKind.OPERATOR].id, terms={"scope": "授权运营"},
                          starts_on=d - timedelta(days=30), ends_on=d + timedelta(days=365), actor=actor, state="active")
        p = truck_product(org, PRODUCT, "SZDP-2026-0902")
        s.add(p)
        s.flush()
        cust = org[OrgKind.CUSTOMER].id
        ca = sign_usage(s, p, org)
        s.commit()
        res = service.get_resource(s, "truck_violations")
        table = read_dataset(get_object_store(settings), s.get(Dataset, res.dataset_id).object_key)
        as_of = str(pc.max(table.column("violation_time")).as_py().date())
        vins = pc.unique(table.column("vin")).to_pylist()[:args.subjects]
        _consents(s, settings, p, cust, ca, vins)
        s.commit()
        built = precompute.precompute_now(s, settings, p, {"as_of": as_of})
        for rule in s.exec(select(AnomalyRule)).all():
            if rule.action in ("block", "throttle"):
                rule.action = "alert"
                s.add(rule)
        ws = workspace.create_workspace(s, org_id=org[OrgKind.PARTNER].id, name="soak lab", grants=GRANTS,
                                        actor=actor)
        for code in JOB_RESOURCES:  # room for every aggregate job of the run (epsilon 1 each)
            budget.set_budget(s, org_id=org[OrgKind.PARTNER].id, resource_code=code, epsilon=budget.MAX_EPSILON,
                              actor=actor)
        s.commit()
        return {"subjects": vins, "answer_rows": built.rows, "violation_rows": table.num_rows,
                "workspace_id": ws.id, "upload_csv": _upload_csv(settings, args.upload_rows)}


# --- processes --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(name: str, env: dict[str, str], folder: Path, broker_url: str, concurrency: int,
                 timeout: float = 300.0) -> subprocess.Popen[bytes]:
    from celery import Celery

    proc = _start([sys.executable, "-m", "celery", "-A", "authops.worker:celery_app", "worker", "--loglevel=WARNING",
                   f"--concurrency={concurrency}", "--pool=prefork", "-n", f"{name}@%h", "--without-mingle",
                   "--without-gossip"], env, folder / f"{name}.log")
    app = Celery("soak-ping", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = 2.0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}; see {folder / f'{name}.log'}")
            with contextlib.suppress(Exception):
                if any(k.startswith(f"{name}@") for r in app.control.ping(timeout=1.0) for k in r):
                    return proc
            time.sleep(0.3)
    finally:
        app.close()
    stop(proc)
    raise RuntimeError(f"worker {name} not ready after {timeout:.0f} s")


def start_api(port: int, workers: int, env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    import httpx

    proc = _start([sys.executable, "-m", "uvicorn", "authops.app:create_app", "--factory", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
                  env, folder / "api.log")
    deadline = time.monotonic() + 300  # generous: the machine may be paused or busy
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}; see {folder / 'api.log'}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                time.sleep(1.0 if workers > 1 else 0.2)  # let every worker start listening
                return proc
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError("uvicorn did not become ready")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: leftovers of this tree only
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


# --- sampling ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except OSError:
        return []


def _proc(pid: int) -> dict[str, float] | None:
    """RSS (MiB), open fds, threads and CPU seconds of one process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if stat[0] == "Z":
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024 if "VmRSS" in fields else 0.0,
            "fds": fds, "threads": int(fields["Threads"]), "cpu_s": (int(stat[11]) + int(stat[12])) / CLK_TCK}


def sample_tree(root: int) -> dict[str, float]:
    """The root process and its direct children (uvicorn workers, celery pool), summed."""
    total = {"rss_mib": 0.0, "fds": 0, "threads": 0, "cpu_s": 0.0, "processes": 0}
    for pid in [root, *_children(root)]:
        one = _proc(pid)
        if one is None:
            continue
        for k, v in one.items():
            total[k] += v
        total["processes"] += 1
    total["rss_mib"] = round(total["rss_mib"], 1)
    total["cpu_s"] = round(total["cpu_s"], 2)
    return total


def _folder_mib(folder: Path) -> float:
    size = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, f)).st_size
    return round(size / 2**20, 1)


class PgSampler:
    def __init__(self, dbname: str) -> None:
        import psycopg

        self.dbname = dbname
        self.conn = psycopg.connect(POSTGRES_ADMIN, autocommit=True)  # the admin database: not counted

    def __call__(self) -> dict[str, Any]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT coalesce(state, 'none'), count(*) FROM pg_stat_activity WHERE datname = %s "
                        "GROUP BY 1", (self.dbname,))
            by_state = dict(cur.fetchall())
            cur.execute("SELECT pg_database_size(%s)", (self.dbname,))
            size = cur.fetchone()[0]
        return {"connections": sum(by_state.values()), "by_state": by_state, "db_mib": round(size / 2**20, 1)}

    def close(self) -> None:
        self.conn.close()


# --- the load -------------------------------------------------------------------------------------

class Pauses:
    """Times when this whole process stood still (SIGSTOP, e.g. a tool pausing every Python process on the
    machine, or a frozen VM): a watcher thread that wakes every 0.25 s notes each gap over 2 s. An operation
    that was under way across such a gap and failed is counted as interrupted, not as an error of the
    platform (its timeout fired on a clock that ran on while nothing, client or server, could run)."""

    def __init__(self) -> None:
        import threading

        self.spans: list[tuple[float, float]] = []  # monotonic (start, end)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="soak-pause-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.25):
            now = time.monotonic()
            if now - last > 2.0:
                self.spans.append((last, now))
            last = now

    def overlaps(self, start: float, end: float) -> bool:
        return any(a < end and b > start for a, b in self.spans)

    def seconds(self) -> float:
        return round(sum(b - a for a, b in self.spans), 1)

    def stop(self) -> None:
        self._stop.set()


class RawPool:
    """Keep-alive HTTP/1.1 connections on raw asyncio streams for the bulk of the load (product calls): a
    waiting request costs an asyncio.Queue slot, not a scan of every waiter per response (httpx's pool is
    quadratic once thousands wait, which turns a stall into a collapse of the load generator)."""

    def __init__(self, host: str, port: int, size: int, timeout: float) -> None:
        self.host, self.port, self.size, self.timeout = host, port, size, timeout
        self.idle: list = []  # a stack: the most recently used first, so idle ones age out on the server
        self.waiters: asyncio.Queue = asyncio.Queue()  # futures of requests waiting for a connection
        self.opened = 0

    async def _get(self) -> tuple[Any, bool]:
        """(connection, reused)."""
        while self.idle:
            conn = self.idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():  # the server closed it while idle (keep-alive timeout)
                self._drop(conn)
                continue
            return conn, True
        if self.opened < self.size:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port), False
            except BaseException:
                self.opened -= 1
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.put_nowait(fut)
        try:
            return await fut, True
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed over just as we gave up: pass it on
                self._release(fut.result())
            raise

    async def _open_for_waiter(self) -> None:
        self.opened += 1
        try:
            conn = await asyncio.open_connection(self.host, self.port)
        except Exception:  # noqa: BLE001 - the waiter's own timeout reports it
            self.opened -= 1
            return
        self._release(conn)

    def _release(self, conn) -> None:
        while not self.waiters.empty():
            fut = self.waiters.get_nowait()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    def _drop(self, conn) -> None:
        self.opened -= 1
        with contextlib.suppress(Exception):
            conn[1].close()
        if not self.waiters.empty() and self.opened < self.size:  # someone waits for the slot this freed
            asyncio.get_running_loop().create_task(self._open_for_waiter())

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._request(method, path, headers, body), self.timeout)

    async def _request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            conn, reused = await self._get()
            try:
                return await self._exchange(conn, method, path, headers, body)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                # A reused keep-alive connection the server closed (idle timeout) just as we sent: no answer
                # came, so the request is sent again once (RFC 9112 9.3.1; the product call carries its
                # Idempotency-Key, so a retry cannot charge twice).
                if not (reused and not getattr(exc, "partial", b"") and attempt == 1):
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, conn, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}Content-Length: {len(body)}\r\n"
                         f"\r\n".encode() + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            status, length, close = int(raw[9:12]), 0, False
            for line in raw.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await reader.readexactly(length) if length else b""
        except BaseException:  # a broken or cancelled exchange leaves the connection unusable
            self._drop(conn)
            raise
        if close:
            self._drop(conn)
        else:
            self._release(conn)
        return status, data

    async def close(self) -> None:
        while self.idle:
            self._drop(self.idle.pop())


class Stats:
    """Counts, latencies and error examples of one kind of operation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = self.ok = self.errors = self.inflight = self.interrupted = self.skipped = 0
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []  # ms, whole run
        self.window: list[float] = []  # ms, since the last sample
        self.examples: list[dict[str, Any]] = []

    def done(self, ms: float, status: str, ok: bool, t: float, detail: str = "", paused: bool = False) -> None:
        if paused and not ok:
            self.interrupted += 1
            self.statuses[f"interrupted by a pause: {status}"] += 1
            return
        self.statuses[status] += 1
        self.latencies.append(ms)
        self.window.append(ms)
        if ok:
            self.ok += 1
        else:
            self.errors += 1
            if len(self.examples) < 20:
                self.examples.append({"t_s": round(t, 1), "status": status, "detail": detail[:300]})

    def take_window(self) -> dict[str, Any]:
        w, self.window = sorted(self.window), []
        if not w:
            return {"n": 0}
        return {"n": len(w), "p50_ms": round(w[len(w) // 2], 2), "p99_ms": round(w[min(len(w) - 1, int(0.99 * len(w)))], 2)}

    def summary(self) -> dict[str, Any]:
        w = sorted(self.latencies)
        q = (lambda p: round(w[min(len(w) - 1, int(p * len(w)))], 2)) if w else (lambda p: None)  # noqa: E731
        return {"sent": self.sent, "ok": self.ok, "errors": self.errors, "interrupted_by_pause": self.interrupted,
                "skipped_after_pause": self.skipped, "statuses": dict(self.statuses),
                "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(w[-1], 2) if w else None,
                "error_examples": self.examples}


class Load:
    def __init__(self, args, base: str, info: dict[str, Any]) -> None:
        import httpx

        self.args, self.base, self.info = args, base, info
        # Beyond --connections, requests wait for a connection in the client: a stall shows as latency.
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
        self.api = httpx.AsyncClient(base_url=base, timeout=60, limits=limits)
        self.consoles: dict[str, Any] = {"soak-engineer": None, "soak-officer": None}  # logged in by login()
        self.stats = {k: Stats(k) for k in ("call", "console", "job_submit", "job", "upload", "ingest", "poll")}
        self.pauses = Pauses()
        self.raw = RawPool("127.0.0.1", int(base.rsplit(":", 1)[1]), args.connections, 60.0)
        self.headers: dict[str, dict[str, str]] = {}
        self.outstanding: dict[int, dict[str, Any]] = {}  # job id -> what to check when it ends
        self.latest_job: int | None = None
        self.t0 = 0.0
        self.job_no = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def login(self) -> None:
        for user in ("soak-customer", "soak-engineer", "soak-officer"):
            r = await self.api.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
            r.raise_for_status()
            self.headers[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        for user in list(self.consoles):
            client = await self._console_session(user)
            old, self.consoles[user] = self.consoles[user], client
            if old is not None:  # requests in flight on it finish first
                asyncio.get_running_loop().call_later(60, lambda c=old: asyncio.ensure_future(c.aclose()))

    async def _console_session(self, user: str):
        import httpx

        client = httpx.AsyncClient(base_url=self.base, timeout=60, follow_redirects=False)
        form = await client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
        if form.status_code != 200 or csrf is None:
            raise RuntimeError(f"console login form: {form.status_code}")
        r = await client.post("/console/login", data={"username": user, "password": PASSWORD,
                                                      "csrf": csrf.group(1), "next": "/console/"})
        if r.status_code != 303 or r.headers.get("location") != "/console/":
            raise RuntimeError(f"console login of {user}: {r.status_code} {r.headers.get('location')}")
        return client

    async def api_key(self) -> None:
        r = await self.api.post("/api/v1/api-keys", headers=self.headers["soak-customer"],
                                json={"name": "soak", "scopes": ["product.call"], "ttl_days": 1})
        r.raise_for_status()
        self.headers["key"] = {"Authorization": f"Bearer {r.json()['key']}"}

    async def relogin_loop(self, stop_at: float) -> None:
        while True:
            await asyncio.sleep(min(RELOGIN_SECONDS, max(0.0, stop_at - time.monotonic())))
            if time.monotonic() >= stop_at:
                return
            try:
                await self.login()
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                self.stats["console"].done(0, "relogin", False, self.now(), repr(exc))

    async def timed(self, st: Stats, scheduled: float, coro, expect: int) -> Any:
        st.inflight += 1
        try:
            r = await coro
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            now = time.monotonic()
            st.done((now - scheduled) * 1000, type(exc).__name__, False, self.now(), repr(exc),
                    paused=self.pauses.overlaps(scheduled, now))
            return None
        finally:
            st.inflight -= 1
        now = time.monotonic()
        status, text = (r[0], r[1][:300].decode(errors="replace")) if isinstance(r, tuple) else (r.status_code, None)
        ok = status == expect
        detail = "" if ok else (text if text is not None else r.text[:300])
        st.done((now - scheduled) * 1000, str(status), ok, self.now(), detail,
                paused=self.pauses.overlaps(scheduled, now))
        return r if ok else None

    async def open_loop(self, kind: str, rate: float, stop_at: float, make) -> None:
        """Start make(scheduled_time) at `rate` per second from now until stop_at, whatever came back."""
        if rate <= 0:
            return
        st, start, k, tasks = self.stats[kind], time.monotonic(), 0, set()
        while True:
            when = start + k / rate
            if when >= stop_at:
                break
            delay = when - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k += 1
            if delay < -5.0 and self.pauses.overlaps(when, time.monotonic()):
                st.skipped += 1  # due while the whole process stood still: not sent in a burst afterwards
                continue
            st.sent += 1
            if st.inflight >= self.args.max_inflight:
                st.done(0, "dropped", False, self.now(), f"{st.inflight} still waiting")
                continue
            task = asyncio.create_task(make(when))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    # each operation ------------------------------------------------------------------------------
    async def call(self, when: float) -> None:
        subjects = self.info["subjects"]
        body = {"subject": subjects[self.stats["call"].sent % len(subjects)], "purpose": PURPOSE}
        await self.timed(self.stats["call"], when, self.raw.request(
            "POST", f"/api/v1/products/{PRODUCT}/calls",
            {**self.headers["key"], "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
            json.dumps(body).encode()), 200)

    def pages(self) -> list[tuple[str, str]]:
        pages = [("soak-engineer", "/console/"), ("soak-engineer", "/console/jobs"),
                 ("soak-officer", "/console/"), ("soak-officer", f"/console/resources/{UPLOAD_RESOURCE}"),
                 ("soak-officer", "/console/disclosure")]
        if self.latest_job:
            pages.append(("soak-engineer", f"/console/jobs/{self.latest_job}/progress"))
        return pages

    async def console(self, when: float) -> None:
        pages = self.pages()
        who, path = pages[self.stats["console"].sent % len(pages)]
        await self.timed(self.stats["console"], when, self.consoles[who].get(path), 200)

    async def job(self, when: float) -> None:
        self.job_no += 1
        if self.job_no % 2:
            body = {"kind": "code", "spec": MANIFEST, "code": CODE, "params": {"iterations": self.args.iterations}}
        else:
            from authops.sandbox.spec import EXAMPLES

            body = {"kind": "spec", "spec": (EXAMPLES / "tax_arrears_by_industry.yaml").read_text(encoding="utf-8")}
        r = await self.timed(self.stats["job_submit"], when, self.api.post(
            f"/api/v1/sandbox/workspaces/{self.info['workspace_id']}/jobs", json=body,
            headers=self.headers["soak-engineer"]), 202)
        if r is not None:
            job_id = r.json()["id"]
            self.latest_job = job_id
            self.outstanding[job_id] = {"kind": "job", "what": body["kind"], "since": when}

    async def upload(self, when: float) -> None:
        r = await self.timed(self.stats["upload"], when, self.api.post(
            f"/api/v1/catalog/resources/{UPLOAD_RESOURCE}/uploads", headers=self.headers["soak-officer"],
            files={"file": ("ratings.csv", self.info["upload_csv"], "text/csv")}, data={"mode": "replace"}), 202)
        if r is not None:
            up = r.json()
            self.outstanding[up["job_id"]] = {"kind": "ingest", "run_id": up["run"]["id"], "since": when}

    async def poll_loop(self, stop_polling: asyncio.Event) -> None:
        """Follow every submitted job to its end, every 2 s; a job still running after --job-timeout fails."""
        while not (stop_polling.is_set() and not self.outstanding):
            await asyncio.sleep(2.0)
            for job_id, what in list(self.outstanding.items()):
                await self._poll_one(job_id, what)

    async def _poll_one(self, job_id: int, what: dict[str, Any]) -> None:
        st = self.stats[what["kind"]]
        if what["kind"] == "job":
            path, who = f"/api/v1/sandbox/jobs/{job_id}", "soak-engineer"
        else:
            path, who = f"/api/v1/jobs/{job_id}", "soak-officer"
        t = time.monotonic()
        self.stats["poll"].sent += 1
        r = await self.timed(self.stats["poll"], t, self.api.get(path, headers=self.headers[who]), 200)
        if r is None:
            return
        job = r.json()
        if job["state"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() - what["since"] > self.args.job_timeout:
                del self.outstanding[job_id]
                st.sent += 1
                st.done((time.monotonic() - what["since"]) * 1000, "timeout", False, self.now(),
                        f"job {job_id} still {job['state']} after {self.args.job_timeout:.0f} s",
                        paused=self.pauses.overlaps(what["since"], time.monotonic()))
            return
        del self.outstanding[job_id]
        st.sent += 1
        ms = (time.monotonic() - what["since"]) * 1000
        if job["state"] != "succeeded":
            st.done(ms, job["state"], False, self.now(),
                    f"job {job_id} ({what.get('what', 'ingest')}): {job.get('error_code')} {job.get('error_message')}")
            return
        if what["kind"] == "ingest":
            run = await self.api.get(f"/api/v1/catalog/runs/{what['run_id']}", headers=self.headers[who])
            state = run.json().get("state") if run.status_code == 200 else f"http {run.status_code}"
            if state != "succeeded":
                st.done(ms, f"load {state}", False, self.now(), run.text[:300])
                return
        st.done(ms, "succeeded", True, self.now())

    async def close(self) -> None:
        self.pauses.stop()
        await self.raw.close()
        await self.api.aclose()
        for c in self.consoles.values():
            if c is not None:
                await c.aclose()


# --- verdict and picture ---------------------------------------------------------------------------

def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Theil-Sen: the median of the slopes between every pair of samples, per hour. A line fitted this way
    follows the series' level, not its spikes (a burst of threads or connections for one sample)."""
    if len(points) < 3:
        return None
    slopes = [(y2 - y1) / (t2 - t1) for i, (t1, y1) in enumerate(points) for t2, y2 in points[i + 1:] if t2 > t1]
    return statistics.median(slopes) * 3600 if slopes else None


def ols_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least squares, for reference."""
    if len(points) < 3:
        return None
    mt = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return None if den == 0 else sum((t - mt) * (y - my) for t, y in points) / den * 3600


def series(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Judged series: name -> {kind (a BOUNDS key), points [(t_s, value)]}."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        t = s["t_s"]
        for role, m in s["processes"].items():
            for k in ("rss_mib", "fds", "threads"):
                out.setdefault(f"{role} {k}", {"kind": k, "points": []})["points"].append((t, m[k]))
        out.setdefault("postgresql connections", {"kind": "pg_connections", "points": []})["points"].append(
            (t, s["postgresql"]["connections"]))
        for kind in ("call", "console"):
            w = s["latency"].get(kind, {})
            if w.get("n"):
                out.setdefault(f"{kind} latency p50", {"kind": "p50_ms", "points": []})["points"].append(
                    (t, w["p50_ms"]))
    return out


def verdict(samples: list[dict[str, Any]], totals: dict[str, Any], minutes: float) -> dict[str, Any]:
    half = minutes * 60 / 2
    checks = {}
    for name, ser in series(samples).items():
        pts = [(t, y) for t, y in ser["points"] if t >= half]
        b = BOUNDS[ser["kind"]]
        med = statistics.median(y for _, y in pts) if pts else 0.0
        slope = slope_per_hour(pts)
        bound = max(b["relative"] * med, b["absolute"])
        ols = ols_per_hour(pts)
        checks[name] = {"median": round(med, 2), "growth_per_hour": None if slope is None else round(slope, 2),
                        "least_squares_per_hour": None if ols is None else round(ols, 2),
                        "bound_per_hour": round(bound, 2), "unit": b["unit"], "judged": b["judged"],
                        "first": pts[0][1] if pts else None, "last": pts[-1][1] if pts else None,
                        "ok": slope is not None and slope <= bound}
    errors = sum(v["errors"] for v in totals.values())
    interrupted = sum(v.get("interrupted_by_pause", 0) for v in totals.values())
    skipped = sum(v.get("skipped_after_pause", 0) for v in totals.values())
    flat = all(c["ok"] for c in checks.values() if c["judged"])
    return {"flat": flat, "errors": errors, "passed": flat and errors == 0 and bool(checks),
            "interrupted_by_pause": interrupted, "skipped_after_pause": skipped,
            "rule": "over the second half of the run, each judged series' growth per hour (Theil-Sen line: the "
                    "median slope between every two samples) is at most max(relative x its median there, absolute); "
                    "errors = 0. Latency is shown, not judged: on a shared machine it follows the other load "
                    "(load average plotted)",
            "bounds": BOUNDS, "series": checks}


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _axis(v: float) -> tuple[float, float]:
    """(top, step): four steps of 1, 2, 2.5 or 5 x 10^k covering v."""
    import math

    raw = max(v, 1e-9) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return step * 4, step


def render_svg(doc: dict[str, Any]) -> str:
    """Five panels over time: RSS, open fds, PostgreSQL connections, latency, cumulative errors."""
    from xml.sax.saxutils import escape

    samples = doc.get("samples", [])
    roles = list(samples[0]["processes"]) if samples else []
    t_end = max([s["t_s"] for s in samples] + [1.0])
    half = float(doc.get("settings", {}).get("minutes") or t_end / 60) * 30
    digits = 0 if t_end >= 600 else 1

    def pts(fn) -> list[tuple[float, float]]:
        out = []
        for s in samples:
            v = fn(s)
            if v is not None:
                out.append((s["t_s"], v))
        return out

    panels = [
        ("Resident memory (MiB), each process tree", [(r, pts(lambda s, r=r: s["processes"][r]["rss_mib"]))
                                                       for r in roles]),
        ("Open file descriptors, each process tree", [(r, pts(lambda s, r=r: s["processes"][r]["fds"]))
                                                       for r in roles]),
        ("PostgreSQL connections to the soak database", [
            ("all", pts(lambda s: s["postgresql"]["connections"])),
            ("active", pts(lambda s: s["postgresql"]["by_state"].get("active", 0)))]),
        ("Latency per 10 s window (ms, from the scheduled start)", [
            (f"{k} {q}", pts(lambda s, k=k, q=q: s["latency"].get(k, {}).get(f"{q}_ms")))
            for k in ("call", "console") for q in ("p50", "p99")]),
        ("Machine load average (1 min) and CPU of each process tree (cores)", [
            ("load average", pts(lambda s: s.get("loadavg_1min"))),
            *[(f"{r} CPU", pts(lambda s, r=r: None if s["processes"][r].get("cpu_pct") is None
                               else s["processes"][r]["cpu_pct"] / 100)) for r in roles]]),
        ("Operations (cumulative, thousands) and errors", [
            ("operations ok / 1000", pts(lambda s: sum(v["ok"] for v in s["ops"].values()) / 1000)),
            ("errors", pts(lambda s: sum(v["errors"] for v in s["ops"].values())))]),
    ]
    w, ph, left, right, top_pad = 860, 190, 64, 170, 28
    height = len(panels) * (ph + 40) + 70
    v = doc.get("verdict") or {}
    pauses = doc.get("pauses") or []
    head = (f"Soak: {float(doc.get('settings', {}).get('minutes') or 0):g} min, "
            f"{doc.get('settings', {}).get('rate')} calls/s "
            f"open loop; errors {v.get('errors', '-')}; flat over the second half: {v.get('flat', '-')}"
            + (f"; paused {sum(b - a for a, b in pauses):.0f} s" if pauses else ""))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(head)}</text>']
    plot_w = w - left - right
    for i, (title, lines) in enumerate(panels):
        y0 = 40 + i * (ph + 40) + top_pad
        ymax, _step = _axis(max([y for _, p in lines for _, y in p] + [1.0]) * 1.02)
        out.append(f'<text x="{left}" y="{y0 - 8}" font-weight="bold">{escape(title)}</text>')
        hx = left + plot_w * min(1.0, half / t_end)
        out.append(f'<rect x="{hx:.1f}" y="{y0}" width="{left + plot_w - hx:.1f}" height="{ph}" fill="#f3f3f3"/>')
        for a, b in pauses:
            xa, xb = left + plot_w * min(a, t_end) / t_end, left + plot_w * min(b, t_end) / t_end
            out.append(f'<rect x="{xa:.1f}" y="{y0}" width="{max(1.0, xb - xa):.1f}" height="{ph}" fill="#f8d0d0"/>')
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{ph}" fill="none" stroke="#888"/>')
        for k in range(5):
            yv = ymax * k / 4
            yy = y0 + ph - ph * k / 4
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{yv:g}</text>')
        for k in range(7):
            tv = t_end * k / 6
            xx = left + plot_w * k / 6
            out.append(f'<text x="{xx:.1f}" y="{y0 + ph + 14}" text-anchor="middle">{tv / 60:.{digits}f} min</text>')
        for j, (label, p) in enumerate(lines):
            color = COLORS[j % len(COLORS)]
            if p:
                path = " ".join(f"{left + plot_w * t / t_end:.1f},{y0 + ph - ph * min(y, ymax) / ymax:.1f}"
                                for t, y in p)
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
            ly = y0 + 12 + j * 15
            out.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 28}" y1="{ly - 4}" y2="{ly - 4}" '
                       f'stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{left + plot_w + 32}" y="{ly}">{escape(label)}</text>')
    out.append(f'<text x="{left}" y="{height - 10}" fill="#555">Grey: the second half, where each series\' '
               'growth is judged. Red: the whole process stood still (paused). Process trees: main process + '
               'direct children.</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- the run ----------------------------------------------------------------------------------------

def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def _log_problems(folder: Path) -> dict[str, Any]:
    out = {}
    for log in sorted(folder.glob("*.log")):
        text = log.read_text(errors="replace")
        n = text.count("Traceback (most recent call last)")
        out[log.name] = {"tracebacks": n, "errors": len(re.findall(r"\bERROR\b", text)),
                         "tail": text[-1500:] if n else ""}
    return out


async def drive(args, base: str, info: dict[str, Any], roles: dict[str, int], pg: PgSampler, folder: Path,
                doc: dict[str, Any]) -> None:
    load = Load(args, base, info)
    await load.login()
    await load.api_key()
    load.t0 = time.monotonic()
    stop_at = load.t0 + args.minutes * 60
    stop_polling, finished = asyncio.Event(), asyncio.Event()
    cpu_before: dict[str, float] = {}

    async def sampler() -> None:
        nxt = load.t0
        while True:
            procs = await asyncio.to_thread(lambda: {r: sample_tree(pid) for r, pid in roles.items()})
            pgs = await asyncio.to_thread(pg)
            data = await asyncio.to_thread(_folder_mib, folder)
            t = load.now()
            dt = t - cpu_before.get("_t", t)
            for r, m in procs.items():  # CPU share of one core since the last sample
                prev = cpu_before.get(r)
                m["cpu_pct"] = None if prev is None or dt <= 0 else round(100 * (m["cpu_s"] - prev) / dt, 1)
                cpu_before[r] = m["cpu_s"]
            cpu_before["_t"] = t
            doc["samples"].append({
                "t_s": round(t, 1), "processes": procs, "postgresql": pgs, "data_dir_mib": data,
                "load_generator_rss_mib": round(_proc(os.getpid())["rss_mib"], 1),
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "ops": {k: {"sent": s.sent, "ok": s.ok, "errors": s.errors} for k, s in load.stats.items()},
                "latency": {k: s.take_window() for k, s in load.stats.items()},
                "outstanding_jobs": len(load.outstanding), "paused_s": load.pauses.seconds()})
            doc["totals"] = {k: s.summary() for k, s in load.stats.items()}
            doc["pauses"] = [[round(a - load.t0, 1), round(b - load.t0, 1)] for a, b in load.pauses.spans]
            _write(args.out, doc)
            last = doc["samples"][-1]
            errs = sum(v["errors"] for v in last["ops"].values())
            print(f"[{t / 60:5.1f} min] " + "  ".join(f"{r} {m['rss_mib']:.0f}MiB/{m['fds']}fd"
                                                     for r, m in procs.items())
                  + f"  pg {pgs['connections']}  ok {sum(v['ok'] for v in last['ops'].values())}  errors {errs}"
                  + f"  call p99 {last['latency']['call'].get('p99_ms', '-')} ms", flush=True)
            if finished.is_set():
                return
            nxt += args.sample_every
            if nxt <= time.monotonic():  # behind (the process stood still): no burst of catch-up samples
                nxt = time.monotonic() + args.sample_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), timeout=max(0.0, nxt - time.monotonic()))

    sample_task = asyncio.create_task(sampler())
    poll_task = asyncio.create_task(load.poll_loop(stop_polling))
    relogin = asyncio.create_task(load.relogin_loop(stop_at))
    await asyncio.gather(
        load.open_loop("call", args.rate, stop_at, load.call),
        load.open_loop("console", args.console_rate, stop_at, load.console),
        load.open_loop("job_submit", 1 / args.job_every if args.job_every else 0, stop_at, load.job),
        load.open_loop("upload", 1 / args.upload_every if args.upload_every else 0, stop_at, load.upload))
    stop_polling.set()
    relogin.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relogin
    try:
        await asyncio.wait_for(poll_task, timeout=args.job_timeout + 30)
    except TimeoutError:
        pass
    finished.set()  # one last sample, then the sampler ends
    await sample_task
    doc["totals"] = {k: s.summary() for k, s in load.stats.items()}
    await load.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=20.0, help="product calls per second")
    ap.add_argument("--console-rate", type=float, default=2.0, help="console page views per second")
    ap.add_argument("--job-every", type=float, default=20.0, help="seconds between sandbox jobs (0: none)")
    ap.add_argument("--upload-every", type=float, default=60.0, help="seconds between uploads (0: none)")
    ap.add_argument("--upload-rows", type=int, default=2000)
    ap.add_argument("--iterations", type=int, default=300, help="gradient steps of each code job")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--api-workers", type=int, default=2)
    ap.add_argument("--celery-workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2, help="pool processes per celery worker")
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--connections", type=int, default=64, help="HTTP connections of the API client")
    ap.add_argument("--max-inflight", type=int, default=5000,
                    help="per kind; beyond it an operation is dropped (and counted as an error)")
    ap.add_argument("--job-timeout", type=float, default=600.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    ap.add_argument("--svg", type=Path, default=REPO / "bench" / "results" / "soak.svg")
    ap.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    args = ap.parse_args()
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        sys.exit("the sandbox's code jobs run in the jail: bubblewrap and root are needed")

    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    doc: dict[str, Any] = {
        "benchmark": "soak: steady mixed load, resources sampled",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None, "partial": True,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "samples": [], "totals": {}, "verdict": None}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with scratch_database(folder, "authops_soak") as url:
            env = {**os.environ, "AUTHOPS_DATA_DIR": str(folder), "AUTHOPS_DATABASE_URL": url,
                   "AUTHOPS_BROKER_URL": "", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                         os.environ.get("PYTHONPATH")]))}
            os.environ.update({k: env[k] for k in ("AUTHOPS_DATA_DIR", "AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL")})
            from authops.core import db as core_db
            from authops.core.broker import EmbeddedBroker, broker_info
            from authops.core.settings import Settings, reset_settings

            reset_settings()
            settings = Settings()
            t = time.perf_counter()
            info = setup(settings, args)
            core_db.dispose_engines()
            doc["setup"] = {"seconds": round(time.perf_counter() - t, 1), "violation_rows": info["violation_rows"],
                            "answer_rows": info["answer_rows"], "consented_subjects": len(info["subjects"]),
                            "upload_csv_bytes": len(info["upload_csv"]), "database": url.rsplit("/", 1)[1]}
            print(f"setup: {doc['setup']}", flush=True)
            with EmbeddedBroker(settings) as broker:
                roles = {"broker": broker_info(settings).pid}
                for i in range(args.celery_workers):
                    w = start_worker(f"soak-worker-{i + 1}", env, folder, broker.url, args.concurrency)
                    procs.append(w)
                    roles[f"worker-{i + 1}" if args.celery_workers > 1 else "worker"] = w.pid
                port = _free_port()
                api = start_api(port, args.api_workers, env, folder)
                procs.append(api)
                roles["api"] = api.pid
                pg = PgSampler(url.rsplit("/", 1)[1])
                print(f"servers up: {roles}; load for {args.minutes} min", flush=True)
                try:
                    asyncio.run(drive(args, f"http://127.0.0.1:{port}", info, roles, pg, folder, doc))
                finally:
                    pg.close()
                    for p in reversed(procs):
                        stop(p)
            doc["logs"] = _log_problems(folder)
    finally:
        doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if doc["samples"]:
            doc["verdict"] = verdict(doc["samples"], doc["totals"], args.minutes)
            doc["partial"] = False
        _write(args.out, doc)
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(render_svg(doc))
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    v = doc["verdict"] or {}
    print(json.dumps({k: v2 for k, v2 in doc["totals"].items()}, indent=1, ensure_ascii=False)[:4000])
    for name, c in (v.get("series") or {}).items():
        print(f"  {name:28s} median {c['median']:>9} {c['unit']:<11} growth/h {c['growth_per_hour']!s:>8} "
              f"(bound {c['bound_per_hour']}) {'ok' if c['ok'] else 'GROWS'}")
    print(f"errors {v.get('errors')}; flat {v.get('flat')}; passed {v.get('passed')}; wrote {args.out} and {args.svg}")


if __name__ == "__main__":
    main()
