"""User satisfaction ratings (only customers with metered usage; one per customer, product and year)
and the grade as the documented function of weights and thresholds."""

from __future__ import annotations


import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from authops.core.clock import travelled
from authops.core.errors import Forbidden, InvalidInput, NotFound
from authops.platform.assessment import ratings, service
from authops.platform.assessment.models import ProductRating
from tests.assessment import world
from tests.assessment.test_annual import into_next_year, this_year


def test_only_a_customer_that_used_the_product_rates_it_once_a_year(session):
    w = world.build(session)
    p = world.product(session, w)
    other = world.product(session, w)
    session.commit()
    world.use(session, w, p, subjects=["s-1"])
    with pytest.raises(Forbidden, match="no metered usage") as exc:
        ratings.rate(session, actor=world.actor(w.customer), product_code=other.code, score=5)
    assert exc.value.code == "no_usage"
    with pytest.raises(Forbidden, match="no metered usage"):
        ratings.rate(session, actor=world.actor(w.partner), product_code=p.code, score=5)
    with pytest.raises(NotFound):
        ratings.rate(session, actor=world.actor(w.customer), product_code="nope", score=5)
    for bad in (0, 6, True):
        with pytest.raises(InvalidInput) as exc:
            ratings.rate(session, actor=world.actor(w.customer), product_code=p.code, score=bad)
        assert exc.value.details["field"] == "score"
    ratings.rate(session, actor=world.actor(w.customer), product_code=p.code, score=2, comment="慢")
    ratings.rate(session, actor=world.actor(w.customer), product_code=p.code, score=4, comment="改进了")
    rows = session.exec(select(ProductRating)).all()
    assert [(r.score, r.comment, r.year) for r in rows] == [(4, "改进了", this_year())]
    with travelled(into_next_year()):  # a new year: a new rating
        ratings.rate(session, actor=world.actor(w.customer), product_code=p.code, score=5)
    assert sorted(r.year for r in session.exec(select(ProductRating)).all()) == [this_year(), this_year() + 1]


metric = st.fixed_dictionaries({"weight": st.floats(0.5, 10), "score": st.floats(0, 100)})


@given(st.lists(metric, min_size=1, max_size=8), st.floats(1, 98), st.floats(0.1, 1.9))
def test_raising_a_threshold_never_raises_the_grade(rows, qualified, factor):
    order = ["unqualified", "qualified", "excellent"]
    total = service.total_of(rows, [], 0)
    excellent = min(100.0, qualified + 1)
    low = service.grade_of(total, excellent, qualified)
    high = service.grade_of(total, min(100.0, excellent * factor + 1), min(99.0, qualified * factor + 1))
    if factor >= 1:
        assert order.index(high) <= order.index(low)
    assert low == ("excellent" if total >= excellent else "qualified" if total >= qualified else "unqualified")


@given(st.lists(metric, min_size=2, max_size=8), st.integers(0, 7), st.floats(0.1, 10))
def test_more_weight_on_a_metric_pulls_the_total_towards_its_score(rows, i, extra):
    i %= len(rows)
    before = service.total_of(rows, [], 0)
    heavier = [dict(r, weight=r["weight"] + extra) if n == i else r for n, r in enumerate(rows)]
    after = service.total_of(heavier, [], 0)
    if rows[i]["score"] < before:
        assert after <= before
    elif rows[i]["score"] > before:
        assert after >= before


def test_the_same_records_grade_differently_under_different_settings(session, db_settings):
    w = world.build(session)
    p = world.product(session, w)
    session.commit()
    world.use(session, w, p, subjects=["s-1", "s-2"], price_fen=150)  # 300 fen
    year = this_year()
    with travelled(into_next_year()):
        grades = []
        for target, qualified in ((300, 60), (1000, 60), (1000, 25)):
            world.settings(session, year, metrics={"revenue": {"weight": 1, "target": target}}, qualified=qualified)
            a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
            grades.append((a.total_score, a.grade))
        assert grades == [(100.0, "excellent"), (30.0, "unqualified"), (30.0, "qualified")]
        service.sign(session, a, actor=w.bureau_actor, settings=db_settings)
        session.commit()
        with pytest.raises(service.Conflict, match="can no longer change"):
            world.settings(session, year, metrics={"revenue": {"weight": 1, "target": 1}})
