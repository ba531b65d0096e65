"""Documents as PDF and Excel: a title, labelled facts and tables, Chinese text included.

The PDF uses reportlab's built-in CID font STSong-Light (no font file: PDF readers supply it), so
Chinese renders and can be extracted as text. The workbook is written with xlsxwriter. Amounts are
passed in as already-formatted yuan strings or integers of fen; nothing here computes money.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

FONT = "STSong-Light"


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Document:
    title: str
    facts: list[tuple[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    note: str = ""


def _font() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))


def pdf(doc: Document) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    _font()
    title = ParagraphStyle("title", fontName=FONT, fontSize=15, leading=20, spaceAfter=8)
    heading = ParagraphStyle("heading", fontName=FONT, fontSize=11, leading=15, spaceBefore=8, spaceAfter=4)
    body = ParagraphStyle("body", fontName=FONT, fontSize=8.5, leading=11, wordWrap="CJK")
    buf = io.BytesIO()
    out = SimpleDocTemplate(buf, pagesize=landscape(A4), title=doc.title, leftMargin=36, rightMargin=36,
                            topMargin=36, bottomMargin=36)
    flow: list[Any] = [Paragraph(_esc(doc.title), title)]
    for label, value in doc.facts:
        flow.append(Paragraph(f"{_esc(label)}：{_esc(value)}", body))
    for s in doc.sections:
        flow.append(Paragraph(_esc(s.title), heading))
        data = [[Paragraph(_esc(c), body) for c in s.columns]]
        data += [[Paragraph(_esc(v), body) for v in row] for row in s.rows] or [[Paragraph("（无 none）", body)]
                                                                                 + [""] * (len(s.columns) - 1)]
        t = Table(data, repeatRows=1)
        t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        flow.append(t)
    if doc.note:
        flow += [Spacer(1, 8), Paragraph(_esc(doc.note), body)]
    out.build(flow)
    return buf.getvalue()


def _esc(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xlsx(doc: Document) -> bytes:
    import xlsxwriter

    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    bold = book.add_format({"bold": True})
    head = book.add_format({"bold": True, "bg_color": "#E8EEF7", "border": 1})
    summary = book.add_worksheet("summary")
    summary.write(0, 0, doc.title, bold)
    for i, (label, value) in enumerate(doc.facts, start=2):
        summary.write(i, 0, label, bold)
        summary.write(i, 1, value)
    if doc.note:
        summary.write(len(doc.facts) + 3, 0, doc.note)
    summary.set_column(0, 1, 40)
    used: set[str] = {"summary"}
    for n, s in enumerate(doc.sections, start=1):
        name = _sheet_name(s.title, n, used)
        ws = book.add_worksheet(name)
        for c, col in enumerate(s.columns):
            ws.write(0, c, col, head)
            ws.set_column(c, c, max(12, min(40, len(str(col)) * 2)))
        for r, row in enumerate(s.rows, start=1):
            for c, value in enumerate(row):
                ws.write(r, c, value)
    book.close()
    return buf.getvalue()


def _sheet_name(title: str, n: int, used: set[str]) -> str:
    base = "".join(ch for ch in title if ch not in "[]:*?/\\")[:28] or f"sheet{n}"
    name = base
    while name in used:
        name = f"{base[:25]}-{n}"
        n += 1
    used.add(name)
    return name
