"""Batch delivery: a customer's CSV answered by a job, consent checked per subject (refused subjects
marked, never dropped), a result only that customer can download until it expires, metered per
answered row."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from sqlmodel import select

from authops.billing.models import UsageRecord
from authops.core.clock import travelled
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.core.storage.store import get_object_store
from authops.platform.products import batch
from authops.platform.products.models import ProductBatch
from tests.platform.governance.matrix_products import ID_A, ID_B, authorize_operator, give_consent, usage_agreement
from tests.platform.products.matrix_products_calls import build_answers, person_lab_product
from tests.support.builders import login, make_org, make_user


@pytest.fixture
def world(session, db_settings):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.PROVIDER,
                                                 OrgKind.CUSTOMER)}
    w["stranger"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    p = person_lab_product(session, db_settings, partner=w["partner"], provider=w["provider"],
                           operator_id=w["operator"].id)
    w["product"] = p
    usage_agreement(session, p, w["customer"].id, price_fen=30)
    usage_agreement(session, p, w["stranger"].id)
    session.commit()
    build_answers(db_settings, p.id)
    w["user"] = make_user(session, w["customer"], "customer_integrator")
    w["stranger_user"] = make_user(session, w["stranger"], "customer_integrator")
    session.commit()
    return w


UNKNOWN = "320505199203082240"[:-1] + "X"


def _upload(client, headers, code, text: str, purpose: str | None = None):
    data = {"purpose": purpose} if purpose else None
    return client.post(f"/api/v1/products/{code}/batches", headers=headers, data=data,
                       files={"file": ("subjects.csv", text.encode("utf-8"), "text/csv")})


def _rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_a_batch_answers_each_subject_and_marks_refusals(client, session, db_settings, world):
    p = world["product"]
    give_consent(session, db_settings, p, world["customer"].id, ID_A)
    session.commit()
    headers = login(client, world["user"].username)
    text = f"subject,has_paid\n{ID_A},yes\n{ID_B},\n {ID_A.lower()} ,no\n"
    r = _upload(client, headers, p.code, text, purpose="贷前核验")
    assert r.status_code == 202, r.text
    b = r.json()
    assert b["state"] == "queued" and b["subjects"] == 3
    # not ready yet
    r = client.get(f"/api/v1/products/{p.code}/batches/{b['id']}/result", headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
    assert job_service.run_job(db_settings, b["job_id"], worker="test") == "succeeded"
    view = client.get(f"/api/v1/products/{p.code}/batches/{b['id']}", headers=headers).json()
    assert view["state"] == "done" and (view["answered"], view["refused"]) == (2, 1)
    assert view["amount_fen"] == 60  # 2 answered rows at 30 fen per call
    r = client.get(f"/api/v1/products/{p.code}/batches/{b['id']}/result", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = _rows(r.content)
    assert [x["row"] for x in rows] == ["2", "3", "4"]  # every line, in order, none dropped
    assert [x["status"] for x in rows] == ["answered", "refused", "answered"]
    assert rows[1]["refusal"] == "no_consent" and rows[1]["answer"] == ""
    assert json.loads(rows[0]["answer"]) == {"has_paid": {"claimed": "yes", "verified": True}}
    assert json.loads(rows[2]["answer"]) == {"has_paid": {"claimed": "no", "verified": False}}
    usage = session.exec(select(UsageRecord).where(UsageRecord.customer_org_id == world["customer"].id)).all()
    assert len(usage) == 1 and usage[0].units == 2 and usage[0].amount_fen == 60 and usage[0].channel == "batch"
    # the stored result is sealed: the raw object holds no ID
    backend = get_object_store(db_settings).backend
    stored = session.get(ProductBatch, b["id"]).result_object_key
    raw = b"".join(backend.read(n) for n in backend.list("") if stored in n)
    assert raw and ID_A.encode() not in raw


def test_only_the_customer_reads_its_result_and_it_expires(client, session, db_settings, world):
    p = world["product"]
    p.personal_information = False
    session.add(p)
    session.commit()
    admin = make_user(session, world["customer"], "customer_admin")
    session.commit()
    made = client.post("/api/v1/api-keys", json={"name": "批量核验", "scopes": ["product.call"], "ttl_days": 30},
                       headers=login(client, admin.username))
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['key']}"}  # a key outlives the week the result is kept
    r = _upload(client, headers, p.code, f"subject\n{ID_A}\n{UNKNOWN}\n")
    b = r.json()
    assert job_service.run_job(db_settings, b["job_id"], worker="test") == "succeeded"
    url = f"/api/v1/products/{p.code}/batches/{b['id']}"
    stranger = login(client, world["stranger_user"].username)
    assert client.get(url, headers=stranger).status_code == 404
    assert client.get(url + "/result", headers=stranger).status_code == 404
    rows = _rows(client.get(url + "/result", headers=headers).content)
    assert [json.loads(x["answer"]) for x in rows] == [{"has_paid": "yes"}, {"has_paid": "no"}]
    with travelled(timedelta(days=batch.RESULT_DAYS, minutes=1)):
        r = client.get(url + "/result", headers=headers)
        assert r.status_code == 410 and r.json()["error"]["code"] == "expired"
        assert client.get(url, headers=headers).json()["state"] == "expired"
        assert batch.sweep_expired(db_settings) == 1
    session.expire_all()
    row = session.get(ProductBatch, b["id"])
    assert row.state == "expired" and row.result_object_key is None
    assert client.get(url + "/result", headers=headers).status_code == 410


def test_a_bad_upload_is_refused_whole_naming_the_line(client, session, world):
    p = world["product"]
    headers = login(client, world["user"].username)
    r = _upload(client, headers, p.code, "id\n" + ID_A + "\n")
    assert r.status_code == 422 and "'subject' column" in r.json()["error"]["message"]
    r = _upload(client, headers, p.code, "subject,name\n" + ID_A + ",张三\n")
    assert r.status_code == 422 and "column 'name'" in r.json()["error"]["message"]
    r = _upload(client, headers, p.code, f"subject,has_paid\n{ID_A},yes\n{ID_B},perhaps\n")
    assert r.status_code == 422 and "line 3" in r.json()["error"]["message"]
    assert session.exec(select(ProductBatch)).all() == []


def test_without_an_agreement_a_batch_is_refused(client, session, world):
    other = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, other, "customer_integrator")
    session.commit()
    r = _upload(client, login(client, user.username), world["product"].code, f"subject\n{ID_A}\n")
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"


def test_a_retried_upload_with_its_idempotency_key_is_the_same_batch_charged_once(client, session, db_settings,
                                                                                  world):
    p = world["product"]
    give_consent(session, db_settings, p, world["customer"].id, ID_A)
    session.commit()
    headers = login(client, world["user"].username)
    text = f"subject\n{ID_A}\n"

    def upload(key, body=text, purpose="贷前核验", who=headers):
        return client.post(f"/api/v1/products/{p.code}/batches", headers={**who, "Idempotency-Key": key},
                           data={"purpose": purpose}, files={"file": ("subjects.csv", body.encode(), "text/csv")})

    first = upload("retry-1")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = upload("retry-1")  # the client did not see the answer and sends the same upload again
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["job_id"] == first.json()["job_id"]
    for other in ({"body": f"subject\n{ID_B}\n"}, {"purpose": "营销"}):  # the key, reused for another request
        r = upload("retry-1", **other)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
        assert r.json()["error"]["details"]["batch_id"] == first.json()["id"]
    # another customer's key of the same name is its own
    stranger = login(client, world["stranger_user"].username)
    assert upload("retry-1", who=stranger).json()["id"] != first.json()["id"]
    assert upload("retry-2").json()["id"] != first.json()["id"]  # a new key is a new batch
    mine = session.exec(select(ProductBatch).where(ProductBatch.customer_org_id == world["customer"].id)).all()
    assert len(mine) == 2
    assert job_service.run_job(db_settings, first.json()["job_id"], worker="test") == "succeeded"
    usage = session.exec(select(UsageRecord).where(UsageRecord.customer_org_id == world["customer"].id)).all()
    assert [u.amount_fen for u in usage] == [30]  # the first batch, charged once


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_two_uploads_at_once_under_one_key_make_one_batch(session, db_settings, world):
    import threading

    from sqlmodel import Session

    from authops.core.db import get_engine
    from authops.core.settings import Settings
    from tests.platform.governance.matrix_products import who

    p = world["product"]
    give_consent(session, db_settings, p, world["customer"].id, ID_A)
    session.commit()
    start, ids, errors = threading.Barrier(4), [], []

    def submit() -> None:
        try:
            with Session(get_engine(db_settings)) as s:
                start.wait()
                b, _ = batch.submit(s, Settings(**db_settings.model_dump()), principal=who(world["customer"].id),
                                    code=p.code, data=f"subject\n{ID_A}\n".encode(), purpose="贷前核验",
                                    idempotency_key="same-key")
                s.commit()
                ids.append(b.id)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(ids) == 4 and len(set(ids)) == 1
    assert len(session.exec(select(ProductBatch).where(ProductBatch.idempotency_key == "same-key")).all()) == 1
