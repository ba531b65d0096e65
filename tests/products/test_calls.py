"""Synchronous product calls over the HTTP API: answers from the precomputed answer set, the guard
(agreement, consent, registration), metering once per call, Idempotency-Key replays and conflicts,
and the audit trail naming subjects only by pseudonym."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.billing.models import UsageRecord
from authops.core.identity import OrgKind
from authops.platform.governance import agreements, consent
from tests.platform.governance.matrix_products import ID_A, ID_B, authorize_operator, give_consent, usage_agreement, who
from tests.platform.products.matrix_products_calls import (as_of, build_answers, load_trucks, person_lab_product,
                                                           product, truck_score_spec, truck_table, truck_verify_spec)
from tests.support.builders import login, make_org, make_user

UNKNOWN_VIN = "LSVAM4187C2184847"


@pytest.fixture
def trucks(session, db_settings):
    load_trucks(session, db_settings)
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["stranger"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    table = truck_table(session, db_settings)
    day = as_of(table)
    w["verify"] = product(session, partner_id=w["partner"].id, operator_id=w["operator"].id,
                          spec=truck_verify_spec(), policy="verify")
    w["score"] = product(session, partner_id=w["partner"].id, operator_id=w["operator"].id,
                         spec=truck_score_spec(), policy="model")
    for p in (w["verify"], w["score"]):
        usage_agreement(session, p, w["customer"].id)
    session.commit()
    build_answers(db_settings, w["verify"].id, {"as_of": day, "n": 1})
    build_answers(db_settings, w["score"].id, {"as_of": day})
    # the reference answers, computed here from the raw data (the test may see it; a response may not)
    counts = _counts(table, day)
    w["counts"] = counts
    w["busy"] = next(v for v, c in counts.items() if c > 1)
    w["quiet"] = next(v for v, c in counts.items() if c == 1)
    user = make_user(session, w["customer"], "customer_integrator")
    w["stranger_user"] = make_user(session, w["stranger"], "customer_admin")
    session.commit()
    w["user"] = user
    return w


def _counts(table, day: str) -> dict[str, int]:
    import datetime as dt
    from zoneinfo import ZoneInfo

    end = dt.date.fromisoformat(day)
    out: dict[str, int] = {}
    tz = ZoneInfo("Asia/Shanghai")
    for vin, t in zip(table.column("vin").to_pylist(), table.column("violation_time").to_pylist()):
        d = t.astimezone(tz).date() if t.tzinfo else t.replace(tzinfo=dt.timezone.utc).astimezone(tz).date()
        if 0 <= (end - d).days <= 364:
            out[vin] = out.get(vin, 0) + 1
    return out


def _call(client, headers, code, body, key=None):
    h = dict(headers)
    if key is not None:
        h["Idempotency-Key"] = key
    return client.post(f"/api/v1/products/{code}/calls", json=body, headers=h)


def _usage(session, org_id):
    session.expire_all()
    return list(session.exec(select(UsageRecord).where(UsageRecord.customer_org_id == org_id)))


def _text(e) -> str:
    return e.canonical.decode() if isinstance(e.canonical, bytes) else e.canonical


def _events(session, action):
    session.expire_all()
    return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def test_a_verify_call_answers_from_the_answer_set_and_is_metered_once(client, session, db_settings, trucks):
    headers = login(client, trucks["user"].username)
    code = trucks["verify"].code
    r = _call(client, headers, code, {"subject": trucks["busy"].lower()})  # case and spaces do not matter
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == {"more_than_n_violations": "yes"}
    assert body["registration_number"] == trucks["verify"].registration_number and body["product"] == code
    assert body["request_id"].startswith("req_") and body["served_from"]["answer_set"] == 1
    assert _call(client, headers, code, {"subject": trucks["quiet"]}).json()["answer"] == {"more_than_n_violations": "no"}
    # a VIN with no violation at all answers exactly like a quiet one: absence is not revealed
    unknown = _call(client, headers, code, {"subject": UNKNOWN_VIN}).json()
    assert unknown["answer"] == {"more_than_n_violations": "no"}
    # claims compare with the stored answer
    claimed = _call(client, headers, code, {"subject": trucks["busy"],
                                            "claims": {"more_than_n_violations": "no"}}).json()
    assert claimed["answer"] == {"more_than_n_violations": {"claimed": "no", "verified": False}}
    bad = _call(client, headers, code, {"subject": trucks["busy"], "claims": {"more_than_n_violations": "maybe"}})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "claims.more_than_n_violations"
    rows = _usage(session, trucks["customer"].id)
    assert len(rows) == 4 and {r.amount_fen for r in rows} == {100} and {r.units for r in rows} == {1}
    assert {r.request_id for r in rows} >= {body["request_id"], unknown["request_id"]}
    events = _events(session, "product.call")
    assert len(events) == 4
    key = consent.subject_key(db_settings, trucks["busy"])
    assert json.loads(events[0].canonical)["details"]["subject_key"] == key
    assert not any(trucks["busy"] in _text(e) or trucks["busy"].lower() in _text(e) for e in events)


def test_a_score_call_returns_the_stored_score_or_not_found(client, session, trucks):
    headers = login(client, trucks["user"].username)
    code = trucks["score"].code
    busy, quiet = trucks["busy"], trucks["quiet"]
    a = _call(client, headers, code, {"subject": busy}).json()["answer"]
    assert a == {"status": "found", "risk_score": float(min(100, 10 * trucks["counts"][busy]))}
    assert _call(client, headers, code, {"subject": quiet}).json()["answer"]["risk_score"] == 10.0
    assert _call(client, headers, code, {"subject": UNKNOWN_VIN}).json()["answer"] == {"status": "not_found"}
    r = _call(client, headers, code, {"subject": busy, "claims": {"risk_score": "1"}})
    assert r.status_code == 422 and "takes no claims" in r.json()["error"]["message"]


def test_an_idempotent_replay_returns_the_same_response_and_charges_once(client, session, trucks):
    headers = login(client, trucks["user"].username)
    code = trucks["verify"].code
    body = {"subject": trucks["busy"], "purpose": "承保核验"}
    first = _call(client, headers, code, body, key="order-42")
    again = _call(client, headers, code, {"purpose": "承保核验", "subject": trucks["busy"]}, key="order-42")
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["replayed"] is True and first.json()["replayed"] is False
    assert {k: v for k, v in again.json().items() if k != "replayed"} == {
        k: v for k, v in first.json().items() if k != "replayed"}
    assert len(_usage(session, trucks["customer"].id)) == 1
    # the same key with another body: 409 naming the key, nothing charged
    other = _call(client, headers, code, {"subject": trucks["quiet"]}, key="order-42")
    assert other.status_code == 409, other.text
    err = other.json()["error"]
    assert err["code"] == "idempotency_conflict" and "order-42" in err["message"]
    assert len(_usage(session, trucks["customer"].id)) == 1
    # another customer may use the same key for its own request
    assert len(_events(session, "product.call.replay")) == 1
    # a different key is a new, charged call
    assert _call(client, headers, code, body, key="order-43").status_code == 200
    assert len(_usage(session, trucks["customer"].id)) == 2


def test_without_an_agreement_the_call_is_refused_audited_and_not_charged(client, session, trucks):
    headers = login(client, trucks["stranger_user"].username)
    r = _call(client, headers, trucks["verify"].code, {"subject": trucks["busy"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    assert _usage(session, trucks["stranger"].id) == []
    refused = _events(session, "gov.call.refused")
    assert refused and refused[-1].outcome == "denied" and trucks["busy"] not in _text(refused[-1])
    # a terminated agreement refuses the next call too
    a = agreements.get_active(session, "usage", party_b=trucks["customer"].id, product_id=trucks["verify"].id)
    agreements.terminate(session, a, who(trucks["operator"]), reason="合同到期前解除")
    session.commit()
    r = _call(client, login(client, trucks["user"].username), trucks["verify"].code, {"subject": trucks["busy"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    assert _usage(session, trucks["customer"].id) == []


def test_an_unregistered_product_is_refused_and_an_unknown_one_is_404(client, session, trucks):
    headers = login(client, trucks["user"].username)
    p = trucks["verify"]
    p.state = "withdrawn"
    session.add(p)
    session.commit()
    r = _call(client, headers, p.code, {"subject": trucks["busy"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "product_not_registered"
    assert _usage(session, trucks["customer"].id) == []
    assert _call(client, headers, "no_such_product", {"subject": "X"}).status_code == 404


def test_an_api_key_with_product_call_can_call(client, session, trucks):
    admin = make_user(session, trucks["customer"], "customer_admin")
    session.commit()
    r = client.post("/api/v1/api-keys", json={"name": "核验系统", "scopes": ["product.call"]},
                    headers=login(client, admin.username))
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    r = _call(client, {"Authorization": f"Bearer {key}"}, trucks["verify"].code, {"subject": trucks["busy"]})
    assert r.status_code == 200 and r.json()["answer"] == {"more_than_n_violations": "yes"}
    ev = _events(session, "product.call")[-1]
    assert ev.actor_kind == "key"


@pytest.fixture
def personal(session, db_settings):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.PROVIDER,
                                                 OrgKind.CUSTOMER)}
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    w["product"] = person_lab_product(session, db_settings, partner=w["partner"], provider=w["provider"],
                                      operator_id=w["operator"].id)
    usage_agreement(session, w["product"], w["customer"].id)
    session.commit()
    build_answers(db_settings, w["product"].id)
    w["user"] = make_user(session, w["customer"], "customer_integrator")
    session.commit()
    return w


def test_a_personal_product_needs_the_subjects_consent(client, session, db_settings, personal):
    headers = login(client, personal["user"].username)
    code = personal["product"].code
    r = _call(client, headers, code, {"subject": ID_A})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    assert _usage(session, personal["customer"].id) == []
    c, _ = give_consent(session, db_settings, personal["product"], personal["customer"].id, ID_A)
    session.commit()
    r = _call(client, headers, code, {"subject": ID_A, "purpose": "贷前核验"})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == {"has_paid": "yes"}
    assert ID_A not in r.text
    # consent is per subject: B has none
    assert _call(client, headers, code, {"subject": ID_B}).status_code == 403
    # a purpose the consent does not cover
    r = _call(client, headers, code, {"subject": ID_A, "purpose": "营销"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    consent.revoke_by_customer(session, c, actor=who(personal["customer"]), reason="客户撤回")
    session.commit()
    r = _call(client, headers, code, {"subject": ID_A, "purpose": "贷前核验"})  # the purpose it covered
    assert r.status_code == 403 and "revoked" in r.json()["error"]["message"]
    assert len(_usage(session, personal["customer"].id)) == 1
    refused = _events(session, "gov.call.refused")
    assert len(refused) == 4 and all(ID_A not in _text(e) and ID_B not in _text(e) for e in refused)


def test_responses_carry_no_raw_source_values(client, session, db_settings, trucks):
    """Every answer is an enumerated value or a bounded score: no VIN, date or count of the source."""
    headers = login(client, trucks["user"].username)
    table = truck_table(session, db_settings)
    vins = pc.unique(table.column("vin")).to_pylist()
    texts = []
    for v in vins[:20]:
        for p in (trucks["verify"], trucks["score"]):
            texts.append(json.dumps(_call(client, headers, p.code, {"subject": v}).json()["answer"]))
    others = set(vins)
    assert not any(v in t for t in texts for v in others)


def test_a_call_past_the_revenue_ceiling_is_refused_audited_and_not_charged(client, session, trucks):
    """The call path charges the operator's running total at commit (metering.defer_charges): the
    call that would pass the maximum permitted revenue gets 403, no usage record, an audited refusal."""
    from authops.billing import prices as rules
    from authops.platform.billing import pricing

    drc = make_org(session, OrgKind.SUPERVISOR)
    session.commit()
    price = usage_terms_price(session, trucks)
    pricing.set_max_revenue(session, operator_org_id=trucks["operator"].id, year=rules.year_of(),
                            amount_fen=price * 2 + price // 2, drc_org_id=drc.id, actor=who(trucks["bureau"].id))
    session.commit()
    h = login(client, trucks["user"].username)
    code = trucks["score"].code
    got = [_call(client, h, code, {"subject": trucks["busy"]}) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 403], [r.text for r in got]
    assert got[2].json()["error"]["code"] == "revenue_ceiling_reached"
    assert sum(u.amount_fen for u in _usage(session, trucks["customer"].id)) == price * 2
    refused = _events(session, "billing.revenue.refused")
    assert len(refused) == 1 and trucks["busy"] not in _text(refused[0])
    assert not [e for e in _events(session, "product.call") if '"amount_fen"' in _text(e)][2:]  # two calls logged


def usage_terms_price(session, trucks) -> int:
    from authops.platform.governance.models import Agreement

    a = session.exec(select(Agreement).where(Agreement.product_id == trucks["score"].id,
                                             Agreement.party_b_org_id == trucks["customer"].id)).one()
    return int(a.terms["pricing"]["price_fen"])
