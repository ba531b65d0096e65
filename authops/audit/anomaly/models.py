"""Supervision tables: anomaly rules, the cases they open, access blocks and incidents.

Cases and blocks hold identifiers, counts and audit sequence numbers only: never data values.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow

RULE_ACTIONS = ("alert", "throttle", "block")
SUBJECT_TYPES = ("api_key", "user", "org", "ip")
CASE_STATES = ("open", "confirmed", "released")
BLOCK_MODES = ("block", "throttle")
SEVERITIES = ("minor", "major", "critical")


class AnomalyRule(SQLModel, table=True):
    """One configurable rule: a kind (the detector), its threshold, window and consequence."""

    __tablename__ = "anomaly_rule"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    description: str = Field(default="", max_length=500)
    enabled: bool = True
    # "More than `threshold`" within `window_seconds` (counts, subjects or micro-epsilon).
    threshold: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    window_seconds: int = 600
    action: str = Field(sa_column=Column(String(16), nullable=False))  # alert | throttle | block
    # Kind-specific settings, e.g. {"actions": [...], "per": "actor", "night_start": "22:00"}.
    params: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    updated_by: str | None = Field(default=None, max_length=64)


class AnomalyCase(SQLModel, table=True):
    """A rule hit on one subject, waiting for (or given) the bureau's decision."""

    __tablename__ = "anomaly_case"
    __table_args__ = (
        Index("ix_anomaly_case_rule_subject", "rule_id", "subject_type", "subject_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rule_id: int = Field(sa_column=Column(Integer, ForeignKey("anomaly_rule.id"), nullable=False))
    subject_type: str = Field(sa_column=Column(String(16), nullable=False))  # api_key | user | org | ip
    subject_id: str = Field(sa_column=Column(String(64), nullable=False))
    org_id: int | None = Field(default=None, index=True)
    state: str = Field(default="open", sa_column=Column(String(16), nullable=False, index=True))
    # "rule:subject_type:subject_id" while open, NULL once decided: one open case per rule
    # and subject, even when several processes see the same burst at once.
    open_key: str | None = Field(default=None, sa_column=Column(String(160), nullable=True, unique=True))
    evidence: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The audit events this case accounts for; a later burst counts only events after last_seq.
    first_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    opened_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    decided_by: str | None = Field(default=None, max_length=64)  # "user:12"
    decision_reason: str | None = Field(default=None, max_length=1000)
    decided_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    block_id: int | None = None


class AccessBlock(SQLModel, table=True):
    """An API key, user, organisation or IP address that is suspended or rate-limited.

    Checked on every authenticated request in every process (a database read), so a block
    takes effect on the next request everywhere.
    """

    __tablename__ = "access_block"
    __table_args__ = (
        Index("ix_access_block_subject", "subject_type", "subject_id", "active"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subject_type: str = Field(sa_column=Column(String(16), nullable=False))
    subject_id: str = Field(sa_column=Column(String(64), nullable=False))
    org_id: int | None = None
    mode: str = Field(sa_column=Column(String(16), nullable=False))  # block | throttle
    limit_per_minute: int | None = None
    case_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("anomaly_case.id"),
                                                               nullable=True, index=True))
    reason: str = Field(default="", max_length=300)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    lifted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    lifted_by: str | None = Field(default=None, max_length=64)
    # Throttle counter: requests served in the current wall-clock minute (epoch minute).
    window_minute: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    window_count: int = 0


class Incident(SQLModel, table=True):
    """A security incident on record; major and critical ones weigh on renewal (one-vote veto)."""

    __tablename__ = "incident"

    id: int | None = Field(default=None, primary_key=True)
    severity: str = Field(sa_column=Column(String(16), nullable=False, index=True))  # minor|major|critical
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=4000)
    org_id: int | None = Field(default=None, index=True)
    case_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("anomaly_case.id"),
                                                               nullable=True))
    occurred_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    recorded_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
