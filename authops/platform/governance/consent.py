"""Personal consent (BRIEF 6): a product touching personal information serves a customer only for
subjects who authorized it, checked on every call; a revocation counts from the next call.

The subject is stored as a keyed pseudonym: HMAC-SHA256 of the normalized ID number under a key
derived from the platform secret (never the raw ID, and nothing anyone without the key can
recompute from an ID). The subject signs one of:

(a) the canonical consent text (`consent_text`: deterministic JSON of the pseudonym, product code,
    customer, purpose, scope and validity) with an Ed25519 key; the raw public key comes with it;
(b) an authorization document (e.g. a signed PDF), with a detached Ed25519 signature over the
    document's exact bytes by the subject's public key; the document is stored encrypted in the
    object store and its SHA-256 on the record.

A signature that does not verify is refused. Revocation: by the subject, signing
`revocation_text(consent)` with the consent's key (a public route: the signature authenticates),
or by the customer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings, get_settings
from authops.platform.governance.models import Consent, Product
from authops.platform.identity.models import Organisation

SUBJECT_KINDS = ("person", "enterprise")
METHODS = ("ed25519", "document")
MAX_DOCUMENT = 10 * 1024 * 1024
TEXT_TYPE = "authops.consent.v1"
REVOKE_TYPE = "authops.consent.revocation.v1"


class NoConsent(Forbidden):
    code = "no_consent"


class BadSignature(InvalidInput):
    code = "bad_signature"


def _actor(actor: audit_log.Actor | Principal | None) -> audit_log.Actor:
    return actor if isinstance(actor, audit_log.Actor) else audit_log.Actor.of(actor)


# --- the subject's pseudonym ------------------------------------------------------------------------

def normalize_subject(subject_id: str) -> str:
    if not isinstance(subject_id, str) or not subject_id.strip():
        raise InvalidInput("subject_id is required: the subject's ID number or USCC", details={"field": "subject_id"})
    s = "".join(subject_id.split()).upper()
    if len(s) > 64:
        raise InvalidInput("subject_id is at most 64 characters", details={"field": "subject_id"})
    return s


def _subject_hmac_key(settings: Settings) -> bytes:
    master = hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest()
    return crypto.derive_key(master, "governance/consent/subject")


def subject_key(settings: Settings, subject_id: str) -> str:
    """The keyed pseudonym of a subject: HMAC-SHA256 (hex) of the normalized ID under the platform key."""
    return hmac.new(_subject_hmac_key(settings), normalize_subject(subject_id).encode(), hashlib.sha256).hexdigest()


# --- the texts ------------------------------------------------------------------------------------

def _naive_utc(dt: datetime) -> datetime:
    if not isinstance(dt, datetime):
        raise InvalidInput("validity times are date-times", details={"field": "valid_until"})
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.replace(microsecond=0)


def _utc(dt: datetime) -> str:
    return dt.replace(microsecond=0).isoformat() + "Z"


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def consent_text(*, subject_key: str, subject_kind: str, product_code: str, customer_code: str, purpose: str,
                 scope: list[str], valid_from: datetime, valid_until: datetime) -> str:
    """What the subject signs: canonical JSON (sorted keys, no spaces, UTF-8), times in UTC."""
    return _canonical({"type": TEXT_TYPE, "subject": subject_key, "subject_kind": subject_kind,
                       "product": product_code, "customer": customer_code, "purpose": purpose, "scope": list(scope),
                       "valid_from": _utc(valid_from), "valid_until": _utc(valid_until)})


def revocation_text(consent: Consent) -> str:
    """What the subject signs to revoke: the consent's id and the digest of the consent text."""
    return _canonical({"type": REVOKE_TYPE, "consent_id": consent.id,
                       "consent_sha256": hashlib.sha256(consent.signed_text.encode()).hexdigest()})


# --- granting -------------------------------------------------------------------------------------

def _b64(value: Any, field: str, size: int, what: str) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} is required: {what}, base64", details={"field": field})
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", details={"field": field}) from None
    if len(raw) != size:
        raise InvalidInput(f"{field} must be {size} bytes ({what}); it is {len(raw)}", details={"field": field})
    return raw


def verify(public_key_b64: str, signature_b64: str, message: bytes, *, what: str) -> None:
    pk = _b64(public_key_b64, "public_key", 32, "the subject's raw Ed25519 public key")
    sig = _b64(signature_b64, "signature", 64, "an Ed25519 signature")
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, message)
    except InvalidSignature:
        raise BadSignature(f"the signature does not verify over {what} with the given public key: the subject "
                           "must sign exactly that, with the private key of this public key; nothing was recorded",
                           details={"field": "signature"}) from None


def _terms(session: Session, settings: Settings, *, product: Product, customer_org_id: int, subject_id: str,
           subject_kind: str, purpose: str, scope: list[str], valid_from: datetime | None,
           valid_until: datetime) -> dict[str, Any]:
    if product.state != "registered":
        raise NotFound(f"no registered product {product.id}")
    if subject_kind not in SUBJECT_KINDS:
        raise InvalidInput(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}",
                           details={"field": "subject_kind"})
    if not isinstance(purpose, str) or not purpose.strip() or len(purpose) > 500:
        raise InvalidInput("purpose is required (at most 500 characters): what the customer uses the product "
                           "for about this subject", details={"field": "purpose"})
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) and s.strip() for s in scope):
        raise InvalidInput("scope is a non-empty list of what the subject authorizes (e.g. the product's outputs)",
                           details={"field": "scope"})
    valid_from = _naive_utc(valid_from or utcnow())
    valid_until = _naive_utc(valid_until)
    if valid_until <= valid_from:
        raise InvalidInput("valid_until must be after valid_from", details={"field": "valid_until"})
    if valid_until <= utcnow():
        raise InvalidInput(f"valid_until ({show(valid_until)}) has passed", details={"field": "valid_until"})
    customer = session.get(Organisation, customer_org_id)
    key = subject_key(settings, subject_id)
    scope = [s.strip() for s in scope]
    text = consent_text(subject_key=key, subject_kind=subject_kind, product_code=product.code,
                        customer_code=customer.code if customer else str(customer_org_id), purpose=purpose.strip(),
                        scope=scope, valid_from=valid_from, valid_until=valid_until)
    return {"subject_key": key, "subject_kind": subject_kind, "purpose": purpose.strip(), "scope": scope,
            "valid_from": valid_from, "valid_until": valid_until, "text": text}


def prepare_text(session: Session, settings: Settings, **kw: Any) -> dict[str, Any]:
    """The consent text a subject is to sign for these terms (and the pseudonym in it)."""
    t = _terms(session, settings, **kw)
    return {"text": t["text"], "subject_key": t["subject_key"], "valid_from": t["valid_from"],
            "valid_until": t["valid_until"]}


def _record(session: Session, who: audit_log.Actor, t: dict[str, Any], *, product: Product, customer_org_id: int,
            method: str, public_key: str, signature: str, document_sha256: str = "") -> Consent:
    c = Consent(subject_key=t["subject_key"], subject_kind=t["subject_kind"], product_id=product.id,
                customer_org_id=customer_org_id, purpose=t["purpose"], scope=t["scope"], valid_from=t["valid_from"],
                valid_until=t["valid_until"], method=method, public_key=public_key.strip(), signed_text=t["text"],
                signature=signature.strip(), document_sha256=document_sha256, state="active",
                created_by=who.name[:64])
    session.add(c)
    session.flush()
    audit_log.record(session, who, "gov.consent.grant", object_type="consent", object_id=c.id,
                     details={"product": product.code, "customer_org_id": customer_org_id, "method": method,
                              "subject_key": c.subject_key, "after": "active",
                              "valid_until": c.valid_until.isoformat(), "document_sha256": document_sha256 or None})
    return c


def grant(session: Session, settings: Settings | None = None, *, product: Product, customer_org_id: int,
          subject_id: str, purpose: str, scope: list[str], valid_until: datetime, public_key: str, signature: str,
          actor: audit_log.Actor | Principal, subject_kind: str = "person",
          valid_from: datetime | None = None) -> Consent:
    """Record a consent the subject signed with Ed25519 over `consent_text` of these very terms."""
    settings = settings or get_settings()
    t = _terms(session, settings, product=product, customer_org_id=customer_org_id, subject_id=subject_id,
               subject_kind=subject_kind, purpose=purpose, scope=scope, valid_from=valid_from,
               valid_until=valid_until)
    verify(public_key, signature, t["text"].encode("utf-8"), what="the consent text (POST /consents/text)")
    return _record(session, _actor(actor), t, product=product, customer_org_id=customer_org_id, method="ed25519",
                   public_key=public_key, signature=signature)


def grant_document(session: Session, settings: Settings | None = None, *, product: Product, customer_org_id: int,
                   subject_id: str, purpose: str, scope: list[str], valid_until: datetime, public_key: str,
                   signature: str, document: bytes, filename: str, actor: audit_log.Actor | Principal,
                   content_type: str = "application/octet-stream", subject_kind: str = "person",
                   valid_from: datetime | None = None, store: Any = None) -> Consent:
    """Record a consent given as a signed authorization document; the detached Ed25519 signature over
    the document's bytes must verify. The document is kept encrypted in the object store."""
    from authops.core.storage.store import get_object_store

    settings = settings or get_settings()
    if not document:
        raise InvalidInput(f"{filename or 'the document'} is empty", details={"field": "document"})
    if len(document) > MAX_DOCUMENT:
        raise InvalidInput(f"the document is {len(document)} bytes; at most {MAX_DOCUMENT}",
                           details={"field": "document"})
    t = _terms(session, settings, product=product, customer_org_id=customer_org_id, subject_id=subject_id,
               subject_kind=subject_kind, purpose=purpose, scope=scope, valid_from=valid_from,
               valid_until=valid_until)
    verify(public_key, signature, document, what=f"the document {filename!r}")
    digest = hashlib.sha256(document).hexdigest()
    (store or get_object_store(settings)).put(f"governance/consents/{digest}", document, content_type=content_type)
    return _record(session, _actor(actor), t, product=product, customer_org_id=customer_org_id, method="document",
                   public_key=public_key, signature=signature, document_sha256=digest)


# --- checking -------------------------------------------------------------------------------------

def check(session: Session, product_id: int, customer_org_id: int, subject_id: str, purpose: str | None = None,
          at: datetime | None = None, *, settings: Settings | None = None) -> Consent:
    """The subject's consent in force for this product and customer (and purpose), or NoConsent saying why."""
    settings = settings or get_settings()
    key = subject_key(settings, subject_id)
    now = at or utcnow()
    rows = list(session.exec(select(Consent).where(Consent.subject_key == key, Consent.product_id == product_id,
                                                   Consent.customer_org_id == customer_org_id)
                             .order_by(Consent.id.desc())))
    for c in rows:
        if c.state == "active" and c.valid_from <= now <= c.valid_until and (purpose is None or c.purpose == purpose):
            return c
    if not rows:
        why = "the subject has given no consent for this product and customer"
    else:
        latest = rows[0]
        if latest.state == "revoked":
            why = f"the subject's consent {latest.id} was revoked on {show(latest.revoked_at)} ({latest.revoked_by})"
        elif latest.valid_until < now:
            why = f"the subject's consent {latest.id} expired on {show(latest.valid_until)}"
        elif latest.valid_from > now:
            why = f"the subject's consent {latest.id} is valid from {show(latest.valid_from)}"
        else:
            why = f"the subject's consent covers the purpose {latest.purpose!r}, not {purpose!r}"
    raise NoConsent(f"no valid consent: {why}",
                    details={"product_id": product_id, "consent": rows[0].id if rows else None})


# --- reading, revoking ----------------------------------------------------------------------------

def get_consent(session: Session, consent_id: int, *, customer_org_id: int | None = None) -> Consent:
    c = session.get(Consent, consent_id)
    if c is None or (customer_org_id is not None and c.customer_org_id != customer_org_id):
        raise NotFound(f"no consent {consent_id}")
    return c


def list_for(session: Session, customer_org_id: int, product_id: int | None = None) -> list[Consent]:
    q = select(Consent).where(Consent.customer_org_id == customer_org_id)
    if product_id is not None:
        q = q.where(Consent.product_id == product_id)
    return list(session.exec(q.order_by(Consent.id.desc())))


def _revoke(session: Session, c: Consent, who: audit_log.Actor, by: str, reason: str) -> Consent:
    if c.state == "revoked":
        raise Conflict(f"consent {c.id} was already revoked on {show(c.revoked_at)}", code="illegal_transition")
    c.state, c.revoked_at, c.revoked_by = "revoked", utcnow(), by[:64]
    session.add(c)
    audit_log.record(session, who, "gov.consent.revoke", object_type="consent", object_id=c.id,
                     details={"before": "active", "after": "revoked", "by": by[:64], "subject_key": c.subject_key,
                              "reason_sha256": hashlib.sha256(reason.encode()).hexdigest() if reason else None})
    session.flush()
    return c


def revoke_by_customer(session: Session, c: Consent, *, actor: audit_log.Actor | Principal,
                       reason: str = "") -> Consent:
    who = _actor(actor)
    if who.org_id != c.customer_org_id:
        raise NotFound(f"no consent {c.id}")
    return _revoke(session, c, who, f"customer: {who.name}", reason)


def revoke_by_subject(session: Session, consent_id: int, *, signature: str, ip: str | None = None) -> Consent:
    """The subject revokes, signing `revocation_text` with the key that signed the consent."""
    c = session.get(Consent, consent_id)
    if c is None:
        raise NotFound(f"no consent {consent_id}")
    verify(c.public_key, signature, revocation_text(c).encode("utf-8"),
           what=f"the revocation text of consent {consent_id}")
    return _revoke(session, c, audit_log.Actor(kind="anonymous", name="subject (signed)", ip=ip), "subject", "")


def view(c: Consent, at: datetime | None = None) -> dict[str, Any]:
    now = at or utcnow()
    state = c.state if c.state != "active" else ("expired" if c.valid_until < now else
                                                 "not_yet_valid" if c.valid_from > now else "active")
    return {"id": c.id, "subject_key": c.subject_key, "subject_kind": c.subject_kind, "product_id": c.product_id,
            "customer_org_id": c.customer_org_id, "purpose": c.purpose, "scope": c.scope, "valid_from": c.valid_from,
            "valid_until": c.valid_until, "valid_until_local": show(c.valid_until), "method": c.method,
            "public_key": c.public_key, "signed_text": c.signed_text, "signature": c.signature,
            "document_sha256": c.document_sha256 or None, "state": state, "revoked_at": c.revoked_at,
            "revoked_by": c.revoked_by, "revocation_text": revocation_text(c), "created_at": c.created_at}
