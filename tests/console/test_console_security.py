"""The console's session cookie flags, CSRF on every POST form, and the language switch."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from authops.console import router as console
from authops.console.i18n import CATALOGUE
from authops.platform.governance.models import Case
from tests.console.world import console_login, csrf_of


def _set_cookie_headers(response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def _login_response(client: TestClient, username: str, **headers):
    form = client.get("/console/login", headers=headers)
    return client.post("/console/login", data={"username": username, "password": "Test-password-42",
                                               "csrf": csrf_of(form.text)}, headers=headers, follow_redirects=False)


def test_the_session_cookie_is_httponly_lax_and_scoped_to_the_console(web, world):
    cookie = _set_cookie_headers(_login_response(web, world.users["expert"].username))["authops_console"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back


def test_the_cookie_is_secure_over_https(console_app, world):
    with TestClient(console_app, base_url="https://testserver") as c:
        cookie = _set_cookie_headers(_login_response(c, world.users["expert"].username))["authops_console"]
    assert "secure" in cookie.lower()


def test_forwarded_proto_counts_only_from_a_trusted_proxy(web, world, monkeypatch):
    def cookie_flags() -> str:  # the login form sets the pre-login cookie with the same flags
        r = web.get("/console/login", headers={"X-Forwarded-Proto": "https"})
        return _set_cookie_headers(r)["authops_console_pre"].lower()

    web.cookies.clear()
    assert "secure" not in cookie_flags()
    monkeypatch.setattr(web.app.state.settings, "trusted_proxies", "10.0.0.1, testclient")  # TestClient's peer address
    web.cookies.clear()
    assert "secure" in cookie_flags()


def _review(web, world, **form):
    return web.post(f"/console/scenarios/{world.scenario.id}/provider-review",
                    data={"decision": "approve", "reasons": "字段最小化", **form}, follow_redirects=False)


def _state(session, world) -> str:
    session.expire_all()
    return session.get(Case, world.scenario.id).state, len(session.get(Case, world.scenario.id).awaiting_orgs)


def test_a_post_without_the_right_csrf_token_is_refused_and_changes_nothing(web, world, session):
    before = _state(session, world)
    csrf = console_login(web, world.users["provider_admin"].username)
    missing = _review(web, world)
    wrong = _review(web, world, csrf="0" * 64)
    assert missing.status_code == 403 and wrong.status_code == 403
    assert "表单已失效" in missing.text
    # Another session's token does not fit this session.
    other = TestClient(web.app)
    other_csrf = console_login(other, world.users["provider_data_officer"].username)
    assert _review(web, world, csrf=other_csrf).status_code == 403
    assert _state(session, world) == before
    ok = _review(web, world, csrf=csrf)
    assert ok.status_code == 303
    assert _state(session, world) != before


class _Ids(dict):
    def __missing__(self, key: str) -> str:
        return "1"  # any object: the CSRF check refuses before the route looks it up


def test_every_post_route_of_the_console_checks_csrf(web, world):
    """Structural: ConsoleRoute puts the check on every POST; each one refuses a form without a token."""
    console_login(web, world.users["bureau_admin"].username)
    posts = [r.path for r in console.router.routes + console.public_router.routes if "POST" in r.methods]
    assert len(posts) >= 20
    for path in posts:
        url = path.format_map(_Ids(case_id=world.scenario.id, agreement_id=world.pending_agreement_id, code="any"))
        r = web.post(url, data={"decision": "approve", "reason": "looks fine", "severity": "minor",
                                "username": "x", "password": "y"}, follow_redirects=False)
        assert r.status_code == 403, path
    assert web.get("/console/", follow_redirects=False).status_code == 200  # logout was refused too


def test_login_needs_the_forms_token(web, world):
    r = web.post("/console/login", data={"username": world.users["expert"].username,
                                         "password": "Test-password-42"}, follow_redirects=False)
    assert r.status_code == 403 and web.cookies.get("authops_console") is None


def test_chinese_by_default_english_on_the_switch_and_it_sticks(web, world):
    console_login(web, world.users["partner_admin"].username)
    zh = web.get("/console/")
    assert 'lang="zh-CN"' in zh.text and "待办事项" in zh.text
    switched = web.get("/console/lang/en", params={"back": "/console/scenarios"}, follow_redirects=False)
    assert switched.status_code == 303 and switched.headers["location"] == "/console/scenarios"
    en = web.get("/console/")
    assert '<html lang="en">' in en.text and "To-do" in en.text and "待办事项" not in en.text
    assert "待办事项" in web.get("/console/", params={"lang": "zh"}).text  # ?lang= wins and sticks
    assert "待办事项" in web.get("/console/").text


def test_no_label_hides_behind_a_dict_method():
    """Templates read labels as t.name: a key named like a dict method (keys, items) would print the method."""
    assert not [k for k in CATALOGUE if hasattr(dict, k)]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_label_of_a_language_is_filled(lang):
    i = 0 if lang == "zh" else 1
    empty = [k for k, v in CATALOGUE.items() if not v[i].strip()]
    assert not empty


def test_a_block_refuses_the_next_page_and_a_new_login(web, world, session):
    from authops.audit.anomaly import service as anomaly

    user = world.users["customer_integrator"]
    console_login(web, user.username)
    anomaly.create_block(session, subject_type="user", subject_id=str(user.id), org_id=user.org_id,
                         reason="console test")
    session.commit()
    assert web.get("/console/", follow_redirects=False).status_code == 403
    web.cookies.clear()
    form = web.get("/console/login")
    r = web.post("/console/login", data={"username": user.username, "password": "Test-password-42",
                                         "csrf": csrf_of(form.text)}, follow_redirects=True)
    assert "已被异常处置封禁" in r.text and web.cookies.get("authops_console") is None


def test_signed_in_pages_cannot_be_framed_or_cached(web, world):
    console_login(web, world.users["auditor"].username)
    r = web.get("/console/audit")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)
def test_too_many_logins_show_the_login_page_with_the_reason_not_json(db_settings, session):
    from authops.app import create_app
    from tests.console.conftest import with_console
    from tests.console.world import build_world

    app = with_console(create_app(db_settings.model_copy(update={"rate_limit_url": "memory",
                                                                 "rate_limit_login_per_user": 1})))
    with TestClient(app) as c:
        user = build_world(session, db_settings).users["expert"].username
        assert _login_response(c, user).status_code == 303 and c.cookies.get("authops_console")
        c.cookies.clear()
        r = _login_response(c, user)  # the right password, but a second attempt in the window
        assert r.status_code == 303 and "failed=throttled" in r.headers["location"]
        assert r.headers["Retry-After"].isdigit()
        page = c.get(r.headers["location"])
        assert page.status_code == 200 and "登录尝试过于频繁" in page.text and c.cookies.get("authops_console") is None
