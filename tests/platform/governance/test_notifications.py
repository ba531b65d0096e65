"""Notifications, the to-do list, periodic reminders, and the common case routes."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta

import pytest
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.errors import NotFound
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.governance import notifications, workflow
from authops.platform.governance.models import Acceptance, Agreement, Notification, Outbox, Webhook
from authops.platform.governance.workflow import Machine, Step
from tests.support.builders import login, make_org, make_user

KIND = "nt_test"
workflow.register(Machine(
    kind=KIND, prefix="NT", initial="submitted", en="Notification test application",
    states=("submitted", "review", "returned", "approved", "rejected"),
    steps=(
        Step("accept", ("submitted",), "review"),
        Step("vote", ("review",), "review"),  # one of several reviewers decided: no state change
        Step("return", ("review",), "returned", needs_reason=True),
        Step("resubmit", ("returned",), "review", by="applicant"),
        Step("approve", ("review",), "approved"),
        Step("reject", ("review",), "rejected", needs_reason=True),
    ),
    final=frozenset({"approved", "rejected"})))

SECRET_GOAL = "score SMEs by their unpaid social insurance months"


def _actor(user, org):
    return audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=org.id)


@pytest.fixture
def w(session):
    partner, provider, bureau = (make_org(session, OrgKind.PARTNER), make_org(session, OrgKind.PROVIDER),
                                 make_org(session, OrgKind.BUREAU))
    stranger = make_org(session, OrgKind.PARTNER)
    users = {"partner": make_user(session, partner), "provider": make_user(session, provider),
             "bureau": make_user(session, bureau, "bureau_reviewer"), "stranger": make_user(session, stranger),
             "partner_engineer": make_user(session, partner, "partner_engineer")}
    users["provider"].email = "reviewer@provider.example"
    users["partner"].email = "admin@partner.example"
    session.add_all([users["provider"], users["partner"]])
    session.commit()
    return {"partner": partner, "provider": provider, "bureau": bureau, "stranger": stranger, "users": users,
            "applicant": _actor(users["partner"], partner), "reviewer": _actor(users["provider"], provider),
            "final": _actor(users["bureau"], bureau)}


def _open(session, w, due_at=None):
    return workflow.open_case(session, kind=KIND, applicant_org_id=w["partner"].id, title="SME credit pilot",
                              payload={"goal": SECRET_GOAL}, actor=w["applicant"],
                              awaiting_orgs=[w["provider"].id], due_at=due_at)


def _notes(session, org):
    return list(session.exec(select(Notification).where(Notification.org_id == org.id).order_by(Notification.id)))


def test_awaited_organisation_is_told_with_the_deadline_in_shanghai_time(session, w):
    due = datetime(2026, 10, 9, 15, 59, 59)  # 23:59 on 9 October in Shanghai
    case = _open(session, w, due_at=due)
    [note] = _notes(session, w["provider"])
    assert note.kind == notifications.AWAITING and note.case_id == case.id and note.due_at == due
    assert note.title == f'{case.number} "SME credit pilot" awaits your review, due 2026-10-09 23:59 (Asia/Shanghai)'
    [filed] = _notes(session, w["partner"])
    assert filed.kind == notifications.CHANGED and "was filed" in filed.title


def test_applicant_hears_of_every_change_of_state(session, w):
    case = _open(session, w)
    workflow.transition(session, case, "accept", actor=w["reviewer"], awaiting_orgs=[w["provider"].id])
    workflow.transition(session, case, "return", actor=w["reviewer"], reason="name the fields",
                        awaiting_orgs=[w["partner"].id])
    workflow.transition(session, case, "resubmit", actor=w["applicant"], awaiting_orgs=[w["bureau"].id])
    workflow.transition(session, case, "approve", actor=w["final"])
    mine = [(n.kind, n.title) for n in _notes(session, w["partner"])]
    assert [k for k, _ in mine] == [notifications.CHANGED, notifications.CHANGED, notifications.AWAITING,
                                    notifications.CHANGED, notifications.DECIDED]
    assert "is returned and awaits your action" in mine[2][1]
    assert mine[4][1] == f'{case.number} "SME credit pilot" is approved (final decision, approve)'
    assert mine[1][1] == f'{case.number} "SME credit pilot": accept, now review'
    assert [n.kind for n in _notes(session, w["bureau"])] == [notifications.AWAITING]


def test_a_step_that_keeps_the_state_does_not_repeat_the_request(session, w):
    case = _open(session, w)
    workflow.transition(session, case, "accept", actor=w["reviewer"], awaiting_orgs=[w["provider"].id, w["bureau"].id])
    before = len(_notes(session, w["provider"]))
    workflow.transition(session, case, "vote", actor=w["final"], awaiting_orgs=[w["provider"].id, w["bureau"].id])
    assert len(_notes(session, w["provider"])) == before
    assert [n.kind for n in _notes(session, w["partner"])] == [notifications.CHANGED] * 2  # filed, accepted


def test_outbox_rows_are_written_with_the_notification_and_carry_no_data(session, w, db_settings):
    from authops.platform.governance import outbox

    hook, _ = outbox.create_webhook(session, db_settings, org_id=w["provider"].id, url="https://93.184.215.14/h",
                                    actor=w["reviewer"])
    case = _open(session, w)
    rows = list(session.exec(select(Outbox).where(Outbox.org_id == w["provider"].id).order_by(Outbox.id)))
    assert [(r.channel, r.target, r.state) for r in rows] == [
        ("email", "reviewer@provider.example", "pending"), ("webhook", str(hook.id), "pending")]
    assert rows[0].payload["case_number"] == case.number and rows[0].payload["kind"] == notifications.AWAITING
    everything = json.dumps([r.payload for r in session.exec(select(Outbox))], ensure_ascii=False)
    assert SECRET_GOAL not in everything and "social insurance" not in everything


def test_notifications_roll_back_with_the_transition(session, w):
    case = _open(session, w)
    session.commit()
    workflow.transition(session, case, "accept", actor=w["reviewer"], awaiting_orgs=[w["bureau"].id])
    assert _notes(session, w["bureau"])
    session.rollback()
    assert _notes(session, w["bureau"]) == []
    assert session.exec(select(Outbox).where(Outbox.org_id == w["bureau"].id)).first() is None


def _agreement(session, a, b, kind="usage", state="active", ends_on=None, n=[0]):
    n[0] += 1
    text = f"agreement text {n[0]}"
    ag = Agreement(kind=kind, number=f"AG-T-{n[0]:05d}", party_a_org_id=a.id, party_b_org_id=b.id,
                   terms={"scope": "whole city"}, text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest(),
                   starts_on=date(2024, 1, 1), ends_on=ends_on or date(2030, 1, 1), state=state)
    session.add(ag)
    session.flush()
    return ag


def test_todo_lists_cases_notifications_agreements_and_renewal(session, w):
    now = datetime(2026, 3, 2, 4, 0)
    overdue = _open(session, w, due_at=now - timedelta(hours=1))
    later = _open(session, w, due_at=now + timedelta(days=3))
    operator = make_org(session, OrgKind.OPERATOR)
    pending = _agreement(session, w["provider"], w["partner"], state="pending")
    signed = _agreement(session, w["provider"], w["partner"], state="pending")
    session.add(Acceptance(agreement_id=signed.id, org_id=w["partner"].id, actor_kind="user", text_sha256=signed.text_sha256))
    expiring = _agreement(session, w["partner"], w["bureau"], ends_on=date(2026, 3, 20))
    _agreement(session, w["partner"], w["bureau"], ends_on=date(2026, 6, 20))  # not within 30 days
    # Renewals are filed 12 to 6 months before the term ends: 2025-12-31 .. 2026-06-30.
    auth = _agreement(session, w["bureau"], operator, kind="operator_authorization", ends_on=date(2026, 12, 31))
    session.flush()

    provider = notifications.todo(session, w["reviewer"], now=now)
    assert [(c["number"], c["overdue"]) for c in provider["cases"]] == [(overdue.number, True), (later.number, False)]
    assert provider["overdue"] == 1 and provider["cases"][0]["allowed_actions"] == ["accept"]
    assert provider["notifications"]["unread"] == 2

    partner = notifications.todo(session, w["applicant"], now=now)
    assert partner["cases"] == []
    assert [a["number"] for a in partner["agreements_to_accept"]] == [pending.number]
    assert [(a["number"], a["days_left"]) for a in partner["agreements_expiring"]] == [(expiring.number, 18)]

    op = notifications.todo(session, audit_log.Actor(kind="user", id=1, name="op", org_id=operator.id), now=now)
    assert [r["number"] for r in op["renewals"]] == [auth.number]
    assert (op["renewals"][0]["renewal_opens_on"], op["renewals"][0]["renewal_closes_on"]) == \
        (date(2025, 12, 31), date(2026, 6, 30))
    for outside in (datetime(2025, 12, 20), datetime(2026, 7, 1, 4, 0)):
        assert notifications.todo(session, audit_log.Actor(kind="user", id=1, name="op", org_id=operator.id),
                                  now=outside)["renewals"] == []


def test_flag_due_reminds_once(session, w):
    now = datetime(2026, 3, 2, 4, 0)
    case = _open(session, w, due_at=now - timedelta(hours=1))
    operator = make_org(session, OrgKind.OPERATOR)
    # Ends within 30 days: too late to renew (the window closed 6 months before), but both sides are told.
    auth = _agreement(session, w["bureau"], operator, kind="operator_authorization", ends_on=date(2026, 3, 31))
    renewing = make_org(session, OrgKind.OPERATOR)
    later = _agreement(session, w["bureau"], renewing, kind="operator_authorization", ends_on=date(2026, 12, 31))
    assert notifications.flag_due(session, now) == {"overdue": 1, "renewal_open": 1, "expiring": 2}
    assert notifications.flag_due(session, now + timedelta(hours=5)) == {"overdue": 0, "renewal_open": 0, "expiring": 0}
    [late] = [n for n in _notes(session, w["provider"]) if n.kind == notifications.OVERDUE]
    assert late.title == f'{case.number} "SME credit pilot" is overdue: it was due 2026-03-02 11:00 (Asia/Shanghai)'
    op = [(n.kind, n.agreement_id) for n in _notes(session, operator)]
    assert op == [(notifications.EXPIRING, auth.id)]
    assert [(n.kind, n.agreement_id) for n in _notes(session, renewing)] == [(notifications.RENEWAL_OPEN, later.id)]
    # A new stage with a new deadline can be overdue again.
    workflow.transition(session, case, "accept", actor=w["reviewer"], awaiting_orgs=[w["provider"].id],
                        due_at=now + timedelta(days=1))
    assert notifications.flag_due(session, now + timedelta(days=2))["overdue"] == 1
    # Decided cases are never flagged.
    workflow.transition(session, case, "approve", actor=w["final"])
    assert notifications.flag_due(session, now + timedelta(days=30))["overdue"] == 0


def test_flag_due_now_commits_its_reminders(session, w, db_settings):
    case = _open(session, w, due_at=utcnow() - timedelta(minutes=1))
    session.commit()
    assert notifications.flag_due_now(db_settings) == {"overdue": 1, "renewal_open": 0, "expiring": 0}
    session.expire_all()
    assert [n.kind for n in _notes(session, w["provider"])] == [notifications.AWAITING, notifications.OVERDUE]
    assert notifications.flag_due_now(db_settings)["overdue"] == 0
    assert case.id


def test_mark_read_only_own_notifications(session, w):
    _open(session, w)
    [note] = _notes(session, w["provider"])
    with pytest.raises(NotFound):
        notifications.mark_read(session, w["stranger"].id, note.id)
    assert notifications.mark_read(session, w["provider"].id, note.id).read_at is not None


# --- routes ------------------------------------------------------------------------------------

def test_todo_and_notification_routes(client, session, w):
    case = _open(session, w, due_at=utcnow() - timedelta(minutes=5))
    session.commit()
    h = login(client, w["users"]["provider"].username)
    todo = client.get("/api/v1/governance/todo", headers=h).json()
    assert [(c["number"], c["overdue"]) for c in todo["cases"]] == [(case.number, True)]
    [item] = todo["notifications"]["items"]
    assert item["title"].startswith(f"{case.number} ") and todo["notifications"]["unread"] == 1
    r = client.post(f"/api/v1/governance/notifications/{item['id']}/read", headers=h)
    assert r.status_code == 200 and r.json()["read_at"]
    assert client.get("/api/v1/governance/notifications?unread=true", headers=h).json() == []
    assert len(client.get("/api/v1/governance/notifications", headers=h).json()) == 1
    other = login(client, w["users"]["stranger"].username)
    assert client.post(f"/api/v1/governance/notifications/{item['id']}/read", headers=other).status_code == 404


def test_case_is_visible_to_its_parties_and_bureau_only(client, session, w):
    case = _open(session, w)
    workflow.transition(session, case, "accept", actor=w["reviewer"], awaiting_orgs=[w["bureau"].id])
    session.commit()
    for who in ("partner", "partner_engineer", "provider", "bureau"):
        r = client.get(f"/api/v1/governance/cases/{case.id}", headers=login(client, w["users"][who].username))
        assert r.status_code == 200, (who, r.text)
        assert r.json()["number"] == case.number and r.json()["allowed_actions"] == ["vote", "return", "approve", "reject"]
    r = client.get(f"/api/v1/governance/cases/{case.id}", headers=login(client, w["users"]["stranger"].username))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    h = login(client, w["users"]["partner"].username)
    assert [x["action"] for x in client.get(f"/api/v1/governance/cases/{case.id}", headers=h).json()["history"]] == [
        "submit", "accept"]
    assert client.get("/api/v1/governance/cases/999999", headers=h).status_code == 404


def test_document_download_is_audited(client, session, w, db_settings):
    case = _open(session, w)
    content = "安全措施：最小可发布单元 10".encode()
    doc = workflow.add_document(session, get_object_store(db_settings), case, material="security measures",
                                filename="安全措施.txt", content=content, actor=w["applicant"],
                                content_type="text/plain")
    session.commit()
    url = f"/api/v1/governance/cases/{case.id}/documents/{doc.id}"
    r = client.get(url, headers=login(client, w["users"]["provider"].username))
    assert r.status_code == 200 and r.content == content
    assert r.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    session.expire_all()
    [ev] = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.document.read")).all()
    assert ev.nbytes == len(content) and ev.org_id == w["provider"].id and ev.object_id == str(doc.id)
    assert client.get(url, headers=login(client, w["users"]["stranger"].username)).status_code == 404
    other = _open(session, w)
    session.commit()
    r = client.get(f"/api/v1/governance/cases/{other.id}/documents/{doc.id}",
                   headers=login(client, w["users"]["partner"].username))
    assert r.status_code == 404 and "has no document" in r.json()["error"]["message"]


def test_webhook_routes_show_the_secret_once(client, session, w):
    h = login(client, w["users"]["partner"].username)
    r = client.post("/api/v1/governance/webhooks", json={"url": "https://93.184.215.14/authops"}, headers=h)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert len(secret) >= 40
    listed = client.get("/api/v1/governance/webhooks", headers=h).json()
    assert [x["url"] for x in listed] == ["https://93.184.215.14/authops"] and "secret" not in listed[0]
    session.expire_all()
    stored = session.get(Webhook, r.json()["id"]).secret
    assert secret not in stored and stored != secret
    for bad in ("ftp://x.example/h", "hooks.example.org", "https://user:pw@hooks.example.org/"):
        r2 = client.post("/api/v1/governance/webhooks", json={"url": bad}, headers=h)
        assert r2.status_code == 422 and r2.json()["error"]["details"] == {"field": "url"}, bad
    other = login(client, w["users"]["stranger"].username)
    assert client.delete(f"/api/v1/governance/webhooks/{r.json()['id']}", headers=other).status_code == 404
    assert client.delete(f"/api/v1/governance/webhooks/{r.json()['id']}", headers=h).json()["active"] is False
    assert client.get("/api/v1/governance/webhooks", headers=h).json() == []
    assert client.delete(f"/api/v1/governance/webhooks/{r.json()['id']}", headers=h).status_code == 404
