"""A small billing world: bureau, DRC, an authorized operator, a partner, providers, customers and
registered products with active usage agreements (through the governance modules' real steps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session

from authops.core.identity import OrgKind
from authops.platform.governance import agreements
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation
from tests.platform.governance.matrix_products import registered_product, usage_agreement, who
from tests.support.builders import make_org


@dataclass
class BillingWorld:
    bureau: Organisation
    drc: Organisation
    operator: Organisation
    partner: Organisation
    customer: Organisation
    customer2: Organisation
    providers: list[Organisation]
    authorization: Agreement
    products: dict[str, Product] = field(default_factory=dict)
    usage: dict[tuple[str, int], Agreement] = field(default_factory=dict)


def authorize(session: Session, operator_id: int, bureau_id: int, *, days_ago: int = 30,
              shares: dict[str, int] | None = None) -> Agreement:
    d = agreements.today()
    terms = {"scope": "全市公共数据授权运营",
             "revenue_distribution": {"shares_pct": shares or {"provider_departments": 30, "operator": 40,
                                                               "partners": 20, "public": 10}}}
    return agreements.create(session, kind="operator_authorization", party_a_org_id=bureau_id,
                             party_b_org_id=operator_id, terms=terms, starts_on=d - timedelta(days=days_ago),
                             ends_on=d - timedelta(days=days_ago) + timedelta(days=3 * 365), actor=who(bureau_id),
                             state="active")


def build(session: Session, *, operating_days: int = 30, price_fen: int = 100) -> BillingWorld:
    """An operator authorized `operating_days` ago selling product "paid" (per call, agreement price
    `price_fen`) and "free" (public governance) to two customers."""
    bureau, drc = make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.SUPERVISOR)
    operator, partner = make_org(session, OrgKind.OPERATOR), make_org(session, OrgKind.PARTNER)
    customer, customer2 = make_org(session, OrgKind.CUSTOMER), make_org(session, OrgKind.CUSTOMER)
    providers = [make_org(session, OrgKind.PROVIDER) for _ in range(3)]
    auth = authorize(session, operator.id, bureau.id, days_ago=operating_days)
    w = BillingWorld(bureau, drc, operator, partner, customer, customer2, providers, auth)
    w.products["paid"] = registered_product(session, partner_id=partner.id, operator_id=operator.id,
                                            price_fen=max(price_fen, 1000))
    w.products["free"] = registered_product(session, partner_id=partner.id, operator_id=operator.id, price_fen=0,
                                            category="public_governance")
    for c in (customer, customer2):
        w.usage[("paid", c.id)] = usage_agreement(session, w.products["paid"], c.id, price_fen=price_fen)
        w.usage[("free", c.id)] = usage_agreement(session, w.products["free"], c.id, pricing_method="free",
                                                  price_fen=0)
    session.commit()
    return w
