"""Billing tables: one usage record per metered product call or batch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class UsageRecord(SQLModel, table=True):
    """What a customer is charged for: a product call (or a batch), at the agreement's price.

    `idempotency_key` (the client's Idempotency-Key header) is unique per customer: a replay of
    the same request finds this row and returns `response` without a second charge.
    `response` is the answer as returned (no raw data: the product's released answer only).
    """

    __tablename__ = "billing_usage"
    __table_args__ = (UniqueConstraint("customer_org_id", "idempotency_key", name="uq_billing_usage_idem"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    agreement_id: int = Field(foreign_key="gov_agreement.id", index=True)
    request_id: str = Field(max_length=40, unique=True)
    channel: str = Field(default="call", max_length=16)  # call | batch
    units: int = 1
    unit_price_fen: int = 0
    amount_fen: int = 0
    pricing_method: str = Field(default="", max_length=16)
    idempotency_key: str | None = Field(default=None, max_length=128)
    request_sha256: str = Field(default="", max_length=64)
    response: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False, index=True))
