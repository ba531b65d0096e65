"""Data resources, their schema versions, immutable dataset versions, loads and sources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow


class DataResource(SQLModel, table=True):
    """A catalogue entry registered by a provider department (数据资源目录条目)."""

    __tablename__ = "data_resource"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)  # the provider department
    no: int | None = None  # number in the plan's annex 2
    name_zh: str = Field(max_length=200)
    name_en: str = Field(max_length=300)
    description: str = Field(default="", max_length=4000)
    grade: str = Field(max_length=2)
    share_modes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    provision_modes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    update_cycle: str = Field(max_length=16)
    schema_version: int = 1  # the current schema version
    dataset_id: int | None = None  # the current Dataset (no FK: datasets reference resources)
    last_loaded_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    mock_object_key: str | None = Field(default=None, max_length=300)
    mock_rows: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class SchemaVersion(SQLModel, table=True):
    """One version of a resource's schema; data loaded under it keeps it for good."""

    __tablename__ = "schema_version"
    __table_args__ = (UniqueConstraint("resource_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(foreign_key="data_resource.id", index=True)
    version: int
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # ResourceSchema
    note: str = Field(default="", max_length=1000)
    breaking: bool = False  # dropped or retyped a field of the previous version
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class Dataset(SQLModel, table=True):
    """An immutable, encrypted Parquet object holding a resource's data as of one load."""

    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("resource_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(foreign_key="data_resource.id", index=True)
    version: int  # 1, 2, 3 … per resource
    schema_version: int
    object_key: str = Field(max_length=300, unique=True)
    rows: int
    nbytes: int
    sha256: str = Field(max_length=64)
    # Figures computed on load: null rate per field (no values).
    quality: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    load_id: int | None = None  # the IngestRun that made it
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class IngestRun(SQLModel, table=True):
    """One attempt to load a batch: accepted whole (a new dataset) or rejected whole (a report)."""

    __tablename__ = "ingest_run"

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(foreign_key="data_resource.id", index=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    path: str = Field(max_length=16)  # excel | csv | table | api | bulk
    mode: str = Field(max_length=16)  # replace | upsert
    state: str = Field(default="pending", max_length=16, index=True)  # pending|running|succeeded|rejected|failed
    source_id: int | None = Field(default=None, foreign_key="ingest_source.id")
    job_id: int | None = Field(default=None, foreign_key="job.id")
    staged_key: str | None = Field(default=None, max_length=300)  # encrypted upload awaiting the worker
    rows_received: int = 0
    rows_rejected: int = 0
    error_count: int = 0
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    dataset_id: int | None = None  # the Dataset it produced
    message: str | None = Field(default=None, max_length=1000)
    created_by: str = Field(default="system", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))


class IngestSource(SQLModel, table=True):
    """A department system the platform pulls from on the resource's cycle: a table or an API."""

    __tablename__ = "ingest_source"

    id: int | None = Field(default=None, primary_key=True)
    resource_id: int = Field(foreign_key="data_resource.id", index=True)
    kind: str = Field(max_length=8)  # table | api
    # Connection settings, encrypted (a database URL carries a password): AEAD with the secret key.
    config_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    display: str = Field(max_length=300)  # the URL without credentials, for screens
    incremental: bool = False
    updated_column: str | None = Field(default=None, max_length=64)
    watermark: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    active: bool = True
    next_run_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True, index=True))
    last_run_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))

