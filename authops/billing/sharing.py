"""Revenue sharing arithmetic (BRIEF 8): integer fen, shares that always sum exactly to revenue.

Rounding rule (largest remainder, Hamilton's method): each party first gets floor(revenue x weight /
total weight) fen; the fen left over (fewer than the number of parties) go one each to the parties
with the largest remainders; equal remainders go in the order the parties are listed. Every share
is then within 1 fen of its exact value, and the shares add up to the revenue exactly.

A product's revenue R is split in ONE allocation over these weights (basis points of R):
    partner   : the partner agreement's revenue_share_bp;
    operator  : the authorization's operator percentage x 100;
    public    : the authorization's public percentage x 100 (non-tax revenue);
    providers : the rest, 10000 - the three above, divided among the provider departments by the
                department rule: declared (the product's declared use of each department's
                resources), rows (the rows each department's resources hold for the product) or equal.
Department d gets weight pool x w_d and every other party bp x D (D = the sum of w_d), so one
largest-remainder pass over integers is exact. A product using no department's data gives the
providers' pool to the public share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from authops.core.errors import InvalidInput

RULES = ("declared", "rows", "equal")
FULL_BP = 10_000


def allocate(total_fen: int, weights: Sequence[tuple[Hashable, int]]) -> dict[Hashable, int]:
    """Split `total_fen` (0 or more) by integer weights (0 or more, not all 0) with largest remainder."""
    if not isinstance(total_fen, int) or total_fen < 0:
        raise InvalidInput("the amount to share is a whole number of fen, 0 or more", details={"field": "total_fen"})
    if any(not isinstance(w, int) or w < 0 for _, w in weights):
        raise InvalidInput("share weights are whole numbers, 0 or more", details={"field": "weights"})
    whole = sum(w for _, w in weights)
    if whole == 0:
        raise InvalidInput("at least one share weight must be above 0", details={"field": "weights"})
    base = {k: total_fen * w // whole for k, w in weights}
    left = total_fen - sum(base.values())
    order = sorted(range(len(weights)), key=lambda i: (-(total_fen * weights[i][1] % whole), i))
    for i in order[:left]:
        base[weights[i][0]] += 1
    return base


@dataclass(frozen=True)
class Terms:
    """What one product's split depends on (recorded with the settlement)."""

    partner_org_id: int | None
    operator_org_id: int
    partner_bp: int
    operator_bp: int
    public_bp: int
    department_weights: dict[int, int]  # provider org id -> weight under `rule`
    rule: str

    def check(self) -> None:
        if self.rule not in RULES:
            raise InvalidInput(f"the department rule is one of {', '.join(RULES)}", details={"field": "rule"})
        for name in ("partner_bp", "operator_bp", "public_bp"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= FULL_BP:
                raise InvalidInput(f"{name} is 0 to {FULL_BP} basis points", details={"field": name})
        if self.partner_bp + self.operator_bp + self.public_bp > FULL_BP:
            raise InvalidInput(f"the partner ({self.partner_bp}), operator ({self.operator_bp}) and public "
                               f"({self.public_bp}) shares exceed 100% (in basis points)",
                               details={"field": "shares", "rule": "shares_within_revenue"})
        if any(not isinstance(w, int) or w < 0 for w in self.department_weights.values()):
            raise InvalidInput("department weights are whole numbers, 0 or more", details={"field": "departments"})


def department_weights(rule: str, measured: dict[int, int]) -> dict[int, int]:
    """The weights the rule gives each department from what was measured (declared fields or rows)."""
    if rule == "equal":
        return {d: 1 for d in measured}
    if rule in ("declared", "rows"):
        return dict(measured)
    raise InvalidInput(f"the department rule is one of {', '.join(RULES)}", details={"field": "rule"})


def split(revenue_fen: int, t: Terms) -> list[tuple[str, int | None, int]]:
    """[(party, org id, fen)] for one product's revenue: partner, operator, public, then departments."""
    t.check()
    pool = FULL_BP - t.partner_bp - t.operator_bp - t.public_bp
    depts = {d: w for d, w in sorted(t.department_weights.items()) if w > 0}
    d_total = sum(depts.values())
    public_bp = t.public_bp if d_total else t.public_bp + pool
    scale = d_total or 1
    weights: list[tuple[tuple[str, int | None], int]] = [
        (("partner", t.partner_org_id), t.partner_bp * scale),
        (("operator", t.operator_org_id), t.operator_bp * scale),
        (("public", None), public_bp * scale)]
    weights += [(("provider", d), pool * w) for d, w in depts.items()]
    shares = allocate(revenue_fen, weights)
    return [(party, org, fen) for (party, org), fen in shares.items()]
