"""Consequences with dates: unqualified -> rectification plan within 30 calendar days ->
re-assessment -> termination and ban; two consecutive unqualified years -> forced exit and ban;
two unqualified years in total -> renewal veto. The clock moves with authops.core.clock.travel."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import select

from authops.core.clock import travel, travelled, utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.platform.assessment import service
from authops.platform.assessment.models import Rectification
from authops.platform.governance import operator, workdays
from tests.assessment import world

REVENUE_ONLY = {"revenue": {"weight": 1, "target": 1000}}  # 1,000 fen of revenue scores 100
PLAN = "1. 建立安全合规专班；2. 每月复盘产品运营指标；3. 三个月内完成整改并报数据局。"


def today() -> date:
    return workdays.shanghai_date(utcnow())


def to(day: date) -> None:
    """Move the clock forward to `day` (Asia/Shanghai, same time of day)."""
    travel(timedelta(days=(day - today()).days))


def assess(session, w, year: int, settings):
    a = service.run(session, actor=w.bureau_actor, operator_org_id=w.operator.id, year=year)
    service.sign(session, a, actor=w.bureau_actor, settings=settings)
    session.commit()
    return a


@pytest.fixture
def unqualified_year(session):
    """The operator earns 100 fen this year against a 1,000 fen target: score 10, unqualified."""
    w = world.build(session)
    p = world.product(session, w)
    session.commit()
    world.use(session, w, p, subjects=["s-1"], price_fen=100)
    year = today().year
    world.settings(session, year, metrics=REVENUE_ONLY)
    return w, p, year


def test_unqualified_opens_a_rectification_due_in_30_calendar_days(session, db_settings, unqualified_year):
    w, p, year = unqualified_year
    with travelled(timedelta(0)):
        to(date(year + 1, 1, 10))
        a = assess(session, w, year, db_settings)
        assert (a.grade, a.total_score) == ("unqualified", 10.0)
        rect = session.exec(select(Rectification)).one()
        assert rect.due_on == date(year + 1, 2, 9)  # 30 calendar days, not working days
        assert any("rectification plan due on" in c for c in a.consequences)
        with pytest.raises(Conflict, match="due on") as exc:
            service.reassess(session, rect, actor=w.bureau_actor)
        assert exc.value.code == "plan_pending"
        with pytest.raises(InvalidInput) as exc:
            service.submit_plan(session, rect, actor=world.actor(w.operator), plan="会整改")
        assert exc.value.details["field"] == "plan"
        to(date(year + 1, 2, 10))  # one day late
        with pytest.raises(Conflict, match="was due on") as exc:
            service.submit_plan(session, rect, actor=world.actor(w.operator), plan=PLAN)
        assert exc.value.code == "plan_overdue"
        again = service.reassess(session, rect, actor=w.bureau_actor)  # no plan: unqualified whatever the score
        assert again.grade == "unqualified" and "no rectification plan" in again.grade_reason
    with pytest.raises(NotFound):
        service.rectification_of(session, rect.id, principal=_principal(w.customer))


def test_rectified_operator_passes_the_reassessment(session, db_settings, unqualified_year):
    w, p, year = unqualified_year
    with travelled(timedelta(0)):
        to(date(year + 1, 1, 10))
        a = assess(session, w, year, db_settings)
        rect = session.exec(select(Rectification)).one()
        to(date(year + 1, 2, 9))  # the last day
        service.submit_plan(session, rect, actor=world.actor(w.operator), plan=PLAN)
        session.commit()
        world.use(session, w, p, subjects=["s-2", "s-3", "s-4", "s-5", "s-6", "s-7"], price_fen=100)
        to(date(year + 1, 4, 1))
        again = service.reassess(session, rect, actor=w.bureau_actor)
        assert again.kind == "reassessment" and again.parent_id == a.id
        assert again.metrics[0]["value"] == 700  # the 12 months up to the re-assessment
        assert again.grade == "qualified"
        service.sign(session, again, actor=w.bureau_actor, settings=db_settings)
        session.commit()
        assert rect.state == "reassessed"
        operator.require_active_authorization(session, w.operator.id)  # still authorized


def test_failing_the_reassessment_terminates_and_bans(session, db_settings, unqualified_year):
    w, p, year = unqualified_year
    ban3 = db_settings.model_copy(update={"operator_ban_years": 3})
    with travelled(timedelta(0)):
        to(date(year + 1, 1, 10))
        assess(session, w, year, ban3)
        rect = session.exec(select(Rectification)).one()
        to(date(year + 1, 1, 20))
        service.submit_plan(session, rect, actor=world.actor(w.operator), plan=PLAN)
        to(date(year + 1, 3, 2))
        again = service.reassess(session, rect, actor=w.bureau_actor)
        assert again.grade == "unqualified"
        service.sign(session, again, actor=w.bureau_actor, settings=ban3)
        session.commit()
        with pytest.raises(operator.NoActiveAuthorization) as exc:
            operator.require_active_authorization(session, w.operator.id)
        assert exc.value.details["state"] == "banned"
        assert exc.value.details["banned_until"] == str(date(year + 4, 3, 2))  # 3 years (the setting)


def test_two_consecutive_unqualified_years_force_exit_with_a_ban(session, db_settings, unqualified_year):
    w, p, year = unqualified_year
    world.settings(session, year + 1, metrics=REVENUE_ONLY)
    with travelled(timedelta(0)):
        to(date(year + 1, 1, 10))
        assess(session, w, year, db_settings)
        operator.require_active_authorization(session, w.operator.id)  # one unqualified year: still authorized
        to(date(year + 2, 1, 12))
        second = assess(session, w, year + 1, db_settings)
        assert second.grade == "unqualified"
        assert any("forced exit" in c for c in second.consequences)
        with pytest.raises(operator.NoActiveAuthorization) as exc:
            operator.require_active_authorization(session, w.operator.id)
        assert exc.value.details["state"] == "banned"
        years = db_settings.operator_ban_years
        assert exc.value.details["banned_until"] == str(workdays.add_months(date(year + 2, 1, 12), 12 * years))


def test_two_unqualified_years_in_total_veto_renewal(session, db_settings):
    year = today().year
    starts = date(year, 10, 1)  # the term ends on year+3-09-30: renewal window year+2-09-30 .. year+3-03-30
    w = world.build(session, starts_on=starts)
    for y in (year, year + 2):
        world.settings(session, y, metrics=REVENUE_ONLY)
    # nothing checked in year+1 (no releases, filings, anomalies, incidents): compliance 100, qualified
    world.settings(session, year + 1, metrics={"security_compliance": {"weight": 1, "target": 100}})
    with travelled(timedelta(0)):
        to(date(year + 1, 1, 10))
        assert assess(session, w, year, db_settings).grade == "unqualified"
        to(date(year + 2, 1, 10))
        assert assess(session, w, year + 1, db_settings).grade != "unqualified"
        to(date(year + 3, 1, 5))
        renewal = operator.open_renewal(session, actor=world.actor(w.operator))
        session.commit()
        assert renewal.state == "draft"  # one unqualified year: no veto yet
        to(date(year + 3, 1, 10))
        third = assess(session, w, year + 2, db_settings)
        assert third.grade == "unqualified"
        session.refresh(renewal)
        assert renewal.state == "vetoed"
        assert "assessment_unqualified: 2 years in total" in " ".join(renewal.facts["vetoes"])
        assert f"renewal {renewal.number} vetoed" in third.consequences
        operator.require_active_authorization(session, w.operator.id)  # not consecutive: no forced exit


def _principal(org):
    from authops.core.identity import Principal

    return Principal(kind="user", id=1, name="x", org_id=org.id, org_kind=org.kind,
                     roles=frozenset({"operator_admin"}))
