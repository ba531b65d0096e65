"""Answer sets (precomputed per-subject answers of a product) and batch deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class AnswerSet(SQLModel, table=True):
    """One build of a product's answer table (encrypted in the object store, keyed by subject
    digests). The highest version of a product is the one served."""

    __tablename__ = "product_answer_set"
    __table_args__ = (UniqueConstraint("product_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    version: int
    rows: int
    object_key: str = Field(max_length=300, unique=True)
    # {resource code: {"dataset_id", "version", "schema_version"}}: what the answers were built from
    sources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    built_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class ProductBatch(SQLModel, table=True):
    """A customer's list of subjects answered by a job into a result file only it can download."""

    __tablename__ = "product_batch"
    __table_args__ = (UniqueConstraint("customer_org_id", "idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    state: str = Field(default="queued", max_length=16, index=True)  # queued | done | failed | expired
    purpose: str | None = Field(default=None, max_length=500)
    filename: str = Field(default="", max_length=200)
    subjects: int = 0
    answered: int = 0
    refused: int = 0
    not_found: int = 0
    amount_fen: int = Field(default=0, sa_type=BigInteger)
    input_object_key: str = Field(max_length=300)
    result_object_key: str | None = Field(default=None, max_length=300)
    answer_set_version: int | None = None
    created_by: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    idempotency_key: str | None = Field(default=None, max_length=128)  # the submission's Idempotency-Key
    request_sha256: str = Field(default="", max_length=64)  # product, purpose and file: "the same submission"
