"""Sharing arithmetic: exact sums, the documented rounding, the rule's weights."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from authops.billing import sharing
from authops.core.errors import InvalidInput


def test_largest_remainder_gives_leftover_fen_to_the_largest_remainders_then_in_order():
    assert sharing.allocate(100, [("a", 1), ("b", 1), ("c", 1)]) == {"a": 34, "b": 33, "c": 33}
    assert sharing.allocate(10, [("a", 3), ("b", 3), ("c", 4)]) == {"a": 3, "b": 3, "c": 4}
    assert sharing.allocate(1, [("a", 1), ("b", 2)]) == {"a": 0, "b": 1}  # remainders 1/3 < 2/3
    with pytest.raises(InvalidInput):
        sharing.allocate(5, [("a", 0)])


def test_a_product_split_follows_the_agreements():
    t = sharing.Terms(partner_org_id=7, operator_org_id=5, partner_bp=2000, operator_bp=4000, public_bp=1000,
                      department_weights={11: 3, 12: 1}, rule="declared")
    got = {(p, o): fen for p, o, fen in sharing.split(10_000, t)}
    assert got == {("partner", 7): 2000, ("operator", 5): 4000, ("public", None): 1000, ("provider", 11): 2250,
                   ("provider", 12): 750}
    too_much = sharing.Terms(7, 5, 6000, 4000, 1000, {11: 1}, "equal")
    with pytest.raises(InvalidInput) as exc:
        sharing.split(100, too_much)
    assert exc.value.details["rule"] == "shares_within_revenue"


def test_without_departments_the_providers_pool_is_public():
    t = sharing.Terms(7, 5, 2000, 4000, 1000, {}, "equal")
    got = {p: fen for p, _, fen in sharing.split(999, t)}
    assert got["public"] == 999 - got["partner"] - got["operator"] and sum(got.values()) == 999


_bp = st.integers(0, 10_000)


@given(revenue=st.integers(0, 10**12), partner=_bp, operator=_bp, public=_bp,
       depts=st.dictionaries(st.integers(1, 50), st.integers(0, 10_000), max_size=8),
       rule=st.sampled_from(sharing.RULES))
@settings(max_examples=400)
def test_shares_always_sum_exactly_to_revenue_and_each_is_within_a_fen(revenue, partner, operator, public, depts,
                                                                       rule):
    if partner + operator + public > 10_000:
        partner = operator = 0
        public = min(public, 10_000)
    weights = sharing.department_weights(rule, depts)
    t = sharing.Terms(1, 2, partner, operator, public, weights, rule)
    shares = sharing.split(revenue, t)
    assert sum(fen for _, _, fen in shares) == revenue
    assert all(fen >= 0 for _, _, fen in shares)
    exact_partner = revenue * partner / 10_000
    got_partner = next(fen for p, _, fen in shares if p == "partner")
    assert abs(got_partner - exact_partner) < 1
    assert sharing.split(revenue, t) == shares  # the same inputs always give the same split
