"""Partner recruitment (BRIEF.md section 4): the operator's call per industry, partners' applications,
the operator's and the bureau's review (experts may advise), and the partner agreement.

The agreement records the data scope and use boundary, development duties and quality, the revenue
share (basis points), the term, exit terms and security duties with a named security officer. The
operator accepts its text when it offers it; the partner's acceptance makes it active. A partner may
then file scenario applications within the agreement's data scope (scenarios.py), and the sandbox
workspaces the bureau opens for approved scenarios enforce that scope on every job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import get_settings
from authops.platform.governance import workdays, workflow
from authops.platform.governance.models import Acceptance, Agreement, Call, Case
from authops.platform.governance.workflow import Expired, Machine, Step, WrongReviewer
from authops.platform.identity.models import Organisation

KIND = "partner_application"
CALL_KIND = "partner_recruitment"
AGREEMENT_KIND = "partner"
REVIEW_STATES = ("operator_review", "bureau_review")

MACHINE = workflow.register(Machine(
    kind=KIND, prefix="PT", initial="draft", zh="生态合伙人申请", en="partner application",
    states=("draft", "operator_review", "bureau_review", "returned", "approved", "contracting", "contracted",
            "rejected", "withdrawn"),
    steps=(
        Step("submit", ("draft",), "operator_review", by="applicant", zh="提交申请"),
        # A returned application goes back to the stage that returned it (target given by the service).
        Step("resubmit", ("returned",), "operator_review", by="applicant", zh="修改后重新提交"),
        Step("appoint_experts", ("operator_review", "bureau_review"), "operator_review", zh="邀请专家咨询"),
        Step("operator_approve", ("operator_review",), "bureau_review", zh="运营机构审核通过"),
        Step("operator_reject", ("operator_review",), "rejected", needs_reason=True, zh="运营机构不予通过"),
        Step("operator_return", ("operator_review",), "returned", needs_reason=True, zh="运营机构退回修改"),
        Step("bureau_approve", ("bureau_review",), "approved", zh="数据局审核通过"),
        Step("bureau_reject", ("bureau_review",), "rejected", needs_reason=True, zh="数据局不予通过"),
        Step("bureau_return", ("bureau_review",), "returned", needs_reason=True, zh="数据局退回修改"),
        Step("offer_agreement", ("approved",), "contracting", zh="运营机构签署合伙协议"),
        Step("sign", ("contracting",), "contracted", by="applicant", zh="合伙人签署合伙协议"),
        Step("withdraw", ("draft", "operator_review", "bureau_review", "returned"), "withdrawn",
             by="applicant", zh="撤回"),
        Step("flag_overdue", REVIEW_STATES, "operator_review", by="system", zh="标记逾期"),
    ),
    final=frozenset({"contracted", "rejected", "withdrawn"}),
))

AGREEMENT_TERMS = ("data_scope", "use_boundary", "development_duties", "quality", "revenue_share_bp",
                   "exit_terms", "security_duties", "security_officer")


# --- small shared helpers (scenarios.py and tools.py use them too) ---------------------------------

def actor_of(actor: audit_log.Actor | Principal) -> audit_log.Actor:
    return actor if isinstance(actor, audit_log.Actor) else audit_log.Actor.of(actor)


def org_of(session: Session, org_id: int | None) -> Organisation:
    org = session.get(Organisation, org_id) if org_id else None
    if org is None:
        raise NotFound(f"no organisation {org_id}")
    return org


def require_kind(session: Session, org_id: int | None, *kinds: OrgKind, doing: str) -> Organisation:
    org = org_of(session, org_id)
    if org.kind not in {k.value for k in kinds}:
        raise Forbidden(f"{doing} is for {' or '.join(k.value for k in kinds)} organisations; "
                        f"{org.name_en or org.code} is a {org.kind}", code="wrong_org_kind")
    return org


def text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def stage_deadline(stage: str) -> datetime:
    """The deadline of a review stage from now: settings.review_<stage>_working_days working days."""
    s = get_settings()
    n = {"provider": s.review_provider_working_days, "expert": s.review_expert_working_days,
         "operator": s.review_provider_working_days, "bureau": s.review_bureau_working_days}[stage]
    return workdays.deadline(utcnow(), n)


def expert_org_ids(session: Session) -> list[int]:
    """Every active expert organisation: the committee unless the bureau appoints one."""
    rows = session.exec(select(Organisation).where(Organisation.kind == OrgKind.EXPERT.value))
    return sorted(o.id for o in rows if o.is_active)


def check_experts(session: Session, org_ids: Iterable[int]) -> list[int]:
    ids = sorted({int(i) for i in org_ids})
    if not ids:
        raise InvalidInput("name at least one expert organisation", details={"field": "expert_org_ids"})
    for i in ids:
        org = session.get(Organisation, i)
        if org is None or org.kind != OrgKind.EXPERT.value:
            raise InvalidInput(f"expert_org_ids: organisation {i} is not an expert organisation",
                               details={"field": "expert_org_ids"})
    return ids


def one_per_org(session: Session, case: Case, stage: str, org_id: int | None) -> None:
    """An organisation decides once per stage and round (two of its users may not both decide)."""
    done = [r for r in workflow.reviews(session, case, stage, case.round) if r.reviewer_org_id == org_id]
    if done:
        raise Conflict(f"your organisation already decided on {case.number} at the {stage} stage "
                       f"({done[0].decision}, by {done[0].reviewer_name})", code="already_reviewed")


def audit_review(session: Session, case: Case, who: audit_log.Actor, stage: str, decision: str) -> None:
    audit_log.record(session, who, f"gov.{case.kind}.review", object_type=case.kind, object_id=case.id,
                     details={"number": case.number, "stage": stage, "decision": decision, "round": case.round,
                              "state": case.state})


def flag_overdue_case(session: Session, case: Case, now: datetime) -> bool:
    """Record an overdue flag in the case's facts (the state does not change); once per state and round."""
    if not workflow.overdue(case, now):
        return False
    flags = list(case.facts.get("overdue_flags", []))
    if any(f.get("state") == case.state and f.get("round") == case.round for f in flags):
        return False
    flag = {"state": case.state, "round": case.round, "due_at": case.due_at.isoformat(),
            "flagged_at": now.isoformat(), "awaiting_orgs": list(case.awaiting_orgs)}
    workflow.transition(session, case, "flag_overdue", actor=audit_log.SYSTEM, target=case.state,
                        reason=f"review was due {show(case.due_at)} (Asia/Shanghai)",
                        facts={"overdue": flag, "overdue_flags": [*flags, flag]},
                        data={"due_at": case.due_at.isoformat()})
    return True


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- calls -----------------------------------------------------------------------------------------

def require_authorized(session: Session, operator_org_id: int) -> None:
    """An operator acts (calls, reviews, agreements, tool requests) only under an authorization in force."""
    from authops.platform.governance.operator import require_active_authorization

    require_active_authorization(session, operator_org_id)


_require_authorized = require_authorized


def publish_call(session: Session, *, actor: audit_log.Actor | Principal, industry: str, title: str,
                 term_months: int, conditions: list[str], materials: list[str], deadline_on: date,
                 description: str = "") -> Call:
    """The operator's public call for partners in one industry; only under an active authorization."""
    who = actor_of(actor)
    require_kind(session, who.org_id, OrgKind.OPERATOR, doing="publishing a partner call")
    _require_authorized(session, int(who.org_id))
    problems = []
    if not text(industry):
        problems.append(("industry", "name the industry the call recruits for"))
    if not text(title):
        problems.append(("title", "give the call a title"))
    if not isinstance(term_months, int) or isinstance(term_months, bool) or not 1 <= term_months <= 120:
        problems.append(("term_months", "the partnership term is 1 to 120 months"))
    conditions = [text(c) for c in conditions if text(c)]
    materials = [text(m) for m in materials if text(m)]
    if not conditions:
        problems.append(("conditions", "list the admission conditions"))
    if not materials:
        problems.append(("materials", "list the materials every application must attach"))
    if len(set(materials)) != len(materials):
        problems.append(("materials", "a material is listed twice"))
    if deadline_on <= workdays.shanghai_date(utcnow()):
        problems.append(("deadline", "the deadline must be a later date than today"))
    invalid(problems)
    now = utcnow()
    n = session.exec(select(func.count()).select_from(Call).where(Call.kind == CALL_KIND)).one() + 1
    call = Call(kind=CALL_KIND, number=f"PRC-{now.year}-{n:05d}", publisher_org_id=int(who.org_id),
                title=text(title)[:300], industry=text(industry)[:100], conditions=conditions, materials=materials,
                details={"term_months": term_months, "description": text(description)},
                opens_at=now, deadline_at=workdays.end_of_day_utc(deadline_on), created_by=who.name[:64])
    session.add(call)
    session.flush()
    audit_log.record(session, who, "gov.partner_call.publish", object_type="call", object_id=call.id,
                     details={"number": call.number, "industry": call.industry,
                              "deadline": call.deadline_at.isoformat()})
    return call


def invalid(problems: list[tuple[str, str]]) -> None:
    """Raise one InvalidInput naming every problem (field: what to fix)."""
    if problems:
        raise InvalidInput("; ".join(f"{f}: {p}" for f, p in problems),
                           details={"field": problems[0][0],
                                    "problems": [{"field": f, "problem": p} for f, p in problems]})


def get_call(session: Session, call_id: int) -> Call:
    call = session.get(Call, call_id)
    if call is None or call.kind != CALL_KIND:
        raise NotFound(f"no partner call {call_id}")
    return call


def open_calls(session: Session, now: datetime | None = None) -> list[Call]:
    now = now or utcnow()
    return list(session.exec(select(Call).where(Call.kind == CALL_KIND, Call.state == "open",
                                                Call.deadline_at >= now).order_by(Call.id)))


def call_view(call: Call) -> dict[str, Any]:
    return {"id": call.id, "number": call.number, "operator_org_id": call.publisher_org_id, "title": call.title,
            "industry": call.industry, "term_months": call.details.get("term_months"),
            "description": call.details.get("description", ""), "conditions": call.conditions,
            "materials": call.materials, "opens_at": call.opens_at, "deadline_at": call.deadline_at,
            "deadline_local": show(call.deadline_at), "state": call.state}


def _ensure_open(call: Call) -> None:
    if call.state != "open":
        raise Conflict(f"call {call.number} is {call.state}; applications are no longer accepted",
                       code="call_closed")
    if utcnow() > call.deadline_at:
        raise Expired(f"call {call.number} closed at {show(call.deadline_at)} (Asia/Shanghai); "
                      "applications after the deadline are not accepted", details={"call": call.number})


# --- applications ----------------------------------------------------------------------------------

def apply(session: Session, *, actor: audit_log.Actor | Principal, call_id: int, title: str,
          payload: dict[str, Any]) -> Case:
    """A partner company's application to a call: a draft to which it attaches the listed materials."""
    who = actor_of(actor)
    require_kind(session, who.org_id, OrgKind.PARTNER, doing="applying to a partner call")
    call = get_call(session, call_id)
    _ensure_open(call)
    if not text(payload.get("profile")):
        invalid([("payload.profile", "describe the company: business, capability, security capability")])
    dup = session.exec(select(Case).where(Case.kind == KIND, Case.call_id == call.id,
                                          Case.applicant_org_id == who.org_id,
                                          Case.state.notin_(("rejected", "withdrawn")))).first()
    if dup is not None:
        raise Conflict(f"your organisation already applied to {call.number} ({dup.number}, {dup.state})",
                       code="already_applied")
    return workflow.open_case(session, kind=KIND, applicant_org_id=int(who.org_id), title=title, payload=payload,
                              actor=who, call_id=call.id, awaiting_orgs=[int(who.org_id)],
                              facts={"operator_org_id": call.publisher_org_id, "industry": call.industry})


def add_material(session: Session, store: Any, case: Case, *, actor: audit_log.Actor | Principal, material: str,
                 filename: str, content: bytes, content_type: str = "application/octet-stream"):
    workflow.ensure_applicant(case, actor)
    if case.state not in ("draft", "returned"):
        raise workflow.IllegalTransition(f"{case.number} is {case.state}; materials are added while it is a "
                                         "draft or returned for revision", details={"state": case.state})
    call = get_call(session, case.call_id)
    if material not in call.materials:
        raise InvalidInput(f"material: {call.number} asks for {', '.join(call.materials)}; not {material!r}",
                           details={"field": "material"})
    return workflow.add_document(session, store, case, material=material, filename=filename, content=content,
                                 actor=actor, content_type=content_type)


def submit(session: Session, case: Case, *, actor: audit_log.Actor | Principal,
           payload: dict[str, Any] | None = None) -> Case:
    """Submit a draft (or a revision of a returned application) for review."""
    workflow.ensure_applicant(case, actor)
    call = get_call(session, case.call_id)
    if payload is not None and case.state in ("draft", "returned"):
        if not text(payload.get("profile")):
            invalid([("payload.profile", "describe the company: business, capability, security capability")])
        case.payload = payload
    missing = workflow.missing_materials(session, case, call.materials)
    if missing and case.state in ("draft", "returned"):
        raise InvalidInput(f"attach the missing materials first: {', '.join(missing)}",
                           details={"field": "materials", "missing": missing})
    if case.state == "returned":
        back = case.facts.get("returned_from", "operator_review")
        case.round += 1
        workflow.transition(session, case, "resubmit", actor=actor, target=back, **_stage(back, case))
        return case
    if case.state == "draft":
        _ensure_open(call)
    workflow.transition(session, case, "submit", actor=actor, **_stage("operator_review", case))
    return case


def _stage(state: str, case: Case) -> dict[str, Any]:
    if state == "operator_review":
        return {"awaiting_orgs": [case.facts["operator_org_id"]], "due_at": stage_deadline("operator")}
    return {"awaiting_orgs": _bureau_ids_for(case), "due_at": stage_deadline("bureau")}


def _bureau_ids_for(case: Case) -> list[int]:
    return list(case.facts.get("bureau_org_ids", []))


def bureau_org_ids(session: Session) -> list[int]:
    """Every active bureau organisation (the final reviewers)."""
    return sorted(o.id for o in session.exec(select(Organisation).where(Organisation.kind == OrgKind.BUREAU.value))
                  if o.is_active)


def appoint_experts(session: Session, case: Case, *, actor: audit_log.Actor | Principal,
                    expert_org_ids: Iterable[int]) -> Case:
    """The operator (or bureau) asks expert organisations for their advice on an application."""
    who = actor_of(actor)
    _must_be_reviewer(session, case, who)
    ids = check_experts(session, expert_org_ids)
    workflow.transition(session, case, "appoint_experts", actor=who, target=case.state,
                        facts={"experts": ids}, data={"experts": ",".join(map(str, ids))})
    return case


def _must_be_reviewer(session: Session, case: Case, who: audit_log.Actor) -> None:
    org = org_of(session, who.org_id)
    if org.kind == OrgKind.BUREAU.value:
        return
    if who.org_id != case.facts.get("operator_org_id"):
        workflow.ensure_not_applicant(case, who)
        raise WrongReviewer(f"{case.number} answers a call of another operator; that operator reviews it",
                            details={"case": case.number})
    _require_authorized(session, int(who.org_id))  # an operator acts only under an authorization in force


def expert_opinion(session: Session, case: Case, *, actor: audit_log.Actor | Principal, comments: str,
                   score: int | None = None) -> Case:
    """An appointed expert's advice: recorded as a 'score' review with comments; it never blocks."""
    who = actor_of(actor)
    workflow.ensure_not_applicant(case, who)
    if who.org_id not in case.facts.get("experts", []):
        raise WrongReviewer(f"your organisation was not asked to advise on {case.number}",
                            details={"case": case.number})
    if case.state not in REVIEW_STATES:
        raise workflow.IllegalTransition(f"{case.number} is {case.state}; experts advise while it is under "
                                         "operator or bureau review", details={"state": case.state})
    if not text(comments):
        invalid([("comments", "write the expert opinion")])
    workflow.record_review(session, case, stage="expert", actor=who, decision="score", reasons=comments,
                           score=score)
    audit_review(session, case, who, "expert", "score")
    return case


DECISIONS = ("approve", "reject", "return")


def _decision(decision: str, reasons: str) -> None:
    if decision not in DECISIONS:
        raise InvalidInput("decision must be approve, reject or return", details={"field": "decision"})
    if decision != "approve" and not text(reasons):
        raise InvalidInput(f"{decision} needs written reasons", details={"field": "reasons"})


def operator_review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
                    reasons: str = "") -> Case:
    """The call's operator decides: approve (on to the bureau), reject, or return for revision."""
    who = actor_of(actor)
    _decision(decision, reasons)
    MACHINE.step(case.state, f"operator_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    if who.org_id != case.facts.get("operator_org_id"):
        raise WrongReviewer(f"{case.number} answers a call of another operator; that operator reviews it",
                            details={"case": case.number})
    _require_authorized(session, int(who.org_id))
    workflow.record_review(session, case, stage="operator", actor=who, decision=decision, reasons=reasons)
    if decision == "approve":
        case.facts = {**case.facts, "bureau_org_ids": bureau_org_ids(session)}
        workflow.transition(session, case, "operator_approve", actor=who, reason=reasons,
                            **_stage("bureau_review", case))
    else:
        workflow.transition(session, case, f"operator_{decision}", actor=who, reason=reasons,
                            awaiting_orgs=[case.applicant_org_id] if decision == "return" else [],
                            due_at=None, facts={"returned_from": "operator_review"} if decision == "return" else None)
    return case


def bureau_review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
                  reasons: str = "") -> Case:
    who = actor_of(actor)
    _decision(decision, reasons)
    MACHINE.step(case.state, f"bureau_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    require_kind(session, who.org_id, OrgKind.BUREAU, doing="the bureau's review")
    one_per_org(session, case, "bureau", who.org_id)
    workflow.record_review(session, case, stage="bureau", actor=who, decision=decision, reasons=reasons)
    if decision == "approve":
        workflow.transition(session, case, "bureau_approve", actor=who, reason=reasons,
                            awaiting_orgs=[case.facts["operator_org_id"]], due_at=None)
    else:
        workflow.transition(session, case, f"bureau_{decision}", actor=who, reason=reasons,
                            awaiting_orgs=[case.applicant_org_id] if decision == "return" else [], due_at=None,
                            facts={"returned_from": "bureau_review"} if decision == "return" else None)
    return case


def withdraw(session: Session, case: Case, *, actor: audit_log.Actor | Principal, reason: str = "") -> Case:
    workflow.transition(session, case, "withdraw", actor=actor, reason=reason)
    return case


# --- the partner agreement -------------------------------------------------------------------------

def _check_scope(session: Session, scope: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from authops.platform.catalog import service as catalog

    problems: list[tuple[str, str]] = []
    out: list[dict[str, Any]] = []
    if not isinstance(scope, list) or not scope:
        return [], [("terms.data_scope", "list the resources the partner may use: "
                                         "[{resource, fields, share_modes}]")]
    for i, item in enumerate(scope):
        where = f"terms.data_scope[{i}]"
        code = text(item.get("resource")) if isinstance(item, dict) else ""
        try:
            res = catalog.get_resource(session, code)
        except NotFound:
            problems.append((f"{where}.resource", f"no data resource with code {code!r}"))
            continue
        names = catalog.schema_of(session, res).names
        fields = list(item.get("fields") or ["*"])
        unknown = [f for f in fields if f != "*" and f not in names]
        if unknown:
            problems.append((f"{where}.fields", f"{code} has no field {unknown[0]!r}"))
        modes = list(item.get("share_modes") or res.share_modes)
        bad = [m for m in modes if m not in res.share_modes]
        if bad:
            problems.append((f"{where}.share_modes",
                             f"{code} is shared by {', '.join(res.share_modes)} only, not {bad[0]}"))
        out.append({"resource": code, "fields": ["*"] if "*" in fields else sorted(set(fields)),
                    "share_modes": sorted(set(modes))})
    return out, problems


def _agreement_text(case: Case, operator: Organisation, partner: Organisation, terms: dict[str, Any],
                    starts_on: date, ends_on: date) -> str:
    scope = "\n".join(f"  - {s['resource']}: fields {', '.join(s['fields'])}; share modes {', '.join(s['share_modes'])}"
                      for s in terms["data_scope"])
    officer = terms["security_officer"]
    return (f"生态合伙人协议 Partner agreement ({case.number})\n"
            f"Party A (operator): {operator.name_zh} / {operator.name_en} ({operator.code})\n"
            f"Party B (partner): {partner.name_zh} / {partner.name_en} ({partner.code})\n"
            f"Industry: {case.facts.get('industry', '')}\n"
            f"Term: {starts_on.isoformat()} to {ends_on.isoformat()}\n"
            f"1. Data scope (data beyond it may not be used):\n{scope}\n"
            f"2. Use boundary: {terms['use_boundary']}\n"
            "   The partner may not use data beyond this scope, for unauthorized commercial purposes, "
            "or pass it to third parties; raw data never leaves the platform.\n"
            f"3. Development duties: {terms['development_duties']}\n"
            f"4. Quality: {terms['quality']}\n"
            f"5. Revenue share: {terms['revenue_share_bp'] / 100:.2f}% ({terms['revenue_share_bp']} basis points)\n"
            f"6. Exit: {terms['exit_terms']}\n"
            f"7. Security duties: {terms['security_duties']}\n"
            f"   Security officer: {officer['name']} ({officer.get('contact', '')})\n")


def offer_agreement(session: Session, case: Case, *, actor: audit_log.Actor | Principal, terms: dict[str, Any],
                    starts_on: date | None = None, months: int | None = None, ip: str | None = None) -> Agreement:
    """The operator drafts the partner agreement of an approved application and accepts it (its side)."""
    who = actor_of(actor)
    MACHINE.step(case.state, "offer_agreement", number=case.number)
    if who.org_id != case.facts.get("operator_org_id"):
        workflow.ensure_not_applicant(case, who)
        raise WrongReviewer(f"the operator whose call {case.number} answered offers its agreement",
                            details={"case": case.number})
    _require_authorized(session, int(who.org_id))
    problems: list[tuple[str, str]] = []
    for name in ("use_boundary", "development_duties", "quality", "exit_terms", "security_duties"):
        if not text(terms.get(name)):
            problems.append((f"terms.{name}", f"{name.replace('_', ' ')} must be written out"))
    scope, scope_problems = _check_scope(session, terms.get("data_scope"))
    problems += scope_problems
    bp = terms.get("revenue_share_bp")
    if not isinstance(bp, int) or isinstance(bp, bool) or not 0 <= bp <= 10_000:
        problems.append(("terms.revenue_share_bp", "the partner's revenue share in basis points, 0 to 10000 "
                                                   "(2500 = 25%)"))
    officer = terms.get("security_officer")
    if not isinstance(officer, dict) or not text(officer.get("name")):
        problems.append(("terms.security_officer", "name the partner's security officer: {name, contact}"))
    call = get_call(session, case.call_id)
    months = months or int(call.details.get("term_months") or 36)
    if not 1 <= months <= 120:
        problems.append(("months", "the term is 1 to 120 months"))
    invalid(problems)
    start = starts_on or workdays.shanghai_date(utcnow())
    end = workdays.add_months(start, months)
    clean = {"data_scope": scope, "use_boundary": text(terms["use_boundary"]),
             "development_duties": text(terms["development_duties"]), "quality": text(terms["quality"]),
             "revenue_share_bp": bp, "exit_terms": text(terms["exit_terms"]),
             "security_duties": text(terms["security_duties"]),
             "security_officer": {"name": text(officer["name"]), "contact": text(officer.get("contact"))},
             "term_months": months, "industry": case.facts.get("industry", "")}
    body = _agreement_text(case, org_of(session, case.facts["operator_org_id"]),
                           org_of(session, case.applicant_org_id), clean, start, end)
    from authops.platform.governance import agreements

    agreement = agreements.create(session, kind=AGREEMENT_KIND, party_a_org_id=case.facts["operator_org_id"],
                                  party_b_org_id=case.applicant_org_id, terms=clean, starts_on=start, ends_on=end,
                                  actor=who, case_id=case.id, text=body)
    workflow.transition(session, case, "offer_agreement", actor=who, awaiting_orgs=[case.applicant_org_id],
                        due_at=None, facts={"agreement_id": agreement.id, "agreement_number": agreement.number},
                        data={"agreement": agreement.number, "text_sha256": agreement.text_sha256})
    accept(session, agreement, who, ip=ip)
    return agreement


def partner_agreement_for_case(session: Session, case: Case) -> Agreement:
    agreement = session.get(Agreement, case.facts.get("agreement_id") or 0)
    if agreement is None:
        raise NotFound(f"{case.number} has no partner agreement yet")
    return agreement


def sign(session: Session, case: Case, *, actor: audit_log.Actor | Principal, text_sha256: str,
         ip: str | None = None) -> Agreement:
    """The partner accepts the agreement's exact text (it sends the hash of what it read)."""
    who = actor_of(actor)
    MACHINE.step(case.state, "sign", number=case.number)
    workflow.ensure_applicant(case, who)
    agreement = partner_agreement_for_case(session, case)
    if text_sha256 != agreement.text_sha256:
        raise Conflict(f"the text you accepted is not {agreement.number}'s text (its SHA-256 is "
                       f"{agreement.text_sha256}); read the current text and accept that",
                       code="text_mismatch", details={"field": "text_sha256"})
    accepted = session.exec(select(Acceptance).where(Acceptance.agreement_id == agreement.id,
                                                     Acceptance.org_id == who.org_id)).first()
    if accepted is None:  # it may have accepted through the generic agreements route already
        accept(session, agreement, who, ip=ip)
    workflow.transition(session, case, "sign", actor=who, data={"agreement": agreement.number,
                                                                "text_sha256": agreement.text_sha256})
    return agreement


def accept(session: Session, agreement: Agreement, actor: audit_log.Actor | Principal,
           ip: str | None = None) -> Acceptance:
    """One side's electronic acceptance of the agreement's exact text (agreements.accept)."""
    from authops.platform.governance import agreements

    return agreements.accept(session, agreement, actor, ip=ip, text_sha256=agreement.text_sha256)


def active_partner_agreement(session: Session, partner_org_id: int, at: datetime | None = None) -> Agreement | None:
    """The partner agreement in force for this partner now (or at `at`), if any."""
    from authops.platform.governance import agreements

    return agreements.get_active(session, AGREEMENT_KIND, party_b=partner_org_id, at=at)


def require_partner_agreement(session: Session, partner_org_id: int) -> Agreement:
    agreement = active_partner_agreement(session, partner_org_id)
    if agreement is None:
        raise Forbidden("your organisation has no active partner agreement; apply to an operator's partner call "
                        "and sign the agreement first", code="no_partner_agreement")
    return agreement


def agreement_view(agreement: Agreement, session: Session) -> dict[str, Any]:
    acc = session.exec(select(Acceptance).where(Acceptance.agreement_id == agreement.id).order_by(Acceptance.id))
    return {"id": agreement.id, "number": agreement.number, "state": agreement.state,
            "operator_org_id": agreement.party_a_org_id, "partner_org_id": agreement.party_b_org_id,
            "terms": agreement.terms, "text": agreement.text, "text_sha256": agreement.text_sha256,
            "starts_on": agreement.starts_on, "ends_on": agreement.ends_on,
            "acceptances": [{"org_id": a.org_id, "by": a.actor_name, "at": a.at, "at_local": show(a.at),
                             "text_sha256": a.text_sha256} for a in acc]}


# --- visibility ------------------------------------------------------------------------------------

def visible(case: Case, org_id: int | None, *, cross_org: bool = False) -> bool:
    """The applicant, the call's operator, appointed experts and (cross-org) the bureau see a case."""
    if case.kind != KIND:
        return False
    if org_id == case.applicant_org_id:
        return True
    if case.state == "draft":
        return False
    return cross_org or org_id == case.facts.get("operator_org_id") or org_id in case.facts.get("experts", [])


def list_cases(session: Session, org_id: int | None, *, cross_org: bool = False,
               state: str | None = None) -> list[Case]:
    q = select(Case).where(Case.kind == KIND).order_by(Case.id)
    if state:
        q = q.where(Case.state == state)
    return [c for c in session.exec(q) if visible(c, org_id, cross_org=cross_org)]
