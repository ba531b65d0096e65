"""Read the plan's catalogue tables (resources.csv, fields.csv) into resource definitions.

`../shared/catalog` holds the annex tables as extracted from the plan. What the annex does
not say (record key, privacy unit, update cycle, share modes, enumerations) comes from
the platform's own supplement in `authops/data/catalog/` (resources_extra.csv, enums.csv),
which a department would otherwise fill in when registering.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from authops.core.data.schema import (
    Check,
    FieldSpec,
    Grade,
    Kind,
    PrivacyUnit,
    ProvisionMode,
    ResourceSchema,
    ShareMode,
    UpdateCycle,
)
from authops.core.errors import InvalidInput

BUILTIN = Path(__file__).resolve().parents[2] / "data" / "catalog"
REQUIRED_FILES = ("resources.csv", "fields.csv")


@dataclass(frozen=True)
class Department:
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class ResourceDefinition:
    code: str
    no: int
    department: Department
    name_zh: str
    name_en: str
    description: str
    grade: Grade
    schema: ResourceSchema
    share_modes: tuple[ShareMode, ...]
    provision_modes: tuple[ProvisionMode, ...]
    update_cycle: UpdateCycle


def check_for(name: str, kind: Kind) -> Check | None:
    """The format check a field gets from its name and kind."""
    if kind == Kind.IDENTIFIER_PERSON and name.endswith("id_number"):
        return Check.RESIDENT_ID
    if name == "uscc":
        return Check.USCC
    if name == "vin":
        return Check.VIN
    if name == "plate_number":
        return Check.PLATE
    if kind == Kind.PHONE:
        return Check.PHONE
    return None


def field_grade(kind: Kind, pii: bool, resource_grade: Grade) -> Grade:
    """A field's grade: personal identifiers are L4 wherever they appear; others take the resource's."""
    if pii and kind in (Kind.IDENTIFIER_PERSON, Kind.PHONE, Kind.BANK_ACCOUNT):
        return Grade.L4
    if pii and resource_grade.level < Grade.L3.level:
        return Grade.L3
    return resource_grade


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name} is not UTF-8 (byte {exc.start}); save it as UTF-8") from None


def load_definitions(folder: Path | str) -> list[ResourceDefinition]:
    """Parse a catalogue folder; raise InvalidInput naming the file, row and column to fix."""
    folder = Path(folder)
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise InvalidInput(f"catalogue folder {folder} lacks {', '.join(missing)}")
    resources = _read(folder / "resources.csv")
    fields = _read(folder / "fields.csv")
    extra_path = folder / "resources_extra.csv"
    extra = {r["code"]: r for r in _read(extra_path if extra_path.is_file() else BUILTIN / "resources_extra.csv")}
    enums_path = folder / "enums.csv" if (folder / "enums.csv").is_file() else BUILTIN / "enums.csv"
    enums: dict[str, tuple[str, ...]] = {}
    if enums_path.is_file():
        for row in _read(enums_path):
            enums[row["field"]] = tuple(v for v in row["values"].split("|") if v)

    by_resource: dict[str, list[dict[str, str]]] = {}
    for i, row in enumerate(fields, start=2):
        row["_line"] = str(i)
        by_resource.setdefault(row["resource_code"], []).append(row)

    out = []
    for line, r in enumerate(resources, start=2):
        code = r.get("code", "")
        where = f"resources.csv line {line} ({code or 'no code'})"
        try:
            grade = Grade(r["sensitivity"])
        except (KeyError, ValueError):
            raise InvalidInput(f"{where}: column 'sensitivity' must be L1, L2, L3 or L4") from None
        if code not in by_resource:
            raise InvalidInput(f"{where}: fields.csv has no fields for this resource")
        ex = extra.get(code, {})
        specs: list[FieldSpec] = []
        rows = sorted(by_resource[code], key=lambda x: int(x["position"]))
        if code == "enterprise_tags" and not any(x["field_en"] == "uscc" for x in rows):
            # The annex lists the tags without saying whose they are (its #4); a tag no one
            # can join is useless, so the platform registers the enterprise's code with them.
            rows = [{"field_en": "uscc", "field_zh": "统一社会信用代码", "kind": "identifier_enterprise",
                     "pii": "no", "_line": "-"}, *rows]
        key = tuple(k for k in ex.get("key", "").split("|") if k)
        unit_field = ex.get("unit_field") or None
        for f in rows:
            try:
                kind = Kind(f["kind"])
            except ValueError:
                raise InvalidInput(f"fields.csv line {f['_line']}: kind {f['kind']!r} is not one of "
                                   f"{', '.join(k.value for k in Kind)}") from None
            pii = f["pii"] == "yes"
            name = f["field_en"]
            specs.append(FieldSpec(
                name=name, name_zh=f["field_zh"], kind=kind, pii=pii,
                grade=field_grade(kind, pii, grade),
                required=name in key or name == unit_field,
                enum=enums.get(name) if kind == Kind.CATEGORY else None,
                check=check_for(name, kind)))
        try:
            schema = ResourceSchema(fields=tuple(specs), key=key,
                                    privacy_unit=PrivacyUnit(ex.get("privacy_unit") or "none"),
                                    unit_field=unit_field)
        except ValueError as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        out.append(ResourceDefinition(
            code=code, no=int(r["no"]), department=Department(r["provider_zh"], r["provider_en"]),
            name_zh=r["name_zh"], name_en=r["name_en"],
            description=f"{r['name_zh']}：{r['fields_zh'].replace('|', '、')}",
            grade=grade, schema=schema,
            share_modes=tuple(ShareMode(m) for m in (ex.get("share_modes") or "verify|query|batch").split("|")),
            provision_modes=tuple(ProvisionMode(m) for m in
                                  (ex.get("provision_modes") or r["provision_en"]).split("|")),
            update_cycle=UpdateCycle(ex.get("update_cycle") or "daily")))
    return out
