"""The authorization matrix the route test generates is the documented one.

tests/platform/test_route_permissions.py calls every route x every role (own organisation's objects)
and, for routes naming an object, every allowed role x the other organisation's object (404 unless a
cross-organisation action allows it); list routes must not show the other side's objects. Its
expectations come from authops.policies.permissions. This test closes the loop to the documentation:
the matrix in README.md (what operators and auditors read) says exactly what the code enforces, every
route's action is in it, and the generated matrix covers every route.
"""

from __future__ import annotations

import re
from pathlib import Path

from authops.policies import permissions
from tests.platform.test_route_permissions import CASES, _protected_routes

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_matrix() -> dict[str, set[str]]:
    """{action: roles holding it} as the README's permission table shows it."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- permission-matrix:start -->", 1)[1].split("<!--", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    roles = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    matrix: dict[str, set[str]] = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        action = re.match(r"`([^`]+)`", cells[0]).group(1)
        matrix[action] = {role for role, cell in zip(roles, cells[1:]) if cell == "✓"}
    return matrix


def test_the_documented_matrix_is_the_enforced_one():
    documented = documented_matrix()
    enforced = {action: {r.name for r in permissions.ROLES.values() if action in r.actions}
                for action in permissions.ACTIONS}
    assert set(documented) == set(enforced), "README lists other actions than the code: run `make readme`"
    differ = {a: (sorted(documented[a]), sorted(enforced[a])) for a in enforced if documented[a] != enforced[a]}
    assert not differ, f"README and code disagree (documented, enforced): {differ}; run `make readme`"


def test_every_route_is_in_the_generated_matrix_under_a_documented_action():
    documented = documented_matrix()
    routes = _protected_routes()
    undocumented = [(m, p, a) for m, p, a in routes if a not in documented or not documented[a]]
    assert not undocumented, f"routes needing an action no documented role holds: {undocumented}"
    uncovered = [(m, p) for m, p, _ in routes if (m, p) not in CASES]
    assert not uncovered, f"routes the generated matrix does not call: {uncovered}"
    roles = len(permissions.ROLES)
    foreign = sum(len(documented[a]) for _, p, a in routes if "{" in p)
    lists = sum(len(documented[a]) for m, p, a in routes if m == "GET" and "{" not in p)
    print(f"\nauthorization matrix: {len(routes)} routes x {roles} roles = {len(routes) * roles} own-object cells; "
          f"{foreign} foreign-object cells (allowed role x another organisation's object); "
          f"{lists} list cells scanned for other organisations' rows")
    assert len(routes) >= 200
