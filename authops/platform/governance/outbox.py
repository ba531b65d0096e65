"""The outbox: emails and webhook calls written in the transaction that caused them, delivered later.

`enqueue` (called by notifications.notify) adds one row per recipient: an email for each
active user of the organisation with an address, a webhook message for each active webhook.
`deliver_due` sends what is due:

- a row is *claimed* with one conditional UPDATE (state pending -> sending, attempts + 1,
  next_at pushed out by CLAIM_SECONDS) that only one worker can win, and committed before
  anything is sent, so two workers never send it twice; a worker that dies mid-send leaves a
  claim that becomes due again after CLAIM_SECONDS (delivery is at least once: receivers
  dedupe on the X-Authops-Delivery header, the outbox row id);
- a webhook is a JSON POST whose X-Authops-Signature header is the HMAC-SHA256 (hex) of the
  exact body under the webhook's secret. The secret is shown once when the webhook is made and
  stored sealed (AES-256-GCM under a key derived from settings.secret_key); it is never logged;
- a webhook's host must resolve to public addresses only: loopback, private, link-local,
  multicast, reserved and other non-global addresses are refused when the webhook is made and again
  at every delivery (the connection is pinned to the address checked, so a changed DNS answer
  cannot redirect it); production mode also requires https. `webhook_allow_private_hosts` (default
  off) lifts the address rule for labs and tests;
- an email goes to the SMTP server in AUTHOPS_SMTP_HOST / AUTHOPS_SMTP_PORT (default 25) from
  AUTHOPS_SMTP_FROM; with no server configured (the embedded default) it is written as an
  .eml file under <data dir>/outbox/, one file per outbox row;
- a failure is retried with exponential backoff (BACKOFF_SECONDS * 2^(attempt-1), at most
  BACKOFF_MAX_SECONDS) until MAX_ATTEMPTS, then the row is "failed" with its last error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import smtplib
import socket
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import update
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.clock import show, utcnow
from authops.core.db import session_scope
from authops.core.errors import InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Mode, Settings
from authops.platform.governance.models import Notification, Outbox, Webhook
from authops.platform.identity.models import User

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
MAX_ATTEMPTS = 8
BACKOFF_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 6 * 3600.0
CLAIM_SECONDS = 300  # a claim older than this (its worker died) is due again
TIMEOUT_SECONDS = 10.0
SMTP_HOST_ENV, SMTP_PORT_ENV, SMTP_FROM_ENV = "AUTHOPS_SMTP_HOST", "AUTHOPS_SMTP_PORT", "AUTHOPS_SMTP_FROM"
DEFAULT_FROM = "authops@localhost"


def backoff(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    return timedelta(seconds=min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** max(0, attempts - 1)))


# --- webhooks ------------------------------------------------------------------------------------

def _secret_key(settings: Settings) -> bytes:
    root = hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest()
    return crypto.derive_key(root, "governance/webhook-secret")


def _aad(webhook_id: int) -> bytes:
    return f"gov_webhook:{webhook_id}".encode()


def seal_secret(settings: Settings, webhook_id: int, secret: str) -> str:
    return base64.b64encode(crypto.aead_encrypt(_secret_key(settings), secret.encode(), _aad(webhook_id))).decode()


def open_secret(settings: Settings, webhook: Webhook) -> bytes:
    """The webhook's HMAC key (the secret's UTF-8 bytes)."""
    return crypto.aead_decrypt(_secret_key(settings), base64.b64decode(webhook.secret), _aad(int(webhook.id or 0)),
                               what=f"webhook {webhook.id} secret")


class UnsafeWebhookHost(InvalidInput):
    code = "webhook_host_refused"


class UnresolvableWebhookHost(InvalidInput):
    code = "webhook_host_unresolvable"


def _refused_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for what, hit in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                      ("multicast", ip.is_multicast), ("private", ip.is_private), ("reserved", ip.is_reserved),
                      ("unspecified", ip.is_unspecified), ("not globally routable", not ip.is_global)):
        if hit:
            return what
    return None


def resolve_host(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses `host` resolves to, all of them public (loopback, private, link-local, multicast,
    reserved and other non-global addresses are refused unless settings.webhook_allow_private_hosts)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise UnresolvableWebhookHost(f"webhook host {host!r} does not resolve ({e}); give a public address",
                                details={"field": "url"}) from None
    addresses = list(dict.fromkeys(str(i[4][0]) for i in infos))
    if not settings.webhook_allow_private_hosts:
        for a in addresses:
            why = _refused_reason(ipaddress.ip_address(a.split("%")[0]))
            if why:
                raise UnsafeWebhookHost(f"webhook host {host!r} resolves to {a}, a {why} address: webhooks go to "
                                        "public addresses only (the platform's own networks are off limits)",
                                        details={"field": "url"})
    return addresses


def _port(parts: Any) -> int:
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("webhook url has an invalid port", details={"field": "url"}) from None


def check_url(url: str, settings: Settings | None = None) -> str:
    """Validate a webhook address; with settings also resolve its host and refuse non-public addresses,
    and (production mode) anything but https."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("webhook url must be an http:// or https:// address with a host, e.g. "
                           "https://example.org/authops-hook", details={"field": "url"})
    if parts.username or parts.password:
        raise InvalidInput("put no credentials in the webhook url: check the X-Authops-Signature header "
                           "with the secret instead", details={"field": "url"})
    if len(url) > 500:
        raise InvalidInput("webhook url is longer than 500 characters", details={"field": "url"})
    port = _port(parts)
    if settings is not None:
        if settings.mode is Mode.PRODUCTION and parts.scheme != "https":
            raise InvalidInput("webhook url must be https:// in production (the messages are signed, not "
                               "encrypted)", details={"field": "url"})
        resolve_host(parts.hostname, port, settings)
    return url


def create_webhook(session: Session, settings: Settings, *, org_id: int, url: str,
                   actor: audit_log.Actor | Principal) -> tuple[Webhook, str]:
    """Register a webhook; returns it with its secret, which is shown this once and stored sealed. Its host
    must resolve to public addresses only (checked again at every delivery)."""
    url = check_url(url, settings)
    secret = secrets.token_urlsafe(32)
    hook = Webhook(org_id=org_id, url=url, secret="-", active=True, created_at=utcnow())
    session.add(hook)
    session.flush()
    hook.secret = seal_secret(settings, int(hook.id or 0), secret)
    session.add(hook)
    session.flush()
    audit_log.record(session, actor, "gov.webhook.create", object_type="webhook", object_id=hook.id,
                     details={"org_id": org_id, "host": urlsplit(url).hostname})
    return hook, secret


def list_webhooks(session: Session, org_id: int) -> list[Webhook]:
    return list(session.exec(select(Webhook).where(Webhook.org_id == org_id, Webhook.active).order_by(Webhook.id)))


def delete_webhook(session: Session, org_id: int, webhook_id: int, *, actor: audit_log.Actor | Principal) -> Webhook:
    """Deactivate one of the organisation's webhooks; its undelivered messages fail."""
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.org_id != org_id or not hook.active:
        raise NotFound(f"no webhook {webhook_id}")
    hook.active = False
    session.add(hook)
    session.flush()
    audit_log.record(session, actor, "gov.webhook.delete", object_type="webhook", object_id=hook.id,
                     details={"org_id": org_id})
    return hook


def webhook_view(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "org_id": hook.org_id, "url": hook.url, "active": hook.active,
            "created_at": hook.created_at}


# --- enqueue -------------------------------------------------------------------------------------

def _iso(at: datetime | None) -> str | None:
    return at.isoformat() + "Z" if at else None


def message_of(n: Notification, *, case_number: str | None = None,
               agreement_number: str | None = None) -> dict[str, Any]:
    """What every channel carries: the notification's title and numbers, never data values."""
    return {"event": "notification", "notification_id": n.id, "org_id": n.org_id, "kind": n.kind,
            "title": n.title, "body": n.body, "case_id": n.case_id, "case_number": case_number,
            "agreement_id": n.agreement_id, "agreement_number": agreement_number,
            "due_at": _iso(n.due_at), "due_at_local": show(n.due_at), "created_at": _iso(n.created_at)}


def enqueue(session: Session, n: Notification, *, case_number: str | None = None,
            agreement_number: str | None = None) -> list[Outbox]:
    """Queue the notification's emails and webhook calls in the caller's transaction."""
    message = message_of(n, case_number=case_number, agreement_number=agreement_number)
    now = utcnow()
    rows = []
    addresses = session.exec(select(User.email).where(User.org_id == n.org_id, User.is_active,
                                                      User.email.is_not(None)).order_by(User.id))  # type: ignore[union-attr]
    for address in dict.fromkeys(a.strip() for a in addresses if a and a.strip()):
        rows.append(Outbox(channel="email", target=address[:500], org_id=n.org_id, subject=n.title[:300],
                           payload=message, next_at=now, created_at=now))
    for hook in list_webhooks(session, n.org_id):
        rows.append(Outbox(channel="webhook", target=str(hook.id), org_id=n.org_id, subject=n.title[:300],
                           payload=message, next_at=now, created_at=now))
    for r in rows:
        session.add(r)
    session.flush()
    return rows


# --- delivery ------------------------------------------------------------------------------------

class DeliveryError(Exception):
    """One attempt failed; the message says why (no secrets, no bodies)."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (e.g. the webhook's host is refused): the row fails at once."""


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _pinned(url: str, settings: Settings) -> tuple[str, str, dict[str, Any]]:
    """Resolve the webhook's host now, refuse non-public addresses, and pin the connection to the address
    checked (so a DNS answer that changes between the check and the connection cannot redirect it).
    Returns (url with the address, Host header, request extensions for TLS server name)."""
    try:
        check_url(url)  # the stored url, re-validated
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = _port(parts)
        if settings.mode is Mode.PRODUCTION and parts.scheme != "https":
            raise InvalidInput("webhook url must be https:// in production")
        address = resolve_host(host, port, settings)[0]
    except UnresolvableWebhookHost as e:  # DNS may come back: retried like any failure
        raise DeliveryError(e.message[:400]) from None
    except InvalidInput as e:
        raise PermanentDeliveryError(f"refused: {e.message}"[:400]) from None
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    host_header = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl(), host_header, {"sni_hostname": host}


def _send_webhook(row_id: int, url: str, secret: bytes, payload: dict[str, Any], timeout: float,
                  settings: Settings | None = None) -> None:
    body = body_bytes(payload)
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "authops-outbox/1",
               "X-Authops-Signature": signature(secret, body), "X-Authops-Delivery": str(row_id),
               "X-Authops-Event": str(payload.get("kind", ""))}
    extensions: dict[str, Any] = {}
    if settings is not None:
        url, headers["Host"], extensions = _pinned(url, settings)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as http:
            r = http.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as e:
        raise DeliveryError(f"{type(e).__name__}: {e}"[:400]) from None
    if not 200 <= r.status_code < 300:
        raise DeliveryError(f"the webhook answered HTTP {r.status_code}")


def smtp_config() -> tuple[str, int, str] | None:
    host = os.environ.get(SMTP_HOST_ENV, "").strip()
    if not host:
        return None
    port = os.environ.get(SMTP_PORT_ENV, "").strip() or "25"
    if not port.isdigit():
        raise DeliveryError(f"{SMTP_PORT_ENV} must be a port number, not {port!r}")
    return host, int(port), os.environ.get(SMTP_FROM_ENV, "").strip() or DEFAULT_FROM


def email_of(row_id: int, to: str, subject: str, payload: dict[str, Any], sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject or str(payload.get("title", ""))
    msg["Message-ID"] = f"<outbox-{row_id}@authops>"
    msg["X-Authops-Delivery"] = str(row_id)
    lines = [str(payload.get("title", "")), "", str(payload.get("body", ""))]
    if payload.get("due_at_local"):
        lines += ["", f"Due: {payload['due_at_local']} (Asia/Shanghai)"]
    lines += ["", "-- ", "AuthOps governance notifications"]
    msg.set_content("\n".join(lines))
    return msg


def outbox_dir(settings: Settings) -> Path:
    return settings.data_path / "outbox"


def _send_email(settings: Settings, row_id: int, to: str, subject: str, payload: dict[str, Any],
                timeout: float) -> str:
    config = smtp_config()
    sender = config[2] if config else (os.environ.get(SMTP_FROM_ENV, "").strip() or DEFAULT_FROM)
    msg = email_of(row_id, to, subject, payload, sender)
    if config is None:  # embedded: a file per message, rewritten whole if an attempt is repeated
        folder = outbox_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{row_id:08d}.eml"
        tmp = path.with_suffix(".eml.tmp")
        tmp.write_bytes(msg.as_bytes())
        os.replace(tmp, path)
        return str(path)
    host, port, _ = config
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"SMTP {host}:{port}: {type(e).__name__}: {e}"[:400]) from None
    return f"smtp://{host}:{port}"


def _claim(settings: Settings, row_id: int, seen_attempts: int, now: datetime) -> bool:
    with session_scope(settings) as s:
        res = s.exec(update(Outbox).where(Outbox.id == row_id, Outbox.state.in_((PENDING, SENDING)),  # type: ignore[union-attr]
                                          Outbox.next_at <= now, Outbox.attempts == seen_attempts)
                     .values(state=SENDING, attempts=seen_attempts + 1,
                             next_at=now + timedelta(seconds=CLAIM_SECONDS))
                     .execution_options(synchronize_session=False))
        return res.rowcount == 1


def _settle(settings: Settings, row_id: int, attempt: int, now: datetime, error: str | None,
            max_attempts: int, *, permanent: bool = False) -> str:
    if error is None:
        values: dict[str, Any] = {"state": SENT, "sent_at": now, "last_error": ""}
        outcome = SENT
    elif permanent or attempt >= max_attempts:
        values = {"state": FAILED, "last_error": error[:500]}
        outcome = FAILED
    else:
        values = {"state": PENDING, "last_error": error[:500], "next_at": now + backoff(attempt)}
        outcome = "retry"
    with session_scope(settings) as s:
        res = s.exec(update(Outbox).where(Outbox.id == row_id, Outbox.state == SENDING, Outbox.attempts == attempt)
                     .values(**values).execution_options(synchronize_session=False))
        if res.rowcount != 1:  # our claim expired and another worker took the row over
            return "lost"
        if outcome == FAILED:
            audit_log.record(s, audit_log.SYSTEM, "gov.outbox.failed", outcome="error", object_type="outbox",
                             object_id=row_id, details={"attempts": attempt, "error": error[:200]})
    return outcome


def deliver_due(settings: Settings, now: datetime | None = None, limit: int = 100, *,
                max_attempts: int = MAX_ATTEMPTS, timeout: float = TIMEOUT_SECONDS) -> dict[str, int]:
    """Send up to `limit` due messages; returns counts (sent, retry, failed, lost). Safe on several workers."""
    now = now or utcnow()
    counts = {SENT: 0, "retry": 0, FAILED: 0, "lost": 0}
    with session_scope(settings) as s:
        due = s.exec(select(Outbox.id, Outbox.attempts).where(Outbox.state.in_((PENDING, SENDING)),  # type: ignore[union-attr]
                                                             Outbox.next_at <= now)
                     .order_by(Outbox.next_at, Outbox.id).limit(limit)).all()
    for row_id, seen in due:
        if not _claim(settings, row_id, seen, now):
            continue  # another worker has it
        attempt = seen + 1
        error: str | None = None
        hook_secret = b""
        with session_scope(settings) as s:
            row = s.get(Outbox, row_id)
            hook = s.get(Webhook, int(row.target)) if row.channel == "webhook" and row.target.isdigit() else None
            channel, target, subject, payload = row.channel, row.target, row.subject, dict(row.payload)
            hook_url = hook.url if hook is not None and hook.active else None
            try:
                if hook_url:
                    hook_secret = open_secret(settings, hook)
            except Exception as e:  # a secret sealed under another secret_key
                hook_url, error = None, f"the webhook secret cannot be opened ({type(e).__name__}); make a new webhook"
        permanent = error is not None
        try:
            if error is not None:
                pass
            elif channel == "webhook":
                if hook_url is None:
                    error, permanent = "the webhook was deleted", True
                else:
                    _send_webhook(row_id, hook_url, hook_secret, payload, timeout, settings)
            elif channel == "email":
                _send_email(settings, row_id, target, subject, payload, timeout)
            else:
                error, permanent = f"unknown channel {channel!r}", True
        except PermanentDeliveryError as e:
            error, permanent = str(e), True
        except DeliveryError as e:
            error = str(e)
        except Exception as e:  # an unexpected fault (a full disk...): retried like any failure
            log.exception("outbox %s: delivery raised", row_id)
            error = f"{type(e).__name__}: {e}"[:400]
        outcome = _settle(settings, row_id, attempt, now, error, max_attempts, permanent=permanent)
        counts[outcome] += 1
        if error:
            log.info("outbox %s (%s) attempt %s: %s -> %s", row_id, channel, attempt, error, outcome)
    return counts
