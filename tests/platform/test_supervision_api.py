"""Supervision end to end: a key's night-time burst blocks it on its next request; the
bureau reviews the case and releases it (the key works again) or confirms it (an incident)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly
from authops.audit.models import AuditEvent
from authops.core.identity import OrgKind
from tests.support.builders import login, make_org, make_user

NIGHT = datetime(2026, 3, 10, 15, 0)  # 23:00 Asia/Shanghai


def _cast(client, session):
    bureau, customer, supervisor = (make_org(session, k) for k in
                                    (OrgKind.BUREAU, OrgKind.CUSTOMER, OrgKind.SUPERVISOR))
    admin = make_user(session, bureau, "bureau_admin")
    reviewer = make_user(session, bureau, "bureau_reviewer")
    watcher = make_user(session, supervisor, "supervisor")
    buyer = make_user(session, customer, "customer_admin")
    session.commit()
    created = client.post("/api/v1/api-keys", headers=login(client, buyer.username),
                          json={"name": "credit scoring", "scopes": ["product.call", "self.read"]}).json()
    return {"admin": login(client, admin.username), "reviewer": login(client, reviewer.username),
            "watcher": login(client, watcher.username), "key": {"Authorization": f"Bearer {created['key']}"},
            "key_id": created["id"], "customer": customer}


def _night_calls(session, cast, n: int, at: datetime) -> None:
    """What the product layer will record for each call: one event per call, no data values."""
    who = audit_log.Actor(kind="key", id=cast["key_id"], name="credit scoring", org_id=cast["customer"].id,
                          ip="10.8.0.2", region="intranet")
    for i in range(n):
        audit_log.record(session, who, "product.call", object_type="product", object_id="credit-eval",
                         rows=1, subjects=1).ts = at + timedelta(seconds=i)
    session.commit()
    anomaly.settle()  # the rules run on the evaluator thread


def _code(r) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_night_burst_blocks_the_key_until_the_bureau_releases_it(client, session):
    c = _cast(client, session)
    assert client.get("/api/v1/me", headers=c["key"]).status_code == 200
    rules = {r["name"]: r for r in client.get("/api/v1/supervision/rules", headers=c["reviewer"]).json()}
    assert rules["night_burst"]["action"] == "block" and rules["night_burst"]["params"]["night_start"] == "22:00"
    r = client.patch(f"/api/v1/supervision/rules/{rules['night_burst']['id']}", headers=c["admin"],
                     json={"threshold": 5, "window_seconds": 300})
    assert r.status_code == 200 and r.json()["threshold"] == 5

    _night_calls(session, c, 6, NIGHT)
    r = client.get("/api/v1/me", headers=c["key"])
    assert _code(r) == (403, "access_blocked")
    case_id = r.json()["error"]["details"]["case_id"]
    assert f"case {case_id}" in r.json()["error"]["message"] and "contact" in r.json()["error"]["message"]
    refused = session.execute(select(AuditEvent).where(AuditEvent.action == "access.blocked")).scalars().one()
    assert (refused.outcome, refused.actor_kind, refused.actor_id) == ("blocked", "key", c["key_id"])

    queue = client.get("/api/v1/supervision/cases?state=open", headers=c["reviewer"]).json()
    [case] = [q for q in queue if q["id"] == case_id]
    assert (case["rule_name"], case["subject_type"], case["subject_id"]) == ("night_burst", "api_key",
                                                                             str(c["key_id"]))
    assert case["evidence"]["count"] == 6 and case["org_id"] == c["customer"].id
    assert client.get(f"/api/v1/supervision/cases/{case_id}", headers=c["watcher"]).status_code == 200
    assert client.post(f"/api/v1/supervision/cases/{case_id}/release", headers=c["watcher"],
                       json={"reason": "supervisors only read"}).status_code == 403

    r = client.post(f"/api/v1/supervision/cases/{case_id}/release", headers=c["reviewer"], json={})
    assert r.status_code == 422 and "reason" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/supervision/cases/{case_id}/release", headers=c["reviewer"],
                    json={"reason": "month-end batch announced by the bank"})
    assert r.status_code == 200 and r.json()["state"] == "released"
    assert client.get("/api/v1/me", headers=c["key"]).status_code == 200
    blocks = client.get("/api/v1/supervision/blocks", headers=c["watcher"]).json()
    assert [b["active"] for b in blocks if b["case_id"] == case_id] == [False]
    decisions = session.execute(select(AuditEvent.action).where(AuditEvent.action.like("supervision.%"))
                                .order_by(AuditEvent.seq)).scalars().all()
    assert decisions == ["supervision.rule_updated", "supervision.case_opened", "supervision.block_created",
                         "supervision.case_released", "supervision.block_lifted"]


def test_confirmed_case_keeps_the_block_and_records_an_incident(client, session):
    c = _cast(client, session)
    rule = next(r for r in client.get("/api/v1/supervision/rules", headers=c["admin"]).json()
                if r["name"] == "night_burst")
    client.patch(f"/api/v1/supervision/rules/{rule['id']}", headers=c["admin"], json={"threshold": 3})
    _night_calls(session, c, 4, NIGHT)
    [case] = client.get("/api/v1/supervision/cases?state=open", headers=c["admin"]).json()

    r = client.post(f"/api/v1/supervision/cases/{case['id']}/confirm", headers=c["reviewer"],
                    json={"reason": "downloads outside the agreed scenario", "severity": "major"})
    assert r.status_code == 200, r.text
    incident = r.json()["incident"]
    assert (r.json()["case"]["state"], incident["severity"], incident["org_id"], incident["case_id"]) == (
        "confirmed", "major", c["customer"].id, case["id"])
    assert _code(client.get("/api/v1/me", headers=c["key"])) == (403, "access_blocked")
    assert _code(client.post(f"/api/v1/supervision/cases/{case['id']}/release", headers=c["reviewer"],
                             json={"reason": "changed my mind"})) == (409, "conflict")
    listed = client.get(f"/api/v1/supervision/incidents?org_id={c['customer'].id}", headers=c["watcher"]).json()
    assert [i["id"] for i in listed] == [incident["id"]]
    assert [i.id for i in anomaly.major_incidents(session, c["customer"].id, since=NIGHT - timedelta(days=1))] \
        == [incident["id"]]

    # After rectification the bureau lifts the block of the confirmed case.
    r = client.post(f"/api/v1/supervision/blocks/{case['block_id']}/lift", headers=c["reviewer"],
                    json={"reason": "rectification accepted"})
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/api/v1/me", headers=c["key"]).status_code == 200


def test_throttle_answers_429_and_incidents_are_recorded_by_hand(client, session, monkeypatch):
    c = _cast(client, session)
    now = [1_800_000_010.0]  # a fixed clock for the per-minute window
    monkeypatch.setattr(anomaly, "_wall_seconds", lambda: now[0])
    anomaly.create_block(session, subject_type="api_key", subject_id=str(c["key_id"]), mode="throttle",
                         limit_per_minute=2, org_id=c["customer"].id)
    session.commit()
    codes = [client.get("/api/v1/me", headers=c["key"]).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.get("/api/v1/me", headers=c["key"])
    assert _code(r) == (429, "throttled") and r.json()["error"]["details"]["retry_after_seconds"] == 50
    assert r.headers["Retry-After"] == "50"
    now[0] += 60
    assert client.get("/api/v1/me", headers=c["key"]).status_code == 200

    r = client.post("/api/v1/supervision/incidents", headers=c["reviewer"],
                    json={"severity": "critical", "title": "leak reported by a citizen", "org_id": c["customer"].id,
                          "occurred_at": "2026-03-01T09:00:00+08:00"})
    assert r.status_code == 201 and r.json()["occurred_at"].startswith("2026-03-01T01:00")
    r = client.post("/api/v1/supervision/incidents", headers=c["reviewer"],
                    json={"severity": "major", "title": "x", "org_id": 999_999})
    assert _code(r) == (404, "not_found")
    r = client.post("/api/v1/supervision/incidents", headers=c["reviewer"], json={"severity": "huge", "title": "x"})
    assert r.status_code == 422 and "severity" in r.json()["error"]["message"]


def test_a_blocked_user_cannot_log_in(client, session):
    from authops.core.identity import OrgKind
    from tests.support.builders import PASSWORD, make_org, make_user

    org = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, org, "customer_integrator")
    session.commit()
    anomaly.create_block(session, subject_type="user", subject_id=str(user.id), mode="block", org_id=org.id)
    session.commit()
    r = client.post("/api/v1/auth/login", json={"username": user.username, "password": PASSWORD})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "access_blocked")
