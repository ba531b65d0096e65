"""Route-matrix cases for billing: prices and caps, usage and statements, books, settlement, the DRC
report. Per side (home, away) the operator is authorized with revenue terms from 400 days ago and
sells one registered product with a per-call cap."""

from __future__ import annotations

from itertools import count

from sqlmodel import Session

from authops.billing import books
from authops.billing import prices as rules
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.platform.billing import settlement
from authops.platform.identity.models import Organisation
from tests.billing.world import authorize
from tests.platform.governance.matrix_products import registered_product, who
from tests.support.matrix import Case, World

_n = count(1)


def _st(w: World) -> dict:
    return w.__dict__.setdefault("_billing", {})


def _side(w: World, org: Organisation) -> dict[OrgKind, Organisation]:
    return w.away if org.id == w.away[OrgKind(org.kind)].id else w.home


def _year() -> int:
    return to_shanghai(utcnow()).year


def _world(session: Session, w: World, org: Organisation) -> None:
    st = _st(w)
    if st:
        return
    for side in (w.home, w.away):
        op, bureau = side[OrgKind.OPERATOR], side[OrgKind.BUREAU]
        authorize(session, op.id, bureau.id, days_ago=400)
        p = registered_product(session, partner_id=side[OrgKind.PARTNER].id, operator_id=op.id)
        rules.set_cap(session, product_id=p.id, unit="per_call", cap_fen=100, free=False, actor=who(bureau))
        st[("product", op.id)] = p.id
    session.commit()


def _product(w, org):
    return _st(w).get(("product", _side(w, org)[OrgKind.OPERATOR].id), 1)


def _fresh_trial(session, w, org):
    _world(session, w, org)
    op = _side(w, org)[OrgKind.OPERATOR]
    price = rules.set_price(session, operator_org_id=op.id, product_id=_product(w, org), unit="per_call",
                            price_fen=60, free=False, trial=True, actor=who(op))
    session.commit()
    _st(w)[("price", op.id)] = price.id


def _fresh_entry(session, w, org):
    op = _side(w, org)[OrgKind.OPERATOR]
    e = books.post(session, operator_org_id=op.id, book="cost", category="staff", amount_fen=1000,
                   occurred_on=utcnow().date(), actor=who(op))
    session.commit()
    _st(w)[("entry", op.id)] = e.id


def _settled(session, w, org):
    _world(session, w, org)
    op = _side(w, org)[OrgKind.OPERATOR]
    s = settlement.run(session, operator_org_id=op.id, year=_year() - 1, rule="equal", actor=who(op))
    session.commit()
    _st(w)[("settlement", op.id)] = s.id


def _of(name: str, param: str):
    return lambda w, org: {param: _st(w).get((name, _side(w, org)[OrgKind.OPERATOR].id), 1)}


def _period(w, org):
    now = to_shanghai(utcnow())
    return {"year": now.year, "month": now.month}


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/billing/max-revenue"): Case(prepare=_world, body=lambda w, org: {
        "operator_org_id": w.home[OrgKind.OPERATOR].id, "year": _year(), "amount_fen": 10**9,
        "drc_org_id": w.home[OrgKind.SUPERVISOR].id}),
    ("POST", "/api/v1/billing/caps"): Case(prepare=_world, body=lambda w, org: {
        "product_id": _product(w, w.home[OrgKind.OPERATOR]), "unit": "per_call", "cap_fen": 100}),
    ("POST", "/api/v1/billing/prices"): Case(prepare=_world, body=lambda w, org: {
        "product_id": _product(w, org), "unit": "per_call", "price_fen": 50, "basis": "成本加成"}),
    ("POST", "/api/v1/billing/prices/{price_id}/filing"): Case(
        prepare=_fresh_trial, params=_of("price", "price_id"),
        body=lambda w, org: {"drc_org_id": w.home[OrgKind.SUPERVISOR].id}),
    ("GET", "/api/v1/billing/prices"): Case(prepare=_world),
    ("GET", "/api/v1/billing/products/{product_id}/history"): Case(
        prepare=_world, params=lambda w, org: {"product_id": _product(w, org)},
        cross_org="billing.read"),  # caps and prices are published: any product's history is public
    ("GET", "/api/v1/billing/revenue"): Case(),
    ("GET", "/api/v1/billing/usage"): Case(query=_period),
    ("GET", "/api/v1/billing/statements"): Case(query=lambda w, org: {**_period(w, org), "format": "pdf"}),
    ("POST", "/api/v1/billing/subscriptions/meter"): Case(body=_period),
    ("POST", "/api/v1/billing/books"): Case(body=lambda w, org: {
        "book": "cost", "category": "platform", "amount_fen": 5000, "occurred_on": str(utcnow().date())}),
    ("POST", "/api/v1/billing/books/{entry_id}/reversal"): Case(
        prepare=_fresh_entry, params=_of("entry", "entry_id"), body=lambda w, org: {"reason": "录入错误"}),
    ("POST", "/api/v1/billing/books/metered"): Case(body=_period),
    ("GET", "/api/v1/billing/books"): Case(),
    ("POST", "/api/v1/billing/settlements"): Case(prepare=_world, body=lambda w, org: {
        "year": _year() - 1, "rule": "equal"}),
    ("POST", "/api/v1/billing/settlements/{settlement_id}/filing"): Case(
        prepare=_settled, params=_of("settlement", "settlement_id")),
    ("GET", "/api/v1/billing/settlements"): Case(query=lambda w, org: {"format": "pdf"}),
    ("GET", "/api/v1/billing/reports/drc"): Case(query=lambda w, org: {"format": "xlsx"}),
}
