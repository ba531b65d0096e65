"""What each role's home shows, read through the platform's own services (nothing new is disclosed).

Every home starts with the organisation's to-do list (`notifications.todo`). The sections after it
depend on what the viewer may do and its organisation's kind: a review queue for reviewers
(review.provider / review.expert / review.final), a department's resources with load and quality
figures and a completeness chart, the organisation's own scenario applications and products
(partner), products (operator, partner) and the marketplace (customer), charts of metered revenue and
of revenue against the ceiling (billing.read), agreements (agreement.sign), calls per day (customers), open anomaly cases
(incident.read) and the latest log events (audit.read). Each list is limited to what the API would
show the same user.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlmodel import Session, select

from authops.billing import books
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.audit.anomaly import service as anomaly
from authops.console.auth import Viewer
from authops.platform.billing import invoices, revenue
from authops.platform.catalog import service as catalog
from authops.platform.governance import agreements, notifications, scenarios
from authops.platform.governance.models import Case, Product
from authops.platform.identity.models import Organisation

# The scenario review stage each review action acts on.
STAGE_ACTION = {"provider_review": "review.provider", "expert_review": "review.expert",
                "bureau_review": "review.final"}
LIST_LIMIT = 20


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
    org = viewer.principal.org_id
    rows = session.exec(select(Product).where((Product.partner_org_id == org) | (Product.operator_org_id == org))
                        .order_by(Product.id))
    return list(rows)[:LIST_LIMIT]


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


def home(session: Session, viewer: Viewer) -> dict[str, Any]:
    """Everything the viewer's home shows, to-do first."""
    kind = viewer.principal.org_kind
    out: dict[str, Any] = {"todo": notifications.todo(session, viewer.principal), "org": organisation(session, viewer)}
    if any(viewer.may(a) for a in STAGE_ACTION.values()):
        out["queue"] = review_queue(session, viewer)
    if viewer.may("scenario.submit") or viewer.may("sandbox.use"):
        out["scenarios"] = own_scenarios(session, viewer)
    if kind == OrgKind.PROVIDER and viewer.may("catalog.register"):
        out["resources"] = own_resources(session, viewer)
        out["quality_chart"] = [(r["code"], 100 * r["completeness"]) for r in out["resources"]
                                if r["completeness"] is not None]
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
