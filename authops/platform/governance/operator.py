"""The operator lifecycle (BRIEF.md section 1-3, 9): selection notice -> application -> bureau
qualification check -> expert committee scores -> conclusion -> 7-working-day publicity with
objections -> authorization agreement (3-year term); renewal; voluntary and forced exit.

Three case kinds run on the workflow engine:

* ``operator_application`` (OP-): draft -> submitted -> expert_review -> publicity -> agreement_issued,
  or disqualified / not_selected / rejected (an objection upheld) / withdrawn.
* ``operator_renewal`` (OR-): draft -> submitted -> renewed, or rejected / vetoed (one-vote veto,
  applied by the platform itself) / withdrawn.
* ``operator_exit`` (OX-): draft -> submitted -> approved (voluntary) or rejected; forced exits go
  draft -> forced in the bureau's one step.

Rules that are hard (refused with a clear error): applying or acting on an application after the
notice's deadline; a banned organisation applying; submitting with missing materials; passing
qualification while an admission condition is unmet; scoring by anyone outside the notice's
committee; concluding before the deadline, before every qualified application has the quorum of
scores, or while a qualification check is pending; making the agreement before the publicity
period has ended or while an objection is open; a second operator authorization whose term
overlaps an existing one (whole-city authorization: one operator at a time); renewal outside its
window; voluntary exit with less than 6 months' notice.

Other modules call :func:`require_active_authorization` before an operator acts (partner
recruitment, product registration, usage agreements).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.data.identifiers import is_uscc
from authops.core.errors import AuthopsError, Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings, get_settings
from authops.platform.governance import agreements, workdays, workflow
from authops.platform.governance.models import Acceptance, Agreement, Call, Case, OperatorFact
from authops.platform.governance.workflow import Expired, Machine, Step
from authops.platform.identity.models import Organisation

ActorLike = audit_log.Actor | Principal

NOTICE_KIND = "operator_selection"
APPLICATION = "operator_application"
RENEWAL = "operator_renewal"
EXIT = "operator_exit"
AGREEMENT_KIND = "operator_authorization"
KINDS = (APPLICATION, RENEWAL, EXIT)

TERM_MONTHS = 36
# The seed: 需在期限届满前6个月提交续期申请 -- a renewal is filed at least 6 months before the term
# ends. The window for filing opens a year before the end and closes 6 months before it.
RENEWAL_OPENS_MONTHS = 12
RENEWAL_DEADLINE_MONTHS = 6
EXIT_NOTICE_MONTHS = 6
LIABILITY_MONTHS = 36
PASS_MARK = 60  # the selected applicant's mean expert score must reach this

# The seed's annex 1 (申报指引资料清单) plus the security capability the admission conditions name.
DEFAULT_MATERIALS = [
    "business_licence",            # 营业执照副本
    "legal_representative",        # 法定代表人身份证明及授权委托书
    "ownership_structure",         # 股权结构说明
    "security_certifications",     # 安全资质 (ISO27001 ...)
    "project_contracts",           # 近3年数据服务项目合同
    "technical_team",              # 技术团队名单
    "operating_plan",              # 运营方案
    "technical_plan",              # 技术方案
    "financial_plan",              # 财务方案
    "credit_pledge",               # 信用承诺书
    "no_dishonesty_record",        # "信用中国"无失信记录证明
    "no_crime_pledge",             # 近3年无重大违法犯罪记录承诺书
    "security_officer_appointment",  # 数据安全负责人任命
    "internal_security_rules",     # 内部管理和安全保障制度
]
DEFAULT_CONDITIONS = [
    "independent legal person registered in the city (主体资格：独立法人，注册地在本市)",
    "data processing and operating capability, good business and credit standing (经营能力)",
    "security capability: a named data-security officer and department, internal management and "
    "security rules (安全保障能力)",
    "credibility and standing in the digital economy (信用要求)",
]
RENEWAL_MATERIALS = ["operating_report", "third_party_evaluation", "three_year_plan"]
EXIT_MATERIALS = ["handover_plan", "service_continuity_plan", "clearing_report"]

# OperatorFact kinds the bureau records (renewal vetoes and forced exit read them).
FACT_KINDS = ("major_security_incident", "assessment_unqualified", "reassessment_unqualified", "assessment_qualified", "assessment_excellent",
              "unapproved_transfer", "fraud", "serious_violation", "targets_missed")
BANNED = "banned"  # recorded by a forced exit for failing assessment: details.until

FORCED_CAUSES = {
    "serious_security_violation": "违反数据安全法规，造成恶劣社会影响 (serious data-security violation)",
    "failed_assessment": "连续2年未完成既定运营目标或年度评估不合格 (2 consecutive years missing targets "
                         "or failing assessment)",
    "fraud": "存在弄虚作假、利益输送等违法行为 (fraud or improper benefit transfer)",
}

register = workflow.register
register(Machine(
    kind=APPLICATION, prefix="OP", initial="draft", zh="运营机构申报", en="operator application",
    states=("draft", "submitted", "expert_review", "publicity", "agreement_issued", "disqualified",
            "not_selected", "rejected", "withdrawn"),
    steps=(
        Step("submit", ("draft",), "submitted", by="applicant", zh="提交申报"),
        Step("withdraw", ("draft", "submitted"), "withdrawn", by="applicant", zh="撤回"),
        Step("qualify", ("submitted",), "expert_review", zh="资格初审通过"),
        Step("disqualify", ("submitted",), "disqualified", needs_reason=True, zh="资格初审不通过"),
        Step("score", ("expert_review",), "expert_review", zh="专家评分"),
        Step("select", ("expert_review",), "publicity", zh="确定候选机构并公示"),
        Step("not_select", ("expert_review",), "not_selected", needs_reason=True, zh="未入选"),
        Step("object", ("publicity",), "publicity", needs_reason=True, zh="公示异议"),
        Step("dismiss_objection", ("publicity",), "publicity", needs_reason=True, zh="异议不成立"),
        Step("uphold_objection", ("publicity",), "rejected", needs_reason=True, zh="异议成立"),
        Step("authorize", ("publicity",), "agreement_issued", zh="签订授权运营协议"),
    ),
    final=frozenset({"agreement_issued", "disqualified", "not_selected", "rejected", "withdrawn"})))

register(Machine(
    kind=RENEWAL, prefix="OR", initial="draft", zh="授权运营续期", en="operator renewal",
    states=("draft", "submitted", "renewed", "rejected", "vetoed", "withdrawn"),
    steps=(
        Step("submit", ("draft",), "submitted", by="applicant", zh="提交续期申请"),
        Step("withdraw", ("draft", "submitted"), "withdrawn", by="applicant", zh="撤回"),
        Step("approve", ("submitted",), "renewed", zh="同意续期"),
        Step("reject", ("submitted",), "rejected", needs_reason=True, zh="不予续期"),
        Step("veto", ("draft", "submitted"), "vetoed", by="system", needs_reason=True, zh="一票否决"),
    ),
    final=frozenset({"renewed", "rejected", "vetoed", "withdrawn"})))

register(Machine(
    kind=EXIT, prefix="OX", initial="draft", zh="运营机构退出", en="operator exit",
    states=("draft", "submitted", "approved", "rejected", "forced", "withdrawn"),
    steps=(
        Step("submit", ("draft",), "submitted", by="applicant", zh="提交退出申请"),
        Step("withdraw", ("draft", "submitted"), "withdrawn", by="applicant", zh="撤回"),
        Step("approve", ("submitted",), "approved", zh="同意退出"),
        Step("reject", ("submitted",), "rejected", needs_reason=True, zh="不同意退出"),
        Step("force", ("draft",), "forced", needs_reason=True, zh="强制退出（终止通知）"),
    ),
    final=frozenset({"approved", "rejected", "forced", "withdrawn"})))


# --- small helpers ------------------------------------------------------------------------------------

def _now(now: datetime | None) -> datetime:
    return now or utcnow()


def _today(now: datetime | None) -> date:
    return workdays.shanghai_date(_now(now))


def _iso(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat()


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)


def _org(session: Session, org_id: int, *, field: str = "operator_org_id") -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"no organisation {org_id}", details={"field": field})
    return org


def _operator_org(session: Session, org_id: int, *, field: str = "operator_org_id") -> Organisation:
    org = _org(session, org_id, field=field)
    if OrgKind(org.kind) is not OrgKind.OPERATOR:
        raise InvalidInput(f"organisation {org_id} ({org.name_en}) is a {OrgKind(org.kind).value}, not an operator",
                           details={"field": field})
    return org


def _require_text(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} is required", details={"field": field})
    return value.strip()


def get_notice(session: Session, call_id: int) -> Call:
    call = session.get(Call, call_id)
    if call is None or call.kind != NOTICE_KIND:
        raise NotFound(f"no operator selection notice {call_id}")
    return call


def get_case(session: Session, case_id: int, kinds: tuple[str, ...] = KINDS) -> Case:
    case = session.get(Case, case_id)
    if case is None or case.kind not in kinds:
        raise NotFound(f"no operator application {case_id}")
    return case


def own_case(session: Session, case_id: int, principal: Principal) -> Case:
    """The caller's own organisation's case, else 404 (no hint another organisation's exists)."""
    case = get_case(session, case_id)
    if case.applicant_org_id != principal.org_id:
        raise NotFound(f"no operator application {case_id}")
    return case


def committee_case(session: Session, case_id: int, principal: Principal) -> Case:
    """An operator application whose notice names the caller's expert organisation, else 404."""
    case = get_case(session, case_id, (APPLICATION,))
    call = get_notice(session, int(case.call_id or 0))
    if principal.org_id not in call.details.get("committee_org_ids", []):
        raise NotFound(f"no operator application {case_id}")
    return case


# --- selection notice ---------------------------------------------------------------------------------
def publish_notice(session: Session, *, actor: ActorLike, title: str, deadline_at: datetime,
                   committee_org_ids: list[int], conditions: list[str] | None = None,
                   materials: list[str] | None = None, details: dict[str, Any] | None = None,
                   now: datetime | None = None) -> Call:
    """The bureau publishes a selection notice: conditions, materials checklist, deadline, committee."""
    who = audit_log.as_actor(actor)
    now = _now(now)
    _require_text(title, "title", "the notice's title")
    if deadline_at <= now:
        raise InvalidInput(f"the deadline ({show(deadline_at)} Asia/Shanghai) must be in the future",
                           details={"field": "deadline_at"})
    materials = list(dict.fromkeys(m.strip() for m in (materials if materials is not None else DEFAULT_MATERIALS)))
    if not materials or any(not m for m in materials):
        raise InvalidInput("the materials checklist needs at least one named item and no empty names",
                           details={"field": "materials"})
    committee = sorted(set(committee_org_ids))
    if not committee:
        raise InvalidInput("name the expert committee (one or more expert organisations)",
                           details={"field": "committee_org_ids"})
    for org_id in committee:
        org = _org(session, org_id, field="committee_org_ids")
        if OrgKind(org.kind) is not OrgKind.EXPERT:
            raise InvalidInput(f"committee member {org_id} ({org.name_en}) is not an expert organisation",
                               details={"field": "committee_org_ids"})
    n = session.exec(select(func.count()).select_from(Call).where(Call.kind == NOTICE_KIND)).one() + 1
    call = Call(kind=NOTICE_KIND, number=f"ON-{now.year}-{n:05d}", publisher_org_id=int(who.org_id or 0),
                title=title.strip()[:300], conditions=list(conditions if conditions is not None else DEFAULT_CONDITIONS),
                materials=materials, details={**(details or {}), "committee_org_ids": committee},
                opens_at=now, deadline_at=deadline_at, state="open", created_by=who.name[:64], created_at=now)
    session.add(call)
    session.flush()
    audit_log.record(session, who, "gov.operator_selection.publish", object_type="call", object_id=call.id,
                     details={"number": call.number, "after": "open", "deadline_at": _iso(deadline_at),
                              "materials": len(materials), "committee": len(committee)})
    return call


def notice_view(session: Session, call: Call, *, public: bool = False) -> dict[str, Any]:
    out = {"id": call.id, "number": call.number, "title": call.title, "state": call.state,
           "conditions": call.conditions, "materials": call.materials, "opens_at": call.opens_at,
           "deadline_at": call.deadline_at, "deadline_local": show(call.deadline_at),
           "result": call.details.get("result")}
    if not public:
        out["committee_org_ids"] = call.details.get("committee_org_ids", [])
        out["applications"] = session.exec(select(func.count()).select_from(Case)
                                           .where(Case.call_id == call.id, Case.kind == APPLICATION)).one()
    return out


def list_notices(session: Session, *, public: bool = False) -> list[Call]:
    q = select(Call).where(Call.kind == NOTICE_KIND)
    if public:
        q = q.where(Call.state.in_(("open", "closed")))  # type: ignore[attr-defined]
    return list(session.exec(q.order_by(Call.id.desc())))  # type: ignore[union-attr]


def _ensure_open(call: Call, now: datetime) -> None:
    if call.state != "open":
        raise Conflict(f"notice {call.number} is {call.state}; it no longer takes applications",
                       code="notice_closed", details={"notice": call.number})
    if now > call.deadline_at:
        raise Expired(f"notice {call.number} closed for applications at {show(call.deadline_at)} (Asia/Shanghai)",
                      details={"notice": call.number, "deadline_local": show(call.deadline_at)})


# --- applications -------------------------------------------------------------------------------------
def _validate_application(payload: dict[str, Any]) -> dict[str, Any]:
    officer = payload.get("security_officer")
    if not isinstance(officer, dict) or not str(officer.get("name", "")).strip():
        raise InvalidInput("name the data-security officer: security_officer.name (安全保障能力：明确数据安全负责人)",
                           details={"field": "security_officer.name"})
    rules = payload.get("internal_security_rules")
    if not isinstance(rules, list) or not [r for r in rules if isinstance(r, str) and r.strip()]:
        raise InvalidInput("list the internal management and security rules by name: internal_security_rules",
                           details={"field": "internal_security_rules"})
    return payload


def banned_until(session: Session, org_id: int, on: date) -> date | None:
    """The end of a ban from the city's public data operation in force on `on`, else None."""
    latest: date | None = None
    for f in session.exec(select(OperatorFact).where(OperatorFact.operator_org_id == org_id,
                                                     OperatorFact.kind == BANNED)):
        until = date.fromisoformat(f.details["until"])
        if until >= on and (latest is None or until > latest):
            latest = until
    return latest


def file_application(session: Session, *, call: Call, actor: ActorLike, title: str, payload: dict[str, Any],
          now: datetime | None = None) -> Case:
    """An operator-kind organisation files its application (a draft to attach materials to)."""
    who = audit_log.as_actor(actor)
    now = _now(now)
    org = _operator_org(session, int(who.org_id or 0), field="org")
    _ensure_open(call, now)
    ban = banned_until(session, org.id, _today(now))  # type: ignore[arg-type]
    if ban is not None:
        raise Forbidden(f"{org.name_en} is banned from the city's public data operation until {ban}",
                        code="banned", details={"until": str(ban)})
    dup = session.exec(select(Case).where(Case.call_id == call.id, Case.kind == APPLICATION,
                                          Case.applicant_org_id == org.id, Case.state != "withdrawn")).first()
    if dup is not None:
        raise Conflict(f"your organisation already applied to {call.number}: {dup.number} ({dup.state})",
                       code="already_applied", details={"case": dup.number})
    _validate_application(payload)
    return workflow.open_case(session, kind=APPLICATION, applicant_org_id=org.id, title=title, payload=payload,  # type: ignore[arg-type]
                              actor=who, call_id=call.id, awaiting_orgs=[org.id],  # type: ignore[list-item]
                              due_at=call.deadline_at, facts={"notice": call.number})


def checklist(session: Session, case: Case) -> list[str]:
    if case.kind == APPLICATION:
        return list(get_notice(session, int(case.call_id or 0)).materials)
    return RENEWAL_MATERIALS if case.kind == RENEWAL else EXIT_MATERIALS


def add_document(session: Session, store: Any, case: Case, *, material: str, filename: str, content: bytes,
                 actor: ActorLike, content_type: str = "application/octet-stream",
                 now: datetime | None = None) -> Any:
    """Attach one checklist material to the applicant's own draft (stored encrypted)."""
    workflow.ensure_applicant(case, actor)
    items = checklist(session, case)
    if material not in items:
        raise InvalidInput(f"{material!r} is not on the checklist; the materials are: {', '.join(items)}",
                           details={"field": "material"})
    if case.state != "draft":
        raise workflow.IllegalTransition(f"{case.number} is {case.state}; materials can be attached only "
                                         "while it is a draft", details={"state": case.state})
    if case.kind == APPLICATION:
        _ensure_open(get_notice(session, int(case.call_id or 0)), _now(now))
    return workflow.add_document(session, store, case, material=material, filename=filename, content=content,
                                 actor=actor, content_type=content_type)


def _refuse_missing(session: Session, case: Case) -> None:
    missing = workflow.missing_materials(session, case, checklist(session, case))
    if missing:
        raise InvalidInput(f"{case.number} cannot be submitted: attach the missing materials first: "
                           f"{', '.join(missing)}", code="missing_materials",
                           details={"field": "materials", "missing": missing})


def submit(session: Session, case: Case, *, actor: ActorLike, now: datetime | None = None,
           settings: Settings | None = None) -> Case:
    """The applicant submits its draft (application, renewal or exit) with every material attached."""
    settings = settings or get_settings()
    now = _now(now)
    workflow.ensure_applicant(case, actor)
    workflow.machine(case.kind).step(case.state, "submit", number=case.number)
    if case.kind == APPLICATION:
        call = get_notice(session, int(case.call_id or 0))
        _ensure_open(call, now)
        _refuse_missing(session, case)
        workflow.transition(session, case, "submit", actor=actor, awaiting_orgs=[call.publisher_org_id],
                            due_at=workdays.deadline(now, settings.review_bureau_working_days),
                            facts={"admission": admission_checks(session, case, now=now)})
        return case
    _refuse_missing(session, case)
    agreement = session.get(Agreement, case.facts["agreement_id"])
    if case.kind == EXIT:
        _check_exit_notice(date.fromisoformat(case.payload["exit_on"]), _today(now))
    if case.kind == RENEWAL:
        _check_renewal_deadline(agreement, _today(now))  # type: ignore[arg-type]
    workflow.transition(session, case, "submit", actor=actor, awaiting_orgs=[agreement.party_a_org_id],  # type: ignore[union-attr]
                        due_at=workdays.deadline(now, settings.review_bureau_working_days))
    if case.kind == RENEWAL:
        _veto_if_needed(session, case, agreement)  # type: ignore[arg-type]
    return case


def withdraw(session: Session, case: Case, *, actor: ActorLike, reason: str = "") -> Case:
    workflow.transition(session, case, "withdraw", actor=actor, reason=reason)
    return case


def admission_checks(session: Session, case: Case, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The admission conditions the platform can check from what it knows (seed: 主体资格, 安全保障能力)."""
    org = _org(session, case.applicant_org_id)
    call = get_notice(session, int(case.call_id or 0))
    city = _org(session, call.publisher_org_id).region
    officer = (case.payload.get("security_officer") or {}).get("name", "")
    rules = [r for r in case.payload.get("internal_security_rules") or [] if isinstance(r, str) and r.strip()]
    ban = banned_until(session, org.id, _today(now))  # type: ignore[arg-type]
    return [
        {"condition": "registered_in_city", "ok": org.region == city,
         "detail": f"registered in {org.region or 'an unknown place'}; the notice is for {city}"},
        {"condition": "valid_uscc", "ok": bool(org.uscc) and is_uscc(org.uscc or ""),
         "detail": "unified social credit code " + (org.uscc or "missing")},
        {"condition": "market_entity", "ok": bool(org.uscc) and (org.uscc or "")[:1] == "9",
         "detail": "a USCC issued by market regulation (first character 9) marks an independent market entity"},
        {"condition": "security_officer_named", "ok": bool(str(officer).strip()),
         "detail": f"data-security officer: {officer or 'none named'}"},
        {"condition": "internal_security_rules", "ok": bool(rules), "detail": f"{len(rules)} rules named"},
        {"condition": "not_banned", "ok": ban is None, "detail": f"banned until {ban}" if ban else "no ban on record"},
    ]


def qualification(session: Session, case: Case, *, actor: ActorLike, passed: bool, reasons: str = "",
                  now: datetime | None = None, settings: Settings | None = None) -> Case:
    """The bureau's qualification check (资格初审): pass sends the application to the expert committee."""
    settings = settings or get_settings()
    now = _now(now)
    if case.kind != APPLICATION:
        raise NotFound(f"no operator application {case.id}")
    workflow.ensure_not_applicant(case, actor)
    workflow.machine(case.kind).step(case.state, "qualify" if passed else "disqualify", number=case.number)
    checks = admission_checks(session, case, now=now)
    if not passed:
        workflow.record_review(session, case, stage="qualification", actor=actor, decision="reject", reasons=reasons)
        workflow.transition(session, case, "disqualify", actor=actor, reason=reasons, facts={"admission": checks})
        return case
    unmet = [c for c in checks if not c["ok"]]
    if unmet:
        raise Conflict(f"{case.number} cannot pass the qualification check: admission conditions unmet: "
                       + "; ".join(f"{c['condition']} ({c['detail']})" for c in unmet),
                       code="admission_conditions_unmet", details={"unmet": [c["condition"] for c in unmet]})
    workflow.record_review(session, case, stage="qualification", actor=actor, decision="approve", reasons=reasons)
    call = get_notice(session, int(case.call_id or 0))
    workflow.transition(session, case, "qualify", actor=actor, reason=reasons, facts={"admission": checks},
                        awaiting_orgs=call.details.get("committee_org_ids", []),
                        due_at=workdays.deadline(now, settings.review_expert_working_days))
    return case


def score(session: Session, case: Case, *, actor: ActorLike, value: int, comments: str) -> Case:
    """One committee expert's score (0-100) with comments; once per expert."""
    who = audit_log.as_actor(actor)
    call = get_notice(session, int(case.call_id or 0))
    if who.org_id not in call.details.get("committee_org_ids", []):
        raise workflow.WrongReviewer(f"your organisation is not on the expert committee of {call.number}",
                                     details={"notice": call.number})
    workflow.ensure_not_applicant(case, who)
    workflow.machine(case.kind).step(case.state, "score", number=case.number)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise InvalidInput("score must be a whole number from 0 to 100", details={"field": "score"})
    _require_text(comments, "comments", "comments with the score")
    workflow.record_review(session, case, stage="expert", actor=who, decision="score", score=value, reasons=comments)
    n = len(_scores(session, case))
    quorum = n >= get_settings().committee_quorum  # from then on the bureau may conclude
    workflow.transition(session, case, "score", actor=who, reason=comments, data={"score": value},
                        facts={"scores": n},
                        awaiting_orgs=[call.publisher_org_id] if quorum else None)
    return case


def _scores(session: Session, case: Case) -> list[int]:
    return [int(r.score) for r in workflow.reviews(session, case, "expert", case.round) if r.score is not None]


def conclude(session: Session, call: Call, *, actor: ActorLike, selected_case_id: int | None = None,
             reasons: str = "", now: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The bureau concludes the selection after the deadline once every qualified application has the
    committee quorum of scores. Rule: the application with the highest mean score is selected if that
    mean is at least 60 (PASS_MARK); a tie at the top needs the bureau to name one of the tied with
    reasons. The selected application enters publicity for `publicity_working_days` working days;
    the others are not selected. No application reaching 60: nobody is selected."""
    settings = settings or get_settings()
    now = _now(now)
    who = audit_log.as_actor(actor)
    if call.state != "open":
        raise workflow.IllegalTransition(f"notice {call.number} is {call.state}; it has been concluded already",
                                         details={"state": call.state})
    if now <= call.deadline_at:
        raise Conflict(f"notice {call.number} takes applications until {show(call.deadline_at)} (Asia/Shanghai); "
                       "conclude after that", code="notice_open", details={"deadline_local": show(call.deadline_at)})
    cases = list(session.exec(select(Case).where(Case.call_id == call.id, Case.kind == APPLICATION)
                              .order_by(Case.id)))  # type: ignore[arg-type]
    pending = [c.number for c in cases if c.state == "submitted"]
    if pending:
        raise Conflict(f"finish the qualification check first: {', '.join(pending)}", code="qualification_pending",
                       details={"cases": pending})
    reviewing = [c for c in cases if c.state == "expert_review"]
    short = {c.number: len(_scores(session, c)) for c in reviewing if len(_scores(session, c)) < settings.committee_quorum}
    if short:
        raise Conflict(f"the committee quorum is {settings.committee_quorum} scores; still short: "
                       + ", ".join(f"{k} has {v}" for k, v in short.items()), code="quorum_not_reached",
                       details={"scores": short, "quorum": settings.committee_quorum})
    means = {c.id: sum(_scores(session, c)) / len(_scores(session, c)) for c in reviewing}
    eligible = {cid: m for cid, m in means.items() if m >= PASS_MARK}
    selected: Case | None = None
    if eligible:
        top = max(eligible.values())
        tied = [cid for cid, m in eligible.items() if m == top]
        if len(tied) > 1:
            if selected_case_id not in tied or not reasons.strip():
                numbers = [c.number for c in reviewing if c.id in tied]
                raise Conflict(f"{', '.join(numbers)} are tied at a mean score of {top:.2f}; name the selected one "
                               "(selected_case_id) with written reasons", code="tie",
                               details={"tied": tied, "field": "selected_case_id"})
            choice = selected_case_id
        else:
            if selected_case_id is not None and selected_case_id != tied[0]:
                raise InvalidInput("the selected application is the one with the highest mean score "
                                   f"(case {tied[0]}); only a tie lets the bureau choose",
                                   details={"field": "selected_case_id"})
            choice = tied[0]
        selected = next(c for c in reviewing if c.id == choice)
    ends = workdays.deadline(now, settings.publicity_working_days)
    for c in reviewing:
        mean = round(means[c.id], 2)
        if c is selected:
            publicity = {"starts_at": _iso(now), "ends_at": _iso(ends), "ends_local": show(ends),
                         "working_days": settings.publicity_working_days}
            workflow.transition(session, c, "select", actor=who, reason=reasons, data={"mean_score": f"{mean:.2f}"},
                                facts={"mean_score": mean, "publicity": publicity, "objections": []},
                                awaiting_orgs=[call.publisher_org_id], due_at=ends)
        else:
            why = (f"mean score {mean} is below the pass mark {PASS_MARK}" if mean < PASS_MARK
                   else f"mean score {mean} is lower than the selected application's")
            workflow.transition(session, c, "not_select", actor=who, reason=why, data={"mean_score": f"{mean:.2f}"},
                                facts={"mean_score": mean})
    before = call.state
    call.state = "closed"
    call.details = {**call.details, "result": {
        "selected_case": selected.number if selected else None,
        "selected_org_id": selected.applicant_org_id if selected else None,
        "mean_score": round(means[selected.id], 2) if selected else None,  # type: ignore[index]
        "publicity_ends_at": _iso(ends) if selected else None, "publicity_ends_local": show(ends) if selected else None,
        "concluded_at": _iso(now)}}
    session.add(call)
    session.flush()
    audit_log.record(session, who, "gov.operator_selection.conclude", object_type="call", object_id=call.id,
                     details={"number": call.number, "before": before, "after": "closed",
                              "selected": selected.number if selected else None, "applications": len(reviewing)})
    return call.details["result"]


# --- publicity and objections -------------------------------------------------------------------------
def public_case(session: Session, case_id: int) -> Case:
    """An application under publicity (the public may see and object to it); anything else is 404."""
    case = session.get(Case, case_id)
    if case is None or case.kind != APPLICATION or case.state != "publicity":
        raise NotFound(f"no operator application {case_id} under publicity")
    return case


class TooManyObjections(Conflict):
    code = "too_many_objections"


class ObjectionRateLimited(AuthopsError):
    status_code = 429
    code = "rate_limited"


def _source_key(ip: str | None, settings: Settings) -> str:
    """A keyed digest of the objector's address: enough to count per address, nothing to read it back."""
    key = hashlib.sha256(settings.secret_key.get_secret_value().encode() + b"|governance/objection-source").digest()
    return hmac.new(key, (ip or "unknown").encode(), hashlib.sha256).hexdigest()[:32]


def file_objection(session: Session, case: Case, *, text: str, contact: str, actor: ActorLike | None = None,
                   now: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Anyone files an objection during the publicity period (text + contact). Limits (settings): the text
    is at most objection_max_chars, the contact objection_contact_max_chars; an application takes at most
    objection_max_open open objections at a time (409 too_many_objections); one source address files at
    most objection_per_ip_per_day objections on one application in 24 hours (429 rate_limited)."""
    settings = settings or get_settings()
    now = _now(now)
    who = audit_log.as_actor(actor) if actor is not None else audit_log.Actor(kind="anonymous", name="public")
    text = _require_text(text, "text", "the objection's text")
    contact = _require_text(contact, "contact", "a contact (phone or e-mail) for the reply")
    if len(text) < 10:
        raise InvalidInput("say what the objection is about (at least 10 characters)", details={"field": "text"})
    if len(text) > settings.objection_max_chars:
        raise InvalidInput(f"an objection is at most {settings.objection_max_chars} characters (this one has "
                           f"{len(text)}); attach nothing, say it briefly: the bureau will contact you",
                           details={"field": "text", "limit": settings.objection_max_chars})
    if len(contact) > settings.objection_contact_max_chars:
        raise InvalidInput(f"the contact is at most {settings.objection_contact_max_chars} characters: a phone "
                           "number or an e-mail address", details={"field": "contact",
                                                                     "limit": settings.objection_contact_max_chars})
    workflow.machine(case.kind).step(case.state, "object", number=case.number)
    ends = _parse(case.facts["publicity"]["ends_at"])
    if now > ends:
        raise Expired(f"the publicity period of {case.number} ended on {show(ends)} (Asia/Shanghai); "
                      "objections are no longer taken", details={"ends_local": show(ends)})
    objections = [dict(o) for o in case.facts.get("objections", [])]
    still_open = [o for o in objections if o.get("state") == "open"]
    if len(still_open) >= settings.objection_max_open:
        raise TooManyObjections(f"{case.number} already has {len(still_open)} open objections, the limit "
                                f"(objection_max_open = {settings.objection_max_open}); the bureau resolves them "
                                "before taking more: try again later", details={"limit": settings.objection_max_open})
    source = _source_key(who.ip, settings)
    since = now - timedelta(hours=24)
    recent = [t for t in workflow.history(session, case) if t.action == "object" and t.at >= since
              and (t.data.get("private") or {}).get("source") == source]
    if len(recent) >= settings.objection_per_ip_per_day:
        raise ObjectionRateLimited(f"your address already filed {len(recent)} objections on {case.number} in the "
                                   f"last 24 hours, the limit (objection_per_ip_per_day = "
                                   f"{settings.objection_per_ip_per_day}); try again tomorrow",
                                   details={"limit": settings.objection_per_ip_per_day})
    n = len(objections) + 1
    digest = hashlib.sha256(text.encode()).hexdigest()
    objections.append({"n": n, "text": text, "filed_at": _iso(now),
                       "state": "open", "resolution": "", "resolved_by": "", "resolved_at": None})
    # The objector's contact (and a keyed digest of its address, for the per-address limit) is kept only on
    # the history row, nested so that it never reaches the audit event or the case views others see; the
    # bureau reads the contact (case_view(bureau=True)).
    workflow.transition(session, case, "object", actor=who, reason=text,
                        data={"objection": n, "text_sha256": digest,
                              "private": {"contact": contact, "source": source}},
                        facts={"objections": objections})
    return {"case": case.number, "objection": n, "state": "open",
            "publicity_ends_local": case.facts["publicity"]["ends_local"]}


def resolve_objection(session: Session, case: Case, n: int, *, actor: ActorLike, upheld: bool, reasons: str,
                      now: datetime | None = None) -> Case:
    """The bureau resolves objection `n`: upheld rejects the application; dismissed needs reasons too."""
    now = _now(now)
    if case.kind != APPLICATION:
        raise NotFound(f"no operator application {case.id}")
    who = audit_log.as_actor(actor)
    workflow.machine(case.kind).step(case.state, "uphold_objection" if upheld else "dismiss_objection",
                                     number=case.number)
    objections = [dict(o) for o in case.facts.get("objections", [])]
    match = [o for o in objections if o["n"] == n]
    if not match:
        raise NotFound(f"{case.number} has no objection {n}")
    if match[0]["state"] != "open":
        raise Conflict(f"objection {n} on {case.number} was already {match[0]['state']}", code="already_resolved")
    _require_text(reasons, "reasons", "written reasons for the resolution")
    match[0].update(state="upheld" if upheld else "dismissed", resolution=reasons, resolved_by=who.name,
                    resolved_at=_iso(now))
    workflow.transition(session, case, "uphold_objection" if upheld else "dismiss_objection", actor=who,
                        reason=reasons, data={"objection": n}, facts={"objections": objections})
    return case


# --- the authorization agreement ----------------------------------------------------------------------
def _effective_end(ag: Agreement) -> date:
    exit_on = ag.terms.get("exit_on")
    if exit_on:
        return min(ag.ends_on, date.fromisoformat(exit_on) - timedelta(days=1))
    return ag.ends_on


def _refuse_overlap(session: Session, operator_org_id: int, starts: date, ends: date,
                    *, ignore_id: int | None = None) -> None:
    """Whole-city authorization: one operator at a time; no two authorization terms may overlap."""
    for ag in session.exec(select(Agreement).where(Agreement.kind == AGREEMENT_KIND,
                                                   Agreement.state.in_(("pending", "active", "exited")))):  # type: ignore[attr-defined]
        if ag.id == ignore_id:
            continue
        if ag.starts_on <= ends and starts <= _effective_end(ag):
            other = "another operator" if ag.party_b_org_id != operator_org_id else "this operator"
            raise Conflict(f"the city has one operator at a time: {ag.number} ({ag.state}) already authorizes "
                           f"{other} from {ag.starts_on} to {_effective_end(ag)}", code="operator_already_authorized",
                           details={"agreement": ag.number})


def render_text(terms: dict[str, Any], *, party_a: Organisation, party_b: Organisation) -> str:
    """The exact agreement wording, rendered only from the terms (so the hash pins the terms)."""
    rd = terms["revenue_distribution"]
    lines = [
        f"公共数据资源授权运营协议 / Public data resource authorized operation agreement ({terms['case']})",
        f"甲方 Party A (grantor): {party_a.name_zh} / {party_a.name_en}",
        f"乙方 Party B (operator): {party_b.name_zh} / {party_b.name_en}"
        + (f" (USCC {party_b.uscc})" if party_b.uscc else ""),
        "",
        f"1. 授权范围 Scope: {terms['scope']}",
        f"2. 运营期限 Term: {terms['starts_on']} to {terms['ends_on']} ({terms['term_years']} years from the day "
        "the agreement takes effect)",
        f"3. 续期规则 Renewal: {terms['renewal']}",
        "4. 收益分配 Revenue distribution: "
        + ", ".join(f"{k} {v}%" for k, v in sorted(rd["shares_pct"].items()))
        + f"; settled {rd['settlement']}; {rd.get('notes', '')}".rstrip("; "),
        f"5. 资产归属 Asset ownership: {terms['asset_ownership']}",
        "6. 权利与义务 Duties: " + " ".join(f"({i}) {d}" for i, d in enumerate(terms["duties"], 1)),
        f"   数据安全负责人 Named security officer: {terms['security_officer']}",
        "7. 违约责任与终止 Breach and termination: "
        + " ".join(f"({i}) {d}" for i, d in enumerate(terms["breach_and_termination"], 1)),
        f"8. 退出 Exit: {terms['exit']}",
    ]
    if terms.get("renews"):
        lines.append(f"9. 本协议续期自 Renews {terms['renews']}")
    return "\n".join(lines) + "\n"


DEFAULT_SCOPE = ("whole-city authorization (整体授权) to develop, operate and provide technical services for the "
                 "public data resources in the city's authorized catalogue, under the principle that raw data "
                 "never leaves the domain (原始数据不出域、数据可用不可见)")
DEFAULT_DUTIES = [
    "bear the primary responsibility for data security (数据安全主体责任)",
    "use public data only within the authorized scope; never pass raw data to third parties",
    "recruit industry partners by public call and file them with the bureau",
    "register and file every product with its pricing basis, scenario, scope and manner of use; price at or "
    "below the caps",
    "book the operation's costs and revenue separately and settle revenue yearly",
    "accept the annual assessment, audits and supervision and publish product lists and prices",
]
DEFAULT_BREACH = [
    "a serious data-security violation, 2 consecutive years missing targets or failing assessment, or fraud "
    "terminates the authorization (forced exit)",
    "an unqualified assessment requires a rectification plan within 30 days; failing the re-assessment "
    "terminates the authorization and bans the operator from the city's public data operation",
    "transferring operating rights without approval is a breach and vetoes renewal",
]


def _terms(*, case: Case, starts: date, ends: date, scope: str, revenue_distribution: dict[str, Any],
           settings: Settings, duties: list[str] | None = None, renews: str | None = None) -> dict[str, Any]:
    shares = revenue_distribution.get("shares_pct") if isinstance(revenue_distribution, dict) else None
    if not isinstance(shares, dict) or not shares:
        raise InvalidInput("revenue_distribution.shares_pct must give each party's share in percent, e.g. "
                           "{\"provider_departments\": 30, \"operator\": 50, \"partners\": 20}",
                           details={"field": "revenue_distribution.shares_pct"})
    for k, v in shares.items():
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 100:
            raise InvalidInput(f"revenue share {k!r} must be a whole percentage 0-100", details={
                "field": f"revenue_distribution.shares_pct.{k}"})
    missing = {"provider_departments", "operator", "partners"} - set(shares)
    if missing:
        raise InvalidInput(f"the revenue shares must name provider_departments, operator and partners; missing "
                           f"{', '.join(sorted(missing))}", details={"field": "revenue_distribution.shares_pct"})
    if sum(shares.values()) != 100:
        raise InvalidInput(f"the revenue shares add up to {sum(shares.values())}%, not 100%",
                           details={"field": "revenue_distribution.shares_pct"})
    officer = case.payload.get("security_officer") or {}
    return {
        "scope": scope.strip() or DEFAULT_SCOPE, "starts_on": str(starts), "ends_on": str(ends),
        "term_years": TERM_MONTHS // 12,
        "renewal": (f"the operator applies for renewal between {RENEWAL_OPENS_MONTHS} and {RENEWAL_DEADLINE_MONTHS} "
                    "months before the term ends, with an operating report, a third-party evaluation report and a 3-year plan; a major data "
                    "security incident, 2 unqualified assessments in total or an unapproved transfer of operating "
                    "rights vetoes renewal"),
        "revenue_distribution": {"shares_pct": dict(shares),
                                 "settlement": str(revenue_distribution.get("settlement") or "yearly"),
                                 "notes": str(revenue_distribution.get("notes") or
                                              "who invests, who contributes, who benefits; the public share is "
                                              "non-tax revenue; distribution details are filed with the bureau")},
        "asset_ownership": ("technical tools and platforms developed for the operation belong to Party A; on exit "
                            "their permissions pass to the next operator"),
        "duties": list(duties or DEFAULT_DUTIES),
        "security_officer": str(officer.get("name", "")),
        "breach_and_termination": list(DEFAULT_BREACH),
        "exit": (f"voluntary exit needs {EXIT_NOTICE_MONTHS} months' notice with a data hand-over plan, a "
                 "service-continuity plan and a third-party financial clearing report; after exit raw data is "
                 "returned and every copy destroyed within 30 days, verified by Party A; Party B stays liable for "
                 "security issues of its term for 3 years; a forced exit for failing assessment bans Party B for "
                 f"{settings.operator_ban_years} years"),
        "case": case.number, **({"renews": renews} if renews else {}),
    }


def _new_agreement(session: Session, *, case: Case, party_a: int, party_b: int, terms: dict[str, Any],
                   starts: date, ends: date, who: audit_log.Actor) -> Agreement:
    text = render_text(terms, party_a=_org(session, party_a), party_b=_org(session, party_b))
    return agreements.create(session, kind=AGREEMENT_KIND, party_a_org_id=party_a, party_b_org_id=party_b,
                             terms=terms, starts_on=starts, ends_on=ends, actor=who, case_id=case.id, text=text)


def term_end(starts: date) -> date:
    """The last day of a 3-year term starting on `starts`."""
    return workdays.add_months(starts, TERM_MONTHS) - timedelta(days=1)


def make_agreement(session: Session, case: Case, *, actor: ActorLike, revenue_distribution: dict[str, Any],
                   scope: str = "", duties: list[str] | None = None, now: datetime | None = None,
                   settings: Settings | None = None) -> Agreement:
    """After a publicity period without open objections, the bureau draws up the authorization
    agreement; both sides then accept it electronically and it becomes active."""
    settings = settings or get_settings()
    now = _now(now)
    who = audit_log.as_actor(actor)
    if case.kind != APPLICATION:
        raise NotFound(f"no operator application {case.id}")
    workflow.ensure_not_applicant(case, who)
    workflow.machine(case.kind).step(case.state, "authorize", number=case.number)
    ends_at = _parse(case.facts["publicity"]["ends_at"])
    if now <= ends_at:
        raise Conflict(f"the publicity period of {case.number} runs until {show(ends_at)} (Asia/Shanghai); the "
                       "agreement can be made only after it has ended", code="publicity_running",
                       details={"ends_local": show(ends_at)})
    open_ = [o["n"] for o in case.facts.get("objections", []) if o["state"] == "open"]
    if open_:
        raise Conflict(f"{case.number} has unresolved objections ({', '.join(map(str, open_))}); resolve each "
                       "before the agreement is made", code="objections_unresolved", details={"objections": open_})
    starts = _today(now)
    ends = term_end(starts)
    _refuse_overlap(session, case.applicant_org_id, starts, ends)
    terms = _terms(case=case, starts=starts, ends=ends, scope=scope, revenue_distribution=revenue_distribution,
                   settings=settings, duties=duties)
    ag = _new_agreement(session, case=case, party_a=int(who.org_id or 0), party_b=case.applicant_org_id,
                        terms=terms, starts=starts, ends=ends, who=who)
    workflow.transition(session, case, "authorize", actor=who,
                        data={"agreement": ag.number, "text_sha256": ag.text_sha256},
                        facts={"agreement_id": ag.id, "agreement": ag.number})
    return ag


def get_agreement(session: Session, agreement_id: int) -> Agreement:
    ag = session.get(Agreement, agreement_id)
    if ag is None or ag.kind != AGREEMENT_KIND:
        raise NotFound(f"no operator authorization agreement {agreement_id}")
    return ag


def accept(session: Session, agreement: Agreement, actor: ActorLike, ip: str | None = None) -> Agreement:
    """Accept an operator authorization (agreements.accept), first checking the whole-city rule again."""
    if agreement.kind != AGREEMENT_KIND:
        raise NotFound(f"no operator authorization agreement {agreement.id}")
    _refuse_overlap(session, agreement.party_b_org_id, agreement.starts_on, agreement.ends_on,
                    ignore_id=agreement.id)
    agreements.accept(session, agreement, actor, ip=ip)
    return agreement


# --- the check other modules call ---------------------------------------------------------------------
class NoActiveAuthorization(Forbidden):
    code = "no_active_authorization"


def require_active_authorization(session: Session, operator_org_id: int, at: datetime | date | None = None) -> Agreement:
    """The operator authorization in force for `operator_org_id` on `at` (default now; a datetime is
    UTC, compared by its Asia/Shanghai date). Raises Forbidden code "no_active_authorization" naming
    the state: none / not yet accepted / starts on / expired on / exited on / banned until."""
    day = at if isinstance(at, date) and not isinstance(at, datetime) else _today(at)  # type: ignore[arg-type]
    ags = list(session.exec(select(Agreement).where(Agreement.kind == AGREEMENT_KIND,
                                                    Agreement.party_b_org_id == operator_org_id)
                            .order_by(Agreement.starts_on)))  # type: ignore[arg-type]
    for ag in ags:
        if ag.state in ("active", "exited") and ag.starts_on <= day <= _effective_end(ag):
            return ag
    ban = banned_until(session, operator_org_id, day)
    ended = [ag for ag in ags if ag.state in ("active", "expired", "exited", "terminated") and ag.starts_on <= day]
    last = ended[-1] if ended else None

    def refuse(state: str, msg: str, **extra: Any) -> NoActiveAuthorization:
        org = session.get(Organisation, operator_org_id)
        who = f"{org.name_zh} ({org.code})" if org is not None else f"organisation {operator_org_id}"
        return NoActiveAuthorization(f"{who} has no active operator authorization on {day}: {msg}",
                                     details={"state": state, **extra})

    if last is not None and last.terms.get("exit_on"):
        msg = f"{last.number} exited on {last.terms['exit_on']}"
        if ban:
            raise refuse("banned", msg + f"; banned from the city's public data operation until {ban}",
                         agreement=last.number, banned_until=str(ban))
        raise refuse("exited", msg, agreement=last.number, exit_on=last.terms["exit_on"])
    if ban:
        raise refuse("banned", f"banned from the city's public data operation until {ban}", banned_until=str(ban))
    if last is not None and last.state == "terminated":
        raise refuse("terminated", f"{last.number} was terminated on {show(last.ended_at)}", agreement=last.number)
    if last is not None:
        raise refuse("expired", f"{last.number} expired on {last.ends_on}", agreement=last.number,
                     ends_on=str(last.ends_on))
    future = [ag for ag in ags if ag.state == "active" and ag.starts_on > day]
    if future:
        raise refuse("not_started", f"{future[0].number} starts on {future[0].starts_on}", agreement=future[0].number)
    pending = [ag for ag in ags if ag.state == "pending"]
    if pending:
        raise refuse("pending", f"{pending[0].number} is not yet accepted by both sides", agreement=pending[0].number)
    raise refuse("none", "none was ever granted")


# --- operator facts -----------------------------------------------------------------------------------
def record_fact(session: Session, *, operator_org_id: int, kind: str, actor: ActorLike, summary: str,
                year: int | None = None, occurred_on: date | None = None, now: datetime | None = None) -> OperatorFact:
    """The bureau records a fact about the operator; veto facts block any open renewal at once."""
    who = audit_log.as_actor(actor)
    now = _now(now)
    _operator_org(session, operator_org_id)
    if kind not in FACT_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(FACT_KINDS)}", details={"field": "kind"})
    summary = _require_text(summary, "summary", "a summary of the fact")
    if kind.startswith("assessment_") or kind == "targets_missed":
        if year is None:
            raise InvalidInput(f"{kind} needs the assessed year", details={"field": "year"})
    when = occurred_on or _today(now)
    fact = OperatorFact(operator_org_id=operator_org_id, kind=kind, year=year if year is not None else when.year,
                        summary=summary[:500], details={"occurred_on": str(when)}, recorded_by=who.name[:64],
                        recorded_at=now)
    session.add(fact)
    session.flush()
    audit_log.record(session, who, "gov.operator_fact.record", object_type="operator_fact", object_id=fact.id,
                     details={"operator": operator_org_id, "kind": kind, "year": fact.year})
    for case in session.exec(select(Case).where(Case.kind == RENEWAL, Case.applicant_org_id == operator_org_id,
                                                Case.state.in_(("draft", "submitted")))):  # type: ignore[attr-defined]
        _veto_if_needed(session, case, session.get(Agreement, case.facts["agreement_id"]))  # type: ignore[arg-type]
    return fact


def facts_of(session: Session, operator_org_id: int) -> list[OperatorFact]:
    return list(session.exec(select(OperatorFact).where(OperatorFact.operator_org_id == operator_org_id)
                             .order_by(OperatorFact.id)))  # type: ignore[arg-type]


def _occurred(f: OperatorFact) -> date:
    return date.fromisoformat(f.details.get("occurred_on") or str(f.recorded_at.date()))


def vetoes(session: Session, operator_org_id: int, agreement: Agreement) -> list[str]:
    """The one-vote vetoes on record (BRIEF.md 2): a major security incident during the term, 2 unqualified
    assessments in total, an unapproved transfer of operating rights."""
    facts = facts_of(session, operator_org_id)
    out = []
    incidents = [f for f in facts if f.kind == "major_security_incident"
                 and agreement.starts_on <= _occurred(f) <= agreement.ends_on]
    if incidents:
        out.append(f"major_security_incident: {len(incidents)} during the term ("
                   + "; ".join(f"{_occurred(f)} {f.summary}" for f in incidents) + ")")
    # Two unqualified assessments means two assessed years: a result recorded twice for one year is one.
    unq_years = sorted({f.year for f in facts if f.kind == "assessment_unqualified"})
    if len(unq_years) >= 2:
        out.append(f"assessment_unqualified: {len(unq_years)} years in total "
                   f"(years {', '.join(map(str, unq_years))})")
    transfers = [f for f in facts if f.kind == "unapproved_transfer"]
    if transfers:
        out.append("unapproved_transfer: " + "; ".join(f"{_occurred(f)} {f.summary}" for f in transfers))
    return out


def _veto_if_needed(session: Session, case: Case, agreement: Agreement) -> bool:
    found = vetoes(session, case.applicant_org_id, agreement)
    if not found:
        return False
    workflow.transition(session, case, "veto", actor=audit_log.SYSTEM,
                        reason="one-vote veto (一票否决): " + " | ".join(found),
                        data={"vetoes": len(found)}, facts={"vetoes": found})
    return True


# --- renewal ------------------------------------------------------------------------------------------
def renewal_window(agreement: Agreement) -> tuple[date, date]:
    """(first day, last day) on which a renewal may be filed: at least 6 months before the term ends."""
    return (workdays.add_months(agreement.ends_on, -RENEWAL_OPENS_MONTHS),
            workdays.add_months(agreement.ends_on, -RENEWAL_DEADLINE_MONTHS))


def _check_renewal_deadline(ag: Agreement, today: date) -> None:
    _, closes = renewal_window(ag)
    if today > closes:
        raise Conflict(f"a renewal of {ag.number} had to be filed by {closes}, {RENEWAL_DEADLINE_MONTHS} months before "
                       f"the term ends on {ag.ends_on}; a new operator selection follows instead",
                       code="renewal_deadline_passed", details={"closes_on": str(closes), "ends_on": str(ag.ends_on)})


def open_renewal(session: Session, *, actor: ActorLike, title: str = "", payload: dict[str, Any] | None = None,
                 now: datetime | None = None) -> Case:
    """The operator opens a renewal application inside the window (12 to 6 months before the term ends)."""
    who = audit_log.as_actor(actor)
    now = _now(now)
    today = _today(now)
    org = _operator_org(session, int(who.org_id or 0), field="org")
    ag = require_active_authorization(session, org.id, today)  # type: ignore[arg-type]
    opens, closes = renewal_window(ag)
    if today < opens:
        raise Conflict(f"the renewal window for {ag.number} opens on {opens} ({RENEWAL_OPENS_MONTHS} months before "
                       f"the term ends on {ag.ends_on}); apply from then", code="renewal_window_closed",
                       details={"opens_on": str(opens), "closes_on": str(closes), "ends_on": str(ag.ends_on)})
    _check_renewal_deadline(ag, today)
    following = session.exec(select(Agreement).where(Agreement.kind == AGREEMENT_KIND,
                                                     Agreement.party_b_org_id == org.id,
                                                     Agreement.starts_on > ag.ends_on,
                                                     Agreement.state.in_(("pending", "active")))).first()  # type: ignore[attr-defined]
    if following is not None:
        raise Conflict(f"{ag.number} was already renewed by {following.number}", code="already_renewed")
    dup = session.exec(select(Case).where(Case.kind == RENEWAL, Case.applicant_org_id == org.id,
                                          Case.state.in_(("draft", "submitted")))).first()  # type: ignore[attr-defined]
    if dup is not None:
        raise Conflict(f"a renewal application is already open: {dup.number} ({dup.state})", code="already_applied")
    case = workflow.open_case(session, kind=RENEWAL, applicant_org_id=org.id, title=title or f"Renewal of {ag.number}",  # type: ignore[arg-type]
                              payload=dict(payload or {}), actor=who, awaiting_orgs=[org.id],  # type: ignore[list-item]
                              due_at=workdays.end_of_day_utc(closes),
                              facts={"agreement_id": ag.id, "agreement": ag.number, "window_opens_on": str(opens)})
    _veto_if_needed(session, case, ag)
    return case


def decide(session: Session, case: Case, *, actor: ActorLike, approve: bool, reasons: str = "",
           now: datetime | None = None, settings: Settings | None = None) -> Case:
    """The bureau decides a submitted renewal or voluntary exit."""
    settings = settings or get_settings()
    now = _now(now)
    who = audit_log.as_actor(actor)
    if case.kind not in (RENEWAL, EXIT):
        raise NotFound(f"no renewal or exit application {case.id}")
    workflow.ensure_not_applicant(case, who)
    workflow.machine(case.kind).step(case.state, "approve" if approve else "reject", number=case.number)
    ag = session.get(Agreement, case.facts["agreement_id"])
    assert ag is not None
    if not approve:
        workflow.record_review(session, case, stage="bureau", actor=who, decision="reject", reasons=reasons)
        workflow.transition(session, case, "reject", actor=who, reason=reasons)
        return case
    if case.kind == RENEWAL:
        if _veto_if_needed(session, case, ag):  # a fact recorded since submission
            return case
        if _today(now) > ag.ends_on:
            raise Expired(f"{ag.number} expired on {ag.ends_on}; it can no longer be renewed",
                          details={"ends_on": str(ag.ends_on)})
        workflow.record_review(session, case, stage="bureau", actor=who, decision="approve", reasons=reasons)
        starts = ag.ends_on + timedelta(days=1)
        ends = term_end(starts)
        _refuse_overlap(session, ag.party_b_org_id, starts, ends, ignore_id=ag.id)
        prev = ag.terms
        terms = {**prev, "starts_on": str(starts), "ends_on": str(ends), "case": case.number, "renews": ag.number}
        new = _new_agreement(session, case=case, party_a=ag.party_a_org_id, party_b=ag.party_b_org_id, terms=terms,
                             starts=starts, ends=ends, who=who)
        workflow.transition(session, case, "approve", actor=who, reason=reasons,
                            data={"agreement": new.number, "text_sha256": new.text_sha256},
                            facts={"new_agreement_id": new.id, "new_agreement": new.number})
        return case
    exit_on = date.fromisoformat(case.payload["exit_on"])
    workflow.record_review(session, case, stage="bureau", actor=who, decision="approve", reasons=reasons)
    workflow.transition(session, case, "approve", actor=who, reason=reasons, data={"exit_on": str(exit_on)})
    _exit_agreement(session, ag, exit_on=exit_on, reason=f"voluntary exit {case.number}", who=who, now=now,
                    settings=settings, ban=False)
    return case


# --- exit ---------------------------------------------------------------------------------------------
def _check_exit_notice(exit_on: date, today: date) -> None:
    earliest = workdays.add_months(today, EXIT_NOTICE_MONTHS)
    if exit_on < earliest:
        raise InvalidInput(f"a voluntary exit needs {EXIT_NOTICE_MONTHS} months' notice: the earliest exit date "
                           f"applied for today ({today}) is {earliest}, not {exit_on}", code="notice_too_short",
                           details={"field": "exit_on", "earliest": str(earliest)})


def open_exit(session: Session, *, actor: ActorLike, exit_on: date, reason: str, title: str = "",
              now: datetime | None = None) -> Case:
    """The operator applies to exit voluntarily, at least 6 months ahead, before its term ends."""
    who = audit_log.as_actor(actor)
    today = _today(now)
    org = _operator_org(session, int(who.org_id or 0), field="org")
    ag = require_active_authorization(session, org.id, today)  # type: ignore[arg-type]
    reason = _require_text(reason, "reason", "the reason for exiting")
    _check_exit_notice(exit_on, today)
    if exit_on > ag.ends_on:
        raise InvalidInput(f"{ag.number} ends on {ag.ends_on}; a voluntary exit is before the term ends "
                           "(after it, the authorization simply expires)", details={"field": "exit_on"})
    dup = session.exec(select(Case).where(Case.kind == EXIT, Case.applicant_org_id == org.id,
                                          Case.state.in_(("draft", "submitted")))).first()  # type: ignore[attr-defined]
    if dup is not None:
        raise Conflict(f"an exit application is already open: {dup.number} ({dup.state})", code="already_applied")
    return workflow.open_case(session, kind=EXIT, applicant_org_id=org.id, title=title or f"Exit from {ag.number}",  # type: ignore[arg-type]
                              payload={"mode": "voluntary", "exit_on": str(exit_on), "reason": reason}, actor=who,
                              awaiting_orgs=[org.id], facts={"agreement_id": ag.id, "agreement": ag.number},  # type: ignore[list-item]
                              reason=reason)


def _consecutive_failures(facts: list[OperatorFact]) -> list[int] | None:
    years = sorted({int(f.year) for f in facts if f.kind in ("assessment_unqualified", "targets_missed")
                    and f.year is not None})
    for a, b in zip(years, years[1:]):
        if b == a + 1:
            return [a, b]
    return None


def force_exit(session: Session, *, operator_org_id: int, cause: str, reasons: str, actor: ActorLike,
               exit_on: date | None = None, now: datetime | None = None,
               settings: Settings | None = None) -> Case:
    """The bureau's termination notice for one of the listed causes, with the facts on record."""
    settings = settings or get_settings()
    who = audit_log.as_actor(actor)
    now = _now(now)
    today = _today(now)
    if cause not in FORCED_CAUSES:
        raise InvalidInput(f"cause must be one of {', '.join(FORCED_CAUSES)}", details={"field": "cause"})
    reasons = _require_text(reasons, "reasons", "written reasons for the termination")
    _operator_org(session, operator_org_id)
    ag = require_active_authorization(session, operator_org_id, today)
    facts = facts_of(session, operator_org_id)
    if cause == "serious_security_violation":
        basis = [f for f in facts if f.kind in ("serious_violation", "major_security_incident")]
        if not basis:
            raise Conflict("a forced exit for a serious security violation needs the violation on record: record a "
                           "serious_violation or major_security_incident fact first", code="no_fact_on_record")
        grounds = [f"{f.kind} {_occurred(f)}: {f.summary}" for f in basis]
    elif cause == "failed_assessment":
        years = _consecutive_failures(facts)
        again = [f for f in facts if f.kind == "reassessment_unqualified"]
        if years is None and not again:
            raise Conflict("a forced exit for failing assessment needs 2 consecutive years of unqualified "
                           "assessments or missed targets, or an unqualified re-assessment after rectification, "
                           "on record", code="no_fact_on_record")
        grounds = ([f"assessment unqualified or targets missed in {years[0]} and {years[1]}"] if years else []) \
            + [f"re-assessment of {f.year} unqualified after rectification: {f.summary}" for f in again]
    else:
        basis = [f for f in facts if f.kind == "fraud"]
        if not basis:
            raise Conflict("a forced exit for fraud needs the fraud on record: record a fraud fact first",
                           code="no_fact_on_record")
        grounds = [f"fraud {_occurred(f)}: {f.summary}" for f in basis]
    exit_on = exit_on or today
    if exit_on < today:
        raise InvalidInput("the exit date cannot be in the past", details={"field": "exit_on"})
    case = workflow.open_case(session, kind=EXIT, applicant_org_id=operator_org_id,
                              title=f"Termination of {ag.number}: {cause}",
                              payload={"mode": "forced", "cause": cause, "exit_on": str(exit_on)}, actor=who,
                              facts={"agreement_id": ag.id, "agreement": ag.number, "grounds": grounds})
    workflow.transition(session, case, "force", actor=who, reason=reasons,
                        data={"cause": cause, "exit_on": str(exit_on)})
    _exit_agreement(session, ag, exit_on=exit_on, reason=f"forced exit {case.number}: {FORCED_CAUSES[cause]}",
                    who=who, now=now, settings=settings, ban=cause == "failed_assessment")
    return case


def _exit_agreement(session: Session, ag: Agreement, *, exit_on: date, reason: str, who: audit_log.Actor,
                    now: datetime, settings: Settings, ban: bool) -> None:
    """The agreement is exited from `exit_on` (the operator may act until the day before); the liability
    window runs 3 years from the exit date; a ban is recorded when the exit was forced for failing
    assessment; a renewal term not yet begun is terminated."""
    before = ag.state
    liability = workdays.add_months(exit_on, LIABILITY_MONTHS)
    terms = {**ag.terms, "exit_on": str(exit_on), "destruction_due_on": str(exit_on + timedelta(days=30))}
    if ban:
        until = workdays.add_months(exit_on, 12 * settings.operator_ban_years)
        terms["banned_until"] = str(until)
        fact = OperatorFact(operator_org_id=ag.party_b_org_id, kind=BANNED, year=exit_on.year,
                            summary=f"banned from the city's public data operation until {until} ({reason})"[:500],
                            details={"until": str(until), "from": str(exit_on), "agreement": ag.number},
                            recorded_by=who.name[:64], recorded_at=now)
        session.add(fact)
    ag.terms = terms
    ag.state = "exited"
    ag.liability_until = liability
    ag.ended_at = now
    ag.end_reason = reason[:500]
    session.add(ag)
    session.flush()
    audit_log.record(session, who, "gov.agreement.exit", object_type="agreement", object_id=ag.id,
                     details={"number": ag.number, "before": before, "after": "exited", "exit_on": str(exit_on),
                              "liability_until": str(liability), "banned_until": terms.get("banned_until")})
    for nxt in session.exec(select(Agreement).where(Agreement.kind == AGREEMENT_KIND,
                                                    Agreement.party_b_org_id == ag.party_b_org_id,
                                                    Agreement.starts_on > ag.starts_on,
                                                    Agreement.state.in_(("pending", "active")))):  # type: ignore[attr-defined]
        prev = nxt.state
        nxt.state, nxt.ended_at, nxt.end_reason = "terminated", now, f"exit from {ag.number}"
        session.add(nxt)
        audit_log.record(session, who, "gov.agreement.terminate", object_type="agreement", object_id=nxt.id,
                         details={"number": nxt.number, "before": prev, "after": "terminated"})
    session.flush()


# --- views --------------------------------------------------------------------------------------------
def case_view(session: Session, case: Case, *, bureau: bool = False) -> dict[str, Any]:
    """A case as the API shows it; objectors' contacts only to the bureau."""
    out = workflow.view(session, case)
    if case.kind == APPLICATION and out["facts"].get("objections") and bureau:
        contacts = {t.data.get("objection"): (t.data.get("private") or {}).get("contact")
                    for t in workflow.history(session, case) if t.action == "object"}
        out["facts"] = {**out["facts"], "objections": [{**o, "contact": contacts.get(o["n"])}
                                                       for o in out["facts"]["objections"]]}
    if case.kind == APPLICATION:
        s = _scores(session, case)
        out["scores"] = {"count": len(s), "mean": round(sum(s) / len(s), 2) if s else None}
    return out


def public_view(case: Case) -> dict[str, Any]:
    p = case.facts.get("publicity", {})
    return {"id": case.id, "number": case.number, "title": case.title, "applicant_org_id": case.applicant_org_id,
            "mean_score": case.facts.get("mean_score"), "publicity_starts_at": p.get("starts_at"),
            "publicity_ends_at": p.get("ends_at"), "publicity_ends_local": p.get("ends_local"),
            "objections": len(case.facts.get("objections", []))}


def agreement_view(session: Session, ag: Agreement) -> dict[str, Any]:
    accs = session.exec(select(Acceptance).where(Acceptance.agreement_id == ag.id).order_by(Acceptance.id))  # type: ignore[arg-type]
    return {"id": ag.id, "number": ag.number, "kind": ag.kind, "state": ag.state, "party_a_org_id": ag.party_a_org_id,
            "party_b_org_id": ag.party_b_org_id, "starts_on": ag.starts_on, "ends_on": ag.ends_on, "terms": ag.terms,
            "text": ag.text, "text_sha256": ag.text_sha256, "liability_until": ag.liability_until,
            "end_reason": ag.end_reason,
            "acceptances": [{"org_id": a.org_id, "by": a.actor_name, "at": a.at, "at_local": show(a.at),
                             "text_sha256": a.text_sha256} for a in accs]}
