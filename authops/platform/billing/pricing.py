"""Regulated prices with what governance knows (BRIEF 7): who may set what for which product.

- `set_max_revenue`: the bureau, with the DRC (a supervisor organisation it names), for an operator;
- `set_cap`: the bureau, for a registered or draft product and a billing unit;
- `set_price`: the product's operator, under an active authorization; a trial price when the
  operator has not completed an operating year (its first authorization started less than a year
  ago), filed with the DRC by `file_trial` before it takes effect;
- `published_prices`: the caps and prices in force for every registered product (the disclosure).
The rules themselves (history, cap, free products, filing) are authops.billing.prices.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import prices as rules
from authops.billing.models import MaxRevenue, Price, PriceCap, PriceFiling
from authops.billing.rating import FREE_CATEGORIES
from authops.core.clock import utcnow
from authops.core.errors import InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.governance import agreements
from authops.platform.governance import operator as gov_operator
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation

ActorLike = audit_log.Actor | Principal


def org_of_kind(session: Session, org_id: Any, kind: OrgKind, field: str) -> Organisation:
    org = session.get(Organisation, org_id) if isinstance(org_id, int) else None
    if org is None or OrgKind(org.kind) != kind:
        raise InvalidInput(f"{field} must name a {kind.value} organisation", details={"field": field})
    return org


def product(session: Session, product_id: int) -> Product:
    p = session.get(Product, product_id)
    if p is None:
        raise NotFound(f"no product {product_id}")
    return p


def is_free(p: Product) -> bool:
    return p.category in FREE_CATEGORIES


def completed_operating_year(session: Session, operator_org_id: int, on: date | None = None) -> bool:
    """True when the operator's first authorization began at least a year before `on`."""
    on = on or agreements.today()
    first = session.exec(select(Agreement.starts_on).where(
        Agreement.kind == "operator_authorization", Agreement.party_b_org_id == operator_org_id,
        Agreement.state.in_(("active", "expired", "exited"))).order_by(Agreement.starts_on)).first()  # type: ignore[attr-defined]
    if first is None:
        return False
    try:
        anniversary = first.replace(year=first.year + 1)
    except ValueError:  # 29 February
        anniversary = date(first.year + 1, 3, 1)
    return anniversary <= on


def set_max_revenue(session: Session, *, operator_org_id: int, year: int, amount_fen: int, drc_org_id: int,
                    actor: ActorLike, warn_at_pct: list[int] | None = None, reason: str = "") -> MaxRevenue:
    org_of_kind(session, operator_org_id, OrgKind.OPERATOR, "operator_org_id")
    org_of_kind(session, drc_org_id, OrgKind.SUPERVISOR, "drc_org_id")
    return rules.set_max_revenue(session, operator_org_id=operator_org_id, year=year, amount_fen=amount_fen,
                                 actor=actor, co_set_by_org_id=drc_org_id, reason=reason,
                                 warn_at_pct=rules.DEFAULT_WARNINGS if warn_at_pct is None else warn_at_pct)


def set_cap(session: Session, *, product_id: int, unit: str, cap_fen: int, actor: ActorLike, reason: str = "",
            effective_from: datetime | None = None) -> PriceCap:
    p = product(session, product_id)
    return rules.set_cap(session, product_id=p.id, unit=unit, cap_fen=cap_fen, free=is_free(p), actor=actor,
                         reason=reason, effective_from=effective_from)


def set_price(session: Session, *, product_id: int, unit: str, price_fen: int, actor: ActorLike, basis: str = "",
              effective_from: datetime | None = None) -> Price:
    """The calling operator's price for its own product (another operator's product: 404)."""
    who = audit_log.as_actor(actor)
    p = session.get(Product, product_id)
    if p is None or p.operator_org_id != who.org_id:
        raise NotFound(f"no product {product_id} operated by you")
    gov_operator.require_active_authorization(session, p.operator_org_id)
    trial = not completed_operating_year(session, p.operator_org_id)
    return rules.set_price(session, operator_org_id=p.operator_org_id, product_id=p.id, unit=unit,
                           price_fen=price_fen, free=is_free(p), trial=trial, actor=who, basis=basis,
                           effective_from=effective_from)


def file_trial(session: Session, *, price_id: int, drc_org_id: int, actor: ActorLike) -> PriceFiling:
    who = audit_log.as_actor(actor)
    price = rules.get_price(session, price_id, operator_org_id=who.org_id)
    org_of_kind(session, drc_org_id, OrgKind.SUPERVISOR, "drc_org_id")
    return rules.file_trial(session, price, drc_org_id=drc_org_id, actor=who)


def published_prices(session: Session, at: datetime | None = None) -> list[dict[str, Any]]:
    """Per registered product: each unit's cap and the operator's price in force (the disclosure page's
    price_caps section); a free product says so and has no prices."""
    at = at or utcnow()
    out = []
    for p in session.exec(select(Product).where(Product.state == "registered").order_by(Product.id)):
        units = []
        for unit in rules.UNITS:
            cap = rules.cap_in_force(session, p.id, unit, at)
            price = rules.price_in_force(session, p.operator_org_id, p.id, unit, at) if p.operator_org_id else None
            if cap is None and price is None:
                continue
            units.append({"unit": unit, "unit_zh": rules.UNITS[unit][0], "unit_en": rules.UNITS[unit][1],
                          "cap_fen": cap.cap_fen if cap else None,
                          "price_fen": min(price.price_fen, cap.cap_fen) if price and cap else
                          (price.price_fen if price else None),
                          "trial": bool(price and price.kind == "trial"),
                          "cap_since": cap.effective_from if cap else None,
                          "price_since": price.effective_from if price else None})
        out.append({"product_id": p.id, "code": p.code, "name_zh": p.name_zh, "name_en": p.name_en,
                    "registration_number": p.registration_number, "category": p.category, "free": is_free(p),
                    "units": [] if is_free(p) else units})
    return out
