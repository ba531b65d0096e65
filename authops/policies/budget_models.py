"""The privacy budget ledger's tables: caps and balances, and one reservation per job × resource.

Epsilon is kept in integer micro-units (1 ε = 1,000,000) and delta in integer pico-units
(1e-12), so that sums are exact and the ledger balances to the unit: a float ledger drifts.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Date, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow

MICRO = 1_000_000  # ε units per 1.0
PICO = 1_000_000_000_000  # δ units per 1.0
LIFETIME = "lifetime"


class PrivacyBudget(SQLModel, table=True):
    """A partner's budget on one resource for one period ("2026", …) or for its lifetime.

    spent + reserved <= cap always holds: every reservation is one conditional UPDATE.
    """

    __tablename__ = "privacy_budget"
    __table_args__ = (UniqueConstraint("org_id", "resource_code", "period", name="uq_privacy_budget"),)

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)  # the partner
    resource_code: str = Field(max_length=64, index=True)
    period: str = Field(max_length=16)  # a year ("2026") or "lifetime"
    starts_on: date | None = Field(default=None, sa_column=Column(Date(), nullable=True))  # Asia/Shanghai
    ends_on: date | None = Field(default=None, sa_column=Column(Date(), nullable=True))  # exclusive
    epsilon_cap: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))  # micro-ε
    epsilon_spent: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    epsilon_reserved: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    delta_cap: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))  # pico-δ
    delta_spent: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    delta_reserved: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    set_by: str = Field(default="system", max_length=64)
    note: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class BudgetReservation(SQLModel, table=True):
    """What one job holds on one budget row: reserved → committed (spent) or returned."""

    __tablename__ = "budget_reservation"
    __table_args__ = (UniqueConstraint("job_id", "budget_id", name="uq_budget_reservation"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    budget_id: int = Field(foreign_key="privacy_budget.id", index=True)
    org_id: int = Field(index=True)
    resource_code: str = Field(max_length=64)
    period: str = Field(max_length=16)
    epsilon: int = Field(sa_column=Column(BigInteger(), nullable=False))  # reserved, micro-ε
    delta: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    state: str = Field(default="reserved", max_length=16, index=True)  # reserved|committed|returned
    epsilon_spent: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    delta_spent: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    settled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
