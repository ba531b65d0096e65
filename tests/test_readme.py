"""The README opens with the two commands and shows the current permission matrix."""

from __future__ import annotations

from pathlib import Path

from authops import readme

ROOT = Path(__file__).resolve().parent.parent


def test_readme_shows_current_permission_matrix():
    assert readme.render_block() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "run `make readme` to render the changed permission matrix"


def test_readme_opens_with_demo_and_test_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
