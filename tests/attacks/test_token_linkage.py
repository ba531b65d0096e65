"""Linking one person's tokens across customers and products, and reversing them by brute force.

Two partners (customers) and a second workspace (product) of the first receive record releases of
the same residents. Pooling them on the token column links nobody, and enumerating every ID the
region and birth year allow (365,000 candidates) through an unkeyed hash finds none of them: the
tokens are a keyed PRF whose key is scoped per customer and product. The controls show what the
same pooling and enumeration do to an unkeyed hash and to one key shared by everyone.
"""

from __future__ import annotations

import hmac

import pytest

from authops.sandbox.masking import tokens
from tests.attacks.kit import candidates, roster_spec, unkeyed
from tests.attacks.world import figures, lab, load, released, residents, run, submit

pytestmark = pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)


def test_tokens_link_nobody_across_customers_or_products_and_resist_brute_force(session, db_settings):
    code, rows = load(session, db_settings, residents(200, seed=31))
    ids = rows.column("id_number").to_pylist()
    a = lab(session, code, rows)
    b = lab(session, code, rows)
    a2 = lab(session, code, rows, partner=a.partner)  # the same customer, another product
    got = {}
    for name, who in (("a", a), ("b", b), ("a2", a2)):
        job = run(db_settings, submit(session, who, kind="spec", spec=roster_spec(code)))
        assert job.state == "succeeded", job.error_message
        got[name] = set(released(session, db_settings, who, job.id, "rows").column("id_number").to_pylist())
    assert all(len(t) == len(ids) for t in got.values())

    # Pooling the releases on the token column.
    across_customers = len(got["a"] & got["b"]) / len(ids)
    across_products = len(got["a"] & got["a2"]) / len(ids)
    # Brute force: every candidate ID through an unkeyed SHA-256, and an HMAC with an empty key.
    space = candidates()
    hashed_space = set(unkeyed(space))
    guesses = hashed_space | {hmac.new(b"", v.encode(), "sha256").hexdigest() for v in space[:50_000]}
    reversed_p = len(got["a"] & guesses)

    # Controls: tokens as an unkeyed hash (what the masking library refuses to make), and one key for all.
    reversed_c = len(set(unkeyed(ids)) & hashed_space) / len(ids)
    shared = set(tokens.tokenize(ids, b"k" * 32, domain="identifier_person").to_pylist())
    linked_c = len(shared & set(tokens.tokenize(ids, b"k" * 32, domain="identifier_person").to_pylist())) / len(ids)
    figures("token linkage and brute force", people=len(ids), candidates=len(space),
            control_unkeyed_reversed=reversed_c, control_shared_key_linked=linked_c,
            platform_linked_across_customers=across_customers, platform_linked_across_products=across_products,
            platform_reversed=reversed_p)
    assert reversed_c == 1.0 and linked_c == 1.0
    assert across_customers == 0.0 and across_products == 0.0 and reversed_p == 0
