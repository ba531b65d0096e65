"""Route-matrix cases for partner recruitment, scenario applications and tool deployment, and the
small builders the tests of those areas share (an active operator authorization, an active partner
agreement, a complete scenario application)."""

from __future__ import annotations

from datetime import timedelta
from itertools import count
from typing import Any

from sqlmodel import Session

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.core.settings import get_settings
from authops.core.storage.store import get_object_store
from authops.platform.governance import partners, scenarios, tools, workdays
from authops.platform.governance.models import Agreement
from authops.platform.identity.models import Organisation, User
from tests.support.builders import make_user
from tests.support.catalog import make_resource
from tests.support.matrix import Case, World

_n = count(1)
G = "/api/v1/governance"
PLEDGE = "本工具仅在平台内运行，不导出原始数据。The tool runs on the platform only and exports no raw data."


# --- builders (also used by test_partners, test_scenarios, test_tools) -----------------------------

def actor(user: User) -> audit_log.Actor:
    return audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=user.org_id)


def org_actor(org: Organisation, name: str = "matrix") -> audit_log.Actor:
    return audit_log.Actor(kind="user", id=10_000 + org.id, name=f"{name}-{org.id}", org_id=org.id)


def authorize_operator(session: Session, bureau: Organisation, operator: Organisation) -> Agreement:
    """An active operator authorization, written directly (the operator lifecycle is tested elsewhere)."""
    today = workdays.shanghai_date(utcnow())
    body = f"operator authorization {next(_n)} for {operator.code}"
    ag = Agreement(kind="operator_authorization", number=f"OA-T-{next(_n):05d}", party_a_org_id=bureau.id,
                   party_b_org_id=operator.id, terms={"scope": "whole city"}, text=body,
                   text_sha256=partners.sha256(body), starts_on=today - timedelta(days=30),
                   ends_on=workdays.add_months(today, 35), state="active")
    session.add(ag)
    session.flush()
    return ag


def partner_agreement(session: Session, operator: Organisation, partner: Organisation,
                      scope: list[dict[str, Any]]) -> Agreement:
    """An active partner agreement with this data scope, written directly."""
    today = workdays.shanghai_date(utcnow())
    terms = {"data_scope": scope, "security_officer": {"name": "王安全"}, "revenue_share_bp": 2000}
    body = f"partner agreement {next(_n)}"
    ag = Agreement(kind="partner", number=f"PA-T-{next(_n):05d}", party_a_org_id=operator.id,
                   party_b_org_id=partner.id, terms=terms, text=body, text_sha256=partners.sha256(body),
                   starts_on=today - timedelta(days=1), ends_on=workdays.add_months(today, 12), state="active")
    session.add(ag)
    session.flush()
    return ag


def scenario_payload(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"goal": "为中小企业提供信用评估", "product_design": "核验与评分接口",
            "processing_method": "沙箱内差分隐私统计", "security_measures": "不出域；最小化字段；审计",
            "technical_route": "隐私计算 + 规则模型", "expected_benefit": "降低融资成本",
            "resources": resources}


def call_body(deadline_days: int = 30) -> dict[str, Any]:
    return {"industry": "金融", "title": "金融行业生态合伙人招募", "term_months": 24,
            "conditions": ["本市注册的独立法人", "具备数据安全能力"], "materials": ["营业执照", "安全承诺书"],
            "deadline": (workdays.shanghai_date(utcnow()) + timedelta(days=deadline_days)).isoformat()}


def publish_call(session: Session, operator: Organisation, deadline_days: int = 30):
    b = call_body(deadline_days)
    return partners.publish_call(session, actor=org_actor(operator), industry=b["industry"], title=b["title"],
                                 term_months=b["term_months"], conditions=b["conditions"],
                                 materials=b["materials"],
                                 deadline_on=workdays.shanghai_date(utcnow()) + timedelta(days=deadline_days))


def attach_all(session: Session, case, who: audit_log.Actor) -> None:
    store = get_object_store(get_settings())
    for m in partners.get_call(session, case.call_id).materials:
        partners.add_material(session, store, case, actor=who, material=m, filename=f"{m}.pdf",
                              content=f"{m} of {who.org_id}".encode())


def agreement_terms(code: str) -> dict[str, Any]:
    return {"data_scope": [{"resource": code, "fields": ["*"], "share_modes": ["verify", "query"]}],
            "use_boundary": "仅用于信用评估场景", "development_duties": "在沙箱内开发", "quality": "准确率不低于95%",
            "revenue_share_bp": 2500, "exit_terms": "提前三个月书面通知", "security_duties": "落实数据安全责任",
            "security_officer": {"name": "王安全", "contact": "13900000000"}}


def tool_body(code: str, name: str = "risk-model-runner") -> dict[str, Any]:
    return {"name": name, "version": "1.0", "description": "runs our risk model inside the sandbox",
            "resources": [code], "pledge": PLEDGE, "pledge_sha256": partners.sha256(PLEDGE)}


# --- the matrix's per-side governance world --------------------------------------------------------

_state: dict[str, Any] = {"world": None}
_ids: dict[tuple[str, int], Any] = {}


def _side(w: World, org: Organisation) -> dict[OrgKind, Organisation]:
    kind = OrgKind(org.kind)
    return w.away if w.away[kind].id == org.id else w.home


def _ensure(session: Session, w: World, org: Organisation) -> dict[str, Any]:
    """Once per world and side: an authorized operator, a provider resource, a partner under an active
    partner agreement covering it, three expert users."""
    if _state["world"] is not w:
        _state.clear()
        _state["world"] = w
        _ids.clear()
    side = _side(w, org)
    key = f"side-{side[OrgKind.OPERATOR].id}"
    if key not in _state:
        res = make_resource(session, side[OrgKind.PROVIDER])
        authorize_operator(session, side[OrgKind.BUREAU], side[OrgKind.OPERATOR])
        partner_agreement(session, side[OrgKind.OPERATOR], side[OrgKind.PARTNER],
                          [{"resource": res.code, "fields": ["*"], "share_modes": ["verify", "query"]}])
        experts = [make_user(session, side[OrgKind.EXPERT], "expert") for _ in range(3)]
        session.commit()
        _state[key] = {"code": res.code, "experts": [actor(u) for u in experts], "side": side}
    return _state[key]


def _a(side, kind: OrgKind) -> audit_log.Actor:
    return org_actor(side[kind])


def _request(code: str) -> list[dict[str, Any]]:
    return [{"resource": code, "fields": ["id_number", "sex"], "share_modes": ["verify"], "epsilon": 1.0}]


def _scenario(session: Session, w: World, org: Organisation, stage: str) -> None:
    s = _ensure(session, w, org)
    side = s["side"]
    case = scenarios.draft(session, actor=_a(side, OrgKind.PARTNER), title=f"matrix scenario {next(_n)}",
                           payload=scenario_payload(_request(s["code"])))
    if stage != "draft":
        scenarios.submit(session, case, actor=_a(side, OrgKind.PARTNER))
        scenarios.appoint_experts(session, case, actor=_a(side, OrgKind.BUREAU),
                                  expert_org_ids=[side[OrgKind.EXPERT].id])
    if stage in ("expert", "bureau"):
        scenarios.provider_review(session, case, actor=_a(side, OrgKind.PROVIDER), decision="approve")
    if stage == "bureau":
        for e in s["experts"]:
            scenarios.expert_review(session, case, actor=e, decision="approve")
        assert case.state == "bureau_review", case.state
    session.commit()
    _ids[("scenario", org.id)] = case.id


def _application(session: Session, w: World, org: Organisation, stage: str) -> None:
    s = _ensure(session, w, org)
    side = s["side"]
    call = publish_call(session, side[OrgKind.OPERATOR])
    _ids[("call", org.id)] = call.id
    if stage == "call":
        session.commit()
        return
    partner = _a(side, OrgKind.PARTNER)
    case = partners.apply(session, actor=partner, call_id=call.id, title=f"matrix application {next(_n)}",
                          payload={"profile": "金融科技公司"})
    if stage != "draft":
        attach_all(session, case, partner)
    if stage not in ("draft", "complete"):
        partners.submit(session, case, actor=partner)
        partners.appoint_experts(session, case, actor=_a(side, OrgKind.OPERATOR),
                                 expert_org_ids=[side[OrgKind.EXPERT].id])
    if stage in ("bureau", "approved", "contracting"):
        partners.operator_review(session, case, actor=_a(side, OrgKind.OPERATOR), decision="approve")
    if stage in ("approved", "contracting"):
        partners.bureau_review(session, case, actor=_a(side, OrgKind.BUREAU), decision="approve")
    if stage == "contracting":
        ag = partners.offer_agreement(session, case, actor=_a(side, OrgKind.OPERATOR),
                                      terms=agreement_terms(s["code"]))
        _ids[("sha", org.id)] = ag.text_sha256
    session.commit()
    _ids[("application", org.id)] = case.id


def _tool(session: Session, w: World, org: Organisation, stage: str) -> None:
    s = _ensure(session, w, org)
    side = s["side"]
    owner = org if OrgKind(org.kind) in (OrgKind.OPERATOR, OrgKind.PARTNER) else side[OrgKind.PARTNER]
    case = tools.apply(session, actor=org_actor(owner), body=tool_body(s["code"], f"tool-{next(_n)}"))
    if stage == "returned":
        tools.review(session, case, actor=_a(side, OrgKind.BUREAU), decision="return", reasons="describe the runtime")
    session.commit()
    _ids[("tool", org.id)] = case.id


def _prep(fn, stage: str):
    return lambda session, w, org: fn(session, w, org, stage)


def _case_id(name: str):
    return lambda w, org: {"case_id": _ids[(name, org.id)]}


def _code(w, org) -> str:
    return _state[f"side-{_side(w, org)[OrgKind.OPERATOR].id}"]["code"]


def _expert_ids(w, org) -> dict[str, Any]:
    return {"expert_org_ids": [_side(w, org)[OrgKind.EXPERT].id]}


def _ensure_prep(session, w, org):
    _ensure(session, w, org)


CASES: dict[tuple[str, str], Case] = {
    # partner recruitment
    ("POST", f"{G}/partners/calls"): Case(prepare=_ensure_prep, body=lambda w, org: call_body()),
    ("GET", f"{G}/partners/applications"): Case(),
    ("POST", f"{G}/partners/applications"): Case(
        prepare=_prep(_application, "call"),
        body=lambda w, org: {"call_id": _ids[("call", org.id)], "title": "matrix apply",
                             "payload": {"profile": "金融科技公司"}}),
    ("POST", f"{G}/partners/applications/{{case_id}}/documents"): Case(
        prepare=_prep(_application, "draft"), params=_case_id("application"),
        files=lambda w, org: {"material": (None, "营业执照"), "file": ("licence.pdf", b"%PDF-licence", "application/pdf")}),
    ("POST", f"{G}/partners/applications/{{case_id}}/submit"): Case(
        prepare=_prep(_application, "complete"), params=_case_id("application"), body=lambda w, org: {}),
    ("POST", f"{G}/partners/applications/{{case_id}}/experts"): Case(
        prepare=_prep(_application, "operator"), params=_case_id("application"), body=_expert_ids),
    ("POST", f"{G}/partners/applications/{{case_id}}/expert-opinion"): Case(
        prepare=_prep(_application, "operator"), params=_case_id("application"),
        body=lambda w, org: {"comments": "资质齐全，建议通过", "score": 85}),
    ("POST", f"{G}/partners/applications/{{case_id}}/operator-review"): Case(
        prepare=_prep(_application, "operator"), params=_case_id("application"),
        body=lambda w, org: {"decision": "approve"}),
    ("POST", f"{G}/partners/applications/{{case_id}}/bureau-review"): Case(
        prepare=_prep(_application, "bureau"), params=_case_id("application"), cross_org="review.final",
        body=lambda w, org: {"decision": "approve"}),
    ("POST", f"{G}/partners/applications/{{case_id}}/agreement"): Case(
        prepare=_prep(_application, "approved"), params=_case_id("application"),
        body=lambda w, org: {"terms": agreement_terms(_code(w, org))}),
    ("POST", f"{G}/partners/applications/{{case_id}}/sign"): Case(
        prepare=_prep(_application, "contracting"), params=_case_id("application"),
        body=lambda w, org: {"text_sha256": _ids[("sha", org.id)]}),
    # scenario applications
    ("GET", f"{G}/scenarios"): Case(),
    ("POST", f"{G}/scenarios"): Case(prepare=_ensure_prep, body=lambda w, org: {
        "title": "matrix scenario", "payload": scenario_payload(_request(_code(w, org)))}),
    ("POST", f"{G}/scenarios/{{case_id}}/submit"): Case(
        prepare=_prep(_scenario, "draft"), params=_case_id("scenario"), body=lambda w, org: {}),
    ("POST", f"{G}/scenarios/{{case_id}}/provider-review"): Case(
        prepare=_prep(_scenario, "provider"), params=_case_id("scenario"),
        body=lambda w, org: {"decision": "approve"}),
    ("POST", f"{G}/scenarios/{{case_id}}/experts"): Case(
        prepare=_prep(_scenario, "provider"), params=_case_id("scenario"), cross_org="review.final",
        body=_expert_ids),
    ("POST", f"{G}/scenarios/{{case_id}}/expert-review"): Case(
        prepare=_prep(_scenario, "expert"), params=_case_id("scenario"),
        body=lambda w, org: {"decision": "approve", "score": 80}),
    ("POST", f"{G}/scenarios/{{case_id}}/bureau-review"): Case(
        prepare=_prep(_scenario, "bureau"), params=_case_id("scenario"), cross_org="review.final",
        body=lambda w, org: {"decision": "approve"}),
    # tool deployment
    ("GET", f"{G}/tools"): Case(),
    ("POST", f"{G}/tools"): Case(prepare=_ensure_prep, body=lambda w, org: tool_body(_code(w, org), f"t-{next(_n)}")),
    ("POST", f"{G}/tools/{{case_id}}/resubmit"): Case(
        prepare=_prep(_tool, "returned"), params=_case_id("tool"),
        body=lambda w, org: tool_body(_code(w, org), "resubmitted")),
    ("POST", f"{G}/tools/{{case_id}}/review"): Case(
        prepare=_prep(_tool, "bureau"), params=_case_id("tool"), cross_org="review.final",
        body=lambda w, org: {"decision": "approve", "reasons": "pledge and scope are adequate"}),
}
