"""Personal consent (BRIEF 6): a product touching personal information serves a customer only for
subjects who authorized it, checked on every call; a revocation counts from the next call.

The subject is stored as a keyed pseudonym: HMAC-SHA256 of the normalized ID number under a key
derived from the platform secret (never the raw ID, and nothing anyone without the key can
recompute from an ID).

Whose key signed? A subject's Ed25519 key is trusted only when a trusted identity provider (an
external boundary, e.g. the city's real-name authentication app; `settings.consent_issuers`)
certified it. The *subject certificate* is canonical JSON

    {"type": "authops.subject-certificate.v1", "issuer": <issuer id>, "subject_kind": ...,
     "subject_id_sha256": <SHA-256 hex of the normalized ID>, "public_key": <raw Ed25519, base64>,
     "valid_until": <UTC, ...Z>}

plus the issuer's Ed25519 signature over its exact bytes (the issuer id is the fingerprint of the
issuer's public key, `issuer_id`). The platform verifies the issuer's signature under a trusted
issuer key, that subject_id_sha256 is the SHA-256 of the submitted (normalized) subject ID, that
the subject kind matches and that the certificate is still valid; only then the subject's
signature. The certificate itself is not stored: the consent text the subject signs names the
issuer and the certificate's SHA-256, so the stored signed text keeps both (and no raw ID).
`issue_subject_certificate` is the identity provider's side, for tests and the demo.

The subject signs the canonical consent text (`consent_text`: deterministic JSON of the pseudonym,
product code, customer, purpose, scope, validity, issuer and certificate hash) with the certified
key. Two methods:

(a) "ed25519": the subject signs the consent text;
(b) "document": an authorization document (e.g. a signed PDF) comes with it. The consent text
    then also names the document's SHA-256 (`document_sha256`), and the subject signs that text:
    the one signature binds the terms (product, customer, purpose, scope, validity) *and* the
    document, so a signature over a document cannot be replayed for other terms or another
    product. The document is stored encrypted in the object store, its SHA-256 on the record.

Limits: a consent is valid at most `consent_max_validity_days` (default 366) and never beyond the
end of the customer's usage agreement for the product when one exists (pending or active);
valid_from may lie at most `consent_backdate_seconds` in the past.

Purpose: every check names the purpose of the call; it matches the consent's purpose when both are
equal after trimming, collapsing runs of whitespace to one space and case-folding (`same_purpose`).
No purpose, no match.

A signature that does not verify is refused. Revocation: by the subject, signing
`revocation_text(consent)` with the consent's (certified) key (a public route: the signature
authenticates), or by the customer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.clock import show, utcnow
from authops.core.errors import ConfigurationError, Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Mode, Settings, get_settings
from authops.platform.governance.models import Agreement, Consent, Product
from authops.platform.identity.models import Organisation

SUBJECT_KINDS = ("person", "enterprise")
METHODS = ("ed25519", "document")
MAX_DOCUMENT = 10 * 1024 * 1024
TEXT_TYPE = "authops.consent.v1"
REVOKE_TYPE = "authops.consent.revocation.v1"
CERT_TYPE = "authops.subject-certificate.v1"
MAX_CERTIFICATE = 2000
DEMO_ISSUER_FILE = "consent-issuer-demo.pem"

log = logging.getLogger(__name__)


class NoConsent(Forbidden):
    code = "no_consent"


class BadSignature(InvalidInput):
    code = "bad_signature"


class BadCertificate(InvalidInput):
    """The subject certificate is missing, malformed, from an untrusted issuer, for another subject or expired."""

    code = "bad_certificate"



# --- the subject's pseudonym ------------------------------------------------------------------------

def normalize_subject(subject_id: str) -> str:
    if not isinstance(subject_id, str) or not subject_id.strip():
        raise InvalidInput("subject_id is required: the subject's ID number or USCC", details={"field": "subject_id"})
    s = "".join(subject_id.split()).upper()
    if len(s) > 64:
        raise InvalidInput("subject_id is at most 64 characters", details={"field": "subject_id"})
    return s


def _subject_hmac_key(settings: Settings) -> bytes:
    return _derived_subject_key(settings.secret_key.get_secret_value())


@functools.lru_cache(maxsize=4)
def _derived_subject_key(secret: str) -> bytes:  # HKDF once per secret, not once per call
    return crypto.derive_key(hashlib.sha256(secret.encode()).digest(), "governance/consent/subject")


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
                 scope: list[str], valid_from: datetime, valid_until: datetime, issuer: str = "",
                 certificate_sha256: str = "", document_sha256: str = "") -> str:
    """What the subject signs: canonical JSON (sorted keys, no spaces, UTF-8), times in UTC; it names the
    subject certificate (issuer, SHA-256) and, for the document method, the document's SHA-256."""
    doc: dict[str, Any] = {"type": TEXT_TYPE, "subject": subject_key, "subject_kind": subject_kind,
                           "product": product_code, "customer": customer_code, "purpose": purpose,
                           "scope": list(scope), "valid_from": _utc(valid_from), "valid_until": _utc(valid_until),
                           "issuer": issuer, "certificate_sha256": certificate_sha256}
    if document_sha256:
        doc["document_sha256"] = document_sha256
    return _canonical(doc)


def same_purpose(a: str | None, b: str | None) -> bool:
    """The purpose matching rule: equal after trimming, collapsing whitespace and case-folding."""
    if a is None or b is None:
        return False
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# --- the identity provider's certificate ------------------------------------------------------------

def _raw_public(pk: Ed25519PublicKey) -> bytes:
    return pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def issuer_id(pk: Ed25519PublicKey) -> str:
    """An issuer's id: the fingerprint of its public key (SHA-256 of the raw key, first 32 hex)."""
    return "ed25519:" + hashlib.sha256(_raw_public(pk)).hexdigest()[:32]


def subject_id_sha256(subject_id: str) -> str:
    """What a subject certificate carries instead of the ID: SHA-256 (hex) of the normalized ID."""
    return hashlib.sha256(normalize_subject(subject_id).encode()).hexdigest()


def demo_issuer_path(settings: Settings) -> Path:
    return settings.data_path / "keys" / DEMO_ISSUER_FILE


def demo_issuer_key(settings: Settings) -> Ed25519PrivateKey:
    """Development only: the demo identity provider's private key under data_dir/keys/, made on first
    use. It stands in for the city's real-name authentication app in the embedded setup and the demo."""
    if settings.mode is Mode.PRODUCTION:
        raise RuntimeError("there is no demo identity provider in production: configure AUTHOPS_CONSENT_ISSUERS")
    path = demo_issuer_path(settings)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    try:
        os.link(tmp, path)  # first writer wins when two processes start at once
    except FileExistsError:
        os.unlink(tmp)
        return demo_issuer_key(settings)
    os.unlink(tmp)
    log.warning("consent: no AUTHOPS_CONSENT_ISSUERS set; generated a DEMO identity provider key at %s "
                "(development only: it stands in for the real-name authentication app)", path)
    return key


_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def trusted_issuers(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """The identity providers whose certificates are trusted, by issuer id (settings.consent_issuers:
    inline PEM or a PEM file's path; empty: the demo issuer in development, none in production)."""
    raw = settings.consent_issuers.strip()
    if not raw:
        if settings.mode is Mode.PRODUCTION:
            return {}
        pk = demo_issuer_key(settings).public_key()
        return {issuer_id(pk): pk}
    if "-----BEGIN" in raw:
        text = raw.replace("\\n", "\n")
    else:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"AUTHOPS_CONSENT_ISSUERS names {path}, which is not a file of PEM public keys")
        text = path.read_text()
    out: dict[str, Ed25519PublicKey] = {}
    for block in _PEM.findall(text):
        pk = serialization.load_pem_public_key(block.encode())
        if not isinstance(pk, Ed25519PublicKey):
            raise ConfigurationError("AUTHOPS_CONSENT_ISSUERS: every issuer key must be an Ed25519 public key")
        out[issuer_id(pk)] = pk
    if not out:
        raise ConfigurationError("AUTHOPS_CONSENT_ISSUERS holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    return out


def issue_subject_certificate(issuer_private_key: Ed25519PrivateKey, *, subject_id: str, subject_kind: str,
                              public_key: str | Ed25519PublicKey, valid_until: datetime) -> dict[str, str]:
    """THE IDENTITY PROVIDER'S SIDE (not the platform's): after authenticating the subject by its real
    name, certify that `public_key` is this subject's. Returns {"certificate": canonical JSON text,
    "signature": the issuer's Ed25519 signature over it, base64}: what a consent submission carries as
    `subject_certificate`. The platform only verifies it; tests and the demo use this to act as the issuer."""
    if isinstance(public_key, Ed25519PublicKey):
        public_key = base64.b64encode(_raw_public(public_key)).decode()
    text = _canonical({"type": CERT_TYPE, "issuer": issuer_id(issuer_private_key.public_key()),
                       "subject_kind": subject_kind, "subject_id_sha256": subject_id_sha256(subject_id),
                       "public_key": public_key, "valid_until": _utc(_naive_utc(valid_until))})
    return {"certificate": text, "signature": base64.b64encode(issuer_private_key.sign(text.encode())).decode()}


def _bad_cert(msg: str, field: str = "subject_certificate") -> BadCertificate:
    return BadCertificate(f"subject_certificate: {msg}; nothing was recorded", details={"field": field})


def check_certificate(settings: Settings, certificate: Any, *, subject_id: str, subject_kind: str,
                      at: datetime | None = None) -> dict[str, Any]:
    """Verify a subject certificate (see the module docstring); returns its fields with issuer and sha256."""
    if hasattr(certificate, "model_dump"):
        certificate = certificate.model_dump()
    if not isinstance(certificate, dict) or not certificate.get("certificate"):
        raise _bad_cert("required: {certificate, signature} from a trusted identity provider, certifying the "
                        "subject's public key")
    text_, sig = certificate.get("certificate"), certificate.get("signature")
    if not isinstance(text_, str) or len(text_) > MAX_CERTIFICATE:
        raise _bad_cert(f"certificate is canonical JSON text of at most {MAX_CERTIFICATE} characters",
                        "subject_certificate.certificate")
    try:
        body = json.loads(text_)
    except ValueError:
        body = None
    if not isinstance(body, dict) or _canonical(body) != text_ or body.get("type") != CERT_TYPE:
        raise _bad_cert(f"certificate must be the canonical JSON of a {CERT_TYPE} (sorted keys, no spaces)",
                        "subject_certificate.certificate")
    issuers = trusted_issuers(settings)
    if not issuers:
        raise _bad_cert("no identity provider is trusted on this platform (AUTHOPS_CONSENT_ISSUERS is empty)")
    issuer = body.get("issuer")
    pk = issuers.get(issuer) if isinstance(issuer, str) else None
    if pk is None:
        raise _bad_cert(f"issuer {issuer!r} is not a trusted identity provider", "subject_certificate.certificate")
    raw_sig = _b64(sig, "subject_certificate.signature", 64, "the issuer's Ed25519 signature")
    try:
        pk.verify(raw_sig, text_.encode())
    except InvalidSignature:
        raise _bad_cert(f"the issuer's signature does not verify under {issuer}'s key",
                        "subject_certificate.signature") from None
    if body.get("subject_id_sha256") != subject_id_sha256(subject_id):
        raise _bad_cert("it certifies another subject (its subject_id_sha256 is not the SHA-256 of this "
                        "subject_id)", "subject_id")
    if body.get("subject_kind") != subject_kind:
        raise _bad_cert(f"it certifies a {body.get('subject_kind')}, not a {subject_kind}", "subject_kind")
    try:
        until = datetime.fromisoformat(str(body.get("valid_until", "")).removesuffix("Z"))
    except ValueError:
        raise _bad_cert("valid_until is not a time", "subject_certificate.certificate") from None
    if until <= (at or utcnow()):
        raise _bad_cert(f"it expired on {show(until)}", "subject_certificate.certificate")
    _b64(body.get("public_key"), "subject_certificate.certificate", 32, "the subject's raw Ed25519 public key")
    return {**body, "sha256": hashlib.sha256(text_.encode()).hexdigest()}


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


def _usage_end(session: Session, customer_org_id: int, product_id: int) -> Agreement | None:
    """The customer's usage agreement for the product that bounds a consent: active or pending, latest end."""
    return session.exec(select(Agreement).where(Agreement.kind == "usage", Agreement.product_id == product_id,
                                                Agreement.party_b_org_id == customer_org_id,
                                                Agreement.state.in_(("pending", "active")))  # type: ignore[attr-defined]
                        .order_by(Agreement.ends_on.desc(), Agreement.id.desc())).first()  # type: ignore[attr-defined]


def _terms(session: Session, settings: Settings, *, product: Product, customer_org_id: int, subject_id: str,
           subject_kind: str, purpose: str, scope: list[str], valid_from: datetime | None,
           valid_until: datetime, subject_certificate: Any = None, document_sha256: str | None = None,
           ) -> dict[str, Any]:
    from authops.platform.governance import workdays

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
    now = utcnow()
    valid_from = _naive_utc(valid_from or now)
    valid_until = _naive_utc(valid_until)
    skew = timedelta(seconds=settings.consent_backdate_seconds)
    if valid_from < now - skew:
        raise InvalidInput(f"valid_from ({show(valid_from)}) lies in the past; a consent counts from when it is "
                           f"given (at most {settings.consent_backdate_seconds} seconds earlier)",
                           details={"field": "valid_from"})
    if valid_until <= valid_from:
        raise InvalidInput("valid_until must be after valid_from", details={"field": "valid_until"})
    if valid_until <= now:
        raise InvalidInput(f"valid_until ({show(valid_until)}) has passed", details={"field": "valid_until"})
    longest = timedelta(days=settings.consent_max_validity_days)
    if valid_until - valid_from > longest:
        raise InvalidInput(f"a consent is valid for at most {settings.consent_max_validity_days} days: valid_until "
                           f"may be {show(valid_from + longest)} (Asia/Shanghai) at the latest",
                           details={"field": "valid_until", "max_days": settings.consent_max_validity_days})
    usage = _usage_end(session, customer_org_id, product.id)  # type: ignore[arg-type]
    if usage is not None and valid_until > workdays.end_of_day_utc(usage.ends_on):
        raise InvalidInput(f"valid_until ({show(valid_until)}) is after the end of usage agreement {usage.number} "
                           f"({usage.ends_on}); a consent never outlasts the agreement it serves",
                           details={"field": "valid_until", "agreement": usage.number,
                                    "ends_on": str(usage.ends_on)})
    if document_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", document_sha256):
        raise InvalidInput("document_sha256 is the SHA-256 (64 lowercase hex) of the authorization document",
                           details={"field": "document_sha256"})
    cert = check_certificate(settings, subject_certificate, subject_id=subject_id, subject_kind=subject_kind, at=now)
    customer = session.get(Organisation, customer_org_id)
    key = subject_key(settings, subject_id)
    scope = [s.strip() for s in scope]
    text = consent_text(subject_key=key, subject_kind=subject_kind, product_code=product.code,
                        customer_code=customer.code if customer else str(customer_org_id), purpose=purpose.strip(),
                        scope=scope, valid_from=valid_from, valid_until=valid_until, issuer=cert["issuer"],
                        certificate_sha256=cert["sha256"], document_sha256=document_sha256 or "")
    return {"subject_key": key, "subject_kind": subject_kind, "purpose": purpose.strip(), "scope": scope,
            "valid_from": valid_from, "valid_until": valid_until, "text": text, "certificate": cert}


def prepare_text(session: Session, settings: Settings, **kw: Any) -> dict[str, Any]:
    """The consent text a subject is to sign for these terms (and the pseudonym in it). Give the subject
    certificate; for the document method also document_sha256 (the text then names the document)."""
    t = _terms(session, settings, **kw)
    return {"text": t["text"], "subject_key": t["subject_key"], "valid_from": t["valid_from"],
            "valid_until": t["valid_until"], "issuer": t["certificate"]["issuer"],
            "certificate_sha256": t["certificate"]["sha256"]}


def _record(session: Session, who: audit_log.Actor, t: dict[str, Any], *, product: Product, customer_org_id: int,
            method: str, signature: str, document_sha256: str = "") -> Consent:
    cert = t["certificate"]
    c = Consent(subject_key=t["subject_key"], subject_kind=t["subject_kind"], product_id=product.id,
                customer_org_id=customer_org_id, purpose=t["purpose"], scope=t["scope"], valid_from=t["valid_from"],
                valid_until=t["valid_until"], method=method, public_key=cert["public_key"], signed_text=t["text"],
                signature=signature.strip(), document_sha256=document_sha256, state="active",
                created_by=who.name[:64])
    session.add(c)
    session.flush()
    audit_log.record(session, who, "gov.consent.grant", object_type="consent", object_id=c.id,
                     details={"product": product.code, "customer_org_id": customer_org_id, "method": method,
                              "subject_key": c.subject_key, "after": "active",
                              "valid_until": c.valid_until.isoformat(), "document_sha256": document_sha256 or None,
                              "issuer": cert["issuer"], "certificate_sha256": cert["sha256"]})
    return c


def _subject_signs(t: dict[str, Any], public_key: str | None, signature: str, what: str) -> None:
    cert_key = t["certificate"]["public_key"]
    if public_key is not None and public_key.strip() and public_key.strip() != cert_key:
        raise BadCertificate("public_key is not the key the subject certificate certifies; send the certified key "
                             "(or leave public_key out); nothing was recorded", details={"field": "public_key"})
    verify(cert_key, signature, t["text"].encode("utf-8"), what=what)


def grant(session: Session, settings: Settings | None = None, *, product: Product, customer_org_id: int,
          subject_id: str, purpose: str, scope: list[str], valid_until: datetime, signature: str,
          actor: audit_log.Actor | Principal, subject_certificate: Any = None, public_key: str | None = None,
          subject_kind: str = "person", valid_from: datetime | None = None) -> Consent:
    """Record a consent the subject signed with its certified Ed25519 key over `consent_text` of these terms."""
    settings = settings or get_settings()
    t = _terms(session, settings, product=product, customer_org_id=customer_org_id, subject_id=subject_id,
               subject_kind=subject_kind, purpose=purpose, scope=scope, valid_from=valid_from,
               valid_until=valid_until, subject_certificate=subject_certificate)
    _subject_signs(t, public_key, signature, "the consent text (POST /consents/text)")
    return _record(session, audit_log.as_actor(actor), t, product=product, customer_org_id=customer_org_id, method="ed25519",
                   signature=signature)


def grant_document(session: Session, settings: Settings | None = None, *, product: Product, customer_org_id: int,
                   subject_id: str, purpose: str, scope: list[str], valid_until: datetime, signature: str,
                   document: bytes, filename: str, actor: audit_log.Actor | Principal,
                   subject_certificate: Any = None, public_key: str | None = None,
                   content_type: str = "application/octet-stream", subject_kind: str = "person",
                   valid_from: datetime | None = None, store: Any = None) -> Consent:
    """Record a consent given with an authorization document. The subject signs (certified key) the consent
    text of these terms naming the document's SHA-256 (POST /consents/text with document_sha256), so the
    signature binds the terms and the document together. The document is kept encrypted in the object store."""
    from authops.core.storage.store import get_object_store

    settings = settings or get_settings()
    if not document:
        raise InvalidInput(f"{filename or 'the document'} is empty", details={"field": "document"})
    if len(document) > MAX_DOCUMENT:
        raise InvalidInput(f"the document is {len(document)} bytes; at most {MAX_DOCUMENT}",
                           details={"field": "document"})
    digest = hashlib.sha256(document).hexdigest()
    t = _terms(session, settings, product=product, customer_org_id=customer_org_id, subject_id=subject_id,
               subject_kind=subject_kind, purpose=purpose, scope=scope, valid_from=valid_from,
               valid_until=valid_until, subject_certificate=subject_certificate, document_sha256=digest)
    _subject_signs(t, public_key, signature, f"the consent text naming the document {filename!r} "
                                              f"(document_sha256 {digest[:12]}…; POST /consents/text)")
    (store or get_object_store(settings)).put(f"governance/consents/{digest}", document, content_type=content_type)
    return _record(session, audit_log.as_actor(actor), t, product=product, customer_org_id=customer_org_id, method="document",
                   signature=signature, document_sha256=digest)


# --- checking -------------------------------------------------------------------------------------

class ConsentTerms(NamedTuple):
    """What decides whether a consent is in force (a Consent row has the same attributes)."""

    id: int
    state: str
    valid_from: datetime
    valid_until: datetime
    purpose: str


def first_in_force(consents: list[Consent] | list[ConsentTerms], purpose: str | None,
                   at: datetime) -> Consent | ConsentTerms | None:
    """The newest of one subject's consents (for one product and customer) that is active, within
    its validity on `at` and for the same purpose: the one a call may rely on."""
    for c in sorted(consents, key=lambda c: c.id, reverse=True):
        if c.state == "active" and c.valid_from <= at <= c.valid_until and same_purpose(c.purpose, purpose):
            return c
    return None


def check(session: Session, product_id: int, customer_org_id: int, subject_id: str, purpose: str | None = None,
          at: datetime | None = None, *, settings: Settings | None = None) -> Consent:
    """The subject's consent in force for this product, customer and purpose, or NoConsent saying why.

    The purpose is required: it matches a consent's purpose under `same_purpose` (trimmed, whitespace
    collapsed, case-folded); a check without one finds no consent."""
    settings = settings or get_settings()
    key = subject_key(settings, subject_id)
    now = at or utcnow()
    rows = list(session.exec(select(Consent).where(Consent.subject_key == key, Consent.product_id == product_id,
                                                   Consent.customer_org_id == customer_org_id)
                             .order_by(Consent.id.desc())))
    found = first_in_force(rows, purpose, now)
    if found is not None:
        return found
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
        elif purpose is None or not purpose.strip():
            why = (f"the call names no purpose; the subject's consent {latest.id} covers the purpose "
                   f"{latest.purpose!r}: name the purpose of the call")
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
    who = audit_log.as_actor(actor)
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


def _certificate_of(c: Consent) -> dict[str, Any] | None:
    """The issuer and SHA-256 of the subject certificate, as the signed text names them."""
    try:
        doc = json.loads(c.signed_text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not doc.get("issuer"):
        return None
    return {"issuer": doc["issuer"], "sha256": doc.get("certificate_sha256")}


def view(c: Consent, at: datetime | None = None) -> dict[str, Any]:
    now = at or utcnow()
    state = c.state if c.state != "active" else ("expired" if c.valid_until < now else
                                                 "not_yet_valid" if c.valid_from > now else "active")
    return {"id": c.id, "subject_key": c.subject_key, "subject_kind": c.subject_kind, "product_id": c.product_id,
            "customer_org_id": c.customer_org_id, "purpose": c.purpose, "scope": c.scope, "valid_from": c.valid_from,
            "valid_until": c.valid_until, "valid_until_local": show(c.valid_until), "method": c.method,
            "public_key": c.public_key, "signed_text": c.signed_text, "signature": c.signature,
            "document_sha256": c.document_sha256 or None, "subject_certificate": _certificate_of(c),
            "state": state, "revoked_at": c.revoked_at,
            "revoked_by": c.revoked_by, "revocation_text": revocation_text(c), "created_at": c.created_at}
