"""Joint modelling routes (prefix /api/v1/products/joint-models).

A customer (`product.call`) uploads labels, follows its models and scores enterprises with them;
another organisation's model answers 404. The operators and the bureau (`product.register`) see any
model's metadata and metrics for oversight. No route returns labels, coefficients or the score
table: see authops.platform.products.joint.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile
from pydantic import BaseModel, Field

from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.products import joint
from authops.platform.products.router import committing_refusals

router = APIRouter(prefix="/products/joint-models", tags=["joint modelling"])


class ScoreIn(BaseModel):
    subject: str = Field(max_length=64, description="the enterprise's USCC; never stored")
    purpose: str | None = Field(default=None, max_length=500,
                                description="the purpose of use; must match the enterprise's consent")


class ScoreOut(BaseModel):
    request_id: str
    model: int
    registration_number: str | None
    status: str = Field(description="found, or not_found when the enterprise is not in the public data")
    score: int | None = Field(description="0-100, higher = less likely to go bad in your book")
    grade: str | None = Field(description="A >= 85, B >= 70, C >= 55, D >= 40, E below")


@router.post("", status_code=202)
async def upload_labels(session: SessionDep, settings: SettingsDep, background: BackgroundTasks,
                        principal: Annotated[Principal, require("product.call")],
                        file: Annotated[UploadFile, File(description="UTF-8 CSV 'uscc,label' (label 0 or 1; "
                                                         "1 = the loan went bad)")],
                        name: Annotated[str | None, Form(max_length=200, description="your name for the model "
                                                         "(default: the file's name)")] = None,
                        product: Annotated[str | None, Form(max_length=64, description="the base product "
                                                            "(default bank_credit_assessment)")] = None):
    """Upload your loan outcomes; a job trains a model on the base product's public data inside the
    platform. The labels and the model never leave; you get metrics and a scoring endpoint."""
    data = await file.read(joint.MAX_BYTES + 1)
    m, job = committing_refusals(session, joint.submit, session, settings, principal=actor_of(principal),
                                  name=name or file.filename or "", data=data,
                                  product_code=product)
    background.add_task(job_service.dispatch_pending, settings, job_ids=[job.id])  # after the commit
    return joint.view(session, m)


@router.get("")
def list_models(session: SessionDep, principal: Annotated[Principal, require("product.call")]):
    return [joint.view(session, m) for m in joint.list_models(session, principal.org_id)]


@router.get("/{model_id}")
def get_model(model_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("product.call")]):
    """State, holdout metrics and the label-free baseline's metrics on the same holdout."""
    return joint.view(session, joint.get_model(session, model_id, org_id=principal.org_id))


@router.get("/{model_id}/oversight")
def oversee_model(model_id: ObjectId, session: SessionDep,
                  principal: Annotated[Principal, require("product.register")]):
    """For operators and the bureau: any model's metadata and metrics (never its labels or coefficients)."""
    return joint.view(session, joint.get_model(session, model_id))


@router.post("/{model_id}/scores", response_model=ScoreOut)
def score(model_id: ObjectId, body: ScoreIn, session: SessionDep, settings: SettingsDep,
          principal: Annotated[Principal, require("product.call")]):
    """Score one enterprise with your model, under the base product's agreement and the enterprise's consent."""
    return committing_refusals(session, joint.score, session, settings, principal=actor_of(principal),
                                model_id=model_id, subject=body.subject, purpose=body.purpose)
