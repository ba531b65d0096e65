"""The catalogue: register resources, version their schemas, report their quality.

Services flush; the request (or the job) commits. Every view and change is audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.data.schema import (
    Grade,
    ProvisionMode,
    ResourceSchema,
    ShareMode,
    UpdateCycle,
)
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.catalog import csvload
from authops.platform.catalog.models import DataResource, Dataset, IngestRun, SchemaVersion
from authops.platform.identity.models import Organisation

ASSESSMENT_DAYS = 365


# --- lookup ------------------------------------------------------------------------------
def get_resource(session: Session, code: str) -> DataResource:
    res = session.exec(select(DataResource).where(DataResource.code == code)).first()
    if res is None:
        raise NotFound(f"no data resource with code '{code}'")
    return res


def own_resource(session: Session, principal: Principal, code: str) -> DataResource:
    """The resource, if the caller's organisation provides it (else 404, as for a missing one)."""
    res = get_resource(session, code)
    if res.org_id != principal.org_id:
        raise NotFound(f"no data resource with code '{code}'")
    return res


def list_resources(session: Session, *, org_id: int | None = None, grade: str | None = None,
                   q: str | None = None) -> list[DataResource]:
    stmt = select(DataResource).order_by(DataResource.no, DataResource.code)
    if org_id is not None:
        stmt = stmt.where(DataResource.org_id == org_id)
    if grade:
        stmt = stmt.where(DataResource.grade == grade)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(DataResource.code.like(like) | DataResource.name_zh.like(like)
                          | DataResource.name_en.like(like))
    return list(session.exec(stmt))


def schema_version(session: Session, res: DataResource, version: int | None = None) -> SchemaVersion:
    v = version or res.schema_version
    row = session.exec(select(SchemaVersion).where(SchemaVersion.resource_id == res.id,
                                                   SchemaVersion.version == v)).first()
    if row is None:
        raise NotFound(f"resource '{res.code}' has no schema version {v}")
    return row


def schema_of(session: Session, res: DataResource, version: int | None = None) -> ResourceSchema:
    return ResourceSchema.model_validate(schema_version(session, res, version).definition)


def versions(session: Session, res: DataResource) -> list[SchemaVersion]:
    return list(session.exec(select(SchemaVersion).where(SchemaVersion.resource_id == res.id)
                             .order_by(SchemaVersion.version)))


def datasets(session: Session, res: DataResource, limit: int = 50) -> list[Dataset]:
    return list(session.exec(select(Dataset).where(Dataset.resource_id == res.id)
                             .order_by(Dataset.version.desc()).limit(limit)))


# --- registration ------------------------------------------------------------------------
def register_resource(session: Session, *, org: Organisation, code: str, name_zh: str, name_en: str,
                      description: str, grade: Grade, schema: ResourceSchema,
                      share_modes: tuple[ShareMode, ...], provision_modes: tuple[ProvisionMode, ...],
                      update_cycle: UpdateCycle, no: int | None = None, actor: Any) -> DataResource:
    if org.kind != OrgKind.PROVIDER:
        raise InvalidInput("only a provider department registers data resources", details={"field": "org"})
    if session.exec(select(DataResource).where(DataResource.code == code)).first():
        raise Conflict(f"a data resource with code '{code}' already exists", details={"field": "code"})
    if not share_modes:
        raise InvalidInput("choose at least one share mode (verify, query, batch)", details={"field": "share_modes"})
    res = DataResource(code=code, org_id=org.id, no=no, name_zh=name_zh, name_en=name_en,
                       description=description, grade=grade.value, share_modes=[m.value for m in share_modes],
                       provision_modes=[m.value for m in provision_modes], update_cycle=update_cycle.value)
    session.add(res)
    session.flush()
    session.add(SchemaVersion(resource_id=res.id, version=1, definition=schema.model_dump(mode="json"),
                              note="registered", created_by=_who(actor)))
    session.flush()
    audit_log.record(session, actor, "catalog.register", object_type="data_resource", object_id=code,
                     details={"schema_version": 1, "fields": len(schema.fields), "grade": grade.value})
    return res


def change_schema(session: Session, res: DataResource, new: ResourceSchema, *, actor: Any,
                  note: str = "") -> SchemaVersion | None:
    """Record a new schema version (None if nothing changed). Data under old versions stays readable."""
    old = schema_of(session, res)
    if old == new:
        return None
    breaks = old.breaks(new)
    row = SchemaVersion(resource_id=res.id, version=res.schema_version + 1, definition=new.model_dump(mode="json"),
                        note=note or "; ".join(breaks) or "fields added or described", breaking=bool(breaks),
                        created_by=_who(actor))
    session.add(row)
    res.schema_version = row.version
    res.updated_at = utcnow()
    session.add(res)
    session.flush()
    audit_log.record(session, actor, "catalog.schema_change", object_type="data_resource", object_id=res.code,
                     details={"schema_version": row.version, "breaking": bool(breaks), "changes": breaks[:20]})
    return row


def _who(actor: Any) -> str:
    a = actor if isinstance(actor, audit_log.Actor) else audit_log.Actor.of(actor)
    return (f"{a.kind}:{a.id}" if a.id is not None else f"{a.kind}:{a.name}")[:64]


def _department(session: Session, dept: csvload.Department) -> Organisation:
    org = session.exec(select(Organisation).where(Organisation.kind == OrgKind.PROVIDER,
                                                  Organisation.name_zh == dept.name_zh)).first()
    if org is not None:
        return org
    from authops.platform.identity import service as identity_service

    n = session.exec(select(func.count()).select_from(Organisation)
                     .where(Organisation.kind == OrgKind.PROVIDER)).one()
    code = f"prov-{n + 1:02d}"
    while session.exec(select(Organisation).where(Organisation.code == code)).first():
        n += 1
        code = f"prov-{n + 1:02d}"
    return identity_service.create_org(session, kind=OrgKind.PROVIDER, code=code, name_zh=dept.name_zh,
                                       name_en=dept.name_en)


def load_catalog(session: Session, folder: Path | str, *, actor: Any) -> dict[str, int]:
    """Register every resource in a catalogue folder under its department; re-running is safe."""
    defs = csvload.load_definitions(folder)
    counts = {"resources": len(defs), "departments": 0, "registered": 0, "schema_changes": 0, "unchanged": 0}
    seen_orgs: set[int] = set()
    for d in defs:
        org = _department(session, d.department)
        seen_orgs.add(org.id)
        existing = session.exec(select(DataResource).where(DataResource.code == d.code)).first()
        if existing is None:
            register_resource(session, org=org, code=d.code, name_zh=d.name_zh, name_en=d.name_en,
                              description=d.description, grade=d.grade, schema=d.schema,
                              share_modes=d.share_modes, provision_modes=d.provision_modes,
                              update_cycle=d.update_cycle, no=d.no, actor=actor)
            counts["registered"] += 1
        elif existing.org_id != org.id:
            raise Conflict(f"resource '{d.code}' is registered by another department")
        elif change_schema(session, existing, d.schema, actor=actor, note="catalogue reloaded"):
            counts["schema_changes"] += 1
        else:
            counts["unchanged"] += 1
    counts["departments"] = len(seen_orgs)
    return counts


# --- quality and timeliness ------------------------------------------------------------------
def timeliness(res: DataResource, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    cycle = UpdateCycle(res.update_cycle)
    due = res.last_loaded_at + timedelta(days=cycle.days) if res.last_loaded_at else None
    if res.last_loaded_at is None:
        status = "never_loaded"
    else:
        status = "on_time" if now <= due else "late"
    return {"update_cycle": cycle.value, "last_loaded_at": res.last_loaded_at, "due_at": due, "status": status,
            "days_late": round(max((now - due).total_seconds(), 0) / 86400, 1) if due else None}


def quality(session: Session, res: DataResource, now: datetime | None = None) -> dict[str, Any]:
    """The figures a provider department is assessed on, plus the current dataset's fill rates."""
    now = now or utcnow()
    since = now - timedelta(days=ASSESSMENT_DAYS)
    runs = session.exec(select(func.count(), func.coalesce(func.sum(IngestRun.rows_received), 0),
                               func.coalesce(func.sum(IngestRun.rows_rejected), 0))
                        .where(IngestRun.resource_id == res.id, IngestRun.created_at >= since,
                               IngestRun.state.in_(("succeeded", "rejected")))).one()
    n_runs, received, rejected = int(runs[0]), int(runs[1]), int(runs[2])
    rejected_runs = session.exec(select(func.count()).where(
        IngestRun.resource_id == res.id, IngestRun.created_at >= since, IngestRun.state == "rejected")).one()
    dup = 0
    for report in session.exec(select(IngestRun.report).where(
            IngestRun.resource_id == res.id, IngestRun.created_at >= since, IngestRun.state == "rejected")):
        dup += int(((report or {}).get("by_rule") or {}).get("duplicate_key", 0))
    ds = session.get(Dataset, res.dataset_id) if res.dataset_id else None
    nulls = (ds.quality or {}).get("null_rate", {}) if ds else {}
    completeness = round(1 - sum(nulls.values()) / len(nulls), 4) if nulls else None
    return {
        "rows": ds.rows if ds else 0,
        "dataset_version": ds.version if ds else None,
        "schema_version": res.schema_version,
        "timeliness": timeliness(res, now),
        "completeness": completeness,
        "accuracy": round(1 - rejected / received, 4) if received else None,
        "loads": n_runs, "loads_rejected": int(rejected_runs),
        "rows_received": received, "rows_rejected": rejected, "duplicate_keys_rejected": dup,
        "null_rate": nulls,
    }
