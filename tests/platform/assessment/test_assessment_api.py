"""The assessment over HTTP: the bureau's settings, run and signature; the customer's rating; the
operator's pre-filing; clear refusals; no subject key in the report."""

from __future__ import annotations

from authops.core.clock import travelled
from tests.assessment import world
from tests.assessment.test_annual import into_next_year, this_year
from tests.support.builders import login, make_user

A = "/api/v1/assessment"


def test_the_year_through_the_api(client, session):
    w = world.build(session)
    p = world.product(session, w)
    res = world.resource(session, w)
    users = {k: make_user(session, org).username for k, org in
             (("bureau", w.bureau), ("operator", w.operator), ("customer", w.customer))}
    session.commit()
    world.use(session, w, p, subjects=["subject-key-1", "subject-key-2"], price_fen=150)
    bureau, op, customer = (login(client, users[k]) for k in ("bureau", "operator", "customer"))
    year = this_year()

    r = client.put(f"{A}/ratings/{p.code}", json={"score": 9}, headers=customer)
    assert r.status_code == 422
    r = client.put(f"{A}/ratings/{p.code}", json={"score": 4, "comment": "响应快"}, headers=customer)
    assert r.status_code == 200 and r.json()["score"] == 4

    r = client.post(f"{A}/prefiling/schedules", headers=bureau, json={
        "operator_org_id": w.operator.id, "target_kind": "resource", "target": res.code,
        "first_due_on": "2099-01-31", "blocks_jobs": True})
    assert r.status_code == 201, r.text
    sched = r.json()["id"]
    r = client.post(f"{A}/prefiling/schedules/{sched}/filings", headers=op,
                    files={"file": ("risk.pdf", b"%PDF-1.4 risk", "application/pdf")})
    assert r.status_code == 201 and r.json()["on_time"] is True
    assert [s["id"] for s in client.get(f"{A}/prefiling/mine", headers=op).json()] == [sched]

    r = client.put(f"{A}/years/{year}/settings", headers=bureau, json={
        "metrics": {"revenue": {"weight": 1, "target": 1000}, "satisfaction": {"weight": 1, "target": 5}},
        "excellent": 50, "qualified": 30})
    assert r.status_code == 200, r.text
    r = client.post(f"{A}/runs", headers=bureau, json={"operator_org_id": w.operator.id, "year": year})
    assert r.status_code == 409 and r.json()["error"]["code"] == "year_not_ended"

    with travelled(into_next_year()):
        bureau, op = login(client, users["bureau"]), login(client, users["operator"])  # the tokens expired
        r = client.post(f"{A}/runs", headers=bureau, json={"operator_org_id": w.operator.id, "year": year})
        assert r.status_code == 201, r.text
        a = r.json()
        assert (a["total_score"], a["grade"]) == ((30 + 80) / 2, "excellent")
        r = client.post(f"{A}/runs/{a['id']}/sign", headers=bureau)
        assert r.status_code == 200 and r.json()["signature"]
        got = client.get(f"{A}/runs/{a['id']}", headers=bureau).json()
        assert got["signature_valid"] is True
        report = client.get(f"{A}/runs/{a['id']}/report", headers=bureau)
        assert report.status_code == 200 and report.json()["grade_zh"] == "优秀"
        assert "subject-key" not in report.text and "subject-key" not in str(got)  # counts, never the keys
        r = client.post(f"{A}/runs/{a['id']}/sign", headers=bureau)
        assert r.status_code == 409 and r.json()["error"]["code"] == "already_signed"
        assert client.get(f"{A}/rectifications/mine", headers=op).json() == []
        r = client.post(f"{A}/rectifications/999999/plan", headers=op, json={"plan": "x" * 30})
        assert r.status_code == 404
        r = client.get(f"{A}/runs/{a['id']}", headers=op)
        assert r.status_code == 403
