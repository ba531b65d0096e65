"""The operator lifecycle: selection notice -> application -> qualification -> expert scores ->
publicity with objections -> authorization agreement; renewal with one-vote vetoes; exit.

Times are given explicitly (`now=`) in 2026, whose holidays the calendar knows: the notice closes
20 September, the bureau concludes on Wednesday 30 September at 10:00 Shanghai, so the 7-working-day
publicity runs across National Day to 15 October 23:59 (Shanghai).
"""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.core.data.identifiers import uscc_check_char
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.governance import operator, workflow
from authops.platform.governance.models import Acceptance, Agreement, Case, CaseTransition
from authops.platform.identity.models import User
from tests.support.builders import login, make_org, make_user

T0 = datetime(2026, 9, 1, 2, 0)
DEADLINE = datetime(2026, 9, 20, 2, 0)
CONCLUDE = datetime(2026, 9, 30, 2, 0)  # Wednesday 10:00 Shanghai
DURING = datetime(2026, 10, 9, 2, 0)
LAST_DAY = datetime(2026, 10, 15, 12, 0)  # 20:00 Shanghai on the publicity's last day
AFTER = datetime(2026, 10, 16, 1, 0)  # 09:00 Shanghai the day after
MATERIALS = ["operating_plan", "security_officer_appointment"]
SHARES = {"shares_pct": {"provider_departments": 30, "operator": 50, "partners": 20}}
PAYLOAD = {"security_officer": {"name": "王安全", "title": "CISO"},
           "internal_security_rules": ["数据分级分类管理办法", "安全事件应急预案"]}

_n = [0]


def uscc() -> str:
    _n[0] += 1
    body = f"913205{_n[0]:011d}"
    return body + uscc_check_char(body)


def _actor(user) -> audit_log.Actor:
    return audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=user.org_id)


@pytest.fixture
def w(session, db_settings):
    bureau = make_org(session, OrgKind.BUREAU)
    out = {"bureau_org": bureau, "bureau": _actor(make_user(session, bureau, "bureau_admin")),
           "store": get_object_store(db_settings), "settings": db_settings}
    for name in ("op1", "op2", "op3"):
        org = make_org(session, OrgKind.OPERATOR)
        org.uscc = uscc()
        session.add(org)
        out[name + "_org"] = org
        out[name] = _actor(make_user(session, org, "operator_admin"))
    experts = make_org(session, OrgKind.EXPERT)
    out["expert_org"] = experts
    out["experts"] = [_actor(make_user(session, experts, "expert")) for _ in range(3)]
    outsider = make_org(session, OrgKind.EXPERT)
    out["outsider"] = _actor(make_user(session, outsider, "expert"))
    session.commit()
    return out


def _notice(session, w, **kw):
    return operator.publish_notice(session, actor=w["bureau"], title="苏州市公共数据授权运营机构遴选公告",
                                   deadline_at=kw.pop("deadline_at", DEADLINE),
                                   committee_org_ids=[w["expert_org"].id], materials=kw.pop("materials", MATERIALS),
                                   now=kw.pop("now", T0))


def _draft(session, w, call, who="op1", now=T0):
    return operator.file_application(session, call=call, actor=w[who], title=f"{who} application",
                                     payload=dict(PAYLOAD), now=now)


def _attach(session, w, case, who, materials=MATERIALS, now=T0):
    for m in materials:
        operator.add_document(session, w["store"], case, material=m, filename=f"{m}.pdf",
                              content=f"{m} of {case.number}".encode(), actor=w[who], now=now)


def _submitted(session, w, call, who="op1"):
    case = _draft(session, w, call, who)
    _attach(session, w, case, who)
    operator.submit(session, case, actor=w[who], now=T0, settings=w["settings"])
    return case


def _scored(session, w, case, scores):
    for expert, s in zip(w["experts"], scores, strict=False):
        operator.score(session, case, actor=expert, value=s, comments=f"scored {s}: plan and security reviewed")


def _in_publicity(session, w, who="op1"):
    call = _notice(session, w)
    case = _submitted(session, w, call, who)
    operator.qualification(session, case, actor=w["bureau"], passed=True, reasons="conditions met", now=T0,
                           settings=w["settings"])
    _scored(session, w, case, [80, 85, 90])
    operator.conclude(session, call, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert case.state == "publicity"
    return call, case


def _authorized(session, w, who="op1"):
    _, case = _in_publicity(session, w, who)
    ag = operator.make_agreement(session, case, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                 settings=w["settings"])
    operator.accept(session, ag, w["bureau"])
    operator.accept(session, ag, w[who])
    assert ag.state == "active"
    return ag


def _events(session, prefix):
    session.commit()
    rows = session.exec(select(AuditEvent).where(AuditEvent.action.like(prefix + "%")).order_by(AuditEvent.seq)).all()
    return [(e, json.loads(e.canonical)["details"]) for e in rows]


# --- the whole selection ------------------------------------------------------------------------------
def test_selection_publicity_and_agreement_with_every_step_audited(session, w):
    call = _notice(session, w)
    assert call.number.startswith("ON-") and call.state == "open"
    a1, a2 = _submitted(session, w, call, "op1"), _submitted(session, w, call, "op2")
    assert a1.state == "submitted" and a1.awaiting_orgs == [w["bureau_org"].id]
    for case in (a1, a2):
        operator.qualification(session, case, actor=w["bureau"], passed=True, reasons="conditions met", now=T0,
                               settings=w["settings"])
    assert a1.state == "expert_review" and a1.awaiting_orgs == [w["expert_org"].id]
    _scored(session, w, a1, [80, 85, 90])
    assert a1.awaiting_orgs == [w["bureau_org"].id] and a1.number.startswith("OP-")  # quorum: the bureau's turn
    _scored(session, w, a2, [70, 75, 60])
    result = operator.conclude(session, call, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert result["selected_case"] == a1.number and result["mean_score"] == 85.0
    assert (a1.state, a2.state, call.state) == ("publicity", "not_selected", "closed")
    # 7 working days from Wednesday 30 September across National Day: Thursday 15 October, end of day.
    assert a1.facts["publicity"]["ends_local"] == "2026-10-15 23:59"
    assert a1.due_at == datetime(2026, 10, 15, 15, 59, 59)

    filed = operator.file_objection(session, a1, text="该企业注册地实际不在本市，请核实。", contact="13800000000",
                                    now=DURING)
    assert filed["objection"] == 1 and a1.state == "publicity"
    with pytest.raises(Conflict) as exc:  # an unresolved objection blocks the agreement
        operator.make_agreement(session, a1, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                settings=w["settings"])
    assert exc.value.code == "objections_unresolved"
    operator.resolve_objection(session, a1, 1, actor=w["bureau"], upheld=False,
                               reasons="registration certificate checked: registered in the city", now=DURING)
    assert a1.facts["objections"][0]["state"] == "dismissed"
    with pytest.raises(Conflict) as exc:  # the last day of publicity is still publicity
        operator.make_agreement(session, a1, actor=w["bureau"], revenue_distribution=SHARES, now=LAST_DAY,
                                settings=w["settings"])
    assert exc.value.code == "publicity_running" and "2026-10-15 23:59 (Asia/Shanghai)" in exc.value.message

    ag = operator.make_agreement(session, a1, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                 settings=w["settings"])
    assert a1.state == "agreement_issued"
    assert (ag.kind, ag.state, ag.party_a_org_id, ag.party_b_org_id) == (
        "operator_authorization", "pending", w["bureau_org"].id, w["op1_org"].id)
    assert (ag.starts_on, ag.ends_on) == (date(2026, 10, 16), date(2029, 10, 15))
    assert "30%" in ag.text and "王安全" in ag.text and "2029-10-15" in ag.text
    for key in ("scope", "renewal", "revenue_distribution", "asset_ownership", "duties", "breach_and_termination"):
        assert ag.terms[key]
    with pytest.raises(Forbidden) as exc:  # pending: not yet accepted by both
        operator.require_active_authorization(session, w["op1_org"].id, date(2027, 1, 1))
    assert exc.value.code == "no_active_authorization" and exc.value.details["state"] == "pending"
    operator.accept(session, ag, w["op1"])
    assert ag.state == "pending"
    operator.accept(session, ag, w["bureau"])
    assert ag.state == "active"
    accs = session.exec(select(Acceptance).where(Acceptance.agreement_id == ag.id)).all()
    assert {a.org_id for a in accs} == {w["bureau_org"].id, w["op1_org"].id}
    assert {a.text_sha256 for a in accs} == {ag.text_sha256}
    assert operator.require_active_authorization(session, w["op1_org"].id, date(2027, 1, 1)).id == ag.id
    with pytest.raises(Forbidden) as exc:
        operator.require_active_authorization(session, w["op2_org"].id, date(2027, 1, 1))
    assert exc.value.details["state"] == "none"

    # the audit trail: every transition with actor, before and after
    events = _events(session, "gov.operator_application.")
    steps = [(e.action.rsplit(".", 1)[1], d["before"], d["after"], e.actor_id) for e, d in events
             if d["number"] == a1.number]
    assert steps == [
        ("submit", None, "draft", w["op1"].id), ("submit", "draft", "submitted", w["op1"].id),
        ("qualify", "submitted", "expert_review", w["bureau"].id),
        *[("score", "expert_review", "expert_review", x.id) for x in w["experts"]],
        ("select", "expert_review", "publicity", w["bureau"].id),
        ("object", "publicity", "publicity", None),
        ("dismiss_objection", "publicity", "publicity", w["bureau"].id),
        ("authorize", "publicity", "agreement_issued", w["bureau"].id)]
    objection = [(e, d) for e, d in events if e.action.endswith(".object")][0]
    assert objection[0].actor_kind == "anonymous"
    assert "13800000000" not in objection[0].canonical.decode()  # the objector's contact is not in the log
    assert "13800000000" not in json.dumps(operator.case_view(session, a1)["facts"])
    assert operator.case_view(session, a1, bureau=True)["facts"]["objections"][0]["contact"] == "13800000000"
    agreement_events = [(e.action, d.get("before"), d.get("after"), d.get("text_sha256"))
                        for e, d in _events(session, "gov.agreement.") if d["number"] == ag.number]
    assert agreement_events[0] == ("gov.agreement.create", None, "pending", ag.text_sha256)
    assert [a for a, *_ in agreement_events].count("gov.agreement.accept") == 2
    assert agreement_events[-1] == ("gov.agreement.activate", "pending", "active", ag.text_sha256)
    conclude = _events(session, "gov.operator_selection.conclude")[0][1]
    assert (conclude["before"], conclude["after"], conclude["selected"]) == ("open", "closed", a1.number)


def test_submitting_with_missing_materials_is_refused_listing_them(session, w):
    call = _notice(session, w)
    case = _draft(session, w, call)
    with pytest.raises(InvalidInput) as exc:
        operator.submit(session, case, actor=w["op1"], now=T0, settings=w["settings"])
    assert exc.value.code == "missing_materials"
    assert exc.value.details["missing"] == MATERIALS and "operating_plan, security_officer_appointment" in exc.value.message
    _attach(session, w, case, "op1", materials=MATERIALS[:1])
    with pytest.raises(InvalidInput, match="security_officer_appointment") as exc:
        operator.submit(session, case, actor=w["op1"], now=T0, settings=w["settings"])
    assert exc.value.details["missing"] == ["security_officer_appointment"] and case.state == "draft"
    with pytest.raises(InvalidInput, match="not on the checklist"):
        operator.add_document(session, w["store"], case, material="lunch_menu", filename="x.pdf", content=b"x",
                              actor=w["op1"], now=T0)
    with pytest.raises(NotFound):  # another organisation cannot attach to or submit this draft
        operator.submit(session, case, actor=w["op2"], now=T0, settings=w["settings"])


def test_the_application_form_needs_the_security_capability(session, w):
    call = _notice(session, w)
    with pytest.raises(InvalidInput) as exc:
        operator.file_application(session, call=call, actor=w["op1"], title="x",
                                  payload={"internal_security_rules": ["a"]}, now=T0)
    assert exc.value.details == {"field": "security_officer.name"}
    with pytest.raises(InvalidInput) as exc:
        operator.file_application(session, call=call, actor=w["op1"], title="x",
                                  payload={"security_officer": {"name": "王"}, "internal_security_rules": []}, now=T0)
    assert exc.value.details == {"field": "internal_security_rules"}


def test_nothing_can_be_done_after_the_notice_deadline(session, w):
    call = _notice(session, w)
    late = datetime(2026, 9, 20, 3, 0)
    case = _draft(session, w, call)
    with pytest.raises(workflow.Expired, match="closed for applications at 2026-09-20 10:00"):
        _draft(session, w, call, "op2", now=late)
    with pytest.raises(workflow.Expired):
        _attach(session, w, case, "op1", now=late)
    _attach(session, w, case, "op1")
    with pytest.raises(workflow.Expired):
        operator.submit(session, case, actor=w["op1"], now=late, settings=w["settings"])
    assert case.state == "draft"
    with pytest.raises(Conflict) as exc:  # one application per organisation per notice
        _draft(session, w, call)
    assert exc.value.code == "already_applied"


def test_skipping_the_qualification_check_is_refused(session, w):
    call = _notice(session, w)
    case = _submitted(session, w, call)
    with pytest.raises(workflow.IllegalTransition) as exc:  # experts cannot score before qualification
        operator.score(session, case, actor=w["experts"][0], value=90, comments="excellent")
    assert "is submitted" in exc.value.message and exc.value.details["allowed"] == ["withdraw", "qualify", "disqualify"]
    with pytest.raises(Conflict) as exc:
        operator.conclude(session, call, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert exc.value.code == "qualification_pending" and case.number in exc.value.message
    with pytest.raises(workflow.IllegalTransition):  # nor can the agreement be made
        operator.make_agreement(session, case, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                settings=w["settings"])


def test_qualification_checks_the_admission_conditions(session, w):
    call = _notice(session, w)
    case = _submitted(session, w, call)
    w["op1_org"].region = "上海市"
    w["op1_org"].uscc = None
    session.add(w["op1_org"])
    with pytest.raises(Conflict) as exc:
        operator.qualification(session, case, actor=w["bureau"], passed=True, now=T0, settings=w["settings"])
    assert exc.value.code == "admission_conditions_unmet"
    assert set(exc.value.details["unmet"]) == {"registered_in_city", "valid_uscc", "market_entity"}
    assert "registered in 上海市" in exc.value.message
    with pytest.raises(InvalidInput, match="needs written reasons"):
        operator.qualification(session, case, actor=w["bureau"], passed=False, now=T0, settings=w["settings"])
    operator.qualification(session, case, actor=w["bureau"], passed=False, reasons="not registered in the city",
                           now=T0, settings=w["settings"])
    assert case.state == "disqualified" and case.decided_at is not None


def test_the_applicant_cannot_review_itself_and_only_the_committee_scores(session, w):
    call = _notice(session, w)
    case = _submitted(session, w, call)
    with pytest.raises(workflow.OwnApplication):
        operator.qualification(session, case, actor=w["op1"], passed=True, now=T0, settings=w["settings"])
    operator.qualification(session, case, actor=w["bureau"], passed=True, now=T0, settings=w["settings"])
    with pytest.raises(workflow.WrongReviewer, match="not on the expert committee"):
        operator.score(session, case, actor=w["op1"], value=100, comments="we are great")
    with pytest.raises(workflow.WrongReviewer):
        operator.score(session, case, actor=w["outsider"], value=50, comments="not my committee")
    operator.score(session, case, actor=w["experts"][0], value=70, comments="fine")
    with pytest.raises(Conflict) as exc:
        operator.score(session, case, actor=w["experts"][0], value=99, comments="changed my mind")
    assert exc.value.code == "already_reviewed"
    with pytest.raises(InvalidInput):
        operator.score(session, case, actor=w["experts"][1], value=101, comments="too high")
    with pytest.raises(InvalidInput, match="comments"):
        operator.score(session, case, actor=w["experts"][1], value=60, comments=" ")


def test_concluding_before_the_deadline_or_the_quorum_is_refused(session, w):
    call = _notice(session, w)
    case = _submitted(session, w, call)
    operator.qualification(session, case, actor=w["bureau"], passed=True, now=T0, settings=w["settings"])
    _scored(session, w, case, [90, 90])
    with pytest.raises(Conflict) as exc:
        operator.conclude(session, call, actor=w["bureau"], now=T0, settings=w["settings"])
    assert exc.value.code == "notice_open" and "2026-09-20 10:00" in exc.value.message
    with pytest.raises(Conflict) as exc:
        operator.conclude(session, call, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert exc.value.code == "quorum_not_reached" and f"{case.number} has 2" in exc.value.message
    assert case.state == "expert_review" and call.state == "open"
    with pytest.raises(workflow.IllegalTransition):  # no publicity yet, so no agreement
        operator.make_agreement(session, case, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                settings=w["settings"])


def test_below_the_pass_mark_nobody_is_selected_and_a_tie_needs_the_bureau(session, w):
    call = _notice(session, w)
    low = _submitted(session, w, call)
    operator.qualification(session, low, actor=w["bureau"], passed=True, now=T0, settings=w["settings"])
    _scored(session, w, low, [50, 60, 65])  # mean 58.33
    result = operator.conclude(session, call, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert result["selected_case"] is None and low.state == "not_selected"
    assert "below the pass mark 60" in workflow.history(session, low)[-1].reason

    call2 = _notice(session, w)
    a, b = _submitted(session, w, call2, "op2"), _submitted(session, w, call2, "op3")
    for c in (a, b):
        operator.qualification(session, c, actor=w["bureau"], passed=True, now=T0, settings=w["settings"])
        _scored(session, w, c, [80, 80, 80])
    with pytest.raises(Conflict) as exc:
        operator.conclude(session, call2, actor=w["bureau"], now=CONCLUDE, settings=w["settings"])
    assert exc.value.code == "tie" and a.number in exc.value.message and b.number in exc.value.message
    operator.conclude(session, call2, actor=w["bureau"], selected_case_id=b.id, reasons="stronger security plan",
                      now=CONCLUDE, settings=w["settings"])
    assert (a.state, b.state) == ("not_selected", "publicity")


def test_objections_during_publicity(session, w):
    _, case = _in_publicity(session, w)
    with pytest.raises(InvalidInput):
        operator.file_objection(session, case, text="短", contact="a@b.cn", now=DURING)
    with pytest.raises(InvalidInput):
        operator.file_objection(session, case, text="an objection without a contact", contact="", now=DURING)
    operator.file_objection(session, case, text="the security officer left the company in August", contact="a@b.cn",
                            now=DURING)
    with pytest.raises(workflow.Expired, match="ended on 2026-10-15 23:59"):
        operator.file_objection(session, case, text="too late for an objection now", contact="a@b.cn", now=AFTER)
    with pytest.raises(NotFound):
        operator.resolve_objection(session, case, 7, actor=w["bureau"], upheld=True, reasons="x", now=DURING)
    with pytest.raises(InvalidInput):
        operator.resolve_objection(session, case, 1, actor=w["bureau"], upheld=True, reasons=" ", now=DURING)
    operator.resolve_objection(session, case, 1, actor=w["bureau"], upheld=True,
                               reasons="confirmed: no security officer in post", now=DURING)
    assert case.state == "rejected" and case.facts["objections"][0]["state"] == "upheld"
    with pytest.raises(NotFound):  # no longer under publicity: the public cannot reach it
        operator.public_case(session, case.id)
    with pytest.raises(workflow.IllegalTransition):
        operator.make_agreement(session, case, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                settings=w["settings"])


def test_the_agreement_checks_its_revenue_terms(session, w):
    _, case = _in_publicity(session, w)
    with pytest.raises(InvalidInput, match="add up to 90%"):
        operator.make_agreement(session, case, actor=w["bureau"], now=AFTER, settings=w["settings"],
                                revenue_distribution={"shares_pct": {"provider_departments": 30, "operator": 40,
                                                                     "partners": 20}})
    with pytest.raises(InvalidInput, match="missing partners"):
        operator.make_agreement(session, case, actor=w["bureau"], now=AFTER, settings=w["settings"],
                                revenue_distribution={"shares_pct": {"provider_departments": 50, "operator": 50}})
    assert case.state == "publicity"


def test_only_one_operator_is_authorized_city_wide(session, w):
    _authorized(session, w, "op1")
    _, other = _in_publicity(session, w, "op2")
    with pytest.raises(Conflict) as exc:
        operator.make_agreement(session, other, actor=w["bureau"], revenue_distribution=SHARES, now=AFTER,
                                settings=w["settings"])
    assert exc.value.code == "operator_already_authorized" and "another operator" in exc.value.message
    assert other.state == "publicity"


# --- renewal ------------------------------------------------------------------------------------------
def test_renewal_window_materials_and_a_new_term(session, w):
    # 2026-10-16 .. 2029-10-15: a renewal is filed from 2028-10-15 until 2029-04-15 (at least 6 months ahead)
    ag = _authorized(session, w)
    with pytest.raises(Conflict) as exc:
        operator.open_renewal(session, actor=w["op1"], now=datetime(2028, 10, 14, 2, 0))
    assert exc.value.code == "renewal_window_closed" and "opens on 2028-10-15" in exc.value.message
    with pytest.raises(Conflict) as exc:  # less than 6 months before the end: too late
        operator.open_renewal(session, actor=w["op1"], now=datetime(2029, 4, 16, 2, 0))
    assert exc.value.code == "renewal_deadline_passed" and "filed by 2029-04-15" in exc.value.message
    with pytest.raises(Forbidden) as exc:  # after expiry there is nothing left to renew
        operator.open_renewal(session, actor=w["op1"], now=datetime(2029, 10, 16, 2, 0))
    assert exc.value.code == "no_active_authorization" and "expired on 2029-10-15" in exc.value.message
    inside = datetime(2029, 4, 15, 2, 0)
    case = operator.open_renewal(session, actor=w["op1"], now=inside)
    assert case.state == "draft" and case.number.startswith("OR-")
    with pytest.raises(Conflict):
        operator.open_renewal(session, actor=w["op1"], now=inside)
    with pytest.raises(InvalidInput) as exc:
        operator.submit(session, case, actor=w["op1"], now=inside, settings=w["settings"])
    assert exc.value.details["missing"] == operator.RENEWAL_MATERIALS
    _attach(session, w, case, "op1", materials=operator.RENEWAL_MATERIALS)
    operator.submit(session, case, actor=w["op1"], now=inside, settings=w["settings"])
    assert case.state == "submitted"
    with pytest.raises(workflow.OwnApplication):
        operator.decide(session, case, actor=w["op1"], approve=True, now=inside, settings=w["settings"])
    operator.decide(session, case, actor=w["bureau"], approve=True, reasons="evaluation good", now=inside,
                    settings=w["settings"])
    assert case.state == "renewed"
    new = session.get(Agreement, case.facts["new_agreement_id"])
    assert (new.starts_on, new.ends_on, new.state) == (date(2029, 10, 16), date(2032, 10, 15), "pending")
    assert new.terms["renews"] == ag.number and ag.number in new.text
    operator.accept(session, new, w["op1"])
    operator.accept(session, new, w["bureau"])
    assert operator.require_active_authorization(session, w["op1_org"].id, date(2029, 10, 15)).id == ag.id
    assert operator.require_active_authorization(session, w["op1_org"].id, date(2030, 1, 1)).id == new.id


def test_vetoes_block_renewal_automatically(session, w):
    ag = _authorized(session, w)
    inside = datetime(2029, 3, 1, 2, 0)
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="assessment_unqualified", year=2027,
                         summary="2027 assessment unqualified", actor=w["bureau"])
    case = operator.open_renewal(session, actor=w["op1"], now=inside)
    assert case.state == "draft"  # one unqualified assessment is not a veto
    _attach(session, w, case, "op1", materials=operator.RENEWAL_MATERIALS)
    operator.submit(session, case, actor=w["op1"], now=inside, settings=w["settings"])
    assert case.state == "submitted"
    with pytest.raises(Forbidden) as exc:  # a veto is the platform's, not a person's, act
        workflow.transition(session, case, "veto", actor=w["bureau"], reason="I say so")
    assert exc.value.code == "system_only"
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="assessment_unqualified", year=2028,
                         summary="2028 assessment unqualified again", actor=w["bureau"])
    assert case.state == "vetoed"
    assert case.facts["vetoes"] == ["assessment_unqualified: 2 years in total (years 2027, 2028)"]
    last = workflow.history(session, case)[-1]
    assert (last.action, last.actor_kind, last.from_state, last.to_state) == ("veto", "system", "submitted", "vetoed")
    with pytest.raises(workflow.IllegalTransition):
        operator.decide(session, case, actor=w["bureau"], approve=True, now=inside, settings=w["settings"])
    veto = [d for e, d in _events(session, "gov.operator_renewal.veto")][0]
    assert (veto["before"], veto["after"]) == ("submitted", "vetoed")
    assert ag.state == "active"


@pytest.mark.parametrize("kind", ["major_security_incident", "unapproved_transfer"])
def test_an_incident_or_transfer_on_record_vetoes_at_once(session, w, kind):
    _authorized(session, w)
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind=kind, summary="on record",
                         occurred_on=date(2028, 3, 1), actor=w["bureau"])
    case = operator.open_renewal(session, actor=w["op1"], now=datetime(2029, 3, 1, 2, 0))
    assert case.state == "vetoed" and case.facts["vetoes"][0].startswith(kind)


def test_an_incident_before_the_term_is_not_a_veto(session, w):
    _authorized(session, w)
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="major_security_incident",
                         summary="before the authorization", occurred_on=date(2025, 3, 1), actor=w["bureau"])
    case = operator.open_renewal(session, actor=w["op1"], now=datetime(2029, 3, 1, 2, 0))
    assert case.state == "draft"


# --- exit ---------------------------------------------------------------------------------------------
def test_voluntary_exit_needs_six_months_notice_and_its_materials(session, w):
    ag = _authorized(session, w)
    today = datetime(2027, 3, 1, 2, 0)
    with pytest.raises(InvalidInput) as exc:
        operator.open_exit(session, actor=w["op1"], exit_on=date(2027, 8, 31), reason="strategy", now=today)
    assert exc.value.code == "notice_too_short" and "the earliest exit date applied for today (2027-03-01) is 2027-09-01" in exc.value.message
    case = operator.open_exit(session, actor=w["op1"], exit_on=date(2027, 9, 1), reason="strategy change", now=today)
    with pytest.raises(InvalidInput) as exc:
        operator.submit(session, case, actor=w["op1"], now=today, settings=w["settings"])
    assert exc.value.details["missing"] == operator.EXIT_MATERIALS
    _attach(session, w, case, "op1", materials=operator.EXIT_MATERIALS)
    with pytest.raises(InvalidInput, match="notice"):  # a month later the notice is too short
        operator.submit(session, case, actor=w["op1"], now=datetime(2027, 4, 1, 2, 0), settings=w["settings"])
    operator.submit(session, case, actor=w["op1"], now=today, settings=w["settings"])
    operator.decide(session, case, actor=w["bureau"], approve=True, reasons="plans complete", now=today,
                    settings=w["settings"])
    assert case.state == "approved"
    assert (ag.state, ag.liability_until, ag.terms["exit_on"]) == ("exited", date(2030, 9, 1), "2027-09-01")
    assert "banned_until" not in ag.terms
    # the operator may act until the day before its exit date
    assert operator.require_active_authorization(session, w["op1_org"].id, date(2027, 8, 31)).id == ag.id
    with pytest.raises(Forbidden) as exc:
        operator.require_active_authorization(session, w["op1_org"].id, date(2027, 9, 1))
    assert exc.value.details["state"] == "exited" and "exited on 2027-09-01" in exc.value.message
    ev = [d for e, d in _events(session, "gov.agreement.exit")][0]
    assert (ev["before"], ev["after"], ev["liability_until"]) == ("active", "exited", "2030-09-01")


def test_forced_exit_needs_a_listed_cause_on_record_and_failing_assessment_bans(session, w):
    ag = _authorized(session, w)
    today = datetime(2029, 3, 2, 2, 0)
    with pytest.raises(InvalidInput, match="cause must be one of"):
        operator.force_exit(session, operator_org_id=w["op1_org"].id, cause="dislike", reasons="x",
                            actor=w["bureau"], now=today, settings=w["settings"])
    with pytest.raises(Conflict) as exc:
        operator.force_exit(session, operator_org_id=w["op1_org"].id, cause="failed_assessment",
                            reasons="failing", actor=w["bureau"], now=today, settings=w["settings"])
    assert exc.value.code == "no_fact_on_record"
    for year in (2027, 2029):  # not consecutive
        operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="assessment_unqualified", year=year,
                             summary=f"{year} unqualified", actor=w["bureau"])
    with pytest.raises(Conflict, match="2 consecutive years"):
        operator.force_exit(session, operator_org_id=w["op1_org"].id, cause="failed_assessment",
                            reasons="failing", actor=w["bureau"], now=today, settings=w["settings"])
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="targets_missed", year=2028,
                         summary="2028 targets missed", actor=w["bureau"])
    case = operator.force_exit(session, operator_org_id=w["op1_org"].id, cause="failed_assessment",
                               reasons="re-assessment failed after rectification", actor=w["bureau"], now=today,
                               settings=w["settings"])
    assert case.state == "forced" and case.facts["grounds"] == [
        "assessment unqualified or targets missed in 2027 and 2028"]
    assert (ag.state, ag.terms["exit_on"], ag.liability_until) == ("exited", "2029-03-02", date(2032, 3, 2))
    assert ag.terms["banned_until"] == "2034-03-02"  # operator_ban_years = 5
    with pytest.raises(Forbidden) as exc:
        operator.require_active_authorization(session, w["op1_org"].id, date(2029, 3, 2))
    assert exc.value.details["state"] == "banned" and "banned from the city's public data operation until 2034-03-02" in exc.value.message
    call = _notice(session, w, deadline_at=datetime(2029, 4, 1), now=today)
    with pytest.raises(Forbidden) as exc:
        _draft(session, w, call, now=today)
    assert exc.value.code == "banned" and "2034-03-02" in exc.value.message
    _draft(session, w, call, "op2", now=today)  # another company may apply


def test_forced_exit_for_fraud_does_not_ban(session, w):
    ag = _authorized(session, w)
    today = datetime(2028, 1, 5, 2, 0)
    operator.record_fact(session, operator_org_id=w["op1_org"].id, kind="fraud", summary="falsified revenue report",
                         actor=w["bureau"], now=today)
    operator.force_exit(session, operator_org_id=w["op1_org"].id, cause="fraud", reasons="falsified report",
                        actor=w["bureau"], now=today, settings=w["settings"])
    assert ag.state == "exited" and "banned_until" not in ag.terms
    assert operator.banned_until(session, w["op1_org"].id, date(2028, 1, 6)) is None
    transitions = session.exec(select(CaseTransition).join(Case, Case.id == CaseTransition.case_id)
                               .where(Case.kind == operator.EXIT)).all()
    assert [(t.action, t.to_state, t.actor_id) for t in transitions] == [
        ("submit", "draft", w["bureau"].id), ("force", "forced", w["bureau"].id)]


# --- over HTTP ----------------------------------------------------------------------------------------
def test_the_selection_over_the_api(client, session, w):
    users = User
    bh = login(client, session.get(User, w["bureau"].id).username)
    oh = login(client, session.get(users, w["op1"].id).username)
    eh = [login(client, session.get(users, e.id).username) for e in w["experts"]]
    api = "/api/v1/governance/operator"
    r = client.post(f"{api}/notices", headers=bh, json={
        "title": "遴选公告", "deadline_at": "2099-01-01T00:00:00+08:00", "committee_org_ids": [w["expert_org"].id],
        "materials": MATERIALS})
    assert r.status_code == 201, r.text
    call_id = r.json()["id"]
    assert client.post(f"{api}/notices", headers=oh, json={}).status_code == 403
    r = client.post(f"{api}/applications", headers=oh, json={"call_id": call_id, "title": "申报", "payload": PAYLOAD})
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    r = client.post(f"{api}/applications/{case_id}/submit", headers=oh)
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_materials"
    assert r.json()["error"]["details"]["missing"] == MATERIALS
    for m in MATERIALS:
        r = client.post(f"{api}/applications/{case_id}/documents", headers=oh, data={"material": m},
                        files={"file": (f"{m}.pdf", b"%PDF-1.4 " + m.encode(), "application/pdf")})
        assert r.status_code == 201, r.text
    assert r.json()["missing"] == []
    assert client.post(f"{api}/applications/{case_id}/submit", headers=oh).json()["state"] == "submitted"
    r = client.post(f"{api}/applications/{case_id}/scores", headers=eh[0], json={"score": 90, "comments": "good"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    r = client.post(f"{api}/applications/{case_id}/qualification", headers=bh, json={"passed": True})
    assert r.json()["state"] == "expert_review", r.text
    for h, s in zip(eh, (88, 92, 80), strict=True):
        assert client.post(f"{api}/applications/{case_id}/scores", headers=h,
                           json={"score": s, "comments": "reviewed"}).status_code == 201
    r = client.post(f"{api}/notices/{call_id}/conclude", headers=bh, json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "notice_open"
    session.expire_all()
    call = operator.get_notice(session, call_id)
    call.deadline_at = datetime(2020, 1, 1)  # time passes: the notice has closed
    session.add(call)
    session.commit()
    r = client.post(f"{api}/notices/{call_id}/conclude", headers=bh, json={})
    assert r.status_code == 200 and r.json()["result"]["mean_score"] == 86.67, r.text
    public = client.get("/api/v1/public/operator/notices").json()
    assert [p["id"] for p in public["publicity"]] == [case_id]
    r = client.post(f"/api/v1/public/operator/applications/{case_id}/objections",
                    json={"text": "请核实该企业的信用记录。", "contact": "someone@example.cn"})
    assert r.status_code == 201 and r.json()["objection"] == 1, r.text
    mine = client.get(f"{api}/applications/{case_id}", headers=oh).json()
    assert "someone@example.cn" not in json.dumps(mine)
    bureau_view = client.get(f"{api}/bureau/applications/{case_id}", headers=bh).json()
    assert bureau_view["facts"]["objections"][0]["contact"] == "someone@example.cn"
    r = client.post(f"{api}/applications/{case_id}/agreement", headers=bh, json={"revenue_distribution": SHARES})
    assert r.status_code == 409 and r.json()["error"]["code"] == "publicity_running"
    r = client.post(f"{api}/applications/{case_id}/objections/1/resolve", headers=bh,
                    json={"upheld": False, "reasons": "credit record checked: clean"})
    assert r.status_code == 200, r.text
    session.expire_all()
    case = session.get(Case, case_id)
    case.facts = {**case.facts, "publicity": {**case.facts["publicity"], "ends_at": "2020-01-01T00:00:00"}}
    session.add(case)
    session.commit()
    r = client.post(f"{api}/applications/{case_id}/agreement", headers=bh, json={"revenue_distribution": SHARES})
    assert r.status_code == 201, r.text
    ag = r.json()
    for h in (oh, bh):
        r = client.post(f"/api/v1/governance/agreements/{ag['id']}/accept", headers=h,
                        json={"text_sha256": ag["text_sha256"]})
        assert r.status_code == 200, r.text
    r = client.get(f"{api}/authorization", headers=oh).json()
    assert r["active"] is True and r["agreement"]["number"] == ag["number"]
    other = login(client, session.get(users, w["op2"].id).username)
    assert client.get(f"{api}/authorization", headers=other).json()["state"] == "none"
    assert client.get(f"{api}/applications/{case_id}", headers=other).status_code == 404


def test_a_renewal_opened_in_time_but_submitted_too_late_is_refused(session, w):
    _authorized(session, w)  # ends 2029-10-15: file by 2029-04-15
    case = operator.open_renewal(session, actor=w["op1"], now=datetime(2029, 4, 1, 2, 0))
    _attach(session, w, case, "op1", materials=operator.RENEWAL_MATERIALS)
    with pytest.raises(Conflict) as exc:
        operator.submit(session, case, actor=w["op1"], now=datetime(2029, 4, 20, 2, 0), settings=w["settings"])
    assert exc.value.code == "renewal_deadline_passed"
    assert case.state == "draft"
