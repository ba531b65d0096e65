"""Audit-work tables: the findings a third-party auditor records about an audited organisation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class AuditFinding(SQLModel, table=True):
    """One finding: recorded by the auditor, answered by the audited organisation, published by the bureau.

    `related` names the objects the finding is about ([{"type": "release", "id": "12"}, ...]);
    `disclosure_id` is the published disclosure (a governance Call) once the bureau publishes it.
    """

    __tablename__ = "audit_finding"

    id: int | None = Field(default=None, primary_key=True)
    year: int = Field(index=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)  # the audited organisation
    severity: str = Field(max_length=16)  # minor | major | critical
    title: str = Field(max_length=300)
    text: str = Field(sa_column=Column(Text, nullable=False))
    related: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="open", max_length=16, index=True)  # open | responded | published
    recorded_by: str = Field(max_length=100)
    recorded_by_org_id: int = Field(foreign_key="organisation.id")
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    response: str = Field(default="", sa_column=Column(Text, nullable=False))
    responded_by: str = Field(default="", max_length=100)
    responded_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    disclosure_id: int | None = Field(default=None, foreign_key="gov_call.id")
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
