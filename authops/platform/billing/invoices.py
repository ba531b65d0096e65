"""Usage, monthly statements and subscriptions as each organisation may see them.

Visibility: a customer sees its own usage and statements; an operator sees everything sold under
its products; the bureau (the regulator) sees all; anyone else sees nothing (an empty list, and
404 for a statement of an agreement that is not theirs). Usage views never include the answers
(`response`): the operator reads what was used and charged, not what a customer was told.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import metering, statements
from authops.billing.models import UsageRecord
from authops.billing.rating import month_bounds
from authops.core.clock import show
from authops.core.errors import NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.governance import agreements
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation

ActorLike = audit_log.Actor | Principal
USAGE_LIMIT = 1000


def scope(session: Session, org_id: int | None) -> dict[str, int] | None:
    """The statement/usage filter for an organisation; None means it sees nothing."""
    org = session.get(Organisation, org_id) if org_id else None
    if org is None:
        return None
    kind = OrgKind(org.kind)
    if kind == OrgKind.CUSTOMER:
        return {"customer_org_id": org.id}
    if kind == OrgKind.OPERATOR:
        return {"operator_org_id": org.id}
    if kind == OrgKind.BUREAU:
        return {}
    return None


def labels(session: Session, recs: list[UsageRecord] | None = None) -> dict[str, dict[int, str]]:
    """Names for the organisations, products and agreements the records mention."""
    recs = recs or []
    org_ids = {r.customer_org_id for r in recs} | {r.operator_org_id for r in recs if r.operator_org_id}
    orgs = session.exec(select(Organisation).where(Organisation.id.in_(org_ids))).all() if org_ids else []  # type: ignore[union-attr]
    pids = {r.product_id for r in recs}
    prods = session.exec(select(Product).where(Product.id.in_(pids))).all() if pids else []  # type: ignore[union-attr]
    aids = {r.agreement_id for r in recs}
    ags = session.exec(select(Agreement).where(Agreement.id.in_(aids))).all() if aids else []  # type: ignore[union-attr]
    return {"org": {o.id: f"{o.name_zh} ({o.code})" for o in orgs},
            "product": {p.id: f"{p.name_zh} ({p.code})" for p in prods},
            "agreement": {a.id: a.number for a in ags}}


def usage(session: Session, org_id: int | None, *, year: int, month: int, product_id: int | None = None
          ) -> list[dict[str, Any]]:
    """The month's usage records the organisation may see (at most USAGE_LIMIT, oldest first)."""
    statements.check_period(year, month)
    where = scope(session, org_id)
    if where is None:
        return []
    start, end = month_bounds(year, month)
    recs = statements.records(session, start=start, end=end, product_id=product_id, limit=USAGE_LIMIT, **where)
    names = labels(session, recs)
    return [{"request_id": r.request_id, "at": r.at, "at_local": show(r.at),
             "customer": names["org"].get(r.customer_org_id), "product": names["product"].get(r.product_id),
             "agreement": names["agreement"].get(r.agreement_id), "channel": r.channel, "unit": r.unit,
             "units": r.units, "unit_price_fen": r.unit_price_fen, "amount_fen": r.amount_fen,
             "price_source": r.price_source} for r in recs]


def monthly_statements(session: Session, org_id: int | None, *, year: int, month: int,
                       agreement_id: int | None = None) -> list[dict[str, Any]]:
    statements.check_period(year, month)
    where = scope(session, org_id)
    if where is None:
        return []
    start, end = month_bounds(year, month)
    recs = statements.records(session, start=start, end=end, agreement_id=agreement_id, **where)
    return statements.monthly(session, year=year, month=month, agreement_id=agreement_id, labels=labels(session, recs),
                              **where)


def statement(session: Session, org_id: int | None, *, year: int, month: int, agreement_id: int) -> dict[str, Any]:
    """One agreement's statement for the month; 404 when the agreement is not visible to `org_id`."""
    a = session.get(Agreement, agreement_id)
    where = scope(session, org_id)
    visible = a is not None and a.kind == "usage" and where is not None and (
        not where or org_id in (a.party_a_org_id, a.party_b_org_id))
    if not visible:
        raise NotFound(f"no usage agreement {agreement_id}")
    found = monthly_statements(session, org_id, year=year, month=month, agreement_id=agreement_id)
    if found:
        return found[0]
    names = labels(session)
    return {"period": f"{year}-{month:02d}", "customer_org_id": a.party_b_org_id,
            "customer": agreements.org_name(session, a.party_b_org_id), "operator_org_id": a.party_a_org_id,
            "operator": agreements.org_name(session, a.party_a_org_id), "agreement_id": a.id,
            "agreement": names["agreement"].get(a.id, a.number), "lines": [], "uses": 0, "total_fen": 0,
            "total_yuan": "0.00", "from_local": show(month_bounds(year, month)[0]),
            "to_local": show(month_bounds(year, month)[1])}


def meter_subscriptions(session: Session, *, operator_org_id: int, year: int, month: int) -> list[UsageRecord]:
    """Meter each active monthly usage agreement of the operator for the month, once (key sub-<id>-<yyyy-mm>)."""
    statements.check_period(year, month)
    start, end = month_bounds(year, month)
    day = date(year, month, 1)
    out = []
    rows = session.exec(select(Agreement).where(Agreement.kind == "usage", Agreement.party_a_org_id == operator_org_id,
                                                Agreement.state == "active", Agreement.starts_on < end.date(),
                                                Agreement.ends_on >= day)).all()
    for a in rows:
        if (a.terms or {}).get("pricing_method") != "monthly" or a.product_id is None:
            continue
        key = f"sub-{a.id}-{year}-{month:02d}"
        if metering.find(session, a.party_b_org_id, key) is not None:
            continue
        out.append(metering.meter(session, customer_org_id=a.party_b_org_id, product_id=a.product_id,
                                  agreement_id=a.id, request_id=f"sub_{a.id}_{year}{month:02d}",
                                  pricing_method="monthly", price_fen=int(a.terms["pricing"]["price_fen"]),
                                  channel="subscription", idempotency_key=key, at=max(start, a.created_at)))
    return out
