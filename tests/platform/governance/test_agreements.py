"""Agreements: deterministic text, electronic acceptance over the exact text's hash, activation,
usage agreements (application, terms, pricing rules), expiry and the no-active-agreement refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.audit.search import details_of
from authops.core.clock import travelled
from authops.core.errors import AuthopsError, Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.platform.governance import agreements
from authops.platform.governance.models import Acceptance, Agreement
from tests.platform.governance.matrix_products import (TERMS, authorize_operator, registered_product, usage_agreement,
                                                       who)
from tests.support.builders import login, make_org, make_user


@pytest.fixture
def world(session):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["other_customer"] = make_org(session, OrgKind.CUSTOMER)
    w["unauthorized_operator"] = make_org(session, OrgKind.OPERATOR)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    w["product"] = registered_product(session, partner_id=w["partner"].id, operator_id=w["operator"].id, price_fen=200)
    session.commit()
    return w


def _terms(**kw):
    d = agreements.today()
    return {**TERMS, "starts_on": d, "ends_on": d + timedelta(days=30), **kw}


def test_the_text_is_deterministic_and_headed(session):
    t1 = agreements.render_text("usage", {"scenario": "贷前核验", "pricing": {"b": 1, "a": 2}, "zzz": [1, 2]})
    t2 = agreements.render_text("usage", {"zzz": [1, 2], "pricing": {"a": 2, "b": 1}, "scenario": "贷前核验"})
    assert t1 == t2
    assert t1.startswith("数据产品使用协议\nData Product Usage Agreement\n")
    assert "一、应用场景 Scenario\n    贷前核验" in t1 and "二、计价方式与价格 Pricing\n    a: 2\n    b: 1" in t1
    assert "三、zzz" in t1
    assert t1 != agreements.render_text("usage", {"scenario": "贷后管理", "pricing": {"a": 2, "b": 1}, "zzz": [1, 2]})


def test_a_usage_agreement_is_applied_drafted_and_accepted_by_both(session, world):
    p, cust, op = world["product"], world["customer"], world["operator"]
    a = agreements.apply_usage(session, product=p, customer_org_id=cust.id, actor=who(cust), scenario="贷前核验")
    assert a.state == "applied" and a.party_a_org_id == op.id and a.party_b_org_id == cust.id
    with pytest.raises(Conflict) as e:  # nothing to accept before the terms exist
        agreements.accept(session, a, who(cust), text_sha256="0" * 64)
    assert "drafts them first" in e.value.message
    agreements.draft_usage_terms(session, a, actor=who(op), **_terms())
    assert a.state == "pending" and a.text_sha256 == agreements.sha256_text(a.text)
    for words in ("交付方式 Delivery method", "api: 接口调用", "1.00 元 yuan / call", "仅用于贷前审批", "违约责任",
                  "安全责任", str(agreements.today())):
        assert words in a.text
    agreements.accept(session, a, who(cust), ip="10.1.2.3", text_sha256=a.text_sha256)
    assert a.state == "pending" and agreements.waiting_for(session, a) == [op.id]
    agreements.accept(session, a, who(op), text_sha256=a.text_sha256.upper())
    session.commit()
    assert a.state == "active"
    accs = session.exec(select(Acceptance).where(Acceptance.agreement_id == a.id).order_by(Acceptance.id)).all()
    assert [(x.org_id, x.text_sha256, x.ip) for x in accs] == [(cust.id, a.text_sha256, "10.1.2.3"),
                                                               (op.id, a.text_sha256, None)]
    events = session.exec(select(AuditEvent).where(AuditEvent.object_type == "agreement",
                                                   AuditEvent.object_id == str(a.id)).order_by(AuditEvent.seq)).all()
    assert [e.action for e in events] == ["gov.agreement.create", "gov.agreement.apply", "gov.agreement.draft",
                                          "gov.agreement.accept", "gov.agreement.accept", "gov.agreement.activate"]
    assert details_of(events[3])["text_sha256"] == a.text_sha256 and events[3].org_id == cust.id
    assert details_of(events[5])["before"] == "pending" and details_of(events[5])["after"] == "active"
    assert agreements.require_active_usage(session, cust.id, p.id).id == a.id


def test_acceptance_names_the_text_it_read(session, world):
    p, cust, op = world["product"], world["customer"], world["operator"]
    a = usage_agreement(session, p, cust.id, state="pending")
    seen = a.text_sha256
    agreements.draft_usage_terms(session, a, actor=who(op), **_terms(conditions="仅用于贷前审批和贷后监测"))
    with pytest.raises(Conflict) as e:
        agreements.accept(session, a, who(cust), text_sha256=seen)
    assert e.value.code == "text_changed" and e.value.message == "the agreement text changed; read it again"
    with pytest.raises(NotFound):  # not a party
        agreements.accept(session, a, who(world["other_customer"]), text_sha256=a.text_sha256)
    agreements.accept(session, a, who(cust), text_sha256=a.text_sha256)
    with pytest.raises(Conflict) as e:
        agreements.accept(session, a, who(cust), text_sha256=a.text_sha256)
    assert e.value.code == "already_accepted"
    with pytest.raises(Conflict) as e:  # accepted by one side: the terms are fixed
        agreements.draft_usage_terms(session, a, actor=who(op), **_terms(conditions="改"))
    assert "fixed" in e.value.message
    a.text = a.text + "（篡改）"
    with pytest.raises(AuthopsError) as e:  # the stored text no longer matches its digest
        agreements.accept(session, a, who(op), text_sha256=a.text_sha256)
    assert e.value.code == "integrity_violation"


def test_the_terms_follow_the_pricing_rules(session, world):
    p, cust, op = world["product"], world["customer"], world["operator"]
    a = usage_agreement(session, p, cust.id, state="applied")
    with pytest.raises(InvalidInput) as e:
        agreements.draft_usage_terms(session, a, actor=who(op), **_terms(price_fen=201))
    assert e.value.details == {"field": "price_fen"} and "above the registered price" in e.value.message
    with pytest.raises(InvalidInput) as e:
        agreements.draft_usage_terms(session, a, actor=who(op), **_terms(pricing_method="monthly"))
    assert e.value.details == {"field": "pricing_method"} and "per call" in e.value.message
    with pytest.raises(InvalidInput) as e:
        agreements.draft_usage_terms(session, a, actor=who(op), **_terms(pricing_method="free", price_fen=5))
    assert e.value.details == {"field": "price_fen"}
    with pytest.raises(InvalidInput) as e:
        agreements.draft_usage_terms(session, a, actor=who(op), **_terms(breach_liability=" "))
    assert e.value.details == {"field": "breach_liability"}
    with pytest.raises(NotFound):  # the buyer does not write the seller's terms
        agreements.draft_usage_terms(session, a, actor=who(cust), **_terms())
    agreements.draft_usage_terms(session, a, actor=who(op), **_terms(price_fen=200))
    free = registered_product(session, partner_id=world["partner"].id, operator_id=op.id, price_fen=0,
                              category="public_governance")
    b = usage_agreement(session, free, cust.id, state="applied")
    with pytest.raises(InvalidInput) as e:
        agreements.draft_usage_terms(session, b, actor=who(op), **_terms(price_fen=0))
    assert "public_governance" in e.value.message and "free" in e.value.message
    agreements.draft_usage_terms(session, b, actor=who(op), **_terms(pricing_method="free", price_fen=0))
    assert "免费 free of charge" in b.text


def test_operator_actions_need_an_active_operator_authorization(session, world):
    p = registered_product(session, partner_id=world["partner"].id, operator_id=world["unauthorized_operator"].id)
    a = usage_agreement(session, p, world["customer"].id, state="applied")
    with pytest.raises(Forbidden) as e:
        agreements.draft_usage_terms(session, a, actor=who(world["unauthorized_operator"]), **_terms())
    assert e.value.code == "no_active_authorization"


def test_applications_are_refused_for_own_duplicate_or_unregistered_products(session, world):
    p = world["product"]
    with pytest.raises(Conflict) as e:
        agreements.apply_usage(session, product=p, customer_org_id=world["operator"].id, actor=who(world["operator"]),
                               scenario="自用")
    assert e.value.code == "own_product"
    agreements.apply_usage(session, product=p, customer_org_id=world["customer"].id, actor=who(world["customer"]),
                           scenario="贷前核验")
    with pytest.raises(Conflict) as e:
        agreements.apply_usage(session, product=p, customer_org_id=world["customer"].id,
                               actor=who(world["customer"]), scenario="贷前核验")
    assert e.value.code == "duplicate"
    p.state = "submitted"
    with pytest.raises(NotFound):
        agreements.apply_usage(session, product=p, customer_org_id=world["other_customer"].id,
                               actor=who(world["other_customer"]), scenario="x")


def test_require_active_usage_says_why_not(session, world):
    p, cust, op = world["product"], world["customer"], world["operator"]

    def why() -> str:
        with pytest.raises(Forbidden) as e:
            agreements.require_active_usage(session, cust.id, p.id)
        assert e.value.code == "no_active_agreement"
        return e.value.message

    assert "has no usage agreement" in why()
    a = usage_agreement(session, p, cust.id, state="applied")
    assert "awaits the terms of" in why()
    agreements.draft_usage_terms(session, a, actor=who(op), **_terms())
    assert f"pending acceptance by {op.name_zh}" in why() and cust.name_zh in why()
    agreements.accept(session, a, who(cust), text_sha256=a.text_sha256)
    assert f"pending acceptance by {op.name_zh}" in why() and cust.name_zh not in why()
    agreements.accept(session, a, who(op), text_sha256=a.text_sha256)
    assert agreements.require_active_usage(session, cust.id, p.id) == a
    with travelled(timedelta(days=40)):  # past ends_on: expired on read, swept into "expired"
        assert f"expired on {a.ends_on.isoformat()}" in why()
        assert agreements.get_active(session, "usage", party_b=cust.id) is None
        swept = agreements.sweep_expired(session)
        assert [x.id for x in swept] == [a.id] and a.state == "expired"
        assert f"expired on {a.ends_on.isoformat()}" in why()
        b = usage_agreement(session, p, cust.id)  # a new agreement after expiry
        assert agreements.require_active_usage(session, cust.id, p.id) == b
        agreements.terminate(session, b, who(op), "客户违约")
        assert "was terminated on" in why() and "客户违约" in why()
    session.commit()
    ev = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.agreement.expire")).one()
    assert details_of(ev)["before"] == "active" and details_of(ev)["after"] == "expired"


def test_a_future_agreement_is_not_yet_in_force(session, world):
    d = agreements.today()
    usage_agreement(session, world["product"], world["customer"].id, starts_on=d + timedelta(days=3),
                    ends_on=d + timedelta(days=30))
    with pytest.raises(Forbidden) as e:
        agreements.require_active_usage(session, world["customer"].id, world["product"].id)
    assert f"starts on {(d + timedelta(days=3)).isoformat()}" in e.value.message


def test_agreements_over_the_api(client, session, world):
    users = {k: make_user(session, world[k], role) for k, role in
             (("customer", "customer_admin"), ("operator", "operator_staff"), ("other_customer", "customer_admin"))}
    session.commit()
    h = {k: login(client, u.username) for k, u in users.items()}
    G = "/api/v1/governance"
    r = client.post(f"{G}/agreements/usage", json={"product_id": world["product"].id, "scenario": "贷前核验"},
                    headers=h["customer"])
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    d = agreements.today()
    terms = {**TERMS, "starts_on": d.isoformat(), "ends_on": (d + timedelta(days=30)).isoformat()}
    r = client.put(f"{G}/agreements/{aid}/terms", json=terms, headers=h["operator"])
    assert r.status_code == 200 and r.json()["state"] == "pending"
    sha = r.json()["text_sha256"]
    assert client.get(f"{G}/agreements/{aid}", headers=h["other_customer"]).status_code == 404
    r = client.post(f"{G}/agreements/{aid}/accept", json={"text_sha256": "f" * 64}, headers=h["customer"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "text_changed"
    r = client.post(f"{G}/agreements/{aid}/accept", json={"text_sha256": sha}, headers=h["customer"])
    assert r.status_code == 200 and r.json()["waiting_for"] == [world["operator"].id]
    r = client.post(f"{G}/agreements/{aid}/accept", json={"text_sha256": sha}, headers=h["operator"])
    assert r.json()["state"] == "active" and len(r.json()["acceptances"]) == 2
    assert [a["number"] for a in client.get(f"{G}/agreements", headers=h["customer"]).json()] == [r.json()["number"]]
    r = client.post(f"{G}/agreements/{aid}/terminate", json={"reason": "业务结束"}, headers=h["customer"])
    assert r.json()["state"] == "terminated"
    assert session.get(Agreement, aid) is not None
