"""An API key's request: one lookup reads the key, its organisation and whether a block names
them, so a block on the key, its organisation or the caller's address refuses the very next
request; the key's last use is written at most once a minute."""

from __future__ import annotations

from datetime import timedelta

from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly
from authops.core.clock import travelled
from authops.core.identity import OrgKind
from authops.platform.identity.models import ApiKey, Organisation
from tests.support.builders import login, make_org, make_user

CALL = "/api/v1/products/truck_risk_score/calls"


def _key(client, session):
    customer = make_org(session, OrgKind.CUSTOMER)
    admin = make_user(session, customer, "customer_admin")
    session.commit()
    r = client.post("/api/v1/api-keys", headers=login(client, admin.username),
                    json={"name": "core banking", "scopes": ["product.call", "self.read"]})
    assert r.status_code == 201, r.text
    return customer, r.json()["id"], {"Authorization": f"Bearer {r.json()['key']}"}


def _code(r) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def _lift(session, block) -> None:
    anomaly.lift_block(session, block.id, actor=audit_log.SYSTEM, reason="test over")
    session.commit()


def test_a_block_on_the_key_its_organisation_or_the_address_refuses_the_next_request(client, session):
    customer, key_id, key = _key(client, session)
    assert client.get("/api/v1/me", headers=key).status_code == 200

    block = anomaly.create_block(session, subject_type="api_key", subject_id=str(key_id))
    session.commit()
    assert _code(client.get("/api/v1/me", headers=key)) == (403, "access_blocked")
    _lift(session, block)
    assert client.get("/api/v1/me", headers=key).status_code == 200

    block = anomaly.create_block(session, subject_type="ip", subject_id="testclient")  # the test client's address
    session.commit()
    assert _code(client.get("/api/v1/me", headers=key)) == (403, "access_blocked")
    _lift(session, block)

    # an organisation's block suspends data access; housekeeping (who am I) stays open
    block = anomaly.create_block(session, subject_type="org", subject_id=str(customer.id), org_id=customer.id)
    session.commit()
    assert client.get("/api/v1/me", headers=key).status_code == 200
    r = client.post(CALL, headers=key, json={"subject": "LFV000000000000001"})
    assert _code(r) == (403, "access_blocked")
    _lift(session, block)
    assert client.post(CALL, headers=key, json={"subject": "LFV000000000000001"}).status_code == 404  # no product


def test_a_deactivated_organisation_refuses_its_keys(client, session):
    customer, _, key = _key(client, session)
    org = session.get(Organisation, customer.id)
    org.is_active = False
    session.add(org)
    session.commit()
    assert _code(client.get("/api/v1/me", headers=key)) == (401, "account_inactive")


def test_the_last_use_is_written_once_a_minute(client, session):
    _, key_id, key = _key(client, session)

    def last_used():
        session.expire_all()
        return session.get(ApiKey, key_id).last_used_at

    assert last_used() is None
    assert client.get("/api/v1/me", headers=key).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/v1/me", headers=key).status_code == 200
    assert last_used() == first  # within the minute: no write
    with travelled(timedelta(seconds=61)):
        assert client.get("/api/v1/me", headers=key).status_code == 200
        assert last_used() > first
    # a refused request writes nothing
    anomaly.create_block(session, subject_type="api_key", subject_id=str(key_id))
    session.commit()
    before = last_used()
    with travelled(timedelta(seconds=200)):
        assert _code(client.get("/api/v1/me", headers=key)) == (403, "access_blocked")
    assert last_used() == before
