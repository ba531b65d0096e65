"""The demo's catalogue chapter: 53 resources registered, fed by all three paths, then assessed.

One resource arrives as a filled Excel template, one is pulled from a department's
front-end database table, one from a department's HTTP service interface (started here
on loopback), and the rest in bulk. Every load goes through the same validation.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from fastapi.testclient import TestClient

from authops.core import db
from authops.core.data.schema import DType, Kind, ResourceSchema
from authops.core.settings import Settings
from authops.demo.checks import demo_worker, login, wait_job
from authops.platform import synth
from authops.platform.catalog import csvload, flows, service
from authops.platform.catalog.models import DataResource
from authops.platform.identity.models import Organisation

EXCEL_RESOURCE = "enterprise_credit_rating"
TABLE_RESOURCE = "vehicle_basic_info"
API_RESOURCE = "truck_violations"
SCALE = 0.01


def department_form(table: pa.Table, schema: ResourceSchema) -> pa.Table:
    """How a department's own system holds the data: money in yuan, times in Beijing local time."""
    cols = []
    for f in schema.fields:
        c = table.column(f.name)
        if f.kind == Kind.MONEY:
            yuan = pc.divide(pc.cast(c, pa.float64()), 100.0)
            c = pc.cast(pc.round(yuan, 2), pa.string())
        elif f.dtype == DType.TIMESTAMP:
            c = pc.local_timestamp(pc.cast(c, pa.timestamp("us", tz="Asia/Shanghai")))
        cols.append(c)
    return pa.Table.from_arrays(cols, names=schema.names)


def _officer(settings: Settings, code: str) -> str:
    with db.session_scope(settings) as session:
        res = service.get_resource(session, code)
        return f"{session.get(Organisation, res.org_id).code}-officer"


def _excel_rows(client, headers, code, table: pa.Table) -> bytes:
    import openpyxl

    r = client.get(f"/api/v1/catalog/resources/{code}/template.xlsx", headers=headers)
    r.raise_for_status()
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    ws = wb.worksheets[0]
    names = [c.value for c in ws[2]]
    for row in table.to_pylist():
        ws.append([row.get(n) for n in names])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None]) -> None:
    ok = dict(fg="green")
    with db.session_scope(settings) as session:
        counts = service.load_catalog(session, csvload.BUILTIN, actor=flows.CLI)
    say(f"   catalogue: {counts['resources']} resources registered under {counts['departments']} departments "
        "(the annex names 13 distinct departments)", **ok)
    with db.session_scope(settings) as session:
        defs = [flows._definition(session, r) for r in session.query(DataResource).order_by(DataResource.no)]
    by_code = {d.code: d for d in defs}
    started = time.perf_counter()
    tables = dict(synth.generate(defs, scale=SCALE, seed=2026))
    total = sum(t.num_rows for t in tables.values())
    say(f"   synthetic data at scale {SCALE}: {total:,} linked rows for {len(tables)} resources "
        f"in {time.perf_counter() - started:.1f} s (valid ID numbers, USCCs, VINs; planted signals)")

    with demo_worker(settings, concurrency=2):
        # 1. Excel template, filled and uploaded by the department's data officer.
        officer = login(client, _officer(settings, EXCEL_RESOURCE), password)
        t = department_form(tables[EXCEL_RESOURCE], by_code[EXCEL_RESOURCE].schema)
        bad = t.slice(0, 5).to_pylist()
        bad[2]["uscc"] = bad[2]["uscc"][:-1] + ("0" if bad[2]["uscc"][-1] != "0" else "1")
        r = client.post(f"/api/v1/catalog/resources/{EXCEL_RESOURCE}/uploads", headers=officer,
                        files={"file": ("bad.xlsx", _excel_rows(client, officer, EXCEL_RESOURCE,
                                                                 pa.Table.from_pylist(bad)), "application/octet-stream")})
        up = r.json()
        wait_job(client, officer, up["job_id"])
        run_ = client.get(f"/api/v1/catalog/runs/{up['run']['id']}", headers=officer).json()
        e = run_["report"]["errors"][0]
        say(f"   Excel: a template with one wrong check character -> {run_['state']}: row {e['row']}, "
            f"{e['column']}, rule {e['rule']} (the value itself is never echoed)", **ok)
        r = client.post(f"/api/v1/catalog/resources/{EXCEL_RESOURCE}/uploads", headers=officer,
                        files={"file": ("ratings.xlsx", _excel_rows(client, officer, EXCEL_RESOURCE, t),
                                        "application/octet-stream")})
        up = r.json()
        job = wait_job(client, officer, up["job_id"])
        run_ = client.get(f"/api/v1/catalog/runs/{up['run']['id']}", headers=officer).json()
        say(f"   Excel: {EXCEL_RESOURCE} template filled and uploaded -> job {job['state']}, {run_['message']}", **ok)

        # 2. Database table: the department's front-end database (a SQLite file here).
        officer = login(client, _officer(settings, TABLE_RESOURCE), password)
        dbfile = Path(settings.data_dir) / "dept-frontend.sqlite3"
        t = department_form(tables[TABLE_RESOURCE], by_code[TABLE_RESOURCE].schema).to_pandas()
        t["updated_at"] = "2026-01-01 00:00:00"
        with sqlite3.connect(dbfile) as conn:
            t.to_sql("vehicle_register", conn, index=False, dtype={"updated_at": "TIMESTAMP"})
        src = client.post(f"/api/v1/catalog/resources/{TABLE_RESOURCE}/sources", headers=officer, json={
            "kind": "table", "url": f"sqlite:///{dbfile}", "table": "vehicle_register",
            "updated_column": "updated_at", "incremental": True}).json()
        job = client.post(f"/api/v1/catalog/resources/{TABLE_RESOURCE}/sources/{src['id']}/run",
                          headers=officer).json()
        job = wait_job(client, officer, job["job_id"])
        q = client.get(f"/api/v1/catalog/resources/{TABLE_RESOURCE}/quality", headers=officer).json()
        say(f"   table: {TABLE_RESOURCE} pulled from {src['display']} -> job {job['state']}, {q['rows']:,} rows",
            **ok)

        # 3. Service interface: the department's paged JSON API, started here on loopback.
        from authops.demo.department_api import serve_table

        officer = login(client, _officer(settings, API_RESOURCE), password)
        t = department_form(tables[API_RESOURCE], by_code[API_RESOURCE].schema)
        with serve_table(t) as api:
            src = client.post(f"/api/v1/catalog/resources/{API_RESOURCE}/sources", headers=officer, json={
                "kind": "api", "url": api.url, "page_size": 500}).json()
            job = client.post(f"/api/v1/catalog/resources/{API_RESOURCE}/sources/{src['id']}/run",
                              headers=officer).json()
            job = wait_job(client, officer, job["job_id"])
        q = client.get(f"/api/v1/catalog/resources/{API_RESOURCE}/quality", headers=officer).json()
        say(f"   API: {API_RESOURCE} pulled page by page from {src['display']} -> job {job['state']}, "
            f"{q['rows']:,} rows", **ok)

    # 4. The rest in bulk, plus each resource's mock dataset.
    rest = [(c, t) for c, t in tables.items() if c not in (EXCEL_RESOURCE, TABLE_RESOURCE, API_RESOURCE)]
    started = time.perf_counter()
    runs = flows.bulk_load(settings, rest)
    flows.store_mocks(settings, ((d.code, synth.mock(d, seed=7)) for d in defs))
    n = sum(r.rows_received for r in runs.values())
    say(f"   bulk: {len(runs)} more resources, {n:,} rows validated and stored encrypted in "
        f"{time.perf_counter() - started:.1f} s; a mock dataset for each of the {len(defs)}", **ok)
    _quality_table(settings, say)


def _quality_table(settings: Settings, say) -> None:
    from authops.core.clock import utcnow

    say("   quality and timeliness (what departments are assessed on):")
    say(f"   {'no':>3} {'resource':<40} {'grade':5} {'rows':>9} {'complete':>8} {'accurate':>8}  "
        f"{'cycle':<9} status")
    with db.session_scope(settings) as session:
        resources = service.list_resources(session)
        # A year on, the departments that have not loaded again are late for their cycle.
        later = utcnow() + timedelta(days=45)
        late = 0
        for r in resources:
            q = service.quality(session, r)
            acc = f"{q['accuracy']:.1%}" if q["accuracy"] is not None else "-"
            comp = f"{q['completeness']:.1%}" if q["completeness"] is not None else "-"
            say(f"   {r.no or '-':>3} {r.code[:40]:<40} {r.grade:5} {q['rows']:>9,} {comp:>8} {acc:>8}  "
                f"{r.update_cycle:<9} {q['timeliness']['status']}")
            late += service.timeliness(r, later)["status"] == "late"
    say(f"   45 days from now without new loads, {late} of {len(resources)} resources would be late")
