"""Product registration and filing (BRIEF 5, 7): partner → operator check → bureau filing.

A partner drafts a product built in its own active workspace: the declarative spec (planned and
checked against the workspace grants exactly as a sandbox job is), the release policy it
implies, category and pricing (public-governance and public-welfare products are free), the
scenario, scope and manner of use, and the security self-review report, which the platform fills
from what it knows (selfreview.py) and the partner completes. Submission is refused while a
risk section is unanswered or an automated test failed.

The case (machine "product_registration") then goes to the operator named on it, which checks
it (approve / return / reject with reasons; it needs an active operator authorization), then to
the bureau, which files it and issues the registration number (SZDP-<year>-<nnnn>, sequential per
year); the product is then in the public catalogue with its price. A returned product comes
back, once revised and resubmitted, to the stage that returned it.

`guard_call` is what every product call passes: the product is registered, the customer holds an
active usage agreement, and for a product touching personal information the subject has a valid
consent. Each refusal is an audit event (outcome "denied") naming no raw subject ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.clock import show, utcnow
from authops.core.errors import AuthopsError, Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings, get_settings
from authops.platform.governance import agreements, selfreview, workdays, workflow
from authops.platform.governance.models import Agreement, Case, Consent, Product
from authops.platform.governance.workflow import Machine, Step
from authops.platform.identity.models import Organisation
from authops.sandbox.spec.scope import POLICY_SHARE_MODES

KIND = "product_registration"
CATEGORIES = ("industry", "public_governance", "public_welfare")
PRICE_UNITS = ("call", "record", "month", "batch")
CODE_RE = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
REGISTRATION_PREFIX = "SZDP"

MACHINE = workflow.register(Machine(
    kind=KIND, prefix="PR", initial="operator_check",
    states=("operator_check", "bureau_filing", "returned", "registered", "rejected", "withdrawn"),
    steps=(
        Step("operator_approve", ("operator_check",), "bureau_filing", zh="运营机构审核通过"),
        Step("operator_return", ("operator_check",), "returned", needs_reason=True, zh="运营机构退回修改"),
        Step("operator_reject", ("operator_check",), "rejected", needs_reason=True, zh="运营机构驳回"),
        Step("bureau_file", ("bureau_filing",), "registered", zh="数据局备案登记"),
        Step("bureau_return", ("bureau_filing",), "returned", needs_reason=True, zh="数据局退回修改"),
        Step("bureau_reject", ("bureau_filing",), "rejected", needs_reason=True, zh="数据局不予备案"),
        Step("resubmit", ("returned",), "operator_check", by="applicant", zh="修改后重新提交"),
        Step("withdraw", ("operator_check", "bureau_filing", "returned"), "withdrawn", by="applicant", zh="撤回"),
    ),
    final=frozenset({"registered", "rejected", "withdrawn"}), zh="数据产品登记备案", en="Product registration"))

# Product.state for each case state.
PRODUCT_STATE = {"operator_check": "submitted", "bureau_filing": "submitted", "returned": "returned",
                 "registered": "registered", "rejected": "rejected", "withdrawn": "withdrawn"}



def _org(session: Session, org_id: int | None) -> Organisation | None:
    return session.get(Organisation, org_id) if org_id else None


def _is_bureau(session: Session, org_id: int | None) -> bool:
    org = _org(session, org_id)
    return org is not None and OrgKind(org.kind) == OrgKind.BUREAU


def _bureaus(session: Session) -> list[int]:
    return [o.id for o in session.exec(select(Organisation).where(Organisation.kind == OrgKind.BUREAU.value,
                                                                  Organisation.is_active == True))]  # noqa: E712


# --- reading --------------------------------------------------------------------------------------

def get_product(session: Session, product_id: int, *, org_id: int | None = None) -> Product:
    """The product as `org_id` may see it (NotFound otherwise; no org_id: no check).

    Registered products are public. Otherwise: the partner that built it; once submitted, the
    operator that checks it and the bureau."""
    p = session.get(Product, product_id)
    if p is None:
        raise NotFound(f"no product {product_id}")
    if org_id is None or can_see_all(session, p, org_id) or p.state == "registered":
        return p
    raise NotFound(f"no product {product_id}")


def can_see_all(session: Session, p: Product, org_id: int | None) -> bool:
    """The partner, and once submitted its operator and the bureau, see the whole file."""
    if org_id == p.partner_org_id:
        return True
    if p.case_id is None:
        return False
    return org_id == p.operator_org_id or _is_bureau(session, org_id)


def visible(session: Session, org_id: int) -> list[Product]:
    rows = session.exec(select(Product).order_by(Product.id))
    return [p for p in rows if p.state == "registered" or can_see_all(session, p, org_id)]


def price_text(p: Product) -> str:
    if p.price_fen == 0:
        return "免费 free"
    return f"{agreements.yuan(p.price_fen)} 元/{p.price_unit}"


def public_view(session: Session, p: Product) -> dict[str, Any]:
    partner, operator = _org(session, p.partner_org_id), _org(session, p.operator_org_id)
    return {"id": p.id, "code": p.code, "registration_number": p.registration_number, "name_zh": p.name_zh,
            "name_en": p.name_en, "category": p.category, "share_mode": p.share_mode,
            "release_policy": p.release_policy, "personal_information": p.personal_information,
            "consent_required": p.needs_consent,
            "name": p.name_zh, "price_fen": p.price_fen, "price_yuan": agreements.yuan(p.price_fen),
            "price_unit": p.price_unit, "price": price_text(p), "free": p.price_fen == 0,
            "pricing_basis": p.pricing_basis, "scope_of_use": p.scope_of_use, "manner_of_use": p.manner_of_use,
            "scenario": (p.self_review.get("product") or {}).get("scenario", ""),
            "partner": partner.name_zh if partner else None, "operator": operator.name_zh if operator else None,
            "state": p.state, "registered_at": p.registered_at, "registered_at_local": show(p.registered_at)}


def view(session: Session, p: Product, org_id: int | None = None) -> dict[str, Any]:
    out = public_view(session, p)
    if org_id is None or can_see_all(session, p, org_id):
        case = session.get(Case, p.case_id) if p.case_id else None
        out.update(partner_org_id=p.partner_org_id, operator_org_id=p.operator_org_id, workspace_id=p.workspace_id,
                   scenario_case_id=p.scenario_case_id, spec=p.spec, self_review=p.self_review,
                   blocking=selfreview.problems(p.self_review) if p.self_review else [],
                   case=workflow.view(session, case) if case is not None else None)
    return out


def public_catalogue(session: Session) -> list[dict[str, Any]]:
    """Every registered product with its registration number and price, for the public disclosure."""
    rows = session.exec(select(Product).where(Product.state == "registered")
                        .order_by(Product.registration_number))
    return [public_view(session, p) for p in rows]


# --- drafting -------------------------------------------------------------------------------------

def _planned(session: Session, ws, spec: Any):
    from authops.platform.sandbox import jobs as sandbox_jobs
    from authops.platform.sandbox import workspace as ws_service

    if spec is None or spec == {} or spec == "":
        raise InvalidInput("the product needs its spec (a declarative sandbox job spec)", details={"field": "spec"})
    document = spec if isinstance(spec, dict) else sandbox_jobs._parse(spec)
    planned = sandbox_jobs.Planned(session, "spec", document, None)
    allowed, modes = ws_service.scope(session, ws)
    problems = planned.scope_problems(allowed, modes)
    if problems:
        raise ws_service.OutOfScope(f"the spec {planned.name!r} reaches outside workspace {ws.id}'s approved scope: "
                                    + "; ".join(problems[:3])
                                    + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""),
                                    details={"field": "spec", "problems": problems})
    return document, planned


def _release_policy(planned, share_mode: str | None) -> tuple[str, str]:
    policies = sorted({o.policy for o in planned.outputs.values()})
    if len(policies) != 1:
        raise InvalidInput(f"a product releases one kind of answer; this spec's outputs use {', '.join(policies)}: "
                           "register each kind as its own product", details={"field": "spec"})
    policy = policies[0]
    allowed = sorted(m.value for m in POLICY_SHARE_MODES[policy])
    mode = share_mode or ("verify" if policy == "verify" else "query")
    if mode not in allowed:
        raise InvalidInput(f"share_mode {mode!r} does not fit a {policy} product; use {' or '.join(allowed)}",
                           details={"field": "share_mode"})
    return policy, mode


def _check_pricing(category: str, price_fen: Any, price_unit: str, pricing_basis: str) -> None:
    if category not in CATEGORIES:
        raise InvalidInput(f"category must be one of {', '.join(CATEGORIES)}", details={"field": "category"})
    if not isinstance(price_fen, int) or isinstance(price_fen, bool) or price_fen < 0:
        raise InvalidInput("price_fen is a whole number of fen, 0 or more", details={"field": "price_fen"})
    if category != "industry" and price_fen != 0:
        raise InvalidInput(f"{category} products are free (BRIEF 7): price_fen must be 0",
                           details={"field": "price_fen"})
    if price_unit not in PRICE_UNITS:
        raise InvalidInput(f"price_unit must be one of {', '.join(PRICE_UNITS)}", details={"field": "price_unit"})
    if not pricing_basis.strip():
        raise InvalidInput("state the pricing basis (pricing_basis): how the price was set",
                           details={"field": "pricing_basis"})


def _operator_for(session: Session, partner_org_id: int, operator_org_id: int | None) -> int:
    if operator_org_id is None:
        pa = agreements.get_active(session, "partner", party_b=partner_org_id)
        if pa is None:
            raise InvalidInput("name the operator that checks this product (operator_org_id): you have no active "
                               "partner agreement to take it from", details={"field": "operator_org_id"})
        return pa.party_a_org_id
    org = _org(session, operator_org_id)
    if org is None or OrgKind(org.kind) != OrgKind.OPERATOR:
        raise InvalidInput(f"operator_org_id {operator_org_id} is not an operator",
                           details={"field": "operator_org_id"})
    return operator_org_id


def _scenario_case(session: Session, partner_org_id: int, case_id: int | None) -> Case | None:
    if case_id is None:
        return None
    case = session.get(Case, case_id)
    if case is None or case.applicant_org_id != partner_org_id or not case.kind.startswith("scenario"):
        raise InvalidInput(f"scenario_case_id {case_id} is not one of your scenario applications",
                           details={"field": "scenario_case_id"})
    if case.state != "approved":
        raise InvalidInput(f"scenario application {case.number} is {case.state}; a product serves an approved "
                           "scenario", details={"field": "scenario_case_id"})
    return case


def _text(value: Any, field: str, what: str, required: bool = True, limit: int = 10_000) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} is text", details={"field": field})
    if required and not value.strip():
        raise InvalidInput(f"{what} ({field}) is required", details={"field": field})
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; at most {limit}", details={"field": field})
    return value.strip()


def _fill(session: Session, settings: Settings, p: Product, data: dict[str, Any]) -> None:
    """Validate the draft's fields (all of them, as they stand) and rebuild the self-review report."""
    from authops.platform.sandbox import workspace as ws_service

    ws = ws_service.get_workspace(session, data["workspace_id"], org_id=p.partner_org_id)
    if ws.state != "active":
        raise Conflict(f"workspace {ws.id} is {ws.state}; a product is registered from an active workspace")
    document, planned = _planned(session, ws, data.get("spec"))
    policy, mode = _release_policy(planned, data.get("share_mode"))
    _check_pricing(data["category"], data["price_fen"], data["price_unit"], data["pricing_basis"])
    scenario_case = _scenario_case(session, p.partner_org_id, data.get("scenario_case_id"))
    scenario = _text(data.get("scenario"), "scenario", "the scenario the product serves", required=False) or (
        scenario_case.title if scenario_case else ws.scenario)
    if not scenario:
        raise InvalidInput("describe the scenario the product serves (scenario), or give scenario_case_id",
                           details={"field": "scenario"})
    p.workspace_id = ws.id
    p.scenario_case_id = scenario_case.id if scenario_case else None
    p.name_zh = _text(data.get("name_zh"), "name_zh", "the product's Chinese name", limit=200)
    p.name_en = _text(data.get("name_en"), "name_en", "", required=False, limit=200)
    p.category, p.price_fen, p.price_unit = data["category"], data["price_fen"], data["price_unit"]
    p.pricing_basis = data["pricing_basis"].strip()
    p.scope_of_use = _text(data.get("scope_of_use"), "scope_of_use", "the scope of use")
    p.manner_of_use = _text(data.get("manner_of_use"), "manner_of_use", "the manner of use")
    p.release_policy, p.share_mode = policy, mode
    p.spec = document
    answers = selfreview.check_answers(data.get("self_review"))
    product = {"code": p.code, "name_zh": p.name_zh, "workspace_id": ws.id, "spec_name": planned.name,
               "release_policy": policy, "share_mode": mode, "category": p.category, "scenario": scenario,
               "scope_of_use": p.scope_of_use, "manner_of_use": p.manner_of_use}
    report = selfreview.build(session, settings, planned=planned, ws=ws, partner_org_id=p.partner_org_id,
                              product=product, answers=answers, test_params=data.get("test_params"))
    p.personal_information = bool(report["facts"]["personal_information"] or data.get("personal_information"))
    p.consent_required = bool(data.get("consent_required"))
    report["test_params"] = dict(data.get("test_params") or {})
    p.self_review = report


FIELDS = ("workspace_id", "name_zh", "name_en", "spec", "share_mode", "category", "price_fen", "price_unit",
          "pricing_basis", "scenario", "scenario_case_id", "scope_of_use", "manner_of_use", "self_review",
          "test_params", "personal_information", "consent_required")


def _data_of(p: Product) -> dict[str, Any]:
    """The draft's current fields, in the shape create_draft takes (for partial updates)."""
    sr = p.self_review or {}
    return {"workspace_id": p.workspace_id, "name_zh": p.name_zh, "name_en": p.name_en, "spec": p.spec,
            "share_mode": p.share_mode, "category": p.category, "price_fen": p.price_fen, "price_unit": p.price_unit,
            "pricing_basis": p.pricing_basis, "scenario": (sr.get("product") or {}).get("scenario"),
            "scenario_case_id": p.scenario_case_id, "scope_of_use": p.scope_of_use,
            "manner_of_use": p.manner_of_use, "test_params": sr.get("test_params") or {},
            "self_review": {k: v.get("answer", "") for k, v in (sr.get("sections") or {}).items()},
            "personal_information": p.personal_information, "consent_required": p.consent_required}


def create_draft(session: Session, *, partner_org_id: int, code: str, actor: audit_log.Actor | Principal,
                 settings: Settings | None = None, operator_org_id: int | None = None, **data: Any) -> Product:
    """A product draft with its self-review report filled in by the platform (not submitted yet)."""
    who = audit_log.as_actor(actor)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", details={"field": unknown[0]})
    if not isinstance(code, str) or not CODE_RE.match(code):
        raise InvalidInput("code is 3-64 characters of a-z, 0-9 and _, starting with a letter",
                           details={"field": "code"})
    if session.exec(select(Product.id).where(Product.code == code)).first() is not None:
        raise Conflict(f"a product with code {code!r} exists; choose another code", details={"field": "code"})
    if data.get("workspace_id") is None:
        raise InvalidInput("name the workspace the product was built in (workspace_id)",
                           details={"field": "workspace_id"})
    data = {"category": "industry", "price_unit": "call", "pricing_basis": "", "price_fen": 0, **data}
    p = Product(code=code, partner_org_id=partner_org_id, name_zh="", state="draft",
                operator_org_id=_operator_for(session, partner_org_id, operator_org_id))
    _fill(session, settings or get_settings(), p, data)
    session.add(p)
    session.flush()
    audit_log.record(session, who, "gov.product.draft", object_type="product", object_id=p.id,
                     details={"code": p.code, "after": "draft", "workspace_id": p.workspace_id,
                              "spec_sha256": p.self_review["facts"]["spec_sha256"]})
    return p


def update_draft(session: Session, p: Product, *, actor: audit_log.Actor | Principal,
                 settings: Settings | None = None, operator_org_id: int | None = None, **changes: Any) -> Product:
    """Change a draft or a returned product; the self-review report is rebuilt (tests re-run)."""
    who = audit_log.as_actor(actor)
    if who.org_id != p.partner_org_id:
        raise NotFound(f"no product {p.id}")
    if p.state not in ("draft", "returned"):
        raise Conflict(f"product {p.code} is {p.state}; only a draft or a returned product can be changed",
                       code="illegal_transition", details={"state": p.state})
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", details={"field": unknown[0]})
    data = _data_of(p)
    if "self_review" in changes and changes["self_review"] is not None:
        changes["self_review"] = {**data["self_review"], **selfreview.check_answers(changes["self_review"])}
    data.update({k: v for k, v in changes.items() if v is not None})
    if operator_org_id is not None:
        if p.case_id is not None and operator_org_id != p.operator_org_id:
            raise Conflict("the checking operator of a submitted product cannot change",
                           details={"field": "operator_org_id"})
        p.operator_org_id = _operator_for(session, p.partner_org_id, operator_org_id)
    _fill(session, settings or get_settings(), p, data)
    session.add(p)
    session.flush()
    audit_log.record(session, who, "gov.product.revise", object_type="product", object_id=p.id,
                     details={"code": p.code, "state": p.state, "fields": sorted(changes)[:20]})
    return p


class SelfReviewIncomplete(InvalidInput):
    code = "self_review_incomplete"


def submit(session: Session, p: Product, *, actor: audit_log.Actor | Principal,
           settings: Settings | None = None) -> Case:
    """File the product (or a returned product, revised) for checking; refused while the self-review
    report has an unanswered section or a failed test (the tests re-run now)."""
    who = audit_log.as_actor(actor)
    settings = settings or get_settings()
    if who.org_id != p.partner_org_id:
        raise NotFound(f"no product {p.id}")
    if p.state not in ("draft", "returned"):
        raise Conflict(f"product {p.code} is {p.state}; it was already submitted", code="illegal_transition",
                       details={"state": p.state})
    _fill(session, settings, p, _data_of(p))  # the grants, budgets and mock data may have changed
    blocking = selfreview.problems(p.self_review)
    if blocking:
        raise SelfReviewIncomplete("the security self-review is not complete: " + "; ".join(blocking),
                                   details={"problems": blocking})
    workflow_due = workdays.deadline(utcnow(), settings.review_provider_working_days)
    if p.case_id is None:
        case = workflow.open_case(session, kind=KIND, applicant_org_id=p.partner_org_id,
                                  title=f"{p.name_zh} ({p.code})", payload=_payload(p), actor=who,
                                  parent_case_id=p.scenario_case_id, awaiting_orgs=[p.operator_org_id],
                                  due_at=workflow_due, facts={"product_id": p.id})
        p.case_id = case.id
    else:
        case = workflow.get_case(session, p.case_id, kind=KIND)
        stage = case.facts.get("returned_from") or "operator_check"
        reason = ""
        if stage != "operator_check":
            changed = _changed_since_check(case, p)
            if changed:  # the operator checked something else: it checks again (like a scenario's wider request)
                stage = "operator_check"
                reason = (f"the revision changed the {', '.join(changed)} since the operator's check; "
                          "the operator checks it again")
        case.payload = _payload(p)
        workflow.transition(session, case, "resubmit", actor=who, target=stage, reason=reason,
                            data={"to_stage": stage},
                            awaiting_orgs=[p.operator_org_id] if stage == "operator_check" else _bureaus(session),
                            due_at=workdays.deadline(utcnow(), settings.review_provider_working_days
                                                     if stage == "operator_check"
                                                     else settings.review_bureau_working_days))
    p.state = PRODUCT_STATE[case.state]
    session.add(p)
    session.flush()
    return case


# What the operator's check covers: a revision changing any of these goes back to the operator.
CHECKED = {"price": ("price_fen", "price_unit", "category", "pricing_basis"),
           "spec": ("spec", "share_mode", "release_policy", "personal_information", "consent_required"),
           "scope of use": ("scope_of_use", "scenario_case_id"), "manner of use": ("manner_of_use",)}


def _checked_terms(p: Product) -> dict[str, str]:
    """A digest per checked part of the product, as the operator approved it."""
    import hashlib
    import json

    out = {}
    for part, fields in CHECKED.items():
        values = {f: getattr(p, f, None) for f in fields}
        out[part] = hashlib.sha256(json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
                                   .encode()).hexdigest()
    return out


def _changed_since_check(case: Case, p: Product) -> list[str]:
    """The checked parts that differ from what the operator approved (all of them if nothing was kept)."""
    approved = case.facts.get("operator_checked")
    now = _checked_terms(p)
    if not isinstance(approved, dict):
        return list(now)
    return [part for part, digest in now.items() if approved.get(part) != digest]


def _payload(p: Product) -> dict[str, Any]:
    return {"product_id": p.id, "code": p.code, "name_zh": p.name_zh, "category": p.category,
            "price_fen": p.price_fen, "price_unit": p.price_unit, "release_policy": p.release_policy,
            "spec_sha256": (p.self_review.get("facts") or {}).get("spec_sha256"),
            "self_review_generated_at": p.self_review.get("generated_at")}


def withdraw(session: Session, p: Product, *, actor: audit_log.Actor | Principal, reason: str = "") -> Case:
    case = _case(session, p)
    workflow.transition(session, case, "withdraw", actor=actor, reason=reason)
    p.state = "withdrawn"
    session.add(p)
    session.flush()
    return case


def _case(session: Session, p: Product) -> Case:
    if p.case_id is None:
        raise Conflict(f"product {p.code} has not been submitted yet", code="illegal_transition",
                       details={"state": p.state})
    return workflow.get_case(session, p.case_id, kind=KIND)


# --- reviewing ------------------------------------------------------------------------------------

DECISIONS = ("approve", "return", "reject")


def _decide(session: Session, p: Product, case: Case, *, stage: str, prefix: str, decision: str, reasons: str,
            actor: audit_log.Actor, next_orgs: list[int], due_days: int) -> Case:
    if decision not in DECISIONS:
        raise InvalidInput("decision must be approve, return or reject", details={"field": "decision"})
    MACHINE.step(case.state, f"{prefix}_{'file' if prefix == 'bureau' and decision == 'approve' else decision}",
                 number=case.number)  # refuse an illegal step before recording the review
    workflow.record_review(session, case, stage=stage, actor=actor, decision=decision, reasons=reasons)
    if decision == "approve":
        action = "bureau_file" if prefix == "bureau" else "operator_approve"
        data: dict[str, Any] = {}
        if prefix == "bureau":
            p.registration_number = _registration_number(session)
            p.registered_at = utcnow()
            data["registration_number"] = p.registration_number
        workflow.transition(session, case, action, actor=actor, reason=reasons, data=data, awaiting_orgs=next_orgs,
                            due_at=workdays.deadline(utcnow(), due_days) if next_orgs else None,
                            facts={"operator_checked": _checked_terms(p)} if prefix == "operator" else None)
    elif decision == "return":
        workflow.transition(session, case, f"{prefix}_return", actor=actor, reason=reasons,
                            awaiting_orgs=[p.partner_org_id], due_at=None, facts={"returned_from": stage})
        case.round += 1
        session.add(case)
    else:
        workflow.transition(session, case, f"{prefix}_reject", actor=actor, reason=reasons)
    p.state = PRODUCT_STATE[case.state]
    session.add(p)
    session.flush()
    return case


def operator_check(session: Session, p: Product, *, actor: audit_log.Actor | Principal, decision: str,
                   reasons: str = "", settings: Settings | None = None) -> Case:
    """The operator named on the product approves it for filing, returns it for revision, or rejects it."""
    who = audit_log.as_actor(actor)
    settings = settings or get_settings()
    case = _case(session, p)
    workflow.ensure_not_applicant(case, who)
    if who.org_id != p.operator_org_id:
        if _is_bureau(session, who.org_id):
            raise workflow.WrongReviewer(f"{case.number} is checked by its operator first; the bureau files it "
                                         "after that check", details={"case": case.number})
        raise NotFound(f"no product {p.id}")
    agreements.require_operator_authorization(session, who.org_id)
    return _decide(session, p, case, stage="operator_check", prefix="operator", decision=decision, reasons=reasons,
                   actor=who, next_orgs=_bureaus(session), due_days=settings.review_bureau_working_days)


def bureau_file(session: Session, p: Product, *, actor: audit_log.Actor | Principal, decision: str,
                reasons: str = "", settings: Settings | None = None) -> Case:
    """The bureau files the checked product and issues its registration number, or returns or rejects it."""
    who = audit_log.as_actor(actor)
    settings = settings or get_settings()
    case = _case(session, p)
    workflow.ensure_not_applicant(case, who)
    if not _is_bureau(session, who.org_id):
        raise workflow.WrongReviewer(f"only the bureau files products; {case.number} is not yours to file",
                                     details={"case": case.number})
    return _decide(session, p, case, stage="bureau_filing", prefix="bureau", decision=decision, reasons=reasons,
                   actor=who, next_orgs=[], due_days=0)


def _registration_number(session: Session, at: datetime | None = None) -> str:
    year = (at or utcnow()).year
    prefix = f"{REGISTRATION_PREFIX}-{year}-"
    taken = session.exec(select(Product.registration_number)
                         .where(Product.registration_number.like(prefix + "%"))).all()
    n = max((int(x.rsplit("-", 1)[1]) for x in taken if x and x.rsplit("-", 1)[1].isdigit()), default=0) + 1
    return f"{prefix}{n:04d}"


# --- the call guard -------------------------------------------------------------------------------

class ProductNotRegistered(Forbidden):
    code = "product_not_registered"


def guard_call(session: Session, *, customer_org_id: int, product_id: int, subject_id: str | None = None,
               purpose: str | None = None, at: datetime | None = None,
               actor: audit_log.Actor | Principal | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Refuse a product call unless: the product is registered, the customer holds an active usage
    agreement for it, and (a product that needs consent: personal information, or consent_required)
    the subject's consent is valid.

    Returns {"product_id", "agreement", "consent_id"} when the call may proceed. A refusal raises
    Forbidden (codes product_not_registered, no_active_agreement, no_consent) after queuing a
    "gov.call.refused" audit event (outcome denied) on `session`, naming the subject only by its
    keyed pseudonym: commit the session before turning the refusal into an error response, or the
    request's rollback drops the event. Checked on every call: nothing is cached."""
    from authops.platform.governance import consent

    who = audit_log.as_actor(actor) if actor is not None else audit_log.Actor(kind="system", name="call guard",
                                                                   org_id=customer_org_id)
    settings = settings or get_settings()
    subject_key = None
    try:
        p = session.get(Product, product_id)
        if p is None:
            raise NotFound(f"no product {product_id}")
        if p.state != "registered":
            raise ProductNotRegistered(f"product {p.code} is not registered (it is {p.state}); it serves no calls")
        usage: Agreement = agreements.require_active_usage(session, customer_org_id, product_id, at=at)
        consent_id = None
        if p.needs_consent:
            if not subject_id:
                raise consent.NoConsent(f"{p.code} is served only with the subject's consent: every call names its "
                                        "subject (subject_id), whose consent is checked", details={"field": "subject_id"})
            subject_key = consent.subject_key(settings, subject_id)
            c = consent.check(session, product_id, customer_org_id, subject_id, purpose=purpose, at=at,
                              settings=settings)
            consent_id = c.id
    except AuthopsError as exc:
        audit_log.record(session, who, "gov.call.refused", outcome="denied", object_type="product",
                         object_id=product_id, details={"code": exc.code, "customer_org_id": customer_org_id,
                                                        "subject_key": subject_key})
        raise
    return {"product_id": product_id, "product": p.code, "agreement": usage.number, "consent_id": consent_id}


def guard_use(session: Session, p: Product, customer_org_id: int, who: audit_log.Actor | Principal, *,
              channel: str) -> Agreement:
    """What every use needs before its subjects are known: the product registered and the customer's
    usage agreement in force (batches, reports and joint models check consent per subject, or need
    none). A refusal is audited as guard_call's is, naming the channel; returns the agreement."""
    try:
        if p.state != "registered":
            raise ProductNotRegistered(f"product {p.code} is not registered (it is {p.state}); it serves no "
                                       f"{channel} use")
        return agreements.require_active_usage(session, customer_org_id, p.id)
    except AuthopsError as exc:
        audit_log.record(session, audit_log.as_actor(who), "gov.call.refused", outcome="denied", object_type="product",
                         object_id=p.id, details={"code": exc.code, "customer_org_id": customer_org_id,
                                                  "subject_key": None, "channel": channel})
        raise


def _admit_statement():
    p, a, c = Product.__table__.c, Agreement.__table__.c, Consent.__table__.c
    customer, today = bindparam("customer"), bindparam("today")
    # what metering would read next (the price and cap in force for the agreement's unit), read here
    price, cap = metering.terms_columns(p.id, p.operator_org_id, metering.unit_of(a.terms["pricing_method"].as_string()),
                                        bindparam("now"))
    in_force = ((a.kind == "usage") & (a.product_id == p.id) & (a.party_b_org_id == customer)
                & (a.state == "active") & (a.starts_on <= today) & (a.ends_on >= today))
    theirs = (c.product_id == p.id) & (c.customer_org_id == customer) & (c.subject_key == bindparam("subject_key"))
    return (sa_select(p.id, p.code, p.registration_number, p.state, p.personal_information, p.consent_required,
                      a.id.label("agreement_id"), a.number, a.terms, a.ends_on, c.id.label("consent_id"),
                      c.state.label("consent_state"), c.valid_from, c.valid_until, c.purpose,
                      p.operator_org_id, p.category, price.label("price_in_force"), cap.label("cap_in_force"))
            .select_from(Product.__table__.outerjoin(Agreement.__table__, in_force)
                         .outerjoin(Consent.__table__, theirs))
            .where(p.code == bindparam("code")))


_ADMIT = _admit_statement()  # built once: its compiled form is cached


@dataclass(frozen=True)
class Admitted:
    """A call guard_call would let through: what the call needs to know, no more."""

    product_id: int
    code: str
    registration_number: str
    agreement_id: int
    agreement_number: str
    agreement_terms: dict[str, Any]
    consent_id: int | None
    at: datetime | None = None  # when the call was admitted, and the terms below read
    billing_terms: tuple | None = None  # metering.terms_in_force's answer at `at` (metering.meter's terms)


def admit_call(session: Session, *, code: str, customer_org_id: int, subject_id: str | None = None,
               purpose: str | None = None, settings: Settings | None = None) -> Admitted | None:
    """guard_call's common case in one query: the product by code, the customer's usage agreements
    in force today and the subject's consents, read together (only the columns the rules need).
    Admitted when the same rules as guard_call pass (registered, an agreement in force, for a
    product that needs consent, a consent in force for this purpose); None otherwise, and then the
    caller runs guard_call, which refuses with the reason and audits the refusal. Reads only,
    nothing is cached, so a termination, expiry or withdrawal refuses the next call."""
    from authops.platform.governance import consent

    settings = settings or get_settings()
    now = utcnow()
    key = consent.subject_key(settings, subject_id) if subject_id else None
    rows = session.connection().execute(_ADMIT, {"code": code, "customer": customer_org_id, "now": now,
                                                 "today": agreements.today(now), "subject_key": key}).all()
    if not rows:
        return None
    first = rows[0]
    usage = max((r for r in rows if r.agreement_id is not None), key=lambda r: (r.ends_on, r.agreement_id),
                default=None)
    if first.state != "registered" or first.registration_number is None or usage is None:
        return None
    consent_id = None
    if first.personal_information or first.consent_required:
        consents = {r.consent_id: consent.ConsentTerms(r.consent_id, r.consent_state, r.valid_from, r.valid_until,
                                                       r.purpose) for r in rows if r.consent_id is not None}
        found = consent.first_in_force(list(consents.values()), purpose, now) if key else None
        if found is None:
            return None
        consent_id = found.id
    return Admitted(product_id=first.id, code=first.code, registration_number=first.registration_number,
                    agreement_id=usage.agreement_id, agreement_number=usage.number,
                    agreement_terms=dict(usage.terms or {}), consent_id=consent_id, at=now,
                    billing_terms=metering.terms_of(first.operator_org_id, first.category, usage.price_in_force,
                                                    usage.cap_in_force))
