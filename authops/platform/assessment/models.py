"""Assessment tables: pre-filing schedules and filings, product ratings, the bureau's yearly
assessment settings, assessments (with their metrics, expert scores and signature) and
rectifications.

An assessment row keeps everything it was computed from: the period, the settings in force
(weights, targets, thresholds) and, per metric, the query and the record ids behind it. Once
signed it is never changed; a re-assessment is a new row pointing at its parent.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, Date, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.types import json_field, timestamp_field


class PrefilingSchedule(SQLModel, table=True):
    """The bureau's schedule of risk-assessment reports the operator files for one resource or scenario:
    first due date, then every `period_months` (0: once). `blocks_jobs` stops new sandbox jobs on the
    resource while a filing is overdue."""

    __tablename__ = "assessment_prefiling_schedule"

    id: int | None = Field(default=None, primary_key=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    target_kind: str = Field(max_length=16)  # resource | scenario
    target: str = Field(max_length=64, index=True)  # resource code or scenario case number
    first_due_on: date = Field(sa_column=Column(Date(), nullable=False))
    period_months: int = 0
    blocks_jobs: bool = False
    flagged: list[str] = json_field(list)  # due dates already flagged overdue (ISO dates)
    active: bool = True
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = timestamp_field()


class Prefiling(SQLModel, table=True):
    """One filed risk-assessment report, answering one due date of a schedule; bytes encrypted."""

    __tablename__ = "assessment_prefiling"
    __table_args__ = (UniqueConstraint("schedule_id", "due_on", name="uq_assessment_prefiling_due"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: int = Field(foreign_key="assessment_prefiling_schedule.id", index=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    due_on: date = Field(sa_column=Column(Date(), nullable=False))
    on_time: bool = True
    filename: str = Field(max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    size: int = 0
    sha256: str = Field(max_length=64)
    object_key: str = Field(max_length=300)
    filed_by: str = Field(default="system", max_length=64)
    filed_at: datetime = timestamp_field()


class ProductRating(SQLModel, table=True):
    """A customer's satisfaction with a product it used, one per customer, product and year."""

    __tablename__ = "assessment_rating"
    __table_args__ = (UniqueConstraint("customer_org_id", "product_id", "year", name="uq_assessment_rating"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    year: int = Field(index=True)
    score: int  # 1-5
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    rated_by: str = Field(default="system", max_length=64)
    rated_at: datetime = timestamp_field()


class YearSettings(SQLModel, table=True):
    """The bureau's weights, targets and grade thresholds for one assessment year."""

    __tablename__ = "assessment_year_settings"

    id: int | None = Field(default=None, primary_key=True)
    year: int = Field(unique=True)
    metrics: dict[str, Any] = json_field()  # key -> {"weight": float, "target": float}
    expert_weight: float = 0.0
    excellent: float = 90.0
    qualified: float = 60.0
    indicators: dict[str, Any] = json_field()  # social-benefit options, e.g. {"enterprise_products": [codes]}
    updated_by: str = Field(default="system", max_length=64)
    updated_at: datetime = timestamp_field()


class Assessment(SQLModel, table=True):
    """One assessment of the operator over a period: draft (computed, may be recomputed) -> signed."""

    __tablename__ = "assessment"

    id: int | None = Field(default=None, primary_key=True)
    year: int = Field(index=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    kind: str = Field(default="annual", max_length=16)  # annual | reassessment
    parent_id: int | None = Field(default=None, foreign_key="assessment.id")
    period_start: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    period_end: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    settings: dict[str, Any] = json_field()  # the YearSettings in force, as computed
    metrics: list[dict[str, Any]] = json_field(list)
    expert_scores: list[dict[str, Any]] = json_field(list)
    total_score: float = 0.0
    grade: str = Field(default="", max_length=16)  # excellent | qualified | unqualified
    grade_reason: str = Field(default="", max_length=500)
    state: str = Field(default="draft", max_length=16, index=True)  # draft | signed
    body_sha256: str = Field(default="", max_length=64)
    signature: str = Field(default="", max_length=200)  # base64 Ed25519 over the canonical body
    key_id: str = Field(default="", max_length=64)
    signed_by: str = Field(default="", max_length=64)
    signed_at: datetime | None = timestamp_field(nullable=True)
    consequences: list[str] = json_field(list)
    computed_at: datetime = timestamp_field()
    created_by: str = Field(default="system", max_length=64)


class Rectification(SQLModel, table=True):
    """After an unqualified assessment: the plan due within 30 calendar days, then the re-assessment."""

    __tablename__ = "assessment_rectification"

    id: int | None = Field(default=None, primary_key=True)
    assessment_id: int = Field(foreign_key="assessment.id", unique=True)
    operator_org_id: int = Field(foreign_key="organisation.id", index=True)
    due_on: date = Field(sa_column=Column(Date(), nullable=False))
    state: str = Field(default="due", max_length=16, index=True)  # due | submitted | reassessed
    plan: str = Field(default="", sa_column=Column(Text, nullable=False))
    plan_sha256: str = Field(default="", max_length=64)
    submitted_by: str = Field(default="", max_length=64)
    submitted_at: datetime | None = timestamp_field(nullable=True)
    reassessment_id: int | None = Field(default=None, foreign_key="assessment.id")
    created_at: datetime = timestamp_field()
