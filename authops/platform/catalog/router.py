"""Catalogue routes. Everyone with catalog.read sees schemas, figures and masked samples;
only the providing department registers, changes, feeds and sees its sources and loads.
No route returns a raw row, not even to the department that provided it.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Literal

from pydantic import ValidationError
from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Response, UploadFile
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.data import datasets as ds_store
from authops.core.data.schema import ResourceSchema
from authops.core.errors import InvalidInput
from authops.core.identity import Principal
from authops.core.jobs import service as jobs
from authops.core.storage.store import get_object_store
from authops.platform.catalog import excel, ingest, schemas, service, tasks
from authops.platform.catalog.models import DataResource, Dataset, IngestRun, IngestSource
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.identity.models import Organisation
from authops.policies import masking

router = APIRouter(prefix="/catalog", tags=["catalogue"])
MAX_UPLOAD = 200 * 1024 * 1024


def _summary(session: Session, res: DataResource, orgs: dict[int, Organisation] | None = None,
             rows: int | None = None):
    org = (orgs or {}).get(res.org_id) or session.get(Organisation, res.org_id)
    t = service.timeliness(res)
    if rows is None:
        rows = session.get(Dataset, res.dataset_id).rows if res.dataset_id else 0
    return dict(code=res.code, no=res.no, name_zh=res.name_zh, name_en=res.name_en, org_id=res.org_id,
                department_zh=org.name_zh, department_en=org.name_en, grade=res.grade,
                share_modes=res.share_modes, provision_modes=res.provision_modes, update_cycle=res.update_cycle,
                schema_version=res.schema_version, rows=rows, timeliness=t["status"],
                last_loaded_at=res.last_loaded_at)


def _fields(schema: ResourceSchema) -> list[schemas.FieldOut]:
    return [schemas.FieldOut(name=f.name, name_zh=f.name_zh, kind=f.kind.value, type=f.dtype.value,
                             grade=f.grade.value, pii=f.pii, required=f.required,
                             enum=list(f.enum) if f.enum else None, check=f.check.value if f.check else None,
                             masking=masking.describe(f)) for f in schema.fields]


def _view(session: Session, principal: Principal, res: DataResource, what: str) -> None:
    audit_log.record(session, actor_of(principal), "catalog.view", object_type="data_resource",
                     object_id=res.code, details={"view": what})


# --- reading -------------------------------------------------------------------------------
@router.get("/resources", response_model=list[schemas.ResourceSummary])
def list_resources(session: SessionDep, principal: Annotated[Principal, require("catalog.read")],
                   org_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
                   grade: Literal["L1", "L2", "L3", "L4"] | None = None,
                   q: Annotated[str | None, Query(max_length=100)] = None):
    """The catalogue: every registered resource with its department, grade, modes and freshness."""
    orgs = {o.id: o for o in session.exec(select(Organisation))}
    resources = service.list_resources(session, org_id=org_id, grade=grade, q=q)
    current = [r.dataset_id for r in resources if r.dataset_id]
    rows = dict(session.exec(select(Dataset.id, Dataset.rows).where(Dataset.id.in_(current))).all()) if current else {}
    return [_summary(session, r, orgs, rows.get(r.dataset_id, 0)) for r in resources]


@router.get("/resources/{code}", response_model=schemas.ResourceDetail)
def get_resource(code: str, session: SessionDep, principal: Annotated[Principal, require("catalog.read")]):
    """One resource: fields with kind, type, grade and masking; key; privacy unit; quality figures."""
    res = service.get_resource(session, code)
    schema = service.schema_of(session, res)
    _view(session, principal, res, "detail")
    return {**_summary(session, res), "description": res.description, "privacy_unit": schema.privacy_unit.value,
            "unit_field": schema.unit_field, "key": list(schema.key), "fields": _fields(schema),
            "quality": service.quality(session, res)}


@router.get("/resources/{code}/schema", response_model=list[schemas.FieldOut])
def get_schema(code: str, session: SessionDep, principal: Annotated[Principal, require("catalog.read")],
               version: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None):
    """The fields of the current schema, or of an earlier `version`."""
    return _fields(service.schema_of(session, service.get_resource(session, code), version))


@router.get("/resources/{code}/versions", response_model=schemas.VersionsOut)
def get_versions(code: str, session: SessionDep, principal: Annotated[Principal, require("catalog.read")]):
    """Schema versions and dataset versions (sizes and dates, never contents)."""
    res = service.get_resource(session, code)
    svs = [schemas.SchemaVersionOut.model_validate(v).model_copy(update={"fields": len(v.definition["fields"])})
           for v in service.versions(session, res)]
    dss = service.datasets(session, res)
    cur = next((d.version for d in dss if d.id == res.dataset_id), None)
    return {"schema_versions": svs, "datasets": dss, "current_dataset_version": cur}


@router.get("/resources/{code}/quality")
def get_quality(code: str, session: SessionDep, principal: Annotated[Principal, require("catalog.read")]):
    """Timeliness against the declared cycle, completeness, accuracy, null rate per field."""
    return service.quality(session, service.get_resource(session, code))


@router.get("/resources/{code}/sample", response_model=schemas.SampleOut)
def get_sample(code: str, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("catalog.read")],
               rows: Annotated[int, Query(ge=1, le=20)] = 5):
    """A few rows of the current data, each field masked according to its grade."""
    res = service.get_resource(session, code)
    schema = service.schema_of(session, res)
    out: list = []
    version = None
    if res.dataset_id:
        ds = session.get(Dataset, res.dataset_id)
        version = ds.version
        ds_schema = service.schema_of(session, res, ds.schema_version)
        raw = ingest.sample_rows(get_object_store(settings), ds, rows, seed=zlib.crc32(code.encode()) + ds.version)
        out = masking.mask_rows(ds_schema, raw)
        del raw
    audit_log.record(session, actor_of(principal), "catalog.sample", object_type="data_resource", object_id=code,
                     rows=len(out), details={"masked": True})
    return {"code": code, "dataset_version": version, "fields": schema.names, "rows": out}


@router.get("/resources/{code}/mock", response_model=schemas.SampleOut)
def get_mock(code: str, session: SessionDep, settings: SettingsDep,
             principal: Annotated[Principal, require("catalog.read")],
             rows: Annotated[int, Query(ge=1, le=1000)] = 50):
    """The resource's mock dataset: synthetic rows of the same schema, shown in full for development."""
    res = service.get_resource(session, code)
    if not res.mock_object_key:
        return {"code": code, "dataset_version": None, "masked": False, "fields": [], "rows": []}
    table = ds_store.read_dataset(get_object_store(settings), res.mock_object_key).slice(0, rows)
    audit_log.record(session, actor_of(principal), "catalog.mock", object_type="data_resource", object_id=code,
                     rows=table.num_rows)
    return {"code": code, "dataset_version": None, "masked": False, "fields": table.column_names,
            "rows": [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                     for r in table.to_pylist()]}


# --- registering -----------------------------------------------------------------------------
@router.post("/resources", response_model=schemas.ResourceDetail, status_code=201)
def register(body: schemas.RegisterIn, session: SessionDep,
             principal: Annotated[Principal, require("catalog.register")]):
    """Register a data resource of the caller's department (schema version 1)."""
    schema = _schema(body)
    org = session.get(Organisation, principal.org_id)
    res = service.register_resource(
        session, org=org, code=body.code, name_zh=body.name_zh, name_en=body.name_en,
        description=body.description, grade=body.grade, schema=schema, share_modes=tuple(body.share_modes),
        provision_modes=tuple(body.provision_modes), update_cycle=body.update_cycle, actor=actor_of(principal))
    return get_resource(res.code, session, principal)


def _schema(body) -> ResourceSchema:
    try:
        return ResourceSchema(fields=tuple(body.fields), key=tuple(body.key), privacy_unit=body.privacy_unit,
                              unit_field=body.unit_field)
    except ValidationError as exc:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors(include_input=False))
        raise InvalidInput(f"schema: {msg}", details={"field": "fields"}) from None


@router.put("/resources/{code}/schema", response_model=schemas.SchemaVersionOut)
def change_schema(code: str, body: schemas.SchemaChangeIn, session: SessionDep,
                  principal: Annotated[Principal, require("catalog.register")]):
    """A new schema version; dropping or retyping a field is marked breaking, old data stays readable."""
    res = service.own_resource(session, principal, code)
    row = service.change_schema(session, res, _schema(body), actor=actor_of(principal), note=body.note)
    row = row or service.schema_version(session, res)
    return schemas.SchemaVersionOut.model_validate(row).model_copy(update={"fields": len(row.definition["fields"])})


# --- feeding ---------------------------------------------------------------------------------
@router.get("/resources/{code}/template.xlsx")
def template(code: str, session: SessionDep, principal: Annotated[Principal, require("data.ingest")]):
    """The resource's Excel template: bilingual headers, validations and an instructions sheet."""
    res = service.own_resource(session, principal, code)
    data = excel.build_template(code=res.code, name_zh=res.name_zh, name_en=res.name_en,
                                schema=service.schema_of(session, res))
    audit_log.record(session, actor_of(principal), "catalog.template", object_type="data_resource", object_id=code,
                     bytes=len(data))
    return Response(data, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{code}-template.xlsx"'})


def _run_out(run: IngestRun, code: str) -> schemas.RunOut:
    return schemas.RunOut.model_validate(run).model_copy(update={"resource_code": code})


@router.post("/resources/{code}/uploads", response_model=schemas.UploadOut, status_code=202)
def upload(code: str, session: SessionDep, settings: SettingsDep, background: BackgroundTasks,
           principal: Annotated[Principal, require("data.ingest")],
           file: Annotated[UploadFile, File(description="the filled template (.xlsx) or a UTF-8 CSV")],
           mode: Annotated[Literal["replace", "upsert"], Form()] = "replace"):
    """Upload a filled template or CSV; a worker validates it whole and loads it or reports every bad row."""
    res = service.own_resource(session, principal, code)
    data = file.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise InvalidInput(f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MB; split it into batches",
                           details={"field": "file"})
    fmt = "xlsx" if data[:2] == b"PK" or (file.filename or "").lower().endswith(".xlsx") else "csv"
    run = ingest.new_run(session, res, path="excel" if fmt == "xlsx" else "csv", mode=mode,
                         actor=actor_of(principal))
    run.staged_key = f"uploads/{res.code}/{run.id}.{fmt}"
    get_object_store(settings).put(run.staged_key, data)
    job = jobs.create_job(session, kind="catalog.ingest_upload", params={"run_id": run.id, "format": fmt},
                          org_id=principal.org_id, created_by=principal.user_id, max_attempts=2)
    run.job_id = job.id
    session.add(run)
    session.flush()
    background.add_task(jobs.dispatch_pending, settings, job_ids=[job.id])  # after the commit
    audit_log.record(session, actor_of(principal), "data.upload", object_type="data_resource", object_id=code,
                     bytes=len(data), details={"run_id": run.id, "job_id": job.id, "format": fmt})
    return {"run": _run_out(run, code), "job_id": job.id}


@router.get("/runs", response_model=list[schemas.RunOut])
def list_runs(session: SessionDep, principal: Annotated[Principal, require("data.ingest")],
              resource: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50):
    """The caller's department's loads, newest first, with their reports."""
    stmt = select(IngestRun, DataResource.code).join(DataResource, DataResource.id == IngestRun.resource_id) \
        .where(IngestRun.org_id == principal.org_id).order_by(IngestRun.id.desc()).limit(limit)
    if resource:
        stmt = stmt.where(DataResource.code == resource)
    return [_run_out(run, code) for run, code in session.exec(stmt)]


@router.get("/runs/{run_id}", response_model=schemas.RunOut)
def get_run(run_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("data.ingest")]):
    run = session.get(IngestRun, run_id)
    if run is None or run.org_id != principal.org_id:
        from authops.core.errors import NotFound

        raise NotFound(f"load {run_id} not found")
    return _run_out(run, session.get(DataResource, run.resource_id).code)


@router.post("/resources/{code}/sources", response_model=schemas.SourceOut, status_code=201)
def add_source(code: str, body: schemas.SourceIn, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("data.ingest")]):
    """Register the department's front-end table or service interface; pulls follow the update cycle."""
    res = service.own_resource(session, principal, code)
    if body.kind == "table" and not body.table:
        raise InvalidInput("a table source needs 'table'", details={"field": "table"})
    from sqlalchemy.engine import make_url

    try:
        display = make_url(body.url).render_as_string(hide_password=True) if body.kind == "table" else \
            body.url.split("?")[0]
    except Exception:  # noqa: BLE001 - any parse failure is the user's URL
        raise InvalidInput("url is not a valid database URL", details={"field": "url"}) from None
    if body.kind == "table":
        display += f" table {body.table}"
    config = body.model_dump(exclude={"kind", "incremental", "updated_column"}, exclude_none=True)
    src = tasks.add_source(session, settings, res, kind=body.kind, config=config, incremental=body.incremental,
                           updated_column=body.updated_column, actor=actor_of(principal), display=display)
    return src


@router.get("/resources/{code}/sources", response_model=list[schemas.SourceOut])
def list_sources(code: str, session: SessionDep, principal: Annotated[Principal, require("data.ingest")]):
    res = service.own_resource(session, principal, code)
    return list(session.exec(select(IngestSource).where(IngestSource.resource_id == res.id)))


@router.post("/resources/{code}/sources/{source_id}/run", status_code=202)
def run_source(code: str, source_id: ObjectId, session: SessionDep, settings: SettingsDep,
               background: BackgroundTasks, principal: Annotated[Principal, require("data.ingest")]):
    """Pull now instead of waiting for the cycle."""
    res = service.own_resource(session, principal, code)
    src = tasks.own_source(session, res, source_id)
    job = tasks.run_source_now(session, src, org_id=principal.org_id, created_by=principal.user_id)
    background.add_task(jobs.dispatch_pending, settings, job_ids=[job.id])
    audit_log.record(session, actor_of(principal), "catalog.source_run", object_type="ingest_source",
                     object_id=src.id, details={"resource": code, "job_id": job.id})
    return {"job_id": job.id}
