"""Metering: what a product call or batch costs under its agreement, and its usage record.

Pricing (the usage agreement's `pricing_method` and `price_fen`):
    per_call, per_record: price x units (a call is one unit; a batch, its answered rows);
    per_batch: price once per batch, and once per synchronous call (a batch of one);
    monthly, free: 0 per use (a subscription is invoiced by period, not by use).
Money is integer fen. The record is added to the caller's transaction (flushed, not committed),
so an answer and its charge commit together or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from authops.billing.models import UsageRecord
from authops.core.clock import utcnow
from authops.core.errors import InvalidInput

PER_UNIT = ("per_call", "per_record")
UNPRICED = ("monthly", "free")


def amount(pricing_method: str, price_fen: int, units: int, *, channel: str = "call") -> tuple[int, int]:
    """(unit price, amount) in fen for `units` used through `channel` (call | batch)."""
    if not isinstance(units, int) or units < 0:
        raise InvalidInput("units is a whole number, 0 or more", details={"field": "units"})
    if pricing_method in UNPRICED or not price_fen:
        return 0, 0
    if pricing_method in PER_UNIT:
        return price_fen, price_fen * units
    if pricing_method == "per_batch":
        return price_fen, price_fen if units or channel == "call" else 0
    raise InvalidInput(f"unknown pricing method {pricing_method!r}", details={"field": "pricing_method"})


def find(session: Session, customer_org_id: int, idempotency_key: str) -> UsageRecord | None:
    return session.execute(select(UsageRecord).where(UsageRecord.customer_org_id == customer_org_id,
                                                     UsageRecord.idempotency_key == idempotency_key)
                           ).scalars().first()


def meter(session: Session, *, customer_org_id: int, product_id: int, agreement_id: int, request_id: str,
          pricing_method: str, price_fen: int, units: int = 1, channel: str = "call",
          idempotency_key: str | None = None, request_sha256: str = "", response: dict[str, Any] | None = None,
          at: datetime | None = None) -> UsageRecord:
    """Add the usage record (flush: a duplicate idempotency key raises IntegrityError here)."""
    unit_price, total = amount(pricing_method, price_fen, units, channel=channel)
    rec = UsageRecord(customer_org_id=customer_org_id, product_id=product_id, agreement_id=agreement_id,
                      request_id=request_id, channel=channel, units=units, unit_price_fen=unit_price,
                      amount_fen=total, pricing_method=pricing_method, idempotency_key=idempotency_key,
                      request_sha256=request_sha256, response=dict(response or {}), at=at or utcnow())
    session.add(rec)
    session.flush()
    return rec


def usage(session: Session, customer_org_id: int, product_id: int | None = None) -> list[UsageRecord]:
    q = select(UsageRecord).where(UsageRecord.customer_org_id == customer_org_id)
    if product_id is not None:
        q = q.where(UsageRecord.product_id == product_id)
    return list(session.execute(q.order_by(UsageRecord.id)).scalars())
