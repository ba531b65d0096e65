"""Yearly settlement: distribution per product and party from the agreements, filed with the bureau,
public share non-tax; the DRC report; running it again or killing it half-way changes nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta

import openpyxl
import pypdf
import pytest

from authops.billing import books, render
from authops.billing import prices as rules
from authops.billing.models import Settlement, SettlementLine
from authops.core.clock import travelled
from authops.core.errors import Conflict
from authops.platform.billing import pricing
from authops.platform.billing import settlement as settle
from authops.platform.governance import agreements
from authops.platform.governance.models import Notification
from tests.billing.test_metering import charge
from tests.billing.world import build
from tests.platform.governance.matrix_products import who
from tests.support.catalog import make_resource

LAST_YEAR = datetime(2025, 6, 1, 4, 0)


def _world(session, *, price_fen=100):
    w = build(session, operating_days=600, price_fen=price_fen)
    r1, r2 = make_resource(session, w.providers[0]), make_resource(session, w.providers[1])
    p = w.products["paid"]
    p.spec = {"inputs": [{"resource": r1.code, "fields": ["id_number", "name", "sex"]},
                         {"resource": r2.code, "fields": ["id_number"]}]}
    session.add(p)
    d = agreements.today()
    agreements.create(session, kind="partner", party_a_org_id=w.operator.id, party_b_org_id=w.partner.id,
                      terms={"revenue_share_bp": 2500}, starts_on=d - timedelta(days=600),
                      ends_on=d + timedelta(days=400), actor=who(w.operator), state="active")
    session.commit()
    return w


def _charge_last_year(session, w, n):
    from authops.billing import metering

    a = w.usage[("paid", w.customer.id)]
    for i in range(n):
        metering.meter(session, customer_org_id=w.customer.id, product_id=w.products["paid"].id, agreement_id=a.id,
                       request_id=f"req_ly_{a.id}_{i}", pricing_method="per_call", price_fen=100,
                       at=LAST_YEAR + timedelta(hours=i))
    session.commit()


def test_the_years_revenue_is_split_by_the_agreements_and_filed_with_the_bureau(session):
    w = _world(session)
    _charge_last_year(session, w, 4)
    s = settle.run(session, operator_org_id=w.operator.id, year=2025, rule="declared", actor=who(w.operator))
    v = settle.view(session, s)
    got = {(x["party"], x["party_org_id"]): x["amount_fen"] for x in v["lines"]}
    # partner 25% (its agreement), operator 40%, public 10% (authorization), departments 25% by declared fields 3:1
    assert got == {("partner", w.partner.id): 100, ("operator", w.operator.id): 160, ("public", None): 40,
                   ("provider", w.providers[0].id): 75, ("provider", w.providers[1].id): 25}
    assert v["revenue_fen"] == 400 and sum(got.values()) == 400 and v["non_tax_fen"] == 40
    assert all(x["non_tax"] == (x["party"] == "public") for x in v["lines"])
    inputs = s.inputs[str(w.products["paid"].id)]
    assert inputs["partner_bp_source"] == "partner_agreement" and inputs["measured"] == {
        str(w.providers[0].id): 3, str(w.providers[1].id): 1}
    settle.file(session, s, actor=who(w.operator))
    session.commit()
    assert s.filed_with_org_id == w.bureau.id
    assert session.query(Notification).filter_by(org_id=w.bureau.id, kind="billing.settlement.filed").count() == 1
    with pytest.raises(Conflict):
        settle.file(session, s, actor=who(w.operator))
    again = settle.run(session, operator_org_id=w.operator.id, year=2025, rule="equal", actor=who(w.operator))
    assert again.id == s.id and settle.view(session, again)["lines"] == v["lines"]
    [mine] = settle.visible(session, w.providers[0].id, 2025)
    assert [(x["party"], x["amount_fen"]) for x in mine["lines"]] == [("provider", 75)] and "inputs" not in mine
    assert settle.visible(session, w.customer.id, 2025) == []
    assert len(settle.visible(session, w.bureau.id, 2025)) == 1
    doc = settle.document(settle.visible(session, w.operator.id, 2025), reader=w.operator.name_zh)
    text = pypdf.PdfReader(io.BytesIO(render.pdf(doc))).pages[0].extract_text()
    assert "收益分配明细" in text and "公共收益（非税收入）" in text and "0.75" in text


def test_the_current_year_cannot_be_settled_before_it_ends(session):
    w = _world(session)
    charge(session, w, w.customer)
    year = rules.year_of()
    with pytest.raises(settle.YearNotEnded) as exc:
        settle.run(session, operator_org_id=w.operator.id, year=year, actor=who(w.operator))
    assert exc.value.details == {"field": "year"}
    with travelled(timedelta(days=366)):
        s = settle.run(session, operator_org_id=w.operator.id, year=year, rule="equal", actor=who(w.operator))
    assert s.revenue_fen == 100


def test_the_drc_report_has_revenue_costs_prices_caps_and_distribution(session):
    w = _world(session)
    _charge_last_year(session, w, 2)
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=2025, amount_fen=1_000_000,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    pricing.set_cap(session, product_id=w.products["paid"].id, unit="per_call", cap_fen=150, actor=who(w.bureau))
    books.post(session, operator_org_id=w.operator.id, book="cost", category="staff", amount_fen=30_000,
               occurred_on=LAST_YEAR.date(), actor=who(w.operator))
    settle.run(session, operator_org_id=w.operator.id, year=2025, actor=who(w.operator))
    report = settle.drc_report(session, 2025)
    o = next(x for x in report["operators"] if x["operator_org_id"] == w.operator.id)
    assert (o["max_revenue_fen"], o["revenue_fen"], o["books"]["cost"]["staff"]) == (1_000_000, 200, 30_000)
    assert sum(x["amount_fen"] for x in o["settlement"]["lines"]) == 200
    doc = settle.drc_document(report)
    book = openpyxl.load_workbook(io.BytesIO(render.xlsx(doc)))
    assert book.sheetnames[0] == "summary" and len(book.sheetnames) == 5
    assert any(row[2] == "人员" and row[3] == "300.00" for row in book.worksheets[3].iter_rows(values_only=True))
    text = "".join(pg.extract_text() for pg in pypdf.PdfReader(io.BytesIO(render.pdf(doc))).pages)
    assert "公共数据授权运营情况报告" in text and w.operator.name_zh in text


KILLED = textwrap.dedent("""
    import os, signal
    from sqlmodel import Session
    from authops.audit import log as audit_log
    from authops.core import db
    from authops.core.settings import Settings
    from authops.platform.billing import settlement
    from authops.core.models_registry import import_all_models
    import_all_models()
    with Session(db.get_engine(Settings())) as s:
        settlement.run(s, operator_org_id={op}, year=2025, actor=audit_log.Actor(kind="user", id=1, name="t",
                                                                                 org_id={op}))
        s.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies before its commit
""")


def test_a_settlement_killed_before_its_commit_leaves_nothing_and_runs_once_after(session, db_settings):
    w = _world(session)
    _charge_last_year(session, w, 3)
    proc = subprocess.run([sys.executable, "-c", KILLED.format(op=w.operator.id)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    session.expire_all()
    assert settle.find(session, w.operator.id, 2025) is None
    assert session.query(SettlementLine).count() == 0
    s = settle.run(session, operator_org_id=w.operator.id, year=2025, actor=who(w.operator))
    session.commit()
    assert session.query(Settlement).count() == 1 and s.revenue_fen == 300
