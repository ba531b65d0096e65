"""Aggregate reports over the HTTP API: the medical-insurance supervision product answers the
customer's report request with a DP release built by a real sandbox job; asking again shares that
release (the same figures, no further budget); a spent budget answers from the earlier release or,
with none, refuses without charging; only the requesting customer reads its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from authops.billing.models import UsageRecord
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform import synth
from authops.platform.catalog import csvload, flows, service
from authops.platform.governance.models import Product
from authops.platform.products.report_models import ProductReport
from authops.platform.sandbox import workspace as ws_service
from authops.policies import budget
from authops.products.catalog import PRODUCTS
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import authorize_operator, registered_product, usage_agreement
from tests.support import leakscan
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR

CODE = "medical_insurance_spending_supervision"
RESOURCE = "medical_insurance_settlements"
SCALE, SEED = 0.01, 2026


def report_product(session, *, partner_id: int, operator_id: int, ws_id: int, code: str | None = None) -> Product:
    """The catalogue's supervision product, registered, developed in workspace ws_id."""
    p = registered_product(session, partner_id=partner_id, operator_id=operator_id, category="public_governance",
                           price_fen=0, price_unit="batch")
    p.spec = parse_text(Path(PRODUCTS[CODE].spec_path).read_text(encoding="utf-8"))
    p.release_policy, p.share_mode, p.workspace_id = "aggregate", "query", ws_id
    p.code = code or p.code
    session.add(p)
    session.flush()
    return p


@pytest.fixture
def world(session, db_settings):
    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(db_settings, scale=SCALE, seed=SEED, only={RESOURCE})
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["stranger"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    ws = ws_service.create_workspace(session, org_id=w["partner"].id, name="supervision lab", scenario="医保监管",
                                     grants=[{"resource": RESOURCE}], actor=ACTOR)
    budget.set_budget(session, org_id=w["partner"].id, resource_code=RESOURCE, epsilon=5.0, delta=1e-5, actor=ACTOR)
    p = report_product(session, partner_id=w["partner"].id, operator_id=w["operator"].id, ws_id=ws.id, code=CODE)
    for org in (w["customer"], w["stranger"]):
        usage_agreement(session, p, org.id, pricing_method="free", price_fen=0)
    w["product"] = p
    w["user"] = make_user(session, w["customer"], "customer_integrator")
    w["stranger_user"] = make_user(session, w["stranger"], "customer_admin")
    w["nobody"] = make_user(session, make_org(session, OrgKind.CUSTOMER), "customer_admin")
    session.commit()
    return w


def _source(session, settings):
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog.models import Dataset

    res = service.get_resource(session, RESOURCE)
    return read_dataset(get_object_store(settings), session.get(Dataset, res.dataset_id).object_key)


def _run(settings, body: dict) -> None:
    assert body["state"] == "queued", body
    with_job = body["id"]
    from authops.core.db import session_scope

    with session_scope(settings) as s:
        job_id = s.get(ProductReport, with_job).job_id
    assert job_service.run_job(settings, job_id, worker="test") == "succeeded"


def _ask(client, headers, report="institution_billing"):
    return client.post(f"/api/v1/products/{CODE}/reports", headers=headers,
                       json={"report": report, "purpose": "医保基金监管"})


def test_report_is_built_once_shared_and_private(client, session, db_settings, world):
    h, other = login(client, world["user"].username), login(client, world["stranger_user"].username)
    r = _ask(client, h)
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["state"] == "queued" and first["rows"] is None
    _run(db_settings, first)
    done = client.get(f"/api/v1/products/{CODE}/reports/{first['id']}", headers=h).json()
    assert done["state"] == "done" and done["registration_number"] == world["product"].registration_number
    assert done["privacy"]["epsilon"] == 3.0 and done["rows"]
    assert set(done["columns"]) == {"designated_institution_code", "person_months", "visits_sum", "split_visits_sum",
                                    "cost_fen_sum", "split_visit_share", "billing_flag"}
    # the planted abnormal institutions are flagged
    inst = synth.World(SCALE, SEED).institutions
    abnormal = {str(c) for c in np.asarray(inst.code.to_pylist())[inst.abnormal]}
    flagged = {row["designated_institution_code"] for row in done["rows"] if row["billing_flag"] == "anomalous"}
    released = {row["designated_institution_code"] for row in done["rows"]}
    print(f"abnormal {sorted(abnormal)}; released {len(released)}; flagged {sorted(flagged)}")
    assert abnormal & released and abnormal & released <= flagged
    assert min(row["person_months"] for row in done["rows"]) >= 40
    # asking again (the same customer or another) shares the release: the same figures, no new job
    again = _ask(client, h).json()
    assert again["state"] == "done" and again["rows"] == done["rows"] and again["id"] != first["id"]
    theirs = _ask(client, other).json()
    assert theirs["rows"] == done["rows"]
    jobs = {r.job_id for r in session.exec(select(ProductReport))}
    assert len(jobs) == 1
    # only the asker reads its report
    assert client.get(f"/api/v1/products/{CODE}/reports/{first['id']}", headers=other).status_code == 404
    assert client.get(f"/api/v1/products/{CODE}/reports/{theirs['id']}", headers=h).status_code == 404
    # every request metered (a free product: 0 fen) and nothing raw in any answer
    session.expire_all()
    usage = list(session.exec(select(UsageRecord).where(UsageRecord.product_id == world["product"].id)))
    assert len(usage) == 3 and all(u.amount_fen == 0 and u.channel == "report" for u in usage)
    table = _source(session, db_settings)
    for body in (done, again, theirs):
        noisy = tuple({k for row in body["rows"] for k in row if k.endswith("_sum")})  # DP sums: by chance one
        # may equal some source amount, which is no leak (see leakscan)
        assert leakscan.scan(body["rows"], {RESOURCE: table}, csvload.load_definitions(csvload.BUILTIN),
                             public=("designated_institution_code",), exempt_numeric=noisy) == []
        assert not leakscan.scan([{k: v for k, v in body.items() if not isinstance(v, (dict, list))}], {RESOURCE: table},
                                 csvload.load_definitions(csvload.BUILTIN))


def test_refusals_charge_nothing(client, session, db_settings, world):
    h = login(client, world["nobody"].username)
    r = _ask(client, h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    mine = login(client, world["user"].username)
    r = _ask(client, mine, report="persons")
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "report"
    session.expire_all()
    assert not list(session.exec(select(UsageRecord)))
    assert not list(session.exec(select(ProductReport)))


def test_spent_budget_serves_the_earlier_release_or_refuses(client, session, db_settings, world):
    h = login(client, world["user"].username)
    # the budget (epsilon 5) pays for one release (1 + 3); after the data changes, a new one is not affordable
    first = _ask(client, h).json()
    _run(db_settings, first)
    flows.load_synthetic(db_settings, scale=SCALE, seed=SEED + 1, only={RESOURCE})
    r = _ask(client, h)
    assert r.status_code == 202, r.text
    stale = r.json()
    assert stale["state"] == "done" and stale["stale"] is True
    first_rows = client.get(f"/api/v1/products/{CODE}/reports/{first['id']}", headers=h).json()["rows"]
    assert stale["rows"] == first_rows
    # a product with no earlier release and no budget: refused, not charged
    p2 = report_product(session, partner_id=world["partner"].id, operator_id=world["operator"].id,
                        ws_id=world["product"].workspace_id)
    usage_agreement(session, p2, world["customer"].id, pricing_method="free", price_fen=0)
    session.commit()
    before = session.exec(select(UsageRecord)).all()
    r = client.post(f"/api/v1/products/{p2.code}/reports", headers=h, json={"report": "institution_billing"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "budget_exhausted", r.text
    session.expire_all()
    assert len(session.exec(select(UsageRecord)).all()) == len(before)


def test_a_per_subject_product_is_pointed_to_calls(client, session, db_settings, world):
    p = world["product"]
    p.spec = {**p.spec, "outputs": [{"name": "x", "release": {"policy": "model"}}]}
    session.add(p)
    session.commit()
    r = _ask(client, login(client, world["user"].username), report="x")
    assert r.status_code == 422 and "/calls" in r.json()["error"]["message"]
