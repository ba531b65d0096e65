"""The operating and audit reports from the records: figures match the billing usage and the budget
ledger, Chinese text and charts in the PDF, SVG in the HTML, numbers in the workbook; downloads for
the right roles only; every report written into a folder."""

from __future__ import annotations

import io

import openpyxl
from sqlalchemy import func, select

from authops.billing.models import UsageRecord
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.platform.auditwork import charts, reports
from authops.platform.auditwork.documents import render_as
from tests.auditwork.pdfcheck import filled_rects, text
from tests.auditwork.world import spend_budget
from tests.billing.test_metering import charge
from tests.billing.world import build
from tests.platform.governance.matrix_products import who
from tests.support.builders import login, make_org, make_user


def _as(client, session, org, *roles):
    user = make_user(session, org, *roles)
    session.commit()
    return login(client, user.username)


def _year_of_activity(session):
    w = build(session, price_fen=300)
    for _ in range(3):
        charge(session, w, w.customer)
    charge(session, w, w.customer2)
    charge(session, w, w.customer2, "free")
    spend_budget(session, w.partner, "persons_budget", cap=4.0, spent=1.0)
    return w


def _sheet(book, prefix):
    return book[next(n for n in book.sheetnames if n.startswith(prefix))]


def test_the_operating_report_adds_up_to_the_usage_records_and_the_budget_ledger(session):
    w = _year_of_activity(session)
    year = to_shanghai(utcnow()).year
    month = to_shanghai(utcnow()).month
    billed = session.execute(select(func.sum(UsageRecord.amount_fen))
                             .where(UsageRecord.operator_org_id == w.operator.id)).scalar_one()
    report = reports.operating_report(session, w.operator.id, year)
    book = openpyxl.load_workbook(io.BytesIO(render_as(report, "xlsx")))
    revenue = {r[0]: r[1:] for r in _sheet(book, "按产品和月份的收入").iter_rows(min_row=2, values_only=True)}
    assert revenue[w.products["paid"].name_zh][month - 1] == 1200 and revenue[w.products["paid"].name_zh][12] == 1200
    assert sum(r[12] for r in revenue.values()) == billed == 1200
    calls = {r[0]: r[1:4] for r in _sheet(book, "按客户的调用量").iter_rows(min_row=2, values_only=True)}
    assert calls == {w.customer.name_zh: (3, 3, 900), w.customer2.name_zh: (2, 2, 300)}
    burn = list(_sheet(book, "合伙人隐私预算").iter_rows(min_row=2, values_only=True))
    assert burn == [(w.partner.name_zh, 4.0, 1.0, 25.0)]

    pdf = render_as(report, "pdf")
    words = text(pdf).replace("\n", "")
    for expected in ("年度运营报告", "按产品和月份的收入", "按客户的调用量", "合伙人隐私预算消耗", "产品、价格与上限",
                     w.customer.name_zh, w.customer2.name_zh, w.partner.name_zh, "12.00 元"):
        assert expected in words
    # Bars: one per month with revenue for the product (stacked), one per customer, one cap bar.
    assert filled_rects(pdf, charts.PALETTE[0]) >= 1 + 2 + 1
    page = render_as(report, "html").decode()
    assert page.count("<svg") == 3 and w.customer2.name_zh in page


def test_reports_download_for_the_auditor_and_bureau_and_the_operator_only_its_own(client, session):
    w = _year_of_activity(session)
    auditor = _as(client, session, make_org(session, OrgKind.AUDITOR))
    bureau = _as(client, session, w.bureau)
    operator = _as(client, session, w.operator)
    customer = _as(client, session, w.customer)
    base = f"/api/v1/auditwork/operators/{w.operator.id}/reports"
    for who in (auditor, bureau):
        r = client.get(f"{base}/audit", headers=who, params={"format": "pdf"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        words = text(r.content).replace("\n", "")
        assert "第三方审计报告" in words and "日志完整性" in words and "通过 OK" in words and "计量收入与账簿收入" in words
        r = client.get(f"{base}/operating", headers=who, params={"format": "xlsx"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    r = client.get("/api/v1/auditwork/reports/operating", headers=operator, params={"format": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "<svg" in r.text
    assert w.operator.name_zh in r.text
    for path in (f"{base}/audit", f"{base}/operating"):
        assert client.get(path, headers=operator).status_code == 403
    assert client.get("/api/v1/auditwork/reports/operating", headers=customer).status_code == 403
    assert client.get(f"{base}/audit", headers=auditor, params={"format": "doc"}).status_code == 422
    other = f"/api/v1/auditwork/operators/{w.customer.id}/reports/operating"
    assert client.get(other, headers=auditor).status_code == 404  # not an operator


def _signed_assessment(session, db_settings, w, year):
    from authops.platform.assessment import service

    service.set_year_settings(session, actor=who(w.bureau), year=year, excellent=90, qualified=60,
                              metrics_={"products": {"weight": 0.5, "target": 2}, "revenue": {"weight": 0.5,
                                                                                             "target": 100_000}})
    a = service.run(session, actor=who(w.bureau), operator_org_id=w.operator.id, year=year)
    service.sign(session, a, actor=who(w.bureau), settings=db_settings)
    session.commit()
    return a


def test_the_report_of_a_real_signed_assessment_shows_its_figures(client, session, db_settings, tmp_path):
    from authops.platform.assessment import report_data

    w = build(session, operating_days=400)
    year = to_shanghai(utcnow()).year - 1
    a = _signed_assessment(session, db_settings, w, year)
    data = report_data(session, a.id)
    auditor = _as(client, session, make_org(session, OrgKind.AUDITOR))
    r = client.get(f"/api/v1/auditwork/assessments/{a.id}/report", headers=auditor, params={"format": "xlsx"})
    assert r.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    shown = {row[0]: row for row in _sheet(book, "考核指标").iter_rows(min_row=2, values_only=True)}
    for m in data["metrics"]:
        row = shown[f"{m['name_zh']} {m['name_en']}"]
        assert (row[1], row[4], row[5], row[6]) == (m["value"], m["threshold"], m["score"], m["sources"]["count"])
    r = client.get(f"/api/v1/auditwork/assessments/{a.id}/report", headers=auditor)
    words = text(r.content).replace("\n", "")
    assert f"{year}年度授权运营考核评估报告" in words and data["grade_zh"] in words and w.operator.name_zh in words
    assert all(m["name_zh"] in words for m in data["metrics"])
    # Nothing was sold or registered last year: unqualified, with the rectification due date shown.
    assert data["grade"] == "unqualified" and str(data["rectification"]["due_on"]) in words
    assert client.get("/api/v1/auditwork/assessments/999999/report", headers=auditor).status_code == 404
    operator = _as(client, session, w.operator)
    assert client.get(f"/api/v1/auditwork/assessments/{a.id}/report", headers=operator).status_code == 403
    written = {p.name for p in reports.write_reports(session, db_settings, year, tmp_path)}
    assert {f"assessment-{year}-{w.operator.id}-annual.{fmt}" for fmt in ("pdf", "html", "xlsx")} <= written


def test_write_reports_puts_every_report_in_every_format_into_the_folder(session, db_settings, tmp_path):
    w = _year_of_activity(session)
    year = to_shanghai(utcnow()).year
    paths = reports.write_reports(session, db_settings, year, tmp_path / "reports")
    names = {p.name for p in paths}
    for kind in ("operating", "audit"):
        for fmt in ("pdf", "html", "xlsx"):
            assert f"{kind}-{year}-{w.operator.id}.{fmt}" in names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    pdf = (tmp_path / "reports" / f"operating-{year}-{w.operator.id}.pdf").read_bytes()
    assert "年度运营报告" in text(pdf)
