"""Regulated prices (BRIEF 7): maximum permitted revenue, price caps, operator prices, trial filings.

Guarantees:
- every price, cap and maximum revenue is a new row (history); none is ever updated;
- a price is refused above the cap in force for its product and unit, without a cap, or for a free
  (public governance / public welfare) product: the error names the rule;
- a trial price (an operator without a completed operating year) is in force only once filed with
  the DRC (`file_trial`);
- among the rows in force at a moment (effective_from reached; a trial one filed), the one created
  last wins (`cap_in_force`, `price_in_force`).

The callers (authops.platform.billing.service) supply what governance knows: whether the product is
free, whether the operator has completed an operating year, which organisation is the DRC.
"""

from __future__ import annotations


from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, or_, select
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.billing.models import MaxRevenue, Price, PriceCap, PriceFiling, RevenueCounter, UsageRecord
from authops.billing.rating import shanghai_year, year_bounds
from authops.core.clock import utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound

# billing unit -> (zh, en)
UNITS: dict[str, tuple[str, str]] = {
    "per_call": ("按次", "per call"), "per_subject": ("按主体（条）", "per subject (record)"),
    "per_batch": ("按批", "per batch"), "per_month": ("按月", "per month"),
    "per_volume": ("按数据量（千条）", "per data volume (1,000 records)"),
}
DEFAULT_WARNINGS = (80, 95)
MAX_FEN = 10**13  # 100 billion yuan: anything larger is a typing error


class FreeProduct(InvalidInput):
    code = "free_product"


class PriceAboveCap(InvalidInput):
    code = "price_above_cap"


class NoPriceCap(Conflict):
    code = "no_price_cap"


def _fen(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_FEN:
        raise InvalidInput(f"{field} is a whole number of fen, 0 to {MAX_FEN}", details={"field": field})
    return value


def _unit(unit: Any) -> str:
    if unit not in UNITS:
        raise InvalidInput(f"unit must be one of {', '.join(UNITS)}", details={"field": "unit"})
    return unit


def _reason(text: Any, field: str = "reason") -> str:
    if not isinstance(text, str) or len(text) > 500:
        raise InvalidInput(f"{field} is text of at most 500 characters", details={"field": field})
    return text.strip()


def _refuse_free(product_id: int, free: bool) -> None:
    if free:
        raise FreeProduct(f"product {product_id} is a public-governance or public-welfare product: such products "
                          "are free and cannot be given a price (BRIEF 7)",
                          details={"field": "product_id", "rule": "free_products"})


# --- maximum permitted revenue ---------------------------------------------------------------------

def set_max_revenue(session: Session, *, operator_org_id: int, year: int, amount_fen: int, actor: Any,
                    co_set_by_org_id: int | None, warn_at_pct: list[int] | tuple[int, ...] = DEFAULT_WARNINGS,
                    reason: str = "") -> MaxRevenue:
    """A new maximum revenue for the operator's `year`, in force at once; the running total follows."""
    who = audit_log.as_actor(actor)
    _fen(amount_fen, "amount_fen")
    if not isinstance(year, int) or not 2000 <= year <= 2100:
        raise InvalidInput("year is a calendar year, e.g. 2026", details={"field": "year"})
    warn = sorted(set(warn_at_pct))
    if any(not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 99 for p in warn):
        raise InvalidInput("warn_at_pct lists whole percentages 1-99, e.g. [80, 95]", details={"field": "warn_at_pct"})
    row = MaxRevenue(operator_org_id=operator_org_id, year=year, amount_fen=amount_fen, warn_at_pct=warn,
                     co_set_by_org_id=co_set_by_org_id, set_by_org_id=int(who.org_id or 0), set_by=who.name[:100],
                     reason=_reason(reason), effective_from=utcnow())
    session.add(row)
    session.flush()
    counter = ensure_counter(session, operator_org_id, year)
    counter.ceiling_fen, counter.warn_at_pct = amount_fen, warn
    session.add(counter)
    session.flush()
    audit_log.record(session, who, "billing.max_revenue.set", object_type="organisation", object_id=operator_org_id,
                     details={"year": year, "amount_fen": amount_fen, "warn_at_pct": warn,
                              "co_set_by_org_id": co_set_by_org_id, "row": row.id})
    return row


def max_revenue_in_force(session: Session, operator_org_id: int, year: int) -> MaxRevenue | None:
    return session.execute(select(MaxRevenue).where(MaxRevenue.operator_org_id == operator_org_id,
                                                    MaxRevenue.year == year)
                           .order_by(MaxRevenue.id.desc())).scalars().first()


def year_revenue(session: Session, operator_org_id: int, year: int) -> int:
    """The year's metered revenue from the usage records (one indexed aggregate)."""
    start, end = year_bounds(year)
    return int(session.execute(select(func.coalesce(func.sum(UsageRecord.amount_fen), 0))
                               .where(UsageRecord.operator_org_id == operator_org_id,
                                      UsageRecord.at >= start, UsageRecord.at < end)).scalar_one())


def insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING (PostgreSQL, SQLite); True when the row was inserted."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # Asked with RETURNING, not rowcount: on PostgreSQL the insert returns its new id implicitly and
    # rowcount is then -1, which made every revenue warning look like a duplicate (and go unaudited).
    stmt = insert(model).values(**values).on_conflict_do_nothing().returning(sa.literal_column("1"))
    return session.execute(stmt).first() is not None


def ensure_counter(session: Session, operator_org_id: int, year: int, *, exclude_fen: int = 0) -> RevenueCounter:
    """The running total row of (operator, year); created from the usage records when missing, less
    `exclude_fen` (uses this transaction already recorded but has not charged yet: see
    metering.defer_charges). Two transactions creating it at once: the loser's insert is skipped
    (ON CONFLICT DO NOTHING); the winner's total holds only committed uses and its own."""
    q = select(RevenueCounter).where(RevenueCounter.operator_org_id == operator_org_id,
                                     RevenueCounter.year == year)
    found = session.execute(q).scalars().first()
    if found is not None:
        return found
    values = {"operator_org_id": operator_org_id, "year": year,
              "revenue_fen": year_revenue(session, operator_org_id, year) - exclude_fen, "warn_at_pct": []}
    insert_ignore(session, RevenueCounter, values)
    return session.execute(q.execution_options(populate_existing=True)).scalars().one()


# --- caps -------------------------------------------------------------------------------------------

def set_cap(session: Session, *, product_id: int, unit: str, cap_fen: int, free: bool, actor: Any,
            reason: str = "", effective_from: datetime | None = None) -> PriceCap:
    """The bureau's upper price limit for a product and unit (a free product cannot be priced)."""
    who = audit_log.as_actor(actor)
    _refuse_free(product_id, free)
    row = PriceCap(product_id=product_id, unit=_unit(unit), cap_fen=_fen(cap_fen, "cap_fen"),
                   set_by_org_id=int(who.org_id or 0), set_by=who.name[:100], reason=_reason(reason),
                   effective_from=_from(effective_from))
    session.add(row)
    session.flush()
    audit_log.record(session, who, "billing.cap.set", object_type="product", object_id=product_id,
                     details={"unit": unit, "cap_fen": cap_fen, "effective_from": row.effective_from.isoformat(),
                              "row": row.id})
    return row


def _from(effective_from: datetime | None) -> datetime:
    now = utcnow()
    if effective_from is None:
        return now
    if not isinstance(effective_from, datetime):
        raise InvalidInput("effective_from is a date and time (UTC)", details={"field": "effective_from"})
    if effective_from.tzinfo is not None:
        from authops.core.clock import as_utc

        effective_from = as_utc(effective_from).replace(tzinfo=None)
    if effective_from < now.replace(microsecond=0):
        raise InvalidInput("effective_from is in the past; history is not rewritten: give now or a later time",
                           details={"field": "effective_from"})
    return effective_from


def cap_in_force(session: Session, product_id: int, unit: str, at: datetime | None = None) -> PriceCap | None:
    return session.execute(select(PriceCap).where(PriceCap.product_id == product_id, PriceCap.unit == unit,
                                                  PriceCap.effective_from <= (at or utcnow()))
                           .order_by(PriceCap.id.desc()).limit(1)).scalars().first()


# --- operator prices --------------------------------------------------------------------------------

def set_price(session: Session, *, operator_org_id: int, product_id: int, unit: str, price_fen: int, free: bool,
              trial: bool, actor: Any, basis: str = "", effective_from: datetime | None = None) -> Price:
    """The operator's price, at or below the cap in force when it takes effect. A trial price
    (`trial`: the operator has not completed an operating year) waits for its DRC filing."""
    who = audit_log.as_actor(actor)
    _refuse_free(product_id, free)
    unit, price_fen = _unit(unit), _fen(price_fen, "price_fen")
    start = _from(effective_from)
    cap = cap_in_force(session, product_id, unit, start)
    if cap is None:
        raise NoPriceCap(f"product {product_id} has no price cap per {unit} in force on {start:%Y-%m-%d %H:%M} UTC; "
                         "the bureau sets the cap before the operator prices the product (BRIEF 7)",
                         details={"field": "unit", "rule": "price_at_or_below_cap"})
    if price_fen > cap.cap_fen:
        raise PriceAboveCap(f"price_fen {price_fen} is above the cap of {cap.cap_fen} fen per {unit} for product "
                            f"{product_id}: the operator's price must be at or below the bureau's cap (BRIEF 7)",
                            details={"field": "price_fen", "rule": "price_at_or_below_cap", "cap_fen": cap.cap_fen})
    row = Price(operator_org_id=operator_org_id, product_id=product_id, unit=unit, price_fen=price_fen,
                kind="trial" if trial else "regular", basis=_reason(basis, "basis"), set_by=who.name[:100],
                effective_from=start)
    session.add(row)
    session.flush()
    audit_log.record(session, who, "billing.price.set", object_type="product", object_id=product_id,
                     details={"unit": unit, "price_fen": price_fen, "kind": row.kind, "row": row.id,
                              "cap_fen": cap.cap_fen, "effective_from": start.isoformat()})
    return row


def get_price(session: Session, price_id: int, *, operator_org_id: int | None = None) -> Price:
    p = session.get(Price, price_id)
    if p is None or (operator_org_id is not None and p.operator_org_id != operator_org_id):
        raise NotFound(f"no price {price_id}")
    return p


def file_trial(session: Session, price: Price, *, drc_org_id: int, actor: Any) -> PriceFiling:
    """File a trial price with the DRC: from now on (or its effective_from) it is in force."""
    who = audit_log.as_actor(actor)
    if price.kind != "trial":
        raise Conflict(f"price {price.id} is a regular price; only trial prices are filed with the DRC",
                       code="not_trial")
    if session.execute(select(PriceFiling.id).where(PriceFiling.price_id == price.id)).first() is not None:
        raise Conflict(f"trial price {price.id} is already filed", code="already_filed")
    now = utcnow()
    n = session.execute(select(func.count()).select_from(PriceFiling)).scalar_one() + 1
    filing = PriceFiling(price_id=price.id, number=f"TP-{now.year}-{n:05d}", filed_with_org_id=drc_org_id,
                         filed_by=who.name[:100], filed_at=now)
    session.add(filing)
    session.flush()
    audit_log.record(session, who, "billing.price.file", object_type="price", object_id=price.id,
                     details={"number": filing.number, "filed_with_org_id": drc_org_id,
                              "product_id": price.product_id, "price_fen": price.price_fen})
    return filing


def in_force_clause(at: datetime):
    """SQL condition: the price row is in force at `at` (reached; a trial one filed by then)."""
    filed = select(PriceFiling.id).where(PriceFiling.price_id == Price.id, PriceFiling.filed_at <= at).exists()
    return (Price.effective_from <= at) & or_(Price.kind == "regular", filed)


def price_in_force(session: Session, operator_org_id: int, product_id: int, unit: str,
                   at: datetime | None = None) -> Price | None:
    at = at or utcnow()
    return session.execute(select(Price).where(Price.operator_org_id == operator_org_id,
                                               Price.product_id == product_id, Price.unit == unit,
                                               in_force_clause(at))
                           .order_by(Price.id.desc()).limit(1)).scalars().first()


def filing_of(session: Session, price_id: int) -> PriceFiling | None:
    return session.execute(select(PriceFiling).where(PriceFiling.price_id == price_id)).scalars().first()


def history(session: Session, product_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every cap and price of a product, oldest first."""
    caps = session.execute(select(PriceCap).where(PriceCap.product_id == product_id).order_by(PriceCap.id)).scalars()
    prices = session.execute(select(Price).where(Price.product_id == product_id).order_by(Price.id)).scalars()
    return {"caps": [cap_view(c) for c in caps], "prices": [price_view(session, p) for p in prices]}


def cap_view(c: PriceCap) -> dict[str, Any]:
    return {"id": c.id, "product_id": c.product_id, "unit": c.unit, "cap_fen": c.cap_fen,
            "effective_from": c.effective_from, "set_by": c.set_by, "reason": c.reason}


def price_view(session: Session, p: Price) -> dict[str, Any]:
    f = filing_of(session, p.id) if p.kind == "trial" else None
    return {"id": p.id, "operator_org_id": p.operator_org_id, "product_id": p.product_id, "unit": p.unit,
            "price_fen": p.price_fen, "kind": p.kind, "basis": p.basis, "effective_from": p.effective_from,
            "filing": None if f is None else {"number": f.number, "filed_with_org_id": f.filed_with_org_id,
                                              "filed_at": f.filed_at},
            "in_force_possible": p.kind == "regular" or f is not None}


def year_of(at: datetime | None = None) -> int:
    return shanghai_year(at or utcnow())
