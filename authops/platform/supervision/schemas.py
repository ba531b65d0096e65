"""Request and response bodies for the supervision routes (identifiers and counts only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from authops.core.types import UtcDateTime

Severity = Literal["minor", "major", "critical"]


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    kind: str
    description: str
    enabled: bool
    threshold: int
    window_seconds: int
    action: str
    params: dict[str, Any]
    updated_at: UtcDateTime
    updated_by: str | None


class RuleUpdate(BaseModel):
    """Only the fields given change; params are merged into the rule's params."""

    model_config = ConfigDict(extra="forbid")
    threshold: int | None = Field(default=None, ge=0, le=2_147_483_647)
    window_seconds: int | None = Field(default=None, ge=1, le=90 * 86_400)
    action: Literal["alert", "throttle", "block"] | None = None
    enabled: bool | None = None
    params: dict[str, Any] | None = None


class CaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    rule_id: int
    rule_name: str = ""
    subject_type: str
    subject_id: str
    org_id: int | None
    state: str
    evidence: dict[str, Any]
    first_seq: int | None
    last_seq: int | None
    opened_at: UtcDateTime
    decided_by: str | None
    decision_reason: str | None
    decided_at: UtcDateTime | None
    block_id: int | None


class ConfirmIn(BaseModel):
    reason: str = Field(min_length=3, max_length=1000)
    severity: Severity
    title: str | None = Field(default=None, max_length=200)
    # The organisation answerable for the incident; defaults to the case's organisation.
    org_id: int | None = Field(default=None, ge=1, le=2_147_483_647)


class DecisionIn(BaseModel):
    reason: str = Field(min_length=3, max_length=1000)


class BlockOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    subject_type: str
    subject_id: str
    org_id: int | None
    mode: str
    limit_per_minute: int | None
    case_id: int | None
    reason: str
    active: bool
    created_at: UtcDateTime
    lifted_at: UtcDateTime | None
    lifted_by: str | None


class IncidentIn(BaseModel):
    severity: Severity
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    org_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    case_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    occurred_at: datetime | None = None


class IncidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    severity: str
    title: str
    description: str
    org_id: int | None
    case_id: int | None
    occurred_at: UtcDateTime
    recorded_by: str
    created_at: UtcDateTime


class ConfirmOut(BaseModel):
    case: CaseOut
    incident: IncidentOut
