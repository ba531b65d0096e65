"""Reading a generated PDF back: its text (pypdf) and the filled rectangles (chart bars) per colour."""

from __future__ import annotations

import io
import re

from pypdf import PdfReader

_RG = re.compile(r"^([-.\d]+) ([-.\d]+) ([-.\d]+) rg$")


def text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def filled_rects(pdf: bytes, hex_colour: str) -> int:
    """How many rectangles are filled with the colour (#rrggbb) on all pages."""
    want = tuple(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    n = 0
    for page in PdfReader(io.BytesIO(pdf)).pages:
        fill = None
        for line in page.get_contents().get_data().decode("latin-1").splitlines():
            m = _RG.match(line.strip())
            if m:
                fill = tuple(float(x) for x in m.groups())
            elif line.strip().endswith(("re B*", "re f", "re B")) and fill is not None \
                    and all(abs(a - b) < 0.003 for a, b in zip(fill, want)):
                n += 1
    return n
