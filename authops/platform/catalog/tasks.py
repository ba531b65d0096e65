"""Ingestion jobs: process an uploaded file, pull from a department's table or API, schedule pulls."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, timedelta
from typing import Any

import pyarrow as pa
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.crypto import aead_decrypt, aead_encrypt, derive_key
from authops.core.data.schema import UpdateCycle
from authops.core.db import session_scope
from authops.core.errors import AuthopsError, InvalidInput, NotFound
from authops.core.jobs import registry
from authops.core.jobs import service as jobs
from authops.core.jobs.models import Job
from authops.core.jobs.registry import JobContext, job_handler
from authops.core.settings import Settings, get_settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest, service
from authops.platform.catalog.models import DataResource, IngestRun, IngestSource
from authops.platform.catalog.report import IngestRejected

SYSTEM = audit_log.SYSTEM


# --- sealed source settings ------------------------------------------------------------------
def _source_key(settings: Settings) -> bytes:
    secret = hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest()
    return derive_key(secret, "ingest-source-config")


def seal_config(settings: Settings, config: dict[str, Any], source_aad: str) -> bytes:
    return aead_encrypt(_source_key(settings), json.dumps(config, sort_keys=True).encode(), source_aad.encode())


def open_config(settings: Settings, blob: bytes, source_aad: str) -> dict[str, Any]:
    return json.loads(aead_decrypt(_source_key(settings), blob, source_aad.encode(), what="source settings"))


def _aad(res: DataResource) -> str:
    return f"ingest-source:{res.code}"


# --- uploads -----------------------------------------------------------------------------------
@job_handler("catalog.ingest_upload")
def ingest_upload(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """Parse and load a staged upload (Excel or CSV) into its resource."""
    from authops.platform.catalog import excel

    run = session.get(IngestRun, int(job.params["run_id"]))
    if run is None or run.state != "running":
        return {"skipped": True}
    res = session.get(DataResource, run.resource_id)
    store = get_object_store(get_settings())
    actor = audit_log.Actor(kind="system", name=f"job {job.id}", org_id=run.org_id)
    schema = service.schema_of(session, res)
    staged = run.staged_key
    ctx.report(0.1, "reading the file")
    try:
        data = store.get(staged)
        reader = excel.read_upload if job.params.get("format") == "xlsx" else excel.read_csv_upload
        raw = reader(data, schema)
    except IngestRejected as exc:
        ingest.reject(session, res, run, exc, actor)
        store.delete(staged, missing_ok=True)
        return {"run_id": run.id, "state": run.state}
    ctx.report(0.5, "validating")
    ingest.load(session, store, res, raw, run=run, actor=actor)
    store.delete(staged, missing_ok=True)
    return {"run_id": run.id, "state": run.state, "rows": run.rows_received}


# --- pulls ---------------------------------------------------------------------------------
def source_settings(settings: Settings, src: IngestSource, res: DataResource) -> dict[str, Any]:
    return open_config(settings, src.config_sealed, _aad(res))


def _pull_table(res_schema, cfg: dict[str, Any], src: IngestSource, since):
    """The whole batch (validated as one) and the newest update time seen (table sources)."""
    from authops.platform.catalog import sources

    names = [f.name for f in res_schema.fields]
    watermark = None
    if src.kind == "table":
        ts = sources.TableSource(url=cfg["url"], table=cfg["table"], columns=cfg.get("columns"),
                                 updated_column=src.updated_column, schema_name=cfg.get("schema_name"))
        pull_ = sources.TablePull(ts, names, since=since)
        chunks = list(pull_.chunks())
        if pull_.watermark is not None:
            watermark = pull_.watermark.astimezone(UTC).replace(tzinfo=None)
    else:
        hs = sources.HttpSource(url=cfg["url"], page_size=int(cfg.get("page_size", 1000)),
                                headers=cfg.get("headers") or {}, timeout=float(cfg.get("timeout", 10.0)),
                                retries=int(cfg.get("retries", 4)), backoff=float(cfg.get("backoff", 0.5)))
        chunks = list(sources.pull_http(hs, names, since=since))
    if not chunks:
        return pa.table({n: pa.array([], pa.string()) for n in names}), watermark
    return pa.concat_tables(chunks, promote_options="permissive"), watermark


@job_handler("catalog.pull")
def pull(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """Pull a department table or API into its resource: all of it, or what changed since the watermark.

    The (slow) pull happens before this transaction writes anything: on SQLite a writing
    transaction would block the job's own heartbeats for as long as the pull takes.
    """
    src = session.get(IngestSource, int(job.params["source_id"]))
    if src is None or not src.active:
        return {"skipped": True}
    res = session.get(DataResource, src.resource_id)
    settings = get_settings()
    actor = audit_log.Actor(kind="system", name=f"job {job.id}", org_id=res.org_id)
    schema = service.schema_of(session, res)
    mode = "upsert" if src.incremental and src.watermark and schema.key else "replace"
    since = src.watermark if mode == "upsert" else None
    started = utcnow()
    ctx.report(0.1, f"pulling from {src.display}")
    raw = problem = seen = None
    try:
        raw, seen = _pull_table(schema, source_settings(settings, src, res), src, since)
    except AuthopsError as exc:
        problem = exc
    ctx.report(0.6, "validating")
    run = ingest.new_run(session, res, path=src.kind, mode=mode, actor=actor, source_id=src.id)
    run.job_id, src.last_run_id = job.id, run.id
    session.add(src)
    if isinstance(problem, IngestRejected):
        ingest.reject(session, res, run, problem, actor)
        return {"run_id": run.id, "state": run.state}
    if problem is not None:
        ingest.fail(session, res, run, problem.message, actor)
        return {"run_id": run.id, "state": run.state, "message": problem.message}
    if raw.num_rows == 0 and mode == "upsert":
        run.state, run.finished_at, run.message = "succeeded", utcnow(), "no rows changed since the last pull"
        res.last_loaded_at, src.watermark = utcnow(), seen or src.watermark
        session.add_all([run, res, src])
        return {"run_id": run.id, "state": run.state, "rows": 0}
    ingest.load(session, get_object_store(settings), res, raw, run=run, actor=actor)
    if run.state == "succeeded" and src.incremental:
        # The department's own newest update time (its clock, not ours) where the table has one.
        src.watermark = seen or started
    session.add(src)
    return {"run_id": run.id, "state": run.state, "rows": run.rows_received}


def add_source(session: Session, settings: Settings, res: DataResource, *, kind: str, config: dict[str, Any],
               incremental: bool, updated_column: str | None, actor: Any, display: str) -> IngestSource:
    if kind not in ("table", "api"):
        raise InvalidInput("kind must be 'table' or 'api'", details={"field": "kind"})
    if incremental and kind == "table" and not updated_column:
        raise InvalidInput("an incremental table pull needs updated_column (the update-time column)",
                           details={"field": "updated_column"})
    src = IngestSource(resource_id=res.id, kind=kind, config_sealed=seal_config(settings, config, _aad(res)),
                       display=display[:300], incremental=incremental, updated_column=updated_column,
                       next_run_at=utcnow())
    session.add(src)
    session.flush()
    audit_log.record(session, actor, "catalog.source_add", object_type="ingest_source", object_id=src.id,
                     details={"resource": res.code, "kind": kind, "incremental": incremental})
    return src


def own_source(session: Session, res: DataResource, source_id: int) -> IngestSource:
    src = session.get(IngestSource, source_id)
    if src is None or src.resource_id != res.id:
        raise NotFound(f"resource '{res.code}' has no source {source_id}")
    return src


def run_source_now(session: Session, src: IngestSource, *, org_id: int, created_by: int | None = None) -> Job:
    """Queue a pull now; the next scheduled one comes a full cycle later."""
    res = session.get(DataResource, src.resource_id)
    src.next_run_at = utcnow() + timedelta(days=UpdateCycle(res.update_cycle).days)
    session.add(src)
    return jobs.create_job(session, kind="catalog.pull", params={"source_id": src.id}, org_id=org_id,
                           created_by=created_by, max_attempts=1)


def schedule_due(settings: Settings) -> int:
    """Queue a pull for every active source whose cycle has come round (safe on every worker)."""
    now = utcnow()
    ids = []
    with session_scope(settings) as session:
        due = session.exec(select(IngestSource).where(IngestSource.active, IngestSource.next_run_at <= now)
                           .with_for_update(skip_locked=True)).all()
        for src in due:
            res = session.get(DataResource, src.resource_id)
            ids.append(run_source_now(session, src, org_id=res.org_id).id)
    if ids:
        jobs.dispatch_pending(settings, job_ids=ids)
    return len(ids)


def _on_job_end(session: Session, job_id: int, outcome: str) -> None:
    """An upload or pull whose job failed or was cancelled ends its run as failed, in the same transaction
    (else the department sees it 'running' forever); nothing was stored."""
    if outcome not in ("failed", "cancelled"):
        return
    run = session.exec(select(IngestRun).where(IngestRun.job_id == job_id, IngestRun.state == "running")).first()
    if run is None:
        return
    code = session.exec(select(Job.error_code).where(Job.id == job_id)).first()  # as just set, not as cached
    why = code or outcome
    ingest.fail(session, session.get(DataResource, run.resource_id), run,
                f"the load did not complete ({why}); nothing was stored: send it again", SYSTEM)


registry.observe(_on_job_end)
