"""Sandbox routes: workspaces (bureau opens, partner works), jobs, releases and privacy budgets.

A partner sees its workspaces' schemas and mock data in full, submits spec or code jobs, follows
their progress and reads what the release gate let out. No route returns a real row.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query
from pydantic import BaseModel, Field

from authops.audit import log as audit_log
from authops.core.errors import InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.jobs import service as job_service
from authops.platform.catalog import service as catalog_service
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.identity.models import Organisation
from authops.policies import budget
from authops.platform.sandbox import jobs as sandbox_jobs
from authops.platform.sandbox import workspace as ws_service
from authops.sandbox.spec import JSON_SCHEMA

router = APIRouter(prefix="/sandbox", tags=["sandbox"])


class GrantIn(BaseModel):
    resource: str = Field(max_length=64)
    fields: list[str] = Field(default_factory=lambda: ["*"], max_length=500)
    share_modes: list[str] = Field(default_factory=list, max_length=3)


class WorkspaceIn(BaseModel):
    org_id: int = Field(ge=1, le=2_147_483_647)
    name: str = Field(max_length=200)
    scenario: str = Field(default="", max_length=500)
    approval_ref: str = Field(default="", max_length=100)
    readers: list[int] = Field(default_factory=list, max_length=20)
    grants: list[GrantIn] = Field(min_length=1, max_length=60)


class WorkspaceState(BaseModel):
    state: Literal["active", "suspended", "closed"]


class JobIn(BaseModel):
    kind: Literal["spec", "code"] = "spec"
    spec: dict[str, Any] | str = Field(description="the job spec (kind=spec) or the manifest (kind=code), "
                                                   "as an object or as JSON/YAML text")
    code: str | None = Field(default=None, max_length=256 * 1024, description="partner code defining run(inputs, params)")
    params: dict[str, Any] = Field(default_factory=dict)
    claims: dict[str, list[str | int]] = Field(default_factory=dict,
                                               description="per verify/model output: the subjects to answer for")
    target: Literal["real", "mock"] = Field(default="real", description="mock: run on the mock datasets, "
                                            "see the pre-release rows and the code's output; nothing is charged")
    partitions: int = Field(default=1, ge=1, le=16, description="split an aggregate job's privacy units into "
                            "this many partitions, bounded on any workers and merged before noise")


class BudgetIn(BaseModel):
    org_id: int = Field(ge=1, le=2_147_483_647)
    resource: str = Field(max_length=64)
    epsilon: float = Field(gt=0, le=1000)
    delta: float = Field(default=0.0, ge=0, lt=1e-3)
    period: str | None = Field(default=None, max_length=16, description="a year, 'lifetime', or empty for this year")
    note: str = Field(default="", max_length=500)


def _job_view(session, sj, job) -> dict[str, Any]:
    rels = sandbox_jobs.releases(session, job.id)
    console = (job.result or {}).get("console") if sj.params.get("target") == "mock" else None
    return {"id": job.id, "workspace_id": sj.workspace_id, "kind": sj.kind, "name": sj.name, "state": job.state,
            "target": sj.params.get("target", "real"), "console": console,
            "stage": "done" if job.state == "succeeded" else job.message, "progress": job.progress, "error_code": job.error_code,
            "error_message": job.error_message, "attempts": job.attempts, "epsilon_reserved": sj.epsilon,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "releases": [{"output": r.output, "policy": r.policy, "rows": r.rows, "columns": r.columns,
                          "summary": {k: v for k, v in r.summary.items() if k != "pre_release_key"}}
                         for r in rels]}


@router.get("/spec-schema")
def spec_schema(principal: Annotated[Principal, require("sandbox.use")]) -> dict[str, Any]:
    """The published JSON Schema of declarative job specs."""
    return JSON_SCHEMA


# --- workspaces ------------------------------------------------------------------------------------
@router.post("/workspaces", status_code=201)
def open_workspace(body: WorkspaceIn, session: SessionDep,
                   principal: Annotated[Principal, require("workspace.manage")]):
    """Open a workspace for a partner with the resources, fields and share modes its approval grants."""
    ws = ws_service.create_workspace(session, org_id=body.org_id, name=body.name, scenario=body.scenario,
                                     approval_ref=body.approval_ref, readers=body.readers,
                                     grants=[g.model_dump() for g in body.grants], actor=actor_of(principal))
    return ws_service.view(session, ws)


@router.patch("/workspaces/{workspace_id}")
def change_workspace(workspace_id: ObjectId, body: WorkspaceState, session: SessionDep,
                     principal: Annotated[Principal, require("workspace.manage")]):
    ws = ws_service.get_workspace(session, workspace_id)
    ws_service.set_state(session, ws, body.state, actor=actor_of(principal))
    return ws_service.view(session, ws)


@router.get("/workspaces")
def list_workspaces(session: SessionDep, principal: Annotated[Principal, require("sandbox.use")]):
    return [{"id": w.id, "name": w.name, "scenario": w.scenario, "state": w.state}
            for w in ws_service.list_workspaces(session, org_id=principal.org_id)]


@router.get("/workspaces/{workspace_id}")
def get_workspace(workspace_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("sandbox.use")]):
    """The granted resources: schemas of the granted fields, share modes, mock data size."""
    ws = ws_service.get_workspace(session, workspace_id, org_id=principal.org_id)
    return ws_service.view(session, ws)


@router.get("/workspaces/{workspace_id}/mock/{resource}")
def get_mock(workspace_id: ObjectId, resource: str, session: SessionDep, settings: SettingsDep,
             principal: Annotated[Principal, require("sandbox.use")],
             rows: Annotated[int, Query(ge=1, le=1000)] = 100):
    """A granted resource's mock dataset in full (synthetic rows; the real rows are never shown)."""
    ws = ws_service.get_workspace(session, workspace_id, org_id=principal.org_id)
    out = ws_service.mock_rows(session, settings, ws, resource, limit=rows)
    audit_log.record(session, actor_of(principal), "sandbox.mock", object_type="workspace", object_id=ws.id,
                     rows=out["rows"], details={"resource": resource})
    out["data"] = [{k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in r.items()}
                   for r in out["data"]]
    return out


# --- jobs ------------------------------------------------------------------------------------------
@router.post("/workspaces/{workspace_id}/jobs", status_code=202)
def submit_job(workspace_id: ObjectId, body: JobIn, session: SessionDep, settings: SettingsDep,
               background: BackgroundTasks, principal: Annotated[Principal, require("sandbox.use")]):
    """Check the job against the workspace's scope and release policies, reserve its budget, queue it."""
    ws = ws_service.get_workspace(session, workspace_id, org_id=principal.org_id)
    sj, job = sandbox_jobs.submit_job(session, ws=ws, kind=body.kind, spec=body.spec, code=body.code,
                                      params=body.params, claims=body.claims, partitions=body.partitions,
                                      target=body.target, actor=actor_of(principal), created_by=principal.user_id)
    background.add_task(job_service.dispatch_pending, settings, job_ids=sandbox_jobs.job_ids(sj))
    return _job_view(session, sj, job)


@router.get("/jobs/{job_id}")
def get_job(job_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("sandbox.use")]):
    """State, stage, progress and the releases so far (policy, rows, budget spent; no values)."""
    sj, job = sandbox_jobs.get_sandbox_job(session, job_id, org_id=principal.org_id)
    return _job_view(session, sj, job)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("sandbox.use")]):
    """Cancel a queued or running job; its budget reservation is given back."""
    sj, job = sandbox_jobs.get_sandbox_job(session, job_id, org_id=principal.org_id)
    audit_log.record(session, actor_of(principal), "job.cancel", object_type="job", object_id=job.id)
    job = job_service.cancel_job(session, job.id)
    return _job_view(session, sj, job)


@router.get("/jobs/{job_id}/results/{output}")
def get_result(job_id: ObjectId, output: str, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("job.read")],
               rows: Annotated[int, Query(ge=1, le=10_000)] = 1000):
    """A released output, for the organisations the job names as readers."""
    rel, table = sandbox_jobs.read_release(session, settings, job_id, output, reader_org=principal.org_id,
                                           limit=rows)
    audit_log.record(session, actor_of(principal), "sandbox.download", object_type="job", object_id=job_id,
                     rows=table.num_rows, details={"output": output})
    out = {"job_id": job_id, "output": output, "policy": rel.policy, "rows": rel.rows, "columns": rel.columns,
           "summary": {k: v for k, v in rel.summary.items() if k != "pre_release_key"}, "data": _rows(table)}
    pre = sandbox_jobs.read_pre_release(settings, rel, limit=rows)
    if pre is not None:  # a mock run: synthetic rows, shown to debug the job
        out["pre_release"] = _rows(pre)
    return out


def _rows(table) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in r.items()}
            for r in table.to_pylist()]


# --- budgets ---------------------------------------------------------------------------------------
@router.put("/budgets")
def set_budget(body: BudgetIn, session: SessionDep, principal: Annotated[Principal, require("budget.manage")]):
    """Set or raise a partner's privacy budget on a resource, for a year or its lifetime."""
    _partner(session, body.org_id, "org_id")
    try:
        catalog_service.get_resource(session, body.resource)
    except NotFound:
        raise InvalidInput(f"resource: no data resource with code {body.resource!r}",
                           details={"field": "resource"}) from None
    budget.set_budget(session, org_id=body.org_id, resource_code=body.resource, epsilon=body.epsilon,
                      delta=body.delta, period=body.period or None, actor=actor_of(principal), note=body.note)
    return budget.balances(session, body.org_id, body.resource)


@router.get("/budgets")
def my_budgets(session: SessionDep, principal: Annotated[Principal, require("sandbox.use")],
               resource: str | None = None):
    """The caller's privacy budgets: cap, spent, reserved and left, and when each refreshes."""
    return budget.balances(session, principal.org_id, resource)


@router.get("/orgs/{org_id}/budgets")
def org_budgets(org_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("budget.manage")],
                resource: str | None = None):
    """A partner's budgets (the bureau's view)."""
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"organisation {org_id} not found")
    return budget.balances(session, org_id, resource)


def _partner(session, org_id: int, field: str) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or org.kind != OrgKind.PARTNER:
        raise InvalidInput(f"{field}: organisation {org_id} is not a partner; privacy budgets are set for partners",
                           details={"field": field})
    return org
