"""The annual assessment: every figure recomputed here from the audit trail and the billing records
(by queries of the test's own), the grade from the bureau's settings, expert scores, the signature
and the report data the reports render."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import select

from authops.audit import canonical
from authops.audit.anomaly.models import AnomalyCase, Incident
from authops.audit.models import AuditEvent
from authops.billing.models import UsageRecord
from authops.core.clock import travelled, utcnow
from authops.core.errors import Conflict, InvalidInput
from authops.platform.assessment import report_data, service
from authops.platform.assessment.models import ProductRating
from authops.platform.governance import operator, workdays
from tests.assessment import world


def this_year() -> int:
    return workdays.shanghai_date(utcnow()).year


def into_next_year() -> timedelta:
    """From now to 10 days into next year (Asia/Shanghai)."""
    today = workdays.shanghai_date(utcnow())
    return timedelta(days=(date(today.year + 1, 1, 10) - today).days)


def events(session, action: str, year: int) -> list[AuditEvent]:
    rows = session.exec(select(AuditEvent).where(AuditEvent.action == action)).all()
    return [e for e in rows if workdays.shanghai_date(e.ts).year == year]


@pytest.fixture
def year_of_records(session):
    w = world.build(session)
    p1, p2 = world.product(session, w), world.product(session, w)
    pub = world.product(session, w, category="public_governance")
    session.commit()
    world.use(session, w, p1, subjects=["s-a", "s-b", "s-a"], price_fen=150)
    world.use(session, w, p2, subjects=["s-c"], price_fen=180)
    world.use(session, w, pub, subjects=["s-d", "s-e"])
    world.releases(session, w, released=5, refused=1)
    world.confirmed_anomaly(session, w)  # one confirmed case and the incident it records
    world.rate(session, w, p1, 4)
    world.rate(session, w, p2, 5)
    world.rate(session, w, p1, 3)  # updated: one rating per customer, product and year
    world.settings(session, this_year())
    return w


def metric(a, key: str) -> dict:
    return next(m for m in a.metrics if m["key"] == key)


def test_every_figure_matches_the_audit_trail_and_billing(session, year_of_records):
    w, year = year_of_records, this_year()
    with travelled(into_next_year()):
        a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
        session.commit()
    # products: the three registered this year
    assert metric(a, "products")["value"] == 3
    assert sorted(metric(a, "products")["sources"]["record_ids"]) == sorted(p.id for p in w.products)
    # revenue: the billing usage records of the operator this year (public-governance calls are free)
    usage = [u for u in session.exec(select(UsageRecord)).all()
             if u.operator_org_id == w.operator.id and workdays.shanghai_date(u.at).year == year]
    assert metric(a, "revenue")["value"] == sum(u.amount_fen for u in usage) == 3 * 150 + 180
    assert sorted(metric(a, "revenue")["sources"]["record_ids"]) == sorted(u.id for u in usage)
    # subjects served: distinct subject keys decoded from the product.call events in the chain
    calls = events(session, "product.call", year)
    keys = {canonical.decode(bytes(e.canonical))["details"]["subject_key"] for e in calls}
    assert metric(a, "social.subjects_served")["value"] == len(keys) == 5
    assert metric(a, "social.subjects_served")["sources"]["count"] == len(calls) == 6
    # public-governance calls
    assert metric(a, "social.public_governance_calls")["value"] == 2
    # security compliance: releases, refusals, the confirmed anomaly case and its incident
    released, refused = events(session, "sandbox.release", year), events(session, "sandbox.refuse", year)
    cases = session.exec(select(AnomalyCase).where(AnomalyCase.state == "confirmed")).all()
    incidents = session.exec(select(Incident)).all()
    checked = len(released) + len(refused) + len(cases) + len(incidents)
    bad = len(refused) + len(cases) + len(incidents)
    assert (checked, bad) == (8, 3)
    assert metric(a, "security_compliance")["value"] == round(100 * (1 - bad / checked), 2)
    assert metric(a, "security_compliance")["sources"]["parts"]["releases_refused"] == 1
    # satisfaction: the ratings as stored (p1's updated to 3)
    scores = [r.score for r in session.exec(select(ProductRating)).all()]
    assert sorted(scores) == [3, 5]
    assert metric(a, "satisfaction")["value"] == 4.0
    assert metric(a, "scenarios")["value"] == 0 and metric(a, "social.financing_disbursed")["value"] == 0
    # each score and the total from the documented formula
    for m in a.metrics:
        assert m["score"] == round(min(100.0, 100.0 * m["value"] / m["threshold"]), 2)
    expected = sum(m["weight"] * m["score"] for m in a.metrics) / sum(m["weight"] for m in a.metrics)
    assert a.total_score == round(expected, 2)


def test_signed_result_is_verifiable_and_final(session, year_of_records, db_settings):
    w, year = year_of_records, this_year()
    with travelled(into_next_year()):
        a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
        service.add_expert_score(session, a, actor=w.bureau_actor, expert="张教授", score=80, comment="稳健")
        service.sign(session, a, actor=w.bureau_actor, settings=db_settings)
        session.commit()
        assert service.verify(a, db_settings)
        facts = [(f.kind, f.year) for f in operator.facts_of(session, w.operator.id)]
        assert (f"assessment_{a.grade}", year) in facts
        with pytest.raises(Conflict, match="signed"):
            service.add_expert_score(session, a, actor=w.bureau_actor, expert="李", score=10)
        with pytest.raises(Conflict, match="signed"):
            service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
        a.metrics = [{**m, "value": m["value"] + 1} for m in a.metrics]  # a changed figure breaks the signature
        assert not service.verify(a, db_settings)
        session.rollback()


def test_report_data_keeps_the_contract(session, year_of_records, db_settings):
    w, year = year_of_records, this_year()
    with travelled(into_next_year()):
        a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
        service.sign(session, a, actor=w.bureau_actor, settings=db_settings)
        session.commit()
        data = report_data(session, a.id)
    assert {"year", "operator", "grade", "grade_zh", "total_score", "thresholds", "signed", "metrics",
            "expert_scores", "departments", "rectification"} <= set(data)
    assert data["operator"] == {"id": w.operator.id, "name_zh": w.operator.name_zh}
    assert data["thresholds"] == {"excellent": 90, "qualified": 60}
    assert data["signed"]["signature"] == a.signature and data["grade_zh"] in ("优秀", "合格", "不合格")
    for m in data["metrics"]:
        assert {"key", "name_zh", "name_en", "value", "unit", "weight", "threshold", "score"} <= set(m)
        assert {"query", "record_ids", "count"} <= set(m["sources"])
    assert [d["org"] for d in data["departments"]] == [w.provider.id]


def test_refusals_name_the_rule(session, year_of_records):
    w, year = year_of_records, this_year()
    with pytest.raises(Conflict, match="after the year has ended"):
        service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
    with travelled(into_next_year()):
        with pytest.raises(Conflict, match="no weights and thresholds") as exc:
            service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year - 1)
        assert exc.value.code == "no_settings"
        with pytest.raises(InvalidInput, match="not an operator"):
            service.run(session, actor=w.bureau_actor, operator_org_id=w.customer.id, year=year)
    with pytest.raises(InvalidInput) as exc:
        service.set_year_settings(session, actor=w.bureau_actor, year=year, metrics_={"revenue": {"weight": 1,
                                                                                                   "target": 0}},
                                  excellent=90, qualified=60)
    assert exc.value.details["field"] == "metrics.revenue.target"
    with pytest.raises(InvalidInput, match="unknown metric"):
        service.set_year_settings(session, actor=w.bureau_actor, year=year, metrics_={"happiness": {"weight": 1,
                                                                                                     "target": 1}},
                                  excellent=90, qualified=60)
    with pytest.raises(InvalidInput, match="qualified < excellent"):
        service.set_year_settings(session, actor=w.bureau_actor, year=year, metrics_=world.ALL_METRICS,
                                  excellent=50, qualified=60)


def test_expert_weight_requires_expert_scores_before_signing(session, year_of_records, db_settings):
    w, year = year_of_records, this_year()
    world.settings(session, year, expert_weight=2)
    with travelled(into_next_year()):
        a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
        with pytest.raises(Conflict, match="add the experts' scores") as exc:
            service.sign(session, a, actor=w.bureau_actor, settings=db_settings)
        assert exc.value.code == "expert_scores_missing"
        before = a.total_score
        service.add_expert_score(session, a, actor=w.bureau_actor, expert="王", score=0)
        assert a.total_score < before  # a zero expert score with weight 2 pulls the total down
