"""A report (title, labelled facts, charts, tables) as PDF, HTML and Excel.

Extends billing.render's document (same CID font STSong-Light, so Chinese renders in the PDF and
extracts back as text; same workbook layout) with charts: each chart is drawn as a reportlab
Drawing in the PDF and as inline SVG in the HTML, from one `charts.Chart`. The HTML is a single
self-contained page (Jinja2, autoescaped, no external assets). The workbook holds the numbers:
every table becomes a sheet, and every chart's series a sheet of its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from authops.billing import render
from authops.billing.render import FONT, Section
from authops.platform.auditwork import charts as chart_mod

TEMPLATES = Path(__file__).parent / "templates"
MEDIA = {"pdf": "application/pdf", "html": "text/html; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@dataclass
class Report:
    title: str
    name: str  # the file name without extension
    facts: list[tuple[str, Any]] = field(default_factory=list)
    charts: list[chart_mod.Chart] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    note: str = ""


def _chart_sections(report: Report) -> list[Section]:
    return [Section(f"图表数据 {c.title}", ["", *(name for name, _ in c.series)],
                    [[cat, *(values[i] for _, values in c.series)] for i, cat in enumerate(c.categories)])
            for c in report.charts]


def xlsx(report: Report) -> bytes:
    doc = render.Document(report.title, list(report.facts), [*report.sections, *_chart_sections(report)],
                          report.note)
    return render.xlsx(doc)


def pdf(report: Report) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    render._font()
    title = ParagraphStyle("title", fontName=FONT, fontSize=15, leading=20, spaceAfter=8)
    heading = ParagraphStyle("heading", fontName=FONT, fontSize=11, leading=15, spaceBefore=8, spaceAfter=4)
    body = ParagraphStyle("body", fontName=FONT, fontSize=8.5, leading=11, wordWrap="CJK")
    esc = render._esc
    buf = io.BytesIO()
    out = SimpleDocTemplate(buf, pagesize=landscape(A4), title=report.title, leftMargin=36, rightMargin=36,
                            topMargin=36, bottomMargin=36)
    flow: list[Any] = [Paragraph(esc(report.title), title)]
    flow += [Paragraph(f"{esc(label)}：{esc(value)}", body) for label, value in report.facts]
    for c in report.charts:
        flow += [Spacer(1, 6), chart_mod.drawing(c, FONT)]
    for s in report.sections:
        flow.append(Paragraph(esc(s.title), heading))
        data = [[Paragraph(esc(c), body) for c in s.columns]]
        data += [[Paragraph(esc(v), body) for v in row] for row in s.rows] or [
            [Paragraph("（无 none）", body)] + [""] * (len(s.columns) - 1)]
        t = Table(data, repeatRows=1)
        t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        flow.append(t)
    if report.note:
        flow += [Spacer(1, 8), Paragraph(esc(report.note), body)]
    out.build(flow)
    return buf.getvalue()


def html(report: Report) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("report.html").render(
        report=report, charts=[Markup(chart_mod.svg(c)) for c in report.charts])


def render_as(report: Report, fmt: str) -> bytes:
    """The report in `fmt` (pdf, html or xlsx) as bytes."""
    if fmt == "pdf":
        return pdf(report)
    if fmt == "html":
        return html(report).encode("utf-8")
    return xlsx(report)


def write(report: Report, folder: Path) -> list[Path]:
    """The report in every format into `folder`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in MEDIA:
        path = folder / f"{report.name}.{fmt}"
        path.write_bytes(render_as(report, fmt))
        paths.append(path)
    return paths
