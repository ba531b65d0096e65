"""Request and response bodies of the catalogue API (no model carries a data value)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from authops.core.data.schema import FieldSpec, Grade, PrivacyUnit, ProvisionMode, ShareMode, UpdateCycle
from authops.core.types import UtcDateTime


class ResourceSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    no: int | None
    name_zh: str
    name_en: str
    org_id: int
    department_zh: str = ""
    department_en: str = ""
    grade: str
    share_modes: list[str]
    provision_modes: list[str]
    update_cycle: str
    schema_version: int
    rows: int = 0
    timeliness: str = "never_loaded"
    last_loaded_at: UtcDateTime | None


class FieldOut(BaseModel):
    name: str
    name_zh: str
    kind: str
    type: str
    grade: str
    pii: bool
    required: bool
    enum: list[str] | None
    check: str | None
    masking: str


class ResourceDetail(ResourceSummary):
    description: str
    privacy_unit: str
    unit_field: str | None
    key: list[str]
    fields: list[FieldOut]
    quality: dict[str, Any]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=4000)
    grade: Grade
    fields: list[FieldSpec] = Field(min_length=1, max_length=500)
    key: list[str] = []
    privacy_unit: PrivacyUnit = PrivacyUnit.NONE
    unit_field: str | None = None
    share_modes: list[ShareMode] = Field(min_length=1)
    provision_modes: list[ProvisionMode] = Field(min_length=1)
    update_cycle: UpdateCycle


class SchemaChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[FieldSpec] = Field(min_length=1, max_length=500)
    key: list[str] = []
    privacy_unit: PrivacyUnit = PrivacyUnit.NONE
    unit_field: str | None = None
    note: str = Field(default="", max_length=1000)


class SchemaVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    note: str
    breaking: bool
    created_by: str
    created_at: UtcDateTime
    fields: int = 0


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    schema_version: int
    rows: int
    nbytes: int
    created_at: UtcDateTime
    load_id: int | None


class VersionsOut(BaseModel):
    schema_versions: list[SchemaVersionOut]
    datasets: list[DatasetOut]
    current_dataset_version: int | None


class SampleOut(BaseModel):
    code: str
    dataset_version: int | None
    masked: bool = True
    fields: list[str]
    rows: list[dict[str, Any]]


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    resource_code: str = ""
    path: str
    mode: str
    state: str
    job_id: int | None
    rows_received: int
    rows_rejected: int
    error_count: int
    message: str | None
    report: dict[str, Any] | None
    created_by: str
    created_at: UtcDateTime
    finished_at: UtcDateTime | None


class UploadOut(BaseModel):
    run: RunOut
    job_id: int


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["table", "api"]
    url: str = Field(min_length=3, max_length=2000)
    table: str | None = Field(default=None, max_length=128)
    schema_name: str | None = Field(default=None, max_length=128)
    columns: dict[str, str] | None = None
    updated_column: str | None = Field(default=None, max_length=128)
    incremental: bool = False
    page_size: int = Field(default=1000, ge=1, le=10_000)
    timeout: float = Field(default=10.0, gt=0, le=120, description="seconds per request")
    retries: int = Field(default=4, ge=0, le=10, description="retries per page, with exponential backoff")
    headers: dict[str, str] | None = None


class SourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    display: str
    incremental: bool
    updated_column: str | None
    watermark: UtcDateTime | None
    active: bool
    next_run_at: UtcDateTime | None
    last_run_id: int | None


class CatalogLoadOut(BaseModel):
    resources: int
    departments: int
    registered: int
    schema_changes: int
    unchanged: int
