"""Catalogue flows used by the CLI and the demo: load files and synthetic data in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlmodel import select

from authops.audit import log as audit_log
from authops.core.data import datasets as ds_store
from authops.core.db import session_scope
from authops.core.errors import InvalidInput
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest, service
from authops.platform.catalog.models import DataResource, IngestRun

CLI = audit_log.Actor(kind="system", name="cli")


def read_file(path: Path, schema) -> Any:
    """A local file as a raw batch: .xlsx (template), .csv (UTF-8) or .parquet (stored form, money in fen)."""
    from authops.platform.catalog import excel

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    data = path.read_bytes()
    if suffix == ".xlsx":
        return excel.read_upload(data, schema)
    if suffix == ".csv":
        return excel.read_csv_upload(data, schema)
    raise InvalidInput(f"{path.name}: use an .xlsx template, a UTF-8 .csv or a .parquet file")


def load_file(settings: Settings, code: str, path: Path, *, mode: str = "replace",
              actor: audit_log.Actor = CLI) -> IngestRun:
    """Load one file into a resource in one transaction; a rejected batch returns its run with the report."""
    from authops.platform.catalog.report import IngestRejected

    store = get_object_store(settings)
    with session_scope(settings) as session:
        res = service.get_resource(session, code)
        path_kind = {".xlsx": "excel", ".csv": "csv"}.get(path.suffix.lower(), "bulk")
        run = ingest.new_run(session, res, path=path_kind, mode=mode, actor=actor)
        try:
            raw = read_file(path, service.schema_of(session, res))
        except IngestRejected as exc:
            return ingest.reject(session, res, run, exc, actor)
        return ingest.load(session, store, res, raw, run=run, actor=actor, stored_units=path_kind == "bulk")


def bulk_load(settings: Settings, tables: Iterable[tuple[str, pa.Table]], *, actor: audit_log.Actor = CLI,
              mode: str = "replace") -> dict[str, IngestRun]:
    """Load each (code, table) in its own transaction (one resource's failure leaves the others)."""
    store = get_object_store(settings)
    out = {}
    for code, table in tables:
        with session_scope(settings) as session:
            res = service.get_resource(session, code)
            run = ingest.new_run(session, res, path="bulk", mode=mode, actor=actor)
            out[code] = ingest.load(session, store, res, table, run=run, actor=actor, stored_units=True)
    return out


def store_mocks(settings: Settings, mocks: Iterable[tuple[str, pa.Table]], *,
                actor: audit_log.Actor = CLI) -> int:
    """Attach each resource's mock dataset (synthetic rows partners may see in full)."""
    store = get_object_store(settings)
    n = 0
    with session_scope(settings) as session:
        for code, table in mocks:
            res = service.get_resource(session, code)
            key = f"mocks/{code}/v{res.schema_version}.parquet"
            ds_store.write_dataset(store, key, table)
            res.mock_object_key, res.mock_rows = key, table.num_rows
            session.add(res)
            n += 1
        audit_log.record(session, actor, "catalog.mocks", object_type="catalogue", object_id="mocks",
                         details={"resources": n})
    return n


def load_synthetic(settings: Settings, *, scale: float, seed: int = 0, only: set[str] | None = None,
                   skip: set[str] = frozenset(), actor: audit_log.Actor = CLI) -> dict[str, IngestRun]:
    """Generate the linked synthetic data and load it, plus every resource's mock dataset."""
    from authops.platform import synth

    with session_scope(settings) as session:
        defs = [_definition(session, r) for r in session.exec(select(DataResource).order_by(DataResource.no))]
    wanted = {d.code for d in defs if (only is None or d.code in only) and d.code not in skip}
    runs = bulk_load(settings, ((c, t) for c, t in synth.generate(defs, scale=scale, seed=seed, only=wanted)),
                     actor=actor)
    store_mocks(settings, ((d.code, synth.mock(d, seed=seed)) for d in defs if d.code in wanted or only is None),
                actor=actor)
    return runs


def _definition(session, res: DataResource):
    """A csvload.ResourceDefinition for a registered resource (what the generator needs)."""
    from authops.core.data.schema import Grade, ProvisionMode, ShareMode, UpdateCycle
    from authops.platform.catalog.csvload import Department, ResourceDefinition

    return ResourceDefinition(
        code=res.code, no=res.no or 0, department=Department("", ""), name_zh=res.name_zh, name_en=res.name_en,
        description=res.description, grade=Grade(res.grade), schema=service.schema_of(session, res),
        share_modes=tuple(ShareMode(m) for m in res.share_modes),
        provision_modes=tuple(ProvisionMode(m) for m in res.provision_modes),
        update_cycle=UpdateCycle(res.update_cycle))
