"""Render the permission matrix into README.md (`make readme`); a test keeps them equal."""

from __future__ import annotations

import re
from pathlib import Path

from authops.policies import permissions

START, END = "<!-- permission-matrix:start -->", "<!-- permission-matrix:end -->"


def render_block() -> str:
    return f"{START}\n{permissions.render_markdown()}\n{END}"


def update(readme: Path) -> bool:
    text = readme.read_text(encoding="utf-8")
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: render_block(), text, flags=re.S)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    path = Path("README.md")
    print("README.md updated" if update(path) else "README.md already current")
