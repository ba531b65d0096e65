"""The job table: state, lease, heartbeat, progress and error of every background job."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class Job(SQLModel, table=True):
    __tablename__ = "job"

    id: int | None = Field(default=None, primary_key=True)
    # Plain integers, not foreign keys: core sits below the identity tables.
    org_id: int | None = Field(default=None, index=True)
    created_by: int | None = None
    kind: str = Field(max_length=64, index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: JobState = Field(default=JobState.QUEUED,
                            sa_column=Column(String(16), nullable=False, index=True))
    progress: float = 0.0
    message: str = Field(default="", max_length=500)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=2000)
    attempts: int = 0
    max_attempts: int = 5
    # Outbox: when the job id was last handed to the broker (None = not yet).
    enqueued_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    lease_token: str | None = Field(default=None, max_length=64)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))


class JobAttempt(SQLModel, table=True):
    """One row per claim of a job by a worker: shows re-runs after crashes."""

    __tablename__ = "job_attempt"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    attempt: int
    lease_token: str = Field(max_length=64)
    worker: str = Field(max_length=200)
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    outcome: str | None = Field(default=None, max_length=16)
