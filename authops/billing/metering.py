"""Metering: what a product call, batch or subscription period costs, and its usage record.

`meter` keeps the signature its callers use (they pass the usage agreement's `pricing_method` and
`price_fen`) and rates the use at the moment it happens (authops.billing.rating.rate):
    unit price = min(agreement price, operator's price in force, bureau's cap in force); 0 for a
    free product. So the agreement's price never wins when a cap or published price in force is lower.
Units by pricing method:
    per_call, per_record: price x units (a call is one unit; a batch, its answered rows);
    per_batch: price once per batch, and once per synchronous call (a batch of one);
    monthly: price once per subscription period (channel "subscription"), 0 per use;
    free: 0.
Exactly once: `request_id` is unique and (customer, idempotency key) is unique, so a second
insert of the same use fails at flush and the caller's rollback undoes the whole use.

Revenue ceiling: a paid use adds its amount to the operator's running total of the year
(billing_revenue_counter) with ONE conditional UPDATE ("... WHERE revenue + amount <= ceiling")
before the usage record is written. On PostgreSQL concurrent transactions queue on that row and
each re-checks the condition against the committed total, so parallel calls stop exactly at the
ceiling; a refused use raises RevenueCeilingReached having written nothing but its audit event.
Crossing a warning threshold (default 80% and 95%) records a RevenueWarning once per threshold and
ceiling (a raised ceiling warns again).
Money is integer fen. Everything is flushed into the caller's transaction, never committed here.

Late charge (the hot path of synchronous calls): a caller that sets `defer_charges(session)`
has the running-total UPDATE applied in the transaction's before-commit step, ahead of the audit
append, instead of inside `meter`. The counter row is then locked only for the last statements
and the COMMIT, not for the rest of the request, which is what lets concurrent paid calls of one
operator overlap. Such a caller commits with `commit_charged(session)`: a refusal then surfaces
from the commit (the transaction rolls back, nothing is charged) and its audit event is written in
a transaction of its own. On PostgreSQL a transaction with one charge and one audit event (a paid
call) goes further: the UPDATE becomes a CTE of the audit append's own statement (audit_log.Gate),
so the counter and the audit chain are locked by one statement and released by the COMMIT right
after it. The CTE passes only within the ceiling and when no warning threshold is crossed; else the
ordinary UPDATE above runs (refusing, or recording the warning) and the append follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.billing.models import Price, PriceCap, RevenueCounter, RevenueWarning, UsageRecord
from authops.billing.prices import ensure_counter, in_force_clause, insert_ignore
from authops.billing.rating import FREE_CATEGORIES, METHOD_UNIT, rate, shanghai_year
from authops.core.clock import utcnow
from authops.core.errors import Forbidden, InvalidInput

PER_UNIT = ("per_call", "per_record")
UNPRICED = ("free",)
# The product table is governance's; billing reads two columns of it without importing the layer above.
_PRODUCT = sa.table("gov_product", sa.column("id"), sa.column("operator_org_id"), sa.column("category"))


class RevenueCeilingReached(Forbidden):
    code = "revenue_ceiling_reached"


def amount(pricing_method: str, price_fen: int, units: int, *, channel: str = "call") -> tuple[int, int]:
    """(unit price, amount) in fen for `units` used through `channel` (call | batch | subscription)."""
    if not isinstance(units, int) or units < 0:
        raise InvalidInput("units is a whole number, 0 or more", details={"field": "units"})
    if pricing_method in UNPRICED or not price_fen:
        return 0, 0
    if pricing_method in PER_UNIT:
        return price_fen, price_fen * units
    if pricing_method == "per_batch":
        return price_fen, price_fen if units or channel == "call" else 0
    if pricing_method == "monthly":
        return (price_fen, price_fen) if channel == "subscription" else (0, 0)
    raise InvalidInput(f"unknown pricing method {pricing_method!r}", details={"field": "pricing_method"})


def find(session: Session, customer_org_id: int, idempotency_key: str) -> UsageRecord | None:
    return session.execute(select(UsageRecord).where(UsageRecord.customer_org_id == customer_org_id,
                                                     UsageRecord.idempotency_key == idempotency_key)
                           ).scalars().first()


def unit_of(method: Any) -> Any:
    """SQL: the price unit of a pricing method (METHOD_UNIT; '' for none, as METHOD_UNIT.get gives)."""
    return sa.case(METHOD_UNIT, value=method, else_="")


def terms_columns(product_id: Any, operator_org_id: Any, unit: Any, at: Any) -> tuple[Any, Any]:
    """SQL: (operator's price in force, bureau's cap in force) for a product and unit at `at`, as
    scalar subqueries, for a statement that reads the product anyway (governance's admit_call)."""
    cap = (select(PriceCap.cap_fen).where(PriceCap.product_id == product_id, PriceCap.unit == unit,
                                          PriceCap.effective_from <= at)
           .order_by(PriceCap.id.desc()).limit(1).scalar_subquery())
    price = (select(Price.price_fen).where(Price.operator_org_id == operator_org_id, Price.product_id == product_id,
                                           Price.unit == unit, in_force_clause(at))
             .order_by(Price.id.desc()).limit(1).scalar_subquery())
    return price, cap


def _terms_statement():
    price, cap = terms_columns(sa.bindparam("product_id"), _PRODUCT.c.operator_org_id, sa.bindparam("unit"),
                               sa.bindparam("at"))
    return select(_PRODUCT.c.operator_org_id, _PRODUCT.c.category, price, cap).where(
        _PRODUCT.c.id == sa.bindparam("product_id"))


_TERMS = _terms_statement()  # built once: every call binds its product, unit and time


def terms_in_force(session: Session, product_id: int, unit: str, at: datetime) -> tuple[int | None, bool, int | None,
                                                                                        int | None]:
    """(operator, free?, operator's price, cap) for a product and unit at `at`: one statement."""
    row = session.execute(_TERMS, {"product_id": product_id, "unit": unit, "at": at}).first()
    if row is None:
        raise InvalidInput(f"no product {product_id}", details={"field": "product_id"})
    return terms_of(row[0], row[1], row[2], row[3])


def terms_of(operator_org_id: int | None, category: str | None, price_fen: int | None, cap_fen: int | None
             ) -> tuple[int | None, bool, int | None, int | None]:
    """terms_in_force's answer from columns another statement read (see terms_columns)."""
    return operator_org_id, category in FREE_CATEGORIES, price_fen, cap_fen


def _charge(session: Session, operator_org_id: int, at: datetime, total: int, *, recorded_fen: int = 0
            ) -> tuple[int, int | None, list[int]]:
    """Add `total` to the year's running total if it stays within the ceiling; (revenue, ceiling, warnings).
    `recorded_fen`: this transaction's uses already in billing_usage and not yet charged (a missing
    counter is created from the usage records less these)."""
    year = shanghai_year(at)
    stmt = (update(RevenueCounter)
            .where(RevenueCounter.operator_org_id == operator_org_id, RevenueCounter.year == year,
                   sa.or_(RevenueCounter.ceiling_fen.is_(None),
                          RevenueCounter.revenue_fen + total <= RevenueCounter.ceiling_fen))
            .values(revenue_fen=RevenueCounter.revenue_fen + total)
            .returning(RevenueCounter.revenue_fen, RevenueCounter.ceiling_fen, RevenueCounter.warn_at_pct)
            .execution_options(synchronize_session=False))
    row = session.execute(stmt).first()
    if row is None:
        counter = ensure_counter(session, operator_org_id, year, exclude_fen=recorded_fen)
        if counter.ceiling_fen is None or counter.revenue_fen + total <= counter.ceiling_fen:
            row = session.execute(stmt).first()
    if row is None:
        counter = ensure_counter(session, operator_org_id, year)
        raise RevenueCeilingReached(
            f"the operator's revenue for {year} would exceed its maximum permitted revenue "
            f"({counter.revenue_fen} + {total} > {counter.ceiling_fen} fen): paid orders are refused for the rest "
            "of the year (BRIEF 7); nothing was charged",
            details={"rule": "maximum_permitted_revenue", "year": year, "revenue_fen": counter.revenue_fen,
                     "ceiling_fen": counter.ceiling_fen, "amount_fen": total})
    return int(row[0]), row[1], list(row[2] or [])


def _warn(session: Session, operator_org_id: int, at: datetime, revenue: int, total: int, ceiling: int | None,
          thresholds: list[int]) -> None:
    if not ceiling:
        return
    for pct in thresholds:
        mark = ceiling * pct / 100
        if revenue - total < mark <= revenue:
            year = shanghai_year(at)
            if insert_ignore(session, RevenueWarning, {"operator_org_id": operator_org_id, "year": year,
                                                       "threshold_pct": pct, "revenue_fen": revenue,
                                                       "ceiling_fen": ceiling, "at": at}):
                audit_log.record(session, audit_log.SYSTEM, "billing.revenue.warning", object_type="organisation",
                                 object_id=operator_org_id, details={"year": year, "threshold_pct": pct,
                                                                     "revenue_fen": revenue, "ceiling_fen": ceiling})


DEFER_KEY = "authops.billing.defer_charges"
PENDING_KEY = "authops.billing.pending_charges"
REFUSED_KEY = "authops.billing.refused_charge"
_installed = False


def defer_charges(session: Session) -> None:
    """Apply this transaction's charges to the running total at commit (see the module docstring)."""
    global _installed
    if not _installed:
        # insert=True: ahead of the audit append, so the audit head is not held while the counter waits
        event.listen(OrmSession, "before_commit", _apply_pending, insert=True)
        event.listen(OrmSession, "after_soft_rollback", _drop_pending)
        _installed = True
    session.info[DEFER_KEY] = True


def _drop_pending(session: OrmSession, *_: object) -> None:
    session.info.pop(PENDING_KEY, None)


def _apply_pending(session: OrmSession) -> None:
    pendings = session.info.pop(PENDING_KEY, [])
    if (len(pendings) == 1 and audit_log.pending(session)
            and session.connection().dialect.name == "postgresql"):
        # One charge (a paid call): in the audit append's own statement, so the counter's row lock is
        # taken in the same statement as the audit chain's and both are released by the COMMIT that
        # follows. When it does not pass (no counter yet, the ceiling, a warning threshold crossed)
        # the ordinary path below runs instead, from the gate's fallback.
        p = pendings[0]
        audit_log.gate(session, audit_log.Gate(
            key="billing.revenue", cte=_charge_cte,
            params={"g_operator": p["operator"], "g_year": shanghai_year(p["at"]), "g_total": p["total"]},
            fallback=lambda s: _charge_pending(s, pendings)))
        return
    _charge_pending(session, pendings)


def _charge_cte():
    """The running total's conditional UPDATE as a CTE for the audit gate (see charge_within)."""
    return charge_within().cte("charged")


def charge_within():
    """The running total's conditional UPDATE (binds g_operator, g_year, g_total): it adds g_total and
    returns the new total only within the ceiling and when no warning threshold is crossed; else it
    changes nothing and returns no row, and the ordinary path (_charge, _warn) must run instead."""
    rc = RevenueCounter.__table__
    total = sa.bindparam("g_total", type_=sa.BigInteger())
    pct = sa.func.jsonb_array_elements_text(sa.cast(rc.c.warn_at_pct, JSONB)).table_valued("value").render_derived()
    revenue = sa.cast(rc.c.revenue_fen, sa.BigInteger())  # x 100 in 64 bits
    threshold = sa.cast(pct.c.value, sa.BigInteger()) * rc.c.ceiling_fen
    crosses = sa.exists(select(sa.literal(1)).select_from(pct).where(
        revenue * 100 < threshold, threshold <= (revenue + total) * 100))
    return (update(rc).where(rc.c.operator_org_id == sa.bindparam("g_operator"),
                             rc.c.year == sa.bindparam("g_year"),
                             sa.or_(rc.c.ceiling_fen.is_(None),
                                    sa.and_(rc.c.revenue_fen + total <= rc.c.ceiling_fen, ~crosses)))
            .values(revenue_fen=rc.c.revenue_fen + total).returning(rc.c.revenue_fen))


def _charge_pending(session: OrmSession, pendings: list[dict[str, Any]]) -> None:
    uncharged: dict[tuple[int, int], int] = {}  # recorded in billing_usage, not yet in the running total
    for pending in pendings:
        key = (pending["operator"], shanghai_year(pending["at"]))
        uncharged[key] = uncharged.get(key, 0) + pending["total"]
    for pending in pendings:
        key = (pending["operator"], shanghai_year(pending["at"]))
        try:
            revenue, ceiling, thresholds = _charge(session, pending["operator"], pending["at"], pending["total"],
                                                   recorded_fen=uncharged[key])
            uncharged[key] -= pending["total"]
        except RevenueCeilingReached as exc:
            session.info[REFUSED_KEY] = (pending, exc)
            raise
        _warn(session, pending["operator"], pending["at"], revenue, pending["total"], ceiling, thresholds)


def commit_charged(session: Session) -> None:
    """Commit a transaction whose charges were deferred. A use refused at the ceiling rolls the
    transaction back, is audited in a transaction of its own (on the same connection) and raises."""
    try:
        session.commit()
    except RevenueCeilingReached as exc:
        pending, _ = session.info.pop(REFUSED_KEY, (None, exc))
        session.rollback()
        if pending is not None:
            audit_log.record(session, audit_log.SYSTEM, "billing.revenue.refused", outcome="denied",
                             object_type="product", object_id=pending["product_id"],
                             details={"customer_org_id": pending["customer_org_id"],
                                      "request_id": pending["request_id"], **exc.details})
            session.commit()
        raise


def rated(*, customer_org_id: int, product_id: int, agreement_id: int, request_id: str, pricing_method: str,
          price_fen: int, units: int, channel: str, idempotency_key: str | None, request_sha256: str,
          response: dict[str, Any] | None, at: datetime, terms: tuple[int | None, bool, int | None, int | None]
          ) -> dict[str, Any]:
    """A use's usage record, rated under `terms` (terms_in_force's answer at `at`), as column values;
    its amount_fen is what the use charges to the operator's revenue total. When `response` carries a
    "metered" entry, its amount_fen is set to that amount (the stored response then agrees with it)."""
    unit = METHOD_UNIT.get(pricing_method, "")
    operator, free, price, cap = terms
    unit_price, source = rate(price_fen, price, cap, free=free or pricing_method in UNPRICED)
    unit_price, total = amount(pricing_method, unit_price, units, channel=channel)
    if isinstance(response, dict) and isinstance(response.get("metered"), dict):
        response["metered"]["amount_fen"] = total
    return {"customer_org_id": customer_org_id, "product_id": product_id, "agreement_id": agreement_id,
            "request_id": request_id, "channel": channel, "units": units, "unit_price_fen": unit_price,
            "amount_fen": total, "pricing_method": pricing_method, "idempotency_key": idempotency_key,
            "request_sha256": request_sha256, "response": dict(response or {}), "at": at,
            "operator_org_id": operator, "unit": unit, "agreed_price_fen": max(int(price_fen or 0), 0),
            "price_source": source}


def meter(session: Session, *, customer_org_id: int, product_id: int, agreement_id: int, request_id: str,
          pricing_method: str, price_fen: int, units: int = 1, channel: str = "call",
          idempotency_key: str | None = None, request_sha256: str = "", response: dict[str, Any] | None = None,
          at: datetime | None = None, terms: tuple[int | None, bool, int | None, int | None] | None = None
          ) -> UsageRecord:
    """Rate, charge against the ceiling and add the usage record (see the module docstring).

    When `response` carries a "metered" entry, its amount_fen is set to the amount charged (the
    stored response, which a replay returns, then agrees with the charge). `terms`: terms_in_force's
    answer for this product, unit and `at` when the caller read it already (a product call reads it
    with the agreement: terms_columns)."""
    at = at or utcnow()
    values = rated(customer_org_id=customer_org_id, product_id=product_id, agreement_id=agreement_id,
                   request_id=request_id, pricing_method=pricing_method, price_fen=price_fen, units=units,
                   channel=channel, idempotency_key=idempotency_key, request_sha256=request_sha256,
                   response=response, at=at,
                   terms=terms or terms_in_force(session, product_id, METHOD_UNIT.get(pricing_method, ""), at))
    operator, total = values["operator_org_id"], values["amount_fen"]
    if total and operator is not None and session.info.get(DEFER_KEY):
        session.info.setdefault(PENDING_KEY, []).append(
            {"operator": operator, "at": at, "total": total, "product_id": product_id,
             "customer_org_id": customer_org_id, "request_id": request_id})
    elif total and operator is not None:
        try:
            revenue, ceiling, thresholds = _charge(session, operator, at, total)
        except RevenueCeilingReached as exc:
            audit_log.record(session, audit_log.SYSTEM, "billing.revenue.refused", outcome="denied",
                             object_type="product", object_id=product_id,
                             details={"customer_org_id": customer_org_id, "request_id": request_id, **exc.details})
            raise
        _warn(session, operator, at, revenue, total, ceiling, thresholds)
    rec = UsageRecord(**values)
    session.add(rec)
    session.flush()
    return rec


def usage(session: Session, customer_org_id: int, product_id: int | None = None) -> list[UsageRecord]:
    q = select(UsageRecord).where(UsageRecord.customer_org_id == customer_org_id)
    if product_id is not None:
        q = q.where(UsageRecord.product_id == product_id)
    return list(session.execute(q.order_by(UsageRecord.id)).scalars())
