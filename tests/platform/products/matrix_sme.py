"""Route-matrix cases for the SME credit services, and the builders the SME tests share: the synthetic
enterprise city loaded into the catalogue, the bank credit assessment and trading limit products
registered and served (answer sets built by the precompute job), enterprise consents, requests."""

from __future__ import annotations

from itertools import count

import pyarrow as pa
from sqlmodel import Session, select

from authops.core.data.datasets import read_dataset
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.catalog import csvload, flows
from authops.platform.catalog import service as catalog
from authops.platform.catalog.models import DataResource, Dataset
from authops.platform.governance import agreements
from authops.platform.governance.models import Product
from authops.platform.identity.models import Organisation
from authops.platform.products import precompute, sme, sme_financing, sme_whitelist
from authops.products.catalog import PRODUCTS
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import (authorize_operator, give_consent, registered_product,
                                                       usage_agreement, who)
from tests.platform.products.matrix_products_calls import build_answers
from tests.support.builders import make_org
from tests.support.catalog import ACTOR
from tests.support.matrix import Case, World

SCALE, SEED = 0.01, 7  # 1,000 enterprises
SERVED = (sme.CREDIT, sme.SCALE)
RESOURCES = sorted({r for code in SERVED for r in PRODUCTS[code].resources})
PRECREDIT_PURPOSE = "小微企业预授信"
_n = count(1)


# --- builders ---------------------------------------------------------------------------------------

def load_enterprises(session: Session, settings) -> None:
    catalog.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(settings, scale=SCALE, seed=SEED, only=set(RESOURCES))


def raw(session: Session, settings, code: str) -> pa.Table:
    """A loaded resource's current dataset (the test's reference; no response may contain its values)."""
    res = catalog.get_resource(session, code)
    return read_dataset(get_object_store(settings), session.get(Dataset, res.dataset_id).object_key)


def serve_products(session: Session, settings, *, partner_id: int, operator_id: int) -> dict[str, Product]:
    """The credit and trading products registered under their catalogue codes (another area's test may have
    registered one already), each with a built answer set."""
    out = {}
    for code in SERVED:
        p = session.exec(select(Product).where(Product.code == code)).first()
        if p is None:
            p = registered_product(session, partner_id=partner_id, operator_id=operator_id, price_fen=800)
            p.code, p.release_policy, p.share_mode = code, "model", "query"
            p.spec = parse_text(PRODUCTS[code].spec_path.read_text(encoding="utf-8"))
            session.add(p)
            session.commit()
        if precompute.current(session, p.id) is None:
            build_answers(settings, p.id)
        out[code] = p
    return out


def enterprise_consent(session: Session, settings, credit: Product, bank_id: int, uscc: str, purpose: str):
    """The enterprise's signed consent for the bank (returns the consent and the enterprise's key)."""
    c, sk = give_consent(session, settings, credit, bank_id, subject_id=uscc, subject_kind="enterprise",
                         purpose=purpose, scope=["grade", "precredit_band"])
    session.commit()
    return c, sk


def enterprise_org(session: Session, uscc: str) -> Organisation:
    org = make_org(session, OrgKind.CUSTOMER)
    org.uscc = uscc
    session.add(org)
    session.commit()
    return org


# --- the matrix ---------------------------------------------------------------------------------------

def _st(w: World) -> dict:
    return w.__dict__.setdefault("_sme", {})


def _settings():
    from authops.core.settings import get_settings

    return get_settings()


def _bank(w: World, org: Organisation) -> Organisation:
    """The customer organisation a caller of org's kind points at: org itself, else home's."""
    return org if OrgKind(org.kind) == OrgKind.CUSTOMER else w.home[OrgKind.CUSTOMER]


def _world(session: Session, w: World) -> dict:
    """Built once per world: the served products, and per customer (home and away) an agreement, a USCC,
    a consented enterprise, a loan product and a subscription with one delivery."""
    st = _st(w)
    if "credit" in st:
        return st
    settings = _settings()
    for side in (w.home, w.away):
        authorize_operator(session, side[OrgKind.OPERATOR].id, side[OrgKind.BUREAU].id)
    session.commit()
    if not _loaded(session, "enterprise_basic_info"):  # another area's cases may have loaded a city already
        load_enterprises(session, settings)
    products = serve_products(session, settings, partner_id=w.home[OrgKind.PARTNER].id,
                              operator_id=w.home[OrgKind.OPERATOR].id)
    credit = products[sme.CREDIT]
    usccs = raw(session, settings, "enterprise_basic_info").column("uscc").to_pylist()
    st["credit"] = credit.id
    for k, side in enumerate((w.home, w.away)):
        bank = side[OrgKind.CUSTOMER]
        if agreements.get_active(session, "usage", party_b=bank.id, product_id=credit.id) is None:
            usage_agreement(session, credit, bank.id)
        bank.uscc = usccs[k]
        session.add(bank)
        session.commit()
        st[("firm", bank.id)] = usccs[10 + k]
        enterprise_consent(session, settings, credit, bank.id, usccs[10 + k], PRECREDIT_PURPOSE)
        enterprise_consent(session, settings, credit, bank.id, usccs[10 + k], sme_whitelist.WHITELIST_PURPOSE)
        st[("product", bank.id)] = _loan_product(session, bank).id
        sub = sme_whitelist.subscribe(session, principal=who(bank), min_grade="B")
        st[("delivery", bank.id)] = sme_whitelist.push(session, settings, sub).id
        session.commit()
    for side in (w.home, w.away):
        st[("request", side[OrgKind.CUSTOMER].id)] = _request(session, side[OrgKind.CUSTOMER]).id
    return st


def _loaded(session: Session, code: str) -> bool:
    res = session.exec(select(DataResource).where(DataResource.code == code)).first()
    return res is not None and res.dataset_id is not None


def _loan_product(session: Session, bank: Organisation):
    lp = sme_financing.create_loan_product(session, principal=who(bank), name="经营贷", min_amount_fen=1,
                                           max_amount_fen=10**12, min_term_months=1, max_term_months=360,
                                           min_grade="E")
    session.commit()
    return lp


def _request(session: Session, enterprise: Organisation):
    req = sme_financing.submit(session, _settings(), principal=who(enterprise), amount_band="lt_500k", term_months=12,
                               industry="manufacturing", purpose="流动资金周转", authorize_sharing=True)
    session.commit()
    return req


def _prepare(session, w, org):
    _world(session, w)


def _fresh_subscription(session, w, org):
    st = _world(session, w)
    bank = _bank(w, org)
    st[("subscription", bank.id)] = sme_whitelist.subscribe(session, principal=who(bank)).id
    session.commit()


def _fresh_match(session, w, org):
    """A new request by a new enterprise, matched to org's loan product (state received)."""
    st = _world(session, w)
    bank = _bank(w, org)
    firm = enterprise_org(session, st[("firm", bank.id)])
    req = _request(session, firm)
    st[("match", bank.id)] = next(m.id for m in sme_financing.matches_of(session, req.id) if m.bank_org_id == bank.id)


def _id(name: str, param: str):
    return lambda w, org: {param: _st(w).get((name, _bank(w, org).id), 1)}


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/sme/whitelist/subscriptions"): Case(prepare=_prepare, body=lambda w, org: {"min_grade": "A"}),
    ("GET", "/api/v1/sme/whitelist/subscriptions"): Case(prepare=_prepare),
    ("POST", "/api/v1/sme/whitelist/subscriptions/{subscription_id}/cancel"): Case(
        prepare=_fresh_subscription, params=_id("subscription", "subscription_id")),
    ("GET", "/api/v1/sme/whitelist/deliveries/{delivery_id}"): Case(prepare=_prepare,
                                                                    params=_id("delivery", "delivery_id")),
    ("POST", "/api/v1/sme/precredit"): Case(prepare=_prepare, body=lambda w, org: {
        "uscc": _st(w).get(("firm", _bank(w, org).id), "x"), "purpose": PRECREDIT_PURPOSE}),
    ("POST", "/api/v1/sme/loan-products"): Case(prepare=_prepare, body=lambda w, org: {
        "name": f"科创贷{next(_n)}", "min_amount_fen": 100_000_00, "max_amount_fen": 5_000_000_00,
        "min_term_months": 6, "max_term_months": 36, "industries": ["information_technology"], "min_grade": "B"}),
    ("GET", "/api/v1/sme/loan-products"): Case(prepare=_prepare),
    ("PATCH", "/api/v1/sme/loan-products/{product_id}"): Case(prepare=_prepare, params=_id("product", "product_id"),
                                                              body=lambda w, org: {"active": True}),
    ("POST", "/api/v1/sme/financing/requests"): Case(prepare=_prepare, body=lambda w, org: {
        "amount_band": "500k_1m", "term_months": 24, "industry": "construction", "purpose": "设备采购",
        "authorize_sharing": True}),
    ("GET", "/api/v1/sme/financing/requests"): Case(prepare=_prepare),
    ("GET", "/api/v1/sme/financing/requests/{request_id}"): Case(prepare=_prepare,
                                                                params=_id("request", "request_id")),
    ("GET", "/api/v1/sme/financing/matches"): Case(prepare=_prepare),
    ("GET", "/api/v1/sme/financing/matches/{match_id}"): Case(prepare=_fresh_match, params=_id("match", "match_id")),
    ("POST", "/api/v1/sme/financing/matches/{match_id}/progress"): Case(
        prepare=_fresh_match, params=_id("match", "match_id"), body=lambda w, org: {"state": "reviewing"}),
}


__all__ = ["CASES", "PRECREDIT_PURPOSE", "RESOURCES", "enterprise_consent", "enterprise_org", "load_enterprises",
           "raw", "serve_products"]
