"""Charts drawn on the server as inline SVG from numbers (no script, no external asset).

`bar_chart([(label, value), ...], title)` draws one bar per item, labelled with its value, scaled to
the largest value (or to `max_value`, e.g. 100 for percentages). The SVG has role="img", an
aria-label and a <title> naming what it shows, and every bar carries its figure as text.
`targets` (one number or None per item) adds a dashed mark at each item's target (a deadline, a
limit) and writes it after the figure ("3 / 10"); a bar past its target is drawn in the warning colour.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, BAR_AREA, ROW = 560, 330, 26
LABEL_W = 160
MAX_LABEL = 12  # characters of a bar's name; a longer one is cut with an ellipsis


def label(value: float) -> str:
    """A bar's figure: whole numbers without decimals, others with two."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"


def bar_chart(items: Sequence[tuple[str, float]], title: str, *, max_value: float | None = None,
              suffix: str = "", targets: Sequence[float | None] | None = None) -> Markup:
    marks = list(targets or [None] * len(items))
    top = max_value or max([v for _, v in items] + [t for t in marks if t is not None], default=0) or 1
    height = ROW * max(len(items), 1) + 12
    rows = []
    for i, (name, value) in enumerate(items):
        y = 6 + i * ROW
        w = max(0.0, min(1.0, value / top)) * BAR_AREA
        target = marks[i] if i < len(marks) else None
        over = target is not None and value > target
        figure = label(value) + suffix + (f" / {label(target)}{suffix}" if target is not None else "")
        rows.append(
            f'<text x="{LABEL_W - 6}" y="{y + 14}" text-anchor="end">{escape(_short(name))}</text>'
            f'<rect x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{ROW - 8}" '
            f'fill="{"#8a1c1c" if over else "#1f5fa8"}"></rect>'
            f'<text x="{LABEL_W + w + 6:.1f}" y="{y + 14}">{escape(figure)}</text>')
        if target is not None:
            x = LABEL_W + max(0.0, min(1.0, target / top)) * BAR_AREA
            rows.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + ROW - 6}" stroke="#1a1a1a" '
                        f'stroke-width="2" stroke-dasharray="3 2"></line>')
    if not items:
        rows.append(f'<text x="{LABEL_W}" y="20">—</text>')
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg" '
        f'font-size="13" fill="#1a1a1a"><title>{escape(title)}</title>'
        f'{"".join(rows)}</svg>')
