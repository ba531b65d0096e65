"""Audit-work routes (prefix /api/v1/auditwork): the yearly third-party audit and the reports.

Permissions: audit.verify (the auditor and the bureau: log verification, de-identification,
reconciliation, findings recorded, every report of any operator); audit.read (an organisation reads
and answers the findings about itself; audit.read_all holders read all); disclosure.publish (the
bureau publishes a finding onto the disclosure page); settlement.manage (the operator downloads its
own operating report). Every download is logged with its size.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from authops.audit import log as audit_log
from authops.billing import books
from authops.billing.prices import year_of
from authops.core.identity import Principal
from authops.platform.auditwork import deid, findings, integrity, reports
from authops.platform.auditwork.documents import MEDIA, Report, render_as
from authops.platform.deps import AuthorizerDep, ObjectId, SessionDep, SettingsDep, actor_of, require

router = APIRouter(prefix="/auditwork", tags=["audit work"])

Year = Annotated[int, Query(ge=2000, le=2100)]
Format = Annotated[Literal["pdf", "html", "xlsx"], Query()]


def _year(year: int | None) -> int:
    return year if year is not None else year_of()


def _download(session, principal: Principal, report: Report, fmt: str, object_type: str, object_id: Any) -> Response:
    data = render_as(report, fmt)
    audit_log.record(session, actor_of(principal), "auditwork.report.download", object_type=object_type,
                     object_id=object_id, bytes=len(data), details={"report": report.name, "format": fmt})
    disposition = "inline" if fmt == "html" else "attachment"
    return Response(data, media_type=MEDIA[fmt],
                    headers={"Content-Disposition": f'{disposition}; filename="{report.name}.{fmt}"'})


# --- the audit's checks ---------------------------------------------------------------------------

@router.get("/log-verification")
def verify_log(session: SessionDep, settings: SettingsDep, principal: Annotated[Principal, require("audit.verify")],
               from_year: Year | None = None, to_year: Year | None = None):
    """Export the whole log, verify it offline (chain, signatures, Merkle roots, proofs), count the years."""
    lo = _year(from_year)
    result = integrity.verify_years(session, settings, lo, to_year if to_year is not None else max(lo, year_of()))
    audit_log.record(session, actor_of(principal), "auditwork.log.verify", object_type="audit_log",
                     details={k: result[k] for k in ("from_year", "to_year", "ok", "events_verified")})
    return result


@router.get("/deidentification")
def deidentification(session: SessionDep, settings: SettingsDep,
                     principal: Annotated[Principal, require("audit.verify")], year: Year | None = None,
                     measure: bool = True):
    """Record releases: k achieved, suppression, re-identification risk; aggregates: ε, δ and budgets."""
    return deid.report(session, settings, _year(year), measure=measure)


@router.get("/operators/{org_id}/reconciliation")
def reconciliation(org_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("audit.verify")],
                   year: Year | None = None):
    """The operator's metered revenue against its product-sales book, month by month."""
    reports.operator(session, org_id)
    return books.reconcile(session, org_id, _year(year))


# --- findings -------------------------------------------------------------------------------------

class FindingIn(BaseModel):
    org_id: int = Field(ge=1, le=2_147_483_647, description="the audited organisation")
    year: int = Field(ge=2000, le=2100)
    severity: Literal["minor", "major", "critical"]
    title: str = Field(max_length=300)
    text: str = Field(max_length=findings.MAX_TEXT)
    related: list[dict[str, Any]] = Field(default_factory=list, max_length=findings.MAX_RELATED)


class ResponseIn(BaseModel):
    response: str = Field(max_length=findings.MAX_TEXT)


@router.post("/findings", status_code=201)
def record_finding(body: FindingIn, session: SessionDep, principal: Annotated[Principal, require("audit.verify")]):
    """The auditor records a finding about an organisation (severity, text, related objects)."""
    f = findings.record(session, actor=principal, org_id=body.org_id, year=body.year, severity=body.severity,
                        title=body.title, text=body.text, related=body.related)
    session.commit()
    return findings.view(f)


def _scope(principal: Principal, authorizer) -> int | None:
    return None if authorizer.allowed(principal, "audit.read_all") else principal.org_id


@router.get("/findings")
def list_findings(session: SessionDep, authorizer: AuthorizerDep,
                  principal: Annotated[Principal, require("audit.read")], year: Year | None = None):
    """Findings about one's own organisation (all of them with audit.read_all)."""
    return [findings.view(f) for f in findings.listing(session, year=year, org_id=_scope(principal, authorizer))]


@router.get("/findings/{finding_id}")
def get_finding(finding_id: ObjectId, session: SessionDep, authorizer: AuthorizerDep,
                principal: Annotated[Principal, require("audit.read")]):
    return findings.view(findings.get(session, finding_id, org_id=_scope(principal, authorizer)))


@router.post("/findings/{finding_id}/response")
def respond_to_finding(finding_id: ObjectId, body: ResponseIn, session: SessionDep,
                       principal: Annotated[Principal, require("audit.read")]):
    """The audited organisation answers a finding about itself (once, before it is published)."""
    f = findings.respond(session, findings.get(session, finding_id, org_id=principal.org_id), actor=principal,
                         response=body.response)
    session.commit()
    return findings.view(f)


@router.post("/findings/{finding_id}/publish")
def publish_finding(finding_id: ObjectId, session: SessionDep,
                    principal: Annotated[Principal, require("disclosure.publish")]):
    """The bureau publishes a finding (and the answer) on the public disclosure page."""
    f = findings.publish(session, findings.get(session, finding_id), actor=principal)
    session.commit()
    return findings.view(f)


# --- reports --------------------------------------------------------------------------------------

@router.get("/operators/{org_id}/reports/audit")
def audit_report(org_id: ObjectId, session: SessionDep, settings: SettingsDep,
                 principal: Annotated[Principal, require("audit.verify")], year: Year | None = None,
                 format: Format = "pdf"):
    """The year's third-party audit report about the operator (PDF, HTML or Excel)."""
    data = reports.audit_data(session, settings, _year(year), org_id)
    return _download(session, principal, reports.audit_report(data, org_id), format, "organisation", org_id)


@router.get("/operators/{org_id}/reports/operating")
def operating_report_of(org_id: ObjectId, session: SessionDep,
                        principal: Annotated[Principal, require("audit.verify")], year: Year | None = None,
                        format: Format = "pdf"):
    """An operator's operating report, for the auditor and the bureau."""
    report = reports.operating_report(session, org_id, _year(year))
    return _download(session, principal, report, format, "organisation", org_id)


@router.get("/reports/operating")
def own_operating_report(session: SessionDep, principal: Annotated[Principal, require("settlement.manage")],
                         year: Year | None = None, format: Format = "pdf"):
    """The operator's own operating report."""
    report = reports.operating_report(session, principal.org_id, _year(year))
    return _download(session, principal, report, format, "organisation", principal.org_id)


@router.get("/assessments/{assessment_id}/report")
def assessment_report(assessment_id: ObjectId, session: SessionDep,
                      principal: Annotated[Principal, require("audit.verify")], format: Format = "pdf"):
    """The annual assessment report (from the assessment's records; draft until the bureau signs)."""
    from authops.platform.assessment import report_data

    report = reports.assessment_report(report_data(session, assessment_id))
    return _download(session, principal, report, format, "assessment", assessment_id)
