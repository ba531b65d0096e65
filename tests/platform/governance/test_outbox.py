"""Outbox delivery: signed webhooks to a real local HTTP server, emails as .eml files or over SMTP to
a socket stub, backoff and failure, and claims that keep two workers from sending a row twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import socketserver
import threading
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.errors import InvalidInput
from authops.core.identity import OrgKind
from authops.core.settings import Mode
from authops.platform.governance import notifications, outbox
from authops.platform.governance.models import Outbox, Webhook
from tests.support.builders import login, make_org, make_user


class _Hook:
    """A real HTTP server in a thread that records what it receives and answers `status`."""

    def __init__(self, status: int = 204, delay: float = 0.0) -> None:
        self.status, self.delay, self.received = status, delay, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.delay:
                    threading.Event().wait(hook.delay)
                hook.received.append((dict(self.headers), body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/authops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def private_hosts(db_settings, monkeypatch):
    """These tests post to servers on 127.0.0.1: allow private hosts explicitly (off by default)."""
    monkeypatch.setattr(db_settings, "webhook_allow_private_hosts", True)
    return db_settings


@pytest.fixture
def hook_server(private_hosts):
    servers = []

    def make(**kw):
        servers.append(_Hook(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def org(session):
    o = make_org(session, OrgKind.PARTNER)
    session.commit()
    return o


def _actor(org):
    return audit_log.Actor(kind="user", id=1, name="admin", org_id=org.id)


def _notify(session, org, title="SC-2026-00001 awaits your review"):
    notifications.notify(session, [org.id], "case.awaiting", title, "Open /api/v1/governance/cases/1.")
    session.commit()


def _rows(session):
    session.expire_all()
    return list(session.exec(select(Outbox).order_by(Outbox.id)))


def test_webhook_is_signed_with_the_secret_shown_once(session, db_settings, org, hook_server):
    srv = hook_server()
    hook, secret = outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    _notify(session, org)
    assert outbox.deliver_due(db_settings) == {"sent": 1, "retry": 0, "failed": 0, "lost": 0}
    [(headers, body)] = srv.received
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Authops-Signature"] == expected
    assert hmac.new(b"another secret", body, hashlib.sha256).hexdigest() != expected
    sent = json.loads(body)
    assert sent["title"] == "SC-2026-00001 awaits your review" and sent["kind"] == "case.awaiting"
    [row] = _rows(session)
    assert row.state == "sent" and row.attempts == 1 and row.sent_at is not None
    assert headers["X-Authops-Delivery"] == str(row.id)
    assert outbox.deliver_due(db_settings)["sent"] == 0 and len(srv.received) == 1  # never twice


def test_failing_endpoint_is_retried_with_backoff_then_failed(session, db_settings, org, hook_server, caplog):
    srv = hook_server(status=500)
    _, secret = outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    _notify(session, org)
    caplog.set_level(logging.DEBUG)
    t0 = utcnow()
    assert outbox.deliver_due(db_settings, now=t0, max_attempts=3)["retry"] == 1
    [row] = _rows(session)
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "the webhook answered HTTP 500")
    assert row.next_at == t0 + timedelta(seconds=30)
    assert outbox.deliver_due(db_settings, now=t0 + timedelta(seconds=29), max_attempts=3)["retry"] == 0  # not yet
    t1 = t0 + timedelta(seconds=31)
    assert outbox.deliver_due(db_settings, now=t1, max_attempts=3)["retry"] == 1
    [row] = _rows(session)
    assert row.attempts == 2 and row.next_at == t1 + timedelta(seconds=60)  # doubled
    assert outbox.deliver_due(db_settings, now=t1 + timedelta(seconds=61), max_attempts=3)["failed"] == 1
    [row] = _rows(session)
    assert (row.state, row.attempts) == ("failed", 3) and len(srv.received) == 3
    assert outbox.deliver_due(db_settings, now=t1 + timedelta(days=1), max_attempts=3)["failed"] == 0
    [ev] = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.outbox.failed")).all()
    assert ev.object_id == str(row.id)
    assert secret not in caplog.text and secret not in json.dumps([r.payload for r in _rows(session)])


def test_backoff_doubles_and_is_capped():
    assert [outbox.backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert outbox.backoff(30).total_seconds() == outbox.BACKOFF_MAX_SECONDS


def test_unreachable_endpoint_is_retried(session, db_settings, org, private_hosts):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outbox.create_webhook(session, db_settings, org_id=org.id, url=f"http://127.0.0.1:{port}/h", actor=_actor(org))
    _notify(session, org)
    assert outbox.deliver_due(db_settings)["retry"] == 1
    [row] = _rows(session)
    assert row.state == "pending" and row.last_error.startswith("ConnectError")


def test_a_deleted_webhook_fails_at_once(session, db_settings, org, hook_server):
    srv = hook_server()
    hook, _ = outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    _notify(session, org)
    outbox.delete_webhook(session, org.id, hook.id, actor=_actor(org))
    session.commit()
    assert outbox.deliver_due(db_settings)["failed"] == 1
    [row] = _rows(session)
    assert (row.state, row.last_error) == ("failed", "the webhook was deleted") and srv.received == []
    _notify(session, org)  # no active webhook: nothing new is queued
    assert len(_rows(session)) == 1


def test_two_workers_never_send_a_row_twice(session, db_settings, org, hook_server):
    srv = hook_server(delay=0.05)
    outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    for i in range(6):
        _notify(session, org, f"case {i}")
    results, errors = [], []

    def worker():
        try:
            results.append(outbox.deliver_due(db_settings))
        except Exception as e:  # pragma: no cover - shown in the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    deliveries = [h["X-Authops-Delivery"] for h, _ in srv.received]
    assert len(deliveries) == 6 and len(set(deliveries)) == 6
    assert sum(r["sent"] for r in results) == 6
    assert {r.state for r in _rows(session)} == {"sent"}


def test_a_claim_is_won_once_and_a_dead_workers_claim_comes_back(session, db_settings, org, hook_server):
    srv = hook_server()
    outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    _notify(session, org)
    [row] = _rows(session)
    now = utcnow()
    assert outbox._claim(db_settings, row.id, 0, now) is True
    assert outbox._claim(db_settings, row.id, 0, now) is False  # the other worker loses
    assert outbox.deliver_due(db_settings, now=now)["sent"] == 0  # claimed: not due until the claim lapses
    later = now + timedelta(seconds=outbox.CLAIM_SECONDS + 1)  # the claimer died mid-send
    assert outbox.deliver_due(db_settings, now=later)["sent"] == 1
    [row] = _rows(session)
    assert (row.state, row.attempts) == ("sent", 2) and len(srv.received) == 1


def test_email_without_smtp_is_written_as_eml(session, db_settings, org, monkeypatch):
    monkeypatch.delenv(outbox.SMTP_HOST_ENV, raising=False)
    user = make_user(session, org)
    user.email = "ops@partner.example"
    session.add(user)
    _notify(session, org)
    assert outbox.deliver_due(db_settings)["sent"] == 1
    [row] = _rows(session)
    path = db_settings.data_path / "outbox" / f"{row.id:08d}.eml"
    msg = message_from_bytes(path.read_bytes(), policy=email_policy)
    assert msg["To"] == "ops@partner.example" and msg["Subject"] == "SC-2026-00001 awaits your review"
    assert "Open /api/v1/governance/cases/1." in msg.get_content()


class _SmtpStub(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT."""

    messages: list = []

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self._say("220 stub ESMTP")
        envelope = {"rcpt": []}
        while True:
            line = self.rfile.readline().decode().rstrip("\r\n")
            if not line:
                return
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250 stub")
            elif verb == "MAIL":
                envelope["from"] = line
                self._say("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line)
                self._say("250 ok")
            elif verb == "DATA":
                self._say("354 end with .")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    data += self.rfile.readline()
                type(self).messages.append((envelope, data[:-5]))
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("250 ok")


def test_email_over_smtp(session, db_settings, org, monkeypatch):
    _SmtpStub.messages = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(outbox.SMTP_HOST_ENV, "127.0.0.1")
        monkeypatch.setenv(outbox.SMTP_PORT_ENV, str(server.server_address[1]))
        monkeypatch.setenv(outbox.SMTP_FROM_ENV, "noreply@bureau.example")
        user = make_user(session, org)
        user.email = "ops@partner.example"
        session.add(user)
        _notify(session, org)
        assert outbox.deliver_due(db_settings)["sent"] == 1
    finally:
        server.shutdown()
        server.server_close()
    [(envelope, data)] = _SmtpStub.messages
    assert "ops@partner.example" in envelope["rcpt"][0] and "noreply@bureau.example" in envelope["from"]
    msg = message_from_bytes(data, policy=email_policy)
    assert msg["Subject"] == "SC-2026-00001 awaits your review"
    assert not (db_settings.data_path / "outbox").exists()  # not written as a file


def test_smtp_down_is_retried(session, db_settings, org, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(outbox.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(outbox.SMTP_PORT_ENV, str(port))
    user = make_user(session, org)
    user.email = "ops@partner.example"
    session.add(user)
    _notify(session, org)
    assert outbox.deliver_due(db_settings)["retry"] == 1
    [row] = _rows(session)
    assert row.state == "pending" and row.last_error.startswith(f"SMTP 127.0.0.1:{port}: ConnectionRefusedError")


def test_a_secret_under_another_key_fails_clearly(session, db_settings, org, hook_server):
    srv = hook_server()
    hook, _ = outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    session.exec(update(type(hook)).where(type(hook).id == hook.id)
                 .values(secret=outbox.seal_secret(db_settings, hook.id + 1, "x")))  # sealed for another row
    _notify(session, org)
    assert outbox.deliver_due(db_settings)["failed"] == 1
    [row] = _rows(session)
    assert "secret cannot be opened" in row.last_error and srv.received == []


# --- where webhooks may point (SSRF) ----------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:5432/",
                                 "http://localhost:8000/x", "http://10.1.2.3/hook", "http://[::1]/hook",
                                 "http://224.0.0.1/hook", "http://0.0.0.0/hook", "http://[::ffff:127.0.0.1]/h"])
def test_a_webhook_into_the_platforms_networks_is_refused(session, db_settings, org, url):
    with pytest.raises(InvalidInput) as exc:
        outbox.create_webhook(session, db_settings, org_id=org.id, url=url, actor=_actor(org))
    assert exc.value.code == "webhook_host_refused" and exc.value.details == {"field": "url"}
    assert "public addresses only" in exc.value.message
    assert session.exec(select(Webhook)).all() == []


def test_the_address_is_checked_again_when_sending(session, db_settings, org, hook_server, monkeypatch):
    """Made while private hosts were allowed (or the DNS answer changed since): delivery refuses, for good."""
    srv = hook_server()
    outbox.create_webhook(session, db_settings, org_id=org.id, url=srv.url, actor=_actor(org))
    _notify(session, org)
    monkeypatch.setattr(db_settings, "webhook_allow_private_hosts", False)
    assert outbox.deliver_due(db_settings)["failed"] == 1
    [row] = _rows(session)
    assert row.state == "failed" and "loopback" in row.last_error and srv.received == []


def test_a_public_address_is_accepted_and_production_wants_https(session, db_settings, org, monkeypatch):
    hook, _ = outbox.create_webhook(session, db_settings, org_id=org.id, url="https://93.184.215.14/hook",
                                    actor=_actor(org))
    assert hook.url == "https://93.184.215.14/hook"
    monkeypatch.setattr(db_settings, "mode", Mode.PRODUCTION)
    with pytest.raises(InvalidInput) as exc:
        outbox.create_webhook(session, db_settings, org_id=org.id, url="http://93.184.215.14/hook", actor=_actor(org))
    assert "https" in exc.value.message and exc.value.details == {"field": "url"}


def test_the_webhook_route_refuses_the_metadata_address(client, session, org):
    user = make_user(session, org, "partner_admin")
    session.commit()
    r = client.post("/api/v1/governance/webhooks", headers=login(client, user.username),
                    json={"url": "http://169.254.169.254/latest/meta-data"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_host_refused"
    assert "link-local" in r.json()["error"]["message"]
