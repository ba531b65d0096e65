"""The billing API end to end: rules refused with their names, statements downloaded, nothing raw out."""

from __future__ import annotations

import io

import openpyxl
import pypdf

from authops.billing import metering
from authops.core.clock import to_shanghai, utcnow
from tests.billing.world import build
from tests.platform.governance.matrix_products import ID_A
from tests.support.builders import login, make_user


def _as(client, session, org, *roles):
    user = make_user(session, org, *roles)
    session.commit()
    return login(client, user.username)


def test_price_rules_are_enforced_over_http(client, session):
    w = build(session, operating_days=30)
    bureau, operator = _as(client, session, w.bureau), _as(client, session, w.operator)
    paid, free = w.products["paid"], w.products["free"]
    r = client.post("/api/v1/billing/caps", headers=bureau, json={"product_id": free.id, "unit": "per_call",
                                                                  "cap_fen": 10})
    assert r.status_code == 422 and r.json()["error"]["code"] == "free_product"
    r = client.post("/api/v1/billing/caps", headers=bureau, json={"product_id": paid.id, "unit": "per_call",
                                                                  "cap_fen": 80})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/billing/prices", headers=operator, json={"product_id": paid.id, "unit": "per_call",
                                                                      "price_fen": 81})
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "price_at_or_below_cap"
    r = client.post("/api/v1/billing/prices", headers=operator, json={"product_id": paid.id, "unit": "per_call",
                                                                      "price_fen": 70})
    assert r.status_code == 201 and r.json()["kind"] == "trial" and r.json()["filing"] is None
    price_id = r.json()["id"]
    before = {x["code"]: x for x in client.get("/api/v1/billing/prices", headers=operator).json()}
    assert [(u["cap_fen"], u["price_fen"]) for u in before[paid.code]["units"]] == [(80, None)]  # not yet filed
    r = client.post(f"/api/v1/billing/prices/{price_id}/filing", headers=operator, json={"drc_org_id": w.drc.id})
    assert r.status_code == 201 and r.json()["number"].startswith("TP-")
    published = {x["code"]: x for x in client.get("/api/v1/billing/prices", headers=operator).json()}
    assert published[paid.code]["units"][0]["price_fen"] == 70 and published[paid.code]["units"][0]["trial"]


def test_statements_download_and_never_carry_answers(client, session):
    w = build(session, price_fen=120)
    a = w.usage[("paid", w.customer.id)]
    metering.meter(session, customer_org_id=w.customer.id, product_id=w.products["paid"].id, agreement_id=a.id,
                   request_id="req_api_1", pricing_method="per_call", price_fen=120,
                   response={"answer": {"subject": ID_A, "has_paid": True}, "metered": {"amount_fen": 120}})
    session.commit()
    now = to_shanghai(utcnow())
    q = {"year": now.year, "month": now.month}
    customer, operator = _as(client, session, w.customer), _as(client, session, w.operator)
    other = _as(client, session, w.customer2)
    for headers in (customer, operator):
        usage = client.get("/api/v1/billing/usage", headers=headers, params=q)
        assert [u["amount_fen"] for u in usage.json()] == [120]
        stmts = client.get("/api/v1/billing/statements", headers=headers, params=q)
        assert stmts.json()[0]["total_fen"] == 120
        for r in (usage, stmts):
            assert ID_A not in r.text and "has_paid" not in r.text
    assert client.get("/api/v1/billing/usage", headers=other, params=q).json() == []
    assert client.get("/api/v1/billing/statements", headers=other,
                      params={**q, "agreement_id": a.id}).json() == []
    pdf = client.get("/api/v1/billing/statements", headers=customer, params={**q, "format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf"
    text = pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "月度账单" in text and "1.20" in text and ID_A not in text
    xlsx = client.get("/api/v1/billing/statements", headers=customer, params={**q, "format": "xlsx"})
    cells = [c for ws in openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets
             for row in ws.iter_rows(values_only=True) for c in row]
    assert "1.20" in cells and ID_A not in map(str, cells)
