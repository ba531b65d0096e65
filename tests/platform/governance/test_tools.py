"""Tool deployment requests: a security pledge accepted by its hash, the bureau's decision with
reasons, and nothing opened for a tool before its approval."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from authops.audit.models import AuditEvent
from authops.core.errors import AuthopsError
from authops.core.identity import OrgKind
from authops.platform.governance import partners, tools, workflow
from tests.platform.governance.matrix_scenarios import PLEDGE, authorize_operator, org_actor, tool_body
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import make_resource


@pytest.fixture
def w(session: Session) -> dict:
    orgs = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER,
                                                     OrgKind.PROVIDER, OrgKind.CUSTOMER)}
    orgs["code"] = make_resource(session, orgs["provider"]).code
    orgs["code2"] = make_resource(session, orgs["provider"]).code
    session.commit()
    return orgs


def code_of(call) -> str:
    with pytest.raises(AuthopsError) as e:
        call()
    return e.value.code


def test_a_tool_needs_the_bureaus_approval_before_anything_is_opened_for_it(session, w):
    partner, bureau = org_actor(w["partner"]), org_actor(w["bureau"])
    case = tools.apply(session, actor=partner, body=tool_body(w["code"]))
    assert case.state == "bureau_review" and case.awaiting_orgs == [w["bureau"].id]
    assert case.facts["pledge_accepted"]["sha256"] == partners.sha256(PLEDGE)
    assert code_of(lambda: tools.require_tool_approved(session, w["partner"].id, "risk-model-runner")) \
        == "tool_not_approved"
    assert code_of(lambda: tools.review(session, case, actor=bureau, decision="approve")) == "invalid_input"  # reasons
    assert code_of(lambda: tools.review(session, case, actor=partner, decision="approve", reasons="我们自己批")) \
        == "own_application"
    tools.review(session, case, actor=bureau, decision="approve", reasons="承诺充分，范围明确")
    assert case.state == "approved"
    assert tools.require_tool_approved(session, w["partner"].id, "risk-model-runner", w["code"]).id == case.id
    assert code_of(lambda: tools.require_tool_approved(session, w["partner"].id, "risk-model-runner", w["code2"])) \
        == "tool_not_approved"
    assert code_of(lambda: tools.require_tool_approved(session, w["operator"].id, "risk-model-runner")) \
        == "tool_not_approved"  # approval is per organisation
    assert code_of(lambda: tools.review(session, case, actor=bureau, decision="reject", reasons="x")) \
        == "illegal_transition"
    session.commit()
    pledge = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.tool_deployment.pledge")).one()
    assert json.loads(pledge.canonical)["details"]["pledge_sha256"] == partners.sha256(PLEDGE)


def test_the_pledge_is_required_and_accepted_by_its_hash(session, w):
    operator = org_actor(w["operator"])
    with pytest.raises(AuthopsError) as e:  # an operator files a tool request only under its authorization
        tools.apply(session, actor=operator, body=tool_body(w["code"]))
    assert e.value.code == "no_active_authorization"
    authorize_operator(session, w["bureau"], w["operator"])
    with pytest.raises(AuthopsError) as e:
        tools.apply(session, actor=operator, body={**tool_body(w["code"]), "pledge": "", "resources": ["nope"]})
    assert {p["field"] for p in e.value.details["problems"]} == {"pledge", "resources[0]"}
    with pytest.raises(AuthopsError) as e:
        tools.apply(session, actor=operator, body={**tool_body(w["code"]), "pledge_sha256": "0" * 64})
    assert e.value.details["field"] == "pledge_sha256"
    assert code_of(lambda: tools.apply(session, actor=org_actor(w["customer"]), body=tool_body(w["code"]))) \
        == "wrong_org_kind"
    case = tools.apply(session, actor=operator, body=tool_body(w["code"]))  # an operator may apply too
    assert case.applicant_org_id == w["operator"].id


def test_a_returned_request_is_revised_and_decided_again(session, w):
    partner, bureau = org_actor(w["partner"]), org_actor(w["bureau"])
    case = tools.apply(session, actor=partner, body=tool_body(w["code"]))
    tools.review(session, case, actor=bureau, decision="return", reasons="说明运行环境")
    assert case.state == "returned" and case.awaiting_orgs == [w["partner"].id]
    tools.resubmit(session, case, actor=partner,
                   body={**tool_body(w["code"]), "description": "runs in the sandbox's gVisor runtime"})
    assert case.state == "bureau_review" and case.round == 2
    tools.review(session, case, actor=bureau, decision="reject", reasons="运行环境不满足隔离要求")
    assert case.state == "rejected"
    assert [t.action for t in workflow.history(session, case)] == \
        ["submit", "bureau_return", "resubmit", "bureau_reject"]
    assert tools.approved_tool(session, w["partner"].id, "risk-model-runner") is None


def test_tool_routes_show_requests_to_the_applicant_and_the_bureau_only(session, w, client):
    pu, bu = make_user(session, w["partner"]), make_user(session, w["bureau"], "bureau_reviewer")
    other = make_user(session, make_org(session, OrgKind.PARTNER))
    session.commit()
    ph, bh, oh = (login(client, u.username) for u in (pu, bu, other))
    r = client.post("/api/v1/governance/tools", headers=ph, json=tool_body(w["code"]))
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    assert [c["id"] for c in client.get("/api/v1/governance/tools", headers=bh).json()] == [case_id]
    assert client.get("/api/v1/governance/tools", headers=oh).json() == []
    assert client.post(f"/api/v1/governance/tools/{case_id}/resubmit", headers=oh,
                       json=tool_body(w["code"])).status_code == 404
    r = client.post(f"/api/v1/governance/tools/{case_id}/review", headers=bh,
                    json={"decision": "approve", "reasons": "同意"})
    assert r.status_code == 200 and r.json()["state"] == "approved"
