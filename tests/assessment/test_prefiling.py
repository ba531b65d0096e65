"""Pre-filing: the bureau's schedule, the operator's encrypted report, overdue flags (once each) and
the block on new sandbox jobs naming the resource and the overdue filing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import select

from authops.core.clock import travel, travelled, utcnow
from authops.core.errors import Conflict, InvalidInput
from authops.core.storage.store import get_object_store
from authops.platform.assessment import prefiling
from authops.platform.governance import scenarios, workdays, workflow
from authops.platform.governance.models import Notification
from tests.assessment import world

REPORT = "风险评估报告：数据范围、处理方式、安全措施。".encode()


def today() -> date:
    return workdays.shanghai_date(utcnow())


@pytest.fixture
def scheduled(session):
    w = world.build(session)
    res = world.resource(session, w)
    sched = prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id,
                                   target_kind="resource", target=res.code, first_due_on=today() + timedelta(days=5),
                                   period_months=3, blocks_jobs=True)
    session.commit()
    return w, res, sched


def test_overdue_filing_blocks_jobs_until_filed(session, db_settings, scheduled):
    w, res, sched = scheduled
    store = get_object_store(db_settings)
    prefiling.require_prefiled(session, [res.code])  # not due yet
    with travelled(timedelta(days=6)):
        with pytest.raises(prefiling.NotPrefiled) as exc:
            prefiling.require_prefiled(session, ["other_resource", res.code])
        assert res.code in str(exc.value) and str(sched.first_due_on) in str(exc.value)
        assert exc.value.details == {"resource": res.code, "due_on": str(sched.first_due_on), "schedule": sched.id,
                                     "target_kind": "resource", "target": res.code}
        assert exc.value.status_code == 403 and exc.value.code == "prefiling_overdue"
        row = prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="r.pdf",
                                    content=REPORT)
        session.commit()
        assert (row.due_on, row.on_time) == (sched.first_due_on, False)  # filed a day late
        assert store.get(row.object_key) == REPORT  # readable back through the store ...
        raw = list((db_settings.data_dir).rglob("*"))
        assert not any(REPORT in p.read_bytes() for p in raw if p.is_file())  # ... never stored in the clear
        prefiling.require_prefiled(session, [res.code])  # filed: jobs run again


def test_filing_ahead_answers_the_next_due_date_on_time(session, db_settings, scheduled):
    w, res, sched = scheduled
    store = get_object_store(db_settings)
    first = prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="a.pdf",
                                  content=REPORT)
    assert (first.due_on, first.on_time) == (sched.first_due_on, True)
    nxt = workdays.add_months(sched.first_due_on, 3)
    with pytest.raises(Conflict, match=f"next one \\(due {nxt}\\) can be filed from {sched.first_due_on}"):
        prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="b.pdf", content=REPORT)
    with travelled(timedelta(days=7)):  # after the first due date: the next one may be filed
        second = prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="b.pdf",
                                       content=REPORT + b"2")
    assert (second.due_on, second.on_time) == (nxt, True)


def test_a_scenario_schedule_blocks_the_resources_its_application_names(session, scheduled):
    w, res, _ = scheduled
    other = world.resource(session, w, code="court_records")
    case = workflow.open_case(session, kind=scenarios.KIND, applicant_org_id=w.partner.id, title="贷前核验场景",
                              payload={"resources": [{"resource": other.code, "fields": ["uscc"]}]},
                              actor=world.actor(w.partner))
    sched = prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id,
                                   target_kind="scenario", target=case.number, first_due_on=today(),
                                   blocks_jobs=True)
    session.commit()
    prefiling.require_prefiled(session, [other.code])  # due today: not overdue yet
    with travelled(timedelta(days=1)):
        with pytest.raises(prefiling.NotPrefiled, match=f"for scenario {case.number} due on {sched.first_due_on}") as exc:
            prefiling.require_prefiled(session, [other.code])
        assert exc.value.details["resource"] == other.code and exc.value.details["schedule"] == sched.id


def test_overdue_is_flagged_once_per_due_date(session, scheduled):
    w, res, sched = scheduled
    with travelled(timedelta(0)):
        travel(timedelta(days=6))
        assert prefiling.flag_overdue(session) == [(sched.id, sched.first_due_on)]
        assert prefiling.flag_overdue(session) == []
        session.commit()
        notes = session.exec(select(Notification).where(Notification.org_id == w.operator.id,
                                                        Notification.kind == "prefiling_overdue")).all()
        assert len(notes) == 1 and res.code in notes[0].title


def test_a_non_blocking_schedule_only_flags(session, scheduled):
    w, res, sched = scheduled
    prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id, target_kind="resource",
                           target=res.code, first_due_on=today() - timedelta(days=1), blocks_jobs=False)
    session.commit()
    prefiling.require_prefiled(session, [res.code])  # the replaced blocking schedule no longer counts
    assert [s.target for s in prefiling.schedules_of(session, w.operator.id)] == [res.code]


def test_refusals(session, db_settings, scheduled):
    w, res, sched = scheduled
    store = get_object_store(db_settings)
    with pytest.raises(InvalidInput) as exc:
        prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id, target_kind="tool",
                               target=res.code, first_due_on=today())
    assert exc.value.details["field"] == "target_kind"
    with pytest.raises(InvalidInput, match="no data resource"):
        prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id, target_kind="resource",
                               target="nope", first_due_on=today())
    with pytest.raises(InvalidInput, match="not an operator"):
        prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.customer.id, target_kind="resource",
                               target=res.code, first_due_on=today())
    with pytest.raises(InvalidInput, match="empty"):
        prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="e.pdf", content=b"")
    once = prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id,
                                  target_kind="resource", target=res.code, first_due_on=today())
    prefiling.file_report(session, store, once, actor=world.actor(w.operator), filename="a.pdf", content=REPORT)
    with pytest.raises(Conflict, match="already filed"):
        prefiling.file_report(session, store, once, actor=world.actor(w.operator), filename="b.pdf", content=REPORT)
    with pytest.raises(Conflict, match="replaced"):
        prefiling.file_report(session, store, sched, actor=world.actor(w.operator), filename="c.pdf", content=REPORT)


def test_a_real_sandbox_job_on_an_overdue_resource_is_refused_and_a_mock_run_is_not(session, db_settings):
    """The block at work in submit_job: a real run names the resource and the overdue filing; a mock
    run (synthetic data) still goes."""
    from authops.audit import log as audit_log
    from authops.core.identity import OrgKind
    from authops.platform.sandbox import jobs as sandbox_jobs
    from authops.sandbox.models import Workspace
    from tests.platform.governance.matrix_products import lab, verify_spec
    from tests.support.builders import make_org

    w = world.build(session)
    partner, provider = make_org(session, OrgKind.PARTNER), make_org(session, OrgKind.PROVIDER)
    session.commit()
    l = lab(session, db_settings, partner, provider)
    prefiling.set_schedule(session, actor=w.bureau_actor, operator_org_id=w.operator.id, target_kind="resource",
                           target=l["code"], first_due_on=today() - timedelta(days=2), blocks_jobs=True)
    session.commit()
    ws = session.get(Workspace, l["ws"])
    actor = audit_log.Actor(kind="user", id=1, name="engineer", org_id=partner.id)
    with pytest.raises(prefiling.NotPrefiled, match=l["code"]):
        sandbox_jobs.submit_job(session, ws=ws, kind="spec", spec=verify_spec(l["code"]), actor=actor,
                                claims={"has_paid": ["11010519491231002X"]})
    session.rollback()
    sj, _ = sandbox_jobs.submit_job(session, ws=ws, kind="spec", spec=verify_spec(l["code"]), actor=actor,
                                    claims={"has_paid": ["11010519491231002X"]}, target="mock")
    assert sj.id is not None
