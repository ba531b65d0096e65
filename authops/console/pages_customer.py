"""The customer's pages: the product marketplace, API keys (a new key's secret is shown once, on the
answer to the form, and never again), the subjects' consents with revocation, and batch deliveries
with live progress (htmx polls a batch's row until its job ends) and the result download.

The API's actions decide (apikey.manage, consent.submit, product.call; the marketplace lists public
information to anyone who may call products) and the API's own functions do the work, so an API key
made here is the API's key, with its audit event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import Response
from sqlmodel import Session, select

from authops.console.auth import Viewer, page
from authops.console.forms import see, validated, whole
from authops.console.rendering import render
from authops.console.routing import router
from authops.core.errors import InvalidInput
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of
from authops.platform.governance import agreements, consent, products
from authops.platform.governance.models import Agreement, Product
from authops.platform.governance.routes_products import RevokeIn
from authops.platform.identity import router as identity_routes
from authops.platform.identity import schemas as identity_schemas
from authops.platform.identity import service as identity_service
from authops.platform.products import batch
from authops.platform.products.models import ProductBatch
from authops.platform.products.router import committing_refusals
from authops.policies import permissions

LIST_LIMIT = 50


# --- the marketplace ------------------------------------------------------------------------------

def my_agreements(session: Session, org_id: int) -> dict[int, dict[str, Any]]:
    """The organisation's latest usage agreement per product: number, state, id."""
    out: dict[int, dict[str, Any]] = {}
    for a in session.exec(select(Agreement).where(Agreement.kind == "usage", Agreement.party_b_org_id == org_id)
                          .order_by(Agreement.id)):
        if a.product_id is not None:
            out[a.product_id] = {"id": a.id, "number": a.number, "state": agreements.effective_state(a)}
    return out


@router.get("/marketplace")
def marketplace(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("product.call")]):
    """Every registered product (registration number, price, partner and operator), its public page, and
    your usage agreement for it if you hold one."""
    return render(request, "marketplace.html", {
        "products": products.public_catalogue(session), "mine": my_agreements(session, viewer.principal.org_id)},
        viewer=viewer)


# --- API keys -------------------------------------------------------------------------------------

def grantable(viewer: Viewer) -> list[str]:
    """Scopes this user could put on a key: actions of its organisation's kind that the user holds."""
    ceiling = permissions.actions_for_kind(viewer.principal.org_kind)
    return [a for a in permissions.ACTIONS if a in ceiling and viewer.may(a)]


def _keys_page(request: Request, session: Session, viewer: Viewer, created: Any = None, status_code: int = 200):
    return render(request, "api_keys.html", {
        "keys": identity_service.list_api_keys(session, viewer.principal), "scopes": grantable(viewer),
        "actions": permissions.ACTIONS, "created": created}, viewer=viewer, status_code=status_code)


@router.get("/api-keys")
def api_keys(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("apikey.manage")]):
    """The organisation's keys (prefix, scopes, expiry, last use, revoked) and the form for a new one."""
    return _keys_page(request, session, viewer)


@router.post("/api-keys")
def create_api_key(request: Request, session: SessionDep, settings: SettingsDep,
                   viewer: Annotated[Viewer, page("apikey.manage")], name: Annotated[str, Form()] = "",
                   scopes: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
                   ttl_days: Annotated[str, Form()] = ""):
    """The API's key creation (scopes no wider than yours, audit event). The answer shows the secret
    this once (no-store): it is kept only hashed."""
    body = validated(identity_schemas.ApiKeyIn, name=name, scopes=scopes,
                     ttl_days=whole(ttl_days, "ttl_days", low=1, high=1095) if ttl_days.strip() else None)
    created = identity_routes.create_key(body, session, settings, viewer.authorizer, viewer.principal)
    return _keys_page(request, session, viewer, created=created, status_code=201)


@router.post("/api-keys/{key_id}/revoke")
def revoke_api_key(key_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("apikey.manage")]):
    """Revoke a key of your organisation: it is refused from the next request on."""
    identity_routes.revoke_key(key_id, session, viewer.principal)
    return see("/api-keys")


# --- consents -------------------------------------------------------------------------------------

@router.get("/consents")
def consents_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("consent.submit")]):
    """The subjects' consents you hold (a pseudonym, never the ID): product, purpose, validity, method,
    state; active ones can be revoked with a reason."""
    rows = [consent.view(c) for c in consent.list_for(session, viewer.principal.org_id)[:200]]
    ids = sorted({r["product_id"] for r in rows})
    codes = {i: c for i, c in session.exec(select(Product.id, Product.code).where(Product.id.in_(ids))).all()} \
        if ids else {}  # type: ignore[union-attr]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return render(request, "consents.html", {"consents": rows, "codes": codes, "counts": counts}, viewer=viewer)


@router.post("/consents/{consent_id}/revoke")
def revoke_consent(consent_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("consent.submit")],
                   reason: Annotated[str, Form()] = ""):
    """The customer revokes a consent; the next call about the subject is refused."""
    body = validated(RevokeIn, reason=reason)
    c = consent.get_consent(session, consent_id, customer_org_id=viewer.principal.org_id)
    consent.revoke_by_customer(session, c, actor=actor_of(viewer.principal), reason=body.reason)
    return see("/consents")


# --- batch deliveries -------------------------------------------------------------------------------

def _own_batch(session: Session, viewer: Viewer, batch_id: int) -> ProductBatch:
    return batch.get_batch(session, batch_id, org_id=viewer.principal.org_id)


def batch_rows(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    rows = session.exec(select(ProductBatch).where(ProductBatch.customer_org_id == viewer.principal.org_id)
                        .order_by(ProductBatch.id.desc()).limit(LIST_LIMIT))  # type: ignore[union-attr]
    return [with_job(session, batch.view(session, b)) for b in rows]


def with_job(session: Session, view: dict[str, Any]) -> dict[str, Any]:
    job = session.get(Job, view["job_id"]) if view["job_id"] else None
    return {**view, "progress": job.progress if job else (1.0 if view["state"] == "done" else 0.0),
            "finished": view["state"] in ("done", "failed", "expired")}


@router.get("/batches")
def batches_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("product.call")]):
    """Your batch deliveries (subjects, answered, refused, not found, amount) with live progress, the
    result download while it is kept, and the form to upload a list of subjects."""
    mine = my_agreements(session, viewer.principal.org_id)
    offered = [p for p in products.public_catalogue(session) if mine.get(p["id"], {}).get("state") == "active"]
    return render(request, "batches.html", {"batches": batch_rows(session, viewer), "offered": offered},
                  viewer=viewer)


@router.get("/batches/{batch_id}/progress")
def batch_progress(batch_id: ObjectId, request: Request, session: SessionDep,
                   viewer: Annotated[Viewer, page("product.call")]):
    """One batch's row (htmx polls it until the batch is done or failed)."""
    b = with_job(session, batch.view(session, _own_batch(session, viewer, batch_id)))
    return render(request, "_batch_row.html", {"b": b}, viewer=viewer)


@router.post("/batches")
def submit_batch(session: SessionDep, settings: SettingsDep, viewer: Annotated[Viewer, page("product.call")],
                 file: Annotated[UploadFile, File()], code: Annotated[str, Form()] = "",
                 purpose: Annotated[str, Form()] = ""):
    """The API's batch upload (same checks, refusals audited); its job is sent once this request commits."""
    data = file.file.read(batch.MAX_BYTES + 1)
    if not code.strip():
        raise InvalidInput("code: choose the product", details={"field": "code"})
    _, job = committing_refusals(session, batch.submit, session, settings, principal=actor_of(viewer.principal),
                                 code=code.strip(), data=data, filename=file.filename or "", purpose=purpose or None)
    tasks = BackgroundTasks()
    tasks.add_task(job_service.dispatch_pending, settings, job_ids=[job.id])
    response = see("/batches")
    response.background = tasks
    return response


@router.get("/batches/{batch_id}/result.csv")
def batch_result(batch_id: ObjectId, session: SessionDep, settings: SettingsDep,
                 viewer: Annotated[Viewer, page("product.call")]):
    """The result CSV (yours only; logged with its size); 410 once it has expired."""
    b = _own_batch(session, viewer, batch_id)
    data = batch.read_result(session, settings, b, principal=actor_of(viewer.principal))
    return Response(content=data, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="batch-{b.id}-result.csv"'})
