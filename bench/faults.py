"""Fault injection with real parts: kill workers, restart the broker and PostgreSQL, break the object store.

The world (set up once, not timed): a private PostgreSQL cluster (initdb on a free port), a private
redis-server as the broker (no persistence: a restart loses every queued message), moto's S3 server
behind a fault proxy as the object store, two API processes (uvicorn) and --workers Celery workers
(prefork, --concurrency each); the built-in catalogue, synthetic truck_violations, enterprise_basic_info
and enterprise_tax; a registered score product touching personal information (agreement, consents for
--subjects VINs, answer set built; bench/product_call.py's setup), a partner workspace with a privacy
budget, a partner engineer (bearer token) and a customer API key. Nothing here touches the machine's
shared PostgreSQL, Redis or RabbitMQ.

Load, always through the two API processes (round robin):
  calls  POST /products/{code}/calls with a fresh Idempotency-Key each; a call that fails (5xx, 429,
         no answer) is retried later with the SAME key and body, as the README tells clients to, until
         it is accepted (200); so every call sent must end accepted, and recorded exactly once.
  jobs   sandbox aggregate jobs (tax_arrears_by_industry: one release, ε 1 on each of two resources)
         and product batches (a CSV of consented VINs: one result file, one usage record) in turn;
         a submission answered with an error is submitted again (it created nothing).
Scenarios, one after the other on the same world:
  kill     --jobs jobs; a worker is SIGKILLed --kills times, at random moments while it runs one (its
           main and pool processes at once, then started again as a supervisor would; or one pool
           process, which its main process replaces). A kill never targets a job already on its last
           attempt (sandbox and batch jobs allow 3: the third loss fails the job by design, which is not
           what is measured here).
  broker   calls and jobs; the broker is SIGKILLed and started again (empty) --outage seconds later.
  postgres calls and jobs; PostgreSQL is stopped in immediate mode (a crash: recovery on start) and
           started again --outage seconds later. Calls in the outage must fail fast with a clear error.
  store    calls, jobs and reads of finished results; the object store is first flaky (every
           connection cut after a few bytes, so transfers die half-way), then unreachable, then back.
           The load must fail cleanly (an error, budget given back) and nothing half-written read.
  stale    a worker frozen (SIGSTOP) while it stores a sandbox job's release, past its lease; another
           worker runs the job to the end; the frozen one resumes: the committed release must not change.
  uploads  two uploads of one resource loaded at once by two workers: every committed dataset version
           must hold the data its row describes, and both loads must succeed.
Accounting, from the database after each scenario (its own jobs and calls):
  jobs   submitted = accepted by the API (202); completed = succeeded with one release (sandbox) or one
         usage record (batch), its budget reservation committed once; duplicated = any effect twice
         (two successful attempts, two releases or release events, two usage records, two commits);
         lost = accepted and not completed (in the store scenario a job the outage made fail cleanly,
         with its reservation given back and no effect, is counted as failed cleanly, not lost);
         phantom = created in the database without the client hearing 202.
  calls  accepted = keys answered 200; recorded = keys with a usage record; duplicated = a key with two
         usage records or two different request ids; lost = accepted, not recorded.
  money  Σ usage records = the operator's revenue counter; audit product.call events = call usage records;
         ε spent on each resource = succeeded sandbox jobs x 1; the budget ledger check finds nothing.
Prints the table and writes bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-password-42"  # bench/product_call.py's customer user
ENGINEER = "fault-engineer"
RESOURCES = ("enterprise_basic_info", "enterprise_tax")
GRANTS = [{"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "vat_amount", "has_violation_record"]},
          {"resource": "enterprise_basic_info", "fields": ["uscc", "enterprise_name", "registered_capital"]}]
SINGLE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
# Short leases and a fast maintenance loop, so a killed worker's job comes back in seconds.
FAST_JOBS = {"AUTHOPS_JOB_LEASE_SECONDS": "5", "AUTHOPS_MAINTENANCE_INTERVAL_SECONDS": "0.5",
             "AUTHOPS_JOB_REDISPATCH_SECONDS": "4"}
ENV_KEYS = ("AUTHOPS_DATA_DIR", "AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL", "AUTHOPS_STORAGE_URL",
            "AUTHOPS_STORAGE_BUCKET", "AUTHOPS_STORAGE_ACCESS_KEY", "AUTHOPS_STORAGE_SECRET_KEY", *FAST_JOBS)
RETRYABLE = {0, 429, 500, 502, 503, 504}  # 0: no answer (connection refused or reset, timeout)
BATCH_SUBJECTS = 5
SCENARIOS = ("kill", "broker", "postgres", "store", "stale", "uploads")


# --- the world -------------------------------------------------------------------------------------

class World:
    """Every process and service of a run, and what the load needs to talk to them."""

    def __init__(self, folder: Path, *, workers: int = 2, concurrency: int = 1, scale: float = 0.01,
                 subjects: int = 40, seed: int = 0) -> None:
        self.folder, self.n_workers, self.concurrency = Path(folder), workers, concurrency
        self.scale, self.n_subjects, self.seed = scale, subjects, seed
        self.stack = contextlib.ExitStack()
        self.timings: dict[str, float] = {}

    # services and processes
    def __enter__(self) -> World:
        try:
            self._up()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _up(self) -> None:
        from tests.support.faults import ApiServer, FaultProxy, MotoS3, PrivatePostgres, PrivateRedis, WorkerSet

        t = time.perf_counter()
        self.pg = PrivatePostgres().init()
        self.stack.callback(self.pg.close)
        self.pg.start()
        db_url = self.pg.create_database("authops")
        self.redis = PrivateRedis(self.folder / "redis")
        self.stack.callback(self.redis.close)
        self.redis.start()
        self.moto = MotoS3(self.folder / "moto")
        self.stack.callback(self.moto.close)
        self.moto.start()
        self.proxy = FaultProxy(self.moto.port, seed=self.seed).start()
        self.stack.callback(self.proxy.close)
        self.timings["services_s"] = time.perf_counter() - t

        self.env_vars = {"AUTHOPS_DATA_DIR": str(self.folder / "data"), "AUTHOPS_DATABASE_URL": db_url,
                         "AUTHOPS_BROKER_URL": self.redis.url, "AUTHOPS_STORAGE_URL": self.proxy.url,
                         "AUTHOPS_STORAGE_BUCKET": "authops-faults", "AUTHOPS_STORAGE_ACCESS_KEY": "faults",
                         "AUTHOPS_STORAGE_SECRET_KEY": "faults-secret", **FAST_JOBS}
        self.stack.enter_context(_environment(self.env_vars))
        self.env = {**os.environ, **SINGLE_THREAD,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        from authops.core import db as core_db
        from authops.core.settings import Settings

        self.settings = Settings()
        t = time.perf_counter()
        core_db.upgrade(self.settings)
        self.timings["migrate_s"] = time.perf_counter() - t
        # The processes start (imports: seconds of CPU) while this one loads the data.
        t = time.perf_counter()
        self.apis = [ApiServer(self.env, self.folder, name=f"api{i + 1}").start() for i in range(2)]
        for api in self.apis:
            self.stack.callback(api.close)
        self.workers = WorkerSet(self.env, count=self.n_workers, concurrency=self.concurrency)
        self.stack.callback(self.workers.close)
        failed: list[BaseException] = []
        starting = threading.Thread(target=_catching(self.workers.start, failed), name="workers-start")
        starting.start()
        try:
            self._data()
        finally:
            starting.join()
        if failed:
            raise failed[0]
        self.timings["data_s"] = time.perf_counter() - t
        for api in self.apis:
            api.wait_ready()
        self.ports = [api.port for api in self.apis]
        self._credentials()
        self.timings["all_up_s"] = time.perf_counter() - t

    def _data(self) -> None:
        from sqlmodel import select

        from authops.audit import log as audit_log
        from authops.core import db as core_db
        from authops.platform.catalog import flows
        from authops.platform.identity import service as ids
        from authops.platform.identity.models import Organisation
        from authops.platform.sandbox import workspace
        from authops.policies import budget
        from authops.sandbox.spec import EXAMPLES
        from authops.sandbox.spec.models import parse_text
        from bench.product_call import PURPOSE, setup

        info = setup(self.settings, self.scale, self.n_subjects, "truck")  # VINs, each with its consent
        self.product, self.subjects, self.purpose = info["product"], info["subjects"], PURPOSE
        flows.load_synthetic(self.settings, scale=self.scale, seed=5, only=set(RESOURCES))
        actor = audit_log.Actor(kind="system", name="faults")
        with core_db.session_scope(self.settings) as s:
            partner = s.exec(select(Organisation).where(Organisation.code == "bench-partner")).one()
            self.partner_org = partner.id
            ids.create_user(s, org=partner, username=ENGINEER, display_name="故障注入", password=PASSWORD,
                            roles=["partner_engineer"])
            ws = workspace.create_workspace(s, org_id=partner.id, name="fault lab", grants=GRANTS, actor=actor)
            for code in RESOURCES:
                budget.set_budget(s, org_id=partner.id, resource_code=code, epsilon=budget.MAX_EPSILON, actor=actor)
            s.flush()
            self.workspace = ws.id
            customer = s.exec(select(Organisation).where(Organisation.code == "bench-customer")).one()
            operator = s.exec(select(Organisation).where(Organisation.code == "bench-operator")).one()
            self.customer_org, self.operator_org = customer.id, operator.id
        self.spec = parse_text((EXAMPLES / "tax_arrears_by_industry.yaml").read_text(encoding="utf-8"))

    def _credentials(self) -> None:
        import httpx

        base = [f"http://127.0.0.1:{p}/api/v1" for p in self.ports]
        with httpx.Client(timeout=120) as client:  # a loaded machine makes password hashing slow
            r = client.post(f"{base[0]}/auth/login", json={"username": "bench-customer", "password": PASSWORD})
            r.raise_for_status()
            r = client.post(f"{base[0]}/api-keys", json={"name": "faults", "scopes": ["product.call"], "ttl_days": 1},
                            headers={"Authorization": f"Bearer {r.json()['access_token']}"})
            r.raise_for_status()
            self.api_key = r.json()["key"]
            r = client.post(f"{base[1]}/auth/login", json={"username": ENGINEER, "password": PASSWORD})
            r.raise_for_status()
            self.partner_token = r.json()["access_token"]

    # reading the database (the orchestrator's own connections survive restarts: pool_pre_ping)
    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        from authops.core import db as core_db

        with core_db.session_scope(self.settings) as s:
            yield s

    def max_job_id(self) -> int:
        from sqlalchemy import func, select

        from authops.core.jobs.models import Job

        with self.session() as s:
            return int(s.execute(select(func.max(Job.id))).scalar() or 0)

    def job_states(self, ids: list[int]) -> dict[int, str]:
        from sqlalchemy import select

        from authops.core.jobs.models import Job

        with self.session() as s:
            return {int(i): str(st) for i, st in s.execute(select(Job.id, Job.state).where(Job.id.in_(ids)))}

    def wait_jobs(self, ids: list[int], timeout: float) -> dict[int, str]:
        """Wait until every job is terminal (tolerating the database being briefly away)."""
        deadline = time.monotonic() + timeout
        states: dict[int, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                states = self.job_states(ids)
                if len(states) == len(ids) and all(v in ("succeeded", "failed", "cancelled") for v in states.values()):
                    return states
            time.sleep(0.5)
        return states


def _catching(fn: Callable[[], Any], errors: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
    return run


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """These AUTHOPS_* variables in this process (our settings, object store and engines follow)."""
    from authops.core import db as core_db
    from authops.core.settings import reset_settings
    from authops.core.storage import reset_object_stores

    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update(values)
    reset_settings()
    reset_object_stores()
    try:
        yield
    finally:
        core_db.dispose_engines()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()
        reset_object_stores()


# --- the call load (asyncio, raw HTTP/1.1 keep-alive, in a thread) ---------------------------------

@dataclass
class Call:
    key: str
    subject: str
    attempts: list[tuple[float, float, int, str]] = field(default_factory=list)  # (t0, t1, status, code)
    request_ids: set[str] = field(default_factory=set)
    amount_fen: int | None = None
    accepted_at: float | None = None
    refused: str | None = None  # a final 4xx (not retried)


async def _http(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, path: str,
                headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    reader, writer = conn
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    status = int(raw[9:12])
    length = 0
    for line in raw.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, (await reader.readexactly(length) if length else b"")


def _error_code(status: int, body: bytes) -> str:
    if status == 0:
        return "no_answer"
    with contextlib.suppress(Exception):
        return str(json.loads(body)["error"]["code"])
    return f"http_{status}"


class CallLoad:
    """`connections` keep-alive connections over the API ports, about `rate` new calls a second in all."""

    def __init__(self, world: World, *, connections: int = 4, rate: float = 30.0, timeout: float = 60.0,
                 retry_after: float = 0.3) -> None:
        self.world, self.connections, self.rate, self.timeout, self.retry_after = \
            world, connections, rate, timeout, retry_after
        self.calls: list[Call] = []
        self.retries: deque[tuple[float, Call]] = deque()
        self.issuing = True
        self.stopped = False
        self.thread: threading.Thread | None = None
        self.rng = random.Random(world.seed)

    def start(self) -> CallLoad:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="call-load", daemon=True)
        self.thread.start()
        return self

    def finish(self, drain_timeout: float = 90.0) -> None:
        """Stop sending new calls; retry the failed ones until each is accepted (or the time is up)."""
        self.issuing = False
        deadline = time.monotonic() + drain_timeout
        while self.retries and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stopped = True
        if self.thread is not None:
            self.thread.join(self.timeout + 10)

    async def _main(self) -> None:
        await asyncio.gather(*(self._connection(i) for i in range(self.connections)))

    def _next(self) -> Call | None:
        if self.retries and self.retries[0][0] <= time.monotonic():
            return self.retries.popleft()[1]
        if self.issuing:
            call = Call(key=uuid.uuid4().hex, subject=self.rng.choice(self.world.subjects))
            self.calls.append(call)
            return call
        return None

    async def _connection(self, i: int) -> None:
        port = self.world.ports[i % len(self.world.ports)]
        path = f"/api/v1/products/{self.world.product}/calls"
        pause = self.connections / self.rate
        conn = None
        while not self.stopped:
            call = self._next()
            if call is None:
                await asyncio.sleep(0.05)
                continue
            body = json.dumps({"subject": call.subject, "purpose": self.world.purpose}).encode()
            headers = {"Authorization": f"Bearer {self.world.api_key}", "Idempotency-Key": call.key,
                       "Content-Type": "application/json"}
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                status, raw = await asyncio.wait_for(_http(conn, "POST", path, headers, body), self.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError):
                if conn is not None:
                    conn[1].close()
                conn, status, raw = None, 0, b""
            t1 = time.monotonic()
            code = "ok" if status == 200 else _error_code(status, raw)
            call.attempts.append((t0, t1, status, code))
            if status == 200:
                out = json.loads(raw)
                call.request_ids.add(out["request_id"])
                call.amount_fen = int(out["metered"]["amount_fen"])
                call.accepted_at = call.accepted_at or t1
            elif status in RETRYABLE:
                self.retries.append((t1 + self.retry_after, call))
            else:
                call.refused = code
            await asyncio.sleep(pause * (0.5 + self.rng.random()))
        if conn is not None:
            conn[1].close()


# --- job submissions and result reads (threads, httpx) ---------------------------------------------

@dataclass
class Submission:
    kind: str  # sandbox | batch
    attempts: list[tuple[float, float, int, str]] = field(default_factory=list)
    job_id: int | None = None
    batch_id: int | None = None


class JobLoad:
    """Submits jobs through the API (sandbox and batch in turn); an error answer is submitted again."""

    def __init__(self, world: World, *, retry_after: float = 0.5, timeout: float = 120.0) -> None:
        import httpx

        self.world, self.retry_after = world, retry_after
        self.clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}/api/v1", timeout=timeout) for p in world.ports]
        self.submissions: list[Submission] = []
        self.lock = threading.Lock()
        self.turn = 0
        csv_lines = "\n".join(["subject", *world.subjects[:BATCH_SUBJECTS]]) + "\n"
        self.csv = csv_lines.encode()

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def _client(self):  # noqa: ANN202
        with self.lock:
            self.turn += 1
            return self.clients[self.turn % len(self.clients)]

    def submit(self, kind: str, give_up_at: float | None = None) -> Submission:
        import httpx

        sub = Submission(kind=kind)
        with self.lock:
            self.submissions.append(sub)
        w = self.world
        while True:
            client = self._client()
            t0 = time.monotonic()
            try:
                if kind == "sandbox":
                    r = client.post(f"/sandbox/workspaces/{w.workspace}/jobs", json={"kind": "spec", "spec": w.spec},
                                    headers={"Authorization": f"Bearer {w.partner_token}"})
                else:
                    r = client.post(f"/products/{w.product}/batches",
                                    files={"file": ("vins.csv", self.csv, "text/csv")}, data={"purpose": w.purpose},
                                    headers={"Authorization": f"Bearer {w.api_key}"})
                status, body = r.status_code, r.content
            except httpx.HTTPError:
                status, body = 0, b""
            t1 = time.monotonic()
            sub.attempts.append((t0, t1, status, "ok" if status == 202 else _error_code(status, body)))
            if status == 202:
                out = json.loads(body)
                sub.job_id = int(out["id"] if kind == "sandbox" else out["job_id"])
                sub.batch_id = None if kind == "sandbox" else int(out["id"])
                return sub
            if status not in RETRYABLE or (give_up_at is not None and t1 > give_up_at):
                return sub
            time.sleep(self.retry_after)

    def submit_many(self, n: int, threads: int = 4) -> list[Submission]:
        kinds = ["sandbox" if i % 2 == 0 else "batch" for i in range(n)]
        out: list[Submission] = []
        lock = threading.Lock()

        def run(mine: list[str]) -> None:
            for k in mine:
                s = self.submit(k)
                with lock:
                    out.append(s)
        ts = [threading.Thread(target=run, args=(kinds[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    def trickle(self, n: int, seconds: float) -> threading.Thread:
        """Submit n jobs spread evenly over `seconds`, in a thread."""
        def run() -> None:
            start = time.monotonic()
            for i in range(n):
                time.sleep(max(0.0, start + i * seconds / n - time.monotonic()))
                self.submit("sandbox" if i % 2 == 0 else "batch")
        t = threading.Thread(target=run, name="job-load", daemon=True)
        t.start()
        return t

    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.job_id is not None]


class ResultReader:
    """Reads finished results through the API in a loop; checks each answer is whole or a clean error."""

    def __init__(self, world: World, jobs: JobLoad) -> None:
        import httpx

        self.world, self.jobs = world, jobs
        self.client = httpx.Client(timeout=60)
        self.outcomes: Counter[str] = Counter()
        self.bad: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="result-reader", daemon=True)

    def start(self) -> ResultReader:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)
        self.client.close()

    def _run(self) -> None:
        import httpx

        w = self.world
        rng = random.Random(w.seed + 1)
        while not self.stopping.wait(0.2):
            done = [s for s in self.jobs.accepted()]
            if not done:
                continue
            sub = rng.choice(done)
            base = f"http://127.0.0.1:{rng.choice(w.ports)}/api/v1"
            try:
                if sub.kind == "sandbox":
                    r = self.client.get(f"{base}/sandbox/jobs/{sub.job_id}/results/vat_by_industry",
                                        headers={"Authorization": f"Bearer {w.partner_token}"})
                else:
                    r = self.client.get(f"{base}/products/{w.product}/batches/{sub.batch_id}/result",
                                        headers={"Authorization": f"Bearer {w.api_key}"})
            except httpx.HTTPError:
                self.outcomes["no_answer"] += 1
                continue
            if r.status_code == 200:
                problem = self._whole(sub, r)
                self.outcomes["whole" if problem is None else "HALF-WRITTEN"] += 1
                if problem:
                    self.bad.append(problem)
            elif r.status_code in (404, 409):  # not released yet / not ready yet
                self.outcomes["not_ready"] += 1
            else:
                code = _error_code(r.status_code, r.content)
                self.outcomes[f"{r.status_code} {code}"] += 1

    @staticmethod
    def _whole(sub: Submission, r: Any) -> str | None:
        try:
            if sub.kind == "sandbox":
                out = r.json()
                return None if len(out["data"]) == out["rows"] and out["rows"] > 0 else \
                    f"job {sub.job_id}: {len(out['data'])} rows of {out['rows']}"
            lines = r.content.decode("utf-8").strip().splitlines()
            return None if len(lines) == BATCH_SUBJECTS + 1 and lines[0].startswith("row,") else \
                f"batch {sub.batch_id}: {len(lines)} lines"
        except Exception as exc:  # noqa: BLE001 - any unreadable body is the finding
            return f"{sub.kind} job {sub.job_id}: unreadable result ({type(exc).__name__})"


# --- accounting ------------------------------------------------------------------------------------

def account_jobs(world: World, subs: list[Submission], since_job_id: int,
                 window: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """What happened to every accepted submission, from the database. `window`: the outage (UTC)."""
    from sqlalchemy import select

    from authops.audit.models import AuditEvent
    from authops.billing.models import UsageRecord
    from authops.core.jobs.models import Job, JobAttempt
    from authops.platform.products.models import ProductBatch
    from authops.policies.budget_models import BudgetReservation
    from authops.sandbox.models import SandboxRelease

    accepted = [s for s in subs if s.job_id is not None]
    ids = [s.job_id for s in accepted]
    with world.session() as s:
        jobs = {j.id: j for j in s.execute(select(Job).where(Job.id.in_(ids))).scalars()}
        outcomes: dict[int, list[str | None]] = {i: [] for i in ids}
        first_claim: dict[int, Any] = {}
        for job_id, outcome, at in s.execute(select(JobAttempt.job_id, JobAttempt.outcome, JobAttempt.started_at)
                                             .where(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.id)):
            outcomes[job_id].append(outcome)
            first_claim.setdefault(job_id, at)
        releases = Counter(j for (j,) in s.execute(select(SandboxRelease.job_id).where(SandboxRelease.job_id.in_(ids))))
        events = Counter((int(o), a) for o, a in s.execute(
            select(AuditEvent.object_id, AuditEvent.action).where(
                AuditEvent.object_type == "job", AuditEvent.object_id.in_([str(i) for i in ids]),
                AuditEvent.action.in_(["sandbox.release", "job.succeeded"]))))
        reservations: dict[int, Counter[str]] = {i: Counter() for i in ids}
        for job_id, state in s.execute(select(BudgetReservation.job_id, BudgetReservation.state)
                                       .where(BudgetReservation.job_id.in_(ids))):
            reservations[job_id][state] += 1
        batch_ids = [x.batch_id for x in accepted if x.batch_id is not None]
        usage = Counter(k for (k,) in s.execute(select(UsageRecord.idempotency_key).where(
            UsageRecord.idempotency_key.in_([f"batch-{b}" for b in batch_ids]))))
        batches = {b.id: b for b in s.execute(select(ProductBatch).where(ProductBatch.id.in_(batch_ids))).scalars()}
        # jobs created in the window that no client heard about (a submission whose answer was lost)
        created = set(s.execute(select(Job.id).where(Job.id > since_job_id, Job.kind.in_(
            ["sandbox.run", "products.batch"]))).scalars())
    phantom = sorted(created - set(ids))
    completed = duplicated = lost = failed_clean = rerun = 0
    problems: list[str] = []
    for sub in accepted:
        j = jobs.get(sub.job_id)
        o = outcomes.get(sub.job_id, [])
        rerun += len(o) > 1
        doubled = o.count("succeeded") > 1 or events[(sub.job_id, "job.succeeded")] > 1
        if sub.kind == "sandbox":
            doubled |= releases[sub.job_id] > 1 or events[(sub.job_id, "sandbox.release")] > 1 \
                or reservations[sub.job_id]["committed"] > 2  # one reservation per resource: 2
        else:
            doubled |= usage[f"batch-{sub.batch_id}"] > 1
        if doubled:
            duplicated += 1
            problems.append(f"job {sub.job_id} ({sub.kind}): an effect happened twice: attempts {o}, "
                            f"releases {releases[sub.job_id]}, usage {usage.get(f'batch-{sub.batch_id}')}")
        if j is None:
            lost += 1
            problems.append(f"job {sub.job_id} ({sub.kind}) was accepted but is not in the job table")
            continue
        if j.state == "succeeded":
            if sub.kind == "sandbox":
                whole = releases[sub.job_id] == 1 and reservations[sub.job_id] == Counter(committed=2) \
                    and events[(sub.job_id, "sandbox.release")] == 1
            else:
                b = batches.get(sub.batch_id)
                whole = usage[f"batch-{sub.batch_id}"] == 1 and b is not None and b.state == "done"
            whole &= o.count("succeeded") == 1 and events[(sub.job_id, "job.succeeded")] == 1
            if whole:
                completed += 1
            else:
                lost += 1
                problems.append(f"job {sub.job_id} ({sub.kind}) succeeded without its effects exactly once: "
                                f"attempts {o}, releases {releases[sub.job_id]}, reservations "
                                f"{dict(reservations[sub.job_id])}, usage {usage.get(f'batch-{sub.batch_id}')}")
        elif j.state == "failed":
            clean = releases[sub.job_id] == 0 and usage.get(f"batch-{sub.batch_id}", 0) == 0 and \
                reservations[sub.job_id]["reserved"] == 0 and reservations[sub.job_id]["committed"] == 0
            if clean:
                failed_clean += 1
            else:
                lost += 1
            problems.append(f"job {sub.job_id} ({sub.kind}) failed{' cleanly' if clean else ' LEAVING EFFECTS'}: "
                            f"{j.error_code}: {j.error_message}")
        else:
            lost += 1
            problems.append(f"job {sub.job_id} ({sub.kind}) is still {j.state} (attempts {o})")
    errors = Counter(a[3] for x in subs for a in x.attempts if a[2] != 202)
    # queue wait: from the job's creation to its first claim by a worker
    waits = {i: (first_claim[i] - jobs[i].created_at).total_seconds() for i in ids if i in first_claim and i in jobs}
    timing: dict[str, Any] = {"wait_s_median": round(statistics.median(waits.values()), 2) if waits else None,
                              "wait_s_max": round(max(waits.values()), 2) if waits else None}
    if window is not None:
        down, up = window
        during = [i for i in ids if i in jobs and down <= jobs[i].created_at <= up]
        after = [waits[i] for i in ids if i in jobs and i in waits and jobs[i].created_at > up]
        timing.update(accepted_in_outage=len(during),
                      wait_s_max_accepted_in_outage=round(max((waits[i] for i in during if i in waits), default=0), 2),
                      wait_s_max_accepted_after=round(max(after, default=0), 2))
    return {**timing, "submitted": len(accepted), "completed": completed, "failed_clean": failed_clean,
            "duplicated": duplicated, "lost": lost, "rerun": rerun, "phantom": len(phantom),
            "submit_errors": dict(errors), "unaccepted": len(subs) - len(accepted), "problems": problems}


def account_calls(world: World, calls: list[Call], outage: tuple[float, float] | None = None) -> dict[str, Any]:
    from sqlalchemy import select

    from authops.billing.models import UsageRecord

    keys = [c.key for c in calls]
    rows: dict[str, list[tuple[str, int]]] = {}
    with world.session() as s:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for key, rid, amount in s.execute(
                    select(UsageRecord.idempotency_key, UsageRecord.request_id, UsageRecord.amount_fen)
                    .where(UsageRecord.customer_org_id == world.customer_org, UsageRecord.idempotency_key.in_(chunk))):
                rows.setdefault(key, []).append((rid, amount))
    accepted = [c for c in calls if c.accepted_at is not None]
    recorded = sum(1 for c in accepted if len(rows.get(c.key, [])) >= 1)
    duplicated = sum(1 for c in calls if len(rows.get(c.key, [])) > 1 or len(c.request_ids) > 1)
    lost = sum(1 for c in accepted if not rows.get(c.key))
    mismatched = sum(1 for c in accepted if rows.get(c.key) and
                     (rows[c.key][0][0] not in c.request_ids or rows[c.key][0][1] != c.amount_fen))
    phantom = sum(1 for c in calls if c.accepted_at is None and rows.get(c.key))
    failures = [a for c in calls for a in c.attempts if a[2] != 200]
    out: dict[str, Any] = {
        "sent": len(calls), "accepted": len(accepted), "recorded": recorded, "duplicated": duplicated, "lost": lost,
        "mismatched": mismatched, "phantom": phantom, "never_accepted": len(calls) - len(accepted),
        "refused": dict(Counter(c.refused for c in calls if c.refused)),
        "failed_attempts": len(failures), "failure_codes": dict(Counter(f"{a[2]} {a[3]}" for a in failures)),
        "failure_ms_max": round(max((a[1] - a[0]) * 1000 for a in failures), 1) if failures else None,
        "failure_ms_median": round(statistics.median((a[1] - a[0]) * 1000 for a in failures), 1) if failures else None,
        "charged_fen": sum(c.amount_fen or 0 for c in accepted),
        "recorded_fen": sum(r[0][1] for k, r in rows.items() if r),
    }
    if outage is not None:
        start, end = outage
        oks = sorted(a[1] for c in calls for a in c.attempts if a[2] == 200 and a[0] >= end)
        out["first_success_after_s"] = round(oks[0] - end, 2) if oks else None
        during = [a for c in calls for a in c.attempts if start <= a[0] <= end]
        out["attempts_in_outage"] = len(during)
        out["failed_in_outage"] = sum(1 for a in during if a[2] != 200)
    return out


def account_books(world: World, sandbox_done: int) -> dict[str, Any]:
    """Money and budget across the whole run: they must balance exactly."""
    from sqlalchemy import func, select

    from authops.audit.models import AuditEvent
    from authops.billing.models import RevenueCounter, UsageRecord
    from authops.policies import budget

    with world.session() as s:
        usage_fen = int(s.execute(select(func.coalesce(func.sum(UsageRecord.amount_fen), 0)).where(
            UsageRecord.operator_org_id == world.operator_org)).scalar())
        counter_fen = int(s.execute(select(func.coalesce(func.sum(RevenueCounter.revenue_fen), 0)).where(
            RevenueCounter.operator_org_id == world.operator_org)).scalar())
        call_rows = int(s.execute(select(func.count()).select_from(UsageRecord).where(
            UsageRecord.channel == "call")).scalar())
        call_events = int(s.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "product.call")).scalar())
        balances = {b["resource"]: b for b in budget.balances(s, world.partner_org) if b["period"] != "lifetime"}
        ledger = budget.check_ledger(s)
    spent = {k: v["epsilon_spent_micro"] for k, v in balances.items()}
    reserved = {k: v["epsilon_reserved_micro"] for k, v in balances.items()}
    return {"usage_fen": usage_fen, "revenue_counter_fen": counter_fen, "call_usage_records": call_rows,
            "call_audit_events": call_events, "epsilon_spent_micro": spent, "epsilon_reserved_micro": reserved,
            "sandbox_jobs_succeeded": sandbox_done, "ledger_problems": ledger,
            "balanced": usage_fen == counter_fen and call_rows == call_events and not ledger
            and all(v == sandbox_done * budget.MICRO for v in spent.values())
            and all(v == 0 for v in reserved.values())}


def scan_store(world: World) -> dict[str, Any]:
    """Every object the database points at reads back whole; objects without a key record are orphans."""
    from sqlalchemy import select

    from authops.core.errors import AuthopsError
    from authops.core.storage import get_object_store
    from authops.core.storage.store import RECORD_SUFFIX, RESERVED_PREFIX
    from authops.platform.catalog.models import Dataset
    from authops.platform.products.models import ProductBatch
    from authops.sandbox.models import SandboxRelease

    store = get_object_store(world.settings)
    with world.session() as s:
        keys = set(s.execute(select(SandboxRelease.object_key)).scalars())
        keys |= {k for k in s.execute(select(ProductBatch.result_object_key)).scalars() if k}
        keys |= {k for k in s.execute(select(ProductBatch.input_object_key)).scalars() if k}
        keys |= {k for k in s.execute(select(Dataset.object_key)).scalars() if k}
    bad = []
    for key in sorted(keys):
        try:
            store.get(key)
        except AuthopsError as exc:
            bad.append(f"{key}: {exc.code}")
    names = set(store.backend.list(""))
    data = {n for n in names if not n.startswith(RESERVED_PREFIX)}
    records = {n[len(RESERVED_PREFIX):-len(RECORD_SUFFIX)] for n in names if n.startswith(RESERVED_PREFIX)}
    orphans = sorted(data - records)
    unreadable_orphans = 0
    for key in orphans:
        with contextlib.suppress(AuthopsError):
            store.get(key)
            unreadable_orphans -= 1  # an orphan must never read as an object
    return {"referenced": len(keys), "referenced_unreadable": bad, "objects": len(data),
            "orphans": len(orphans), "orphans_readable": -unreadable_orphans}


# --- scenarios -------------------------------------------------------------------------------------

def _running_by_worker(world: World) -> dict[str, list[tuple[int, int, int]]]:
    """slot → [(job id, attempts, max attempts)] of the jobs each worker slot holds a lease on."""
    from sqlalchemy import select

    from authops.core.jobs.models import Job

    out: dict[str, list[tuple[int, int, int]]] = {}
    with world.session() as s:
        for job_id, owner, attempts, most in s.execute(select(Job.id, Job.lease_owner, Job.attempts, Job.max_attempts)
                                                       .where(Job.state == "running")):
            slot = (owner or "").split("-g", 1)[0]
            out.setdefault(slot, []).append((job_id, attempts, most))
    return out


def scenario_kill(world: World, *, jobs: int, kills: int, gap: tuple[float, float] = (0.5, 2.5),
                  timeout: float = 600.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """`jobs` jobs; SIGKILL a worker `kills` times, at random moments while it runs one."""
    rng = random.Random(world.seed + 7)
    since = world.max_job_id()
    load = JobLoad(world)
    started = time.monotonic()
    submitter = threading.Thread(target=load.submit_many, args=(jobs,), daemon=True)
    submitter.start()
    killed: Counter[str] = Counter()
    restarts: list[threading.Thread] = []
    slots = [f"{world.workers.prefix}{i + 1}" for i in range(world.n_workers)]
    while time.monotonic() - started < timeout and sum(killed.values()) < kills:
        time.sleep(rng.uniform(*gap))
        accepted = [s.job_id for s in load.accepted()]
        if not submitter.is_alive():
            states = world.job_states(accepted)
            if all(v in ("succeeded", "failed", "cancelled") for v in states.values()):
                break
        try:
            running = _running_by_worker(world)
        except Exception:  # noqa: BLE001 - not this scenario's fault to find
            continue
        # a worker running a job, none of its jobs on its last attempt
        targets = [slot for slot in slots if slot in world.workers.workers and running.get(slot)
                   and all(att < most for _, att, most in running[slot])]
        if not targets:
            continue
        slot = rng.choice(targets)
        whole = len(world.workers.workers) == len(slots) and rng.random() < 0.5
        world.workers.kill(slot, whole=whole)
        killed["worker (main + pool)" if whole else "pool process"] += 1
        if whole:
            def restart(slot: str = slot) -> None:
                time.sleep(0.5)
                world.workers.start_one(slot)
            t = threading.Thread(target=restart, daemon=True)
            t.start()
            restarts.append(t)
    submitter.join()
    for t in restarts:
        t.join(120)
    accepted = [s.job_id for s in load.accepted()]
    states = world.wait_jobs(accepted, max(30.0, timeout - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    load.close()
    figures = account_jobs(world, load.submissions, since)
    figures.update(kills=dict(killed), kills_total=sum(killed.values()), seconds=round(elapsed, 1),
                   states=dict(Counter(states.values())))
    say(f"kill: {figures['submitted']} jobs, {figures['kills_total']} kills {dict(killed)}, "
        f"{figures['rerun']} re-run, {elapsed:.0f} s")
    return figures


def _outage(world: World, name: str, down: Callable[[], None], up: Callable[[], None], *, outage: float,
            jobs: int, rate: float, before: float = 2.0, after: float = 3.0, reader: bool = False,
            timeout: float = 180.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    since = world.max_job_id()
    calls = CallLoad(world, rate=rate).start()
    load = JobLoad(world)
    span = before + outage + after
    feeder = load.trickle(jobs, span)
    results = ResultReader(world, load).start() if reader else None
    from authops.core.clock import utcnow

    time.sleep(before)
    # strike while a job of the load runs (up to 10 s more), so the fault lands inside one
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if "running" in world.job_states([s.job_id for s in load.accepted()]).values():
                break
        time.sleep(0.05)
    t_down, utc_down = time.monotonic(), utcnow()
    down()
    time.sleep(max(0.0, outage - (time.monotonic() - t_down)))
    up()
    t_up, utc_up = time.monotonic(), utcnow()
    time.sleep(after)
    feeder.join(120)
    calls.finish()
    if results is not None:
        results.stop()
    accepted = [s.job_id for s in load.accepted()]
    states = world.wait_jobs(accepted, timeout)
    load.close()
    figures = {"jobs": account_jobs(world, load.submissions, since, (utc_down, utc_up)),
               "calls": account_calls(world, calls.calls, (t_down, t_up)),
               "outage_s": round(t_up - t_down, 1), "states": dict(Counter(states.values()))}
    if results is not None:
        figures["reads"] = dict(results.outcomes)
        figures["half_written_reads"] = len(results.bad)
        figures["half_written_examples"] = results.bad[:5]
    j, c = figures["jobs"], figures["calls"]
    say(f"{name}: jobs {j['submitted']} accepted, {j['completed']} completed, {j['failed_clean']} failed cleanly, "
        f"{j['lost']} lost; calls {c['accepted']}/{c['sent']} accepted, {c['failed_attempts']} failed attempts "
        f"{c['failure_codes']}")
    return figures


def scenario_broker(world: World, *, outage: float, jobs: int, rate: float, **kw: Any) -> dict[str, Any]:
    return _outage(world, "broker", world.redis.kill, world.redis.start, outage=outage, jobs=jobs, rate=rate, **kw)


def scenario_postgres(world: World, *, outage: float, jobs: int, rate: float, **kw: Any) -> dict[str, Any]:
    return _outage(world, "postgres", lambda: world.pg.stop("immediate"), world.pg.start, outage=outage, jobs=jobs,
                   rate=rate, **kw)


def scenario_store(world: World, *, outage: float, jobs: int, rate: float, **kw: Any) -> dict[str, Any]:
    """First flaky (connections cut mid-transfer) for half the outage, then unreachable."""
    def down() -> None:
        world.proxy.set_mode("cut")
        time.sleep(outage / 2)
        world.proxy.set_mode("down")

    figures = _outage(world, "store", down, lambda: world.proxy.set_mode("pass"), outage=outage, jobs=jobs,
                      rate=rate, reader=True, **kw)
    figures["proxy"] = dict(world.proxy.counts)
    figures["store"] = scan_store(world)
    return figures


def _lease_pid(world: World, job_id: int, timeout: float = 60.0) -> int:
    """The pid of the pool process holding the job's lease (lease_owner is "name@host:pid")."""
    from authops.core.jobs.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with world.session() as s:
            job = s.get(Job, job_id)
            if job is not None and job.state == "running" and job.lease_owner:
                return int(job.lease_owner.rsplit(":", 1)[1])
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} was not running after {timeout:.0f} s")


def scenario_stale_attempt(world: World, *, timeout: float = 120.0) -> dict[str, Any]:
    """A worker frozen (SIGSTOP: a paused VM, a GC or swap stall) while it stores a sandbox job's release,
    until its lease has expired and another worker has run the job to the end; then it resumes.

    Its request to store the release is held by the proxy, so the freeze lands exactly between the
    attempt's last lease check and its write. The committed release must stay what was committed.
    """
    import signal

    from sqlmodel import select

    from authops.core.errors import AuthopsError
    from authops.core.jobs.models import JobAttempt
    from authops.core.storage import get_object_store
    from authops.core.storage.store import RECORD_SUFFIX, RESERVED_PREFIX
    from authops.sandbox.models import SandboxRelease

    store = get_object_store(world.settings)
    load = JobLoad(world)
    held = world.proxy.hold(f"PUT /{world.settings.storage_bucket}/releases/".encode())
    sub = load.submit("sandbox")
    load.close()
    job_id = sub.job_id
    if job_id is None or not held.wait(timeout):
        world.proxy.release()
        raise RuntimeError(f"the release write of job {job_id} never came")
    pid = _lease_pid(world, job_id)
    os.kill(pid, signal.SIGSTOP)
    try:
        states = world.wait_jobs([job_id], timeout)
        with world.session() as s:
            key = s.exec(select(SandboxRelease.object_key).where(SandboxRelease.job_id == job_id)).first()
        if key is None:
            raise RuntimeError(f"job {job_id} ended {states} without a release while its first attempt was frozen")
        record = RESERVED_PREFIX + key + RECORD_SUFFIX
        prefix = RESERVED_PREFIX + f"releases/{job_id}/"
        committed, committed_record = store.get(key), store.backend.read(record)
        records = set(store.backend.list(prefix))
    finally:
        os.kill(pid, signal.SIGCONT)
        world.proxy.release()
    # wait for the resumed attempt to end (its worker logs it) and for what it wrote
    logs = [p.log_path for p in world.workers.all]  # type: ignore[attr-defined]
    ended = (f"job {job_id}: lease lost", f"job {job_id} (sandbox.run) raised")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(m in _read(path) for path in logs for m in ended):
        time.sleep(0.2)
    wrote = False
    with contextlib.suppress(AuthopsError):
        wrote = set(store.backend.list(prefix)) != records or store.backend.read(record) != committed_record
    try:
        now = store.get(key)
        verdict = "unchanged" if now == committed else "REPLACED by the stale attempt's output"
    except AuthopsError as exc:
        verdict = f"UNREADABLE ({exc.code})"
    with world.session() as s:
        attempts = [(a.worker.split("@")[0], a.outcome) for a in s.exec(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id))]
    return {"job": job_id, "state": states.get(job_id), "attempts": attempts, "release_key": key,
            "resumed_attempt_wrote": wrote, "committed_release": verdict}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def scenario_concurrent_uploads(world: World, *, timeout: float = 120.0) -> dict[str, Any]:
    """A department uploads two files of one resource at once, and two workers load them side by side.

    The first load's dataset write is held by the proxy until the second load has finished or waits
    for the first (a database lock). Each committed dataset version must hold the data its row
    describes (its checksum), and both loads must succeed."""
    import httpx
    from sqlalchemy import text
    from sqlmodel import select

    from authops.core import db as core_db
    from authops.core.errors import AuthopsError
    from authops.core.identity import OrgKind
    from authops.core.storage import get_object_store
    from authops.platform.catalog.models import DataResource, Dataset, IngestRun
    from authops.platform.identity import service as ids
    from tests.support.catalog import IDS, NAMES, PHONES, make_resource

    code = "fault_persons"
    with world.session() as s:
        res = s.exec(select(DataResource).where(DataResource.code == code)).first()
        if res is None:
            dept = ids.create_org(s, kind=OrgKind.PROVIDER, code="fault-dept", name_zh="故障部门", name_en="Fault dept")
            s.flush()
            ids.create_user(s, org=dept, username="fault-officer", display_name="故障", password=PASSWORD,
                            roles=["provider_data_officer"])
            res = make_resource(s, dept, code=code)
        resource_id = res.id
    base = [f"http://127.0.0.1:{p}/api/v1" for p in world.ports]
    token = httpx.post(f"{base[0]}/auth/login", json={"username": "fault-officer", "password": PASSWORD},
                       timeout=120).json()["access_token"]

    def upload(i: int, rows: list[int]) -> dict[str, Any]:
        lines = ["id_number,name,phone,sex,paid,paid_on",
                 *(f"{IDS[r]},{NAMES[r]},{PHONES[r]},男,{10 + r},2025-01-31" for r in rows)]
        r = httpx.post(f"{base[i]}/catalog/resources/{code}/uploads", headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("batch.csv", ("\n".join(lines) + "\n").encode(), "text/csv")}, timeout=120)
        r.raise_for_status()
        return r.json()

    def lock_wait() -> bool:
        with core_db.get_engine(world.settings).connect() as conn:
            return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND wait_event_type = 'Lock'")).scalar())

    held = world.proxy.hold(f"PUT /{world.settings.storage_bucket}/datasets/{code}/".encode())
    try:
        first = upload(0, [0, 1])
        if not held.wait(timeout):
            raise RuntimeError("the first load's dataset write never came")
        second = upload(1, [2, 3])
        deadline, meanwhile = time.monotonic() + timeout, "timeout"
        while time.monotonic() < deadline:  # the second load finished, or waits for the first one's lock
            if world.job_states([second["job_id"]]).get(second["job_id"]) in ("succeeded", "failed"):
                meanwhile = "the second load ended"
                break
            if lock_wait():
                meanwhile = "the second load waited for the first"
                break
            time.sleep(0.1)
    finally:
        world.proxy.release()
    jobs = [first["job_id"], second["job_id"]]
    states = world.wait_jobs(jobs, timeout)
    store = get_object_store(world.settings)
    with world.session() as s:
        runs = {u["run"]["id"]: s.get(IngestRun, u["run"]["id"]) for u in (first, second)}
        outcome = {rid: (r.state, (r.message or "")[:80]) for rid, r in runs.items()}
        datasets = s.exec(select(Dataset).where(Dataset.resource_id == resource_id).order_by(Dataset.version)).all()
        versions = []
        for d in datasets:
            try:
                info = store.stat(d.object_key)
                versions.append((d.version, d.load_id, "intact" if info.sha256 == d.sha256 else
                                 "HOLDS ANOTHER LOAD'S DATA"))
            except AuthopsError as exc:
                versions.append((d.version, d.load_id, f"UNREADABLE ({exc.code})"))
    return {"jobs": states, "runs": outcome, "datasets": versions, "while_held": meanwhile}


# --- the table -------------------------------------------------------------------------------------

def table(results: dict[str, Any]) -> str:
    rows = [("scenario", "jobs sub", "done", "failed clean", "dup", "lost", "re-run", "calls acc", "recorded", "dup",
             "lost", "failed in outage", "fail ms max", "back after s")]
    names = {"kill": "SIGKILL workers", "broker": "restart broker", "postgres": "restart PostgreSQL",
             "store": "object store cut+down"}
    for key, name in names.items():
        r = results.get(key)
        if r is None:
            continue
        j = r if key == "kill" else r["jobs"]
        c = r.get("calls")
        label = f"{name} ({r['kills_total']} kills)" if key == "kill" else f"{name} ({r['outage_s']} s)"
        rows.append((label, j["submitted"], j["completed"], j["failed_clean"], j["duplicated"], j["lost"], j["rerun"],
                     *((c["accepted"], c["recorded"], c["duplicated"], c["lost"], c["failed_in_outage"],
                        c["failure_ms_max"] if c["failure_ms_max"] is not None else "-",
                        c["first_success_after_s"] if c["first_success_after_s"] is not None else "-")
                       if c else ("-",) * 7)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    books = results.get("books")
    if books:
        lines.append("-" * len(lines[0]))
        lines.append(f"money: usage records {books['usage_fen']} fen = revenue counter {books['revenue_counter_fen']} "
                     f"fen; product.call audit events {books['call_audit_events']} = call usage records "
                     f"{books['call_usage_records']}")
        lines.append(f"budget: ε spent (micro) {books['epsilon_spent_micro']} for {books['sandbox_jobs_succeeded']} "
                     f"succeeded sandbox jobs x 1 ε; reserved {books['epsilon_reserved_micro']}; ledger problems "
                     f"{len(books['ledger_problems'])}")
    stale = results.get("stale")
    if stale:
        lines.append(f"frozen attempt (SIGSTOP while storing its release, resumed after another attempt committed): "
                     f"attempts {[o for _, o in stale['attempts']]}, it wrote again: {stale['resumed_attempt_wrote']}; "
                     f"committed release {stale['committed_release']}")
    uploads = results.get("uploads")
    if uploads:
        lines.append(f"two uploads of one resource loaded at once: runs {[v[0] for v in uploads['runs'].values()]}; "
                     f"dataset versions {[(v, state) for v, _, state in uploads['datasets']]}")
    store = results.get("store")
    if store:
        st = store["store"]
        lines.append(f"store: reads during the fault {store.get('reads')}; half-written reads "
                     f"{store['half_written_reads']}; objects referenced {st['referenced']}, unreadable "
                     f"{len(st['referenced_unreadable'])}; orphans (no key record, never readable) {st['orphans']}, "
                     f"readable {st['orphans_readable']}")
    return "\n".join(lines)


def zero_loss(results: dict[str, Any]) -> list[str]:
    """Every way the run could have lost or doubled something; empty when the acceptance holds."""
    problems = []
    for key in ("kill", "broker", "postgres", "store"):
        r = results.get(key)
        if r is None:
            continue
        j = r if key == "kill" else r["jobs"]
        if j["duplicated"] or j["lost"]:
            problems.append(f"{key}: {j['duplicated']} jobs duplicated, {j['lost']} lost: {j['problems'][:5]}")
        if key != "store" and j["failed_clean"]:
            problems.append(f"{key}: {j['failed_clean']} jobs failed: {j['problems'][:5]}")
        c = r.get("calls")
        if c and (c["duplicated"] or c["lost"] or c["mismatched"] or c["never_accepted"] or c["refused"]):
            problems.append(f"{key}: calls duplicated {c['duplicated']}, lost {c['lost']}, mismatched "
                            f"{c['mismatched']}, never accepted {c['never_accepted']}, refused {c['refused']}")
    books = results.get("books")
    if books and not books["balanced"]:
        problems.append(f"books do not balance: {books}")
    stale = results.get("stale")
    if stale and stale["committed_release"] != "unchanged":
        problems.append(f"a frozen attempt resuming after its lease expired left the committed release "
                        f"{stale['committed_release']} (job {stale['job']}, {stale['release_key']})")
    uploads = results.get("uploads")
    if uploads and (any(v[2] != "intact" for v in uploads["datasets"])
                    or any(v[0] != "succeeded" for v in uploads["runs"].values())):
        problems.append(f"two concurrent loads of one resource: runs {uploads['runs']}, datasets {uploads['datasets']}")
    store = results.get("store")
    if store and (store["half_written_reads"] or store["store"]["referenced_unreadable"]
                  or store["store"]["orphans_readable"]):
        problems.append(f"store: half-written reads {store['half_written_examples']}, unreadable "
                        f"{store['store']['referenced_unreadable'][:5]}, readable orphans "
                        f"{store['store']['orphans_readable']}")
    return problems


def run(folder: Path, *, jobs: int, kills: int, outage: float, outage_jobs: int, rate: float, workers: int,
        concurrency: int, scale: float, subjects: int, seed: int, scenarios: tuple[str, ...] = SCENARIOS,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {"seed": seed}
    with World(folder, workers=workers, concurrency=concurrency, scale=scale, subjects=subjects, seed=seed) as world:
        say(f"world up: {', '.join(f'{k} {v:.1f}' for k, v in world.timings.items())} "
            f"(PostgreSQL :{world.pg.port}, redis :{world.redis.port}, S3 proxy :{world.proxy.port}, "
            f"APIs :{world.ports}, {workers} workers x {concurrency})")
        results["setup"] = {k: round(v, 1) for k, v in world.timings.items()}
        if "kill" in scenarios:
            results["kill"] = scenario_kill(world, jobs=jobs, kills=kills, say=say)
        if "broker" in scenarios:
            results["broker"] = scenario_broker(world, outage=outage, jobs=outage_jobs, rate=rate, say=say)
        if "postgres" in scenarios:
            results["postgres"] = scenario_postgres(world, outage=outage, jobs=outage_jobs, rate=rate, say=say)
        if "store" in scenarios:
            results["store"] = scenario_store(world, outage=outage, jobs=outage_jobs, rate=rate, say=say)
        if "stale" in scenarios:
            results["stale"] = scenario_stale_attempt(world)
            say(f"stale: {results['stale']}")
        if "uploads" in scenarios:
            results["uploads"] = scenario_concurrent_uploads(world)
            say(f"uploads: {results['uploads']}")
        results["books"] = account_books(world, sandbox_succeeded(world))
    return results


def sandbox_succeeded(world: World) -> int:
    from sqlalchemy import func, select

    from authops.core.jobs.models import Job

    with world.session() as s:
        return int(s.execute(select(func.count()).select_from(Job).where(Job.kind == "sandbox.run",
                                                                       Job.state == "succeeded")).scalar())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100, help="jobs in the worker-kill scenario")
    ap.add_argument("--kills", type=int, default=25, help="SIGKILLs during the worker-kill scenario")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds each outage lasts")
    ap.add_argument("--outage-jobs", type=int, default=20, help="jobs submitted during each outage scenario")
    ap.add_argument("--rate", type=float, default=30.0, help="new product calls a second during the outages")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--scale", type=float, default=0.01)
    ap.add_argument("--subjects", type=int, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", nargs="*", choices=SCENARIOS)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faults.json")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1_000_000)
    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    started = time.perf_counter()
    results = run(folder, jobs=a.jobs, kills=a.kills, outage=a.outage, outage_jobs=a.outage_jobs, rate=a.rate,
                  workers=a.workers, concurrency=a.concurrency, scale=a.scale, subjects=a.subjects, seed=seed,
                  scenarios=tuple(a.only or SCENARIOS))
    results.update(when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=platform.platform(), cores=os.cpu_count(),
                   seconds=round(time.perf_counter() - started, 1),
                   settings={k: v for k, v in vars(a).items() if k != "out"} | {"seed": seed})
    results["problems"] = zero_loss(results)
    print()
    print(table(results))
    print(f"\nzero lost and zero duplicated jobs, calls and charges: {'YES' if not results['problems'] else 'NO'}")
    for p in results["problems"]:
        print("  " + p)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"wrote {a.out} (seed {seed}, {results['seconds']} s)")
    if results["problems"]:
        print(f"kept the run's folder (service, API and worker logs): {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
