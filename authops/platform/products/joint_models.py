"""Joint modelling tables: a customer's model over its own labels (customer labels, models, evaluations).

The labels, the fitted coefficients and the per-subject scores live only in the encrypted object
store, under keys no route ever reads back; this row holds what may be shown: counts, state and
the holdout metrics beside the label-free baseline's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class JointModel(SQLModel, table=True):
    __tablename__ = "product_joint_model"

    id: int | None = Field(default=None, primary_key=True)
    customer_org_id: int = Field(foreign_key="organisation.id", index=True)
    product_id: int = Field(foreign_key="gov_product.id", index=True)  # the base product (its data, its terms)
    name: str = Field(max_length=200)
    labels: int = 0
    positives: int = 0
    labels_object_key: str = Field(max_length=300)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    state: str = Field(default="queued", max_length=16, index=True)  # queued | ready (running/failed: the job's)
    model_object_key: str | None = Field(default=None, max_length=300)
    scores_object_key: str | None = Field(default=None, max_length=300)
    matched: int | None = None  # labelled subjects found in the public data
    scored: int | None = None  # subjects the endpoint can score
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    baseline: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    trained_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
