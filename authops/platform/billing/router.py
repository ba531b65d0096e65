"""Billing routes (prefix /api/v1/billing): regulated prices, usage and statements, books,
settlement and the bureau's report to the DRC.

Permissions (authops.policies.permissions): price.cap.set (the bureau: maximum revenue, caps, the
DRC report), price.set (the operator: its prices, trial filings), billing.read (usage, statements,
prices, revenue status and settlements as each organisation may see them), settlement.manage (the
operator: books, subscriptions, settlement and its filing). Money is integer fen throughout.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from authops.billing import books, render, statements
from authops.billing import prices as rules
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import Principal
from authops.platform.billing import invoices, pricing, revenue, settlement
from authops.platform.deps import ObjectId, SessionDep, actor_of, require
from authops.platform.governance import agreements

router = APIRouter(prefix="/billing", tags=["billing"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
Year = Annotated[int, Query(ge=2000, le=2100)]
Month = Annotated[int, Query(ge=1, le=12)]
Format = Annotated[Literal["json", "pdf", "xlsx"], Query()]
Fen = Annotated[int, Field(ge=0, le=rules.MAX_FEN)]


def _now_period() -> tuple[int, int]:
    now = to_shanghai(utcnow())
    return now.year, now.month


def _download(doc: render.Document, fmt: str, name: str) -> Response:
    data, media = (render.pdf(doc), "application/pdf") if fmt == "pdf" else (render.xlsx(doc), XLSX)
    return Response(content=data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


# --- regulated prices ------------------------------------------------------------------------------

class MaxRevenueIn(BaseModel):
    operator_org_id: int = Field(ge=1, le=2_147_483_647)
    year: int = Field(ge=2000, le=2100)
    amount_fen: Fen
    drc_org_id: int = Field(ge=1, le=2_147_483_647, description="the DRC (a supervisor organisation) that co-sets the maximum")
    warn_at_pct: list[int] = Field(default=list(rules.DEFAULT_WARNINGS), max_length=5)
    reason: str = Field(default="", max_length=500)


@router.post("/max-revenue", status_code=201)
def set_max_revenue(body: MaxRevenueIn, session: SessionDep,
                    principal: Annotated[Principal, require("price.cap.set")]):
    """Set the operator's maximum permitted revenue for a year (with the DRC); a new row each time."""
    row = pricing.set_max_revenue(session, actor=actor_of(principal), **body.model_dump())
    return {"id": row.id, "operator_org_id": row.operator_org_id, "year": row.year, "amount_fen": row.amount_fen,
            "warn_at_pct": row.warn_at_pct, "effective_from": row.effective_from}


class CapIn(BaseModel):
    product_id: int = Field(ge=1, le=2_147_483_647)
    unit: str = Field(max_length=16, description=", ".join(rules.UNITS))
    cap_fen: Fen
    reason: str = Field(default="", max_length=500)
    effective_from: datetime | None = None


@router.post("/caps", status_code=201)
def set_cap(body: CapIn, session: SessionDep, principal: Annotated[Principal, require("price.cap.set")]):
    """Set a product's upper price limit per billing unit (free products cannot be capped or priced)."""
    return rules.cap_view(pricing.set_cap(session, actor=actor_of(principal), **body.model_dump()))


class PriceIn(BaseModel):
    product_id: int = Field(ge=1, le=2_147_483_647)
    unit: str = Field(max_length=16, description=", ".join(rules.UNITS))
    price_fen: Fen
    basis: str = Field(default="", max_length=500, description="the pricing basis")
    effective_from: datetime | None = None


@router.post("/prices", status_code=201)
def set_price(body: PriceIn, session: SessionDep, principal: Annotated[Principal, require("price.set")]):
    """Set your price for your product, at or below the cap; a trial price until your first operating
    year is complete, in force once filed with the DRC (POST /billing/prices/{id}/filing)."""
    price = pricing.set_price(session, actor=actor_of(principal), **body.model_dump())
    return rules.price_view(session, price)


class FilingIn(BaseModel):
    drc_org_id: int = Field(ge=1, le=2_147_483_647)


@router.post("/prices/{price_id}/filing", status_code=201)
def file_trial_price(price_id: ObjectId, body: FilingIn, session: SessionDep,
                     principal: Annotated[Principal, require("price.set")]):
    """File a trial price with the DRC: it takes effect from the filing."""
    f = pricing.file_trial(session, price_id=price_id, drc_org_id=body.drc_org_id, actor=actor_of(principal))
    return {"number": f.number, "price_id": f.price_id, "filed_with_org_id": f.filed_with_org_id, "filed_at": f.filed_at}


@router.get("/prices")
def published_prices(session: SessionDep, principal: Annotated[Principal, require("billing.read")]):
    """Caps and prices in force for every registered product (what the disclosure page publishes)."""
    return pricing.published_prices(session)


@router.get("/products/{product_id}/history")
def price_history(product_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("billing.read")]):
    """Every cap and price the product ever had (public information: any product)."""
    pricing.product(session, product_id)
    return rules.history(session, product_id)


@router.get("/revenue")
def revenue_status(session: SessionDep, principal: Annotated[Principal, require("billing.read")],
                   year: Year | None = None):
    """The operator's revenue against its maximum permitted revenue (the operator: its own; the bureau: all)."""
    return revenue.status(session, principal.org_id, year or _now_period()[0])


# --- usage and statements ------------------------------------------------------------------------------

@router.get("/usage")
def usage(session: SessionDep, principal: Annotated[Principal, require("billing.read")], year: Year | None = None,
          month: Month | None = None,
          product_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None):
    """The month's metered uses you may see (a customer its own, the operator all of its products)."""
    y, m = _now_period()
    return invoices.usage(session, principal.org_id, year=year or y, month=month or m, product_id=product_id)


@router.get("/statements")
def monthly_statements(session: SessionDep, principal: Annotated[Principal, require("billing.read")],
                       year: Year | None = None, month: Month | None = None,
                       agreement_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
                       format: Format = "json"):  # noqa: A002 - the query parameter's name
    """The month's statements per customer and usage agreement, with line items; format=pdf or xlsx
    downloads them (Chinese and English)."""
    y, m = _now_period()
    year, month = year or y, month or m
    found = invoices.monthly_statements(session, principal.org_id, year=year, month=month, agreement_id=agreement_id)
    if format == "json":
        return found
    doc = statements.document(found, period=f"{year}-{month:02d}",
                              reader=agreements.org_name(session, principal.org_id))
    return _download(doc, format, f"statements-{year}-{month:02d}")


class SubscriptionsIn(BaseModel):
    year: int = Field(ge=2000, le=2100)
    month: int = Field(ge=1, le=12)


@router.post("/subscriptions/meter")
def meter_subscriptions(body: SubscriptionsIn, session: SessionDep,
                        principal: Annotated[Principal, require("settlement.manage")]):
    """Meter the month of each of your active monthly usage agreements (once per agreement and month)."""
    recs = invoices.meter_subscriptions(session, operator_org_id=int(principal.org_id), year=body.year,
                                        month=body.month)
    return {"metered": len(recs), "amount_fen": sum(r.amount_fen for r in recs)}


# --- books ------------------------------------------------------------------------------------------

class EntryIn(BaseModel):
    book: str = Field(max_length=16, description="cost | revenue")
    category: str = Field(max_length=32)
    amount_fen: int = Field(gt=0, le=rules.MAX_FEN)
    occurred_on: date
    description: str = Field(default="", max_length=500)
    reference: str = Field(default="", max_length=100)


def _entry_view(e) -> dict[str, Any]:
    return {"id": e.id, "book": e.book, "category": e.category, "amount_fen": e.amount_fen,
            "occurred_on": e.occurred_on, "description": e.description, "reference": e.reference,
            "reverses_id": e.reverses_id, "recorded_by": e.recorded_by, "recorded_at": e.recorded_at}


@router.post("/books", status_code=201)
def post_entry(body: EntryIn, session: SessionDep, principal: Annotated[Principal, require("settlement.manage")]):
    """Book a cost or revenue of the operation (categories: see GET /billing/books)."""
    return _entry_view(books.post(session, operator_org_id=int(principal.org_id), actor=actor_of(principal),
                                  **body.model_dump()))


class ReversalIn(BaseModel):
    reason: str = Field(min_length=1, max_length=400)


@router.post("/books/{entry_id}/reversal", status_code=201)
def reverse_entry(entry_id: ObjectId, body: ReversalIn, session: SessionDep,
                  principal: Annotated[Principal, require("settlement.manage")]):
    """Correct an entry by reversing it (entries are never changed or deleted)."""
    e = books.get_entry(session, entry_id, operator_org_id=principal.org_id)
    return _entry_view(books.reverse(session, e, reason=body.reason, actor=actor_of(principal)))


@router.post("/books/metered")
def book_metered(body: SubscriptionsIn, session: SessionDep,
                 principal: Annotated[Principal, require("settlement.manage")]):
    """Book the month's metered revenue as product sales (once per month)."""
    e = books.book_metered_month(session, operator_org_id=int(principal.org_id), year=body.year, month=body.month,
                                 actor=actor_of(principal))
    return None if e is None else _entry_view(e)


@router.get("/books")
def read_books(session: SessionDep, principal: Annotated[Principal, require("settlement.manage")],
               year: Year | None = None):
    """Your cost and revenue books for the year: entries, totals per category, reconciliation with metering."""
    year = year or _now_period()[0]
    op = int(principal.org_id)
    return {"categories": {b: {k: {"zh": zh, "en": en} for k, (zh, en) in c.items()}
                           for b, c in books.CATEGORIES.items()},
            "entries": [_entry_view(e) for e in books.entries(session, op, year)],
            "totals": books.totals(session, op, year), "reconciliation": books.reconcile(session, op, year)}


# --- settlement and the DRC report ---------------------------------------------------------------

class SettlementIn(BaseModel):
    year: int = Field(ge=2000, le=2100)
    rule: str = Field(default="declared", max_length=16, description="declared | rows | equal")


@router.post("/settlements", status_code=201)
def run_settlement(body: SettlementIn, session: SessionDep,
                   principal: Annotated[Principal, require("settlement.manage")]):
    """Settle an ended year: the distribution per product and party (running it again returns it unchanged)."""
    s = settlement.run(session, operator_org_id=int(principal.org_id), year=body.year, rule=body.rule,
                       actor=actor_of(principal))
    return settlement.view(session, s)


@router.post("/settlements/{settlement_id}/filing")
def file_settlement(settlement_id: ObjectId, session: SessionDep,
                    principal: Annotated[Principal, require("settlement.manage")]):
    """File the distribution details with the bureau."""
    s = settlement.get(session, settlement_id, principal.org_id)
    return settlement.view(session, settlement.file(session, s, actor=actor_of(principal)))


@router.get("/settlements")
def list_settlements(session: SessionDep, principal: Annotated[Principal, require("billing.read")],
                     year: Year | None = None, format: Format = "json"):  # noqa: A002
    """Settlements you may read (the operator its own, the bureau all, departments and partners their
    lines of filed ones); format=pdf or xlsx downloads the distribution details."""
    found = settlement.visible(session, principal.org_id, year)
    if format == "json":
        return found
    doc = settlement.document(found, reader=agreements.org_name(session, principal.org_id))
    return _download(doc, format, f"settlements-{year or 'all'}")


@router.get("/reports/drc")
def drc_report(session: SessionDep, principal: Annotated[Principal, require("price.cap.set")],
               year: Year | None = None, format: Format = "json"):  # noqa: A002
    """The bureau's report on a year's operation to the DRC (default: the previous year)."""
    year = year or _now_period()[0] - 1
    report = settlement.drc_report(session, year)
    if format == "json":
        return report
    return _download(settlement.drc_document(report), format, f"drc-report-{year}")
