"""The operator's settlement page: the year's revenue (metered, against the maximum permitted), its
cost and revenue books with the reconciliation against metering, and the yearly settlement (revenue
sharing among partner, operator, public and provider departments) with its filing and download.

settlement.manage, as in the API; the API's service functions (authops.billing.books,
authops.platform.billing.settlement) do the work. A settlement is one transaction over the year's
usage records (no background job), so it needs no progress display: the page shows it when done.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Query, Request
from fastapi.responses import Response

from authops.billing import books
from authops.billing import prices as rules
from authops.billing import render as billing_render
from authops.console.auth import Viewer, page
from authops.console.forms import fen, see, validated, whole
from authops.console.rendering import render
from authops.console.routing import router
from authops.core.clock import to_shanghai, utcnow
from authops.platform.billing import revenue, settlement
from authops.platform.billing import router as billing_routes
from authops.platform.deps import ObjectId, SessionDep, actor_of
from authops.platform.governance import agreements

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get("/settlement")
def settlement_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("settlement.manage")],
                    year: Annotated[int | None, Query(ge=2000, le=2100)] = None):
    """Revenue and costs of a year (default: this year) and every settlement, with the forms to book an
    entry, book a month's metered revenue, run a settlement of an ended year and file it."""
    op = int(viewer.principal.org_id)
    year = year or rules.year_of()
    totals = books.totals(session, op, year)
    rec = books.reconcile(session, op, year)
    return render(request, "settlement.html", {
        "year": year, "last_year": rules.year_of() - 1, "month": to_shanghai(utcnow()).month,
        "totals": totals, "rec": rec, "categories": books.CATEGORIES,
        "entries": books.entries(session, op, year)[-50:],
        "revenue": revenue.status(session, op, year),
        "settlements": settlement.visible(session, op),
        "monthly": [(f"{m['month']:02d}", m["metered_fen"] / 100) for m in rec["months"]],
        "cost_revenue": [("cost", totals["cost_total_fen"] / 100), ("revenue", totals["revenue_total_fen"] / 100)],
        "rules": ("declared", "rows", "equal")}, viewer=viewer)


@router.post("/settlement/books")
def post_entry(session: SessionDep, viewer: Annotated[Viewer, page("settlement.manage")],
               book: Annotated[str, Form()] = "", category: Annotated[str, Form()] = "",
               amount: Annotated[str, Form()] = "", occurred_on: Annotated[str, Form()] = "",
               description: Annotated[str, Form()] = "", reference: Annotated[str, Form()] = ""):
    """Book a cost or revenue of the operation in yuan (entries are never changed: a mistake is reversed)."""
    body = validated(billing_routes.EntryIn, book=book, category=category, amount_fen=fen(amount, "amount"),
                     occurred_on=occurred_on or None, description=description, reference=reference)
    e = books.post(session, operator_org_id=int(viewer.principal.org_id), actor=actor_of(viewer.principal),
                   **body.model_dump())
    return see(f"/settlement?year={e.year}")


@router.post("/settlement/books/metered")
def book_metered(session: SessionDep, viewer: Annotated[Viewer, page("settlement.manage")],
                 year: Annotated[str, Form()] = "", month: Annotated[str, Form()] = ""):
    """Book a month's metered revenue as product sales (once per month)."""
    body = validated(billing_routes.SubscriptionsIn, year=whole(year, "year", low=2000, high=2100),
                     month=whole(month, "month", low=1, high=12))
    books.book_metered_month(session, operator_org_id=int(viewer.principal.org_id), year=body.year,
                             month=body.month, actor=actor_of(viewer.principal))
    return see(f"/settlement?year={body.year}")


@router.post("/settlement/run")
def run_settlement(session: SessionDep, viewer: Annotated[Viewer, page("settlement.manage")],
                   year: Annotated[str, Form()] = "", rule: Annotated[str, Form()] = "declared"):
    """Settle an ended year (running it again shows the stored one unchanged)."""
    body = validated(billing_routes.SettlementIn, year=whole(year, "year", low=2000, high=2100), rule=rule)
    s = settlement.run(session, operator_org_id=int(viewer.principal.org_id), year=body.year, rule=body.rule,
                       actor=actor_of(viewer.principal))
    return see(f"/settlement#settlement-{s.id}")


@router.post("/settlement/{settlement_id}/file")
def file_settlement(settlement_id: ObjectId, session: SessionDep,
                    viewer: Annotated[Viewer, page("settlement.manage")]):
    """File the distribution details with the bureau (once)."""
    s = settlement.get(session, settlement_id, viewer.principal.org_id)
    settlement.file(session, s, actor=actor_of(viewer.principal))
    return see(f"/settlement#settlement-{s.id}")


@router.get("/settlement/settlements.{fmt}")
def settlement_download(fmt: Literal["pdf", "xlsx"], session: SessionDep,
                        viewer: Annotated[Viewer, page("settlement.manage")]):
    """Every settlement's distribution details as the API's PDF or Excel."""
    found = settlement.visible(session, viewer.principal.org_id)
    doc = settlement.document(found, reader=agreements.org_name(session, viewer.principal.org_id))
    data, media = (billing_render.pdf(doc), "application/pdf") if fmt == "pdf" else (billing_render.xlsx(doc), XLSX)
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="settlements.{fmt}"'})
