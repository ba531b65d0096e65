"""Aggregate reports: a customer's request for one output of an aggregate product."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class ProductReport(SQLModel, table=True):
    """One report request. `job_id` is the sandbox job whose DP release answers it: requests about
    the same data (the same `sources`) share one release, so asking again returns the same noisy
    figures and spends no further privacy budget."""

    __tablename__ = "product_report"

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    output: str = Field(max_length=64)
    purpose: str | None = Field(default=None, max_length=500)
    request_id: str = Field(max_length=40, unique=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    # {resource code: {"dataset_id", "version", "schema_version"}}: the data the release was built from
    sources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stale: bool = False  # answered from an earlier release because the budget for a new one is spent
    created_by: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
