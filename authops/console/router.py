"""The console's routes (/console/...): server-rendered pages over the platform's own services.

`public_router`: the login form, the vendored static files and the public disclosure page (no login).
`router`: every other page, each behind `page(action)`; the area pages live in authops.console.pages_*
(imported here, so their routes come first on the shared router of authops.console.routing) (the API's permission for the same data), so a
user sees here exactly what the API would show them: another organisation's object is 404, a page
needing an action the user lacks is 403. Every POST carries the CSRF token (ConsoleRoute checks it)
and answers with a redirect (post/redirect/get). Pages never show raw data: they render what the
services return (to-do lists, cases, reviews, agreements, usage counts and amounts, job progress).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import BackgroundTasks, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit import search as audit_search
from authops.audit.anomaly import service as anomaly
from authops.audit.anomaly.models import AnomalyRule
from authops.billing import render as billing_render
from authops.billing import statements
from authops.console import homes, pages_audit, pages_bureau, pages_customer, pages_operator, pages_partner, security
from authops.console.auth import Viewer, page
from authops.console.forms import PREFIX
from authops.console.forms import validated as _validated
from authops.console.i18n import LANG_COOKIE, LANGS, lang_of
from authops.console.rendering import render
from authops.console.routing import public_router, router
from authops.core.clock import show, to_shanghai, utcnow
from authops.core.errors import Forbidden, InvalidInput, NotFound
from authops.core.jobs.models import Job
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, client_ip
from authops.platform import limits
from authops.platform.governance import agreements, disclosure, scenarios
from authops.platform.governance.models import Case
from authops.platform.governance.routes_scenarios import DecisionIn, ExpertVoteIn
from authops.platform.identity import router as identity_routes
from authops.platform.identity import schemas as identity_schemas
from authops.platform.identity import service as identity_service
from authops.platform.billing import invoices
from authops.platform.catalog import router as catalog_routes
from authops.platform.catalog import service as catalog
from authops.platform.catalog.models import IngestRun
from authops.platform.supervision import schemas as supervision_schemas

# The area pages (imported above) registered their routes on `router` first: their fixed paths
# (/scenarios/new) match before /scenarios/{case_id}.
AREAS = (pages_bureau, pages_partner, pages_customer, pages_operator, pages_audit)

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"htmx.min.js": "text/javascript", "console.css": "text/css"}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _safe_next(target: str | None) -> str:
    """Only a console path: never an absolute or protocol-relative address (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


# --- public: login, static files, disclosure -------------------------------------------------------

@public_router.get("/login")
def login_form(request: Request, settings: SettingsDep, next: str | None = None, failed: str | None = None):  # noqa: A002
    nonce = request.cookies.get(security.PRELOGIN_COOKIE) or security.new_prelogin_nonce()
    response = render(request, "login.html", {
        "csrf": security.csrf_token(settings, nonce, purpose="login"), "next": _safe_next(next),
        "failed": failed}, status_code=200)
    security.set_cookie(response, request, security.PRELOGIN_COOKIE, nonce, max_age=3600)
    return response


@public_router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep, username: Annotated[str, Form()] = "",
          password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = ""):  # noqa: A002
    """The API's login (same checks, lockout, block and audit events); the token goes into the cookie."""
    body = _validated(identity_schemas.LoginIn, username=username, password=password)
    try:
        token = identity_routes.login(body, request, session, settings)
    except identity_service.LoginFailed:
        return RedirectResponse(f"{PREFIX}/login?failed=credentials&next={_safe_next(next)}", status_code=303)
    except Forbidden:  # the user or address is under an anomaly block
        return RedirectResponse(f"{PREFIX}/login?failed=blocked&next={_safe_next(next)}", status_code=303)
    except limits.RateLimited as exc:  # too many attempts: the page says so (and when), not a JSON body
        return RedirectResponse(f"{PREFIX}/login?failed=throttled&next={_safe_next(next)}", status_code=303,
                                headers={"Retry-After": str(exc.retry_after)})
    response = RedirectResponse(_safe_next(next), status_code=303)
    security.set_cookie(response, request, security.SESSION_COOKIE, token.access_token,
                        max_age=settings.token_ttl_seconds)
    response.delete_cookie(security.PRELOGIN_COOKIE, path=security.COOKIE_PATH)
    return response


@public_router.get("")
def console_root():
    return RedirectResponse(PREFIX + "/", status_code=307)


@public_router.get("/static/{name}")
def static_file(name: str):
    if name not in STATIC_FILES:
        raise NotFound(f"no console file {name!r}")
    return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


@public_router.get("/disclosure")
def disclosure_page(request: Request, session: SessionDep, settings: SettingsDep):
    """The public disclosure: authorized operator, scope and term, partners, products and prices, audit results."""
    lang = lang_of(request)
    return render(request, "disclosure.html", {"d": disclosure.public_disclosure(session, settings, lang=lang)})


@public_router.get("/lang/{lang}")
def switch_language(request: Request, lang: str, back: str | None = None):
    if lang not in LANGS:
        raise NotFound(f"no language {lang!r}; zh or en")
    response = RedirectResponse(_safe_next(back), status_code=303)
    security.set_cookie(response, request, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


# --- session -------------------------------------------------------------------------------------

@router.post("/logout")
def logout(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("self.read")]):
    identity_service.logout(session, request.cookies.get(security.SESSION_COOKIE, ""))
    audit_log.record(session, actor_of(viewer.principal), "auth.logout")
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path=security.COOKIE_PATH)
    return response


# --- home ----------------------------------------------------------------------------------------

@router.get("/")
def home(request: Request, session: SessionDep, settings: SettingsDep, viewer: Annotated[Viewer, page("todo.read")]):
    """The role's home: its to-do list first, then what its work needs."""
    return render(request, "home.html", {"h": homes.home(session, viewer, settings)}, viewer=viewer)


# --- scenario applications and their three-level review ----------------------------------------

def _scenario(session, viewer: Viewer, case_id: int) -> Case:
    return scenarios.get_visible(session, case_id, viewer.principal.org_id, cross_org=viewer.may("review.final"))


@router.get("/scenarios")
def scenario_list(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("todo.read")]):
    cases = scenarios.list_cases(session, viewer.principal.org_id, cross_org=viewer.may("review.final"))
    return render(request, "scenarios.html", {"cases": cases, "queue": {c.id for c in cases if homes.may_review(viewer, c)}},
                  viewer=viewer)


@router.get("/scenarios/{case_id}")
def scenario_detail(case_id: ObjectId, request: Request, session: SessionDep,
                    viewer: Annotated[Viewer, page("todo.read")]):
    """One application: its content, every review with reasons, the timeline, and the review form if it is yours."""
    case = _scenario(session, viewer, case_id)
    return render(request, "scenario.html", {
        "c": scenarios.view(session, case), "may_review": homes.may_review(viewer, case),
        "may_submit": viewer.may("scenario.submit") and case.applicant_org_id == viewer.principal.org_id
        and case.state in ("draft", "returned"),
        "applicant": agreements.org_name(session, case.applicant_org_id), "done": request.query_params.get("done")},
        viewer=viewer)


def _reviewed(case: Case) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/scenarios/{case.id}?done=1", status_code=303)


@router.post("/scenarios/{case_id}/provider-review")
def provider_review(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("review.provider")],
                    decision: Annotated[str, Form()] = "", reasons: Annotated[str, Form()] = ""):
    body = _validated(DecisionIn, decision=decision, reasons=reasons)
    case = _scenario(session, viewer, case_id)
    scenarios.provider_review(session, case, actor=actor_of(viewer.principal), decision=body.decision,
                              reasons=body.reasons)
    return _reviewed(case)


@router.post("/scenarios/{case_id}/expert-review")
def expert_review(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("review.expert")],
                  decision: Annotated[str, Form()] = "", reasons: Annotated[str, Form()] = "",
                  score: Annotated[str, Form()] = ""):
    body = _validated(ExpertVoteIn, decision=decision, reasons=reasons, score=score or None)
    case = _scenario(session, viewer, case_id)
    scenarios.expert_review(session, case, actor=actor_of(viewer.principal), decision=body.decision,
                            reasons=body.reasons, score=body.score)
    return _reviewed(case)


@router.post("/scenarios/{case_id}/bureau-review")
def bureau_review(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("review.final")],
                  decision: Annotated[str, Form()] = "", reasons: Annotated[str, Form()] = ""):
    body = _validated(DecisionIn, decision=decision, reasons=reasons)
    case = _scenario(session, viewer, case_id)
    scenarios.bureau_review(session, case, actor=actor_of(viewer.principal), decision=body.decision,
                            reasons=body.reasons)
    return _reviewed(case)


# --- agreements: read the exact text, accept it -----------------------------------------------------

@router.get("/agreements/{agreement_id}")
def agreement_page(agreement_id: ObjectId, request: Request, session: SessionDep,
                   viewer: Annotated[Viewer, page("agreement.sign")]):
    """The agreement's exact text and SHA-256, who accepted when, and the accept button while it waits for you."""
    a = agreements.get_agreement(session, agreement_id, org_id=viewer.principal.org_id)
    view = agreements.view(session, a)
    return render(request, "agreement.html", {
        "a": view, "mine_to_accept": viewer.principal.org_id in view["waiting_for"]}, viewer=viewer)


@router.post("/agreements/{agreement_id}/accept")
def accept_agreement(agreement_id: ObjectId, request: Request, session: SessionDep,
                     viewer: Annotated[Viewer, page("agreement.sign")], text_sha256: Annotated[str, Form()] = ""):
    """Accept the text shown (its hash travels with the form: a text changed meanwhile is refused)."""
    a = agreements.get_agreement(session, agreement_id, org_id=viewer.principal.org_id)
    agreements.accept(session, a, actor_of(viewer.principal), ip=client_ip(request), text_sha256=text_sha256)
    return RedirectResponse(f"{PREFIX}/agreements/{agreement_id}", status_code=303)


# --- a department's resources: Excel template, upload, loads with live progress ----------------------

@router.get("/resources/{code}")
def resource_page(code: str, request: Request, session: SessionDep, viewer: Annotated[Viewer, page("data.ingest")]):
    """One of the department's resources: quality figures, its Excel template, an upload form and the
    latest loads (counts only) with each load's job progress."""
    res = catalog.own_resource(session, viewer.principal, code)
    runs = session.exec(select(IngestRun).where(IngestRun.resource_id == res.id)
                        .order_by(IngestRun.id.desc()).limit(10)).all()
    jobs_by_id = {j.id: j for j in session.exec(select(Job).where(Job.id.in_([r.job_id for r in runs if r.job_id])))}
    return render(request, "resource.html", {"res": res, "q": catalog.quality(session, res), "runs": runs,
                                             "jobs": jobs_by_id, "show": show}, viewer=viewer)


@router.get("/resources/{code}/template.xlsx")
def resource_template(code: str, session: SessionDep, viewer: Annotated[Viewer, page("data.ingest")]):
    """The API's template download (same checks and audit event)."""
    return catalog_routes.template(code, session, viewer.principal)


@router.post("/resources/{code}/uploads")
def resource_upload(code: str, session: SessionDep, settings: SettingsDep,
                    viewer: Annotated[Viewer, page("data.ingest")], file: Annotated[UploadFile, File()],
                    mode: Annotated[Literal["replace", "upsert"], Form()] = "replace"):
    """The API's upload (same limits, staging, job and audit event); the page then shows the load's progress."""
    tasks = BackgroundTasks()
    catalog_routes.upload(code, session, settings, tasks, viewer.principal, file, mode)
    return RedirectResponse(f"{PREFIX}/resources/{code}", status_code=303, background=tasks)


# --- usage and statements ---------------------------------------------------------------------------

def _period(month: str | None) -> tuple[int, int]:
    if not month:
        now = to_shanghai(utcnow())
        return now.year, now.month
    try:
        year, m = (int(x) for x in month.split("-", 1))
    except ValueError:
        raise InvalidInput("month must be YYYY-MM", details={"field": "month"}) from None
    statements.check_period(year, m)
    return year, m


@router.get("/billing")
def billing(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("billing.read")],
            month: Annotated[str | None, Query(max_length=7)] = None):
    """The month's usage you may see, its statements (download PDF or Excel) and calls per day."""
    year, m = _period(month)
    uses = invoices.usage(session, viewer.principal.org_id, year=year, month=m)
    found = invoices.monthly_statements(session, viewer.principal.org_id, year=year, month=m)
    per_day: dict[str, int] = {}
    for u in uses:
        day = to_shanghai(u["at"]).strftime("%m-%d")
        per_day[day] = per_day.get(day, 0) + 1
    return render(request, "billing.html", {
        "month": f"{year}-{m:02d}", "uses": uses, "statements": found,
        "calls": [(d, float(n)) for d, n in sorted(per_day.items())]}, viewer=viewer)


@router.get("/billing/statements.{fmt}")
def statement_download(fmt: Literal["pdf", "xlsx"], session: SessionDep,
                       viewer: Annotated[Viewer, page("billing.read")],
                       month: Annotated[str | None, Query(max_length=7)] = None):
    """The month's statements as the API's PDF or Excel (Chinese and English)."""
    year, m = _period(month)
    found = invoices.monthly_statements(session, viewer.principal.org_id, year=year, month=m)
    doc = statements.document(found, period=f"{year}-{m:02d}",
                              reader=agreements.org_name(session, viewer.principal.org_id))
    data, media = (billing_render.pdf(doc), "application/pdf") if fmt == "pdf" else (billing_render.xlsx(doc), XLSX)
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="statements-{year}-{m:02d}.{fmt}"'})


# --- jobs with live progress ----------------------------------------------------------------------

def _own_job(session, viewer: Viewer, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.org_id != viewer.principal.org_id:
        raise NotFound(f"no job {job_id}")
    return job


@router.get("/jobs")
def jobs(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("job.read")]):
    rows = session.exec(select(Job).where(Job.org_id == viewer.principal.org_id).order_by(Job.id.desc())
                        .limit(50)).all()
    return render(request, "jobs.html", {"jobs": rows}, viewer=viewer)


@router.get("/jobs/{job_id}/progress")
def job_progress(job_id: ObjectId, request: Request, session: SessionDep,
                 viewer: Annotated[Viewer, page("job.read")]):
    """One job's progress cell (htmx polls it until the job ends)."""
    return render(request, "_job_progress.html", {"job": _own_job(session, viewer, job_id)}, viewer=viewer)


# --- anomaly cases (bureau) -----------------------------------------------------------------------

@router.get("/anomalies")
def anomalies(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("incident.read")]):
    return render(request, "anomalies.html", {
        "open": anomaly.list_cases(session, state="open", limit=50),
        "decided": [c for c in anomaly.list_cases(session, limit=50) if c.state != "open"][:20],
        "rules": dict(session.exec(select(AnomalyRule.id, AnomalyRule.name)).all()),
        "show": show}, viewer=viewer)


@router.post("/anomalies/{case_id}/confirm")
def confirm_anomaly(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("anomaly.review")],
                    reason: Annotated[str, Form()] = "", severity: Annotated[str, Form()] = ""):
    body = _validated(supervision_schemas.ConfirmIn, reason=reason, severity=severity)
    anomaly.confirm_case(session, case_id, actor=actor_of(viewer.principal), reason=body.reason,
                         severity=body.severity)
    return RedirectResponse(f"{PREFIX}/anomalies", status_code=303)


@router.post("/anomalies/{case_id}/release")
def release_anomaly(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("anomaly.review")],
                    reason: Annotated[str, Form()] = ""):
    body = _validated(supervision_schemas.DecisionIn, reason=reason)
    anomaly.release_case(session, case_id, actor=actor_of(viewer.principal), reason=body.reason)
    return RedirectResponse(f"{PREFIX}/anomalies", status_code=303)


# --- audit log search -----------------------------------------------------------------------------

@router.get("/audit")
def audit(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("audit.read")],
          action: Annotated[str | None, Query(max_length=64)] = None):
    """The newest events you may see (others' need audit.read_all), filtered by action."""
    only_org = None if viewer.may("audit.read_all") else viewer.principal.org_id
    events = audit_search.search(session, audit_search.Filter(action=action or None), only_org=only_org, limit=100)
    return render(request, "audit.html", {"events": events, "action": action or "", "show": show}, viewer=viewer)
