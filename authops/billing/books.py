"""The operation's cost and revenue books (BRIEF 8), kept apart from anything else the operator does.

Guarantees: entries are only ever added (this module has no update or delete); a correction is a
reversing entry (`reverse`: the same amount negated, pointing at the entry it reverses; an entry is
reversed at most once, a reversal is never reversed: book the right amount as a new entry); each
entry is in one of the plan's categories; `reconcile` compares the product-sales book with the
metered revenue month by month, so a third-party audit can see every difference.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.billing.models import BookEntry, UsageRecord
from authops.billing.prices import MAX_FEN
from authops.billing.rating import month_bounds, year_bounds
from authops.core.clock import to_shanghai
from authops.core.errors import Conflict, InvalidInput, NotFound

CATEGORIES: dict[str, dict[str, tuple[str, str]]] = {
    "cost": {"platform": ("平台建设与运营", "platform build and operation"),
             "data_handling": ("数据传输、存储与治理", "data transfer, storage and governance"),
             "staff": ("人员", "staff"), "data_acquisition": ("数据采集", "data acquisition"),
             "period": ("期间费用", "period costs")},
    "revenue": {"product_sales": ("产品销售", "product sales"), "services": ("服务", "services")},
}
METERED_REF = "metered:"


def _check(book: Any, category: Any, amount_fen: Any, occurred_on: Any) -> None:
    if book not in CATEGORIES:
        raise InvalidInput("book is cost or revenue", details={"field": "book"})
    if category not in CATEGORIES[book]:
        raise InvalidInput(f"category of the {book} book is one of {', '.join(CATEGORIES[book])}",
                           details={"field": "category"})
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or not 0 < amount_fen <= MAX_FEN:
        raise InvalidInput("amount_fen is a whole number of fen above 0 (correct an entry by reversing it)",
                           details={"field": "amount_fen"})
    if not isinstance(occurred_on, date):
        raise InvalidInput("occurred_on is a date", details={"field": "occurred_on"})


def post(session: Session, *, operator_org_id: int, book: str, category: str, amount_fen: int, occurred_on: date,
         actor: Any, description: str = "", reference: str = "") -> BookEntry:
    who = audit_log.as_actor(actor)
    _check(book, category, amount_fen, occurred_on)
    if len(description) > 500 or len(reference) > 100:
        raise InvalidInput("description is at most 500 characters, reference at most 100",
                           details={"field": "description" if len(description) > 500 else "reference"})
    e = BookEntry(operator_org_id=operator_org_id, book=book, category=category, amount_fen=amount_fen,
                  occurred_on=occurred_on, year=occurred_on.year, description=description.strip(),
                  reference=reference.strip(), recorded_by=who.name[:100])
    session.add(e)
    session.flush()
    audit_log.record(session, who, "billing.book.post", object_type="book_entry", object_id=e.id,
                     details={"book": book, "category": category, "amount_fen": amount_fen,
                              "occurred_on": occurred_on.isoformat(), "reference": e.reference})
    return e


def get_entry(session: Session, entry_id: int, *, operator_org_id: int | None = None) -> BookEntry:
    e = session.get(BookEntry, entry_id)
    if e is None or (operator_org_id is not None and e.operator_org_id != operator_org_id):
        raise NotFound(f"no book entry {entry_id}")
    return e


def reverse(session: Session, entry: BookEntry, *, reason: str, actor: Any) -> BookEntry:
    """A reversing entry for `entry` (same book, category and date; amount negated)."""
    who = audit_log.as_actor(actor)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 400:
        raise InvalidInput("give the reason for the correction (at most 400 characters)", details={"field": "reason"})
    if entry.reverses_id is not None:
        raise Conflict(f"entry {entry.id} is itself a reversal; book the correct amount as a new entry",
                       code="is_reversal")
    done = session.execute(select(BookEntry.id).where(BookEntry.reverses_id == entry.id)).first()
    if done is not None:
        raise Conflict(f"entry {entry.id} was already reversed by entry {done[0]}", code="already_reversed")
    r = BookEntry(operator_org_id=entry.operator_org_id, book=entry.book, category=entry.category,
                  amount_fen=-entry.amount_fen, occurred_on=entry.occurred_on, year=entry.year,
                  description=f"冲销 reversal of #{entry.id}: {reason.strip()}"[:500], reference=entry.reference,
                  reverses_id=entry.id, recorded_by=who.name[:100])
    session.add(r)
    session.flush()
    audit_log.record(session, who, "billing.book.reverse", object_type="book_entry", object_id=r.id,
                     details={"reverses": entry.id, "amount_fen": r.amount_fen})
    return r


def entries(session: Session, operator_org_id: int, year: int) -> list[BookEntry]:
    return list(session.execute(select(BookEntry).where(BookEntry.operator_org_id == operator_org_id,
                                                        BookEntry.year == year)
                                .order_by(BookEntry.occurred_on, BookEntry.id)).scalars())


def totals(session: Session, operator_org_id: int, year: int) -> dict[str, Any]:
    """Per book and category, the sum of entries (reversals included) for the year."""
    out: dict[str, dict[str, int]] = {book: {c: 0 for c in cats} for book, cats in CATEGORIES.items()}
    rows = session.execute(select(BookEntry.book, BookEntry.category, func.sum(BookEntry.amount_fen))
                           .where(BookEntry.operator_org_id == operator_org_id, BookEntry.year == year)
                           .group_by(BookEntry.book, BookEntry.category)).all()
    for book, category, amount in rows:
        out[book][category] = int(amount)
    return {"year": year, "cost": out["cost"], "revenue": out["revenue"],
            "cost_total_fen": sum(out["cost"].values()), "revenue_total_fen": sum(out["revenue"].values())}


def metered_by_month(session: Session, operator_org_id: int, year: int) -> dict[int, int]:
    start, end = year_bounds(year)
    out: dict[int, int] = defaultdict(int)
    for at, amount in session.execute(select(UsageRecord.at, UsageRecord.amount_fen)
                                      .where(UsageRecord.operator_org_id == operator_org_id,
                                             UsageRecord.at >= start, UsageRecord.at < end,
                                             UsageRecord.amount_fen != 0)):
        out[to_shanghai(at).month] += amount
    return dict(out)


def book_metered_month(session: Session, *, operator_org_id: int, year: int, month: int, actor: Any) -> BookEntry | None:
    """Book the month's metered revenue as product sales (reference metered:YYYY-MM), once: a month
    already booked (and not reversed) is left as it is; a month without revenue books nothing."""
    ref = f"{METERED_REF}{year}-{month:02d}"
    reversed_ids = select(BookEntry.reverses_id).where(BookEntry.reverses_id.is_not(None))
    existing = session.execute(select(BookEntry).where(BookEntry.operator_org_id == operator_org_id,
                                                       BookEntry.reference == ref, BookEntry.amount_fen > 0,
                                                       BookEntry.id.not_in(reversed_ids))).scalars().first()
    if existing is not None:
        return existing
    start, end = month_bounds(year, month)
    amount = int(session.execute(select(func.coalesce(func.sum(UsageRecord.amount_fen), 0))
                                 .where(UsageRecord.operator_org_id == operator_org_id, UsageRecord.at >= start,
                                        UsageRecord.at < end)).scalar_one())
    if amount == 0:
        return None
    last_day = to_shanghai(end).date() - timedelta(days=1)
    return post(session, operator_org_id=operator_org_id, book="revenue", category="product_sales",
                amount_fen=amount, occurred_on=last_day, actor=actor, reference=ref,
                description=f"{year}-{month:02d} 计量收入 metered revenue")


def reconcile(session: Session, operator_org_id: int, year: int) -> dict[str, Any]:
    """Month by month: metered revenue vs the product-sales book, and the year's difference."""
    metered = metered_by_month(session, operator_org_id, year)
    booked: dict[int, int] = defaultdict(int)
    for e in entries(session, operator_org_id, year):
        if e.book == "revenue" and e.category == "product_sales":
            booked[e.occurred_on.month] += e.amount_fen
    months = [{"month": m, "metered_fen": metered.get(m, 0), "booked_fen": booked.get(m, 0),
               "difference_fen": booked.get(m, 0) - metered.get(m, 0)} for m in range(1, 13)]
    total_m, total_b = sum(metered.values()), sum(booked.values())
    return {"year": year, "metered_fen": total_m, "booked_product_sales_fen": total_b,
            "difference_fen": total_b - total_m, "reconciled": total_b == total_m and
            all(m["difference_fen"] == 0 for m in months), "months": months}
