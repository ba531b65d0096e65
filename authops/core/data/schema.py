"""What a data resource's rows look like: field kinds, storage types, grades, modes.

This is the data plane's vocabulary, shared by the catalogue (which registers schemas),
ingestion (which validates rows against them), the sandbox (which computes on them) and
the release policies (which mask by grade). It holds no database tables.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Kind(StrEnum):
    """What a field means; decides its storage type, its checks and how it is masked."""

    IDENTIFIER_PERSON = "identifier_person"  # resident ID number (GB 11643) and other person ids
    IDENTIFIER_ENTERPRISE = "identifier_enterprise"  # USCC (GB 32100) and other organisation codes
    IDENTIFIER_VEHICLE = "identifier_vehicle"  # VIN (ISO 3779) and plate numbers
    NAME_PERSON = "name_person"
    NAME_ORG = "name_org"
    PHONE = "phone"
    ADDRESS = "address"
    DATE = "date"
    DATETIME = "datetime"
    MONEY = "money"  # stored as integer fen
    COUNT = "count"
    RATIO = "ratio"
    CATEGORY = "category"
    TEXT = "text"
    CODE = "code"
    FLAG = "flag"
    BANK_ACCOUNT = "bank_account"


class DType(StrEnum):
    """How a field is stored in a dataset (Parquet/Arrow type)."""

    STRING = "string"  # large_string / pandas "string"
    DATE = "date"  # date32
    TIMESTAMP = "timestamp"  # timestamp[us, UTC]
    INT = "int"  # int64 (money in fen, counts)
    FLOAT = "float"  # float64 (ratios)
    BOOL = "bool"


DTYPE_OF_KIND: dict[Kind, DType] = {
    Kind.DATE: DType.DATE,
    Kind.DATETIME: DType.TIMESTAMP,
    Kind.MONEY: DType.INT,
    Kind.COUNT: DType.INT,
    Kind.RATIO: DType.FLOAT,
    Kind.FLAG: DType.BOOL,
}


def dtype_of(kind: Kind) -> DType:
    return DTYPE_OF_KIND.get(kind, DType.STRING)


class Grade(StrEnum):
    """Sensitivity grade: L1 public, L2 internal, L3 sensitive, L4 highly sensitive."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"

    @property
    def level(self) -> int:
        return int(self.value[1])


class PrivacyUnit(StrEnum):
    """Whose data a row is; the unit differential privacy protects and consent is asked of."""

    PERSON = "person"  # resident ID number
    ENTERPRISE = "enterprise"  # USCC
    VEHICLE = "vehicle"  # VIN
    NONE = "none"  # public notices with no subject


class ShareMode(StrEnum):
    VERIFY = "verify"  # 核验: a yes/no answer to a claim
    QUERY = "query"  # 查询: a lookup
    BATCH = "batch"  # 批量交换: bulk exchange


class ProvisionMode(StrEnum):
    TABLE = "table"  # 库表: the platform pulls from the department's front-end database
    API = "api"  # 接口: the platform calls the department's service interface
    EXCEL = "excel"  # Excel template filled in and uploaded


class UpdateCycle(StrEnum):
    REALTIME = "realtime"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"

    @property
    def days(self) -> float:
        """How long data may age before it is late."""
        return {"realtime": 1 / 24, "daily": 1, "weekly": 7, "monthly": 31, "quarterly": 92,
                "yearly": 366}[self.value]


class Check(StrEnum):
    """A format check beyond the type, with a check digit where the standard has one."""

    RESIDENT_ID = "gb11643"  # 18-digit resident identity number, ISO 7064 MOD 11-2
    USCC = "gb32100"  # 18-character unified social credit code, MOD 31
    VIN = "iso3779"  # 17-character vehicle identification number, position-9 check digit
    PLATE = "plate"  # mainland plate number (省 + letter + 5 or 6 characters)
    PHONE = "phone"  # mobile (1[3-9]xxxxxxxxx) or landline (0xx[x]-xxxxxxx[x])


class FieldSpec(BaseModel):
    """One field of a resource."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="column name (English snake_case)")
    name_zh: str = Field(min_length=1, max_length=64)
    kind: Kind
    grade: Grade
    pii: bool = False
    required: bool = False
    enum: tuple[str, ...] | None = None  # allowed values of a category field
    check: Check | None = None
    description: str = ""

    @property
    def dtype(self) -> DType:
        return dtype_of(self.kind)

    @field_validator("enum")
    @classmethod
    def _enum_unique(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("enum must list distinct values")
        return v


class ResourceSchema(BaseModel):
    """The versioned part of a resource: its fields, key and privacy unit."""

    model_config = ConfigDict(frozen=True)

    fields: tuple[FieldSpec, ...] = Field(min_length=1)
    key: tuple[str, ...] = ()  # fields that identify a record (upserts); empty = replace only
    privacy_unit: PrivacyUnit = PrivacyUnit.NONE
    unit_field: str | None = None  # the field holding the privacy unit's identifier

    @model_validator(mode="after")
    def _consistent(self) -> ResourceSchema:
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"field names repeat: {', '.join(sorted(dup))}")
        for k in self.key:
            if k not in names:
                raise ValueError(f"key field {k!r} is not a field")
        if self.privacy_unit != PrivacyUnit.NONE:
            if not self.unit_field or self.unit_field not in names:
                raise ValueError("a privacy unit needs unit_field naming one of the fields")
        return self

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def breaks(self, new: ResourceSchema) -> list[str]:
        """Changes in `new` that data loaded under `self` could not satisfy (drop or retype)."""
        out = []
        for f in self.fields:
            try:
                g = new.field(f.name)
            except KeyError:
                out.append(f"field {f.name!r} dropped")
                continue
            if g.dtype != f.dtype:
                out.append(f"field {f.name!r} retyped from {f.dtype} to {g.dtype}")
        return out


def arrow_type(dtype: DType):  # -> pyarrow.DataType (imported lazily: pyarrow is heavy)
    import pyarrow as pa

    return {DType.STRING: pa.string(), DType.DATE: pa.date32(), DType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
            DType.INT: pa.int64(), DType.FLOAT: pa.float64(), DType.BOOL: pa.bool_()}[dtype]


def arrow_schema(schema: ResourceSchema):  # -> pyarrow.Schema
    """The Arrow schema every dataset of this resource version has: one column per field, in order."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, arrow_type(f.dtype), nullable=not f.required) for f in schema.fields])
