"""A synchronous product call, in one transaction:

    product by code → guard_call (registered, active usage agreement, the subject's consent for a
    personal-information product; read in one query by admit_call when the call is admitted; a
    refusal is audited, charges nothing) → Idempotency-Key (the
    same key and request: the stored response, no second charge; the same key and another
    request: 409 naming the key) → the current answer set (in-process cache) → the subject's row
    by its keyed digest → the answer shaped by the product's kind (runtime.shaping) → a usage
    record at the agreement's price → the audit event `product.call`, naming the subject only by
    its consent pseudonym → {request_id, registration_number, product, answer, served_from}.

The caller (the route) commits; a refusal is raised after its audit event was queued, so the
route commits before turning it into an error response.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.platform.governance import consent
from authops.platform.governance.models import Agreement, Product
from authops.platform.governance.products import Admitted, admit_call, guard_call
from authops.platform.products import serving
from authops.products.runtime import answers as rt
from authops.products.runtime import idempotency, shaping

MAX_SUBJECT = 64
MAX_PURPOSE = 500


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def product_by_code(session: Session, code: str) -> Product:
    p = session.exec(select(Product).where(Product.code == code)).first()
    if p is None:
        raise NotFound(f"no product {code!r}; see the public catalogue for registered products")
    return p


def check_subject(subject: Any) -> str:
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidInput("subject is required: the ID number, USCC, VIN or plate the call is about",
                           details={"field": "subject"})
    if len(subject.strip()) > MAX_SUBJECT:
        raise InvalidInput(f"subject is at most {MAX_SUBJECT} characters", details={"field": "subject"})
    return subject.strip()


def check_purpose(purpose: Any) -> str | None:
    if purpose is None or purpose == "":
        return None
    if not isinstance(purpose, str) or len(purpose) > MAX_PURPOSE:
        raise InvalidInput(f"purpose is text of at most {MAX_PURPOSE} characters", details={"field": "purpose"})
    return purpose


def agreement_of(session: Session, number: str) -> Agreement:
    """The agreement guard_call found (already in the session: no second query)."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Agreement) and obj.number == number:
            return obj
    return session.exec(select(Agreement).where(Agreement.number == number)).one()


def price_of(a: Agreement) -> tuple[str, int]:
    return price_in(a.terms)


def price_in(terms: dict[str, Any] | None) -> tuple[str, int]:
    """(pricing method, price in fen) from a usage agreement's terms."""
    terms = terms or {}
    method = str(terms.get("pricing_method") or "free")
    price = int((terms.get("pricing") or {}).get("price_fen") or 0)
    return method, price



def _replay(session: Session, who: audit_log.Actor, admitted: Admitted, rec, request_hash: str, key: str,
            subject_key: str | None) -> dict[str, Any]:
    if rec.request_sha256 != request_hash or rec.product_id != admitted.product_id:
        audit_log.record(session, who, "product.call.refused", outcome="denied", object_type="product",
                         object_id=admitted.product_id,
                         details={"code": "idempotency_conflict", "request_id": rec.request_id})
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request "
                                  f"({rec.request_id}); send a new key for a new request",
                                  details={"field": idempotency.HEADER, "idempotency_key": key,
                                           "request_id": rec.request_id})
    audit_log.record(session, who, "product.call.replay", object_type="product", object_id=admitted.product_id,
                     details={"code": admitted.code, "request_id": rec.request_id, "subject_key": subject_key})
    return {**rec.response, "replayed": True}


def visible_product(session: Session, code: str, org_id: int | None) -> Product:
    """The product by code; one that was never registered exists only for its partner, operator and
    the bureau (others: 404). A product that was registered and no longer is, is refused by the guard."""
    p = product_by_code(session, code)
    if p.registration_number is None and org_id is not None:
        from authops.platform.governance import products as gov_products

        gov_products.get_product(session, p.id, org_id=org_id)
    return p


def call(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, code: str,
         subject: Any, claims: dict[str, Any] | None = None, purpose: Any = None,
         idempotency_key: str | None = None, channel: str = "call",
         admitted_to: list[Admitted] | None = None) -> dict[str, Any]:
    """Answer one call about one subject (see the module docstring). Flushes, never commits.

    An Idempotency-Key is not looked up first: the usage record's unique (customer, key) finds a
    replay when the record is inserted (one statement fewer per call); the transaction is then
    rolled back and the stored response returned. `admitted_to`, when given, receives what admitted
    the call (the batched path's caches learn from it)."""
    who = audit_log.as_actor(principal)
    key = idempotency.check_key(idempotency_key)
    subject = check_subject(subject)
    purpose = check_purpose(purpose)
    customer = who.org_id
    admitted = None if customer is None else admit_call(session, code=code, customer_org_id=customer,
                                                        subject_id=subject, purpose=purpose, settings=settings)
    if admitted is None:  # refused, or about to be: the checks one by one, each refusal saying why (and audited)
        p = visible_product(session, code, customer)
        if customer is None:
            raise InvalidInput("product calls are made for an organisation")
        guard = guard_call(session, customer_org_id=customer, product_id=p.id, subject_id=subject, purpose=purpose,
                           actor=who, settings=settings)
        a = agreement_of(session, guard["agreement"])
        admitted = Admitted(product_id=p.id, code=p.code, registration_number=p.registration_number,
                            agreement_id=a.id, agreement_number=a.number, agreement_terms=a.terms or {},
                            consent_id=guard.get("consent_id"))
    if admitted_to is not None:
        admitted_to.append(admitted)
    loaded = serving.answers(session, settings, admitted.product_id, admitted.code)
    prep = prepare(settings, admitted, loaded, subject, claims, purpose)
    request_id, response, method, price = prep.request_id, prep.response, prep.method, prep.price
    subject_key, request_hash = prep.subject_key, prep.request_sha256
    try:
        rec = metering.meter(session, customer_org_id=customer, product_id=admitted.product_id,
                       agreement_id=admitted.agreement_id, request_id=request_id, pricing_method=method,
                       price_fen=price, units=1, channel=channel, idempotency_key=key, request_sha256=request_hash,
                       response=response, at=admitted.at, terms=admitted.billing_terms)
    except IntegrityError:
        if key is None:
            raise
        session.rollback()  # the key was used before (or by a concurrent request): answer as a replay
        rec = metering.find(session, customer, key)
        if rec is None:
            raise
        return _replay(session, who, admitted, rec, request_hash, key, subject_key)
    audit_log.record(session, who, "product.call", object_type="product", object_id=admitted.product_id, subjects=1,
                     details=prep.audit_details(admitted, rec.amount_fen, key))
    return response


@dataclass
class Prepared:
    """An admitted call's answer, before it is metered and audited (shared with the batched path)."""
    request_id: str
    response: dict[str, Any]
    method: str  # the agreement's pricing method and price
    price: int
    subject_key: str
    request_sha256: str
    answer_set: int
    found: bool

    def audit_details(self, admitted: Admitted, amount_fen: int, key: str | None) -> dict[str, Any]:
        """The `product.call` event's details: names, versions and sizes, never the subject or the answer."""
        return {"code": admitted.code, "request_id": self.request_id, "subject_key": self.subject_key,
                "agreement": admitted.agreement_number, "answer_set": self.answer_set, "found": self.found,
                "amount_fen": amount_fen, "consent_id": admitted.consent_id, "idempotency_key": bool(key)}


def prepare(settings: Settings, admitted: Admitted, loaded: serving.Loaded, subject: str,
            claims: dict[str, Any] | None, purpose: str | None) -> Prepared:
    """The answer to an admitted call from the loaded answer set, and the response it returns (its
    metered amount is filled in when the use is rated). Raises InvalidInput for a bad claim."""
    subject_key = consent.subject_key(settings, subject)
    body = {"subject": rt.normal_subject(subject), "claims": claims or {}, "purpose": purpose}
    request_hash = idempotency.request_sha256(admitted.code, body)
    meta = loaded.lookup.meta
    checked = shaping.check_claims(meta, claims)
    row = loaded.lookup.get(rt.subject_digest(loaded.key, subject))
    answer = shaping.shape_answer(meta, row, checked)
    method, price = price_in(admitted.agreement_terms)
    request_id = new_request_id()
    unit_price, amount = metering.amount(method, price, 1, channel="call")
    response = {"request_id": request_id, "registration_number": admitted.registration_number,
                "product": admitted.code, "answer": answer,
                "served_from": {"answer_set": loaded.version, "built_at": loaded.built_at.isoformat() + "Z"},
                "metered": {"units": 1, "amount_fen": amount}}
    return Prepared(request_id=request_id, response=response, method=method, price=price, subject_key=subject_key,
                    request_sha256=request_hash, answer_set=loaded.version, found=row is not None)
