"""Batched product calls (authops.platform.products.batched): on PostgreSQL, API-key calls this
process has seen admitted are committed by the call writer in batches. They must answer, meter and
audit exactly as the ordinary path does, and every revocation must refuse the next call even
though the process still remembers what admitted the last one (these tests change the database
behind the process's back, as another API process would)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import select

from authops.audit import canonical
from authops.audit.anomaly.models import AccessBlock
from authops.audit.models import AuditEvent
from authops.billing.models import PriceCap, RevenueCounter, UsageRecord
from authops.core.clock import utcnow
from authops.platform.governance import agreements, consent
from authops.platform.products import batched
from tests.platform.governance.matrix_products import ID_A, give_consent, who
from tests.products.test_calls import (UNKNOWN_VIN, _call, personal, trucks,  # noqa: F401 (fixtures)
                                      usage_terms_price)
from tests.support.builders import login, make_user


def _key(client, session, org) -> dict[str, str]:
    """The Authorization header of a new API key with product.call; its id is _key_id(headers)."""
    admin = make_user(session, org, "customer_admin")
    session.commit()
    r = client.post("/api/v1/api-keys", json={"name": "批量核验", "scopes": ["product.call"]},
                    headers=login(client, admin.username))
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def _key_id(session, headers) -> int:
    prefix = headers["Authorization"].removeprefix("Bearer ak_").split("_", 1)[0]
    return session.execute(text("SELECT id FROM api_key WHERE prefix = :p"), {"p": prefix}).scalar_one()


def _usage(session, org_id):
    session.expire_all()
    return list(session.exec(select(UsageRecord).where(UsageRecord.customer_org_id == org_id)))


def _events(session, action=None):
    session.expire_all()
    q = select(AuditEvent).order_by(AuditEvent.seq)
    if action:
        q = q.where(AuditEvent.action == action)
    return list(session.exec(q))


def _postgres(db_settings) -> bool:
    return db_settings.database_url.startswith("postgresql")


class _Writers:
    """The calls and batches the process's writers committed (TestClient's loop has its own)."""

    @property
    def calls(self):
        return sum(w.calls for w in batched.writers())

    @property
    def batches(self):
        return sum(w.batches for w in batched.writers())


def _writer(db_settings):
    return _Writers()


def _parallel(n, fn):
    out = [None] * n
    go = threading.Barrier(n)

    def run(i):
        go.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# The batched path runs on PostgreSQL only: but for the first test (which shows SQLite never batches),
# these tests run there only (their SQLite twins would only repeat tests/products/test_calls.py).
postgres_only = pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def _forget():
    batched.CACHES.clear()
    yield
    batched.CACHES.clear()


def test_repeat_key_calls_are_batched_answered_metered_and_audited_as_the_ordinary_path(
        client, session, db_settings, trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    first = _call(client, headers, code, {"subject": trucks["busy"]})  # the ordinary path: the process learns
    assert first.status_code == 200, first.text
    if not _postgres(db_settings):  # the embedded default: every call takes the ordinary path
        again = _call(client, headers, code, {"subject": trucks["busy"]})
        assert again.status_code == 200 and again.json()["answer"] == first.json()["answer"]
        assert sum(w.calls for w in batched.writers()) == 0
        return
    w = _writer(db_settings)
    before = w.calls
    subjects = [trucks["busy"], trucks["quiet"], UNKNOWN_VIN] * 8
    got = _parallel(len(subjects), lambda i: _call(client, headers, code, {"subject": subjects[i]}))
    assert [r.status_code for r in got] == [200] * len(subjects), [r.text for r in got if r.status_code != 200]
    assert w.calls - before == len(subjects)  # every one committed by the writer, none by the ordinary path
    assert w.batches >= 1
    want = {trucks["busy"]: "yes", trucks["quiet"]: "no", UNKNOWN_VIN: "no"}
    for s, r in zip(subjects, got):
        body = r.json()
        assert body["answer"] == {"more_than_n_violations": want[s]}
        assert set(body) == set(first.json()) and body["replayed"] is False
        assert body["registration_number"] == trucks["verify"].registration_number
        assert body["metered"] == first.json()["metered"] == {"units": 1, "amount_fen": 100}
    rows = _usage(session, trucks["customer"].id)
    assert len(rows) == 1 + len(subjects) and {r.amount_fen for r in rows} == {100}
    by_id = {r.request_id: r for r in rows}
    for r in got:  # the stored response (what a replay returns) is the response given
        assert by_id[r.json()["request_id"]].response == {k: v for k, v in r.json().items() if k != "replayed"}
    calls = _events(session, "product.call")
    assert sorted(json.loads(e.canonical)["details"]["request_id"] for e in calls) == sorted(by_id)
    assert all(e.actor_kind == "key" and e.actor_id == _key_id(session, headers) for e in calls)
    assert not any(s in e.canonical.decode() for e in calls for s in (trucks["busy"], trucks["quiet"]))
    prev = canonical.GENESIS  # one unbroken chain
    for e in _events(session):
        assert e.prev_hash == prev and canonical.chain_hash(e.canonical) == e.hash
        prev = e.hash


@postgres_only
def test_a_revoked_key_is_refused_on_its_next_call(client, session, db_settings, trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    assert [_call(client, headers, code, {"subject": trucks["busy"]}).status_code for _ in range(3)] == [200] * 3
    # revoked in the database, as another process would: this process still remembers the key
    session.execute(text("UPDATE api_key SET revoked_at = :t WHERE id = :i"), {"t": utcnow(), "i": _key_id(session, headers)})
    session.commit()
    r = _call(client, headers, code, {"subject": trucks["busy"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"
    assert len(_usage(session, trucks["customer"].id)) == 3
    assert _events(session, "auth.rejected")


@postgres_only
def test_a_block_a_terminated_agreement_and_a_withdrawn_product_refuse_the_next_call(client, session, db_settings,
                                                                                     trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    ok = lambda: _call(client, headers, code, {"subject": trucks["busy"]})  # noqa: E731
    assert [ok().status_code for _ in range(2)] == [200, 200]
    session.add(AccessBlock(subject_type="api_key", subject_id=str(_key_id(session, headers)), mode="block", reason="test"))
    session.commit()
    r = ok()
    assert r.status_code == 403 and r.json()["error"]["code"] == "access_blocked"
    session.execute(text("UPDATE access_block SET active = false"))
    session.commit()
    assert [ok().status_code for _ in range(2)] == [200, 200]
    a = agreements.get_active(session, "usage", party_b=trucks["customer"].id, product_id=trucks["verify"].id)
    agreements.terminate(session, a, who(trucks["operator"]), reason="合同解除")
    session.commit()
    r = ok()
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    assert len(_usage(session, trucks["customer"].id)) == 4
    score = trucks["score"].code
    assert [_call(client, headers, score, {"subject": trucks["busy"]}).status_code for _ in range(2)] == [200, 200]
    session.execute(text("UPDATE gov_product SET state = 'withdrawn' WHERE id = :i"), {"i": trucks["score"].id})
    session.commit()
    r = _call(client, headers, score, {"subject": trucks["busy"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "product_not_registered"
    assert len(_usage(session, trucks["customer"].id)) == 6


@postgres_only
def test_a_withdrawn_consent_refuses_the_next_call(client, session, db_settings, personal):
    headers = _key(client, session, personal["customer"])
    code = personal["product"].code
    c, _ = give_consent(session, db_settings, personal["product"], personal["customer"].id, ID_A)
    session.commit()
    body = {"subject": ID_A, "purpose": "贷前核验"}
    got = [_call(client, headers, code, body) for _ in range(3)]
    assert [r.status_code for r in got] == [200] * 3 and all(r.json()["answer"] == {"has_paid": "yes"} for r in got)
    # the same subject under a purpose the consent does not cover is still refused
    r = _call(client, headers, code, {"subject": ID_A, "purpose": "营销"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    consent.revoke_by_customer(session, c, actor=who(personal["customer"]), reason="客户撤回")
    session.commit()
    r = _call(client, headers, code, body)
    assert r.status_code == 403 and "revoked" in r.json()["error"]["message"]
    assert len(_usage(session, personal["customer"].id)) == 3


@postgres_only
def test_a_new_price_cap_is_charged_from_the_next_call(client, session, db_settings, trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["score"].code
    price = usage_terms_price(session, trucks)
    assert [_call(client, headers, code, {"subject": trucks["busy"]}).json()["metered"]["amount_fen"]
            for _ in range(2)] == [price, price]
    session.add(PriceCap(product_id=trucks["score"].id, unit="per_call", cap_fen=price // 2, set_by_org_id=trucks["bureau"].id,
                         effective_from=utcnow() - timedelta(seconds=1)))
    session.commit()
    r = _call(client, headers, code, {"subject": trucks["busy"]})
    assert r.status_code == 200 and r.json()["metered"]["amount_fen"] == price // 2
    assert sorted(u.amount_fen for u in _usage(session, trucks["customer"].id)) == [price // 2, price, price]


@postgres_only
def test_an_idempotent_retry_is_replayed_and_charged_once(client, session, db_settings, trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    assert _call(client, headers, code, {"subject": trucks["quiet"]}).status_code == 200
    first = _call(client, headers, code, {"subject": trucks["busy"]}, key="po-7")
    again = _call(client, headers, code, {"subject": trucks["busy"]}, key="po-7")
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["request_id"] == first.json()["request_id"]
    other = _call(client, headers, code, {"subject": trucks["quiet"]}, key="po-7")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    # the same key sent by 6 concurrent retries: one charge, every answer the same call
    got = _parallel(6, lambda i: _call(client, headers, code, {"subject": trucks["busy"]}, key="po-8"))
    assert [r.status_code for r in got] == [200] * 6
    assert len({r.json()["request_id"] for r in got}) == 1
    assert len(_usage(session, trucks["customer"].id)) == 3


@postgres_only
def test_concurrent_calls_stop_exactly_at_the_revenue_ceiling(client, session, db_settings, trucks):
    from authops.billing import prices as rules
    from authops.platform.billing import pricing
    from authops.core.identity import OrgKind
    from tests.support.builders import make_org

    headers = _key(client, session, trucks["customer"])
    code = trucks["score"].code
    price = usage_terms_price(session, trucks)
    drc = make_org(session, OrgKind.SUPERVISOR)
    session.commit()
    pricing.set_max_revenue(session, operator_org_id=trucks["operator"].id, year=rules.year_of(),
                            amount_fen=price * 12, drc_org_id=drc.id, actor=who(trucks["bureau"].id))
    session.commit()
    assert _call(client, headers, code, {"subject": trucks["busy"]}).status_code == 200
    got = _parallel(20, lambda i: _call(client, headers, code, {"subject": trucks["busy"]}))
    codes = sorted(r.status_code for r in got)
    assert codes == [200] * 11 + [403] * 9, [r.text for r in got]
    assert {r.json()["error"]["code"] for r in got if r.status_code == 403} == {"revenue_ceiling_reached"}
    assert sum(u.amount_fen for u in _usage(session, trucks["customer"].id)) == price * 12
    counter = session.exec(select(RevenueCounter).where(RevenueCounter.operator_org_id == trucks["operator"].id)).one()
    assert counter.revenue_fen == price * 12
    assert len(_events(session, "product.call")) == 12 and len(_events(session, "billing.revenue.refused")) == 9
    assert {json.loads(e.canonical)["details"]["threshold_pct"]
            for e in _events(session, "billing.revenue.warning")} == {80, 95}


@postgres_only
def test_a_subject_without_consent_is_refused_and_a_new_consent_admits_it_at_once(client, session, db_settings,
                                                                                   personal):
    """Consent is looked up in each batch, never cached: a subject without one is refused, and a consent
    granted a moment later admits the next call, on the batched path."""
    from tests.platform.governance.matrix_products import ID_B

    headers = _key(client, session, personal["customer"])
    code = personal["product"].code
    give_consent(session, db_settings, personal["product"], personal["customer"].id, ID_A)
    session.commit()
    assert _call(client, headers, code, {"subject": ID_A, "purpose": "贷前核验"}).status_code == 200  # learns
    w = _writer(db_settings)
    before = w.calls
    r = _call(client, headers, code, {"subject": ID_B, "purpose": "贷前核验"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    give_consent(session, db_settings, personal["product"], personal["customer"].id, ID_B)
    session.commit()
    r = _call(client, headers, code, {"subject": ID_B, "purpose": "贷前核验"})
    assert r.status_code == 200 and set(r.json()["answer"]) == {"has_paid"}
    if _postgres(db_settings):
        assert w.calls - before == 1  # answered by the writer, with no new learning
        ev = _events(session, "product.call")[-1]
        assert json.loads(ev.canonical)["details"]["consent_id"] is not None
    assert ID_B not in r.text and len(_usage(session, personal["customer"].id)) == 2


@postgres_only
def test_bodies_the_batched_path_does_not_take_get_the_routes_answer(client, session, db_settings, trucks):
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    assert _call(client, headers, code, {"subject": trucks["busy"]}).status_code == 200
    h = headers
    r = client.post(f"/api/v1/products/{code}/calls", json={"purpose": "x"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"].endswith("subject")
    r = client.post(f"/api/v1/products/{code}/calls", content=b"{not json", headers={**h, "Content-Type":
                                                                                       "application/json"})
    assert r.status_code == 422
    r = client.post(f"/api/v1/products/{code}/calls", json={"subject": trucks["busy"], "pad": "x" * 40_000},
                    headers=h)  # larger than the batched path reads: the route answers it (extra fields ignored)
    assert r.status_code == 200 and r.json()["answer"] == {"more_than_n_violations": "yes"}
    r = _call(client, headers, code, {"subject": trucks["busy"]}, key="bad key with spaces")
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "Idempotency-Key"
    assert len(_usage(session, trucks["customer"].id)) == 2


@postgres_only
def test_the_rate_limit_refuses_on_the_batched_path_with_retry_after_and_counts_once(session, db_settings, trucks):
    from fastapi.testclient import TestClient

    from authops.app import create_app

    app = create_app(db_settings.model_copy(update={"rate_limit_url": "memory", "rate_limit_call_per_key": 4}))
    with TestClient(app) as client:
        headers = _key(client, session, trucks["customer"])
        code = trucks["verify"].code
        got = [_call(client, headers, code, {"subject": trucks["busy"]}) for _ in range(6)]
    assert [r.status_code for r in got] == [200] * 4 + [429] * 2
    assert got[4].json()["error"]["code"] == "rate_limited" and int(got[4].headers["Retry-After"]) >= 1
    assert len(_usage(session, trucks["customer"].id)) == 4


@postgres_only
def test_a_batch_that_fails_in_the_database_is_answered_by_the_ordinary_path(client, session, db_settings, trucks):
    """The writer's connection is killed between two calls (as a database restart would): the next
    batch fails, its call is answered the ordinary way, charged once, and the writer reconnects."""
    headers = _key(client, session, trucks["customer"])
    code = trucks["verify"].code
    assert [_call(client, headers, code, {"subject": trucks["busy"]}).status_code for _ in range(4)] == [200] * 4
    [w] = [w for w in batched.writers() if w._conn is not None]
    killed = session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": w._conn.info.backend_pid}).scalar()
    session.commit()
    assert killed
    back = w.handed_back
    r = _call(client, headers, code, {"subject": trucks["quiet"]})
    assert r.status_code == 200 and r.json()["answer"] == {"more_than_n_violations": "no"}
    assert w.handed_back == back + 1
    calls = w.calls
    assert [_call(client, headers, code, {"subject": trucks["busy"]}).status_code for _ in range(2)] == [200, 200]
    assert w.calls == calls + 2 and w.handed_back == back + 1  # reconnected
    assert len(_usage(session, trucks["customer"].id)) == 7  # every call answered and charged once
