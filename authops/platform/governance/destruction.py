"""After an operator exits (BRIEF.md 3): raw data is returned and every copy destroyed within 30 days,
verified by the bureau.

Destruction is cryptographic. Every object in the store is sealed under its own random data key,
and that key exists only inside the object's key record (`.authops/keys/<key>.json`), wrapped by
the master key (see authops/core/storage/store.py). :func:`destroy_data_key` deletes that key
record first: from then on the ciphertext cannot be decrypted by anyone (no other copy of the data
key exists), including any copy of the ciphertext outside the store. It then deletes the
ciphertext too. A copy of a *key record* kept by a backup of the store would still unwrap under the
master key: backups of `.authops/keys/` must expire within the 30 days, or the master key be
rotated after destruction (`authops storage rotate`) and the old one retired.

:func:`destroy_operation` does this for every object of the operation (datasets, mock datasets,
uploads, job partials and releases: :data:`OPERATION_PREFIXES`), then issues a
DestructionCertificate: a canonical JSON body listing every object key with the sha256 and size it
had before destruction, signed with the platform's Ed25519 signing key (the audit checkpoint key).
:func:`verify_certificate` is the bureau's acceptance: the signature must verify and every listed
object must really be gone or unreadable; only then is `verified_at` recorded.

What the signature proves, and what it does not: it is the *platform's* signature (the key that
signs the audit checkpoints), so it shows the certificate was issued by this platform and not
altered since. It is not the bureau's independent evidence that the data is gone; that comes from
the bureau's verification, which re-reads every listed object from the store itself (a key record
left, a ciphertext that still decrypts, or a listed object still readable fails it). The
certificate says so in its body (`signature_note`).

Destruction is irreversible, so :func:`destroy_operation` needs an explicit confirmation: the
caller repeats the agreement's number (`confirm`), as typed by the person who decided it.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.audit.signing import load_signing_keys
from authops.core import crypto
from authops.core.clock import show, utcnow
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.core.storage.store import RECORD_SUFFIX, RESERVED_PREFIX, ObjectStore
from authops.platform.governance import operator, workdays
from authops.platform.governance.models import Agreement, DestructionCertificate
from authops.platform.identity.models import Organisation

# Every object the operation created or used: raw datasets and their mocks, uploaded batches,
# job partials and releases. Governance records (applications' documents) and the audit log's
# checkpoints are the bureau's records and stay.
OPERATION_PREFIXES = ("datasets/", "mocks/", "uploads/", "partials/", "releases/")
DESTRUCTION_DAYS = 30
FORMAT = "authops-destruction-certificate"


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _record_name(key: str) -> str:
    return RESERVED_PREFIX + key + RECORD_SUFFIX


def operation_objects(store: ObjectStore) -> list[str]:
    """Every committed object of the operation (data and key record present), sorted."""
    return sorted(k for prefix in OPERATION_PREFIXES for k in store.list(prefix))


def orphan_ciphertexts(store: ObjectStore) -> list[str]:
    """Ciphertext left without a key record (an interrupted write): already unreadable, still a copy."""
    committed = set(operation_objects(store))
    return sorted(n for prefix in OPERATION_PREFIXES for n in store.backend.list(prefix)
                  if n not in committed and not n.startswith("."))


def destroy_data_key(store: ObjectStore, key: str) -> None:
    """Crypto-shred one object: delete its key record (the only home of its wrapped data key), which
    makes its ciphertext undecryptable, then delete the ciphertext."""
    store.backend.delete(_record_name(key))
    store.backend.delete(key)


def is_unreadable(store: ObjectStore, key: str, sha256: str | None = None) -> bool:
    """True when the object cannot be read back: no key record, or the data fails to decrypt, or what is
    there now is a different object (another sha256) written after the destruction."""
    if store.backend.exists(_record_name(key)) is False:
        return True
    try:
        info = store.stat(key)
        store.get(key)
    except AuthopsError:  # NotFound or IntegrityViolation: nothing readable there
        return True
    return sha256 is not None and info.sha256 != sha256



def get_certificate(session: Session, cert_id: int) -> DestructionCertificate:
    cert = session.get(DestructionCertificate, cert_id)
    if cert is None:
        raise NotFound(f"no destruction certificate {cert_id}")
    return cert


SIGNATURE_NOTE = ("signed by the platform's own signing key (the audit checkpoint key): proves this platform "
                  "issued it unaltered, not that the data is gone; the bureau's verification re-reads every "
                  "listed object from the store independently")


class ConfirmationRequired(InvalidInput):
    code = "confirmation_required"


def destroy_operation(session: Session, store: ObjectStore, agreement: Agreement, *,
                      actor: audit_log.Actor | Principal, settings: Settings, returned: str,
                      confirm: str | None = None, now: datetime | None = None) -> DestructionCertificate:
    """Destroy every object of the exited operator's operation and issue the signed certificate.

    `returned` says how the raw data was returned (to whom, when, by what means). `confirm` must be
    the agreement's number: destruction cannot be undone, so it is never done by a stray request."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    today = workdays.shanghai_date(now)
    if agreement.kind != operator.AGREEMENT_KIND:
        raise NotFound(f"no operator authorization agreement {agreement.id}")
    exit_on_s = agreement.terms.get("exit_on")
    if agreement.state != "exited" or not exit_on_s:
        raise Conflict(f"{agreement.number} is {agreement.state}; data is destroyed only after the operator exits",
                       code="not_exited", details={"state": agreement.state})
    exit_on = date.fromisoformat(exit_on_s)
    if today < exit_on:
        raise Conflict(f"{agreement.number} exits on {exit_on}; the operation's data is destroyed from that day "
                       f"until {exit_on + timedelta(days=DESTRUCTION_DAYS)}", code="not_exited",
                       details={"exit_on": str(exit_on)})
    returned = (returned or "").strip()
    if not returned:
        raise InvalidInput("say how the raw data was returned (to whom, when, how) before destroying the copies",
                           details={"field": "returned"})
    done = session.exec(select(DestructionCertificate)
                        .where(DestructionCertificate.agreement_id == agreement.id)).first()
    if done is not None:
        raise Conflict(f"{agreement.number} already has destruction certificate {done.number}",
                       code="already_destroyed", details={"certificate": done.number})
    if (confirm or "").strip() != agreement.number:
        raise ConfirmationRequired(f"destruction cannot be undone: confirm it by sending the agreement's number "
                                   f"({agreement.number}) as confirm", details={"field": "confirm",
                                                                                "expected": agreement.number})
    org = session.get(Organisation, agreement.party_b_org_id)
    due = exit_on + timedelta(days=DESTRUCTION_DAYS)
    listed: list[dict[str, Any]] = []
    for key in operation_objects(store):
        try:
            info = store.stat(key)
            entry = {"key": key, "size": info.size, "sha256": info.sha256}
        except AuthopsError as exc:  # a damaged record: list it honestly, destroy it all the same
            entry = {"key": key, "size": None, "sha256": None, "note": f"unreadable before destruction: {exc.code}"}
        destroy_data_key(store, key)
        listed.append(entry)
        audit_log.record(session, who, "gov.destruction.object", object_type="object", object_id=key[:128],
                         bytes=entry["size"], details={"agreement": agreement.number, "sha256": entry["sha256"]})
    for key in orphan_ciphertexts(store):
        store.backend.delete(key)
        listed.append({"key": key, "size": None, "sha256": None, "note": "ciphertext without a key record"})
        audit_log.record(session, who, "gov.destruction.object", object_type="object", object_id=key[:128],
                         details={"agreement": agreement.number, "orphan": True})
    n = session.exec(select(func.count()).select_from(DestructionCertificate)).one() + 1
    number = f"DC-{now.year}-{n:05d}"
    body = _canonical({
        "format": FORMAT, "v": 1, "number": number,
        "operator": {"org_id": agreement.party_b_org_id, "name": org.name_zh if org else "",
                     "uscc": org.uscc if org else None},
        "agreement": agreement.number, "exit_on": str(exit_on), "due_on": str(due),
        "destroyed_at": now.replace(microsecond=0).isoformat() + "Z", "late": today > due,
        "raw_data_returned": returned,
        "method": "crypto-shredding: each object's wrapped data key (its key record) deleted, then its ciphertext",
        "prefixes": list(OPERATION_PREFIXES), "objects": listed, "count": len(listed),
        "signature_note": SIGNATURE_NOTE,
    })
    key = load_signing_keys(settings)[0]
    cert = DestructionCertificate(number=number, agreement_id=agreement.id, operator_org_id=agreement.party_b_org_id,  # type: ignore[arg-type]
                                  body=body, signature=base64.b64encode(key.sign(body.encode())).decode(),
                                  key_id=key.key_id, objects=len(listed), due_on=due, issued_at=now)
    session.add(cert)
    agreement.terms = {**agreement.terms, "destruction_certificate": number}
    session.add(agreement)
    session.flush()
    audit_log.record(session, who, "gov.destruction.certify", object_type="destruction_certificate",
                     object_id=cert.id, details={"number": number, "agreement": agreement.number,
                                                 "objects": len(listed), "due_on": str(due), "late": today > due,
                                                 "key_id": key.key_id, "before": None, "after": "issued"})
    return cert


def check_certificate(store: ObjectStore, cert: DestructionCertificate, settings: Settings) -> list[str]:
    """What is wrong with a certificate: a bad signature, a body that does not match its record, or a
    listed object that can still be read. Empty when it holds."""
    problems: list[str] = []
    keys = {k.key_id: k for k in load_signing_keys(settings)}
    key = keys.get(cert.key_id)
    if key is None:
        problems.append(f"signed with key {cert.key_id!r}, which is not one of the platform's signing keys")
    else:
        try:
            sig = base64.b64decode(cert.signature, validate=True)
        except ValueError:
            sig = b""
        if not crypto.verify(key.public_pem, cert.body.encode(), sig):
            problems.append("the signature does not match the body: the certificate was altered")
    try:
        body = json.loads(cert.body)
    except ValueError:
        return problems + ["the body is not valid JSON"]
    if body.get("format") != FORMAT or body.get("number") != cert.number:
        problems.append("the body does not belong to this certificate")
    objects = body.get("objects") or []
    if len(objects) != cert.objects or body.get("count") != len(objects):
        problems.append(f"the body lists {len(objects)} objects, the certificate says {cert.objects}")
    for entry in objects:
        if not is_unreadable(store, entry["key"], entry.get("sha256")):
            problems.append(f"object {entry['key']} is still readable")
    return problems


def verify_certificate(session: Session, store: ObjectStore, cert: DestructionCertificate, *,
                       actor: audit_log.Actor | Principal, settings: Settings,
                       now: datetime | None = None) -> dict[str, Any]:
    """The bureau's acceptance (验收): verified_at is recorded only when every check holds."""
    who = audit_log.as_actor(actor)
    problems = check_certificate(store, cert, settings)
    valid = not problems
    before = "verified" if cert.verified_at else "issued"
    if valid and cert.verified_at is None:
        cert.verified_at = now or utcnow()
        cert.verified_by = who.name[:64]
        session.add(cert)
        session.flush()
    audit_log.record(session, who, "gov.destruction.verify", outcome="ok" if valid else "error",
                     object_type="destruction_certificate", object_id=cert.id,
                     details={"number": cert.number, "valid": valid, "problems": len(problems), "before": before,
                              "after": "verified" if valid else before})
    return {**certificate_view(cert), "valid": valid, "problems": problems}


def certificate_view(cert: DestructionCertificate) -> dict[str, Any]:
    return {"id": cert.id, "number": cert.number, "agreement_id": cert.agreement_id,
            "operator_org_id": cert.operator_org_id, "objects": cert.objects, "due_on": cert.due_on,
            "issued_at": cert.issued_at, "issued_local": show(cert.issued_at), "verified_at": cert.verified_at,
            "verified_by": cert.verified_by, "key_id": cert.key_id, "signature": cert.signature,
            "body": json.loads(cert.body)}
