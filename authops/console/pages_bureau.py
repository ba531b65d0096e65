"""The bureau's pages: operator authorization and renewal, price caps and maximum revenue, privacy
budgets, yearly assessments, and review statistics. Each page needs the action the API needs for
the same data (authorization.manage, price.cap.set, budget.manage, assessment.manage, review.final:
all cross-organisation actions of the bureau) and every decision goes through the same service
function as the API's route, with the same request model checking the form.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from sqlmodel import Session, select

from authops.billing import prices as rules
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.console import stats
from authops.console.auth import Viewer, page
from authops.console.forms import fen, see, validated, whole
from authops.console.rendering import render
from authops.console.routing import router
from authops.platform.assessment import departments
from authops.platform.assessment import service as assessment
from authops.platform.assessment.models import Assessment, Rectification
from authops.platform.billing import pricing, revenue
from authops.platform.billing import router as billing_routes
from authops.platform.catalog.models import DataResource
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of
from authops.platform.governance import agreements, operator, workflow
from authops.platform.governance import routes_operator as operator_routes
from authops.platform.governance.models import Agreement, Case, Product
from authops.platform.identity.models import Organisation
from authops.platform.sandbox import router as sandbox_routes
from authops.policies import budget

LIST_LIMIT = 50


def orgs_of(session: Session, kind: OrgKind) -> list[Organisation]:
    return list(session.exec(select(Organisation).where(Organisation.kind == kind.value).order_by(Organisation.id)))


def names(session: Session, ids: set[int]) -> dict[int, str]:
    return {i: agreements.org_name(session, i) for i in ids if i}


# --- operator authorization and renewal ------------------------------------------------------------

def operator_cases(session: Session) -> list[dict[str, Any]]:
    """The operator lifecycle's cases, newest first, each with its timeline and the bureau's next step."""
    rows = session.exec(select(Case).where(Case.kind.in_(operator.KINDS))  # type: ignore[attr-defined]
                        .order_by(Case.id.desc()).limit(LIST_LIMIT))  # type: ignore[union-attr]
    out = []
    for c in rows:
        v = workflow.view(session, c)
        v["applicant"] = agreements.org_name(session, c.applicant_org_id)
        v["decide"] = ("qualification" if c.kind == operator.APPLICATION and c.state == "submitted" else
                       "decision" if c.kind in (operator.RENEWAL, operator.EXIT) and c.state == "submitted" else None)
        out.append(v)
    return out


def authorizations(session: Session) -> list[dict[str, Any]]:
    rows = session.exec(select(Agreement).where(Agreement.kind == operator.AGREEMENT_KIND)
                        .order_by(Agreement.starts_on.desc()))  # type: ignore[attr-defined]
    out = []
    for a in rows:
        opens, closes = operator.renewal_window(a)
        out.append({"id": a.id, "number": a.number, "operator": agreements.org_name(session, a.party_b_org_id),
                    "state": agreements.effective_state(a), "starts_on": a.starts_on, "ends_on": a.ends_on,
                    "renewal_opens_on": opens, "renewal_closes_on": closes,
                    "renewal_open": opens <= agreements.today() <= closes and a.state == "active"})
    return out


@router.get("/operators")
def operators_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("authorization.manage")]):
    """Authorizations in force with their renewal windows, selection notices, and the applications,
    renewals and exits with their timelines; the bureau's decision form where a case waits for it."""
    return render(request, "operators.html", {
        "authorizations": authorizations(session), "cases": operator_cases(session),
        "notices": [operator.notice_view(session, c) for c in operator.list_notices(session)][:20]}, viewer=viewer)


@router.post("/operators/cases/{case_id}/qualification")
def operator_qualification(case_id: ObjectId, session: SessionDep, settings: SettingsDep,
                           viewer: Annotated[Viewer, page("authorization.manage")],
                           decision: Annotated[str, Form()] = "", reasons: Annotated[str, Form()] = ""):
    """Pass (to the expert committee) or fail (with reasons) an application's qualification check."""
    body = validated(operator_routes.QualificationIn, passed=decision == "approve", reasons=reasons)
    case = operator.get_case(session, case_id, (operator.APPLICATION,))
    operator.qualification(session, case, actor=actor_of(viewer.principal), passed=body.passed, reasons=body.reasons,
                           settings=settings)
    return see(f"/operators#case-{case_id}")


@router.post("/operators/cases/{case_id}/decision")
def operator_decision(case_id: ObjectId, session: SessionDep, settings: SettingsDep,
                      viewer: Annotated[Viewer, page("authorization.manage")],
                      decision: Annotated[str, Form()] = "", reasons: Annotated[str, Form()] = ""):
    """Approve (a renewal: the next 3-year authorization) or reject (with reasons) a renewal or exit."""
    body = validated(operator_routes.DecisionIn, approve=decision == "approve", reasons=reasons)
    case = operator.get_case(session, case_id, (operator.RENEWAL, operator.EXIT))
    operator.decide(session, case, actor=actor_of(viewer.principal), approve=body.approve, reasons=body.reasons,
                    settings=settings)
    return see(f"/operators#case-{case_id}")


# --- price caps and maximum revenue ----------------------------------------------------------------

def capped_products(session: Session) -> list[dict[str, Any]]:
    """Registered products and products under review, with each billing unit's cap and price in force."""
    now = utcnow()
    out = []
    for p in session.exec(select(Product).where(Product.state.in_(("registered", "submitted")))  # type: ignore[attr-defined]
                          .order_by(Product.id)):
        units = []
        for unit, (zh, en) in rules.UNITS.items():
            cap = rules.cap_in_force(session, p.id, unit, now)
            price = rules.price_in_force(session, p.operator_org_id, p.id, unit, now) if p.operator_org_id else None
            if cap or price:
                units.append({"unit": unit, "zh": zh, "en": en, "cap_fen": cap.cap_fen if cap else None,
                              "price_fen": price.price_fen if price else None,
                              "trial": bool(price and price.kind == "trial"), "since": cap.effective_from if cap else None})
        out.append({"id": p.id, "code": p.code, "name_zh": p.name_zh, "name_en": p.name_en or p.name_zh,
                    "state": p.state, "free": pricing.is_free(p), "units": units,
                    "operator": agreements.org_name(session, p.operator_org_id) if p.operator_org_id else "—"})
    return out


@router.get("/price-caps")
def price_caps_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("price.cap.set")],
                    done: Annotated[str | None, Query(max_length=16)] = None):
    """Every product's caps and prices in force, the operators' revenue against their maximum, and the
    forms to set a cap or a year's maximum permitted revenue (each a new row: history is kept)."""
    year = rules.year_of()
    return render(request, "price_caps.html", {
        "products": capped_products(session), "units": rules.UNITS, "year": year, "done": done,
        "revenue": revenue.status(session, viewer.principal.org_id, year),
        "operators": orgs_of(session, OrgKind.OPERATOR), "drcs": orgs_of(session, OrgKind.SUPERVISOR)}, viewer=viewer)


@router.post("/price-caps")
def set_cap(session: SessionDep, viewer: Annotated[Viewer, page("price.cap.set")],
            product_id: Annotated[str, Form()] = "", unit: Annotated[str, Form()] = "",
            cap: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = ""):
    """A product's upper price limit per billing unit, in yuan (stored as fen)."""
    body = validated(billing_routes.CapIn, product_id=whole(product_id, "product_id", low=1, high=2**31),
                     unit=unit, cap_fen=fen(cap, "cap"), reason=reason)
    pricing.set_cap(session, actor=actor_of(viewer.principal), **body.model_dump())
    return see("/price-caps?done=cap")


@router.post("/price-caps/max-revenue")
def set_max_revenue(session: SessionDep, viewer: Annotated[Viewer, page("price.cap.set")],
                    operator_org_id: Annotated[str, Form()] = "", year: Annotated[str, Form()] = "",
                    amount: Annotated[str, Form()] = "", drc_org_id: Annotated[str, Form()] = "",
                    reason: Annotated[str, Form()] = ""):
    """An operator's maximum permitted revenue for a year, co-set with the DRC, in yuan."""
    body = validated(billing_routes.MaxRevenueIn, operator_org_id=whole(operator_org_id, "operator_org_id", high=2**31),
                     year=whole(year, "year", low=2000, high=2100), amount_fen=fen(amount, "amount"),
                     drc_org_id=whole(drc_org_id, "drc_org_id", high=2**31), reason=reason)
    pricing.set_max_revenue(session, actor=actor_of(viewer.principal), **body.model_dump())
    return see("/price-caps?done=max_revenue")


# --- privacy budgets ----------------------------------------------------------------------------

def partner_budgets(session: Session) -> list[dict[str, Any]]:
    out = []
    for org in orgs_of(session, OrgKind.PARTNER):
        for b in budget.balances(session, org.id):
            used = b["epsilon_spent"] + b["epsilon_reserved"]
            out.append({**b, "partner": f"{org.name_zh} ({org.code})", "partner_code": org.code,
                        "burn_pct": round(100 * used / b["epsilon_cap"], 1) if b["epsilon_cap"] else 0.0})
    return out


@router.get("/budgets")
def budgets_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("budget.manage")],
                 done: Annotated[str | None, Query(max_length=16)] = None):
    """Each partner's privacy budgets (cap, spent, reserved, left, refresh date) with a burn chart, and
    the form to set or raise one."""
    rows = partner_budgets(session)
    return render(request, "budgets.html", {
        "budgets": rows, "done": done,
        "chart": [(f"{r['partner_code']} {r['resource']}", r["burn_pct"]) for r in rows],
        "partners": orgs_of(session, OrgKind.PARTNER),
        "resources": list(session.exec(select(DataResource.code).order_by(DataResource.code)))}, viewer=viewer)


@router.post("/budgets")
def set_budget(session: SessionDep, viewer: Annotated[Viewer, page("budget.manage")],
               org_id: Annotated[str, Form()] = "", resource: Annotated[str, Form()] = "",
               epsilon: Annotated[str, Form()] = "", period: Annotated[str, Form()] = "",
               note: Annotated[str, Form()] = ""):
    """The API's own step (a partner and a known resource, ε above 0; only ever raised)."""
    body = validated(sandbox_routes.BudgetIn, org_id=whole(org_id, "org_id", low=1, high=2**31), resource=resource,
                     epsilon=epsilon or None, period=period or None, note=note)
    sandbox_routes.set_budget(body, session, viewer.principal)
    return see("/budgets?done=1")


# --- yearly assessments -------------------------------------------------------------------------

@router.get("/assessments")
def assessments_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("assessment.manage")],
                     year: Annotated[int | None, Query(ge=2000, le=2100)] = None):
    """The operators' yearly assessments (score, grade, signed or draft), rectifications with their due
    dates, and the provider departments' figures for the year; forms to run and to sign."""
    year = year or to_shanghai(utcnow()).year - 1
    newest = (Assessment.year.desc(), Assessment.id.desc())  # type: ignore[attr-defined]
    runs = list(session.exec(select(Assessment).order_by(*newest).limit(LIST_LIMIT)))
    rects = list(session.exec(select(Rectification).order_by(Rectification.due_on)))
    table = departments.table(session, year)
    who = names(session, {a.operator_org_id for a in runs} | {r.operator_org_id for r in rects})
    return render(request, "assessments.html", {
        "year": year, "runs": runs, "rects": rects, "who": who, "today": agreements.today(),
        "departments": table, "chart": [(d["code"], d["score"]) for d in table if d["score"] is not None],
        "operators": orgs_of(session, OrgKind.OPERATOR)}, viewer=viewer)


@router.post("/assessments")
def run_assessment(session: SessionDep, viewer: Annotated[Viewer, page("assessment.manage")],
                   operator_org_id: Annotated[str, Form()] = "", year: Annotated[str, Form()] = ""):
    """Compute (or recompute, while a draft) an operator's assessment of an ended year."""
    a = assessment.run(session, actor=actor_of(viewer.principal),
                       operator_org_id=whole(operator_org_id, "operator_org_id", low=1, high=2**31),
                       year=whole(year, "year", low=2000, high=2100))
    return see(f"/assessments?year={a.year}#assessment-{a.id}")


@router.post("/assessments/{assessment_id}/sign")
def sign_assessment(assessment_id: ObjectId, session: SessionDep, settings: SettingsDep,
                    viewer: Annotated[Viewer, page("assessment.manage")]):
    """Sign a draft assessment: its grade takes effect (an unqualified one opens a rectification)."""
    a = assessment.sign(session, assessment.get(session, assessment_id), actor=actor_of(viewer.principal),
                        settings=settings)
    return see(f"/assessments?year={a.year}#assessment-{a.id}")


# --- review statistics ---------------------------------------------------------------------------

@router.get("/review-stats")
def review_stats(request: Request, session: SessionDep, settings: SettingsDep,
                 viewer: Annotated[Viewer, page("review.final")]):
    """Scenario applications decided per week and per month, and the working days each review level
    takes against its deadline."""
    timeliness = stats.review_timeliness(session, settings)
    return render(request, "review_stats.html", {
        "weekly": stats.review_throughput(session, per="week"),
        "monthly": stats.review_throughput(session, per="month", periods=6),
        "timeliness": timeliness}, viewer=viewer)
