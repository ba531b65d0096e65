"""The log: every action leaves a chained event in its own transaction, and nothing else."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from authops.audit import canonical
from authops.audit import log as audit_log
from authops.audit.models import AuditEvent, AuditHead
from authops.core.identity import OrgKind
from authops.platform.identity.models import ApiKey
from tests.support.builders import login, make_org, make_user


def _events(session) -> list[AuditEvent]:
    session.expire_all()
    return list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all())


def test_events_form_an_exact_hash_chain(session):
    for i in range(5):
        audit_log.record(session, audit_log.SYSTEM, "test.action", object_id=i, rows=i)
        if i % 2:
            session.commit()
    session.commit()
    events = _events(session)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    prev = canonical.GENESIS
    for e in events:
        body = canonical.decode(e.canonical)
        assert body["seq"] == e.seq and body["prev"] == prev == e.prev_hash
        assert canonical.chain_hash(e.canonical) == e.hash
        prev = e.hash
    head = session.get(AuditHead, 1)
    assert (head.seq, head.hash) == (5, events[-1].hash)


def test_rolled_back_actions_leave_no_event(session):
    audit_log.record(session, audit_log.SYSTEM, "test.never")
    session.rollback()
    audit_log.record(session, audit_log.SYSTEM, "test.kept")
    session.commit()
    assert [e.action for e in _events(session)] == ["test.kept"]


def test_http_actions_and_refusals_are_logged_without_secrets(client, session):
    bank = make_org(session, OrgKind.CUSTOMER)
    admin = make_user(session, bank, "customer_admin")
    dev = make_user(session, bank, "customer_integrator")
    session.commit()
    headers = login(client, admin.username)
    created = client.post("/api/v1/api-keys", headers=headers, json={"name": "k", "scopes": ["self.read"]}).json()
    client.get("/api/v1/api-keys", headers=login(client, dev.username))  # refused: 403
    client.post("/api/v1/auth/login", json={"username": dev.username, "password": "Wrong-pass-99"})
    client.get("/api/v1/me", headers={"Authorization": "Bearer ato_nope"})
    events = _events(session)
    summary = [(e.action, e.outcome) for e in events]
    assert ("apikey.create", "ok") in summary
    assert ("authz.denied", "denied") in summary
    assert ("auth.login", "denied") in summary
    assert ("auth.rejected", "denied") in summary
    create = next(e for e in events if e.action == "apikey.create")
    assert (create.actor_id, create.org_id, create.object_id) == (admin.id, bank.id, str(created["id"]))
    assert create.ip and create.region
    everything = b"".join(e.canonical for e in events)
    assert created["key"].encode() not in everything and b"Wrong-pass-99" not in everything


def _break_log_writes(session):
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'log unavailable'; END $$"))
        session.execute(text("CREATE TRIGGER test_break BEFORE INSERT ON audit_event "
                             "FOR EACH ROW EXECUTE FUNCTION test_fail()"))
    else:
        session.execute(text("CREATE TRIGGER test_break BEFORE INSERT ON audit_event "
                             "BEGIN SELECT RAISE(ABORT, 'log unavailable'); END"))
    session.commit()


def _mend_log_writes(session):
    session.execute(text("DROP TRIGGER test_break" + (" ON audit_event" if session.get_bind().dialect.name
                                                       == "postgresql" else "")))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("DROP FUNCTION test_fail()"))
    session.commit()


def test_an_action_whose_event_cannot_be_written_does_not_happen(app, client, session):
    from fastapi.testclient import TestClient

    bank = make_org(session, OrgKind.CUSTOMER)
    admin = make_user(session, bank, "customer_admin")
    session.commit()
    headers = login(client, admin.username)
    _break_log_writes(session)
    try:
        r = TestClient(app, raise_server_exceptions=False).post(
            "/api/v1/api-keys", headers=headers, json={"name": "k", "scopes": ["self.read"]})
        assert r.status_code == 500 and "log unavailable" not in r.text
        session.expire_all()
        assert session.exec(select(ApiKey)).first() is None, "the key was created without its event"
    finally:
        _mend_log_writes(session)
    r = client.post("/api/v1/api-keys", headers=headers, json={"name": "k", "scopes": ["self.read"]})
    assert r.status_code == 201


def test_the_log_refuses_edits_and_deletions(session):
    audit_log.record(session, audit_log.SYSTEM, "test.action")
    session.commit()
    for statement in ("UPDATE audit_event SET action = 'forged'", "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
        session.rollback()
    if session.get_bind().dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text("TRUNCATE audit_event"))
        session.rollback()
    assert [e.action for e in _events(session)] == ["test.action"]


def test_details_refuse_floats(session):
    with pytest.raises(ValueError, match="floats"):
        audit_log.record(session, audit_log.SYSTEM, "test.action", details={"x": 0.1})


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_the_application_role_may_append_but_not_edit(db_settings, session):
    """PostgreSQL grants (SQLite relies on the triggers tested above)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool
    from sqlmodel import Session as S

    from authops.audit.grants import grant_app_role

    # Role switches stay on connections of their own that are really closed afterwards:
    # a pooled connection left with SET ROLE (or mid-transaction) must never reach other code.
    role = f"authops_app_{uuid.uuid4().hex[:12]}"  # roles are cluster-wide; never share one
    engine = create_engine(db_settings.effective_database_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(text(f"CREATE ROLE {role}"))
    try:
        grant_app_role(engine, role)
        audit_log.record(session, audit_log.SYSTEM, "test.seed")
        session.commit()
        for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event", "TRUNCATE audit_event"):
            with engine.connect() as conn:
                conn.execute(text(f"SET ROLE {role}"))
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text(statement))
                conn.rollback()
        with engine.connect() as conn:  # the role can still append through the chain
            conn.execute(text(f"SET ROLE {role}"))
            with S(bind=conn) as s2:
                audit_log.record(s2, audit_log.SYSTEM, "test.as_app_role")
                s2.commit()
            conn.commit()
        session.rollback()
        assert [e.action for e in _events(session)] == ["test.seed", "test.as_app_role"]
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        engine.dispose()
