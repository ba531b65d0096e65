"""What each role's home shows, read through the platform's own services (nothing new is disclosed).

Every home starts with the organisation's to-do list (`notifications.todo`). The sections after it
depend on what the viewer may do and its organisation's kind: a review queue for reviewers
(review.provider / review.expert / review.final), a department's resources with load and quality
figures and a completeness chart, the organisation's own scenario applications and products
(partner), products (operator, partner) and the marketplace (customer), charts of metered revenue and
of revenue against the ceiling (billing.read), agreements (agreement.sign), calls per day (customers), open anomaly cases
(incident.read) and the latest log events (audit.read); the department's timeliness, completeness and
accuracy of the year (provider) and the review levels' working days against their deadlines (bureau).
Each list is limited to what the API would show the same user.

`shortcuts` adds to the to-do list the work waiting on the area pages the viewer may open (operator
cases to decide, products without a price cap, budgets nearly spent, rectifications due, drafts to
submit, batches running, keys about to expire, a settlement to run or file), each with its count.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from authops.billing import books
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.audit.anomaly import service as anomaly
from authops.console import stats
from authops.console.auth import Viewer
from authops.console.pages_bureau import partner_budgets
from authops.billing import prices as price_rules
from authops.billing.models import PriceCap, Settlement
from authops.core.settings import Settings
from authops.platform.assessment.models import Rectification
from authops.platform.billing import invoices, pricing, revenue
from authops.platform.catalog import service as catalog
from authops.platform.governance import agreements, notifications, operator, scenarios
from authops.platform.governance import products as gov_products
from authops.platform.governance.models import Case, Consent, Product
from authops.platform.identity.models import ApiKey, Organisation
from authops.platform.products.models import ProductBatch

# The scenario review stage each review action acts on.
STAGE_ACTION = {"provider_review": "review.provider", "expert_review": "review.expert",
                "bureau_review": "review.final"}
LIST_LIMIT = 20
INFO_ONLY = {"sc_consents_active"}  # a count that says how things stand, not work waiting


def organisation(session: Session, viewer: Viewer) -> Organisation | None:
    return session.get(Organisation, viewer.principal.org_id)


def may_review(viewer: Viewer, case: Case) -> bool:
    """The viewer's organisation is the one a scenario now waits on, and the viewer holds that stage's action."""
    action = STAGE_ACTION.get(case.state)
    if action is None or not viewer.may(action):
        return False
    return action == "review.final" or viewer.principal.org_id in (case.awaiting_orgs or [])


def review_queue(session: Session, viewer: Viewer) -> list[Case]:
    cases = scenarios.list_cases(session, viewer.principal.org_id, cross_org=viewer.may("review.final"))
    return [c for c in cases if may_review(viewer, c)]


def own_scenarios(session: Session, viewer: Viewer) -> list[Case]:
    return [c for c in scenarios.list_cases(session, viewer.principal.org_id)
            if c.applicant_org_id == viewer.principal.org_id]


def own_products(session: Session, viewer: Viewer) -> list[Product]:
    """The partner's products, and the ones the operator checks: a partner's draft only once submitted
    (as the API shows them: governance.products.can_see_all)."""
    org = viewer.principal.org_id
    rows = session.exec(select(Product).where((Product.partner_org_id == org) | (Product.operator_org_id == org))
                        .order_by(Product.id))
    return [p for p in rows if p.state == "registered" or gov_products.can_see_all(session, p, org)][:LIST_LIMIT]


def marketplace(session: Session) -> list[Product]:
    return list(session.exec(select(Product).where(Product.state == "registered").order_by(Product.id)))[:LIST_LIMIT]


def own_agreements(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    org = viewer.principal.org_id
    out = []
    for a in agreements.list_for(session, org)[:LIST_LIMIT]:
        other = a.party_b_org_id if a.party_a_org_id == org else a.party_a_org_id
        out.append({"id": a.id, "number": a.number, "kind": a.kind, "state": agreements.effective_state(a),
                    "counterparty": agreements.org_name(session, other), "starts_on": a.starts_on,
                    "ends_on": a.ends_on})
    return out


def revenue_by_month(session: Session, viewer: Viewer) -> list[tuple[str, float]]:
    year = to_shanghai(utcnow()).year
    by_month = books.metered_by_month(session, viewer.principal.org_id, year)
    return [(f"{year}-{m:02d}", by_month[m] / 100) for m in sorted(by_month)]


def budget_burn(session: Session, viewer: Viewer) -> list[tuple[str, float]]:
    rows = revenue.status(session, viewer.principal.org_id, to_shanghai(utcnow()).year)
    return [(r["operator"], r["used_pct"] or 0.0) for r in rows]


def calls_by_day(session: Session, viewer: Viewer) -> list[tuple[str, float]]:
    now = to_shanghai(utcnow())
    uses = invoices.usage(session, viewer.principal.org_id, year=now.year, month=now.month)
    days = Counter(to_shanghai(u["at"]).strftime("%m-%d") for u in uses)
    return [(d, float(n)) for d, n in sorted(days.items())]


def own_resources(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    """The department's resources with their load and quality figures (counts and rates, no values)."""
    out = []
    for res in catalog.list_resources(session, org_id=viewer.principal.org_id)[:LIST_LIMIT]:
        q = catalog.quality(session, res)
        out.append({"code": res.code, "name_zh": res.name_zh, "name_en": res.name_en, "rows": q["rows"],
                    "loads": q["loads"], "completeness": q["completeness"], "accuracy": q["accuracy"],
                    "timeliness": q["timeliness"]["status"]})
    return out


def open_anomalies(session: Session) -> list[Any]:
    return anomaly.list_cases(session, state="open", limit=LIST_LIMIT)


def _count(session: Session, q) -> int:
    return int(session.exec(select(func.count()).select_from(q.subquery())).one())


def _uncapped(session: Session) -> int:
    """Registered products with a price but no cap yet (an operator cannot price them)."""
    capped = set(session.exec(select(PriceCap.product_id)))
    return sum(1 for p in session.exec(select(Product).where(Product.state == "registered"))
               if not pricing.is_free(p) and p.id not in capped)


def shortcuts(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    """The area pages the viewer may open, each with the count of what waits there (None: no count)."""
    org = viewer.principal.org_id
    now = utcnow()
    waiting = {
        "authorization.manage": ("sc_operator_cases", "/console/operators", lambda: _count(session, select(Case.id).where(
            Case.kind.in_(operator.KINDS), Case.state == "submitted"))),  # type: ignore[attr-defined]
        "price.cap.set": ("sc_uncapped", "/console/price-caps", lambda: _uncapped(session)),
        "budget.manage": ("sc_budgets_near", "/console/budgets",
                          lambda: sum(1 for b in partner_budgets(session) if b["burn_pct"] >= 80)),
        "assessment.manage": ("sc_rectifications", "/console/assessments", lambda: _count(
            session, select(Rectification.id).where(Rectification.state == "due"))),
        "review.final": ("sc_review_stats", "/console/review-stats", None),
        "scenario.submit": ("sc_scenario_drafts", "/console/scenarios/new", lambda: _count(session, select(Case.id).where(
            Case.kind == scenarios.KIND, Case.applicant_org_id == org,
            Case.state.in_(("draft", "returned"))))),  # type: ignore[attr-defined]
        "product.submit": ("sc_products_to_submit", "/console/products", lambda: _count(session, select(Product.id).where(
            Product.partner_org_id == org, Product.state.in_(("draft", "returned"))))),  # type: ignore[attr-defined]
        "product.call": ("sc_batches_running", "/console/batches", lambda: _count(session, select(ProductBatch.id).where(
            ProductBatch.customer_org_id == org, ProductBatch.state == "queued"))),
        "consent.submit": ("sc_consents_active", "/console/consents", lambda: _count(session, select(Consent.id).where(
            Consent.customer_org_id == org, Consent.state == "active", Consent.valid_until > now))),
        "apikey.manage": ("sc_keys_expiring", "/console/api-keys", lambda: _count(session, select(ApiKey.id).where(
            ApiKey.org_id == org, ApiKey.revoked_at.is_(None),  # type: ignore[union-attr]
            ApiKey.expires_at > now, ApiKey.expires_at < now + timedelta(days=30)))),
        "settlement.manage": ("sc_settlement_due", "/console/settlement", lambda: int(session.exec(
            select(Settlement.id).where(Settlement.operator_org_id == org, Settlement.year == price_rules.year_of() - 1,
                                        Settlement.filed_at.is_not(None))).first() is None)),  # type: ignore[union-attr]
        "audit.verify": ("sc_audit_reports", "/console/audit-reports", None),
    }
    out = []
    for action, (key, href, count) in waiting.items():
        if viewer.may(action):
            n = count() if count else None
            out.append({"key": key, "href": href, "count": n, "waiting": bool(n) and key not in INFO_ONLY})
            if action == "product.call":
                out.insert(len(out) - 1, {"key": "sc_marketplace", "href": "/console/marketplace", "count": None,
                                          "waiting": False})
    return out


def home(session: Session, viewer: Viewer, settings: Settings | None = None) -> dict[str, Any]:
    """Everything the viewer's home shows, to-do first."""
    kind = viewer.principal.org_kind
    out: dict[str, Any] = {"todo": notifications.todo(session, viewer.principal), "org": organisation(session, viewer),
                           "shortcuts": shortcuts(session, viewer)}
    if any(viewer.may(a) for a in STAGE_ACTION.values()):
        out["queue"] = review_queue(session, viewer)
    if viewer.may("scenario.submit") or viewer.may("sandbox.use"):
        out["scenarios"] = own_scenarios(session, viewer)
    if kind == OrgKind.PROVIDER and viewer.may("catalog.register"):
        out["resources"] = own_resources(session, viewer)
        out["quality_chart"] = [(r["code"], 100 * r["completeness"]) for r in out["resources"]
                                if r["completeness"] is not None]
        org = organisation(session, viewer)
        if org is not None:
            out["department"] = stats.department_quality(session, org)
    if viewer.may("review.final") and settings is not None:
        out["timeliness"] = stats.review_timeliness(session, settings)
    if kind in (OrgKind.PARTNER, OrgKind.OPERATOR):
        out["products"] = own_products(session, viewer)
    if kind == OrgKind.CUSTOMER:
        out["marketplace"] = marketplace(session)
    if viewer.may("agreement.sign"):
        out["agreements"] = own_agreements(session, viewer)
    if viewer.may("billing.read"):
        if kind == OrgKind.OPERATOR:
            out["revenue_chart"] = revenue_by_month(session, viewer)
        if kind in (OrgKind.OPERATOR, OrgKind.BUREAU):
            out["burn_chart"] = budget_burn(session, viewer)
        if kind == OrgKind.CUSTOMER:
            out["calls_chart"] = calls_by_day(session, viewer)
    if viewer.may("incident.read"):
        out["anomalies"] = open_anomalies(session)
    return out
