"""Regulated prices: caps, operator prices at or below them, free products, trial filings, history,
publication."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authops.billing import prices as rules
from authops.core.clock import travelled, utcnow
from authops.core.errors import InvalidInput, NotFound
from authops.platform.billing import pricing
from tests.billing.world import build
from tests.platform.governance.matrix_products import who


def test_operator_prices_at_or_below_the_cap_and_above_is_refused_naming_the_rule(session):
    w = build(session, operating_days=400)
    p = w.products["paid"]
    with pytest.raises(rules.NoPriceCap) as no_cap:
        pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=80, actor=who(w.operator))
    assert no_cap.value.details["rule"] == "price_at_or_below_cap"
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    with pytest.raises(rules.PriceAboveCap) as above:
        pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=91, actor=who(w.operator))
    assert above.value.details == {"field": "price_fen", "rule": "price_at_or_below_cap", "cap_fen": 90}
    assert "above the cap of 90 fen" in above.value.message
    price = pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=90, actor=who(w.operator))
    assert price.kind == "regular"  # a completed operating year: no trial
    assert rules.price_in_force(session, w.operator.id, p.id, "per_call").id == price.id


def test_a_free_product_cannot_be_capped_or_priced(session):
    w = build(session, operating_days=400)
    free = w.products["free"]
    for attempt in (lambda: pricing.set_cap(session, product_id=free.id, unit="per_call", cap_fen=10,
                                            actor=who(w.bureau)),
                    lambda: pricing.set_price(session, product_id=free.id, unit="per_call", price_fen=0,
                                              actor=who(w.operator))):
        with pytest.raises(rules.FreeProduct) as exc:
            attempt()
        assert exc.value.details["rule"] == "free_products"
        assert "free and cannot be given a price" in exc.value.message


def test_only_the_products_operator_prices_it(session):
    w = build(session, operating_days=400)
    p = w.products["paid"]
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    with pytest.raises(NotFound):
        pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=50, actor=who(w.partner))


def test_a_trial_price_takes_effect_only_once_filed_with_the_drc(session):
    w = build(session, operating_days=30)
    p = w.products["paid"]
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    trial = pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=70, actor=who(w.operator))
    assert trial.kind == "trial"
    assert rules.price_in_force(session, w.operator.id, p.id, "per_call") is None
    with pytest.raises(InvalidInput) as wrong:
        pricing.file_trial(session, price_id=trial.id, drc_org_id=w.bureau.id, actor=who(w.operator))
    assert wrong.value.details == {"field": "drc_org_id"}
    filing = pricing.file_trial(session, price_id=trial.id, drc_org_id=w.drc.id, actor=who(w.operator))
    assert filing.number.startswith("TP-")
    assert rules.price_in_force(session, w.operator.id, p.id, "per_call").id == trial.id


def test_changes_append_history_and_future_prices_wait_for_their_time(session):
    w = build(session, operating_days=400)
    p = w.products["paid"]
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    first = pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=80, actor=who(w.operator))
    later = pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=60, actor=who(w.operator),
                              effective_from=utcnow() + timedelta(days=2))
    assert rules.price_in_force(session, w.operator.id, p.id, "per_call").id == first.id
    with travelled(timedelta(days=3)):
        assert rules.price_in_force(session, w.operator.id, p.id, "per_call").id == later.id
    hist = rules.history(session, p.id)
    assert [x["price_fen"] for x in hist["prices"]] == [80, 60]
    assert [x["cap_fen"] for x in hist["caps"]] == [90]
    with pytest.raises(InvalidInput) as past:
        pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=50, actor=who(w.bureau),
                        effective_from=utcnow() - timedelta(days=1))
    assert past.value.details == {"field": "effective_from"}


def test_caps_and_prices_in_force_are_published(session):
    w = build(session, operating_days=400)
    p = w.products["paid"]
    pricing.set_cap(session, product_id=p.id, unit="per_call", cap_fen=90, actor=who(w.bureau))
    pricing.set_price(session, product_id=p.id, unit="per_call", price_fen=75, actor=who(w.operator))
    page = {x["code"]: x for x in pricing.published_prices(session)}
    assert page[p.code]["units"] == [{**page[p.code]["units"][0], "unit": "per_call", "cap_fen": 90,
                                      "price_fen": 75, "trial": False}]
    assert page[w.products["free"].code]["free"] is True
    assert page[w.products["free"].code]["units"] == []


def test_maximum_revenue_is_set_with_the_drc_and_kept_as_history(session):
    w = build(session)
    year = rules.year_of()
    with pytest.raises(InvalidInput) as not_drc:
        pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=1000,
                                drc_org_id=w.customer.id, actor=who(w.bureau))
    assert not_drc.value.details == {"field": "drc_org_id"}
    pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=1000,
                            drc_org_id=w.drc.id, actor=who(w.bureau))
    second = pricing.set_max_revenue(session, operator_org_id=w.operator.id, year=year, amount_fen=2000,
                                     drc_org_id=w.drc.id, actor=who(w.bureau), warn_at_pct=[50, 90])
    assert rules.max_revenue_in_force(session, w.operator.id, year).id == second.id
    counter = rules.ensure_counter(session, w.operator.id, year)
    assert (counter.ceiling_fen, counter.warn_at_pct) == (2000, [50, 90])
