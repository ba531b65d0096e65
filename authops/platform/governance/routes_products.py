"""Routes for product registration, usage agreements, personal consent and the call check.

Visibility: a registered product is public (catalog.read); a draft or a product under review is
seen by its partner and, once submitted, by its operator and the bureau; 404 for anyone else. An
agreement is seen by its two parties; a consent by its customer.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from authops.core.errors import AuthopsError, InvalidInput
from authops.core.identity import Principal
from authops.core.storage.store import get_object_store
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, client_ip, require
from authops.platform.governance import agreements, consent, products
from authops.platform.governance.routes_common import MAX_ID, DbId

router = APIRouter()
public_router = APIRouter(prefix="/public", tags=["public"])


# --- products -------------------------------------------------------------------------------------

class SelfReviewAnswers(BaseModel):
    beyond_purpose: str | None = Field(default=None, max_length=20_000)
    direct_exposure: str | None = Field(default=None, max_length=20_000)
    indirect_exposure: str | None = Field(default=None, max_length=20_000)
    other_risks: str | None = Field(default=None, max_length=20_000)


class ProductFields(BaseModel):
    workspace_id: DbId | None = None
    name_zh: str | None = Field(default=None, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    spec: dict[str, Any] | str | None = Field(default=None, description="the declarative sandbox job spec "
                                              "(object, or JSON/YAML text)")
    share_mode: Literal["verify", "query", "batch"] | None = None
    category: Literal["industry", "public_governance", "public_welfare"] | None = None
    price_fen: int | None = Field(default=None, ge=0, le=10**12, description="price in fen (integer)")
    price_unit: Literal["call", "record", "month", "batch"] | None = None
    pricing_basis: str | None = Field(default=None, max_length=10_000)
    scenario: str | None = Field(default=None, max_length=2000)
    scenario_case_id: DbId | None = None
    scope_of_use: str | None = Field(default=None, max_length=10_000)
    manner_of_use: str | None = Field(default=None, max_length=10_000)
    personal_information: bool | None = Field(default=None, description="declare personal information even if "
                                              "no input field is marked personal")
    consent_required: bool | None = Field(default=None, description="every call needs the subject's signed consent "
                                          "even without personal information (e.g. an enterprise's authorization)")
    test_params: dict[str, Any] | None = Field(default=None, description="spec parameters for the mock test run")
    self_review: SelfReviewAnswers | None = Field(default=None, description="the partner's answer per risk section")
    operator_org_id: DbId | None = Field(default=None, description="the checking operator; default: the operator "
                                        "of your active partner agreement")


class ProductIn(ProductFields):
    code: str = Field(max_length=64)
    workspace_id: DbId


def _fields(body: ProductFields) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True, exclude={"code", "operator_org_id"})
    if body.self_review is not None:
        data["self_review"] = body.self_review.model_dump(exclude_none=True)
    return {k: v for k, v in data.items() if v is not None}


class DecisionIn(BaseModel):
    decision: Literal["approve", "return", "reject"]
    reasons: str = Field(default="", max_length=10_000)


class CallCheckIn(BaseModel):
    subject_id: str | None = Field(default=None, max_length=64, description="the subject the call is about "
                                   "(needed for products with personal information); never stored")
    purpose: str = Field(min_length=1, max_length=500, description="the purpose of the call; it must match the "
                         "subject's consent (trimmed, whitespace collapsed, case-insensitive)")


@router.post("/products", status_code=201)
def create_product(body: ProductIn, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("product.submit")]):
    """Draft a product from your workspace; the self-review report comes back filled with the platform's
    facts and test results, for you to answer its four risk sections and submit."""
    p = products.create_draft(session, partner_org_id=principal.org_id, code=body.code, actor=actor_of(principal),
                              settings=settings, operator_org_id=body.operator_org_id, **_fields(body))
    return products.view(session, p, principal.org_id)


@router.put("/products/{product_id}")
def update_product(product_id: ObjectId, body: ProductFields, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("product.submit")]):
    """Change a draft or returned product (fields not given stay); the self-review is rebuilt."""
    p = products.get_product(session, product_id, org_id=principal.org_id)
    products.update_draft(session, p, actor=actor_of(principal), settings=settings,
                          operator_org_id=body.operator_org_id, **_fields(body))
    return products.view(session, p, principal.org_id)


@router.post("/products/{product_id}/submit")
def submit_product(product_id: ObjectId, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("product.submit")]):
    """Submit (or resubmit after a return): refused while a risk section is unanswered or a test failed."""
    p = products.get_product(session, product_id, org_id=principal.org_id)
    products.submit(session, p, actor=actor_of(principal), settings=settings)
    return products.view(session, p, principal.org_id)


@router.get("/products")
def list_products(session: SessionDep, principal: Annotated[Principal, require("catalog.read")]):
    """Registered products, and the ones you built, check or file."""
    return [products.public_view(session, p) for p in products.visible(session, principal.org_id)]


@router.get("/products/{product_id}")
def get_product(product_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("catalog.read")]):
    p = products.get_product(session, product_id, org_id=principal.org_id)
    return products.view(session, p, principal.org_id)


@router.post("/products/{product_id}/check")
def check_product(product_id: ObjectId, body: DecisionIn, session: SessionDep, settings: SettingsDep,
                  principal: Annotated[Principal, require("product.register")]):
    """The operator's check: approve for filing, return for revision, or reject (reasons required)."""
    p = products.get_product(session, product_id, org_id=principal.org_id)
    products.operator_check(session, p, actor=actor_of(principal), decision=body.decision, reasons=body.reasons,
                            settings=settings)
    return products.view(session, p, principal.org_id)


@router.post("/products/{product_id}/file")
def file_product(product_id: ObjectId, body: DecisionIn, session: SessionDep, settings: SettingsDep,
                 principal: Annotated[Principal, require("review.final")]):
    """The bureau files the product and issues its registration number (approve), or returns or rejects it."""
    p = products.get_product(session, product_id, org_id=principal.org_id)
    products.bureau_file(session, p, actor=actor_of(principal), decision=body.decision, reasons=body.reasons,
                         settings=settings)
    return products.view(session, p, principal.org_id)


@router.post("/products/{product_id}/call-check")
def call_check(product_id: ObjectId, body: CallCheckIn, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("product.call")]):
    """Would a call by your organisation (about this subject) be served now? The same guard every call
    passes: registered product, active usage agreement, the subject's valid consent. A refusal is
    answered here (allowed: false, with its code and reason) and logged."""
    products.get_product(session, product_id, org_id=principal.org_id)
    try:
        ok = products.guard_call(session, customer_org_id=principal.org_id, product_id=product_id,
                                 subject_id=body.subject_id, purpose=body.purpose, actor=actor_of(principal),
                                 settings=settings)
    except AuthopsError as exc:
        if exc.status_code != 403:
            raise
        return {"allowed": False, "code": exc.code, "reason": exc.message, "product_id": product_id}
    return {"allowed": True, "code": None, "reason": "", **ok}


# --- agreements -----------------------------------------------------------------------------------

class UsageApplicationIn(BaseModel):
    product_id: DbId
    scenario: str = Field(max_length=2000, description="the scenario the product will serve for you")
    purpose: str = Field(default="", max_length=2000)
    delivery_method: Literal["api", "batch", "file"] | None = None
    notes: str = Field(default="", max_length=5000)


class UsageTermsIn(BaseModel):
    delivery_method: Literal["api", "batch", "file"]
    pricing_method: Literal["per_call", "per_record", "monthly", "per_batch", "free"]
    price_fen: int = Field(ge=0, le=10**12, description="integer fen, not above the product's registered price")
    scenario: str = Field(max_length=2000)
    conditions: str = Field(max_length=10_000)
    starts_on: date
    ends_on: date
    security_duties: str = Field(max_length=10_000)
    breach_liability: str = Field(max_length=10_000)


class AcceptIn(BaseModel):
    text_sha256: str = Field(min_length=64, max_length=64, description="SHA-256 (hex) of the text you read")


class TerminateIn(BaseModel):
    reason: str = Field(max_length=500)


@router.post("/agreements/usage", status_code=201)
def apply_usage(body: UsageApplicationIn, session: SessionDep,
                principal: Annotated[Principal, require("agreement.sign")]):
    """Apply to buy a registered product; its operator drafts the terms."""
    p = products.get_product(session, body.product_id, org_id=principal.org_id)
    a = agreements.apply_usage(session, product=p, customer_org_id=principal.org_id, actor=actor_of(principal),
                               scenario=body.scenario, purpose=body.purpose, delivery_method=body.delivery_method,
                               notes=body.notes)
    return agreements.view(session, a)


@router.get("/agreements")
def list_agreements(session: SessionDep, principal: Annotated[Principal, require("agreement.sign")],
                    kind: Literal["operator_authorization", "partner", "usage"] | None = None):
    return [{k: v for k, v in agreements.view(session, a).items() if k not in ("text", "terms")}
            for a in agreements.list_for(session, principal.org_id, kind=kind)]


@router.get("/agreements/{agreement_id}")
def get_agreement(agreement_id: ObjectId, session: SessionDep,
                  principal: Annotated[Principal, require("agreement.sign")]):
    """The agreement's exact text, its SHA-256 (what you accept) and who accepted when."""
    return agreements.view(session, agreements.get_agreement(session, agreement_id, org_id=principal.org_id))


@router.put("/agreements/{agreement_id}/terms")
def draft_terms(agreement_id: ObjectId, body: UsageTermsIn, session: SessionDep,
                principal: Annotated[Principal, require("product.register")]):
    """The operator drafts a usage agreement's terms; the text and its hash follow from them."""
    a = agreements.get_agreement(session, agreement_id, org_id=principal.org_id)
    agreements.draft_usage_terms(session, a, actor=actor_of(principal), **body.model_dump())
    return agreements.view(session, a)


@router.post("/agreements/{agreement_id}/accept")
def accept_agreement(agreement_id: ObjectId, body: AcceptIn, request: Request, session: SessionDep,
                     principal: Annotated[Principal, require("agreement.sign")]):
    """Accept the agreement's exact text, naming its SHA-256; refused if the text changed since you read it."""
    a = agreements.get_agreement(session, agreement_id, org_id=principal.org_id)
    agreements.accept(session, a, actor_of(principal), ip=client_ip(request), text_sha256=body.text_sha256)
    return agreements.view(session, a)


@router.post("/agreements/{agreement_id}/terminate")
def terminate_agreement(agreement_id: ObjectId, body: TerminateIn, session: SessionDep,
                        principal: Annotated[Principal, require("agreement.sign")]):
    """End a usage agreement (either party, with the reason); calls under it are refused from then on."""
    a = agreements.get_agreement(session, agreement_id, org_id=principal.org_id)
    agreements.terminate(session, a, actor_of(principal), body.reason)
    return agreements.view(session, a)


# --- consent --------------------------------------------------------------------------------------

class SubjectCertificateIn(BaseModel):
    certificate: str = Field(max_length=2000, description="the identity provider's subject certificate: canonical "
                             "JSON {type, issuer, subject_kind, subject_id_sha256, public_key, valid_until}")
    signature: str = Field(max_length=200, description="the identity provider's Ed25519 signature (base64) over "
                           "the certificate's exact bytes")


class ConsentTermsIn(BaseModel):
    product_id: DbId
    subject_id: str = Field(max_length=64, description="the subject's ID number or USCC; only its keyed "
                            "pseudonym is stored")
    subject_kind: Literal["person", "enterprise"] = "person"
    purpose: str = Field(max_length=500)
    scope: list[str] = Field(min_length=1, max_length=50)
    valid_from: datetime | None = Field(default=None, description="UTC; default now; not in the past")
    valid_until: datetime = Field(description="at most consent_max_validity_days (366) after valid_from, and "
                                  "not after the end of your usage agreement for the product")
    subject_certificate: SubjectCertificateIn = Field(description="from a trusted identity provider: binds the "
                                                      "subject's Ed25519 key to the subject")
    document_sha256: str | None = Field(default=None, min_length=64, max_length=64,
                                        description="document method only: SHA-256 (hex) of the authorization "
                                                    "document; the consent text then names it")


class ConsentIn(ConsentTermsIn):
    public_key: str | None = Field(default=None, max_length=200, description="optional: the subject's raw "
                                   "Ed25519 public key, base64; it must be the one the certificate certifies")
    signature: str = Field(max_length=200, description="the subject's Ed25519 signature (base64) over the "
                           "consent text, by the certified key")


class RevokeIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class SubjectRevokeIn(BaseModel):
    signature: str = Field(max_length=200, description="Ed25519 signature (base64) over the consent's "
                           "revocation_text, by the key that signed the consent")


def _terms(body: ConsentTermsIn, session, principal) -> dict[str, Any]:
    p = products.get_product(session, body.product_id, org_id=principal.org_id)
    return {"product": p, "customer_org_id": principal.org_id, "subject_id": body.subject_id,
            "subject_kind": body.subject_kind, "purpose": body.purpose, "scope": body.scope,
            "valid_from": body.valid_from, "valid_until": body.valid_until,
            "subject_certificate": body.subject_certificate.model_dump()}


@router.post("/consents/text")
def consent_text(body: ConsentTermsIn, session: SessionDep, settings: SettingsDep,
                 principal: Annotated[Principal, require("consent.submit")]):
    """The exact text the subject signs for these terms (it names the subject only by pseudonym, the subject
    certificate by issuer and SHA-256, and for the document method the document's SHA-256)."""
    return consent.prepare_text(session, settings, **_terms(body, session, principal),
                                document_sha256=body.document_sha256)


@router.post("/consents", status_code=201)
def grant_consent(body: ConsentIn, session: SessionDep, settings: SettingsDep,
                  principal: Annotated[Principal, require("consent.submit")]):
    """Record the subject's consent: the identity provider's certificate must verify and name this subject,
    then the subject's signature over the consent text, by the certified key."""
    c = consent.grant(session, settings, **_terms(body, session, principal), public_key=body.public_key,
                      signature=body.signature, actor=actor_of(principal))
    return consent.view(c)


@router.post("/consents/document", status_code=201)
async def grant_consent_document(
        session: SessionDep, settings: SettingsDep, principal: Annotated[Principal, require("consent.submit")],
        document: Annotated[UploadFile, File(description="the signed authorization document")],
        terms: Annotated[str, Form(max_length=5000, description="JSON of the consent terms: product_id, "
                                   "subject_id, subject_kind, purpose, scope, valid_from, valid_until")],
        subject_certificate: Annotated[str, Form(max_length=3000, description="JSON {certificate, signature} "
                                                 "from a trusted identity provider")],
        signature: Annotated[str, Form(max_length=200, description="the subject's Ed25519 signature (base64) "
                                       "over the consent text naming this document's SHA-256")],
        public_key: Annotated[str | None, Form(max_length=200, description="optional: the certified key")] = None):
    """Record a consent given with an authorization document: the subject signs the consent text that names
    the document's SHA-256 (POST /consents/text with document_sha256), binding terms and document."""
    try:
        parsed = ConsentTermsIn.model_validate({**json.loads(terms),
                                                "subject_certificate": json.loads(subject_certificate)})
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"terms or subject_certificate is not valid JSON of consent terms: {str(exc)[:300]}",
                           details={"field": "terms"}) from None
    content = await document.read(consent.MAX_DOCUMENT + 1)
    c = consent.grant_document(session, settings, **_terms(parsed, session, principal), public_key=public_key,
                               signature=signature, document=content, filename=document.filename or "document",
                               content_type=document.content_type or "application/octet-stream",
                               actor=actor_of(principal), store=get_object_store(settings))
    return consent.view(c)


@router.get("/consents")
def list_consents(session: SessionDep, principal: Annotated[Principal, require("consent.submit")],
                  product_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None):
    return [consent.view(c) for c in consent.list_for(session, principal.org_id, product_id)]


@router.get("/consents/{consent_id}")
def get_consent(consent_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("consent.submit")]):
    return consent.view(consent.get_consent(session, consent_id, customer_org_id=principal.org_id))


@router.post("/consents/{consent_id}/revoke")
def revoke_consent(consent_id: ObjectId, body: RevokeIn, session: SessionDep,
                   principal: Annotated[Principal, require("consent.submit")]):
    """The customer revokes a consent; the next call about the subject is refused."""
    c = consent.get_consent(session, consent_id, customer_org_id=principal.org_id)
    consent.revoke_by_customer(session, c, actor=actor_of(principal), reason=body.reason)
    return consent.view(c)


@public_router.post("/consents/{consent_id}/revoke")
def subject_revokes(consent_id: ObjectId, body: SubjectRevokeIn, request: Request, session: SessionDep):
    """The subject revokes its consent: no login, the signature by the consent's key authenticates."""
    c = consent.revoke_by_subject(session, consent_id, signature=body.signature, ip=client_ip(request))
    return {"id": c.id, "state": c.state, "revoked_at": c.revoked_at}
