"""The auditor's page: the year's reports (what `authops.platform.auditwork.reports.write_reports`
writes: each operator's operating and third-party audit report, each signed assessment's report),
each downloadable as PDF, HTML or Excel through the API's own download (same checks, logged with its
size), and the log's verification (export, then verify chain, signatures, Merkle roots and proofs
offline), shown on request. audit.verify, as in the API.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from sqlmodel import select

from authops.audit import log as audit_log
from authops.billing.prices import year_of
from authops.console.auth import Viewer, page
from authops.console.rendering import render
from authops.console.routing import router
from authops.core.identity import OrgKind
from authops.platform.assessment.models import Assessment
from authops.platform.auditwork import integrity
from authops.platform.auditwork import router as auditwork_routes
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of
from authops.platform.governance import agreements
from authops.platform.identity.models import Organisation

Format = Literal["pdf", "html", "xlsx"]
Year = Annotated[int | None, Query(ge=2000, le=2100)]


@router.get("/audit-reports")
def audit_reports(request: Request, session: SessionDep, settings: SettingsDep,
                  viewer: Annotated[Viewer, page("audit.verify")], year: Year = None,
                  verify: Annotated[bool, Query()] = False):
    """The year's reports with their downloads; with verify=1 also the log's verification result."""
    year = year or year_of()
    operators = list(session.exec(select(Organisation).where(Organisation.kind == OrgKind.OPERATOR.value)
                                  .order_by(Organisation.id)))
    signed = list(session.exec(select(Assessment).where(Assessment.year == year, Assessment.state == "signed")
                               .order_by(Assessment.id)))
    result = None
    if verify:
        result = integrity.verify_years(session, settings, year, year)
        audit_log.record(session, actor_of(viewer.principal), "auditwork.log.verify", object_type="audit_log",
                         details={k: result[k] for k in ("from_year", "to_year", "ok", "events_verified")})
    return render(request, "audit_reports.html", {
        "year": year, "operators": operators, "assessments": signed, "result": result, "formats": ("pdf", "html", "xlsx"),
        "who": {a.operator_org_id: agreements.org_name(session, a.operator_org_id) for a in signed}}, viewer=viewer)


@router.get("/audit-reports/operators/{org_id}/audit.{fmt}")
def audit_report(org_id: ObjectId, fmt: Format, session: SessionDep, settings: SettingsDep,
                 viewer: Annotated[Viewer, page("audit.verify")], year: Year = None):
    """The year's third-party audit report about the operator."""
    return auditwork_routes.audit_report(org_id, session, settings, viewer.principal, year, fmt)


@router.get("/audit-reports/operators/{org_id}/operating.{fmt}")
def operating_report(org_id: ObjectId, fmt: Format, session: SessionDep,
                     viewer: Annotated[Viewer, page("audit.verify")], year: Year = None):
    """The operator's operating report of the year."""
    return auditwork_routes.operating_report_of(org_id, session, viewer.principal, year, fmt)


@router.get("/audit-reports/assessments/{assessment_id}.{fmt}")
def assessment_report(assessment_id: ObjectId, fmt: Format, session: SessionDep,
                      viewer: Annotated[Viewer, page("audit.verify")]):
    """A signed assessment's report."""
    return auditwork_routes.assessment_report(assessment_id, session, viewer.principal, fmt)
