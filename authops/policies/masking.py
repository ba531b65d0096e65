"""Masking by field kind and grade: what a masked record may show of each value.

The rule of thumb, from GB/T 35273 practice: personal identifiers and contacts never show
more than a region or a prefix; higher grades show less. L1 (public) values are shown
as they are; L2 values that identify something show a prefix; L3 figures are shown as
ranges and texts as their length; L4 shows nothing that could single anyone out.
Person identifiers, phones and bank accounts are masked at every grade.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from authops.core.data.schema import FieldSpec, Grade, Kind, ResourceSchema

ALWAYS = {Kind.IDENTIFIER_PERSON, Kind.PHONE, Kind.BANK_ACCOUNT, Kind.NAME_PERSON}


def _stars(n: int) -> str:
    return "*" * max(n, 1)


def _magnitude(v: float) -> str:
    """A range such as '10万–100万' for figures that must not be exact."""
    if v == 0:
        return "0"
    sign = "-" if v < 0 else ""
    exp = int(math.floor(math.log10(abs(v))))
    lo, hi = 10 ** exp, 10 ** (exp + 1)
    return f"{sign}[{lo:,}, {hi:,})"


def mask_value(f: FieldSpec, value: Any) -> Any:
    """The masked form of one value (None stays None)."""
    if value is None:
        return None
    level = f.grade.level
    k = f.kind
    if k not in ALWAYS and level == 1:
        return value.isoformat() if isinstance(value, date | datetime) else value
    if k == Kind.IDENTIFIER_PERSON:
        s = str(value)
        return s[:2] + _stars(len(s) - 2) if level <= 3 else _stars(len(s))
    if k == Kind.NAME_PERSON:
        s = str(value)
        return s[0] + _stars(len(s) - 1) if level <= 2 else _stars(len(s))
    if k == Kind.PHONE:
        s = str(value)
        return s[:3] + _stars(len(s) - 3) if level <= 3 else _stars(len(s))
    if k == Kind.BANK_ACCOUNT:
        return _stars(len(str(value)))
    if k in (Kind.IDENTIFIER_ENTERPRISE, Kind.IDENTIFIER_VEHICLE, Kind.CODE):
        s = str(value)
        keep = {2: 6, 3: 2}.get(level, 0)
        return s[:keep] + _stars(len(s) - keep)
    if k == Kind.NAME_ORG:
        s = str(value)
        return value if level == 2 else s[:2] + _stars(len(s) - 2)
    if k == Kind.ADDRESS:
        s = str(value)
        cut = max(s.find("区"), s.find("县"), s.find("市"))
        return (s[:cut + 1] if cut > 0 else "") + "****"
    if k in (Kind.TEXT,):
        return f"[{len(str(value))} 字]" if level >= 3 else str(value)[:6] + "…"
    if k in (Kind.MONEY, Kind.COUNT, Kind.RATIO):
        if level == 2:
            return value
        v = value / 100 if k == Kind.MONEY else value
        return _magnitude(float(v)) if k != Kind.RATIO else "*"
    if k in (Kind.DATE, Kind.DATETIME):
        if level == 2:
            return value.date().isoformat() if isinstance(value, datetime) else value.isoformat()
        return f"{value.year}" if level == 4 else f"{value.year}-{value.month:02d}"
    if k in (Kind.CATEGORY, Kind.FLAG):
        return value if level <= 3 else "*"
    return "*"


def mask_rows(schema: ResourceSchema, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fields = {f.name: f for f in schema.fields}
    return [{k: mask_value(fields[k], v) for k, v in row.items() if k in fields} for row in rows]


def describe(f: FieldSpec) -> str:
    """How a field is masked, in words, for the catalogue screen."""
    if f.kind in ALWAYS or f.grade != Grade.L1:
        return f"masked ({f.grade.value})"
    return "shown"
