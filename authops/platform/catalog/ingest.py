"""Loading a batch: validate whole, then store a new immutable encrypted dataset, or nothing.

A batch is accepted whole or rejected whole. Accepted: a new dataset version (full
replacement, or an upsert merged with the current data by key), written encrypted before
the transaction that makes it current commits. Rejected: an `IngestRun` with the
row-level report and nothing else. Either way one audit event records sizes, not values.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import func
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.data import datasets as ds_store
from authops.core.data.schema import ResourceSchema, arrow_schema
from authops.core.errors import InvalidInput
from authops.core.storage.store import ObjectStore
from authops.platform.catalog import service
from authops.platform.catalog.models import DataResource, Dataset, IngestRun
from authops.platform.catalog.report import ErrorReport, IngestRejected
from authops.platform.catalog.validate import validate

MODES = ("replace", "upsert")
PATHS = ("excel", "csv", "table", "api", "bulk")


def new_run(session: Session, res: DataResource, *, path: str, mode: str, actor: Any,
            source_id: int | None = None) -> IngestRun:
    if mode not in MODES:
        raise InvalidInput("mode must be 'replace' or 'upsert'", details={"field": "mode"})
    if path not in PATHS:
        raise InvalidInput(f"path must be one of {', '.join(PATHS)}", details={"field": "path"})
    if mode == "upsert":
        schema = service.schema_of(session, res)
        if not schema.key:
            raise InvalidInput(f"resource '{res.code}' has no record key, so it can only be replaced whole",
                               details={"field": "mode"})
    run = IngestRun(resource_id=res.id, org_id=res.org_id, path=path, mode=mode, source_id=source_id,
                    state="running", created_by=service._who(actor))
    session.add(run)
    session.flush()
    return run


def _current(session: Session, store: ObjectStore, res: DataResource, schema: ResourceSchema) -> pa.Table | None:
    """The current data projected onto `schema` (None if there is none it can carry over to)."""
    if not res.dataset_id:
        return None
    cur = session.get(Dataset, res.dataset_id)
    table = ds_store.read_dataset(store, cur.object_key)
    if cur.schema_version != res.schema_version:
        old = service.schema_of(session, res, cur.schema_version)
        if old.breaks(schema):
            raise InvalidInput(
                f"resource '{res.code}' changed schema incompatibly since the last load "
                f"(v{cur.schema_version} → v{res.schema_version}); load the whole data with mode 'replace'",
                details={"field": "mode"})
        target = arrow_schema(schema)
        cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, target.field(f.name).type)
                for f in schema.fields]
        table = pa.Table.from_arrays(cols, schema=target)
    return table


def _merge(current: pa.Table | None, batch: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Rows of `current` whose key is not in the batch, then the batch (batch wins)."""
    if current is None or current.num_rows == 0:
        return batch
    keep = current.join(batch.select(list(key)), keys=list(key), join_type="left anti",
                        use_threads=True).select(batch.column_names)
    return pa.concat_tables([keep.cast(batch.schema), batch])


def _quality(table: pa.Table) -> dict[str, Any]:
    n = table.num_rows
    return {"null_rate": {name: round(table.column(name).null_count / n, 4) if n else 0.0
                          for name in table.column_names}}


def load(session: Session, store: ObjectStore, res: DataResource, raw: pa.Table, *, run: IngestRun,
         actor: Any, first_row: int = 1, stored_units: bool = False) -> IngestRun:
    """Validate `raw` and either store it (run succeeded) or record the report (run rejected).

    Raises nothing for a rejected batch: the caller commits the run and its report. Any
    other error propagates, and the caller's rollback leaves no trace but the encrypted
    object (which nothing references, and which `collect_orphans` removes).
    """
    schema = service.schema_of(session, res)
    table_in = getattr(raw, "table", raw)
    run.rows_received = table_in.num_rows
    report = ErrorReport()
    try:
        if table_in.num_rows == 0:
            report.add("empty", "the batch has no rows; nothing to load")
            report.raise_if_any(f"the load of '{res.code}'")
        table = validate(schema, raw, first_row=first_row, report=report, what=f"the load of '{res.code}'",
                         stored_units=stored_units)
    except IngestRejected as exc:
        return reject(session, res, run, exc, actor)
    # Loads of one resource queue here until their commit (two uploads on two workers, an upload and a
    # scheduled pull): each then reads the current data and takes the next version number in turn.
    # NO KEY UPDATE: rows that only refer to the resource (a new upload's run) are not held up.
    session.exec(select(DataResource).where(DataResource.id == res.id).with_for_update(key_share=True)
                 .execution_options(populate_existing=True)).one()
    if run.mode == "upsert":
        table = _merge(_current(session, store, res, schema), table, schema.key)
    version = (session.exec(select(func.max(Dataset.version)).where(Dataset.resource_id == res.id)).one() or 0) + 1
    key = ds_store.dataset_key(res.code, res.schema_version, version, secrets.token_hex(6))
    info = ds_store.write_dataset(store, key, table)
    ds = Dataset(resource_id=res.id, version=version, schema_version=res.schema_version, object_key=key,
                 rows=table.num_rows, nbytes=info.size, sha256=info.sha256, quality=_quality(table), load_id=run.id)
    session.add(ds)
    session.flush()
    now = utcnow()
    res.dataset_id, res.last_loaded_at, res.updated_at = ds.id, now, now
    run.state, run.dataset_id, run.finished_at, run.staged_key = "succeeded", ds.id, now, None
    run.message = f"{run.rows_received} rows loaded ({run.mode}); dataset v{version} has {ds.rows} rows"
    session.add_all([res, run])
    session.flush()
    audit_log.record(session, actor, "data.ingest", object_type="data_resource", object_id=res.code,
                     rows=run.rows_received, bytes=info.size,
                     details={"run_id": run.id, "path": run.path, "mode": run.mode, "dataset_version": version,
                              "schema_version": res.schema_version, "dataset_rows": ds.rows})
    return run


def reject(session: Session, res: DataResource, run: IngestRun, exc: IngestRejected, actor: Any) -> IngestRun:
    """Record a batch rejected whole: the run keeps the report (rows, columns, rules; no values)."""
    details = exc.details or {}
    run.state, run.finished_at, run.staged_key = "rejected", utcnow(), None
    run.error_count = int(details.get("error_count", 1))
    rows = int(details.get("rows_rejected", 0))
    # A file-level problem (header, format) rejects every row; row errors reject those rows.
    run.rows_rejected = rows if rows else run.rows_received
    run.report = details
    run.message = exc.message[:1000]
    session.add(run)
    session.flush()
    audit_log.record(session, actor, "data.ingest", outcome="error", object_type="data_resource",
                     object_id=res.code, rows=run.rows_received,
                     details={"run_id": run.id, "path": run.path, "rejected": True,
                              "errors": run.error_count, "by_rule": details.get("by_rule", {})})
    return run


def fail(session: Session, res: DataResource, run: IngestRun, message: str, actor: Any) -> IngestRun:
    """A pull that could not complete (source down, timed out): nothing stored, no rows judged."""
    run.state, run.finished_at, run.message, run.staged_key = "failed", utcnow(), message[:1000], None
    session.add(run)
    session.flush()
    audit_log.record(session, actor, "data.ingest", outcome="error", object_type="data_resource",
                     object_id=res.code, details={"run_id": run.id, "path": run.path, "failed": True})
    return run


def sample_rows(store: ObjectStore, ds: Dataset, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random rows of a dataset, for masking before anyone sees them."""
    table = ds_store.read_dataset(store, ds.object_key)
    if table.num_rows == 0:
        return []
    idx = np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows), replace=False)
    return table.take(pa.array(np.sort(idx))).to_pylist()

