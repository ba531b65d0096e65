"""Submit and follow background jobs; the job table (not the broker) is the truth."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from authops.core.errors import InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job
from authops.core.types import UtcDateTime
from authops.audit import log as audit_log
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require

router = APIRouter(tags=["jobs"])

# Domain jobs are created by their own routes (ingestion, sandbox, batch delivery);
# these operational kinds may be submitted directly, e.g. to check that workers run.
DIRECT_KINDS = {"system.sleep", "system.echo"}


class JobIn(BaseModel):
    kind: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    state: str
    progress: float
    message: str
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    attempts: int
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None


def _own_job(session, principal: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.org_id != principal.org_id:
        raise NotFound(f"job {job_id} not found")
    return job


@router.post("/jobs", response_model=JobOut, status_code=202)
def submit_job(body: JobIn, session: SessionDep, settings: SettingsDep, background: BackgroundTasks,
               principal: Annotated[Principal, require("job.submit")]):
    """Queue a job; it is handed to the workers after this request's transaction commits."""
    if body.kind not in DIRECT_KINDS:
        raise InvalidInput(f"job kind '{body.kind}' cannot be submitted directly; direct kinds: "
                           + ", ".join(sorted(DIRECT_KINDS)), details={"field": "kind"})
    job = job_service.create_job(session, kind=body.kind, params=body.params,
                                 org_id=principal.org_id, created_by=principal.user_id)
    audit_log.record(session, actor_of(principal), "job.submit", object_type="job", object_id=job.id,
                     details={"kind": job.kind})
    # Background tasks run after the response, i.e. after the commit: the outbox rule.
    background.add_task(job_service.dispatch_pending, settings, job_ids=[job.id])
    return job


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(session: SessionDep, principal: Annotated[Principal, require("job.read")],
              state: str | None = None, limit: int = Query(50, ge=1, le=500),
              offset: int = Query(0, ge=0, le=100_000)):
    stmt = select(Job).where(Job.org_id == principal.org_id).order_by(Job.id.desc())
    if state:
        stmt = stmt.where(Job.state == state)
    return session.exec(stmt.limit(limit).offset(offset)).scalars().all()


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("job.read")]):
    return _own_job(session, principal, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("job.submit")]):
    job = _own_job(session, principal, job_id)
    audit_log.record(session, actor_of(principal), "job.cancel", object_type="job", object_id=job.id)
    return job_service.cancel_job(session, job.id)
