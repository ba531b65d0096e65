"""Billing tables: usage, regulated prices, the revenue ceiling's running total, books, settlements.

Prices, caps and maximum revenues are history: a change is a new row with its `effective_from`;
no row is ever updated. Book entries are append-only too (a correction is a reversing entry).
The only rows updated in place are the running totals (`billing_revenue_counter`) and a
settlement's filing fields.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, JSON, Column, Date, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow
from authops.core.types import json_field, timestamp_field


class UsageRecord(SQLModel, table=True):
    """What a customer is charged for: a product call (or a batch), at the price in force.

    `idempotency_key` (the client's Idempotency-Key header) is unique per customer: a replay of
    the same request finds this row and returns `response` without a second charge.
    `response` is the answer as returned (no raw data: the product's released answer only).
    `price_source` says which rule set the unit price: agreement | price | cap | free.
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
    unit_price_fen: int = Field(default=0, sa_type=BigInteger)
    amount_fen: int = Field(default=0, sa_type=BigInteger)
    pricing_method: str = Field(default="", max_length=16)
    idempotency_key: str | None = Field(default=None, max_length=128)
    request_sha256: str = Field(default="", max_length=64)
    response: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False, index=True))
    operator_org_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    unit: str = Field(default="", max_length=16)
    agreed_price_fen: int = Field(default=0, sa_type=BigInteger)
    price_source: str = Field(default="agreement", max_length=16)


class MaxRevenue(SQLModel, table=True):
    """The operator's maximum permitted revenue for a calendar year (Asia/Shanghai), set by the
    bureau with the DRC; warnings are raised when the year's revenue crosses `warn_at_pct`."""

    __tablename__ = "billing_max_revenue"

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    year: int = Field(index=True)
    amount_fen: int = Field(sa_type=BigInteger)
    warn_at_pct: list[int] = json_field(list)
    co_set_by_org_id: int | None = Field(default=None, foreign_key="organisation.id")  # the DRC
    set_by_org_id: int = Field(foreign_key="organisation.id")
    set_by: str = Field(default="", max_length=100)
    reason: str = Field(default="", max_length=500)
    effective_from: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class PriceCap(SQLModel, table=True):
    """The bureau's upper price limit for one product and billing unit, from `effective_from`."""

    __tablename__ = "billing_price_cap"

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    unit: str = Field(max_length=16)
    cap_fen: int = Field(sa_type=BigInteger)
    set_by_org_id: int = Field(foreign_key="organisation.id")
    set_by: str = Field(default="", max_length=100)
    reason: str = Field(default="", max_length=500)
    effective_from: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class Price(SQLModel, table=True):
    """The operator's price for one product and unit. A `trial` price (an operator without a
    completed operating year) is in force only once it has a filing with the DRC."""

    __tablename__ = "billing_price"

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    unit: str = Field(max_length=16)
    price_fen: int = Field(sa_type=BigInteger)
    kind: str = Field(default="regular", max_length=16)  # regular | trial
    basis: str = Field(default="", sa_column=Column(Text, nullable=False))
    set_by: str = Field(default="", max_length=100)
    effective_from: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class PriceFiling(SQLModel, table=True):
    """A trial price filed with the DRC: from `filed_at` (or its own effective_from) it is in force."""

    __tablename__ = "billing_price_filing"

    id: int | None = Field(default=None, primary_key=True)
    price_id: int = Field(foreign_key="billing_price.id", unique=True)
    number: str = Field(max_length=32, unique=True)
    filed_with_org_id: int = Field(foreign_key="organisation.id", index=True)
    filed_by: str = Field(default="", max_length=100)
    filed_at: datetime = timestamp_field()


class RevenueCounter(SQLModel, table=True):
    """The operator's metered revenue of one year, kept in step with billing_usage by `meter` in
    the same transaction; `ceiling_fen` (None: no ceiling set) is the maximum revenue in force.
    The conditional UPDATE on this row is what stops concurrent paid calls exactly at the ceiling."""

    __tablename__ = "billing_revenue_counter"
    __table_args__ = (UniqueConstraint("operator_org_id", "year", name="uq_billing_revenue_counter"),)

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id")
    year: int
    revenue_fen: int = Field(default=0, sa_type=BigInteger)
    ceiling_fen: int | None = Field(default=None, sa_type=BigInteger)
    warn_at_pct: list[int] = json_field(list)


class RevenueWarning(SQLModel, table=True):
    """The year's revenue crossed a warning threshold of the maximum revenue (once per threshold and ceiling)."""

    __tablename__ = "billing_revenue_warning"
    __table_args__ = (UniqueConstraint("operator_org_id", "year", "threshold_pct", "ceiling_fen",
                                       name="uq_billing_revenue_warning"),)

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    year: int
    threshold_pct: int
    revenue_fen: int = Field(sa_type=BigInteger)
    ceiling_fen: int = Field(sa_type=BigInteger)
    at: datetime = timestamp_field()
    notified_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))


class BookEntry(SQLModel, table=True):
    """One entry in the operation's cost or revenue book; corrections reverse an entry (`reverses_id`)."""

    __tablename__ = "billing_book_entry"

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    book: str = Field(max_length=16)  # cost | revenue
    category: str = Field(max_length=32)
    amount_fen: int = Field(sa_type=BigInteger)  # negative only in a reversing entry
    occurred_on: date = Field(sa_column=Column(Date(), nullable=False))
    year: int = Field(index=True)
    description: str = Field(default="", max_length=500)
    reference: str = Field(default="", max_length=100)
    reverses_id: int | None = Field(default=None, foreign_key="billing_book_entry.id", unique=True)
    recorded_by: str = Field(default="", max_length=100)
    recorded_at: datetime = timestamp_field()


class Settlement(SQLModel, table=True):
    """The yearly revenue distribution of one operator; `filed_at` once filed with the bureau."""

    __tablename__ = "billing_settlement"
    __table_args__ = (UniqueConstraint("operator_org_id", "year", name="uq_billing_settlement_year"),)

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=32, unique=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    year: int
    revenue_fen: int = Field(default=0, sa_type=BigInteger)
    rule: str = Field(default="equal", max_length=16)
    inputs: dict[str, Any] = json_field()
    created_by: str = Field(default="", max_length=100)
    created_at: datetime = timestamp_field()
    filed_with_org_id: int | None = Field(default=None, foreign_key="organisation.id")
    filed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))


class SettlementLine(SQLModel, table=True):
    """One party's share of one product's revenue in a settlement."""

    __tablename__ = "billing_settlement_line"

    id: int | None = Field(default=None, primary_key=True)
    settlement_id: int = Field(foreign_key="billing_settlement.id", index=True)
    product_id: int = Field(foreign_key="gov_product.id")
    party: str = Field(max_length=16)  # provider | operator | partner | public
    party_org_id: int | None = Field(default=None, foreign_key="organisation.id")
    amount_fen: int = Field(sa_type=BigInteger)
    non_tax: bool = False
    basis: dict[str, Any] = json_field()
