"""Scenario applications and the three-level review: provider department(s) → expert committee →
bureau, returns to the stage that returned, deadlines and overdue flags, and the workspace that the
approval opens with exactly the approved grants and privacy budget."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from authops.audit.models import AuditEvent
from authops.core.clock import travelled, utcnow
from authops.core.errors import AuthopsError
from authops.core.identity import OrgKind
from authops.core.settings import get_settings, reset_settings
from authops.platform.governance import scenarios, workdays, workflow
from authops.platform.governance.models import Case
from authops.platform.identity.models import Organisation
from authops.policies import budget
from authops.sandbox.models import Workspace, WorkspaceGrant
from tests.platform.governance.matrix_scenarios import actor, org_actor, partner_agreement, scenario_payload
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import make_resource


@dataclass
class W:
    bureau: Organisation
    operator: Organisation
    partner: Organisation
    p1: Organisation
    p2: Organisation
    p3: Organisation
    expert_org: Organisation
    r1: str
    r2: str
    r3: str
    experts: list
    users: dict


@pytest.fixture
def w(session: Session) -> W:
    bureau, operator, partner = (make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER))
    p1, p2, p3 = (make_org(session, OrgKind.PROVIDER) for _ in range(3))
    expert_org = make_org(session, OrgKind.EXPERT)
    r1, r2, r3 = (make_resource(session, p).code for p in (p1, p2, p3))
    # The partner agreement covers r1 in full and r2's id_number and sex by verify only.
    partner_agreement(session, operator, partner, [
        {"resource": r1, "fields": ["*"], "share_modes": ["verify", "query"]},
        {"resource": r2, "fields": ["id_number", "sex"], "share_modes": ["verify"]},
    ])
    experts = [actor(make_user(session, expert_org, "expert")) for _ in range(4)]
    users = {"partner": make_user(session, partner), "p1": make_user(session, p1), "p2": make_user(session, p2),
             "p3": make_user(session, p3), "bureau": make_user(session, bureau)}
    session.commit()
    return W(bureau, operator, partner, p1, p2, p3, expert_org, r1, r2, r3, experts, users)


def a(w: W, who: str):
    return actor(w.users[who])


REQUEST = lambda w: [  # noqa: E731
    {"resource": w.r1, "fields": ["id_number", "sex", "paid"], "share_modes": ["verify", "query"], "epsilon": 2.0},
    {"resource": w.r2, "fields": ["id_number", "sex"], "share_modes": ["verify"], "epsilon": 0.5},
]


def submitted(session: Session, w: W, resources=None) -> Case:
    case = scenarios.draft(session, actor=a(w, "partner"), title="中小企业信用评估",
                           payload=scenario_payload(resources or REQUEST(w)))
    scenarios.submit(session, case, actor=a(w, "partner"))
    return case


def at_expert(session: Session, w: W) -> Case:
    case = submitted(session, w)
    scenarios.provider_review(session, case, actor=a(w, "p1"), decision="approve")
    scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
    assert case.state == "expert_review"
    return case


def at_bureau(session: Session, w: W) -> Case:
    case = at_expert(session, w)
    for e in w.experts[:3]:
        scenarios.expert_review(session, case, actor=e, decision="approve")
    assert case.state == "bureau_review"
    return case


def code_of(call) -> str:
    with pytest.raises(AuthopsError) as e:
        call()
    return e.value.code


def test_three_level_review_opens_a_workspace_with_exactly_the_approved_grants_and_budget(session, w):
    case = submitted(session, w)
    assert case.state == "provider_review"
    assert case.awaiting_orgs == sorted([w.p1.id, w.p2.id])
    assert case.due_at == workdays.deadline(utcnow(), get_settings().review_provider_working_days)

    scenarios.provider_review(session, case, actor=a(w, "p1"), decision="approve", reasons="字段最小化")
    assert case.state == "provider_review" and case.awaiting_orgs == [w.p2.id]  # every department must approve
    scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
    assert case.state == "expert_review"
    assert case.awaiting_orgs == [w.expert_org.id]
    assert case.due_at == workdays.deadline(utcnow(), get_settings().review_expert_working_days)

    scenarios.expert_review(session, case, actor=w.experts[0], decision="approve", score=90)
    scenarios.expert_review(session, case, actor=w.experts[1], decision="reject", reasons="收益论证不足")
    assert case.state == "expert_review"  # two votes, quorum is three
    scenarios.expert_review(session, case, actor=w.experts[2], decision="approve")
    assert case.state == "bureau_review"  # 2 of 3 approve > 50%
    assert case.awaiting_orgs == [w.bureau.id]

    scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve", reasons="同意")
    session.commit()
    assert case.state == "approved" and case.decided_at is not None

    ws = session.get(Workspace, case.facts["workspace_id"])
    assert ws.org_id == w.partner.id and ws.approval_ref == case.number and ws.scenario == "中小企业信用评估"
    grants = {g.resource_code: (sorted(g.fields), sorted(g.share_modes))
              for g in session.exec(select(WorkspaceGrant).where(WorkspaceGrant.workspace_id == ws.id))}
    assert grants == {w.r1: (["id_number", "paid", "sex"], ["query", "verify"]),
                      w.r2: (["id_number", "sex"], ["verify"])}
    caps = {b["resource"]: b["epsilon_cap"] for b in budget.balances(session, w.partner.id)}
    assert caps == {w.r1: 2.0, w.r2: 0.5}

    # The history and the audit trail carry every transition with its actor and before/after states.
    steps = [(t.action, t.from_state, t.to_state, t.actor_org_id) for t in workflow.history(session, case)]
    assert steps == [
        ("submit", "", "draft", w.partner.id),
        ("submit", "draft", "provider_review", w.partner.id),
        ("provider_approve", "provider_review", "provider_review", w.p1.id),
        ("provider_approve", "provider_review", "expert_review", w.p2.id),
        ("expert_approve", "expert_review", "expert_review", w.expert_org.id),
        ("expert_reject", "expert_review", "expert_review", w.expert_org.id),
        ("expert_approve", "expert_review", "bureau_review", w.expert_org.id),
        ("bureau_approve", "bureau_review", "approved", w.bureau.id),
    ]
    events = session.exec(select(AuditEvent).where(AuditEvent.object_type == "scenario",
                                                   AuditEvent.object_id == str(case.id),
                                                   AuditEvent.action.like("gov.scenario.%"))
                           .order_by(AuditEvent.seq)).all()
    trail = [(e.action, json.loads(e.canonical)["details"]["before"], json.loads(e.canonical)["details"]["after"],
              e.org_id, e.actor_id) for e in events if e.action != "gov.scenario.review"]
    assert trail[-1] == ("gov.scenario.bureau_approve", "bureau_review", "approved", w.bureau.id,
                         w.users["bureau"].id)
    assert [t[:3] for t in trail] == [(f"gov.scenario.{s[0]}", s[1] or None, s[2]) for s in steps]
    assert trail[3][3:] == (w.p2.id, w.users["p2"].id)


def test_return_at_expert_stage_comes_back_to_the_expert_stage(session, w):
    case = at_expert(session, w)
    first_due = case.due_at
    scenarios.expert_review(session, case, actor=w.experts[0], decision="return", reasons="补充安全措施")
    scenarios.expert_review(session, case, actor=w.experts[1], decision="return", reasons="技术路线不清")
    scenarios.expert_review(session, case, actor=w.experts[2], decision="approve")
    assert case.state == "returned" and case.awaiting_orgs == [w.partner.id]
    assert "补充安全措施" in workflow.history(session, case)[-1].reason

    revised = {**case.payload, "security_measures": "不出域；字段最小化；差分隐私；全程审计"}
    with travelled(timedelta(days=3)):
        scenarios.submit(session, case, actor=a(w, "partner"), payload=revised)
        assert case.state == "expert_review"  # the stage that returned it, not the provider stage
        assert case.round == 2 and case.payload["security_measures"].startswith("不出域；字段最小化")
        assert case.due_at == workdays.deadline(utcnow(), get_settings().review_expert_working_days)
        assert case.due_at > first_due
    # Provider approvals of round 1 stand; the committee votes afresh (an expert who voted before may again).
    assert {r.reviewer_org_id for r in workflow.reviews(session, case, "provider")} == {w.p1.id, w.p2.id}
    for e in w.experts[:3]:
        scenarios.expert_review(session, case, actor=e, decision="approve")
    assert case.state == "bureau_review"


def test_return_at_bureau_stage_comes_back_to_the_bureau(session, w):
    case = at_bureau(session, w)
    scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="return", reasons="明确预期效益指标")
    assert code_of(lambda: scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve")) \
        == "illegal_transition"  # nothing to decide while the partner revises
    scenarios.submit(session, case, actor=a(w, "partner"),
                     payload={**case.payload, "expected_benefit": "每年服务500家企业"})
    assert case.state == "bureau_review" and case.round == 2
    scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve")
    assert case.state == "approved"


def test_a_revision_asking_for_more_data_goes_back_to_the_departments(session, w):
    case = at_expert(session, w)
    for e in w.experts[:3]:
        scenarios.expert_review(session, case, actor=e, decision="return", reasons="需要更多字段论证")
    wider = [{**REQUEST(w)[0], "fields": ["id_number", "sex", "paid", "paid_on"]}, REQUEST(w)[1]]
    scenarios.submit(session, case, actor=a(w, "partner"), payload=scenario_payload(wider))
    assert case.state == "provider_review" and case.awaiting_orgs == sorted([w.p1.id, w.p2.id])
    assert "more of" in workflow.history(session, case)[-1].reason


def test_submission_names_every_missing_part_and_every_bad_request(session, w):
    case = scenarios.draft(session, actor=a(w, "partner"), title="不完整的申请", payload={"goal": "信用评估"})
    with pytest.raises(AuthopsError) as e:
        scenarios.submit(session, case, actor=a(w, "partner"))
    fields = {p["field"] for p in e.value.details["problems"]}
    assert {"payload.product_design", "payload.processing_method", "payload.security_measures",
            "payload.technical_route", "payload.expected_benefit", "payload.resources"} <= fields
    assert "payload.goal" not in fields
    assert case.state == "draft"

    bad = scenario_payload([
        {"resource": "no_such_resource", "fields": ["x"], "share_modes": ["verify"], "epsilon": 1},
        {"resource": w.r1, "fields": ["id_number", "shoe_size"], "share_modes": ["batch"], "epsilon": 1},
        {"resource": w.r2, "fields": ["id_number", "phone"], "share_modes": ["query"], "epsilon": 0},
        {"resource": w.r3, "fields": ["id_number"], "share_modes": ["verify"], "epsilon": 1},
    ])
    with pytest.raises(AuthopsError) as e:
        scenarios.submit(session, case, actor=a(w, "partner"), payload=bad)
    problems = e.value.details["problems"]
    msg = {p["field"]: p["problem"] for p in reversed(problems)}  # the first problem of each field
    assert "no data resource with code 'no_such_resource'" in msg["payload.resources[0].resource"]
    assert "shoe_size" in msg["payload.resources[1].fields"]
    assert "registered for verify, query only, not batch" in msg["payload.resources[1].share_modes"]
    assert any(p["field"] == "payload.resources[2].fields" and "phone" in p["problem"] and "scope" in p["problem"]
               for p in problems)  # phone is a field of r2 but not in the agreement's scope
    assert any(p["field"] == "payload.resources[2].share_modes" and "scope" in p["problem"] for p in problems)
    assert "payload.resources[2].epsilon" in msg
    assert "outside your partner agreement's data scope" in msg["payload.resources[3].resource"]
    assert case.state == "draft" and case.payload == {"goal": "信用评估"}  # nothing lost, nothing half-applied


def test_a_scenario_needs_an_active_partner_agreement(session, w):
    stranger = make_org(session, OrgKind.PARTNER)
    assert code_of(lambda: scenarios.draft(session, actor=org_actor(stranger), title="x",
                                           payload=scenario_payload(REQUEST(w)))) == "no_partner_agreement"


def test_skipping_a_level_is_refused(session, w):
    case = submitted(session, w)
    with pytest.raises(workflow.IllegalTransition) as e:
        scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve")
    assert "provider_review" in e.value.message and "bureau_review" in e.value.message
    assert code_of(lambda: scenarios.expert_review(session, case, actor=w.experts[0], decision="approve")) \
        == "illegal_transition"
    case2 = at_expert(session, w)
    assert code_of(lambda: scenarios.bureau_review(session, case2, actor=a(w, "bureau"), decision="approve")) \
        == "illegal_transition"
    assert case.state == "provider_review" and case2.state == "expert_review"


def test_the_applicant_cannot_review_its_own_application(session, w):
    case = at_bureau(session, w)
    assert code_of(lambda: scenarios.bureau_review(session, case, actor=a(w, "partner"), decision="approve")) \
        == "own_application"
    assert case.state == "bureau_review"


def test_only_departments_whose_resources_are_requested_review(session, w, client):
    case = submitted(session, w)
    session.commit()
    assert code_of(lambda: scenarios.provider_review(session, case, actor=a(w, "p3"), decision="approve")) \
        == "wrong_reviewer"
    # Over the API the department that may not review it does not see it at all.
    h3, h1 = login(client, w.users["p3"].username), login(client, w.users["p1"].username)
    r = client.post(f"/api/v1/governance/scenarios/{case.id}/provider-review", json={"decision": "approve"}, headers=h3)
    assert r.status_code == 404
    assert client.get("/api/v1/governance/scenarios", headers=h3).json() == []
    r = client.post(f"/api/v1/governance/scenarios/{case.id}/provider-review", json={"decision": "approve"}, headers=h1)
    assert r.status_code == 200 and r.json()["awaiting_orgs"] == [w.p2.id]
    assert [c["number"] for c in client.get("/api/v1/governance/scenarios", headers=h1).json()] == [case.number]


def test_a_reviewer_decides_once(session, w):
    case = submitted(session, w)
    scenarios.provider_review(session, case, actor=a(w, "p1"), decision="approve")
    assert code_of(lambda: scenarios.provider_review(session, case, actor=a(w, "p1"), decision="reject",
                                                     reasons="改主意")) == "already_reviewed"
    other_user = actor(make_user(session, w.p1))  # another user of the same department
    assert code_of(lambda: scenarios.provider_review(session, case, actor=other_user, decision="approve")) \
        == "already_reviewed"
    scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
    scenarios.expert_review(session, case, actor=w.experts[0], decision="approve")
    assert code_of(lambda: scenarios.expert_review(session, case, actor=w.experts[0], decision="approve")) \
        == "already_reviewed"


def test_a_decided_case_accepts_no_more_actions(session, w):
    case = submitted(session, w)
    scenarios.provider_review(session, case, actor=a(w, "p1"), decision="reject", reasons="涉及敏感字段")
    assert case.state == "rejected" and case.awaiting_orgs == []
    with pytest.raises(workflow.IllegalTransition) as e:
        scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
    assert "Nothing more can happen" in e.value.message
    assert code_of(lambda: scenarios.submit(session, case, actor=a(w, "partner"))) == "illegal_transition"


def test_reject_and_return_need_written_reasons(session, w):
    case = submitted(session, w)
    with pytest.raises(AuthopsError) as e:
        scenarios.provider_review(session, case, actor=a(w, "p1"), decision="return")
    assert e.value.code == "invalid_input" and e.value.details["field"] == "reasons"


def _committee(session, w, votes, monkeypatch, quorum=3, majority=0.5):
    monkeypatch.setenv("AUTHOPS_COMMITTEE_QUORUM", str(quorum))
    monkeypatch.setenv("AUTHOPS_COMMITTEE_MAJORITY", str(majority))
    reset_settings()
    case = at_expert(session, w)
    for e, d in zip(w.experts, votes):
        scenarios.expert_review(session, case, actor=e, decision=d, reasons="" if d == "approve" else "理由")
    return case.state


def test_committee_quorum_and_majority(session, w, monkeypatch):
    assert _committee(session, w, ["approve", "approve"], monkeypatch) == "expert_review"  # below quorum
    assert _committee(session, w, ["approve", "reject", "reject"], monkeypatch) == "rejected"  # minority
    tie = ["approve", "approve", "reject", "reject"]
    assert _committee(session, w, tie, monkeypatch, quorum=4) == "rejected"
    assert _committee(session, w, ["return", "return", "approve"], monkeypatch) == "returned"  # majority returns
    assert _committee(session, w, ["approve", "return", "reject"], monkeypatch) == "rejected"  # no majority
    assert _committee(session, w, ["approve", "approve", "reject"], monkeypatch, majority=0.7) == "rejected"
    assert _committee(session, w, ["approve", "approve", "approve"], monkeypatch, majority=0.7) == "bureau_review"
    assert _committee(session, w, ["approve"], monkeypatch, quorum=1) == "bureau_review"


def test_only_the_committee_votes(session, w):
    other = make_org(session, OrgKind.EXPERT)
    case = submitted(session, w)
    scenarios.appoint_experts(session, case, actor=a(w, "bureau"), expert_org_ids=[other.id])
    scenarios.provider_review(session, case, actor=a(w, "p1"), decision="approve")
    scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
    assert case.awaiting_orgs == [other.id]
    assert code_of(lambda: scenarios.expert_review(session, case, actor=w.experts[0], decision="approve")) \
        == "wrong_reviewer"


def test_overdue_reviews_are_flagged_without_changing_state(session, w):
    case = submitted(session, w)
    session.commit()
    assert scenarios.overdue_cases(session) == []
    assert scenarios.flag_overdue(session) == []
    later = case.due_at + timedelta(minutes=1) - utcnow()
    with travelled(later):
        assert [c.id for c in scenarios.overdue_cases(session)] == [case.id]
        assert workflow.view(session, case)["overdue"] is True
        assert [c.id for c in scenarios.flag_overdue(session)] == [case.id]
        assert scenarios.flag_overdue(session) == []  # flagged once per stage and round
    assert case.state == "provider_review"
    flag = case.facts["overdue"]
    assert flag["state"] == "provider_review" and flag["awaiting_orgs"] == sorted([w.p1.id, w.p2.id])
    last = workflow.history(session, case)[-1]
    assert (last.action, last.from_state, last.to_state, last.actor_kind) == \
        ("flag_overdue", "provider_review", "provider_review", "system")
    # Once the department acts the case moves on with a fresh deadline and is no longer overdue.
    with travelled(later):
        scenarios.provider_review(session, case, actor=a(w, "p1"), decision="approve")
        scenarios.provider_review(session, case, actor=a(w, "p2"), decision="approve")
        assert case.state == "expert_review" and not workflow.overdue(case)


def test_the_bureau_may_approve_a_narrower_scope(session, w):
    case = at_bureau(session, w)
    with pytest.raises(AuthopsError) as e:
        scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve",
                                approved_scope=[{"resource": w.r1, "fields": ["phone"]}])
    assert e.value.details["field"] == "approved_scope[0].fields"
    scenarios.bureau_review(session, case, actor=a(w, "bureau"), decision="approve",
                            approved_scope=[{"resource": w.r1, "fields": ["id_number", "sex"],
                                             "share_modes": ["verify"], "epsilon": 1.0}])
    grants = session.exec(select(WorkspaceGrant).where(WorkspaceGrant.workspace_id == case.facts["workspace_id"])).all()
    assert [(g.resource_code, sorted(g.fields), g.share_modes) for g in grants] == \
        [(w.r1, ["id_number", "sex"], ["verify"])]
    assert {b["resource"]: b["epsilon_cap"] for b in budget.balances(session, w.partner.id)} == {w.r1: 1.0}


def test_scenario_routes_end_to_end(session, w, client):
    bureau_user = make_user(session, w.bureau, "bureau_reviewer")
    session.commit()
    partner_h = login(client, w.users["partner"].username)
    r = client.post("/api/v1/governance/scenarios", headers=partner_h,
                    json={"title": "信用评估场景", "payload": scenario_payload(REQUEST(w))})
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    r = client.post(f"/api/v1/governance/scenarios/{case_id}/submit", headers=partner_h, json={})
    assert r.status_code == 200 and r.json()["state"] == "provider_review"
    # The bureau cannot skip the departments.
    bureau_h = login(client, bureau_user.username)
    r = client.post(f"/api/v1/governance/scenarios/{case_id}/bureau-review", headers=bureau_h,
                    json={"decision": "approve"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    # A customer sees no scenario applications.
    customer = make_user(session, make_org(session, OrgKind.CUSTOMER))
    session.commit()
    assert client.get("/api/v1/governance/scenarios", headers=login(client, customer.username)).json() == []
    assert [c["id"] for c in client.get("/api/v1/governance/scenarios", headers=bureau_h).json()] == [case_id]
