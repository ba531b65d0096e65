"""Route-matrix cases for product calls and batch delivery, and the builders the product-serving
tests share: the synthetic truck data, a verify product from the example spec, a score product
(model release per VIN), usage agreements and built answer sets."""

from __future__ import annotations

from itertools import count
from typing import Any

import pyarrow.compute as pc
from sqlmodel import Session

from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform.governance.models import Product
from authops.platform.identity.models import Organisation
from authops.platform.products import precompute
from authops.platform.products.models import AnswerSet
from authops.sandbox.spec import EXAMPLES
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import (authorize_operator, registered_product, usage_agreement,
                                                       verify_spec)
from tests.support.matrix import Case, World

_n = count(1)
TRUCKS = "truck_violations"


def truck_verify_spec() -> dict[str, Any]:
    return parse_text((EXAMPLES / "truck_violation_verify.yaml").read_text(encoding="utf-8"))


def truck_score_spec() -> dict[str, Any]:
    """A score product: violations in the year up to :as_of, times 10, clamped to 0-100, per VIN."""
    return {"spec_version": 1, "name": "truck_violation_score",
            "params": {"as_of": {"type": "date"}},
            "inputs": [{"resource": TRUCKS, "version": 1, "fields": ["vin", "violation_time"]}],
            "steps": [{"filter": "date_diff_days(:as_of, violation_time) between 0 and 364"},
                      {"summarize": {"by": ["vin"], "aggregates": [{"name": "violations", "fn": "count"}]}},
                      {"derive": {"name": "risk", "expr": "violations * 10"}}],
            "outputs": [{"name": "risk_score", "release": {"policy": "model", "key": "vin", "score": "risk",
                                                          "bounds": [0, 100]}}]}


def load_trucks(session: Session, settings) -> None:
    from authops.platform.catalog import csvload, flows, service
    from tests.support.catalog import ACTOR

    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(settings, scale=0.01, seed=5, only={TRUCKS})


def truck_table(session: Session, settings):
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog import service
    from authops.platform.catalog.models import Dataset

    res = service.get_resource(session, TRUCKS)
    return read_dataset(get_object_store(settings), session.get(Dataset, res.dataset_id).object_key)


def as_of(table) -> str:
    return str(pc.max(table.column("violation_time")).as_py().date())


def product(session: Session, *, partner_id: int, operator_id: int, spec: dict, policy: str,
            personal: bool = False, price_fen: int = 200) -> Product:
    p = registered_product(session, partner_id=partner_id, operator_id=operator_id, personal=personal,
                           price_fen=price_fen)
    p.spec, p.release_policy, p.share_mode = spec, policy, "verify" if policy == "verify" else "query"
    session.add(p)
    session.flush()
    return p


def build_answers(settings, product_id: int, params: dict[str, Any] | None = None) -> AnswerSet:
    """Enqueue and run the precompute job through the real job machinery."""
    from authops.core.db import session_scope

    with session_scope(settings) as s:
        job = precompute.enqueue(s, s.get(Product, product_id), params=params)
        job_id = job.id
    outcome = job_service.run_job(settings, job_id, worker="test")
    with session_scope(settings) as s:
        job = job_service.get_job(s, job_id)
        assert outcome == "succeeded", (job.error_code, job.error_message)
        a = precompute.current(s, product_id)
        s.expunge(a)
        return a


def person_lab_product(session: Session, settings, *, partner: Organisation, provider: Organisation,
                       operator_id: int) -> Product:
    """A personal-information verify product (has the person paid?) over the governance test lab."""
    from tests.platform.governance.matrix_products import lab

    l = lab(session, settings, partner, provider)
    p = product(session, partner_id=partner.id, operator_id=operator_id, spec=verify_spec(l["code"]),
                policy="verify", personal=True)
    p.workspace_id = l["ws"]
    session.add(p)
    session.commit()
    return p


# --- the matrix ---------------------------------------------------------------------------------------

def _st(w: World) -> dict:
    return w.__dict__.setdefault("_products_calls", {})


def _settings():
    from authops.core.settings import get_settings

    return get_settings()


def _served(session, w) -> Product:
    """One served product (the personal lab's, sold by the home operator), built once per world."""
    st = _st(w)
    if "product" not in st:
        for side in (w.home, w.away):
            authorize_operator(session, side[OrgKind.OPERATOR].id, side[OrgKind.BUREAU].id)
        p = product(session, partner_id=w.home[OrgKind.PARTNER].id, operator_id=w.home[OrgKind.OPERATOR].id,
                    spec={}, policy="verify")
        from tests.platform.governance.matrix_products import lab

        l = lab(session, _settings(), w.home[OrgKind.PARTNER], w.home[OrgKind.PROVIDER])
        p.spec, p.workspace_id = verify_spec(l["code"]), l["ws"]
        session.add(p)
        session.commit()
        build_answers(_settings(), p.id)
        st["product"] = p.id
        st["code"] = p.code
    return session.get(Product, st["product"])


def _prep_call(session, w, org):
    p = _served(session, w)
    if OrgKind(org.kind) == OrgKind.CUSTOMER and ("usage", org.id) not in _st(w):
        _st(w)[("usage", org.id)] = usage_agreement(session, p, org.id).id
        session.commit()


def _code(w, org):
    return {"code": _st(w).get("code", "none")}


def _customer(w, org) -> Organisation:
    return org if OrgKind(org.kind) == OrgKind.CUSTOMER else w.home[OrgKind.CUSTOMER]


def _prep_batch(session, w, org):
    """A delivered batch of org (a customer; for the other roles, the home customer's)."""
    from authops.audit import log as audit_log
    from authops.platform.products import batch

    p = _served(session, w)
    st = _st(w)
    customer = _customer(w, org)
    if ("usage", customer.id) not in st:
        st[("usage", customer.id)] = usage_agreement(session, p, customer.id).id
        session.commit()
    if ("batch", customer.id) not in st:
        b, job = batch.submit(session, _settings(), code=p.code, data=b"subject\n11010519491231002X\n",
                              principal=audit_log.Actor(kind="user", id=1, name="t", org_id=customer.id))
        session.commit()
        job_service.run_job(_settings(), job.id, worker="matrix")
        st[("batch", customer.id)] = b.id


def _batch_id(w, org):
    return {"code": _st(w).get("code", "none"), "batch_id": _st(w).get(("batch", _customer(w, org).id), 1)}


def _batch_files(w, org):
    return {"file": ("subjects.csv", b"subject\n11010519491231002X\n32050219880715001X\n", "text/csv")}


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/v1/products/{code}/calls"): Case(
        params=_code, prepare=_prep_call, body=lambda w, org: {"subject": "11010519491231002X"},
        cross_org="product.call"),  # a registered product is public: its code is no foreign object
    ("POST", "/api/v1/products/{code}/batches"): Case(
        params=_code, prepare=_prep_call, files=_batch_files, cross_org="product.call"),
    ("GET", "/api/v1/products/{code}/batches/{batch_id}"): Case(params=_batch_id, prepare=_prep_batch),
    ("GET", "/api/v1/products/{code}/batches/{batch_id}/result"): Case(params=_batch_id, prepare=_prep_batch),
}
