"""Sandbox jobs on real Celery workers: a worker killed mid-job, and 20 jobs racing for a budget of 5.

Each test gets its own embedded broker (valkey in the test's data folder), so runs on the same
machine never share a queue. Workers are real `celery worker` processes started with the
test's environment (short lease, fast maintenance loop); see tests/support/workers.py.

Killing a worker: its main process and pool processes get SIGKILL at once, as in an OOM kill
or a crashed host. Whatever the killed attempt had written must vanish with it; the job's
lease expires, the second worker's maintenance loop re-queues it, and the job runs again
from the start and releases exactly once. Two places to be killed: in the jail, running partner
code (both databases), and inside the job's final transaction, after it wrote its release and
settled its budget reservation but before the commit (PostgreSQL: the test holds the budget rows
the way a bureau changing the cap at that moment would).

Racing for the budget: 20 threads, each with its own session, submit at once against a budget
that allows 5; then two workers run the 5 accepted jobs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, text
from sqlmodel import Session, select

from authops.audit.models import AuditEvent
from authops.core import db as core_db
from authops.core.broker import EmbeddedBroker
from authops.core.errors import AuthopsError
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.core.jobs.models import TERMINAL_STATES, Job, JobAttempt, JobState
from authops.core.settings import Settings, reset_settings
from authops.platform.catalog import csvload, flows, service
from authops.platform.sandbox import jobs, workspace
from authops.policies import budget
from authops.policies.budget_models import MICRO, BudgetReservation
from authops.sandbox.jail import JailConfig
from authops.sandbox.models import SandboxJob, SandboxRelease, Workspace
from authops.sandbox.spec import EXAMPLES
from authops.sandbox.spec.models import parse_text
from tests.support.builders import make_org
from tests.support.catalog import ACTOR
from tests.support.services import services_required
from tests.support.workers import pool_children, running_worker, tail

T = TypeVar("T")

RESOURCES = ("enterprise_basic_info", "enterprise_tax")  # what tax_arrears_by_industry reads
GRANTS = [{"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "vat_amount", "has_violation_record"]},
          {"resource": "enterprise_basic_info", "fields": ["uscc", "enterprise_name", "registered_capital"]}]
WORKER_ENV = {"job_lease_seconds": "3", "maintenance_interval_seconds": "0.5", "job_redispatch_seconds": "5"}
JAIL_UIDS = range(JailConfig().base_uid, JailConfig().base_uid + 64)  # jail_slot()'s 64 slots

# Partner code that holds the jail for a while before scoring: long enough to be killed in it.
SLOW_MANIFEST = {"name": "slow_capital_score",
                 "inputs": [{"alias": "basic", "resource": "enterprise_basic_info", "version": 1,
                             "fields": ["uscc", "registered_capital"]}],
                 "outputs": [{"name": "scores", "release": {"policy": "model", "key": "uscc", "score": "score",
                                                            "bounds": [0, 1]}}]}
SLOW_CODE = """
import time

import pandas as pd

def run(inputs, params):
    time.sleep(params["sleep"])
    df = inputs["basic"]
    cap = df["registered_capital"].fillna(0).astype("float64")
    return {"scores": pd.DataFrame({"uscc": df["uscc"], "score": cap / (cap.max() or 1)})}
"""


def _jail_missing() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    if os.geteuid() != 0:
        return "the jail is started by root (it drops each job to a per-slot uid)"
    return None


def _need_jail() -> None:
    why = _jail_missing()
    if why and services_required():
        pytest.fail(why + " and AUTHOPS_REQUIRE_SERVICES=1", pytrace=False)
    if why:
        pytest.skip(why)


# --- the world ------------------------------------------------------------------------------------

@pytest.fixture
def lab(session, db_settings, monkeypatch) -> Iterator[SimpleNamespace]:
    """Catalogue + synthetic tax and registration data, a partner's workspace, an embedded broker."""
    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(db_settings, scale=0.01, seed=5, only=set(RESOURCES))
    partner = make_org(session, OrgKind.PARTNER)
    ws = workspace.create_workspace(session, org_id=partner.id, name="worker lab", grants=GRANTS, actor=ACTOR)
    session.commit()
    for key, value in WORKER_ENV.items():  # workers inherit this process's environment
        monkeypatch.setenv(f"AUTHOPS_{key.upper()}", value)
    reset_settings()
    settings = Settings()
    assert settings.job_lease_seconds == 3 and not settings.broker_url
    with EmbeddedBroker(settings):
        yield SimpleNamespace(settings=settings, ws=ws, org_id=partner.id)


def _example(name: str) -> dict[str, Any]:
    return parse_text((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))


def _set_budgets(session: Session, org_id: int, epsilon: float) -> None:
    for code in RESOURCES:
        budget.set_budget(session, org_id=org_id, resource_code=code, epsilon=epsilon, actor=ACTOR)


# --- reading the database (a fresh session each time: SQLite snapshots must not go stale) ----------

def _job(settings: Settings, job_id: int) -> Job:
    with core_db.session_scope(settings) as s:
        return job_service.get_job(s, job_id)


def _attempts(settings: Settings, job_id: int) -> list[tuple[str | None, str]]:
    with core_db.session_scope(settings) as s:
        return [(a.outcome, a.worker) for a in s.exec(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id))]


def _releases(settings: Settings, job_id: int) -> Counter[str]:
    with core_db.session_scope(settings) as s:
        return Counter(r.output for r in s.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)))


def _audit_actions(settings: Settings, job_id: int) -> Counter[str]:
    with core_db.session_scope(settings) as s:
        return Counter(s.exec(select(AuditEvent.action).where(AuditEvent.object_type == "job",
                                                              AuditEvent.object_id == str(job_id))))


def _reservation_states(settings: Settings, job_id: int) -> dict[str, tuple[str, int]]:
    with core_db.session_scope(settings) as s:
        return {r.resource_code: (r.state, r.epsilon_spent) for r in s.exec(
            select(BudgetReservation).where(BudgetReservation.job_id == job_id))}


def _balances(settings: Settings, org_id: int) -> dict[str, dict[str, Any]]:
    with core_db.session_scope(settings) as s:
        return {b["resource"]: b for b in budget.balances(s, org_id) if b["period"] != "lifetime"}


def _ledger_problems(settings: Settings) -> list[str]:
    with core_db.session_scope(settings) as s:
        return budget.check_ledger(s)


# --- waiting, with the workers' logs in every failure ----------------------------------------------

def _logs(workers: list[subprocess.Popen[bytes]]) -> str:
    return "\n".join(f"--- {w.log_path.name} (tail) ---\n{tail(w.log_path)}" for w in workers)  # type: ignore[attr-defined]


def _wait_until(check: Callable[[], T | None], timeout: float, what: str,
                workers: list[subprocess.Popen[bytes]], state: Callable[[], object] = lambda: "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s; {state()}\n{_logs(workers)}", pytrace=False)
        time.sleep(0.1)


def _wait_done(settings: Settings, ids: list[int], timeout: float,
               workers: list[subprocess.Popen[bytes]]) -> dict[int, str]:
    def states() -> dict[int, str]:
        with core_db.session_scope(settings) as s:
            rows = s.exec(select(Job.id, Job.state).where(Job.id.in_(ids))).all()  # type: ignore[call-overload,union-attr]
        return {job_id: JobState(state).value for job_id, state in rows}

    return _wait_until(lambda: (got := states()) and all(JobState(v) in TERMINAL_STATES for v in got.values())
                       and got, timeout, f"jobs {ids} finished", workers,
                       lambda: f"states {Counter(states().values())}")


# --- processes ------------------------------------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, str, set[int]]]:
    """pid → (parent pid, start time in ticks, uids) of every live process, via /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        uids = {int(x) for x in next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]}
        table[int(entry.name)] = (int(fields[1]), fields[19], uids)
    return table


def _descendants(root: int) -> dict[int, str]:
    """pid → start time of every live descendant of `root` (the start time tells a reused pid apart)."""
    table = _proc_table()
    out, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, started, _) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = started
                todo.append(pid)
    return out


def _jail_of(worker: subprocess.Popen[bytes]) -> dict[int, str]:
    """The jail the worker's pool is running (bwrap and everything under it), once the jailed
    partner code runs under a slot uid; else {}."""
    table = _proc_table()
    found = {pid: started for child in pool_children(worker.pid) for pid, started in _descendants(child).items()}
    return found if any(table.get(pid, (0, "", set()))[2] & set(JAIL_UIDS) for pid in found) else {}


def _still_running(procs: dict[int, str]) -> dict[int, str]:
    table = _proc_table()
    return {pid: started for pid, started in procs.items() if pid in table and table[pid][1] == started}


def _kill_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's main process and its pool processes at once, then reap the main one."""
    table = _proc_table()
    pids = {pid: table[pid][1] for pid in (worker.pid, *pool_children(worker.pid)) if pid in table}
    assert len(pids) >= 2, f"worker {worker.pid} has no pool process to kill: {pids}"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(10)
    _wait_until(lambda: not _still_running(pids), 10, f"worker processes {sorted(pids)} gone after SIGKILL",
                [worker])


def _stuck(settings: Settings, job_id: int, check: Callable[[Job], T | None]) -> Callable[[], T | None]:
    """check(job) while the job runs; fails at once if it finished first (the kill came too late)."""
    def probe() -> T | None:
        job = _job(settings, job_id)
        if JobState(job.state) in TERMINAL_STATES:
            pytest.fail(f"job {job_id} ended ({job.state}: {job.error_message}) before the worker was killed",
                        pytrace=False)
        return check(job) if JobState(job.state) == JobState.RUNNING else None
    return probe


# --- a. a worker killed during a job --------------------------------------------------------------

def _plaintext_folders(pids: dict[int, str]) -> set[Path]:
    """The private folders (decrypted inputs, on tmpfs) the jail's bwrap binds inputs from."""
    folders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                path = Path(os.fsdecode(arg))
                if path.parent.name.startswith("authops-job-") and path.suffix == ".parquet":
                    folders.add(path.parent)
    return folders


def _kill_mid_code_job(session: Session, lab: SimpleNamespace) -> SimpleNamespace:
    """A code job whose worker A is SIGKILLed while the partner code runs in its jail; worker B
    then runs it to the end. Returns what the tests look at."""
    _need_jail()
    s = lab.settings
    _, job = jobs.submit_job(session, ws=lab.ws, kind="code", spec=SLOW_MANIFEST, code=SLOW_CODE,
                             params={"sleep": 6}, actor=ACTOR)
    session.commit()
    job_id = job.id

    with running_worker({}, concurrency=1, name="sbx-kill-a") as first:
        job_service.dispatch_pending(s, job_ids=[job_id])
        # Running, past "running partner code in the jail", and the partner code is in the jail.
        jail = _wait_until(_stuck(s, job_id, lambda j: j.progress > 0 and _jail_of(first)), 60,
                           f"job {job_id} running partner code in worker A's jail", [first],
                           lambda: f"job {_job(s, job_id).state} {_job(s, job_id).progress}")
        plaintext = _plaintext_folders(jail)
        _kill_worker(first)
    assert _releases(s, job_id) == Counter() and _job(s, job_id).state == JobState.RUNNING

    with running_worker({}, concurrency=1, name="sbx-kill-b") as second:
        states = _wait_done(s, [job_id], 60, [first, second])
    return SimpleNamespace(job_id=job_id, states=states, workers=[first, second], jail=jail, plaintext=plaintext)


@pytest.mark.slow
def test_a_worker_killed_during_a_code_job_runs_it_again_and_it_releases_once(session, lab):
    s = lab.settings
    run = _kill_mid_code_job(session, lab)
    job_id = run.job_id
    for folder in run.plaintext:  # see the next test; leave no plaintext on the host either way
        shutil.rmtree(folder, ignore_errors=True)
    job = _job(s, job_id)
    assert run.states == {job_id: "succeeded"}, (job.error_code, job.error_message, _logs(run.workers))
    attempts = _attempts(s, job_id)
    assert [o for o, _ in attempts] == ["lost", "succeeded"], attempts
    assert attempts[0][1].startswith("sbx-kill-a@") and attempts[1][1].startswith("sbx-kill-b@"), attempts
    assert _releases(s, job_id) == {"scores": 1}
    actions = _audit_actions(s, job_id)
    assert actions["sandbox.release"] == 1 and actions["job.succeeded"] == 1 and actions["sandbox.submit"] == 1, actions
    assert not _still_running(run.jail), f"the killed worker's jail outlived it: {_still_running(run.jail)}"
    with core_db.session_scope(s) as fresh:
        _, table = jobs.read_release(fresh, s, job_id, "scores", reader_org=lab.org_id)
        assert table.num_rows > 10 and all(0 <= v <= 1 for v in table.column("score").to_pylist() if v is not None)
        assert budget.check_ledger(fresh) == []


@pytest.mark.slow
@pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)  # a host matter: one database is enough
def test_a_worker_killed_during_a_job_leaves_no_decrypted_inputs_on_the_host(session, lab):
    run = _kill_mid_code_job(session, lab)
    assert run.states == {run.job_id: "succeeded"}, _logs(run.workers)
    assert run.plaintext, "found no private folder in the jail's command line"
    left = sorted(str(f) for f in run.plaintext if f.exists())
    for folder in run.plaintext:
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"decrypted inputs of the killed attempt are still on the host: {left}"


def _blocked_release(settings: Settings) -> Callable[[Job], int | None]:
    """The pid of a PostgreSQL backend waiting for a lock to change a privacy budget row, if any."""
    def check(job: Job) -> int | None:
        if job.progress < 0.9:  # not yet "storing releases"
            return None
        with core_db.get_engine(settings).connect() as conn:
            return conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE privacy_budget%'")).scalar()
    return check


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_a_worker_killed_inside_the_release_transaction_spends_the_budget_once(session, lab):
    """The kill lands after the job has written its release and settled its reservation in its
    final transaction, before the commit: the bureau is changing the same budget rows then.

    PostgreSQL only: SQLite serialises writers, so there is no way to hold a worker inside that
    transaction from outside without also stopping its heartbeats and progress reports.
    """
    s = lab.settings
    _set_budgets(session, lab.org_id, 3.0)
    session.commit()
    _, job = jobs.submit_job(session, ws=lab.ws, kind="spec", spec=_example("tax_arrears_by_industry"), actor=ACTOR)
    session.commit()
    job_id = job.id
    assert {k: v["epsilon_reserved_micro"] for k, v in _balances(s, lab.org_id).items()} == \
        dict.fromkeys(RESOURCES, MICRO)

    with Session(core_db.get_engine(s)) as bureau:
        # The bureau raises both caps; until it commits, it holds both budget rows.
        _set_budgets(bureau, lab.org_id, 4.0)
        with running_worker({}, concurrency=1, name="sbx-kill-a") as first:
            job_service.dispatch_pending(s, job_ids=[job_id])
            backend = _wait_until(_stuck(s, job_id, _blocked_release(s)), 60,
                                  f"job {job_id} waiting in its release transaction for the budget rows", [first],
                                  lambda: f"job {_job(s, job_id).state} {_job(s, job_id).progress}")
            _kill_worker(first)
        bureau.commit()

    # The killed worker's backend gets its lock, finds its client gone and rolls back.
    def backend_gone() -> bool:
        with core_db.get_engine(s).connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                                {"p": backend}).scalar() == 0
    _wait_until(backend_gone, 30, f"PostgreSQL backend {backend} of the killed worker gone", [first])
    assert _releases(s, job_id) == Counter()
    assert _audit_actions(s, job_id)["sandbox.release"] == 0
    assert _reservation_states(s, job_id) == dict.fromkeys(RESOURCES, ("reserved", 0))
    assert _ledger_problems(s) == []

    with running_worker({}, concurrency=1, name="sbx-kill-b") as second:
        states = _wait_done(s, [job_id], 60, [first, second])
    job = _job(s, job_id)
    assert states == {job_id: "succeeded"}, (job.error_code, job.error_message, _logs([first, second]))
    attempts = _attempts(s, job_id)
    assert [o for o, _ in attempts] == ["lost", "succeeded"], attempts
    assert attempts[0][1].startswith("sbx-kill-a@") and attempts[1][1].startswith("sbx-kill-b@"), attempts
    assert _releases(s, job_id) == {"vat_by_industry": 1}
    actions = _audit_actions(s, job_id)
    assert actions["sandbox.release"] == 1 and actions["job.succeeded"] == 1, actions
    assert _reservation_states(s, job_id) == dict.fromkeys(RESOURCES, ("committed", MICRO))
    for code, row in _balances(s, lab.org_id).items():
        assert (row["epsilon_cap_micro"], row["epsilon_spent_micro"], row["epsilon_reserved_micro"]) == \
            (4 * MICRO, MICRO, 0), code
    assert _ledger_problems(s) == []


# --- b. 20 concurrent submissions against a budget for 5 ------------------------------------------

@pytest.mark.slow
def test_20_concurrent_jobs_against_a_budget_for_5_release_exactly_5(session, lab):
    s = lab.settings
    _set_budgets(session, lab.org_id, 5.0)
    session.commit()
    spec = _example("tax_arrears_by_industry")
    assert spec["outputs"][0]["release"]["epsilon"] == 1.0  # five jobs' worth on each resource
    n = 20
    engine = core_db.get_engine(s)
    barrier = threading.Barrier(n)
    results: list[tuple[Any, ...] | None] = [None] * n

    def submit(i: int) -> None:
        with Session(engine, expire_on_commit=False) as mine:
            try:
                ws = mine.get(Workspace, lab.ws.id)
                document = copy.deepcopy(spec)
                mine.commit()  # hand the connection back: 20 threads, and SQLite's pool has 15
                barrier.wait(timeout=60)
                _, job = jobs.submit_job(mine, ws=ws, kind="spec", spec=document, actor=ACTOR)
                mine.commit()
                results[i] = ("accepted", job.id)
            except AuthopsError as exc:
                mine.rollback()
                results[i] = (exc.code, exc.message, exc.details)
            except Exception as exc:  # noqa: BLE001 - reported below
                mine.rollback()
                results[i] = ("unexpected", repr(exc))

    threads = [threading.Thread(target=submit, args=(i,), name=f"submit-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a submission hung"
    outcomes = Counter(r[0] for r in results if r)
    assert outcomes == {"accepted": 5, "budget_exhausted": 15}, [r for r in results if r and r[0] != "accepted"]
    for _, message, details in (r for r in results if r and r[0] == "budget_exhausted"):
        assert "ε 0 left" in message and "needs ε 1" in message and "refreshes on" in message, message
        assert details["epsilon_left"] == "0" and details["resource"] in RESOURCES, details
    accepted = sorted(r[1] for r in results if r and r[0] == "accepted")

    # The refused left nothing behind; the accepted hold the whole budget.
    with core_db.session_scope(s) as fresh:
        assert fresh.exec(select(func.count()).select_from(Job)).one() == 5
        assert fresh.exec(select(func.count()).select_from(SandboxJob)).one() == 5
    assert {k: (v["epsilon_reserved_micro"], v["epsilon_left_micro"]) for k, v in _balances(s, lab.org_id).items()} \
        == dict.fromkeys(RESOURCES, (5 * MICRO, 0))
    assert _ledger_problems(s) == []

    with running_worker({}, concurrency=1, name="sbx-one") as one, \
            running_worker({}, concurrency=1, name="sbx-two") as two:
        job_service.dispatch_pending(s, job_ids=accepted)
        states = _wait_done(s, accepted, 90, [one, two])
    assert Counter(states.values()) == {"succeeded": 5}, (states, _logs([one, two]))
    for job_id in accepted:
        assert _releases(s, job_id) == {"vat_by_industry": 1}, job_id
        assert _audit_actions(s, job_id)["sandbox.release"] == 1, job_id
        assert _reservation_states(s, job_id) == dict.fromkeys(RESOURCES, ("committed", MICRO)), job_id
    for code, row in _balances(s, lab.org_id).items():
        assert (row["epsilon_spent_micro"], row["epsilon_reserved_micro"], row["epsilon_left_micro"]) == \
            (5 * MICRO, 0, 0), (code, row)
    assert _ledger_problems(s) == []
    # and the next one is refused, saying so
    with pytest.raises(AuthopsError, match="ε 0 left") as err:
        jobs.submit_job(session, ws=lab.ws, kind="spec", spec=copy.deepcopy(spec), actor=ACTOR)
    session.rollback()
    assert err.value.code == "budget_exhausted"
