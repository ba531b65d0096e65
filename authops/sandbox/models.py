"""Workspaces (a partner's approved data scope), sandbox jobs and their releases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class Workspace(SQLModel, table=True):
    """Where a partner develops for one approved scenario; its grants are the only data it may name."""

    __tablename__ = "workspace"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)  # the partner
    name: str = Field(max_length=200)
    scenario: str = Field(default="", max_length=500)  # the approved scenario it serves
    approval_ref: str = Field(default="", max_length=100)  # the approval that granted it
    state: str = Field(default="active", max_length=16, index=True)  # active | suspended | closed
    # Organisations that may read this workspace's releases besides the partner (e.g. the operator).
    readers: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))


class WorkspaceGrant(SQLModel, table=True):
    """One resource a workspace may use: which fields, under which share modes."""

    __tablename__ = "workspace_grant"
    __table_args__ = (UniqueConstraint("workspace_id", "resource_code", name="uq_workspace_grant"),)

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    resource_code: str = Field(max_length=64)
    fields: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    share_modes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class SandboxJob(SQLModel, table=True):
    """A spec or code job in a workspace; the Job row carries its state, lease and progress."""

    __tablename__ = "sandbox_job"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", unique=True, index=True)
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    org_id: int = Field(index=True)
    kind: str = Field(max_length=8)  # spec | code
    name: str = Field(max_length=100)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # the validated spec / manifest
    code: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # partner code
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    readers: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    epsilon: float = 0.0  # what the job's aggregate outputs may spend, per resource
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class SandboxRelease(SQLModel, table=True):
    """One output that passed the gate. Unique per job and output: a release happens once."""

    __tablename__ = "sandbox_release"
    __table_args__ = (UniqueConstraint("job_id", "output", name="uq_sandbox_release"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    sandbox_job_id: int = Field(foreign_key="sandbox_job.id", index=True)
    output: str = Field(max_length=64)
    policy: str = Field(max_length=16)
    rows: int = 0
    columns: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    object_key: str = Field(max_length=300)  # the released table, encrypted in the object store
    readers: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
