"""Partner recruitment: the operator's call (only under an active operator authorization), applications
with materials, operator then bureau review with expert advice, and the partner agreement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from authops.core.clock import travelled, utcnow
from authops.core.errors import AuthopsError
from authops.core.identity import OrgKind
from authops.platform.governance import partners, scenarios, workdays, workflow
from authops.platform.governance.models import Acceptance, Agreement
from tests.platform.governance.matrix_scenarios import (
    agreement_terms,
    attach_all,
    authorize_operator,
    call_body,
    org_actor,
    publish_call,
    scenario_payload,
)
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import make_resource


@pytest.fixture
def w(session: Session) -> dict:
    orgs = {k: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.EXPERT,
                                               OrgKind.PROVIDER)}
    authorize_operator(session, orgs[OrgKind.BUREAU], orgs[OrgKind.OPERATOR])
    code = make_resource(session, orgs[OrgKind.PROVIDER]).code
    session.commit()
    return {"bureau": orgs[OrgKind.BUREAU], "operator": orgs[OrgKind.OPERATOR], "partner": orgs[OrgKind.PARTNER],
            "expert": orgs[OrgKind.EXPERT], "code": code}


def act(w, name):
    return org_actor(w[name])


def code_of(call) -> str:
    with pytest.raises(AuthopsError) as e:
        call()
    return e.value.code


def test_recruitment_is_refused_without_an_active_operator_authorization(session, w):
    unauthorized = make_org(session, OrgKind.OPERATOR)
    with pytest.raises(AuthopsError) as e:
        publish_call(session, unauthorized)
    assert e.value.status_code == 403 and "authorization" in e.value.message
    expired = make_org(session, OrgKind.OPERATOR)
    ag = authorize_operator(session, w["bureau"], expired)
    ag.starts_on, ag.ends_on = ag.starts_on - timedelta(days=2000), workdays.shanghai_date(utcnow()) - timedelta(days=1)
    session.add(ag)
    session.flush()
    assert code_of(lambda: publish_call(session, expired)) == e.value.code
    call = publish_call(session, w["operator"])  # the authorized operator may
    assert call.number.startswith("PRC-") and call.materials == ["营业执照", "安全承诺书"]


def test_a_call_names_every_missing_part(session, w):
    with pytest.raises(AuthopsError) as e:
        partners.publish_call(session, actor=act(w, "operator"), industry="", title="招募", term_months=0,
                              conditions=[], materials=[""], deadline_on=workdays.shanghai_date(utcnow()))
    assert {p["field"] for p in e.value.details["problems"]} == \
        {"industry", "term_months", "conditions", "materials", "deadline"}


def _approved(session, w):
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="申请成为金融行业合伙人",
                          payload={"profile": "金融科技公司，具备数据安全管理体系"})
    attach_all(session, case, act(w, "partner"))
    partners.submit(session, case, actor=act(w, "partner"))
    partners.operator_review(session, case, actor=act(w, "operator"), decision="approve")
    partners.bureau_review(session, case, actor=act(w, "bureau"), decision="approve")
    return case


def test_application_review_and_agreement(session, w):
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="申请成为金融行业合伙人",
                          payload={"profile": "金融科技公司"})
    assert case.state == "draft"
    with pytest.raises(AuthopsError) as e:
        partners.submit(session, case, actor=act(w, "partner"))
    assert e.value.details["missing"] == ["营业执照", "安全承诺书"]
    attach_all(session, case, act(w, "partner"))
    partners.submit(session, case, actor=act(w, "partner"))
    assert case.state == "operator_review" and case.awaiting_orgs == [w["operator"].id]
    assert code_of(lambda: partners.bureau_review(session, case, actor=act(w, "bureau"), decision="approve")) \
        == "illegal_transition"  # the bureau does not skip the operator

    # Experts advise when asked; their opinion never blocks.
    assert code_of(lambda: partners.expert_opinion(session, case, actor=act(w, "expert"), comments="建议通过")) \
        == "wrong_reviewer"
    partners.appoint_experts(session, case, actor=act(w, "operator"), expert_org_ids=[w["expert"].id])
    partners.expert_opinion(session, case, actor=act(w, "expert"), comments="资质齐全，建议通过", score=88)
    opinions = [(r.stage, r.decision, r.score) for r in workflow.reviews(session, case, "expert")]
    assert opinions == [("expert", "score", 88)]
    assert case.state == "operator_review"

    partners.operator_review(session, case, actor=act(w, "operator"), decision="approve")
    assert case.state == "bureau_review" and case.awaiting_orgs == [w["bureau"].id]
    partners.bureau_review(session, case, actor=act(w, "bureau"), decision="approve", reasons="同意")
    assert case.state == "approved" and case.awaiting_orgs == [w["operator"].id]

    # The agreement needs every term, a named security officer among them.
    terms = agreement_terms(w["code"])
    with pytest.raises(AuthopsError) as e:
        partners.offer_agreement(session, case, actor=act(w, "operator"),
                                 terms={**terms, "security_officer": {"name": ""}, "revenue_share_bp": 12000,
                                        "exit_terms": ""})
    assert {p["field"] for p in e.value.details["problems"]} == \
        {"terms.security_officer", "terms.revenue_share_bp", "terms.exit_terms"}
    ag = partners.offer_agreement(session, case, actor=act(w, "operator"), terms=terms)
    assert case.state == "contracting" and ag.state == "pending"
    assert ag.party_a_org_id == w["operator"].id and ag.party_b_org_id == w["partner"].id
    assert ag.terms["revenue_share_bp"] == 2500 and ag.terms["security_officer"]["name"] == "王安全"
    assert "25.00%" in ag.text and "王安全" in ag.text and w["code"] in ag.text
    assert ag.ends_on == workdays.add_months(ag.starts_on, 24)  # the call's term
    assert partners.active_partner_agreement(session, w["partner"].id) is None

    assert code_of(lambda: partners.sign(session, case, actor=act(w, "partner"), text_sha256="0" * 64)) \
        == "text_mismatch"
    partners.sign(session, case, actor=act(w, "partner"), text_sha256=ag.text_sha256)
    assert case.state == "contracted" and ag.state == "active"
    acc = session.exec(select(Acceptance).where(Acceptance.agreement_id == ag.id)).all()
    assert sorted(a.org_id for a in acc) == sorted([w["operator"].id, w["partner"].id])
    assert all(a.text_sha256 == ag.text_sha256 for a in acc)
    assert partners.active_partner_agreement(session, w["partner"].id).id == ag.id

    # Now the partner may file scenarios within the agreement's scope.
    sc = scenarios.draft(session, actor=act(w, "partner"), title="信用评估",
                         payload=scenario_payload([{"resource": w["code"], "fields": ["id_number"],
                                                    "share_modes": ["verify"], "epsilon": 1.0}]))
    scenarios.submit(session, sc, actor=act(w, "partner"))
    assert sc.state == "provider_review"


def test_a_returned_application_comes_back_to_the_stage_that_returned_it(session, w):
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="申请",
                          payload={"profile": "金融科技公司"})
    attach_all(session, case, act(w, "partner"))
    partners.submit(session, case, actor=act(w, "partner"))
    partners.operator_review(session, case, actor=act(w, "operator"), decision="approve")
    partners.bureau_review(session, case, actor=act(w, "bureau"), decision="return", reasons="补充信用报告")
    assert case.state == "returned" and case.awaiting_orgs == [w["partner"].id]
    partners.submit(session, case, actor=act(w, "partner"), payload={"profile": "金融科技公司；附信用报告"})
    assert case.state == "bureau_review" and case.round == 2


def test_only_the_calls_operator_reviews_and_not_after_a_decision(session, w):
    other = make_org(session, OrgKind.OPERATOR)
    authorize_operator(session, w["bureau"], other)
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="申请",
                          payload={"profile": "金融科技公司"})
    attach_all(session, case, act(w, "partner"))
    partners.submit(session, case, actor=act(w, "partner"))
    assert code_of(lambda: partners.operator_review(session, case, actor=org_actor(other), decision="approve")) \
        == "wrong_reviewer"
    partners.operator_review(session, case, actor=act(w, "operator"), decision="reject", reasons="不具备安全能力")
    assert case.state == "rejected"
    assert code_of(lambda: partners.bureau_review(session, case, actor=act(w, "bureau"), decision="approve")) \
        == "illegal_transition"


def test_applying_after_the_deadline_is_refused(session, w):
    call = publish_call(session, w["operator"], deadline_days=3)
    with travelled(timedelta(days=5)):
        with pytest.raises(AuthopsError) as e:
            partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="迟到的申请",
                           payload={"profile": "x"})
        assert e.value.code == "expired" and call.number in e.value.message
        assert partners.open_calls(session) == []


def test_a_draft_cannot_be_submitted_once_the_call_closed(session, w):
    call = publish_call(session, w["operator"], deadline_days=3)
    case = partners.apply(session, actor=act(w, "partner"), call_id=call.id, title="申请", payload={"profile": "x"})
    attach_all(session, case, act(w, "partner"))
    with travelled(timedelta(days=5)):
        assert code_of(lambda: partners.submit(session, case, actor=act(w, "partner"))) == "expired"
    assert case.state == "draft"


def test_partner_routes(session, w, client):
    op_user, partner_user = make_user(session, w["operator"]), make_user(session, w["partner"])
    stranger = make_user(session, make_org(session, OrgKind.PARTNER))
    session.commit()
    op_h, pa_h = login(client, op_user.username), login(client, partner_user.username)
    r = client.post("/api/v1/governance/partners/calls", headers=op_h, json=call_body())
    assert r.status_code == 201, r.text
    call = r.json()
    public = client.get("/api/v1/public/partner-calls").json()
    assert [c["number"] for c in public] == [call["number"]] and public[0]["materials"] == ["营业执照", "安全承诺书"]
    r = client.post("/api/v1/governance/partners/applications", headers=pa_h,
                    json={"call_id": call["id"], "title": "申请", "payload": {"profile": "金融科技公司"}})
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    r = client.post(f"/api/v1/governance/partners/applications/{case_id}/documents", headers=pa_h,
                    files={"material": (None, "营业执照"), "file": ("licence.pdf", b"%PDF-1", "application/pdf")})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/governance/partners/applications/{case_id}/submit", headers=pa_h, json={})
    assert r.status_code == 422 and r.json()["error"]["details"]["missing"] == ["安全承诺书"]
    # Another partner neither sees nor touches it.
    st_h = login(client, stranger.username)
    assert client.get("/api/v1/governance/partners/applications", headers=st_h).json() == []
    r = client.post(f"/api/v1/governance/partners/applications/{case_id}/submit", headers=st_h, json={})
    assert r.status_code == 404
    # The operator sees a draft only once it is submitted.
    assert client.get("/api/v1/governance/partners/applications", headers=op_h).json() == []
    # Without an authorization the operator's call is refused over the API too.
    bare = make_user(session, make_org(session, OrgKind.OPERATOR))
    session.commit()
    r = client.post("/api/v1/governance/partners/calls", headers=login(client, bare.username), json=call_body())
    assert r.status_code == 403
    assert session.exec(select(Agreement).where(Agreement.kind == "partner")).all() == []
