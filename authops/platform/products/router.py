"""Product invocation routes (prefix /api/v1/products): synchronous calls and batch delivery.

Callers are customers with `product.call`, by API key or login session. A refused call (no agreement,
no consent, product not registered) is answered 403 and its audit event is committed; it is never
charged. See authops.platform.products.calls for the call contract.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Header, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from authops.billing import metering
from authops.core.db import get_engine
from authops.core.errors import AuthopsError
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.platform.deps import (ObjectId, RequireInHandler, SessionDep, SettingsDep, actor_of, in_transaction,
                                   require)
from authops.platform import limits
from authops.platform.products import batch, batched, calls

router = APIRouter(prefix="/products", tags=["products"])

class CallIn(BaseModel):
    subject: str = Field(max_length=64, description="the subject: ID number, USCC, VIN or plate; never stored")
    claims: dict[str, str | int] | None = Field(
        default=None, max_length=20, description="verify products: {output: claimed value}; each claimed output "
                                                 "answers {claimed, verified}")
    purpose: str | None = Field(default=None, max_length=500,
                                description="the purpose of use; must match the subject's consent when given")


class CallOut(BaseModel):
    request_id: str
    registration_number: str | None
    product: str
    answer: dict[str, Any]
    served_from: dict[str, Any]
    metered: dict[str, Any]
    replayed: bool = False


def committing_refusals(session: Session, fn, *args, **kw):
    """Run fn; on an error, commit what it queued (the refusal's audit event) before answering it."""
    try:
        return fn(*args, **kw)
    except AuthopsError:
        session.commit()
        raise


_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> {size: limiter}


def _call_limiter(settings) -> anyio.CapacityLimiter:
    """The threads product calls may use in this process (settings.call_concurrency): one limiter per
    event loop, made on first use (a limiter belongs to the loop it waits on)."""
    mine = _limiters.setdefault(asyncio.get_running_loop(), {})
    n = settings.call_concurrency
    if n not in mine:
        mine[n] = anyio.CapacityLimiter(n)
    return mine[n]


@router.post("/{code}/calls", response_model=CallOut, response_model_exclude_none=False)
async def call_product(code: str, body: CallIn, request: Request, response: Response,
                       gate: Annotated[RequireInHandler, Depends(RequireInHandler("product.call"))],
                       idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None):
    """Call a registered product about one subject under your active usage agreement.

    Send an `Idempotency-Key` header to make retries safe: the same key with the same body returns
    the stored response (no second charge; `replayed: true`), the same key with another body is 409.
    Verify products answer each output's enumerated value (or, for claimed outputs, whether the
    claim holds) and never reveal whether the subject is in the source data; score products answer
    `status: found` with the scores, or `status: not_found`."""
    settings = request.app.state.settings
    admitted: list = []

    def work(session: Session) -> tuple[dict[str, Any], Principal]:
        # Authentication, the permission check, the call and its commit run in one worker thread
        # (see RequireInHandler): the same checks, in the same order, as every other route.
        principal = gate.principal(request, session, request.app.state.authorizer)
        if not getattr(request.state, "call_admitted", False):  # not counted by the batched path already
            limits.admit_call(settings, principal)  # 429 over the per-key / per-organisation rate limit
        metering.defer_charges(session)  # the revenue total is charged at commit: its row lock is held briefly
        out = committing_refusals(session, calls.call, session, settings, principal=actor_of(principal), code=code,
                                   subject=body.subject, claims=body.claims, purpose=body.purpose,
                                   idempotency_key=idempotency_key, admitted_to=admitted)
        metering.commit_charged(session)  # a refusal at the revenue ceiling: rolled back, audited, 403
        return out, principal

    out, principal = await anyio.to_thread.run_sync(in_transaction, request, work, limiter=_call_limiter(settings))
    if out.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    elif admitted:
        batched.learn(request, settings, principal, admitted[-1])
    return out


class BatchedCalls:
    """Pure ASGI middleware in front of the API: the batched path of product calls (see batched).

    A `POST /api/v1/products/{code}/calls` with an API key this process has seen admitted is read,
    validated (CallIn, as the route does) and handed to batched.attempt; when its batch commits, the
    response is sent from here, as the route would send it, without the router, the dependencies
    and the response model in between. Every other request, and any call this path does not answer
    (an unknown key, a body it does not take, a call the batch's checks refused, a replay), goes on
    to the route unchanged, with the body it sent; the route then answers it the ordinary way."""

    MAX_BODY = 16 * 1024  # a call's body is a few hundred bytes; anything larger goes to the route

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/calls")
                or not scope["path"].startswith(_CALLS_PREFIX)):
            return await self.app(scope, receive, send)
        code = scope["path"][len(_CALLS_PREFIX):-len("/calls")]
        token = idem = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = batched.bearer_key(value.decode("latin-1"))
            elif name == b"idempotency-key":
                idem = value.decode("latin-1")
            elif name == b"content-type":
                json_body = value.split(b";")[0].strip().lower() == b"application/json"
        api = scope.get("app")
        settings = getattr(getattr(api, "state", None), "settings", None)
        if (not code or "/" in code or token is None or not json_body or settings is None
                or not batched.batching_on(settings) or not batched.knows(token)):
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return await self.app(scope, _replay(messages, receive), send)
            body += message.get("body", b"")
            if len(body) > self.MAX_BODY:
                return await self.app(scope, _replay(messages, receive), send)
            if not message.get("more_body"):
                break
        try:
            call = CallIn.model_validate_json(body)
        except ValueError:  # pydantic's ValidationError: the route answers 422, naming the field
            return await self.app(scope, _replay(messages, receive), send)
        client = scope.get("client")
        try:
            item = batched.attempt(settings, get_engine(settings), api.state.authorizer, token,
                                   client[0] if client else None, code, call.subject, call.claims, call.purpose,
                                   idem)
        except AuthopsError as exc:  # the rate limiter's 429, in the API's error format
            return await _error_response(exc)(scope, receive, send)
        if item is not None:
            scope.setdefault("state", {})["call_admitted"] = True  # counted once, whoever answers
            out = await batched.answered(item)
            if out is not None:
                return await JSONResponse({**out, "replayed": False})(scope, receive, send)
        await self.app(scope, _replay(messages, receive), send)


_CALLS_PREFIX = "/api/v1/products/"


def _replay(messages: list, receive):
    """`receive` for the app behind: the messages already read, then the rest."""
    async def again():
        if messages:
            return messages.pop(0)
        return await receive()
    return again


def _error_response(exc: AuthopsError) -> JSONResponse:
    response = JSONResponse(status_code=exc.status_code, content=exc.to_dict())
    wait = exc.details.get("retry_after_seconds") if isinstance(exc.details, dict) else None
    if exc.status_code in (429, 503) and isinstance(wait, int):
        response.headers["Retry-After"] = str(max(wait, 1))
    return response


@router.post("/{code}/batches", status_code=202, responses={200: {"description": "a replay: the batch this "
                                                                                   "Idempotency-Key submitted"}})
async def submit_batch(code: str, session: SessionDep, settings: SettingsDep, background: BackgroundTasks,
                       principal: Annotated[Principal, require("product.call")], response: Response,
                       file: Annotated[UploadFile, File(description="UTF-8 CSV with a 'subject' column (and, for a "
                                                        "verify product, optional claim columns named by output)")],
                       purpose: Annotated[str | None, Form(max_length=500)] = None,
                       idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None):
    """Upload a list of subjects; a job answers each into a result file only you can download (for 7 days).

    Send an `Idempotency-Key` header to make a retried upload safe: the same key with the same product,
    purpose and file answers 200 with the batch it submitted (`Idempotent-Replayed: true`; no second
    batch, no second charge); the same key with anything else is 409."""
    limits.admit_call(settings, principal)
    data = await file.read(batch.MAX_BYTES + 1)
    b, job = committing_refusals(session, batch.submit, session, settings, principal=actor_of(principal),
                                  code=code, data=data, filename=file.filename or "", purpose=purpose,
                                  idempotency_key=idempotency_key)
    if job is None:  # a replay
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        background.add_task(job_service.dispatch_pending, settings, job_ids=[job.id])  # after the commit
    return batch.view(session, b)


@router.get("/{code}/batches/{batch_id}")
def get_batch(code: str, batch_id: ObjectId, session: SessionDep,
              principal: Annotated[Principal, require("product.call")]):
    return batch.view(session, batch.get_batch(session, batch_id, code=code, org_id=principal.org_id))


@router.get("/{code}/batches/{batch_id}/result")
def batch_result(code: str, batch_id: ObjectId, session: SessionDep, settings: SettingsDep,
                 principal: Annotated[Principal, require("product.call")]):
    """The result CSV (row, subject, status, refusal, answer); 410 once it has expired."""
    b = batch.get_batch(session, batch_id, code=code, org_id=principal.org_id)
    data = batch.read_result(session, settings, b, principal=actor_of(principal))
    return Response(content=data, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="batch-{b.id}-result.csv"'})
