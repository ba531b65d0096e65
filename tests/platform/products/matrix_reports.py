"""Route-matrix cases for aggregate reports: the catalogue's supervision product over a loaded
settlements resource, developed in the home partner's workspace with a budget for its releases."""

from __future__ import annotations

from sqlmodel import Session

from authops.core.identity import OrgKind
from authops.platform.catalog import csvload, flows, service
from authops.platform.governance.models import Product
from authops.platform.identity.models import Organisation
from authops.platform.sandbox import workspace as ws_service
from authops.policies import budget
from tests.platform.governance.matrix_products import authorize_operator, usage_agreement
from tests.support.catalog import ACTOR
from tests.support.matrix import Case, World

RESOURCE = "medical_insurance_settlements"


def _st(w: World) -> dict:
    return w.__dict__.setdefault("_products_reports", {})


def _settings():
    from authops.core.settings import get_settings

    return get_settings()


def _product(session: Session, w: World) -> Product:
    from tests.products.test_reports import report_product

    st = _st(w)
    if "product" not in st:
        for side in (w.home, w.away):
            authorize_operator(session, side[OrgKind.OPERATOR].id, side[OrgKind.BUREAU].id)
        service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
        session.commit()
        flows.load_synthetic(_settings(), scale=0.002, seed=3, only={RESOURCE})
        partner = w.home[OrgKind.PARTNER]
        ws = ws_service.create_workspace(session, org_id=partner.id, name="reports lab", scenario="医保监管",
                                         grants=[{"resource": RESOURCE}], actor=ACTOR)
        budget.set_budget(session, org_id=partner.id, resource_code=RESOURCE, epsilon=100.0, delta=1e-4, actor=ACTOR)
        p = report_product(session, partner_id=partner.id, operator_id=w.home[OrgKind.OPERATOR].id, ws_id=ws.id)
        session.commit()
        st["product"], st["code"] = p.id, p.code
    return session.get(Product, st["product"])


def _customer(w: World, org: Organisation) -> Organisation:
    return org if OrgKind(org.kind) == OrgKind.CUSTOMER else w.home[OrgKind.CUSTOMER]


def _agree(session: Session, w: World, org: Organisation) -> None:
    p = _product(session, w)
    customer = _customer(w, org)
    if ("usage", customer.id) not in _st(w):
        _st(w)[("usage", customer.id)] = usage_agreement(session, p, customer.id, pricing_method="free",
                                                         price_fen=0).id
        session.commit()


def _report(session: Session, w: World, org: Organisation) -> None:
    """A report of org (a customer; for the other roles, the home customer's)."""
    from authops.audit import log as audit_log
    from authops.platform.products import reports

    _agree(session, w, org)
    customer = _customer(w, org)
    if ("report", customer.id) not in _st(w):
        rep, _ = reports.request(session, _settings(), code=_st(w)["code"], report="institution_billing",
                                 principal=audit_log.Actor(kind="user", id=1, name="t", org_id=customer.id))
        session.commit()
        _st(w)[("report", customer.id)] = rep.id


def _code(w, org):
    return {"code": _st(w).get("code", "none")}


def _report_id(w, org):
    return {"code": _st(w).get("code", "none"), "report_id": _st(w).get(("report", _customer(w, org).id), 1)}


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/products/{code}/reports"): Case(
        params=_code, prepare=_agree, body=lambda w, org: {"report": "institution_billing"},
        cross_org="product.call"),  # a registered product is public: its code is no foreign object
    ("GET", "/api/v1/products/{code}/reports/{report_id}"): Case(params=_report_id, prepare=_report),
}
