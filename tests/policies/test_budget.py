"""The privacy budget ledger: caps, reservations, settlement, rollover and races (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from authops.audit.log import Actor
from authops.audit.models import AuditEvent
from authops.core import db as core_db
from authops.core.db import get_engine
from authops.core.errors import Conflict, InvalidInput
from authops.core.identity import OrgKind
from authops.core.jobs.service import create_job
from authops.policies import budget
from authops.policies.budget import BudgetExhausted
from authops.policies.budget_models import BudgetReservation
from tests.support.builders import make_org

BUREAU = Actor(kind="user", id=1, name="bureau-admin")
IN_2026 = datetime(2026, 6, 1, 4, 0)  # naive UTC
IN_2027 = datetime(2027, 3, 1, 4, 0)


def _job(session) -> int:
    return create_job(session, kind="system.echo", params={}).id


def _partner(session):
    return make_org(session, OrgKind.PARTNER)


def _set(session, org, resource="tax", epsilon=10.0, period="2026", **kw):
    return budget.set_budget(session, org_id=org.id, resource_code=resource, epsilon=epsilon, period=period,
                             actor=BUREAU, **kw)


def _bal(session, org, resource, period="2026", at=IN_2026) -> dict:
    rows = [b for b in budget.balances(session, org.id, resource, at=at) if b["period"] == period]
    assert len(rows) == 1, rows
    return rows[0]


# --- periods and units (no database) ------------------------------------------------------------

def test_years_are_counted_in_shanghai():
    assert budget.period_of(datetime(2026, 12, 31, 15, 59, 59)) == ("2026", date(2026, 1, 1), date(2027, 1, 1))
    # 16:00 UTC on New Year's Eve is midnight in Shanghai: already next year's budget.
    assert budget.period_of(datetime(2026, 12, 31, 16, 0)) == ("2027", date(2027, 1, 1), date(2028, 1, 1))
    assert budget.period_of()[0] == str(budget.period_of()[1].year)


def test_units_are_exact_and_charges_round_up():
    assert budget.to_micro(1.1) == 1_100_000  # not 1,100,001 from float noise
    assert budget.to_micro(0.3) == 300_000
    assert budget.to_micro(1e-9) == 1  # a charge is never rounded down to nothing
    assert budget.to_micro(1.0000004, up=False) == 1_000_000  # caps round to nearest
    assert budget.to_pico(1e-6) == 1_000_000
    with pytest.raises(InvalidInput):
        budget.to_micro(float("nan"))


# --- the bureau sets caps -----------------------------------------------------------------------

def test_set_raise_and_refuse_lowering_below_use(session):
    org = _partner(session)
    created = _set(session, org, epsilon=5.0, note="first year")
    assert (created.epsilon_cap, created.period, created.ends_on) == (5_000_000, "2026", date(2027, 1, 1))
    raised = _set(session, org, epsilon=8.0)
    assert raised.id == created.id and raised.epsilon_cap == 8_000_000

    job = _job(session)
    budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=3.0, at=IN_2026)
    budget.commit(session, job, spent={"tax": (2.5, 0.0)})
    job2 = _job(session)
    budget.reserve(session, job_id=job2, org_id=org.id, resources=["tax"], epsilon=1.5, at=IN_2026)

    with pytest.raises(Conflict) as err:  # 2.5 spent + 1.5 reserved = 4 in use
        _set(session, org, epsilon=3.9)
    assert err.value.code == "budget_below_use"
    assert "ε 3.9 is below the ε 4 already in use (2.5 spent + 1.5 reserved)" in err.value.message
    assert _bal(session, org, "tax")["epsilon_cap"] == 8.0  # unchanged
    assert _set(session, org, epsilon=4.0).epsilon_cap == 4_000_000  # exactly what is in use is fine
    assert _bal(session, org, "tax")["epsilon_left"] == 0.0

    session.commit()
    events = session.execute(select(AuditEvent).where(AuditEvent.action == "budget.set")
                             .order_by(AuditEvent.seq)).scalars().all()
    details = [json.loads(e.canonical)["details"] for e in events]
    assert [(d["old_epsilon_cap_micro"], d["new_epsilon_cap_micro"]) for d in details] == [
        (None, 5_000_000), (5_000_000, 8_000_000), (8_000_000, 4_000_000)]
    assert events[0].actor_name == "bureau-admin" and details[0]["resource"] == "tax"


def test_set_budget_validates(session):
    org = _partner(session)
    refused = [{"epsilon": 0.0}, {"epsilon": -1.0}, {"epsilon": float("inf")}, {"epsilon": 1000.5},
               {"delta": 1e-3}, {"delta": -1e-9}, {"resource": "  "}, {"period": "next year"}]
    for case in refused:
        args = {"resource": "tax", "epsilon": 1.0, "period": "2026"} | case
        with pytest.raises(InvalidInput):
            budget.set_budget(session, org_id=org.id, resource_code=args["resource"], epsilon=args["epsilon"],
                              delta=args.get("delta", 0.0), period=args["period"], actor=BUREAU)
    assert budget.balances(session, org.id, at=IN_2026) == []
    assert _set(session, org, epsilon=1000.0, delta=9e-4).epsilon_cap == 1_000_000_000  # the limits themselves


def test_default_period_is_this_year(session):
    org = _partner(session)
    made = _set(session, org, epsilon=2.0, period=None)
    assert made.period == budget.period_of()[0]
    job = _job(session)
    assert len(budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=1.0)) == 1
    assert budget.balances(session, org.id)[0]["epsilon_reserved"] == 1.0


# --- reserve, commit, give back -----------------------------------------------------------------

def test_reserve_commit_and_give_back_arithmetic(session):
    org = _partner(session)
    _set(session, org, epsilon=10.0, delta=1e-5)
    job = _job(session)
    made = budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=2.5, delta=1e-6,
                          at=IN_2026)
    assert [(r.resource_code, r.period, r.epsilon, r.delta, r.state) for r in made] == [
        ("tax", "2026", 2_500_000, 1_000_000, "reserved")]
    b = _bal(session, org, "tax")
    assert (b["epsilon_reserved_micro"], b["epsilon_left_micro"], b["delta_left_pico"]) == (
        2_500_000, 7_500_000, 9_000_000)

    # Idempotent: a retried reserve returns the same reservation and charges nothing more.
    again = budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=4.0, at=IN_2026)
    assert [r.id for r in again] == [made[0].id]
    assert _bal(session, org, "tax")["epsilon_reserved_micro"] == 2_500_000

    budget.commit(session, job, spent={"tax": (1.2, 5e-7)})  # the unspent 1.3 ε goes back
    b = _bal(session, org, "tax")
    assert (b["epsilon_spent_micro"], b["epsilon_reserved_micro"], b["epsilon_left_micro"]) == (
        1_200_000, 0, 8_800_000)
    assert (b["delta_spent_pico"], b["delta_reserved_pico"]) == (500_000, 0)
    assert b["epsilon_left"] == 8.8 and b["refreshes_on"] == "2027-01-01"
    budget.commit(session, job)  # twice: nothing changes
    assert _bal(session, org, "tax")["epsilon_spent_micro"] == 1_200_000
    assert budget.give_back(session, job) == 0  # a committed reservation is not returned

    failed = _job(session)
    budget.reserve(session, job_id=failed, org_id=org.id, resources=["tax"], epsilon=3.0, at=IN_2026)
    assert _bal(session, org, "tax")["epsilon_left_micro"] == 5_800_000
    assert budget.give_back(session, failed) == 1
    assert budget.give_back(session, failed) == 0
    b = _bal(session, org, "tax")
    assert (b["epsilon_spent_micro"], b["epsilon_reserved_micro"], b["epsilon_left_micro"]) == (
        1_200_000, 0, 8_800_000)
    states = session.execute(select(BudgetReservation.job_id, BudgetReservation.state)
                             .order_by(BudgetReservation.id)).all()
    assert [tuple(s) for s in states] == [(job, "committed"), (failed, "returned")]
    assert budget.check_ledger(session) == []


def test_commit_without_spent_spends_everything_and_refuses_overspend(session):
    org = _partner(session)
    _set(session, org, epsilon=4.0)
    job = _job(session)
    budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=1.5, at=IN_2026)
    with pytest.raises(InvalidInput, match="spent more than it reserved on tax"):
        budget.commit(session, job, spent={"tax": (1.6, 0.0)})
    with pytest.raises(InvalidInput, match="no privacy budget on land"):
        budget.commit(session, job, spent={"land": (0.1, 0.0)})
    assert _bal(session, org, "tax")["epsilon_reserved_micro"] == 1_500_000  # refused calls changed nothing
    budget.commit(session, job)
    b = _bal(session, org, "tax")
    assert (b["epsilon_spent_micro"], b["epsilon_reserved_micro"], b["epsilon_left"]) == (1_500_000, 0, 2.5)

    free = _job(session)  # a job that spends nothing needs no budget, even where none is set
    assert budget.reserve(session, job_id=free, org_id=org.id, resources=["land"], epsilon=0.0, at=IN_2026) == []
    budget.commit(session, free)
    assert budget.give_back(session, free) == 0


# --- refusals -----------------------------------------------------------------------------------

def test_exhausted_says_what_is_left_and_when_it_refreshes(session):
    org = _partner(session)
    _set(session, org, epsilon=1.5)
    first = _job(session)
    budget.reserve(session, job_id=first, org_id=org.id, resources=["tax"], epsilon=1.2, at=IN_2026)
    job = _job(session)
    with pytest.raises(BudgetExhausted) as err:
        budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=0.5, at=IN_2026)
    e = err.value
    assert (e.status_code, e.code) == (409, "budget_exhausted")
    assert e.message == ("the 2026 privacy budget of tax is exhausted: ε 0.3 left, this job needs ε 0.5; "
                         "refreshes on 2027-01-01 (Asia/Shanghai)")
    assert e.details == {"resource": "tax", "period": "2026", "epsilon_left": "0.3", "epsilon_needed": "0.5",
                         "refreshes_on": "2027-01-01"}
    json.dumps(e.to_dict())  # what the API sends
    assert session.execute(select(BudgetReservation).where(BudgetReservation.job_id == job)).first() is None

    # δ is reported when the job needs some: here the cap allows none (pure ε-DP).
    with pytest.raises(BudgetExhausted) as err:
        budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=0.1, delta=1e-6,
                       at=IN_2026)
    assert "ε 0.3 left, this job needs ε 0.1; δ 0 left, this job needs δ 0.000001" in err.value.message
    assert err.value.details["delta_needed"] == "0.000001"


def test_lifetime_cap_binds_and_never_refreshes(session):
    org = _partner(session)
    _set(session, org, epsilon=10.0)
    _set(session, org, epsilon=2.0, period="lifetime")
    ok = _job(session)
    made = budget.reserve(session, job_id=ok, org_id=org.id, resources=["tax"], epsilon=1.5, at=IN_2026)
    assert sorted(r.period for r in made) == ["2026", "lifetime"]  # both rows are charged
    with pytest.raises(BudgetExhausted) as err:
        budget.reserve(session, job_id=_job(session), org_id=org.id, resources=["tax"], epsilon=1.0, at=IN_2026)
    assert err.value.message == ("the lifetime privacy budget of tax is exhausted: ε 0.5 left, this job needs "
                                 "ε 1; the lifetime cap never refreshes; the bureau can raise it")
    assert err.value.details["refreshes_on"] is None and err.value.details["period"] == "lifetime"
    # The year row was charged before the lifetime row refused: that charge was undone.
    assert _bal(session, org, "tax")["epsilon_reserved_micro"] == 1_500_000
    assert _bal(session, org, "tax", period="lifetime")["refreshes_on"] is None
    budget.commit(session, ok)
    assert budget.check_ledger(session) == []


def test_no_budget_set(session):
    org = _partner(session)
    _set(session, org, resource="tax", epsilon=1.0)
    with pytest.raises(BudgetExhausted) as err:
        budget.reserve(session, job_id=_job(session), org_id=org.id, resources=["land"], epsilon=0.1, at=IN_2026)
    assert err.value.message == (f"no privacy budget is set for {org.code} on land for 2026; "
                                 "the bureau sets budgets")
    assert err.value.code == "budget_exhausted"


def test_all_or_nothing_across_resources(session):
    org = _partner(session)
    _set(session, org, resource="tax", epsilon=5.0)
    _set(session, org, resource="water", epsilon=0.5)
    session.commit()
    job = _job(session)
    with pytest.raises(BudgetExhausted) as err:
        budget.reserve(session, job_id=job, org_id=org.id, resources=["tax", "water"], epsilon=1.0, at=IN_2026)
    assert "water" in err.value.message and "ε 0.5 left" in err.value.message
    session.commit()  # even a caller that swallows the error and commits keeps nothing held
    assert _bal(session, org, "tax")["epsilon_left_micro"] == 5_000_000
    assert _bal(session, org, "water")["epsilon_left_micro"] == 500_000
    assert session.execute(select(BudgetReservation)).first() is None
    assert budget.check_ledger(session) == []
    # With enough on both, one job holds both resources.
    made = budget.reserve(session, job_id=job, org_id=org.id, resources=["tax", "water"], epsilon=0.5,
                          at=IN_2026)
    assert sorted(r.resource_code for r in made) == ["tax", "water"]


def test_period_rollover_uses_the_new_years_row(session):
    org = _partner(session)
    _set(session, org, epsilon=1.0, period="2026")
    job = _job(session)
    with pytest.raises(BudgetExhausted, match="no privacy budget is set for .* on tax for 2027"):
        budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=2.0, at=IN_2027)
    _set(session, org, epsilon=3.0, period="2027")
    made = budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=2.0, at=IN_2027)
    assert [r.period for r in made] == ["2027"]
    assert _bal(session, org, "tax", "2027", at=IN_2027)["epsilon_reserved_micro"] == 2_000_000
    assert _bal(session, org, "tax", "2026")["epsilon_reserved_micro"] == 0
    assert [b["period"] for b in budget.balances(session, org.id, at=IN_2027)] == ["2027"]
    # New Year's Eve 16:00 UTC is already 2027 in Shanghai.
    late = _job(session)
    made = budget.reserve(session, job_id=late, org_id=org.id, resources=["tax"], epsilon=1.0,
                          at=datetime(2026, 12, 31, 16, 0))
    assert [r.period for r in made] == ["2027"]


def test_check_ledger_notices_a_drift(session):
    org = _partner(session)
    _set(session, org, epsilon=3.0)
    job = _job(session)
    budget.reserve(session, job_id=job, org_id=org.id, resources=["tax"], epsilon=1.0, at=IN_2026)
    budget.commit(session, job)
    assert budget.check_ledger(session) == []
    session.execute(text("UPDATE privacy_budget SET epsilon_spent = epsilon_spent - 1"))
    problems = budget.check_ledger(session)
    assert len(problems) == 1 and "epsilon_spent is 999999 but its committed reservations spent 1000000" \
        in problems[0]


# --- races --------------------------------------------------------------------------------------

def _engine_for_threads(db_settings, n: int):
    """An engine that can hand out `n` connections at once.

    PostgreSQL's shared engine pools 30. The SQLite one pools 15, so the threads get their
    own unpooled engine on the same file with the application's connection pragmas.
    """
    engine = get_engine(db_settings)
    if engine.dialect.name != "sqlite":
        assert engine.pool.size() + engine.pool._max_overflow >= n
        return engine
    threads_engine = create_engine(db_settings.effective_database_url, poolclass=NullPool,
                                   connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(threads_engine, "connect", core_db._sqlite_pragmas)
    return threads_engine


def test_concurrent_reservations_never_overspend(session, db_settings):
    """20 jobs race for a budget that fits 5: exactly 5 win, whatever the database."""
    threads_n, fits = 20, 5
    org = _partner(session)
    _set(session, org, epsilon=float(fits))
    jobs = [_job(session) for _ in range(threads_n)]
    session.commit()
    engine = _engine_for_threads(db_settings, threads_n)
    barrier = threading.Barrier(threads_n, timeout=60)
    outcomes: dict[int, str] = {}

    def run(job_id: int) -> None:
        try:
            with Session(engine, expire_on_commit=False) as s:
                s.connection()  # its own connection, checked out before the start line
                barrier.wait()
                try:
                    budget.reserve(s, job_id=job_id, org_id=org.id, resources=["tax"], epsilon=1.0, at=IN_2026)
                    s.commit()
                except BudgetExhausted:
                    s.rollback()
                    outcomes[job_id] = "exhausted"
                    return
                budget.commit(s, job_id)
                s.commit()
                outcomes[job_id] = "committed"
        except BaseException as exc:  # reported below: a thread's exception would vanish
            outcomes[job_id] = f"error: {exc!r}"

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if engine is not get_engine(db_settings):
        engine.dispose()
    assert not any(t.is_alive() for t in threads)
    errors = [o for o in outcomes.values() if o.startswith("error")]
    assert errors == []
    assert sorted(outcomes.values()).count("committed") == fits
    assert sorted(outcomes.values()).count("exhausted") == threads_n - fits

    session.expire_all()
    b = _bal(session, org, "tax")
    assert (b["epsilon_spent_micro"], b["epsilon_reserved_micro"], b["epsilon_left_micro"]) == (5_000_000, 0, 0)
    committed = session.execute(select(BudgetReservation.job_id).where(BudgetReservation.state == "committed")).all()
    assert sorted(r[0] for r in committed) == sorted(j for j, o in outcomes.items() if o == "committed")
    assert budget.check_ledger(session) == []
