"""The annual assessment report as PDF (Chinese text extracted back, chart bars drawn), HTML (inline
SVG charts, no external assets) and Excel (the numbers in cells), and the chart module itself."""

from __future__ import annotations

import io
import re

import openpyxl

from authops.platform.auditwork import charts, documents, reports
from authops.platform.identity.models import Organisation
from tests.auditwork.pdfcheck import filled_rects, text
from tests.auditwork.world import assessment_dict

OPERATOR = Organisation(id=7, kind="operator", code="op", name_zh="城市数据运营有限公司", name_en="City Data Ops")


def _report():
    return reports.assessment_report(assessment_dict(OPERATOR))


def test_the_assessment_pdf_reads_back_in_chinese_with_its_numbers_and_charts():
    data = assessment_dict(OPERATOR)
    pdf = documents.pdf(reports.assessment_report(data))
    assert pdf.startswith(b"%PDF")
    words = re.sub(r"\s+", "", text(pdf))  # table cells wrap: compare without the breaks
    for heading in ("2026年度授权运营考核评估报告", "考核指标", "专家评分", "数源部门评估", "总分与等级阈值",
                    "城市数据运营有限公司", "合格（qualified）", "市场监管局", "王专家"):
        assert heading in words
    for m in data["metrics"]:
        assert m["name_zh"] in words and str(m["score"]) in words and str(m["sources"]["count"]) in words
    assert "77.4" in words and "优秀excellent90" in words and "合格qualified60" in words
    # One bar for the total and one per metric, in the first series' colour.
    assert filled_rects(pdf, charts.PALETTE[0]) == 1 + len(data["metrics"])


def test_the_assessment_html_has_inline_svg_charts_and_no_external_assets():
    page = documents.html(_report())
    assert page.count("<svg") == 2 and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page and "<link" not in page
    assert "安全合规率" in page and "2026年度授权运营考核评估报告" in page
    bars = re.findall(r'<rect [^>]*fill="#3b6ea5"><title>([^<]*)</title>', page)
    assert "总分 score · 总分 total: 77.40" in bars and len(bars) == 4
    assert page.count('stroke-dasharray') == 4  # the two thresholds on both charts


def test_the_assessment_workbook_holds_the_figures_as_numbers():
    book = openpyxl.load_workbook(io.BytesIO(documents.xlsx(_report())))
    metrics = book[book.sheetnames[1]]
    rows = list(metrics.iter_rows(min_row=2, values_only=True))
    assert [r[5] for r in rows] == [84.0, 91.5, 66.25] and [r[6] for r in rows] == [7, 413, 2048]
    chart_sheets = [n for n in book.sheetnames if n.startswith("图表数据")]
    assert len(chart_sheets) == 2
    assert list(book[chart_sheets[0]].iter_rows(min_row=2, values_only=True)) == [("总分 total", 77.4)]


def test_svg_and_drawing_show_the_same_bars_and_escape_labels():
    chart = charts.Chart("收入 <by> month", ["1月", "2月", "3月"], [("甲", [1, 2, 3]), ("乙", [4, 0, 6])],
                         stacked=True, lines=[("上限", 8)])
    svg = charts.svg(chart)
    assert "&lt;by&gt;" in svg and "<by>" not in svg
    assert len(re.findall(r'<rect [^>]*><title>', svg)) == 6
    assert chart.top() == 10  # stacked: 3 + 6 = 9 is the tallest bar, rounded up
    d = charts.drawing(chart, documents.FONT)
    bar_chart = next(c for c in d.contents if type(c).__name__ == "VerticalBarChart")
    assert bar_chart.data == [[1, 2, 3], [4, 0, 6]] and bar_chart.categoryAxis.style == "stacked"
