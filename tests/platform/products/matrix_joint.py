"""Route-matrix cases for joint modelling, and the builders its tests share: the bank credit product
registered over the synthetic city's public data, a usage agreement, a bank's labels and a trained model."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform.governance.models import Product
from authops.platform.identity.models import Organisation
from authops.platform.products import joint
from authops.platform.products.joint_synth import labels_csv
from authops.products.catalog import PRODUCTS, SPECS
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import (authorize_operator, give_consent, registered_product,
                                                       usage_agreement, who)
from tests.support.matrix import Case, World

CODE = "bank_credit_assessment"
RESOURCES = set(PRODUCTS[CODE].resources)
PURPOSE = "流动资金贷款贷前审查"


def load_city(session: Session, settings, *, scale: float, seed: int) -> None:
    """The catalogue and the synthetic city's data for the bank credit product's resources."""
    from authops.platform.catalog import csvload, flows, service
    from tests.support.catalog import ACTOR

    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(settings, scale=scale, seed=seed, only=RESOURCES)


def city_tables(*, scale: float, seed: int) -> dict[str, Any]:
    """The same tables the platform loaded (the generator is deterministic), for the test's own use."""
    from authops.platform.catalog.csvload import BUILTIN, load_definitions
    from authops.platform.synth import generate

    return dict(generate(load_definitions(BUILTIN), scale=scale, seed=seed, only=RESOURCES))


def bank_product(session: Session, *, partner_id: int, operator_id: int) -> Product:
    """The bank credit assessment product, registered with its catalogue spec."""
    p = registered_product(session, partner_id=partner_id, operator_id=operator_id, price_fen=800)
    p.code, p.release_policy, p.share_mode = CODE, "model", "query"
    p.spec = parse_text((SPECS / f"{CODE}.yaml").read_text(encoding="utf-8"))
    session.add(p)
    session.flush()
    return p


def enterprise_consent(session: Session, settings, p: Product, customer_id: int, uscc: str):
    c, _ = give_consent(session, settings, p, customer_id, uscc, subject_kind="enterprise", purpose=PURPOSE,
                        scope=["credit_assessment"])
    return c


def upload(session: Session, settings, customer_id: int, data: bytes, name: str = "对公贷款违约模型"):
    m, job = joint.submit(session, settings, principal=who(customer_id), name=name, data=data)
    session.commit()
    return m, job


def run(settings, job_id: int) -> str:
    return job_service.run_job(settings, job_id, worker="test")


def alternating_labels(usccs: list[str], n: int = 300) -> bytes:
    """Labels with no relation to anything (for permission checks, where only the shape matters)."""
    return labels_csv([(u, i % 2) for i, u in enumerate(usccs[:n])])


# --- the matrix ---------------------------------------------------------------------------------------

def _st(w: World) -> dict:
    return w.__dict__.setdefault("_joint", {})


def _settings():
    from authops.core.settings import get_settings

    return get_settings()


def _customer(w: World, org: Organisation) -> Organisation:
    """org when it is a customer, else the customer on org's side (home or away)."""
    if OrgKind(org.kind) == OrgKind.CUSTOMER:
        return org
    return w.away[OrgKind.CUSTOMER] if org.id == w.away[OrgKind(org.kind)].id else w.home[OrgKind.CUSTOMER]


def _base(session, w) -> Product:
    """Built once per world: the city (small), the product, both customers' agreements and models."""
    st = _st(w)
    if "product" not in st:
        settings = _settings()
        load_city(session, settings, scale=0.005, seed=3)
        for side in (w.home, w.away):
            authorize_operator(session, side[OrgKind.OPERATOR].id, side[OrgKind.BUREAU].id)
        p = (session.exec(select(Product).where(Product.code == CODE)).first()  # another area may have made it
             or bank_product(session, partner_id=w.home[OrgKind.PARTNER].id,
                             operator_id=w.home[OrgKind.OPERATOR].id))
        session.commit()
        usccs = city_tables(scale=0.005, seed=3)["enterprise_basic_info"].column("uscc").to_pylist()
        st.update(product=p.id, uscc=usccs[0])
        for side in (w.home, w.away):
            customer = side[OrgKind.CUSTOMER]
            usage_agreement(session, p, customer.id)
            enterprise_consent(session, settings, p, customer.id, usccs[0])
            session.commit()
            m, job = upload(session, settings, customer.id, alternating_labels(usccs))
            assert run(settings, job.id) == "succeeded"
            st[("model", customer.id)] = m.id
        st["labels"] = alternating_labels(usccs)
    return session.get(Product, st["product"])


def _prep(session, w, org):
    _base(session, w)


def _model(w, org):
    return {"model_id": _st(w).get(("model", _customer(w, org).id), 1)}


def _files(w, org):
    return {"file": ("贷款结果.csv", _st(w).get("labels", b"uscc,label\n"), "text/csv")}


def _score_body(w, org):
    return {"subject": _st(w).get("uscc", ""), "purpose": PURPOSE}


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/products/joint-models"): Case(prepare=_prep, files=_files),
    ("GET", "/api/v1/products/joint-models"): Case(prepare=_prep),
    ("GET", "/api/v1/products/joint-models/{model_id}"): Case(params=_model, prepare=_prep),
    ("GET", "/api/v1/products/joint-models/{model_id}/oversight"): Case(params=_model, prepare=_prep,
                                                                        cross_org="product.register"),
    ("POST", "/api/v1/products/joint-models/{model_id}/scores"): Case(params=_model, prepare=_prep,
                                                                      body=_score_body),
}
