"""SME credit services tables: white-list subscriptions and their versioned deliveries, banks' loan
products, enterprises' financing requests and each matched bank's progress on one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow
from authops.core.types import json_field, timestamp_field


class WhitelistSubscription(SQLModel, table=True):
    """A bank's standing order for the white list of healthy enterprises that authorized it."""

    __tablename__ = "sme_whitelist_subscription"

    id: int | None = Field(default=None, primary_key=True)
    bank_org_id: int = Field(foreign_key="organisation.id", index=True)
    min_grade: str = Field(default="B", max_length=1)  # A | B
    interval_hours: int = 24
    state: str = Field(default="active", max_length=16, index=True)  # active | cancelled
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = timestamp_field()
    last_pushed_at: datetime | None = timestamp_field(nullable=True)


class WhitelistDelivery(SQLModel, table=True):
    """One push of a subscription's white list: USCC and grade per enterprise, nothing else."""

    __tablename__ = "sme_whitelist_delivery"
    __table_args__ = (UniqueConstraint("subscription_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="sme_whitelist_subscription.id", index=True)
    bank_org_id: int = Field(foreign_key="organisation.id", index=True)
    version: int
    answer_set_version: int
    entries: list[dict[str, str]] = json_field(list)  # [{"uscc", "grade"}], sorted by USCC
    added: int = 0
    removed: int = 0
    created_at: datetime = timestamp_field()


class LoanProduct(SQLModel, table=True):
    """A bank's loan product that financing requests are matched against."""

    __tablename__ = "sme_loan_product"

    id: int | None = Field(default=None, primary_key=True)
    bank_org_id: int = Field(foreign_key="organisation.id", index=True)
    name: str = Field(max_length=200)
    min_amount_fen: int = Field(sa_column=Column(BigInteger(), nullable=False))
    max_amount_fen: int = Field(sa_column=Column(BigInteger(), nullable=False))
    min_term_months: int
    max_term_months: int
    industries: list[str] = json_field(list)  # empty: every industry
    min_grade: str = Field(default="C", max_length=1)
    active: bool = True
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = timestamp_field()


class FinancingRequest(SQLModel, table=True):
    """An enterprise's one-time financing request (one application, several banks)."""

    __tablename__ = "sme_financing_request"

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=40, unique=True)
    enterprise_org_id: int = Field(foreign_key="organisation.id", index=True)
    uscc: str = Field(max_length=18)
    amount_band: str = Field(max_length=16)
    term_months: int
    industry: str = Field(max_length=32)
    purpose: str = Field(sa_column=Column(Text, nullable=False))
    sharing_authorized_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    profile: dict[str, Any] = json_field()  # grade and bands at submission (what matched banks see)
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = timestamp_field()


class FinancingMatch(SQLModel, table=True):
    """One bank's loan product matched to a request, and that bank's progress on it."""

    __tablename__ = "sme_financing_match"
    __table_args__ = (UniqueConstraint("request_id", "bank_org_id"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="sme_financing_request.id", index=True)
    loan_product_id: int = Field(foreign_key="sme_loan_product.id", index=True)
    bank_org_id: int = Field(foreign_key="organisation.id", index=True)
    state: str = Field(default="received", max_length=16, index=True)
    version: int = 1  # moves on every step: the compare-and-set token
    history: list[dict[str, Any]] = json_field(list)  # [{"from", "to", "by", "note", "at"}]
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
