"""Usage and monthly statements: who sees what, line items that add up, PDF and Excel."""

from __future__ import annotations

import io

import openpyxl
import pypdf
import pytest

from authops.billing import prices as rules
from authops.billing import render, statements
from authops.core.clock import to_shanghai, utcnow
from authops.core.errors import NotFound
from authops.core.identity import OrgKind
from authops.platform.billing import invoices, pricing
from tests.billing.test_metering import charge
from tests.billing.world import build
from tests.platform.governance.matrix_products import usage_agreement, who
from tests.support.builders import make_org


def _period():
    now = to_shanghai(utcnow())
    return now.year, now.month


def test_customers_see_their_own_statement_and_the_operator_sees_all(session):
    w = build(session, operating_days=400, price_fen=100)
    p = w.products["paid"]
    for _ in range(3):
        charge(session, w, w.customer)
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=70, actor=who(w.bureau))
    charge(session, w, w.customer)
    charge(session, w, w.customer2)
    session.commit()
    year, month = _period()
    mine = invoices.monthly_statements(session, w.customer.id, year=year, month=month)
    assert len(mine) == 1 and mine[0]["customer_org_id"] == w.customer.id
    assert mine[0]["total_fen"] == 370 and mine[0]["uses"] == 4
    assert sorted((x["unit_price_fen"], x["uses"], x["amount_fen"], x["price_source"]) for x in mine[0]["lines"]) == [
        (70, 1, 70, "cap"), (100, 3, 300, "agreement")]
    everything = invoices.monthly_statements(session, w.operator.id, year=year, month=month)
    assert {s["customer_org_id"] for s in everything} == {w.customer.id, w.customer2.id}
    assert sum(s["total_fen"] for s in everything) == 440
    assert invoices.monthly_statements(session, w.partner.id, year=year, month=month) == []
    assert [u["amount_fen"] for u in invoices.usage(session, w.customer2.id, year=year, month=month)] == [70]
    assert all("response" not in u for u in invoices.usage(session, w.operator.id, year=year, month=month))
    with pytest.raises(NotFound):
        invoices.statement(session, w.customer2.id, year=year, month=month,
                           agreement_id=w.usage[("paid", w.customer.id)].id)


def test_the_statement_pdf_renders_chinese_and_the_workbook_has_the_lines(session):
    w = build(session, price_fen=250)
    charge(session, w, w.customer)
    charge(session, w, w.customer)
    session.commit()
    year, month = _period()
    s = invoices.statement(session, w.customer.id, year=year, month=month,
                           agreement_id=w.usage[("paid", w.customer.id)].id)
    doc = statements.document([s], period=s["period"], reader=w.customer.name_zh)
    text = pypdf.PdfReader(io.BytesIO(render.pdf(doc))).pages[0].extract_text()
    assert "数据产品使用月度账单" in text and w.customer.name_zh in text and "5.00" in text
    assert w.products["paid"].name_zh in text
    book = openpyxl.load_workbook(io.BytesIO(render.xlsx(doc)))
    lines = list(book.worksheets[2].iter_rows(values_only=True))
    assert lines[0][2] == "产品 Product"
    assert len(lines) == 2 and lines[1][-1] == "5.00" and lines[1][7] == 2


def test_a_monthly_subscription_is_metered_once_per_month(session):
    w = build(session)
    p = w.products["paid"]
    p.price_unit = "month"
    session.add(p)
    subscriber = make_org(session, OrgKind.CUSTOMER)
    usage_agreement(session, p, subscriber.id, pricing_method="monthly", price_fen=900)
    session.commit()
    year, month = _period()
    first = invoices.meter_subscriptions(session, operator_org_id=w.operator.id, year=year, month=month)
    again = invoices.meter_subscriptions(session, operator_org_id=w.operator.id, year=year, month=month)
    assert [(r.customer_org_id, r.amount_fen) for r in first] == [(subscriber.id, 900)] and again == []
    assert rules.ensure_counter(session, w.operator.id, year).revenue_fen == 900
