"""Aggregate-report routes (prefix /api/v1/products): request a report, then read it when done.

Callers are customers with `product.call`. A refused request (no agreement, product not registered,
budget spent with no earlier report) is answered with its error and its audit event is committed;
it is never charged. See authops.platform.products.reports for the contract.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks
from pydantic import BaseModel, Field

from authops.core.errors import AuthopsError
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.products import reports

router = APIRouter(prefix="/products", tags=["products"])


class ReportIn(BaseModel):
    report: str = Field(max_length=64, description="the report: one of the product's aggregate outputs")
    purpose: str | None = Field(default=None, max_length=500, description="the purpose of use")


@router.post("/{code}/reports", status_code=202)
def request_report(code: str, body: ReportIn, session: SessionDep, settings: SettingsDep,
                   background: BackgroundTasks,
                   principal: Annotated[Principal, require("product.call")]) -> dict[str, Any]:
    """Ask for a differentially private report of an aggregate product under your usage agreement.

    Answered at once (`state: done`) when a release over the current data exists (the same figures
    for everyone who asks: asking again spends no privacy budget and cannot average the noise away);
    otherwise a job builds it (`state: queued`): read it with GET .../reports/{id}."""
    try:
        out, dispatch = reports.request_and_view(session, settings, principal=actor_of(principal), code=code,
                                                 report=body.report, purpose=body.purpose)
    except AuthopsError:
        session.commit()  # the refusal's audit event
        raise
    if dispatch:
        background.add_task(job_service.dispatch_pending, settings, job_ids=dispatch)  # after the commit
    return out


@router.get("/{code}/reports/{report_id}")
def get_report(code: str, report_id: ObjectId, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("product.call")]) -> dict[str, Any]:
    """The report's state and, once done, its rows (only the customer that asked may read it)."""
    return reports.view(session, settings, reports.get_report(session, report_id, code=code,
                                                              org_id=principal.org_id))
