"""Operator lifecycle routes (under /api/v1/governance/operator) and the public ones (under
/api/v1/public/operator: the selection notices, applications under publicity, filing an objection).

Who may do what: the bureau (authorization.manage, across organisations) publishes notices, checks
qualifications, concludes, resolves objections, makes the agreement, decides renewals and exits,
records facts, forces exits and runs and verifies the post-exit destruction; an operator company
(operator.apply) applies, attaches materials, submits, applies for renewal or exit and reads its
own cases; a committee expert (review.expert) scores the applications of notices whose committee
names its organisation. Another organisation's case is 404.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field
from sqlmodel import select

from authops.core.clock import as_utc
from authops.core.errors import InvalidInput
from authops.core.identity import Principal
from authops.core.storage.store import get_object_store
from authops.platform.deps import AuthorizerDep, ObjectId, SessionDep, SettingsDep, actor_of, client_ip, require
from authops.platform.governance import destruction, operator, workflow
from authops.platform.governance.models import Case
from authops.platform.governance.routes_common import MAX_ID, DbId

router = APIRouter(prefix="/operator", tags=["governance: operator"])
public_router = APIRouter(prefix="/public/operator", tags=["public"])

MAX_DOCUMENT = 20 * 1024 * 1024


def _naive_utc(at: datetime) -> datetime:
    """An API time: with an offset it is converted; without one it is taken as UTC."""
    return as_utc(at).replace(tzinfo=None)


class NoticeIn(BaseModel):
    title: str = Field(max_length=300)
    deadline_at: datetime = Field(description="applications close at this time (give an offset, e.g. +08:00; "
                                              "a time without one is UTC)")
    committee_org_ids: list[DbId] = Field(min_length=1, max_length=50, description="the expert committee's organisations")
    conditions: list[str] | None = Field(default=None, max_length=50)
    materials: list[str] | None = Field(default=None, max_length=60, description="the checklist; default: the seed's")


class ConcludeIn(BaseModel):
    selected_case_id: DbId | None = Field(default=None, description="only for a tie at the top mean score")
    reasons: str = Field(default="", max_length=4000)


class ApplicationIn(BaseModel):
    call_id: DbId
    title: str = Field(max_length=300)
    payload: dict[str, Any] = Field(description="the application form: security_officer {name, title}, "
                                                "internal_security_rules [..], and anything else the notice asks")


class QualificationIn(BaseModel):
    passed: bool
    reasons: str = Field(default="", max_length=4000)


class ScoreIn(BaseModel):
    score: int = Field(ge=0, le=100)
    comments: str = Field(max_length=8000)


class ResolveIn(BaseModel):
    upheld: bool
    reasons: str = Field(max_length=4000)


class AgreementIn(BaseModel):
    revenue_distribution: dict[str, Any] = Field(description="shares_pct {provider_departments, operator, partners} "
                                                             "adding up to 100; settlement (default yearly); notes")
    scope: str = Field(default="", max_length=4000)
    duties: list[str] | None = Field(default=None, max_length=40)


class DecisionIn(BaseModel):
    approve: bool
    reasons: str = Field(default="", max_length=4000)


class RenewalIn(BaseModel):
    title: str = Field(default="", max_length=300)
    payload: dict[str, Any] = Field(default_factory=dict)


class ExitIn(BaseModel):
    exit_on: date
    reason: str = Field(max_length=4000)
    title: str = Field(default="", max_length=300)


class ForcedExitIn(BaseModel):
    operator_org_id: DbId
    cause: str = Field(max_length=40, description=", ".join(operator.FORCED_CAUSES))
    reasons: str = Field(max_length=4000)
    exit_on: date | None = None


class FactIn(BaseModel):
    operator_org_id: DbId
    kind: str = Field(max_length=40, description=", ".join(operator.FACT_KINDS))
    summary: str = Field(max_length=500)
    year: int | None = Field(default=None, ge=2000, le=2100)
    occurred_on: date | None = None


class DestructionIn(BaseModel):
    returned: str = Field(max_length=2000, description="how the raw data was returned: to whom, when, how")
    confirm: str = Field(max_length=64, description="the agreement's number, repeated: destruction cannot be undone")


class ObjectionIn(BaseModel):
    # The hard caps here only bound the request; the service names the configured limits
    # (objection_max_chars 2,000, objection_contact_max_chars 100).
    text: str = Field(max_length=10_000, description="what the objection is about (at most 2,000 characters)")
    contact: str = Field(max_length=1000, description="phone or e-mail for the bureau's reply (not published; "
                                                      "at most 100 characters)")


def _fact_view(f) -> dict[str, Any]:
    return {"id": f.id, "operator_org_id": f.operator_org_id, "kind": f.kind, "year": f.year, "summary": f.summary,
            "details": f.details, "recorded_by": f.recorded_by, "recorded_at": f.recorded_at}


# --- notices ------------------------------------------------------------------------------------------
@router.post("/notices", status_code=201)
def publish_notice(body: NoticeIn, session: SessionDep,
                   principal: Annotated[Principal, require("authorization.manage")]):
    """Publish an operator selection notice: conditions, materials checklist, deadline, expert committee."""
    call = operator.publish_notice(session, actor=actor_of(principal), title=body.title,
                                   deadline_at=_naive_utc(body.deadline_at), committee_org_ids=body.committee_org_ids,
                                   conditions=body.conditions, materials=body.materials)
    return operator.notice_view(session, call)


@router.get("/notices")
def list_notices(session: SessionDep, authorizer: AuthorizerDep, principal: Annotated[Principal, require("todo.read")]):
    """Selection notices. The expert committee and the number of applications are the bureau's
    (authorization.manage) to see; everyone else sees the public notice fields."""
    bureau = authorizer.allowed(principal, "authorization.manage")
    return [operator.notice_view(session, c, public=not bureau)
            for c in operator.list_notices(session, public=not bureau)]


@router.post("/notices/{call_id}/conclude")
def conclude(call_id: ObjectId, body: ConcludeIn, session: SessionDep, settings: SettingsDep,
             principal: Annotated[Principal, require("authorization.manage")]):
    """After the deadline, once every qualified application has the committee quorum of scores: the highest
    mean score (at least 60) is selected and published for the publicity period."""
    call = operator.get_notice(session, call_id)
    result = operator.conclude(session, call, actor=actor_of(principal), selected_case_id=body.selected_case_id,
                               reasons=body.reasons, settings=settings)
    return {**operator.notice_view(session, call), "result": result}


@router.get("/notices/{call_id}/applications")
def notice_applications(call_id: ObjectId, session: SessionDep,
                        principal: Annotated[Principal, require("authorization.manage")]):
    call = operator.get_notice(session, call_id)
    cases = session.exec(select(Case).where(Case.call_id == call.id, Case.kind == operator.APPLICATION)
                         .order_by(Case.id))  # type: ignore[arg-type]
    return [operator.case_view(session, c, bureau=True) for c in cases]


# --- applications (the applicant's side) --------------------------------------------------------------
@router.post("/applications", status_code=201)
def file_application(body: ApplicationIn, session: SessionDep,
                     principal: Annotated[Principal, require("operator.apply")]):
    """Apply to an open notice; attach the checklist's materials, then submit."""
    call = operator.get_notice(session, body.call_id)
    case = operator.file_application(session, call=call, actor=actor_of(principal), title=body.title,
                                     payload=body.payload)
    return operator.case_view(session, case)


@router.get("/applications")
def my_applications(session: SessionDep, principal: Annotated[Principal, require("operator.apply")]):
    """The caller's own operator applications, renewals and exits."""
    cases = session.exec(select(Case).where(Case.applicant_org_id == principal.org_id,
                                            Case.kind.in_(operator.KINDS)).order_by(Case.id))  # type: ignore[attr-defined]
    return [operator.case_view(session, c, bureau=False) for c in cases]


@router.get("/applications/{case_id}")
def my_application(case_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("operator.apply")]):
    return operator.case_view(session, operator.own_case(session, case_id, principal))


@router.post("/applications/{case_id}/documents", status_code=201)
def attach(case_id: ObjectId, session: SessionDep, settings: SettingsDep,
           principal: Annotated[Principal, require("operator.apply")],
           file: Annotated[UploadFile, File(description="the material (PDF, scan, ...); stored encrypted")],
           material: Annotated[str | None, Form(max_length=100, description="the checklist item this file "
                                                "answers; default: the file name without its extension")] = None):
    case = operator.own_case(session, case_id, principal)
    material = material or PurePath(file.filename or "").stem
    data = file.file.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise InvalidInput(f"the file is larger than {MAX_DOCUMENT // (1024 * 1024)} MB", details={"field": "file"})
    doc = operator.add_document(session, get_object_store(settings), case, material=material,
                                filename=file.filename or material, content=data, actor=actor_of(principal),
                                content_type=file.content_type or "application/octet-stream")
    return {"id": doc.id, "material": doc.material, "filename": doc.filename, "size": doc.size,
            "sha256": doc.sha256, "missing": workflow.missing_materials(session, case, operator.checklist(session, case))}


@router.post("/applications/{case_id}/submit")
def submit(case_id: ObjectId, session: SessionDep, settings: SettingsDep,
           principal: Annotated[Principal, require("operator.apply")]):
    """Submit an application, renewal or exit; refused listing any missing materials."""
    case = operator.own_case(session, case_id, principal)
    operator.submit(session, case, actor=actor_of(principal), settings=settings)
    return operator.case_view(session, case)


@router.get("/authorization")
def my_authorization(session: SessionDep, principal: Annotated[Principal, require("operator.apply")]):
    """The caller's operator authorization in force today, or why there is none."""
    try:
        ag = operator.require_active_authorization(session, principal.org_id)
    except operator.NoActiveAuthorization as exc:
        return {"active": False, "state": exc.details["state"], "message": exc.message}
    lo, hi = operator.renewal_window(ag)
    return {"active": True, "state": "active", "agreement": operator.agreement_view(session, ag),
            "renewal_window": {"opens_on": lo, "closes_on": hi}}


@router.post("/renewals", status_code=201)
def open_renewal(body: RenewalIn, session: SessionDep, principal: Annotated[Principal, require("operator.apply")]):
    """Open a renewal inside the window (from 6 months before expiry); attach operating_report,
    third_party_evaluation and three_year_plan, then submit. A one-vote veto on record blocks it."""
    case = operator.open_renewal(session, actor=actor_of(principal), title=body.title, payload=body.payload)
    return operator.case_view(session, case)


@router.post("/exits", status_code=201)
def open_exit(body: ExitIn, session: SessionDep, principal: Annotated[Principal, require("operator.apply")]):
    """Apply to exit voluntarily at least 6 months ahead; attach handover_plan, service_continuity_plan and
    clearing_report, then submit."""
    case = operator.open_exit(session, actor=actor_of(principal), exit_on=body.exit_on, reason=body.reason,
                              title=body.title)
    return operator.case_view(session, case)


# --- the bureau's side ---------------------------------------------------------------------------------
@router.get("/bureau/applications/{case_id}")
def bureau_application(case_id: ObjectId, session: SessionDep,
                       principal: Annotated[Principal, require("authorization.manage")]):
    return operator.case_view(session, operator.get_case(session, case_id), bureau=True)


@router.post("/applications/{case_id}/qualification")
def qualification(case_id: ObjectId, body: QualificationIn, session: SessionDep, settings: SettingsDep,
                  principal: Annotated[Principal, require("authorization.manage")]):
    """Pass (to the expert committee) or fail (with reasons) the qualification check."""
    case = operator.get_case(session, case_id, (operator.APPLICATION,))
    operator.qualification(session, case, actor=actor_of(principal), passed=body.passed, reasons=body.reasons,
                           settings=settings)
    return operator.case_view(session, case, bureau=True)


@router.post("/applications/{case_id}/objections/{n}/resolve")
def resolve_objection(case_id: ObjectId, n: ObjectId, body: ResolveIn, session: SessionDep,
                      principal: Annotated[Principal, require("authorization.manage")]):
    case = operator.get_case(session, case_id, (operator.APPLICATION,))
    operator.resolve_objection(session, case, n, actor=actor_of(principal), upheld=body.upheld, reasons=body.reasons)
    return operator.case_view(session, case, bureau=True)


@router.post("/applications/{case_id}/agreement", status_code=201)
def make_agreement(case_id: ObjectId, body: AgreementIn, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("authorization.manage")]):
    """After the publicity period with every objection resolved: the authorization agreement (3-year term);
    both sides then accept it electronically."""
    case = operator.get_case(session, case_id, (operator.APPLICATION,))
    ag = operator.make_agreement(session, case, actor=actor_of(principal), revenue_distribution=body.revenue_distribution,
                                 scope=body.scope, duties=body.duties, settings=settings)
    return operator.agreement_view(session, ag)


@router.post("/applications/{case_id}/decision")
def decide(case_id: ObjectId, body: DecisionIn, session: SessionDep, settings: SettingsDep,
           principal: Annotated[Principal, require("authorization.manage")]):
    """Approve or reject a submitted renewal or voluntary exit."""
    case = operator.get_case(session, case_id, (operator.RENEWAL, operator.EXIT))
    operator.decide(session, case, actor=actor_of(principal), approve=body.approve, reasons=body.reasons,
                    settings=settings)
    return operator.case_view(session, case, bureau=True)


@router.post("/exits/forced", status_code=201)
def force_exit(body: ForcedExitIn, session: SessionDep, settings: SettingsDep,
               principal: Annotated[Principal, require("authorization.manage")]):
    """Terminate the authorization for a listed cause whose facts are on record."""
    case = operator.force_exit(session, operator_org_id=body.operator_org_id, cause=body.cause, reasons=body.reasons,
                               actor=actor_of(principal), exit_on=body.exit_on, settings=settings)
    return operator.case_view(session, case, bureau=True)


@router.post("/facts", status_code=201)
def record_fact(body: FactIn, session: SessionDep, principal: Annotated[Principal, require("authorization.manage")]):
    """Record a fact about the operator (incident, assessment result, unapproved transfer, fraud, ...)."""
    fact = operator.record_fact(session, operator_org_id=body.operator_org_id, kind=body.kind, summary=body.summary,
                                year=body.year, occurred_on=body.occurred_on, actor=actor_of(principal))
    return _fact_view(fact)


@router.get("/facts")
def list_facts(session: SessionDep, principal: Annotated[Principal, require("authorization.manage")],
               operator_org_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None):
    from authops.platform.governance.models import OperatorFact

    q = select(OperatorFact)
    if operator_org_id is not None:
        q = q.where(OperatorFact.operator_org_id == operator_org_id)
    return [_fact_view(f) for f in session.exec(q.order_by(OperatorFact.id))]  # type: ignore[arg-type]


@router.post("/agreements/{agreement_id}/destruction", status_code=201)
def destroy(agreement_id: ObjectId, body: DestructionIn, session: SessionDep, settings: SettingsDep,
            principal: Annotated[Principal, require("authorization.manage")]):
    """After exit: destroy every object of the operation (its data keys first) and issue the signed certificate.
    Irreversible: `confirm` must repeat the agreement's number. The certificate is signed by the platform's key;
    the bureau's verification (POST .../verify) re-reads every listed object independently."""
    ag = operator.get_agreement(session, agreement_id)
    cert = destruction.destroy_operation(session, get_object_store(settings), ag, actor=actor_of(principal),
                                         settings=settings, returned=body.returned, confirm=body.confirm)
    return destruction.certificate_view(cert)


@router.get("/destruction-certificates/{cert_id}")
def certificate(cert_id: ObjectId, session: SessionDep,
                principal: Annotated[Principal, require("authorization.manage")]):
    return destruction.certificate_view(destruction.get_certificate(session, cert_id))


@router.post("/destruction-certificates/{cert_id}/verify")
def verify(cert_id: ObjectId, session: SessionDep, settings: SettingsDep,
           principal: Annotated[Principal, require("authorization.manage")]):
    """The bureau's acceptance: the signature holds and every listed object is gone; records verified_at."""
    cert = destruction.get_certificate(session, cert_id)
    return destruction.verify_certificate(session, get_object_store(settings), cert, actor=actor_of(principal),
                                          settings=settings)


# --- the expert committee ------------------------------------------------------------------------------
@router.get("/expert/applications")
def committee_applications(session: SessionDep, principal: Annotated[Principal, require("review.expert")]):
    """Applications under expert review on notices whose committee names the caller's organisation."""
    out = []
    for c in session.exec(select(Case).where(Case.kind == operator.APPLICATION, Case.state == "expert_review")
                          .order_by(Case.id)):  # type: ignore[arg-type]
        if principal.org_id in c.awaiting_orgs:
            out.append(operator.case_view(session, c))
    return out


@router.post("/applications/{case_id}/scores", status_code=201)
def score(case_id: ObjectId, body: ScoreIn, session: SessionDep,
          principal: Annotated[Principal, require("review.expert")]):
    """One committee expert's score (0-100) with comments."""
    case = operator.committee_case(session, case_id, principal)
    operator.score(session, case, actor=actor_of(principal), value=body.score, comments=body.comments)
    return operator.case_view(session, case)


# --- public: notices, publicity, objections ----------------------------------------------------------
@public_router.get("/notices")
def public_notices(session: SessionDep):
    """Selection notices (open and concluded) and the applications now under publicity."""
    under = session.exec(select(Case).where(Case.kind == operator.APPLICATION, Case.state == "publicity")
                         .order_by(Case.id))  # type: ignore[arg-type]
    return {"notices": [operator.notice_view(session, c, public=True)
                        for c in operator.list_notices(session, public=True)],
            "publicity": [operator.public_view(c) for c in under]}


@public_router.post("/applications/{case_id}/objections", status_code=201)
def file_objection(case_id: ObjectId, body: ObjectionIn, request: Request, session: SessionDep,
                   settings: SettingsDep):
    """Anyone may object to a selected applicant during its publicity period (text and a contact). Limits:
    2,000 characters, 20 open objections per application (409 too_many_objections), 3 per source address
    per application in 24 hours (429 rate_limited)."""
    from authops.audit import log as audit_log

    case = operator.public_case(session, case_id)
    return operator.file_objection(session, case, text=body.text, contact=body.contact, settings=settings,
                                   actor=audit_log.Actor(kind="anonymous", name="public", ip=client_ip(request)))
