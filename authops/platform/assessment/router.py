"""Assessment routes (prefix /api/v1/assessment).

Who may do what: the bureau (assessment.manage, across organisations) sets pre-filing schedules,
the year's weights and thresholds, runs assessments, adds expert scores, signs, re-assesses and
reads the department table and the report data; the operator files risk-assessment reports
(prefiling.submit) and rectification plans (rectification.submit) for its own schedules and
rectifications (another organisation's answer 404); a customer rates a product it used
(product.rate).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, UploadFile
from pydantic import BaseModel, Field
from sqlmodel import select

from authops.core.errors import InvalidInput
from authops.core.identity import Principal
from authops.core.storage.store import get_object_store
from authops.platform.assessment import departments, prefiling, ratings, report_data, service
from authops.platform.assessment.models import Assessment, Rectification
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.governance.routes_common import DbId

router = APIRouter(prefix="/assessment", tags=["assessment"])

MAX_REPORT = 20 * 1024 * 1024
Bureau = Annotated[Principal, require("assessment.manage")]
Year = Annotated[int, Path(ge=2000, le=2100)]


class ScheduleIn(BaseModel):
    operator_org_id: DbId
    target_kind: str = Field(description="resource | scenario")
    target: str = Field(max_length=64, description="the resource code or the scenario case number")
    first_due_on: date
    period_months: int = Field(default=0, ge=0, le=36, description="0: a one-off filing")
    blocks_jobs: bool = Field(default=False, description="block new sandbox jobs on the resource while overdue")


class MetricConf(BaseModel):
    weight: float = Field(ge=0, le=1000)
    target: float = Field(gt=0)


class YearSettingsIn(BaseModel):
    metrics: dict[str, MetricConf] = Field(description="metric key -> weight and target (the value scoring 100)")
    excellent: float = Field(default=90, gt=0, le=100)
    qualified: float = Field(default=60, gt=0, le=100)
    expert_weight: float = Field(default=0, ge=0, le=1000)
    indicators: dict[str, Any] = Field(default_factory=dict, description='e.g. {"enterprise_products": [codes]}')


class RunIn(BaseModel):
    operator_org_id: DbId
    year: int = Field(ge=2000, le=2100)


class ExpertScoreIn(BaseModel):
    expert: str = Field(max_length=100)
    score: float = Field(ge=0, le=100)
    comment: str = Field(default="", max_length=2000)


class RatingIn(BaseModel):
    score: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)


class PlanIn(BaseModel):
    plan: str = Field(max_length=20000, description="the rectification measures, responsibilities and dates")


def _assessment_view(a: Assessment) -> dict[str, Any]:
    return {"id": a.id, "year": a.year, "operator_org_id": a.operator_org_id, "kind": a.kind,
            "parent_id": a.parent_id, "period_start": a.period_start, "period_end": a.period_end,
            "state": a.state, "total_score": a.total_score, "grade": a.grade, "grade_reason": a.grade_reason or None,
            "metrics": a.metrics, "expert_scores": a.expert_scores, "settings": a.settings,
            "signed_by": a.signed_by or None, "signed_at": a.signed_at, "signature": a.signature or None,
            "key_id": a.key_id or None, "consequences": a.consequences}


# --- pre-filing ---------------------------------------------------------------------------------------
@router.post("/prefiling/schedules", status_code=201)
def set_schedule(body: ScheduleIn, session: SessionDep, principal: Bureau):
    sched = prefiling.set_schedule(session, actor=actor_of(principal), **body.model_dump())
    return prefiling.schedule_view(session, sched)


@router.get("/prefiling/schedules")
def list_schedules(session: SessionDep, principal: Bureau):
    return [prefiling.schedule_view(session, s) for s in prefiling.schedules_of(session)]


@router.get("/prefiling/mine")
def my_schedules(session: SessionDep, principal: Annotated[Principal, require("prefiling.submit")]):
    return [prefiling.schedule_view(session, s) for s in prefiling.schedules_of(session, principal.org_id)]


@router.post("/prefiling/schedules/{schedule_id}/filings", status_code=201)
def file_report(schedule_id: ObjectId, session: SessionDep, settings: SettingsDep,
                principal: Annotated[Principal, require("prefiling.submit")],
                file: Annotated[UploadFile, File(description="the risk-assessment report; stored encrypted")]):
    sched = prefiling.get_schedule(session, schedule_id, principal)
    data = file.file.read(MAX_REPORT + 1)
    if len(data) > MAX_REPORT:
        raise InvalidInput(f"the file is larger than {MAX_REPORT // (1024 * 1024)} MB", details={"field": "file"})
    row = prefiling.file_report(session, get_object_store(settings), sched, actor=actor_of(principal),
                                filename=file.filename or "report", content=data,
                                content_type=file.content_type or "application/octet-stream")
    return {"id": row.id, "schedule_id": row.schedule_id, "due_on": row.due_on, "on_time": row.on_time,
            "size": row.size, "sha256": row.sha256}


# --- ratings ------------------------------------------------------------------------------------------
@router.put("/ratings/{product_code}")
def rate(product_code: Annotated[str, Path(max_length=64)], body: RatingIn, session: SessionDep,
         principal: Annotated[Principal, require("product.rate")]):
    row = ratings.rate(session, actor=actor_of(principal), product_code=product_code, score=body.score,
                       comment=body.comment)
    return ratings.rating_view(row, product_code)


# --- the bureau's assessment --------------------------------------------------------------------------
@router.put("/years/{year}/settings")
def set_year(year: Year, body: YearSettingsIn, session: SessionDep, principal: Bureau):
    row = service.set_year_settings(session, actor=actor_of(principal), year=year,
                                    metrics_={k: v.model_dump() for k, v in body.metrics.items()},
                                    excellent=body.excellent, qualified=body.qualified,
                                    expert_weight=body.expert_weight, indicators=body.indicators)
    return service.settings_view(row)


@router.get("/years/{year}/settings")
def get_year(year: Year, session: SessionDep, principal: Bureau):
    return service.settings_view(service.year_settings(session, year))


@router.get("/years/{year}/departments")
def department_table(year: Year, session: SessionDep, principal: Bureau):
    """Provider departments' timeliness, completeness and accuracy for the year."""
    return departments.table(session, year)


@router.post("/runs", status_code=201)
def run(body: RunIn, session: SessionDep, principal: Bureau):
    return _assessment_view(service.run(session, actor=actor_of(principal), operator_org_id=body.operator_org_id,
                                        year=body.year))


@router.get("/runs")
def list_runs(session: SessionDep, principal: Bureau):
    return [_assessment_view(a) for a in session.exec(select(Assessment).order_by(Assessment.id))]  # type: ignore[arg-type]


@router.get("/runs/{assessment_id}")
def get_run(assessment_id: ObjectId, session: SessionDep, settings: SettingsDep, principal: Bureau):
    a = service.get(session, assessment_id)
    return _assessment_view(a) | {"signature_valid": service.verify(a, settings) if a.state == "signed" else None}


@router.get("/runs/{assessment_id}/report")
def report(assessment_id: ObjectId, session: SessionDep, principal: Bureau):
    return report_data(session, assessment_id)


@router.post("/runs/{assessment_id}/expert-scores")
def expert_score(assessment_id: ObjectId, body: ExpertScoreIn, session: SessionDep, principal: Bureau):
    a = service.add_expert_score(session, service.get(session, assessment_id), actor=actor_of(principal),
                                 expert=body.expert, score=body.score, comment=body.comment)
    return _assessment_view(a)


@router.post("/runs/{assessment_id}/sign")
def sign(assessment_id: ObjectId, session: SessionDep, settings: SettingsDep, principal: Bureau):
    a = service.sign(session, service.get(session, assessment_id), actor=actor_of(principal), settings=settings)
    return _assessment_view(a)


@router.get("/rectifications")
def list_rectifications(session: SessionDep, principal: Bureau):
    return [service.rectification_view(r) for r in session.exec(select(Rectification).order_by(Rectification.id))]  # type: ignore[arg-type]


@router.post("/rectifications/{rect_id}/reassess", status_code=201)
def reassess(rect_id: ObjectId, session: SessionDep, principal: Bureau):
    a = service.reassess(session, service.rectification_of(session, rect_id), actor=actor_of(principal))
    return _assessment_view(a)


# --- the operator's side ------------------------------------------------------------------------------
@router.get("/rectifications/mine")
def my_rectifications(session: SessionDep, principal: Annotated[Principal, require("rectification.submit")]):
    rows = session.exec(select(Rectification).where(Rectification.operator_org_id == principal.org_id)
                        .order_by(Rectification.id))  # type: ignore[arg-type]
    return [service.rectification_view(r) for r in rows]


@router.post("/rectifications/{rect_id}/plan")
def submit_plan(rect_id: ObjectId, body: PlanIn, session: SessionDep,
                principal: Annotated[Principal, require("rectification.submit")]):
    rect = service.rectification_of(session, rect_id, principal)
    return service.rectification_view(service.submit_plan(session, rect, actor=actor_of(principal), plan=body.plan))
