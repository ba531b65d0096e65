"""Scenario applications and the three-level review (BRIEF.md section 5).

A partner under an active partner agreement drafts an application with every part the plan lists
(goal, resources and fields needed, product design, processing method, security measures, technical
route, expected benefit) and submits it. Review runs provider department(s) → expert committee →
bureau; no level can be skipped. Each reviewer approves, rejects or returns with written reasons; a
returned application, once revised, comes back to the stage that returned it (approvals of earlier
stages stand) with fresh deadlines. Every stage has a deadline in working days; overdue reviews are
flagged. The bureau's approval opens the partner's sandbox workspace with exactly the approved
resources, fields and share modes and sets the approved privacy budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.data.schema import ShareMode
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import get_settings
from authops.platform.governance import partners, workflow
from authops.platform.governance.models import Case
from authops.platform.governance.partners import actor_of, invalid, text
from authops.platform.governance.workflow import Machine, Step, WrongReviewer

KIND = "scenario"
STAGES = {"provider_review": "provider", "expert_review": "expert", "bureau_review": "bureau"}
PARTS = {
    "goal": "the scenario's goal",
    "product_design": "the product design",
    "processing_method": "the processing method",
    "security_measures": "the security measures",
    "technical_route": "the technical route",
    "expected_benefit": "the expected benefit",
}
DECISIONS = ("approve", "reject", "return")
MAX_EPSILON = 1000.0

MACHINE = workflow.register(Machine(
    kind=KIND, prefix="SC", initial="draft", zh="场景申请", en="scenario application",
    states=("draft", "provider_review", "expert_review", "bureau_review", "returned", "approved", "rejected",
            "withdrawn"),
    steps=(
        Step("submit", ("draft",), "provider_review", by="applicant", zh="提交场景申请"),
        # Back to the stage that returned it: the service gives the target.
        Step("resubmit", ("returned",), "provider_review", by="applicant", zh="修改后重新提交"),
        # One department's approval; the last one moves the case on to the expert stage.
        Step("provider_approve", ("provider_review",), "provider_review", zh="数源部门同意"),
        Step("provider_reject", ("provider_review",), "rejected", needs_reason=True, zh="数源部门不同意"),
        Step("provider_return", ("provider_review",), "returned", needs_reason=True, zh="数源部门退回修改"),
        Step("appoint_experts", ("provider_review", "expert_review"), "expert_review", zh="组成专家委员会"),
        # One expert's vote; the vote reaching the quorum carries the committee's decision.
        Step("expert_approve", ("expert_review",), "expert_review", zh="专家同意"),
        Step("expert_reject", ("expert_review",), "expert_review", needs_reason=True, zh="专家不同意"),
        Step("expert_return", ("expert_review",), "expert_review", needs_reason=True, zh="专家建议退回修改"),
        Step("bureau_approve", ("bureau_review",), "approved", zh="数据局终审通过"),
        Step("bureau_reject", ("bureau_review",), "rejected", needs_reason=True, zh="数据局终审不通过"),
        Step("bureau_return", ("bureau_review",), "returned", needs_reason=True, zh="数据局退回修改"),
        Step("withdraw", ("draft", "provider_review", "expert_review", "bureau_review", "returned"), "withdrawn",
             by="applicant", zh="撤回"),
        Step("flag_overdue", tuple(STAGES), "provider_review", by="system", zh="标记逾期"),
    ),
    final=frozenset({"approved", "rejected", "withdrawn"}),
))


# --- drafting and validating -----------------------------------------------------------------------

def draft(session: Session, *, actor: audit_log.Actor | Principal, title: str, payload: dict[str, Any]) -> Case:
    """A partner with an active partner agreement starts an application (checked in full on submit)."""
    who = actor_of(actor)
    partners.require_kind(session, who.org_id, OrgKind.PARTNER, doing="a scenario application")
    agreement = partners.require_partner_agreement(session, int(who.org_id))
    if not isinstance(payload, dict):
        raise InvalidInput("payload must be an object with the application's parts", details={"field": "payload"})
    return workflow.open_case(session, kind=KIND, applicant_org_id=int(who.org_id), title=title, payload=payload,
                              actor=who, awaiting_orgs=[int(who.org_id)],
                              facts={"partner_agreement": agreement.number})


def validate(session: Session, payload: dict[str, Any], scope: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every part present, every resource, field and share mode known and allowed, within the partner
    agreement's data scope; returns the normalised data request or raises naming every problem."""
    from authops.platform.catalog import service as catalog

    problems: list[tuple[str, str]] = []
    for part, what in PARTS.items():
        if not text(payload.get(part)):
            problems.append((f"payload.{part}", f"missing: describe {what}"))
    items = payload.get("resources")
    request: list[dict[str, Any]] = []
    if not isinstance(items, list) or not items:
        problems.append(("payload.resources", "missing: list the resources needed, each with its fields, "
                                              "share modes and requested privacy budget epsilon"))
        items = []
    in_scope = {s["resource"]: s for s in scope}
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"payload.resources[{i}]"
        if not isinstance(item, dict):
            problems.append((where, "each resource is {resource, fields, share_modes, epsilon}"))
            continue
        code = text(item.get("resource"))
        if not code:
            problems.append((f"{where}.resource", "missing: the resource code"))
            continue
        try:
            res = catalog.get_resource(session, code)
        except NotFound:
            problems.append((f"{where}.resource", f"no data resource with code {code!r}"))
            continue
        if code in seen:
            problems.append((f"{where}.resource", f"{code} is listed twice"))
            continue
        seen.add(code)
        names = catalog.schema_of(session, res).names
        fields = item.get("fields")
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
            problems.append((f"{where}.fields", f"missing: name the fields of {code} you need"))
            fields = []
        unknown = [f for f in fields if f not in names]
        if unknown:
            problems.append((f"{where}.fields", f"{code} has no field {', '.join(unknown)}"))
        modes = item.get("share_modes")
        if not isinstance(modes, list) or not modes:
            problems.append((f"{where}.share_modes", f"missing: name how {code} is shared (verify, query, batch)"))
            modes = []
        bad = [m for m in modes if m not in {s.value for s in ShareMode}]
        if bad:
            problems.append((f"{where}.share_modes", f"{bad[0]!r} is not a share mode; use verify, query or batch"))
        beyond = [m for m in modes if m not in bad and m not in res.share_modes]
        if beyond:
            problems.append((f"{where}.share_modes", f"{code} is registered for {', '.join(res.share_modes)} "
                                                     f"only, not {', '.join(beyond)}"))
        eps = item.get("epsilon")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) \
                or not 0 < eps <= MAX_EPSILON:
            problems.append((f"{where}.epsilon", f"the privacy budget requested for {code}: a number above 0 and "
                                                 f"at most {MAX_EPSILON:g}"))
            eps = None
        allowed = in_scope.get(code)
        if allowed is None:
            problems.append((f"{where}.resource", f"{code} is outside your partner agreement's data scope"))
        else:
            if "*" not in allowed["fields"]:
                outside = [f for f in fields if f in names and f not in allowed["fields"]]
                if outside:
                    problems.append((f"{where}.fields", f"{', '.join(outside)} of {code} are outside your partner "
                                                        "agreement's data scope"))
            outside_modes = [m for m in modes if m not in allowed["share_modes"] and m not in bad and m not in beyond]
            if outside_modes:
                problems.append((f"{where}.share_modes", f"{', '.join(outside_modes)} of {code} is outside your "
                                                         "partner agreement's data scope"))
        request.append({"resource": code, "fields": sorted(set(fields)), "share_modes": sorted(set(modes)),
                        "epsilon": float(eps) if eps is not None else None, "provider_org_id": res.org_id})
    invalid(problems)
    return request


def _departments(request: list[dict[str, Any]]) -> list[int]:
    return sorted({int(r["provider_org_id"]) for r in request})


def _wider(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[str]:
    """What the new request asks for that the old one did not (resources, fields, modes, more epsilon)."""
    before = {r["resource"]: r for r in old}
    out = []
    for r in new:
        o = before.get(r["resource"])
        if o is None:
            out.append(r["resource"])
        elif not set(r["fields"]) <= set(o["fields"]) or not set(r["share_modes"]) <= set(o["share_modes"]) \
                or r["epsilon"] > o["epsilon"]:
            out.append(r["resource"])
    return out


# --- stages ----------------------------------------------------------------------------------------

def _committee(session: Session, case: Case) -> list[int]:
    return list(case.facts.get("experts") or partners.expert_org_ids(session))


def _enter(session: Session, case: Case, state: str) -> dict[str, Any]:
    """Who must act and by when as the case enters a review stage (transition kwargs)."""
    if state == "provider_review":
        return {"awaiting_orgs": case.facts["departments"], "due_at": partners.stage_deadline("provider")}
    if state == "expert_review":
        experts = _committee(session, case)
        return {"awaiting_orgs": experts, "due_at": partners.stage_deadline("expert"), "facts": {"experts": experts}}
    return {"awaiting_orgs": partners.bureau_org_ids(session), "due_at": partners.stage_deadline("bureau")}


def submit(session: Session, case: Case, *, actor: audit_log.Actor | Principal,
           payload: dict[str, Any] | None = None) -> Case:
    """Submit a draft, or a revision of a returned application (it goes back to the stage that returned
    it; a revision asking for more data than the departments approved goes back to them)."""
    who = actor_of(actor)
    workflow.ensure_applicant(case, who)
    if case.state not in ("draft", "returned"):
        MACHINE.step(case.state, "submit", number=case.number)
    agreement = partners.require_partner_agreement(session, case.applicant_org_id)
    body = case.payload if payload is None else payload
    if not isinstance(body, dict):
        raise InvalidInput("payload must be an object with the application's parts", details={"field": "payload"})
    request = validate(session, body, agreement.terms.get("data_scope", []))
    case.payload = body
    facts = {"request": request, "departments": _departments(request), "partner_agreement": agreement.number}
    if case.state == "draft":
        case.facts = {**case.facts, **facts}
        workflow.transition(session, case, "submit", actor=who, **_enter(session, case, "provider_review"))
        return case
    back = case.facts.get("returned_from", "provider_review")
    reason = ""
    wider = _wider(request, case.facts.get("provider_approved_request") or [])
    if back != "provider_review" and wider:
        reason = (f"the revision asks for more of {', '.join(wider)} than the provider departments approved; "
                  "they review it again")
        back = "provider_review"
    case.facts = {**case.facts, **facts}
    case.round += 1
    kwargs = _enter(session, case, back)
    extra = kwargs.pop("facts", {})
    workflow.transition(session, case, "resubmit", actor=who, target=back, reason=reason,
                        facts={**extra, "resubmitted_to": back}, data={"to_stage": STAGES[back]}, **kwargs)
    return case


def _check_decision(decision: str, reasons: str) -> None:
    if decision not in DECISIONS:
        raise InvalidInput("decision must be approve, reject or return", details={"field": "decision"})
    if decision != "approve" and not text(reasons):
        raise InvalidInput(f"{decision} needs written reasons", details={"field": "reasons"})


def _return_kwargs(case: Case, stage_state: str) -> dict[str, Any]:
    return {"awaiting_orgs": [case.applicant_org_id], "due_at": None, "facts": {"returned_from": stage_state}}


def provider_review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
                    reasons: str = "") -> Case:
    """A department whose resources are requested approves, rejects or returns; all must approve."""
    who = actor_of(actor)
    _check_decision(decision, reasons)
    MACHINE.step(case.state, f"provider_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    if who.org_id not in case.facts.get("departments", []):
        raise WrongReviewer(f"{case.number} requests no resources of your department; the departments whose "
                            "resources it requests review it", details={"case": case.number})
    partners.one_per_org(session, case, "provider", who.org_id)
    workflow.record_review(session, case, stage="provider", actor=who, decision=decision, reasons=reasons)
    if decision == "return":
        workflow.transition(session, case, "provider_return", actor=who, reason=reasons,
                            **_return_kwargs(case, "provider_review"))
        return case
    if decision == "reject":
        workflow.transition(session, case, "provider_reject", actor=who, reason=reasons)
        return case
    approved = {r.reviewer_org_id for r in workflow.reviews(session, case, "provider", case.round)
                if r.decision == "approve"}
    pending = [d for d in case.facts["departments"] if d not in approved]
    if pending:
        workflow.transition(session, case, "provider_approve", actor=who, reason=reasons,
                            target="provider_review", awaiting_orgs=pending,
                            data={"pending_departments": ",".join(map(str, pending))})
        return case
    kwargs = _enter(session, case, "expert_review")
    facts = {**kwargs.pop("facts"), "provider_approved_request": case.facts["request"]}
    workflow.transition(session, case, "provider_approve", actor=who, reason=reasons, target="expert_review",
                        facts=facts, **kwargs)
    return case


def appoint_experts(session: Session, case: Case, *, actor: audit_log.Actor | Principal,
                    expert_org_ids: Iterable[int]) -> Case:
    """The bureau names the expert committee of a case (default: every expert organisation)."""
    who = actor_of(actor)
    MACHINE.step(case.state, "appoint_experts", number=case.number)
    workflow.ensure_not_applicant(case, who)
    partners.require_kind(session, who.org_id, OrgKind.BUREAU, doing="appointing the expert committee")
    ids = partners.check_experts(session, expert_org_ids)
    if case.state == "expert_review" and _votes(session, case):
        raise Conflict(f"experts already voted on {case.number} in this round; the committee cannot change now",
                       code="committee_voting")
    kwargs: dict[str, Any] = {"awaiting_orgs": ids} if case.state == "expert_review" else {}
    workflow.transition(session, case, "appoint_experts", actor=who, target=case.state, facts={"experts": ids},
                        data={"experts": ",".join(map(str, ids))}, **kwargs)
    return case


def _votes(session: Session, case: Case) -> list:
    return [r for r in workflow.reviews(session, case, "expert", case.round) if r.decision in DECISIONS]


def tally(session: Session, case: Case) -> dict[str, Any]:
    """The committee's votes this round and what they decide (None until the quorum is reached)."""
    s = get_settings()
    votes = _votes(session, case)
    counts = {d: sum(1 for v in votes if v.decision == d) for d in DECISIONS}
    n = len(votes)
    outcome = None
    if n >= s.committee_quorum:
        if counts["approve"] / n > s.committee_majority:
            outcome = "approve"
        elif counts["return"] / n > s.committee_majority:
            outcome = "return"
        else:
            outcome = "reject"
    return {"votes": n, **counts, "quorum": s.committee_quorum, "majority": s.committee_majority,
            "outcome": outcome}


def expert_review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
                  reasons: str = "", score: int | None = None) -> Case:
    """One committee expert's vote (once per round); the vote reaching the quorum decides: approvals above
    the majority share approve, returns above it return, anything else (a tie, a minority) rejects."""
    who = actor_of(actor)
    _check_decision(decision, reasons)
    MACHINE.step(case.state, f"expert_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    if who.org_id not in case.facts.get("experts", []):
        raise WrongReviewer(f"your organisation is not on the expert committee of {case.number}",
                            details={"case": case.number})
    workflow.record_review(session, case, stage="expert", actor=who, decision=decision, reasons=reasons,
                           score=score)
    t = tally(session, case)
    data = {k: t[k] for k in ("votes", "approve", "reject", "return")}
    if t["outcome"] is None:
        workflow.transition(session, case, f"expert_{decision}", actor=who, reason=reasons, target="expert_review",
                            data=data)
        return case
    summary = (f"committee decided {t['outcome']}: {t['approve']} approve, {t['reject']} reject, {t['return']} "
               f"return of {t['votes']} votes (quorum {t['quorum']}, majority above {t['majority']:.0%})")
    why = "\n".join(f"- {v.reviewer_name} ({v.decision}): {v.reasons}" for v in _votes(session, case)
                    if v.decision == t["outcome"] and v.reasons)
    reason = summary + ("\n" + why if why else "")
    data["outcome"] = t["outcome"]
    if t["outcome"] == "approve":
        workflow.transition(session, case, f"expert_{decision}", actor=who, reason=reason, target="bureau_review",
                            data=data, **_enter(session, case, "bureau_review"))
    elif t["outcome"] == "return":
        workflow.transition(session, case, f"expert_{decision}", actor=who, reason=reason, target="returned",
                            data=data, **_return_kwargs(case, "expert_review"))
    else:
        workflow.transition(session, case, f"expert_{decision}", actor=who, reason=reason, target="rejected",
                            data=data)
    return case


def _narrow(case: Case, approved_scope: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The bureau may approve less than requested: a subset of resources, fields, modes, and epsilon."""
    request = case.facts["request"]
    if approved_scope is None:
        return request
    asked = {r["resource"]: r for r in request}
    problems: list[tuple[str, str]] = []
    out = []
    if not approved_scope:
        problems.append(("approved_scope", "approve at least one resource, or reject the application"))
    for i, item in enumerate(approved_scope):
        where = f"approved_scope[{i}]"
        code = text(item.get("resource")) if isinstance(item, dict) else ""
        r = asked.get(code)
        if r is None:
            problems.append((f"{where}.resource", f"{code!r} was not requested; approve only what was asked for"))
            continue
        fields = item.get("fields") or r["fields"]
        modes = item.get("share_modes") or r["share_modes"]
        eps = item.get("epsilon", r["epsilon"])
        if not set(fields) <= set(r["fields"]):
            problems.append((f"{where}.fields", f"{code}: only requested fields can be approved"))
        if not set(modes) <= set(r["share_modes"]):
            problems.append((f"{where}.share_modes", f"{code}: only requested share modes can be approved"))
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= r["epsilon"]:
            problems.append((f"{where}.epsilon", f"{code}: epsilon above 0 and at most the {r['epsilon']:g} requested"))
        out.append({**r, "fields": sorted(set(fields)), "share_modes": sorted(set(modes)), "epsilon": eps})
    invalid(problems)
    return out


def _grant(session: Session, case: Case, scope: list[dict[str, Any]], who: audit_log.Actor) -> int:
    """Open the partner's workspace with exactly the approved grants and set the approved budgets."""
    from authops.platform.sandbox import workspace as ws_service
    from authops.policies import budget

    ws = ws_service.create_workspace(
        session, org_id=case.applicant_org_id, name=case.title, scenario=case.title, approval_ref=case.number,
        grants=[{"resource": r["resource"], "fields": r["fields"], "share_modes": r["share_modes"]} for r in scope],
        actor=who)
    for r in scope:
        current = [b for b in budget.balances(session, case.applicant_org_id, r["resource"])
                   if b["period"] != "lifetime"]
        cap = (current[0]["epsilon_cap"] if current else 0.0) + float(r["epsilon"])
        budget.set_budget(session, org_id=case.applicant_org_id, resource_code=r["resource"], epsilon=cap,
                          actor=who, note=f"scenario {case.number}: +{r['epsilon']:g}")
    return int(ws.id)


def bureau_review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
                  reasons: str = "", approved_scope: list[dict[str, Any]] | None = None) -> Case:
    """The bureau decides last; approval opens the workspace with exactly the approved scope."""
    who = actor_of(actor)
    _check_decision(decision, reasons)
    MACHINE.step(case.state, f"bureau_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    partners.require_kind(session, who.org_id, OrgKind.BUREAU, doing="the bureau's final review")
    partners.one_per_org(session, case, "bureau", who.org_id)
    if decision == "approve":
        scope = _narrow(case, approved_scope)
        workflow.record_review(session, case, stage="bureau", actor=who, decision=decision, reasons=reasons)
        ws_id = _grant(session, case, scope, who)
        workflow.transition(session, case, "bureau_approve", actor=who, reason=reasons,
                            facts={"approved_scope": scope, "workspace_id": ws_id},
                            data={"workspace_id": ws_id, "narrowed": approved_scope is not None})
        return case
    workflow.record_review(session, case, stage="bureau", actor=who, decision=decision, reasons=reasons)
    if decision == "return":
        workflow.transition(session, case, "bureau_return", actor=who, reason=reasons,
                            **_return_kwargs(case, "bureau_review"))
    else:
        workflow.transition(session, case, "bureau_reject", actor=who, reason=reasons)
    return case


def withdraw(session: Session, case: Case, *, actor: audit_log.Actor | Principal, reason: str = "") -> Case:
    workflow.transition(session, case, "withdraw", actor=actor, reason=reason)
    return case


# --- deadlines -------------------------------------------------------------------------------------

FLAGGED_KINDS = ("scenario", "partner_application", "tool_deployment")


def overdue_cases(session: Session, now: datetime | None = None, kinds: Iterable[str] | None = None) -> list[Case]:
    """Open cases whose current review is past its deadline (any kind, or the kinds given)."""
    now = now or utcnow()
    q = select(Case).where(Case.due_at.is_not(None), Case.due_at < now, Case.decided_at.is_(None))
    if kinds is not None:
        q = q.where(Case.kind.in_(list(kinds)))
    return list(session.exec(q.order_by(Case.due_at)))


def flag_overdue(session: Session, now: datetime | None = None) -> list[Case]:
    """The platform's sweep: record an 'overdue' flag in each overdue review's facts (state unchanged,
    once per stage and round) so the to-do lists and the history show it."""
    now = now or utcnow()
    out = []
    for case in overdue_cases(session, now, FLAGGED_KINDS):
        workflow.machine(case.kind)  # make sure the kind's machine is registered
        if partners.flag_overdue_case(session, case, now):
            out.append(case)
    return out


# --- visibility ------------------------------------------------------------------------------------

def visible(case: Case, org_id: int | None, *, cross_org: bool = False) -> bool:
    """The applicant; the departments whose resources it requests; its expert committee; the bureau."""
    if case.kind != KIND:
        return False
    if org_id == case.applicant_org_id:
        return True
    if case.state == "draft":
        return False
    return cross_org or org_id in case.facts.get("departments", []) or org_id in case.facts.get("experts", [])


def get_visible(session: Session, case_id: int, org_id: int | None, *, cross_org: bool = False) -> Case:
    case = session.get(Case, case_id)
    if case is None or not visible(case, org_id, cross_org=cross_org):
        raise NotFound(f"no scenario application {case_id}")
    return case


def list_cases(session: Session, org_id: int | None, *, cross_org: bool = False, state: str | None = None,
               overdue_only: bool = False) -> list[Case]:
    q = select(Case).where(Case.kind == KIND).order_by(Case.id)
    if state:
        q = q.where(Case.state == state)
    now = utcnow()
    return [c for c in session.exec(q) if visible(c, org_id, cross_org=cross_org)
            and (not overdue_only or workflow.overdue(c, now))]


def view(session: Session, case: Case) -> dict[str, Any]:
    out = workflow.view(session, case)
    out["stage"] = STAGES.get(case.state)
    if case.state == "expert_review":
        out["committee"] = tally(session, case)
    return out
