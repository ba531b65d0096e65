"""Precomputed answer sets: built by the job from the real (encrypted) datasets through the release
gate, stored sealed with no raw subject IDs, recorded with their sources, rebuilt when a source is
updated, and served from the in-process cache that reloads a newer set."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.core.errors import InvalidInput
from authops.core.identity import OrgKind
from authops.core.jobs.models import Job
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest
from authops.platform.catalog.models import Dataset
from authops.platform.governance.models import Product
from authops.platform.products import precompute, serving
from authops.platform.products.models import AnswerSet
from authops.products.runtime import answers as rt
from tests.platform.governance.matrix_products import (ID_A, ID_B, authorize_operator, record_spec, usage_agreement,
                                                       who)
from tests.platform.products.matrix_products_calls import (as_of, build_answers, load_trucks, person_lab_product,
                                                           product, truck_table, truck_verify_spec)
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR, IDS, NAMES, PHONES, person_rows


@pytest.fixture
def orgs(session):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.PROVIDER,
                                                 OrgKind.CUSTOMER)}
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    session.commit()
    return w


def _plain(db_settings, a: AnswerSet) -> bytes:
    return get_object_store(db_settings).get(a.object_key)


def test_the_truck_answer_table_holds_digests_not_vins(session, db_settings, orgs):
    load_trucks(session, db_settings)
    table = truck_table(session, db_settings)
    day = as_of(table)
    p = product(session, partner_id=orgs["partner"].id, operator_id=orgs["operator"].id, spec=truck_verify_spec(),
                policy="verify")
    session.commit()
    a = build_answers(db_settings, p.id, {"as_of": day, "n": 1})
    assert a.version == 1 and a.rows > 0 and a.params == {"as_of": day, "n": 1}
    res_ds = session.exec(select(Dataset).order_by(Dataset.id.desc())).first()
    assert a.sources == {"truck_violations": {"dataset_id": res_ds.id, "version": res_ds.version,
                                              "schema_version": res_ds.schema_version}}
    plain = _plain(db_settings, a)
    answers = pq.read_table(io.BytesIO(plain))
    assert answers.column_names == ["k", "more_than_n_violations"]
    assert answers.schema.field("k").type == pa.binary(rt.KEY_BYTES)
    assert set(answers.column("more_than_n_violations").to_pylist()) <= {"yes", "no"}
    # the number of rows is the number of VINs with a violation in the year (no more, no fewer)
    import datetime as dt

    end = dt.date.fromisoformat(day)
    vins = {v for v, t in zip(table.column("vin").to_pylist(), table.column("violation_time").to_pylist())
            if 0 <= (end - t.astimezone(dt.timezone(dt.timedelta(hours=8))).date()).days <= 364}
    assert answers.num_rows == len(vins)
    # no VIN anywhere in the decrypted table (values, metadata, bytes); none in the sealed object either
    all_vins = pc.unique(table.column("vin")).to_pylist()
    for v in all_vins:
        assert v.encode() not in plain
    backend = get_object_store(db_settings).backend
    sealed = b"".join(backend.read(name) for name in backend.list("") if a.object_key in name)
    assert len(sealed) > len(plain) // 2  # the object and its key record, as stored
    assert all(v.encode() not in sealed for v in all_vins[:50])
    # the digests are keyed: a plain hash of a VIN is not in the table
    import hashlib
    digests = set(answers.column("k").to_pylist())
    some = next(iter(vins))
    assert hashlib.sha256(some.encode()).digest()[:16] not in digests
    assert rt.subject_digest(precompute.serving_key(db_settings, p.code), some) in digests
    ev = session.exec(select(AuditEvent).where(AuditEvent.action == "product.precompute")).one()
    assert ev.rows == a.rows


def test_the_personal_answer_table_holds_no_id_name_or_phone(session, db_settings, orgs):
    p = person_lab_product(session, db_settings, partner=orgs["partner"], provider=orgs["provider"],
                           operator_id=orgs["operator"].id)
    a = build_answers(db_settings, p.id)
    plain = _plain(db_settings, a)
    for secret in [*IDS, *NAMES, *PHONES]:
        assert secret.encode() not in plain
        assert secret.lower().encode() not in plain
    lookup = rt.Lookup(pq.read_table(io.BytesIO(plain)))
    key = precompute.serving_key(db_settings, p.code)
    assert len(lookup) == 4
    assert lookup.get(rt.subject_digest(key, ID_A.lower())) == {"has_paid": "yes"}
    # the serving key is per product: another product's key finds nothing
    assert lookup.get(rt.subject_digest(precompute.serving_key(db_settings, "other_product"), ID_A)) is None


def test_a_source_update_triggers_a_rebuild_that_calls_then_serve(session, db_settings, orgs, client):
    p = person_lab_product(session, db_settings, partner=orgs["partner"], provider=orgs["provider"],
                           operator_id=orgs["operator"].id)
    usage_agreement(session, p, orgs["customer"].id)
    user = make_user(session, orgs["customer"], "customer_integrator")
    p.personal_information = False  # this test is about refreshing, not consent
    session.add(p)
    session.commit()
    first = build_answers(db_settings, p.id)
    assert precompute.stale(session, session.get(Product, p.id)) == []
    assert precompute.refresh_due(db_settings) == []  # nothing changed: nothing queued
    headers = login(client, user.username)
    r = client.post(f"/api/v1/products/{p.code}/calls", json={"subject": ID_B}, headers=headers)
    assert r.json()["answer"] == {"has_paid": "yes"} and r.json()["served_from"]["answer_set"] == 1
    # the department loads a new version of the resource without person B
    from authops.platform.catalog import service

    res = service.get_resource(session, first.sources and next(iter(first.sources)))
    rows = person_rows()
    keep = [i for i, v in enumerate(rows.column("id_number").to_pylist()) if v != ID_B]
    store = get_object_store(db_settings)
    run = ingest.new_run(session, res, path="bulk", mode="replace", actor=ACTOR)
    run = ingest.load(session, store, res, rows.take(keep), run=run, actor=ACTOR)
    assert run.state == "succeeded", run.message
    session.commit()
    session.expire_all()
    assert precompute.stale(session, session.get(Product, p.id)) == [res.code]
    queued = precompute.refresh_due(db_settings)
    assert len(queued) == 1
    assert precompute.refresh_due(db_settings) == []  # already queued: not twice
    job = session.get(Job, queued[0])
    assert job.params["params"] == first.params and "source updated" in job.params["reason"]
    from authops.core.jobs import service as job_service

    assert job_service.run_job(db_settings, queued[0], worker="test") == "succeeded"
    session.expire_all()
    second = precompute.current(session, p.id)
    assert second.version == 2 and second.sources[res.code]["dataset_id"] != first.sources[res.code]["dataset_id"]
    loads = serving.CACHE.loads
    r = client.post(f"/api/v1/products/{p.code}/calls", json={"subject": ID_B}, headers=headers)
    assert r.json()["answer"] == {"has_paid": "no"} and r.json()["served_from"]["answer_set"] == 2
    assert serving.CACHE.loads == loads + 1  # the newer set was loaded once
    client.post(f"/api/v1/products/{p.code}/calls", json={"subject": ID_A}, headers=headers)
    assert serving.CACHE.loads == loads + 1  # and then served from memory
    assert precompute.refresh_due(db_settings) == []


def test_only_verify_and_model_products_are_precomputed(session, db_settings, orgs):
    p = product(session, partner_id=orgs["partner"].id, operator_id=orgs["operator"].id, spec=record_spec("x"),
                policy="record")
    session.commit()
    with pytest.raises(InvalidInput, match="precomputed per-subject answers serve verify and model products"):
        precompute.enqueue(session, p, actor=who(orgs["operator"]))


def test_a_call_before_any_answer_set_is_503_and_not_charged(session, db_settings, orgs, client):
    p = person_lab_product(session, db_settings, partner=orgs["partner"], provider=orgs["provider"],
                           operator_id=orgs["operator"].id)
    p.personal_information = False
    session.add(p)
    usage_agreement(session, p, orgs["customer"].id)
    user = make_user(session, orgs["customer"], "customer_integrator")
    session.commit()
    r = client.post(f"/api/v1/products/{p.code}/calls", json={"subject": ID_A}, headers=login(client, user.username))
    assert r.status_code == 503 and r.json()["error"]["code"] == "product_not_ready"
    from authops.billing.models import UsageRecord

    assert session.exec(select(UsageRecord)).all() == []


def test_the_runtime_lookup_and_shaping_contract():
    from authops.products.runtime import shaping

    meta = rt.AnswerMeta(product="p", version=1, outputs=(
        rt.OutputMeta(name="grade_ok", policy="verify", values=("yes", "no"), absent="no",
                      labels=("reasons",), separators=(";",)),))
    key = b"k" * 32
    table = rt.build_table(meta, [rt.subject_digest(key, "a1"), rt.subject_digest(key, "b2")],
                           {"grade_ok": ["yes", "no"], "grade_ok.reasons": ["TAX;COURT", ""]})
    lookup = rt.Lookup(rt.read_table(rt.table_bytes(table)))
    row = lookup.get(rt.subject_digest(key, " A1 "))
    assert shaping.shape_answer(meta, row) == {"grade_ok": "yes", "reasons": ["TAX", "COURT"]}
    assert shaping.shape_answer(meta, None) == {"grade_ok": "no", "reasons": None}
    with pytest.raises(ValueError, match="share a key"):
        rt.build_table(meta, [rt.subject_digest(key, "a1"), rt.subject_digest(key, "A 1")],
                       {"grade_ok": ["yes", "no"], "grade_ok.reasons": ["", ""]})
