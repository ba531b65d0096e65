"""Cost and revenue books: plan categories, append-only with reversing corrections, reconciliation."""

from __future__ import annotations

from datetime import date

import pytest

from authops.billing import books
from authops.billing.models import BookEntry
from authops.core.clock import to_shanghai, utcnow
from authops.core.errors import Conflict, InvalidInput
from tests.billing.test_metering import charge
from tests.billing.world import build
from tests.platform.governance.matrix_products import who


def test_costs_are_booked_in_the_plans_categories_and_corrected_by_reversal(session):
    w = build(session)
    op = who(w.operator)
    staff = books.post(session, operator_org_id=w.operator.id, book="cost", category="staff", amount_fen=500_000,
                       occurred_on=date(2026, 3, 31), actor=op, description="三月工资")
    books.post(session, operator_org_id=w.operator.id, book="cost", category="platform", amount_fen=1_200_000,
               occurred_on=date(2026, 4, 2), actor=op)
    with pytest.raises(InvalidInput) as bad:
        books.post(session, operator_org_id=w.operator.id, book="cost", category="marketing", amount_fen=1,
                   occurred_on=date(2026, 4, 2), actor=op)
    assert bad.value.details == {"field": "category"}
    fix = books.reverse(session, staff, reason="金额录错", actor=op)
    books.post(session, operator_org_id=w.operator.id, book="cost", category="staff", amount_fen=450_000,
               occurred_on=date(2026, 3, 31), actor=op)
    with pytest.raises(Conflict):
        books.reverse(session, staff, reason="again", actor=op)
    with pytest.raises(Conflict):
        books.reverse(session, fix, reason="undo", actor=op)
    t = books.totals(session, w.operator.id, 2026)
    assert t["cost"]["staff"] == 450_000 and t["cost"]["platform"] == 1_200_000
    assert t["cost_total_fen"] == 1_650_000 and t["revenue_total_fen"] == 0
    assert session.get(BookEntry, staff.id).amount_fen == 500_000  # the original stays as it was
    assert len(books.entries(session, w.operator.id, 2026)) == 4


def test_metered_revenue_reconciles_with_the_product_sales_book(session):
    w = build(session, price_fen=300)
    for _ in range(3):
        charge(session, w, w.customer)
    now = to_shanghai(utcnow())
    before = books.reconcile(session, w.operator.id, now.year)
    assert (before["metered_fen"], before["booked_product_sales_fen"], before["reconciled"]) == (900, 0, False)
    e = books.book_metered_month(session, operator_org_id=w.operator.id, year=now.year, month=now.month,
                                 actor=who(w.operator))
    again = books.book_metered_month(session, operator_org_id=w.operator.id, year=now.year, month=now.month,
                                     actor=who(w.operator))
    assert again.id == e.id and e.amount_fen == 900
    after = books.reconcile(session, w.operator.id, now.year)
    assert after["reconciled"] and after["difference_fen"] == 0
    books.post(session, operator_org_id=w.operator.id, book="revenue", category="product_sales", amount_fen=50,
               occurred_on=now.date(), actor=who(w.operator), description="未计量的收入")
    off = books.reconcile(session, w.operator.id, now.year)
    assert off["difference_fen"] == 50 and not off["reconciled"]
    assert [m["difference_fen"] for m in off["months"] if m["difference_fen"]] == [50]
