"""Rate limits per key and per organisation on product calls and logins; request size limits;
unbounded queries refused. (The load test is bench/limits.py.)"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from authops.app import PUBLIC_ROUTES, create_app, iter_routes, route_permission
from authops.core.identity import OrgKind
from authops.core.settings import Settings
from authops.platform import limits
from authops.platform.limits import Limit, MemoryStore, RateLimited, RedisStore
from authops.policies import permissions
from tests.support.builders import PASSWORD, login, make_org, make_user
from tests.support.services import REDIS_URL, need_redis

# One database is enough here: nothing below depends on which one.
sqlite_only = pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _subject() -> str:
    return uuid.uuid4().hex


# --- the sliding window ------------------------------------------------------------------------
def test_a_window_admits_the_limit_then_refuses_until_retry_after_has_passed():
    clock = Clock()
    store = MemoryStore(clock)
    lim = (Limit("call.key", "1", 5, 10),)
    assert [store.hit(lim) for _ in range(5)] == [None] * 5
    refused, retry = store.hit(lim)
    assert refused == lim[0] and 1 <= retry <= 20
    # Waiting a second less than told is still refused; waiting as told is admitted.
    clock.now += retry - 1
    assert store.hit(lim) is not None
    clock.now += 1
    assert store.hit(lim) is None


def test_retry_after_is_kept_whatever_the_timing():
    clock = Clock()
    store = MemoryStore(clock)
    lim = (Limit("call.key", "1", 7, 10),)
    for step in (0.3, 1.7, 0.05, 2.9, 4.1, 0.6):  # bursts at different points of the window
        while store.hit(lim) is None:
            pass
        _, retry = store.hit(lim)
        clock.now += retry
        assert store.hit(lim) is None, f"refused after waiting the promised {retry} s"
        clock.now += step


def test_no_aligned_window_admits_more_than_the_limit():
    clock = Clock(0.0)
    store = MemoryStore(clock)
    lim = (Limit("call.key", "1", 20, 10),)
    admitted: dict[int, int] = {}
    for i in range(4000):  # 100 seconds at 40 requests a second: twice the limit
        clock.now = i * 0.025
        if store.hit(lim) is None:
            admitted[int(clock.now // 10)] = admitted.get(int(clock.now // 10), 0) + 1
    assert max(admitted.values()) <= 20
    assert sum(admitted.values()) >= 20 * 9  # and the limit is used, not starved


def test_a_request_counts_in_every_bucket_or_in_none():
    store = MemoryStore(Clock())
    key1, key2, org = (Limit("call.key", "1", 3, 60), Limit("call.key", "2", 3, 60),
                       Limit("call.org", "9", 4, 60))
    assert all(store.hit((key1, org)) is None for _ in range(3))
    assert store.hit((key1, org))[0] == key1  # key 1 is full; the org bucket was not charged for it
    assert store.hit((key2, org)) is None  # the organisation's 4th
    assert store.hit((key2, org))[0] == org


def test_redis_counts_are_shared_between_processes():
    need_redis()
    a, b = RedisStore(REDIS_URL), RedisStore(REDIS_URL)  # two API processes' connections
    key, org = Limit("call.key", _subject(), 3, 60), Limit("call.org", _subject(), 5, 60)
    other_key = Limit("call.key", _subject(), 3, 60)
    assert a.hit((key, org)) is None and b.hit((key, org)) is None and a.hit((key, org)) is None
    refused, retry = b.hit((key, org))
    assert refused == key and 1 <= retry <= 120
    assert b.hit((other_key, org)) is None and a.hit((other_key, org)) is None
    assert a.hit((other_key, org))[0] == org
    a.close()
    b.close()


def test_the_limiter_uses_redis_when_there_is_one(tmp_path):
    need_redis()
    settings = Settings(data_dir=tmp_path)
    cases = {REDIS_URL: "redis", "memory": "memory"}
    for url, store in cases.items():
        limiter = limits.Limiter(settings.model_copy(update={"rate_limit_url": url}))
        assert limiter.store == store, url
        limiter.close()
    redis_broker = settings.model_copy(update={"broker_url": REDIS_URL + "/0", "rate_limit_url": ""})
    assert limits.Limiter(redis_broker).store == "redis"
    rabbit_broker = settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:5672//"})
    assert limits.Limiter(rabbit_broker).store == "memory"


def test_an_unreachable_store_falls_back_to_this_process_and_still_limits(tmp_path):
    settings = Settings(data_dir=tmp_path, rate_limit_url="redis://127.0.0.1:9/0")
    limiter = limits.Limiter(settings)
    lim = (Limit("call.key", _subject(), 2, 60),)
    limiter.admit(lim)
    assert limiter.store == "memory"
    limiter.admit(lim)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(lim)
    assert refused.value.headers["Retry-After"].isdigit()


# --- over HTTP ------------------------------------------------------------------------------------
def _client(db_settings, **limits_):
    return TestClient(create_app(db_settings.model_copy(update={"rate_limit_url": "memory", **limits_})))


@sqlite_only
def test_product_calls_are_limited_per_key_and_per_organisation(db_settings, session):
    org, other = make_org(session, OrgKind.CUSTOMER), make_org(session, OrgKind.CUSTOMER)
    users = [make_user(session, org, "customer_integrator") for _ in range(2)]
    outsider = make_user(session, other, "customer_integrator")
    session.commit()
    with _client(db_settings, rate_limit_call_per_key=3, rate_limit_call_per_org=4) as client:
        first, second, third = (login(client, u.username) for u in (*users, outsider))
        # A customer without an agreement is refused by the product checks after the limiter: those
        # calls count. A key must be created to see it limited apart from its user; users suffice.
        call = {"subject": "110105194912310025", "purpose": "test"}
        codes = [client.post("/api/v1/products/no_such/calls", json=call, headers=first).status_code
                 for _ in range(4)]
        assert codes[:3] != [429] * 3 and 429 not in codes[:3] and codes[3] == 429, codes
        r = client.post("/api/v1/products/no_such/calls", json=call, headers=first)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 2 * 60  # sliding window: up to the rest of this one and part of the next
        assert r.json()["error"]["details"] == {"scope": "call.user", "limit": 3, "window_seconds": 60,
                                                "retry_after_seconds": int(r.headers["Retry-After"])}
        # The second user of the same organisation gets the organisation's 4th call, then not.
        assert client.post("/api/v1/products/no_such/calls", json=call, headers=second).status_code != 429
        r = client.post("/api/v1/products/no_such/calls", json=call, headers=second)
        assert r.status_code == 429 and r.json()["error"]["details"]["scope"] == "call.org"
        # Another organisation is not affected.
        assert client.post("/api/v1/products/no_such/calls", json=call, headers=third).status_code != 429


@sqlite_only
def test_logins_are_limited_per_account_organisation_and_address(db_settings, session):
    org = make_org(session, OrgKind.CUSTOMER)
    users = [make_user(session, org, "customer_integrator") for _ in range(4)]
    session.commit()
    with _client(db_settings, rate_limit_login_per_user=2, rate_limit_login_per_org=5,
                 rate_limit_login_per_ip=100) as client:
        def attempt(user, password=PASSWORD):
            return client.post("/api/v1/auth/login", json={"username": user.username, "password": password})

        assert attempt(users[0], "wrong-password-1").status_code == 401
        assert attempt(users[0]).status_code == 200
        r = attempt(users[0])  # even the right password: no third attempt in the window
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert r.json()["error"]["details"]["scope"] == "login.user" and r.headers["Retry-After"].isdigit()
        # Unknown account names are limited too (no hint whether they exist).
        assert [client.post("/api/v1/auth/login", json={"username": "nobody-here", "password": "x"}).status_code
                for _ in range(3)] == [401, 401, 429]
        # Per organisation: 5 attempts on its accounts, whichever.
        assert [attempt(u).status_code for u in users[1:]] == [200, 200, 200]
        r = attempt(users[1])
        assert r.status_code == 429 and r.json()["error"]["details"]["scope"] == "login.org"
    with _client(db_settings, rate_limit_login_per_ip=3) as client:
        codes = [client.post("/api/v1/auth/login", json={"username": f"u{i}x", "password": "x"}).status_code
                 for i in range(4)]
        assert codes == [401, 401, 401, 429]


@sqlite_only
def test_request_bodies_over_the_limits_are_refused(db_settings, session):
    from tests.support.catalog import make_resource

    provider = make_org(session, OrgKind.PROVIDER)
    resource = make_resource(session, provider)
    officer = make_user(session, provider, "provider_data_officer")
    session.commit()
    with _client(db_settings, max_body_bytes=4096, max_upload_bytes=64 * 1024) as client:
        big = {"username": "x" * 5000, "password": "y"}
        r = client.post("/api/v1/auth/login", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert r.json()["error"]["details"] == {"max_bytes": 4096}

        def chunks():  # no Content-Length: counted while read
            yield b'{"username": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'", "password": "y"}'

        r = client.post("/api/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        # Small bodies pass.
        assert client.post("/api/v1/auth/login", json={"username": "a", "password": "b"}).status_code == 401

        headers = login(client, officer.username)
        url = f"/api/v1/catalog/resources/{resource.code}/uploads"
        header = b"id_number,name\n"
        row = "11010519491231002X,张三丰\n".encode()
        r = client.post(url, headers=headers, files={"file": ("big.csv", header + row * 4000, "text/csv")})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = client.post(url, headers=headers, files={"file": ("small.csv", header + row, "text/csv")})
        assert r.status_code == 202, r.text


PAGING = {"limit", "offset", "rows", "page_size", "per_page", "size", "page"}


def _paged_routes(app):
    for method, path, route in iter_routes(app.routes):
        dependant = getattr(route, "dependant", None)
        if method != "GET" or dependant is None or path.startswith("/console"):
            continue
        for param in dependant.query_params:
            if param.name in PAGING:
                upper = [m.le for m in param.field_info.metadata if getattr(m, "le", None) is not None]
                yield method, path, route, param.name, (upper[0] if upper else None)


@sqlite_only
def test_an_unbounded_page_size_or_deep_paging_is_refused(db_settings, session):
    app = create_app(db_settings)
    paged = list(_paged_routes(app))
    assert len(paged) >= 10
    unbounded = [(p, name) for _, p, _, name, upper in paged if upper is None]
    assert not unbounded, f"paging parameters without a maximum: {unbounded}"
    too_deep = [(p, name, upper) for _, p, _, name, upper in paged if name == "offset" and upper > 100_000]
    assert not too_deep, f"offsets allowed past 100,000 (use keyset paging beyond): {too_deep}"
    too_big = [(p, name, upper) for _, p, _, name, upper in paged if name != "offset" and upper > 10_000]
    assert not too_big, f"page sizes above 10,000 rows: {too_big}"

    needed = {}
    for method, path, route, name, upper in paged:
        action = None if (method, path) in PUBLIC_ROUTES else route_permission(route)
        needed[path] = next((r for r in permissions.ROLES.values() if action in r.actions), None)
    users = {}
    for role in {r.name: r for r in needed.values() if r}.values():
        users[role.name] = make_user(session, make_org(session, role.org_kind), role.name)
    session.commit()
    with TestClient(app) as client:
        tokens = {name: login(client, user.username) for name, user in users.items()}
        for method, path, route, name, upper in paged:
            headers = tokens[needed[path].name] if needed[path] else {}
            url = path.format(**{k: 1 for k in ("code", "workspace_id", "resource", "job_id", "output")})
            r = client.get(url, params={name: upper + 1}, headers=headers)
            assert r.status_code == 422, f"{path}?{name}={upper + 1}: {r.status_code} {r.text[:200]}"
            assert r.json()["error"]["code"] == "invalid_input"
            assert any(d["field"] == f"query.{name}" for d in r.json()["error"]["details"]), r.text
