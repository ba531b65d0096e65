"""The audit log: hash-chained events, the chain head, and signed Merkle checkpoints."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, LargeBinary, String
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class AuditEvent(SQLModel, table=True):
    """One action. `canonical` holds the exact bytes that were hashed; the other columns
    are a queryable copy of them (the verifier trusts only `canonical`)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_org_ts", "org_id", "ts"),
        Index("ix_audit_event_actor_ts", "actor_kind", "actor_id", "ts"),
        Index("ix_audit_event_action_ts", "action", "ts"),
    )

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    ts: datetime = Field(sa_column=Column(DateTime(), nullable=False, index=True))
    actor_kind: str = Field(sa_column=Column(String(16), nullable=False))
    actor_id: int | None = None
    actor_name: str = Field(default="", max_length=200)
    org_id: int | None = None
    action: str = Field(sa_column=Column(String(64), nullable=False))
    object_type: str | None = Field(default=None, max_length=64)
    object_id: str | None = Field(default=None, max_length=128)
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    ip: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)
    rows: int | None = None
    nbytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    subjects: int | None = None
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    canonical: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AuditHead(SQLModel, table=True):
    """The chain's tip; locked by each appending transaction so seq and prev_hash are exact."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    hash: str = Field(default="0" * 64, max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement: the log's first `tree_size` events have Merkle root `root_hash`."""

    __tablename__ = "audit_checkpoint"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    root_hash: str = Field(max_length=64)
    # The right edge of the tree, so the next checkpoint costs O(new events).
    frontier: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    key_id: str = Field(max_length=64)
    statement: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class WitnessReceipt(SQLModel, table=True):
    """Where a checkpoint was pushed beyond the operator's reach, and whether it landed."""

    __tablename__ = "audit_witness_receipt"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    witness: str = Field(max_length=300)
    ok: bool
    detail: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
