"""Metering at the price in force, exactly once, within the maximum permitted revenue."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from sqlalchemy import event as sa_event, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from authops.audit import canonical
from authops.audit import log as audit_log
from authops.billing import metering
from authops.billing import prices as rules
from authops.billing.models import RevenueWarning, UsageRecord
from authops.billing.rating import rate
from authops.core import db as core_db
from authops.platform.billing import pricing, revenue
from authops.platform.governance.models import Notification
from tests.billing.world import build
from tests.platform.governance.matrix_products import who


def charge(session, w, customer, name="paid", *, key=None, units=1, channel="call", response=None):
    a = w.usage[(name, customer.id)]
    method = a.terms["pricing_method"]
    return metering.meter(session, customer_org_id=customer.id, product_id=w.products[name].id, agreement_id=a.id,
                          request_id="req_" + secrets.token_hex(8), pricing_method=method,
                          price_fen=int(a.terms["pricing"]["price_fen"]), units=units, channel=channel,
                          idempotency_key=key, response=response)


def billed(session, operator_id) -> int:
    return int(session.execute(select(func.coalesce(func.sum(UsageRecord.amount_fen), 0))
                               .where(UsageRecord.operator_org_id == operator_id)).scalar_one())


def test_a_call_is_rated_at_the_lowest_of_agreement_price_and_cap_in_force(session):
    w = build(session, operating_days=400, price_fen=100)
    p = w.products["paid"]
    rec = charge(session, w, w.customer, response={"metered": {"units": 1, "amount_fen": 100}})
    assert (rec.amount_fen, rec.price_source) == (100, "agreement")
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=85, actor=who(w.operator))
    response = {"metered": {"units": 1, "amount_fen": 100}}
    rec = charge(session, w, w.customer, response=response)
    assert (rec.amount_fen, rec.price_source) == (85, "price")
    assert response["metered"]["amount_fen"] == 85 and rec.response["metered"]["amount_fen"] == 85
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=60, actor=who(w.bureau))
    rec = charge(session, w, w.customer)
    assert (rec.amount_fen, rec.unit_price_fen, rec.price_source) == (60, 60, "cap")


def test_a_free_product_never_charges_whatever_the_agreement_says(session):
    w = build(session)
    a = w.usage[("free", w.customer.id)]
    rec = metering.meter(session, customer_org_id=w.customer.id, product_id=w.products["free"].id,
                         agreement_id=a.id, request_id="req_free", pricing_method="per_call", price_fen=500)
    assert (rec.amount_fen, rec.price_source) == (0, "free")


def test_the_same_request_is_metered_once_and_a_replay_charges_nothing(session):
    w = build(session)
    rules.set_max_revenue(session, operator_org_id=w.operator.id, year=rules.year_of(), amount_fen=10_000,
                          actor=who(w.bureau), co_set_by_org_id=w.drc.id)
    charge(session, w, w.customer, key="k-1")
    session.commit()
    with pytest.raises(IntegrityError):
        charge(session, w, w.customer, key="k-1")
    session.rollback()
    assert billed(session, w.operator.id) == 100
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 100


def test_paid_calls_stop_at_the_maximum_revenue_with_warnings_before(session):
    w = build(session, price_fen=100)
    year = rules.year_of()
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=1000,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    session.commit()
    for _ in range(10):
        charge(session, w, w.customer)
        session.commit()
    with pytest.raises(metering.RevenueCeilingReached) as refused:
        charge(session, w, w.customer2)
    assert refused.value.code == "revenue_ceiling_reached"
    assert refused.value.details["rule"] == "maximum_permitted_revenue"
    session.commit()  # what the product route does with a refusal: nothing was charged
    assert billed(session, w.operator.id) == 1000
    free = charge(session, w, w.customer, "free")  # free products are not orders against the ceiling
    assert free.amount_fen == 0
    warned = session.execute(select(RevenueWarning.threshold_pct, RevenueWarning.revenue_fen)
                             .order_by(RevenueWarning.threshold_pct)).all()
    assert [tuple(x) for x in warned] == [(80, 800), (95, 1000)]
    assert revenue.notify_warnings(session) == 2 and revenue.notify_warnings(session) == 0
    session.commit()
    for org in (w.operator, w.bureau, w.drc):
        kinds = session.execute(select(Notification.title).where(Notification.org_id == org.id,
                                                                 Notification.kind == "billing.revenue.warning"))
        assert sorted(t[0].split("% ")[0][-2:] for t in kinds) == ["80", "95"]
    [mine] = revenue.status(session, w.operator.id, year)
    assert (mine["revenue_fen"], mine["ceiling_fen"], mine["used_pct"]) == (1000, 1000, 100.0)
    assert [x["operator_org_id"] for x in revenue.status(session, w.bureau.id, year)] == [w.operator.id]
    assert revenue.status(session, w.customer.id, year) == []


def test_raising_the_maximum_revenue_reopens_paid_orders(session):
    w = build(session, price_fen=100)
    year = rules.year_of()
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=100,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    charge(session, w, w.customer)
    with pytest.raises(metering.RevenueCeilingReached):
        charge(session, w, w.customer)
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=200,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    assert charge(session, w, w.customer).amount_fen == 100


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize("late", [False, True, "audited"],
                         ids=["charged-in-meter", "charged-at-commit", "charged-in-the-audit-append"])
def test_fifty_parallel_calls_stop_exactly_at_the_ceiling(session, db_settings, late):
    """Also with the late charge of the synchronous-call path (defer_charges): the refusal then
    comes from the commit, and is audited apart from the rolled-back transaction. "audited": each
    use also records its audit event, as a product call does, so the charge runs inside the audit
    append's statement (audit_log.Gate), and falls back to the ordinary path near the ceiling and
    at the warning thresholds."""
    w = build(session, price_fen=100)
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=rules.year_of(), amount_fen=2_050,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    session.commit()
    engine = core_db.get_engine(db_settings)
    outcomes: list[str] = []
    gate = threading.Barrier(50)
    one_statement: list[str] = []  # charges made inside the audit append's statement

    def seen(_conn, _cursor, statement, *_):
        if statement.lstrip().startswith("WITH charged AS"):
            one_statement.append(statement)

    sa_event.listen(engine, "before_cursor_execute", seen)

    def one(i: int) -> None:
        with Session(engine) as s:
            if late:
                metering.defer_charges(s)
            gate.wait()
            try:
                charge(s, w, w.customer if i % 2 else w.customer2)
                if late == "audited":
                    audit_log.record(s, audit_log.SYSTEM, "test.use", object_id=i)
                metering.commit_charged(s) if late else s.commit()
                outcomes.append("charged")
            except metering.RevenueCeilingReached:
                s.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("charged") == 20 and outcomes.count("refused") == 30
    assert billed(session, w.operator.id) == 2_000
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 2_000
    from authops.audit.models import AuditEvent

    refusals = session.execute(select(func.count()).select_from(AuditEvent)
                               .where(AuditEvent.action == "billing.revenue.refused")).scalar_one()
    assert refusals == (30 if late else 0)  # in meter, the caller's rollback drops the refusal's event
    warned = session.execute(select(RevenueWarning.threshold_pct, RevenueWarning.revenue_fen)
                             .order_by(RevenueWarning.threshold_pct)).all()
    assert [tuple(x) for x in warned] == [(80, 1700), (95, 2000)]  # 80% of 2,050 is 1,640; 95% is 1,947.5
    sa_event.remove(engine, "before_cursor_execute", seen)
    # the gated statement was tried by all 50 (the 30 refused and the 2 crossing a threshold fell back)
    assert len(one_statement) == (50 if late == "audited" else 0)
    if late == "audited":  # one event per use that charged, on an unbroken chain
        events = list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all())
        assert sum(e.action == "test.use" for e in events) == 20
        prev = canonical.GENESIS
        for e in events:
            assert e.prev_hash == prev and canonical.chain_hash(e.canonical) == e.hash
            prev = e.hash


@given(agreed=st.integers(0, 10**6), price=st.none() | st.integers(0, 10**6), cap=st.none() | st.integers(0, 10**6),
       free=st.booleans())
@hsettings(max_examples=300)
def test_rating_never_exceeds_a_cap_or_charges_a_free_product(agreed, price, cap, free):
    unit, source = rate(agreed, price, cap, free=free)
    assert unit <= agreed
    if cap is not None:
        assert unit <= cap
    if price is not None:
        assert unit <= price
    if free:
        assert (unit, source) == (0, "free")
    else:
        assert unit == min(x for x in (agreed, price, cap) if x is not None)


KILLED = textwrap.dedent("""
    import os, signal
    from sqlmodel import Session
    from authops.billing import metering
    from authops.core import db
    from authops.core.settings import Settings
    from authops.core.models_registry import import_all_models
    import_all_models()
    with Session(db.get_engine(Settings())) as s:
        metering.meter(s, customer_org_id={customer}, product_id={product}, agreement_id={agreement},
                       request_id="req_killed", pricing_method="per_call", price_fen=100, idempotency_key="k-kill")
        s.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # the API process dies before its commit
""")


def test_a_process_killed_while_metering_charges_nothing_and_the_retry_charges_once(session, db_settings):
    w = build(session)
    rules.set_max_revenue(session, operator_org_id=w.operator.id, year=rules.year_of(), amount_fen=10_000,
                          actor=who(w.bureau), co_set_by_org_id=w.drc.id)
    session.commit()
    code = KILLED.format(customer=w.customer.id, product=w.products["paid"].id,
                         agreement=w.usage[("paid", w.customer.id)].id)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    session.expire_all()
    assert billed(session, w.operator.id) == 0
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 0
    charge(session, w, w.customer, key="k-kill")
    session.commit()
    assert billed(session, w.operator.id) == 100
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 100


_step = st.one_of(st.tuples(st.just("cap"), st.integers(0, 300)), st.tuples(st.just("price"), st.integers(0, 300)),
                  st.tuples(st.just("call"), st.sampled_from(["paid", "free"])))


@pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)
def test_any_sequence_of_caps_prices_and_calls_charges_within_the_rules_and_replays_change_nothing(session):
    from hypothesis import HealthCheck

    w = build(session, operating_days=400, price_fen=200)
    p = w.products["paid"]
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=300, actor=who(w.bureau))
    session.commit()
    keys = iter(range(10**6))

    @given(steps=st.lists(_step, min_size=1, max_size=12))
    @hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def run(steps):
        for kind, value in steps:
            if kind == "cap":
                pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=value, actor=who(w.bureau))
            elif kind == "price":
                cap = rules.cap_in_force(session, p.id, "per_call").cap_fen
                pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=min(value, cap),
                                  actor=who(w.operator))
            else:
                key = f"prop-{next(keys)}"
                rec = charge(session, w, w.customer, value, key=key)
                session.commit()
                if value == "free":
                    assert rec.amount_fen == 0
                    continue
                cap = rules.cap_in_force(session, p.id, "per_call").cap_fen
                price = rules.price_in_force(session, w.operator.id, p.id, "per_call")
                assert rec.amount_fen == min(cap, 200, price.price_fen if price else cap)
                before = billed(session, w.operator.id)
                with pytest.raises(IntegrityError):
                    charge(session, w, w.customer, value, key=key)
                session.rollback()
                assert billed(session, w.operator.id) == before
                assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == before
        session.commit()

    run()


def test_the_first_late_charge_of_the_year_counts_once(session, db_settings):
    """With defer_charges the use is recorded before the running total exists: the total created at
    commit from the usage records must not count this transaction's own uses twice."""
    w = build(session, price_fen=100)
    session.commit()
    with Session(core_db.get_engine(db_settings)) as s:
        metering.defer_charges(s)
        charge(s, w, w.customer)
        charge(s, w, w.customer2)
        metering.commit_charged(s)
    with Session(core_db.get_engine(db_settings)) as s:
        charge(s, w, w.customer)  # and a charge in meter after it
        s.commit()
    session.expire_all()
    assert billed(session, w.operator.id) == 300
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 300


def test_revenue_past_21_million_yuan_is_counted_to_the_fen(session):
    """Amounts are 64-bit: a year's revenue, its ceiling and a usage record may pass 2**31 fen."""
    w = build(session, price_fen=100)
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=rules.year_of(), amount_fen=10**10,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    session.commit()
    for _ in range(2):  # 15 million units at 1 yuan: 15 million yuan each
        assert charge(session, w, w.customer, units=15_000_000).amount_fen == 1_500_000_000
        session.commit()
    assert billed(session, w.operator.id) == 3_000_000_000 > 2**31
    assert rules.ensure_counter(session, w.operator.id, rules.year_of()).revenue_fen == 3_000_000_000
