"""Asynchronous aggregate reports: a customer asks for one output of an aggregate (DP) product.

    request → the product (registered, releasing aggregates; the output named) → the guard (an
    active usage agreement; a report is about no subject, so no consent) → the release that answers
    it: the latest sandbox job of this product over the same data (its `sources`: the current
    dataset of every input) that is queued, running or succeeded is shared; otherwise a new job
    runs the product's spec in its partner workspace under the workspace's privacy budget → a
    usage record (a free product is metered at 0) → the audit event `product.report.request`.

Why a release is shared: asking again about the same data returns the same noisy figures, so
repeating a report cannot average the noise away, and it spends no further budget. A release is
rebuilt only when a source has a newer dataset. When the budget for a new release is spent, the
request is answered from the latest earlier release, marked `stale` (the figures are still a DP
release, re-reading it costs nothing); with no earlier release it is refused (409
budget_exhausted, nothing charged).

Only the requesting customer reads its report (others: 404); the rows are the gate's released
table (group columns, noisy measures, post-processed flags), never the pre-release rows.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow.parquet as pq
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.clock import show
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.jobs.models import Job, JobState
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.governance.models import Product
from authops.platform.governance.products import guard_use
from authops.platform.products import calls, precompute
from authops.platform.products.report_models import ProductReport
from authops.platform.sandbox import jobs as sandbox_jobs
from authops.policies.budget import BudgetExhausted
from authops.sandbox.models import SandboxRelease, Workspace

MAX_ROWS = 5000  # a report answers at most this many rows (a DP release has far fewer)
_LIVE = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.SUCCEEDED.value)


def _outputs(p: Product) -> list[str]:
    return [o["name"] for o in (p.spec or {}).get("outputs", [])
            if (o.get("release") or {}).get("policy") == "aggregate"]


def _aggregate_product(p: Product, output: Any) -> str:
    names = _outputs(p)
    if not names:
        raise InvalidInput(f"{p.code} answers about one subject at a time: call POST /api/v1/products/{p.code}/calls",
                           details={"field": "report"})
    if not isinstance(output, str) or output not in names:
        raise InvalidInput(f"report must name one of {p.code}'s reports: {', '.join(names)}",
                           details={"field": "report", "choices": names})
    return output


def _workspace(session: Session, p: Product) -> Workspace:
    ws = session.get(Workspace, p.workspace_id) if p.workspace_id else None
    if ws is None:
        raise Conflict(f"product {p.code} has no workspace to run its reports in; the operator must re-register it "
                       "from its partner's workspace", details={"field": "workspace_id"})
    return ws


def _shared_release(session: Session, product_id: int, sources: dict[str, Any] | None) -> ProductReport | None:
    """The latest report of the product whose job is live (queued, running, succeeded), built from
    `sources` (None: from any data)."""
    rows = session.exec(select(ProductReport, Job).join(Job, Job.id == ProductReport.job_id)
                        .where(ProductReport.product_id == product_id, Job.state.in_(_LIVE))
                        .order_by(ProductReport.id.desc())).all()
    for rep, job in rows:
        if sources is None and job.state == JobState.SUCCEEDED.value:
            return rep
        if sources is not None and rep.sources == sources:
            return rep
    return None


def request(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, code: str,
            report: Any, purpose: Any = None) -> tuple[ProductReport, list[int]]:
    """Record a report request; returns it and the job ids to dispatch after the commit (none when an
    existing release answers it). Flushes, never commits; a refusal raises after its audit event."""
    who = audit_log.as_actor(principal)
    customer = who.org_id
    if customer is None:
        raise InvalidInput("reports are requested for an organisation")
    purpose = calls.check_purpose(purpose)
    p = calls.visible_product(session, code, customer)
    output = _aggregate_product(p, report)
    a = guard_use(session, p, customer, who, channel="report")  # about no subject: no consent
    planned = sandbox_jobs.Planned(session, "spec", p.spec, None)
    sources = precompute.sources_of(session, planned)
    shared, dispatch, stale = _shared_release(session, p.id, sources), [], False
    if shared is not None:
        job_id = shared.job_id
    else:
        ws = _workspace(session, p)
        params = precompute.spec_params(p, planned, {})
        try:
            with session.begin_nested():
                sj, job = sandbox_jobs.submit_job(session, ws=ws, kind="spec", spec=p.spec, params=params,
                                                  actor=audit_log.Actor(kind="system", name="product reports",
                                                                        org_id=ws.org_id))
            job_id, dispatch = job.id, sandbox_jobs.job_ids(sj)
        except BudgetExhausted as exc:
            earlier = _shared_release(session, p.id, None)
            if earlier is None:
                audit_log.record(session, who, "product.report.refused", outcome="denied", object_type="product",
                                 object_id=p.id, details={"code": "budget_exhausted", "report": output})
                raise BudgetExhausted(f"{p.code}'s privacy budget for a new report is spent and no earlier report "
                                      "exists; the bureau can raise the partner's budget", details=exc.details) from exc
            job_id, sources, stale = earlier.job_id, earlier.sources, True
    method, price = calls.price_of(a)
    rep = ProductReport(product_id=p.id, customer_org_id=customer, output=output, purpose=purpose,
                        request_id=calls.new_request_id(), job_id=job_id, sources=sources, stale=stale,
                        created_by=who.name[:200])
    session.add(rep)
    session.flush()
    _, amount = metering.amount(method, price, 1, channel="batch")
    metering.meter(session, customer_org_id=customer, product_id=p.id, agreement_id=a.id,
                   request_id=rep.request_id, pricing_method=method, price_fen=price, units=1, channel="report",
                   response={"report_id": rep.id})
    audit_log.record(session, who, "product.report.request", object_type="product", object_id=p.id,
                     details={"code": p.code, "report": output, "report_id": rep.id, "request_id": rep.request_id,
                              "job_id": job_id, "shared": shared is not None, "stale": stale,
                              "agreement": a.number, "amount_fen": amount})
    return rep, dispatch


def get_report(session: Session, report_id: int, *, code: str, org_id: int | None) -> ProductReport:
    """The report, for the customer that asked for it (org_id None: any; others get 404)."""
    rep = session.get(ProductReport, report_id)
    p = session.get(Product, rep.product_id) if rep is not None else None
    if rep is None or p is None or p.code != code or (org_id is not None and rep.customer_org_id != org_id):
        raise NotFound(f"no report {report_id} of {code}")
    return rep


def _state(job: Job) -> str:
    return {JobState.QUEUED.value: "queued", JobState.RUNNING.value: "running",
            JobState.SUCCEEDED.value: "done"}.get(job.state, "failed")


def view(session: Session, settings: Settings, rep: ProductReport) -> dict[str, Any]:
    """The report's state and, once its release is done, its rows."""
    p = session.get(Product, rep.product_id)
    job = session.get(Job, rep.job_id)
    state = _state(job)
    out: dict[str, Any] = {"id": rep.id, "request_id": rep.request_id, "product": p.code,
                           "registration_number": p.registration_number, "report": rep.output, "state": state,
                           "stale": rep.stale, "requested_at": rep.created_at,
                           "requested_at_local": show(rep.created_at), "progress": job.progress,
                           "rows": None}
    if state == "failed":
        out["error"] = {"code": job.error_code or "failed",
                        "message": job.error_message or "the release job did not finish"}
    if state != "done":
        return out
    rel = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == rep.job_id,
                                                    SandboxRelease.output == rep.output)).first()
    if rel is None:
        out.update(state="failed", error={"code": "not_released", "message": f"{rep.output} was not released"})
        return out
    table = pq.read_table(io.BytesIO(get_object_store(settings).get(rel.object_key))).slice(0, MAX_ROWS)
    release = next(o.get("release") or {} for o in p.spec.get("outputs", []) if o.get("name") == rep.output)
    out.update(rows=table.to_pylist(), columns=table.column_names, released_at=rel.created_at,
               released_at_local=show(rel.created_at),
               privacy={"epsilon": release.get("epsilon"), "delta": release.get("delta"),
                        "min_cell": release.get("min_cell"), "unit": "person"})
    return out


def request_and_view(session: Session, settings: Settings, **kw: Any) -> tuple[dict[str, Any], list[int]]:
    rep, dispatch = request(session, settings, **kw)
    return view(session, settings, rep), dispatch

