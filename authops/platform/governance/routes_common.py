"""Governance routes every party uses: to-do list, notifications, webhooks, any case by id and its
documents, publishing disclosures; and the public disclosure page (no login).

A case is visible to the applicant's organisation, to the organisations awaited on it or that
reviewed or acted on it, and to the bureau's final reviewers (review.final, cross-organisation);
to anyone else it does not exist (404).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.errors import NotFound
from authops.core.identity import Principal
from authops.core.storage.store import get_object_store
from authops.platform.deps import AuthorizerDep, ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.governance import disclosure, notifications, outbox, workflow
from authops.platform.governance.models import Case, CaseDocument, CaseTransition, Review
from authops.policies.enforcer import Authorizer

router = APIRouter()
public_router = APIRouter()

CROSS_ORG_CASE_READER = "review.final"

# Every id a request body or query names: a database id (1 .. 2^31-1), so that a huge number is a 422
# naming the field rather than an overflow deep in the database.
MAX_ID = 2_147_483_647
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]


class WebhookIn(BaseModel):
    url: str = Field(max_length=500, description="http:// or https:// address that receives JSON POSTs")


class DisclosureIn(BaseModel):
    title: str = Field(max_length=300)
    body: str = Field(default="", max_length=20000)
    year: int | None = Field(default=None, ge=1900, le=2200)
    document_sha256: str = Field(default="", max_length=64, description="SHA-256 of the published report")
    category: Literal["audit_result", "notice", "resource_use", "assessment"] = "audit_result"


# --- visibility ----------------------------------------------------------------------------------

def may_see_case(session: Session, principal: Principal, authorizer: Authorizer | None, case: Case) -> bool:
    org = principal.org_id
    if org == case.applicant_org_id or org in (case.awaiting_orgs or []):
        return True
    if session.exec(select(Review.id).where(Review.case_id == case.id, Review.reviewer_org_id == org)
                    .limit(1)).first() is not None:
        return True
    if session.exec(select(CaseTransition.id).where(CaseTransition.case_id == case.id,
                                                    CaseTransition.actor_org_id == org).limit(1)).first() is not None:
        return True
    return authorizer is not None and authorizer.allowed(principal, CROSS_ORG_CASE_READER)


def visible_case(session: Session, principal: Principal, authorizer: Authorizer | None, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None or not may_see_case(session, principal, authorizer, case):
        raise NotFound(f"no case {case_id}")
    return case


# --- to-do list and notifications ----------------------------------------------------------------

@router.get("/todo")
def todo(session: SessionDep, principal: Annotated[Principal, require("todo.read")]) -> dict[str, Any]:
    """Cases awaiting your organisation (deadline, overdue), unread notifications, agreements to
    accept or about to end, an open renewal window."""
    return notifications.todo(session, principal)


@router.get("/notifications")
def list_notifications(session: SessionDep, principal: Annotated[Principal, require("todo.read")],
                       unread: bool = False, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                       offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> list[dict[str, Any]]:
    rows = notifications.list_notifications(session, principal.org_id, unread_only=unread, limit=limit,
                                            offset=offset)
    return [notifications.notification_view(n) for n in rows]


@router.post("/notifications/{notification_id}/read")
def read_notification(notification_id: ObjectId, session: SessionDep,
                      principal: Annotated[Principal, require("todo.read")]) -> dict[str, Any]:
    return notifications.notification_view(notifications.mark_read(session, principal.org_id, notification_id))


# --- webhooks ------------------------------------------------------------------------------------

@router.post("/webhooks", status_code=201)
def create_webhook(body: WebhookIn, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("webhook.manage")]) -> dict[str, Any]:
    """Register a webhook. The secret is returned this once: every POST carries
    X-Authops-Signature = hex HMAC-SHA256 of the body under it."""
    hook, secret = outbox.create_webhook(session, settings, org_id=principal.org_id, url=body.url,
                                         actor=actor_of(principal))
    return {**outbox.webhook_view(hook), "secret": secret,
            "signature": "X-Authops-Signature: hex(HMAC-SHA256(secret, request body))"}


@router.get("/webhooks")
def list_webhooks(session: SessionDep, principal: Annotated[Principal, require("webhook.manage")]) -> list[dict[str, Any]]:
    return [outbox.webhook_view(h) for h in outbox.list_webhooks(session, principal.org_id)]


@router.delete("/webhooks/{webhook_id}")
def delete_webhook(webhook_id: ObjectId, session: SessionDep,
                   principal: Annotated[Principal, require("webhook.manage")]) -> dict[str, Any]:
    return outbox.webhook_view(outbox.delete_webhook(session, principal.org_id, webhook_id,
                                                     actor=actor_of(principal)))


# --- cases ---------------------------------------------------------------------------------------

@router.get("/cases/{case_id}")
def get_case(case_id: ObjectId, session: SessionDep, authorizer: AuthorizerDep,
             principal: Annotated[Principal, require("todo.read")]) -> dict[str, Any]:
    """Any case your organisation filed, must act on, or reviewed: state, what can happen next,
    deadline, documents, reviews and history."""
    return workflow.view(session, visible_case(session, principal, authorizer, case_id))


@router.get("/cases/{case_id}/documents/{document_id}")
def get_document(case_id: ObjectId, document_id: ObjectId, session: SessionDep, settings: SettingsDep,
                 authorizer: AuthorizerDep, principal: Annotated[Principal, require("todo.read")]) -> Response:
    """Download one material of a case (decrypted from the object store)."""
    case = visible_case(session, principal, authorizer, case_id)
    doc = session.get(CaseDocument, document_id)
    if doc is None or doc.case_id != case.id:
        raise NotFound(f"case {case.number} has no document {document_id}")
    data = get_object_store(settings).get(doc.object_key)
    audit_log.record(session, actor_of(principal), "gov.document.read", object_type="case_document",
                     object_id=doc.id, bytes=len(data),
                     details={"case": case.number, "material": doc.material, "sha256": doc.sha256})
    return Response(data, media_type=doc.content_type or "application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(doc.filename)}",
                             "X-Content-SHA256": doc.sha256})


# --- disclosure ----------------------------------------------------------------------------------

@router.post("/disclosures", status_code=201)
def publish_disclosure(body: DisclosureIn, session: SessionDep,
                       principal: Annotated[Principal, require("disclosure.publish")]) -> dict[str, Any]:
    """Publish an audit result or notice on the public disclosure page."""
    call = disclosure.publish(session, actor=actor_of(principal), title=body.title, body=body.body,
                              year=body.year, document_sha256=body.document_sha256, category=body.category)
    return disclosure.disclosure_view(call)


@public_router.get("/public/disclosure")
def public_disclosure(session: SessionDep, settings: SettingsDep,
                      lang: Annotated[str, Query(description="zh (default) or en")] = "zh") -> dict[str, Any]:
    """Who is authorized (scope, term), partners, registered products with prices, price caps and
    published audit results. No login."""
    return disclosure.public_disclosure(session, settings, lang=lang)
