"""A year of platform records for the assessment tests, made through the real components: the
operator authorization, registered products, usage agreements, metered usage (billing), audit
events of calls and releases, incidents and anomaly cases, ratings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlmodel import Session

from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly
from authops.audit.anomaly.models import AnomalyRule
from authops.billing import metering
from authops.core.identity import OrgKind
from authops.platform.assessment import ratings, service
from authops.platform.catalog.models import DataResource
from authops.platform.governance import agreements, operator
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation
from tests.platform.governance.matrix_products import registered_product, usage_agreement
from tests.support.builders import make_org

ALL_METRICS = {"products": {"weight": 1, "target": 2}, "scenarios": {"weight": 1, "target": 1},
               "security_compliance": {"weight": 2, "target": 100}, "satisfaction": {"weight": 1, "target": 5},
               "revenue": {"weight": 2, "target": 1000}, "social.subjects_served": {"weight": 1, "target": 3},
               "social.financing_disbursed": {"weight": 1, "target": 1},
               "social.public_governance_calls": {"weight": 1, "target": 2}}


def actor(org: Organisation, name: str = "tester") -> audit_log.Actor:
    return audit_log.Actor(kind="user", id=1, name=f"{name}@{org.code}", org_id=org.id)


@dataclass
class World:
    bureau: Organisation
    operator: Organisation
    partner: Organisation
    customer: Organisation
    provider: Organisation
    authorization: Agreement
    products: list[Product] = field(default_factory=list)
    usage: dict[tuple[int, int], Agreement] = field(default_factory=dict)  # (product, customer) -> agreement

    @property
    def bureau_actor(self) -> audit_log.Actor:
        return actor(self.bureau, "bureau")


def build(session: Session, *, starts_on: date | None = None) -> World:
    bureau, op = make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.OPERATOR)
    partner, customer = make_org(session, OrgKind.PARTNER), make_org(session, OrgKind.CUSTOMER)
    provider = make_org(session, OrgKind.PROVIDER)
    starts = starts_on or agreements.today() - timedelta(days=30)
    ag = agreements.create(session, kind="operator_authorization", party_a_org_id=bureau.id, party_b_org_id=op.id,
                           terms={"scope": "全市公共数据授权运营"}, starts_on=starts, ends_on=operator.term_end(starts),
                           actor=actor(bureau), state="active")
    session.commit()
    return World(bureau, op, partner, customer, provider, ag)


def resource(session: Session, w: World, code: str = "tax_payments", cycle: str = "monthly") -> DataResource:
    res = DataResource(code=f"{code}_{uuid.uuid4().hex[:6]}", org_id=w.provider.id, name_zh="纳税信息",
                       name_en="Tax payments", grade="B", update_cycle=cycle)
    session.add(res)
    session.flush()
    return res


def product(session: Session, w: World, category: str = "industry") -> Product:
    p = registered_product(session, partner_id=w.partner.id, operator_id=w.operator.id, category=category)
    w.products.append(p)
    return p


def use(session: Session, w: World, p: Product, *, subjects: list[str], price_fen: int = 100,
        customer: Organisation | None = None) -> None:
    """Metered calls about `subjects` (pseudonymous keys), each with its product.call audit event."""
    customer = customer or w.customer
    method = "per_call" if p.category == "industry" else "free"
    price_fen = price_fen if method == "per_call" else 0
    ag = w.usage.get((p.id, customer.id)) or usage_agreement(session, p, customer.id, pricing_method=method,
                                                             price_fen=price_fen)
    w.usage[(p.id, customer.id)] = ag
    for key in subjects:
        request_id = uuid.uuid4().hex[:24]
        rec = metering.meter(session, customer_org_id=customer.id, product_id=p.id, agreement_id=ag.id,
                             request_id=request_id, pricing_method=method, price_fen=price_fen)
        audit_log.record(session, actor(customer), "product.call", object_type="product", object_id=p.id, subjects=1,
                         details={"code": p.code, "request_id": request_id, "subject_key": key,
                                  "amount_fen": rec.amount_fen})
    session.commit()


def releases(session: Session, w: World, *, released: int, refused: int) -> None:
    who = actor(w.partner)
    for _ in range(released):
        audit_log.record(session, who, "sandbox.release", object_type="job", object_id=1,
                         details={"output": "o", "policy": "aggregate", "rows": 1})
    for _ in range(refused):
        audit_log.record(session, who, "sandbox.refuse", outcome="denied", object_type="workspace", object_id=1,
                         details={"reason": "release_policy", "job": "j", "output": "o"})
    session.commit()


def confirmed_anomaly(session: Session, w: World) -> None:
    rule = AnomalyRule(name=f"night_{uuid.uuid4().hex[:6]}", kind="night_downloads", threshold=1, action="alert")
    session.add(rule)
    session.flush()
    case = anomaly.open_case(session, rule=rule, subject_type="org", subject_id=str(w.customer.id),
                             org_id=w.customer.id, evidence={"events": 3})
    anomaly.confirm_case(session, case.id, actor=w.bureau_actor, reason="确认夜间高频下载", severity="minor")
    session.commit()


def rate(session: Session, w: World, p: Product, score: int) -> None:
    ratings.rate(session, actor=actor(w.customer), product_code=p.code, score=score, comment="好用")
    session.commit()


def settings(session: Session, year: int, *, excellent: float = 90, qualified: float = 60,
             metrics: dict | None = None, expert_weight: float = 0) -> None:
    service.set_year_settings(session, actor=audit_log.SYSTEM, year=year, metrics_=metrics or ALL_METRICS,
                              excellent=excellent, qualified=qualified, expert_weight=expert_weight)
    session.commit()
