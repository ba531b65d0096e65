"""Bar charts from one description, drawn twice: inline SVG for HTML and a reportlab Drawing for PDF.

A `Chart` is categories along the x axis, one or more series of numbers (grouped bars, or stacked
with `stacked=True`) and optional horizontal reference lines (e.g. the assessment's thresholds).
Both renderings show the same bars, labels and lines; SVG text is escaped; no external assets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#3b6ea5", "#e0893a", "#5a9e5a", "#b54a4a", "#7c63a8", "#8c6d46", "#c86fae", "#6f7f8c")
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 64


@dataclass
class Chart:
    title: str
    categories: list[str]
    series: list[tuple[str, list[float]]]
    unit: str = ""
    stacked: bool = False
    lines: list[tuple[str, float]] = field(default_factory=list)  # (label, y value)

    def top(self) -> float:
        """The y axis maximum: a round number above every bar and line (1 when all are zero)."""
        if self.stacked:
            highest = max((sum(v) for v in zip(*(s for _, s in self.series))), default=0.0)
        else:
            highest = max((x for _, s in self.series for x in s), default=0.0)
        highest = max([highest, *(v for _, v in self.lines)])
        if highest <= 0:
            return 1.0
        step = 10 ** math.floor(math.log10(highest))
        return math.ceil(highest * 1.05 / step) * step


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.2f}"


def svg(chart: Chart) -> str:
    """The chart as an <svg> element (inline, self-contained)."""
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = chart.top()
    y = lambda v: TOP + h - h * v / top  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(chart.title)}">',
             f'<title>{escape(chart.title)}</title>',
             f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(chart.title)}'
             f'{escape(f" ({chart.unit})" if chart.unit else "")}</text>']
    for i in range(5):
        v = top * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(v)}</text>')
    n, k = max(len(chart.categories), 1), max(len(chart.series), 1)
    slot = w / n
    bar = slot * 0.8 / (1 if chart.stacked else k)
    for ci, cat in enumerate(chart.categories):
        x0, base = LEFT + ci * slot + slot * 0.1, 0.0
        for si, (name, values) in enumerate(chart.series):
            v = values[ci]
            x = x0 if chart.stacked else x0 + si * bar
            lo, hi = (base, base + v) if chart.stacked else (0.0, v)
            parts.append(f'<rect x="{x:.1f}" y="{y(hi):.1f}" width="{bar:.1f}" height="{max(y(lo) - y(hi), 0):.1f}" '
                         f'fill="{PALETTE[si % len(PALETTE)]}"><title>{escape(name)} · {escape(cat)}: {_fmt(v)}'
                         f'</title></rect>')
            base += v if chart.stacked else 0.0
        parts.append(f'<text x="{LEFT + (ci + 0.5) * slot:.1f}" y="{TOP + h + 14}" font-size="10" '
                     f'text-anchor="middle">{escape(cat)}</text>')
    for label, v in chart.lines:
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#b00" '
                     f'stroke-dasharray="5,3"/>')
        parts.append(f'<text x="{LEFT + w}" y="{y(v) - 3:.1f}" font-size="10" text-anchor="end" fill="#b00">'
                     f'{escape(label)} {_fmt(v)}</text>')
    for si, (name, _) in enumerate(chart.series):
        lx = LEFT + si * 130
        parts.append(f'<rect x="{lx}" y="{HEIGHT - 18}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>')
        parts.append(f'<text x="{lx + 14}" y="{HEIGHT - 9}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def drawing(chart: Chart, font: str):
    """The chart as a reportlab Drawing (a flowable for platypus); `font` must render the labels."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, Line, Rect, String
    from reportlab.lib import colors

    d = Drawing(WIDTH, HEIGHT)
    d.add(String(LEFT, HEIGHT - 16, chart.title + (f" ({chart.unit})" if chart.unit else ""), fontName=font,
                 fontSize=11))
    bc = VerticalBarChart()
    bc.x, bc.y, bc.width, bc.height = LEFT, BOTTOM, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bc.data = [list(values) for _, values in chart.series] or [[0]]
    bc.categoryAxis.categoryNames = list(chart.categories)
    bc.categoryAxis.labels.fontName, bc.categoryAxis.labels.fontSize = font, 8
    bc.valueAxis.labels.fontName, bc.valueAxis.labels.fontSize = font, 8
    bc.valueAxis.valueMin, bc.valueAxis.valueMax = 0, chart.top()
    bc.valueAxis.valueStep = chart.top() / 4
    if chart.stacked:
        bc.categoryAxis.style = "stacked"
    for i in range(len(chart.series)):
        bc.bars[i].fillColor = colors.HexColor(PALETTE[i % len(PALETTE)])
    d.add(bc)
    for label, v in chart.lines:
        yy = BOTTOM + bc.height * v / chart.top()
        d.add(Line(LEFT, yy, LEFT + bc.width, yy, strokeColor=colors.HexColor("#bb0000"), strokeDashArray=[5, 3]))
        d.add(String(LEFT + bc.width, yy + 3, f"{label} {_fmt(v)}", fontName=font, fontSize=8, textAnchor="end",
                     fillColor=colors.HexColor("#bb0000")))
    for i, (name, _) in enumerate(chart.series):
        d.add(Rect(LEFT + i * 130, 8, 8, 8, fillColor=colors.HexColor(PALETTE[i % len(PALETTE)]), strokeColor=None))
        d.add(String(LEFT + i * 130 + 12, 9, name, fontName=font, fontSize=8))
    return d
