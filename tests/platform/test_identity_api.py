"""Login, tokens, lockout, API keys and organisation boundaries through the HTTP API."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.platform.identity.models import ApiKey, LoginSession
from tests.support.builders import PASSWORD, login, make_org, make_user


def _cast(session):
    bureau = make_org(session, OrgKind.BUREAU)
    bank = make_org(session, OrgKind.CUSTOMER)
    other_bank = make_org(session, OrgKind.CUSTOMER)
    admin = make_user(session, bank, "customer_admin")
    dev = make_user(session, bank, "customer_integrator")
    rival = make_user(session, other_bank, "customer_admin")
    boss = make_user(session, bureau, "bureau_admin")
    session.commit()
    return bank, other_bank, admin, dev, rival, boss


def test_login_returns_token_that_identifies_the_user(client, session):
    bank, _, admin, *_ = _cast(session)
    me = client.get("/api/v1/me", headers=login(client, admin.username))
    assert me.status_code == 200, me.text
    me = me.json()
    assert me["name"] == admin.username
    assert me["org"]["id"] == bank.id
    assert me["roles"] == ["customer_admin"]
    assert "product.call" in me["permissions"] and "org.manage" not in me["permissions"]


def test_wrong_password_and_unknown_user_get_the_same_answer(client, session):
    _, _, admin, *_ = _cast(session)
    a = client.post("/api/v1/auth/login", json={"username": admin.username, "password": "Nope-nope-123"})
    b = client.post("/api/v1/auth/login", json={"username": "nobody-here", "password": "Nope-nope-123"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


def test_repeated_bad_passwords_lock_the_account_until_unlocked(client, session, db_settings):
    _, _, admin, dev, *_ = _cast(session)
    for _ in range(db_settings.login_max_failures):
        r = client.post("/api/v1/auth/login", json={"username": dev.username, "password": "Wrong-pass-1"})
        assert r.json()["error"]["code"] == "bad_credentials"
    r = client.post("/api/v1/auth/login", json={"username": dev.username, "password": PASSWORD})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "account_locked"
    assert "unlock" in r.json()["error"]["message"]
    # Their administrator unlocks them; the right password works again.
    headers = login(client, admin.username)
    assert client.post(f"/api/v1/users/{dev.id}/unlock", headers=headers).json()["locked"] is False
    login(client, dev.username)


def test_expired_revoked_and_malformed_tokens_are_refused(client, session):
    _, _, admin, *_ = _cast(session)
    headers = login(client, admin.username)
    assert client.get("/api/v1/me", headers=headers).status_code == 200

    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    r = client.get("/api/v1/me", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "token_revoked")

    headers = login(client, admin.username)
    session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    r = client.get("/api/v1/me", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "token_expired")

    for bad in ({"Authorization": "Bearer ato_forged"}, {"Authorization": "Bearer garbage"},
                {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {}):
        r = client.get("/api/v1/me", headers=bad)
        assert r.status_code == 401, bad
        assert r.json()["error"]["message"]


def test_api_key_is_shown_once_stored_hashed_scoped_and_revocable(client, session):
    _, _, admin, *_ = _cast(session)
    headers = login(client, admin.username)
    created = client.post("/api/v1/api-keys", headers=headers,
                          json={"name": "core banking", "scopes": ["product.call", "self.read"]})
    assert created.status_code == 201
    secret = created.json()["key"]
    listed = client.get("/api/v1/api-keys", headers=headers).json()
    assert secret not in str(listed) and "key" not in listed[0]
    stored = session.get(ApiKey, created.json()["id"])
    assert secret.split("_")[-1] not in (stored.secret_hash, stored.prefix)

    as_key = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=as_key).json()["scopes"] == ["product.call", "self.read"]
    assert client.get("/api/v1/orgs", headers=as_key).status_code == 403  # outside its scopes
    assert client.get("/api/v1/me", headers={"X-API-Key": secret}).status_code == 200

    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer ak_short_x"}).status_code == 401

    client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=headers)
    r = client.get("/api/v1/me", headers=as_key)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "key_revoked")


def test_expired_api_key_is_refused(client, session):
    _, _, admin, *_ = _cast(session)
    headers = login(client, admin.username)
    secret = client.post("/api/v1/api-keys", headers=headers,
                         json={"name": "batch", "scopes": ["self.read"]}).json()["key"]
    session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(minutes=1)))
    session.commit()
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "key_expired")


def test_a_key_cannot_carry_more_than_its_creator_holds(client, session):
    _, _, admin, dev, *_ = _cast(session)
    headers = login(client, admin.username)
    r = client.post("/api/v1/api-keys", headers=headers, json={"name": "x", "scopes": ["org.manage"]})
    assert r.status_code == 403 and "org.manage" in r.json()["error"]["message"]
    r = client.post("/api/v1/api-keys", headers=headers, json={"name": "x", "scopes": ["no.such"]})
    assert r.status_code == 422


def test_foreign_objects_look_exactly_like_missing_ones(client, session):
    bank, other_bank, admin, dev, rival, boss = _cast(session)
    headers = login(client, rival.username)
    foreign = client.get(f"/api/v1/orgs/{bank.id}", headers=headers)
    missing = client.get("/api/v1/orgs/987654", headers=headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(str(bank.id), "N") == \
        missing.json()["error"]["message"].replace("987654", "N")
    for path in (f"/api/v1/users/{dev.id}", f"/api/v1/orgs/{bank.id}/users"):
        assert client.get(path, headers=headers).status_code == 404
    r = client.patch(f"/api/v1/users/{dev.id}", headers=headers, json={"is_active": False})
    assert r.status_code == 404
    # The bureau sees every organisation.
    assert client.get(f"/api/v1/orgs/{bank.id}", headers=login(client, boss.username)).status_code == 200


def test_admin_manages_users_and_roles_of_its_own_kind_only(client, session):
    bank, _, admin, dev, *_ = _cast(session)
    headers = login(client, admin.username)
    r = client.post(f"/api/v1/orgs/{bank.id}/users", headers=headers,
                    json={"username": "new-dev", "display_name": "新人", "password": "Strong-pass-99",
                          "roles": ["partner_engineer"]})
    assert r.status_code == 422
    assert "customer" in r.json()["error"]["message"] and "customer_integrator" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/orgs/{bank.id}/users", headers=headers,
                    json={"username": "new-dev", "display_name": "新人", "password": "short",
                          "roles": ["customer_integrator"]})
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "password"}
    r = client.post(f"/api/v1/orgs/{bank.id}/users", headers=headers,
                    json={"username": "new-dev", "display_name": "新人", "password": "Strong-pass-99",
                          "roles": ["customer_integrator"]})
    assert r.status_code == 201
    new_id = r.json()["id"]
    login(client, "new-dev", "Strong-pass-99")
    r = client.post(f"/api/v1/users/{new_id}/roles", headers=headers, json={"role": "customer_admin"})
    assert r.json()["roles"] == ["customer_admin", "customer_integrator"]
    # Deactivation ends their sessions at once.
    their = login(client, "new-dev", "Strong-pass-99")
    client.patch(f"/api/v1/users/{new_id}", headers=headers, json={"is_active": False})
    assert client.get("/api/v1/me", headers=their).status_code == 401


def test_role_change_takes_effect_on_next_request(client, session):
    bank, _, admin, dev, *_ = _cast(session)
    dev_headers = login(client, dev.username)
    assert client.get("/api/v1/api-keys", headers=dev_headers).status_code == 403
    headers = login(client, admin.username)
    client.post(f"/api/v1/users/{dev.id}/roles", headers=headers, json={"role": "customer_admin"})
    assert client.get("/api/v1/api-keys", headers=dev_headers).status_code == 200
    client.delete(f"/api/v1/users/{dev.id}/roles/customer_admin", headers=headers)
    assert client.get("/api/v1/api-keys", headers=dev_headers).status_code == 403


def test_validation_errors_name_the_field_and_never_echo_values(client, session):
    _, _, admin, *_ = _cast(session)
    headers = login(client, admin.username)
    secret_value = "身份证号320501199001011234"
    r = client.post("/api/v1/api-keys", headers=headers, json={"name": secret_value, "scopes": "x"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"]["code"] == "invalid_input"
    assert any(d["field"] == "body.scopes" for d in body["error"]["details"])
    assert secret_value not in r.text
