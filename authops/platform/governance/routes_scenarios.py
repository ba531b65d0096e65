"""Routes for partner recruitment, scenario applications (three-level review) and tool deployment.

Visibility: a case another organisation may not see is 404. The applicant sees its own; a partner
application is seen by the call's operator and the experts asked to advise; a scenario by the
departments whose resources it requests and its expert committee; holders of review.final (the
bureau) see every submitted case.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel, Field

from authops.core.errors import InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.storage.store import get_object_store
from authops.platform.deps import AuthorizerDep, ObjectId, SessionDep, SettingsDep, actor_of, client_ip, require
from authops.platform.governance import partners, scenarios, tools, workflow
from authops.platform.governance.models import Case
from authops.platform.governance.routes_common import DbId

router = APIRouter()
public_router = APIRouter(prefix="/public", tags=["public"])

MAX_DOCUMENT = 20 * 1024 * 1024


class CallIn(BaseModel):
    industry: str = Field(max_length=100)
    title: str = Field(max_length=300)
    term_months: int = Field(ge=1, le=120, description="the partnership term offered, in months")
    conditions: list[str] = Field(min_length=1, max_length=50)
    materials: list[str] = Field(min_length=1, max_length=50, description="what every application must attach")
    deadline: date = Field(description="the last day (Asia/Shanghai) applications are accepted")
    description: str = Field(default="", max_length=5000)


class ApplicationIn(BaseModel):
    call_id: DbId
    title: str = Field(max_length=300)
    payload: dict[str, Any] = Field(description="the application form: profile (required), capabilities, ...")


class SubmitIn(BaseModel):
    payload: dict[str, Any] | None = Field(default=None, description="a revised form replaces the filed one")


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject", "return"]
    reasons: str = Field(default="", max_length=10_000)


class ExpertVoteIn(DecisionIn):
    score: int | None = Field(default=None, ge=0, le=100)


class ScopeItem(BaseModel):
    resource: str = Field(max_length=64)
    fields: list[str] | None = None
    share_modes: list[str] | None = None
    epsilon: float | None = None


class BureauDecisionIn(DecisionIn):
    approved_scope: list[ScopeItem] | None = Field(
        default=None, description="approve less than requested: a subset of resources, fields, modes and epsilon")


class ExpertsIn(BaseModel):
    expert_org_ids: list[DbId] = Field(min_length=1, max_length=50)


class OpinionIn(BaseModel):
    comments: str = Field(max_length=10_000)
    score: int | None = Field(default=None, ge=0, le=100)


class OfficerIn(BaseModel):
    name: str = Field(max_length=100)
    contact: str = Field(default="", max_length=200)


class ScopeIn(BaseModel):
    resource: str = Field(max_length=64)
    fields: list[str] = Field(default_factory=lambda: ["*"])
    share_modes: list[str] = Field(default_factory=list)


class TermsIn(BaseModel):
    data_scope: list[ScopeIn] = Field(min_length=1, max_length=100)
    use_boundary: str = Field(max_length=5000)
    development_duties: str = Field(max_length=5000)
    quality: str = Field(max_length=5000)
    revenue_share_bp: int = Field(ge=0, le=10_000, description="the partner's share in basis points (2500 = 25%)")
    exit_terms: str = Field(max_length=5000)
    security_duties: str = Field(max_length=5000)
    security_officer: OfficerIn


class AgreementIn(BaseModel):
    terms: TermsIn
    starts_on: date | None = None
    months: int | None = Field(default=None, ge=1, le=120)


class SignIn(BaseModel):
    text_sha256: str = Field(min_length=64, max_length=64, description="SHA-256 of the agreement text you accept")


class ScenarioIn(BaseModel):
    title: str = Field(max_length=300)
    payload: dict[str, Any] = Field(description="goal, resources [{resource, fields, share_modes, epsilon}], "
                                                "product_design, processing_method, security_measures, "
                                                "technical_route, expected_benefit")


class ToolIn(BaseModel):
    name: str = Field(max_length=100)
    version: str = Field(default="", max_length=50)
    description: str = Field(max_length=10_000)
    resources: list[str] = Field(min_length=1, max_length=100)
    pledge: str = Field(max_length=20_000, description="the security pledge's exact text")
    pledge_sha256: str = Field(min_length=64, max_length=64, description="SHA-256 of the pledge text you accept")


def _cross(authorizer, principal: Principal) -> bool:
    return authorizer.allowed(principal, "review.final")


def _case(session, case_id: int, kind: str, principal: Principal, authorizer) -> Case:
    case = session.get(Case, case_id)
    module = {partners.KIND: partners, scenarios.KIND: scenarios, tools.KIND: tools}[kind]
    if case is None or not module.visible(case, principal.org_id, cross_org=_cross(authorizer, principal)):
        raise NotFound(f"no {kind.replace('_', ' ')} {case_id}")
    return case


def _partner_view(session, case: Case) -> dict[str, Any]:
    out = workflow.view(session, case)
    if case.facts.get("agreement_id"):
        out["agreement"] = partners.agreement_view(partners.partner_agreement_for_case(session, case), session)
    return out


# --- partner recruitment ---------------------------------------------------------------------------

@public_router.get("/partner-calls")
def open_partner_calls(session: SessionDep) -> list[dict[str, Any]]:
    """The operator's open calls for partners (public): industry, term, conditions, materials, deadline."""
    return [partners.call_view(c) for c in partners.open_calls(session)]


@router.post("/partners/calls", status_code=201)
def publish_call(body: CallIn, session: SessionDep, principal: Annotated[Principal, require("partner.recruit")]):
    """Publish a call for partners in one industry (only under an active operator authorization)."""
    call = partners.publish_call(session, actor=actor_of(principal), industry=body.industry, title=body.title,
                                 term_months=body.term_months, conditions=body.conditions,
                                 materials=body.materials, deadline_on=body.deadline, description=body.description)
    return partners.call_view(call)


@router.get("/partners/applications")
def list_partner_applications(session: SessionDep, authorizer: AuthorizerDep,
                              principal: Annotated[Principal, require("todo.read")],
                              state: str | None = None, number: str | None = None):
    """Partner applications the caller may see (its own, its calls', those it advises; the bureau: all)."""
    rows = partners.list_cases(session, principal.org_id, cross_org=_cross(authorizer, principal), state=state)
    return [_partner_view(session, c) for c in rows if number is None or c.number == number]


@router.post("/partners/applications", status_code=201)
def apply_as_partner(body: ApplicationIn, session: SessionDep,
                     principal: Annotated[Principal, require("partner.apply")]):
    """Start an application to a call; attach the listed materials, then submit."""
    case = partners.apply(session, actor=actor_of(principal), call_id=body.call_id, title=body.title,
                          payload=body.payload)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/documents", status_code=201)
def attach_material(case_id: ObjectId, session: SessionDep, settings: SettingsDep, authorizer: AuthorizerDep,
                    principal: Annotated[Principal, require("partner.apply")],
                    material: Annotated[str, Form(max_length=100, description="the checklist item it answers")],
                    file: Annotated[UploadFile, File(description="the document (stored encrypted)")]):
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    data = file.file.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise InvalidInput(f"the file is larger than {MAX_DOCUMENT // (1024 * 1024)} MB", details={"field": "file"})
    doc = partners.add_material(session, get_object_store(settings), case, actor=actor_of(principal),
                                material=material, filename=file.filename or material, content=data,
                                content_type=file.content_type or "application/octet-stream")
    return {"id": doc.id, "material": doc.material, "filename": doc.filename, "size": doc.size, "sha256": doc.sha256}


@router.post("/partners/applications/{case_id}/submit")
def submit_partner_application(case_id: ObjectId, body: SubmitIn, session: SessionDep, authorizer: AuthorizerDep,
                               principal: Annotated[Principal, require("partner.apply")]):
    """Submit (or resubmit after return) once every listed material is attached."""
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    partners.submit(session, case, actor=actor_of(principal), payload=body.payload)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/experts")
def ask_experts(case_id: ObjectId, body: ExpertsIn, session: SessionDep, authorizer: AuthorizerDep,
                principal: Annotated[Principal, require("partner.recruit")]):
    """The operator asks expert organisations to advise on an application under review."""
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    partners.appoint_experts(session, case, actor=actor_of(principal), expert_org_ids=body.expert_org_ids)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/expert-opinion")
def give_expert_opinion(case_id: ObjectId, body: OpinionIn, session: SessionDep, authorizer: AuthorizerDep,
                        principal: Annotated[Principal, require("review.expert")]):
    """An appointed expert's advice (never blocking)."""
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    partners.expert_opinion(session, case, actor=actor_of(principal), comments=body.comments, score=body.score)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/operator-review")
def operator_review(case_id: ObjectId, body: DecisionIn, session: SessionDep, authorizer: AuthorizerDep,
                    principal: Annotated[Principal, require("partner.recruit")]):
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    partners.operator_review(session, case, actor=actor_of(principal), decision=body.decision, reasons=body.reasons)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/bureau-review")
def bureau_review_partner(case_id: ObjectId, body: DecisionIn, session: SessionDep, authorizer: AuthorizerDep,
                          principal: Annotated[Principal, require("review.final")]):
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    partners.bureau_review(session, case, actor=actor_of(principal), decision=body.decision, reasons=body.reasons)
    return _partner_view(session, case)


@router.post("/partners/applications/{case_id}/agreement", status_code=201)
def offer_partner_agreement(case_id: ObjectId, body: AgreementIn, request: Request, session: SessionDep,
                            authorizer: AuthorizerDep, principal: Annotated[Principal, require("partner.recruit")]):
    """The operator drafts the partner agreement of an approved application and accepts its text."""
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    agreement = partners.offer_agreement(session, case, actor=actor_of(principal), terms=body.terms.model_dump(),
                                         starts_on=body.starts_on, months=body.months, ip=client_ip(request))
    return partners.agreement_view(agreement, session)


@router.post("/partners/applications/{case_id}/sign")
def sign_partner_agreement(case_id: ObjectId, body: SignIn, request: Request, session: SessionDep,
                           authorizer: AuthorizerDep, principal: Annotated[Principal, require("partner.apply")]):
    """The partner accepts the agreement's exact text (by its SHA-256); the agreement becomes active."""
    case = _case(session, case_id, partners.KIND, principal, authorizer)
    agreement = partners.sign(session, case, actor=actor_of(principal), text_sha256=body.text_sha256,
                              ip=client_ip(request))
    return partners.agreement_view(agreement, session)


# --- scenario applications -------------------------------------------------------------------------

@router.get("/scenarios")
def list_scenarios(session: SessionDep, authorizer: AuthorizerDep,
                   principal: Annotated[Principal, require("todo.read")], state: str | None = None,
                   number: str | None = None,
                   overdue: Annotated[bool, Query(description="only reviews past their deadline")] = False):
    """Scenario applications the caller may see, with history, reviews, deadlines and overdue flags."""
    rows = scenarios.list_cases(session, principal.org_id, cross_org=_cross(authorizer, principal), state=state,
                                overdue_only=overdue)
    return [scenarios.view(session, c) for c in rows if number is None or c.number == number]


@router.post("/scenarios", status_code=201)
def draft_scenario(body: ScenarioIn, session: SessionDep, principal: Annotated[Principal, require("scenario.submit")]):
    """Draft a scenario application (needs an active partner agreement); submit it when complete."""
    case = scenarios.draft(session, actor=actor_of(principal), title=body.title, payload=body.payload)
    return scenarios.view(session, case)


@router.post("/scenarios/{case_id}/submit")
def submit_scenario(case_id: ObjectId, body: SubmitIn, session: SessionDep, authorizer: AuthorizerDep,
                    principal: Annotated[Principal, require("scenario.submit")]):
    """Submit a draft, or a revision of a returned application (it returns to the stage that returned it)."""
    case = _case(session, case_id, scenarios.KIND, principal, authorizer)
    scenarios.submit(session, case, actor=actor_of(principal), payload=body.payload)
    return scenarios.view(session, case)


@router.post("/scenarios/{case_id}/provider-review")
def provider_review(case_id: ObjectId, body: DecisionIn, session: SessionDep, authorizer: AuthorizerDep,
                    principal: Annotated[Principal, require("review.provider")]):
    """First level: a department whose resources are requested decides."""
    case = _case(session, case_id, scenarios.KIND, principal, authorizer)
    scenarios.provider_review(session, case, actor=actor_of(principal), decision=body.decision,
                              reasons=body.reasons)
    return scenarios.view(session, case)


@router.post("/scenarios/{case_id}/experts")
def appoint_committee(case_id: ObjectId, body: ExpertsIn, session: SessionDep, authorizer: AuthorizerDep,
                      principal: Annotated[Principal, require("review.final")]):
    """The bureau names the expert committee (default: every expert organisation)."""
    case = _case(session, case_id, scenarios.KIND, principal, authorizer)
    scenarios.appoint_experts(session, case, actor=actor_of(principal), expert_org_ids=body.expert_org_ids)
    return scenarios.view(session, case)


@router.post("/scenarios/{case_id}/expert-review")
def expert_review(case_id: ObjectId, body: ExpertVoteIn, session: SessionDep, authorizer: AuthorizerDep,
                  principal: Annotated[Principal, require("review.expert")]):
    """Second level: one committee expert's vote; the quorum's vote decides by the configured majority."""
    case = _case(session, case_id, scenarios.KIND, principal, authorizer)
    scenarios.expert_review(session, case, actor=actor_of(principal), decision=body.decision,
                            reasons=body.reasons, score=body.score)
    return scenarios.view(session, case)


@router.post("/scenarios/{case_id}/bureau-review")
def bureau_review_scenario(case_id: ObjectId, body: BureauDecisionIn, session: SessionDep,
                           authorizer: AuthorizerDep, principal: Annotated[Principal, require("review.final")]):
    """Third level: the bureau decides; approval opens the partner's workspace and sets its budgets."""
    case = _case(session, case_id, scenarios.KIND, principal, authorizer)
    scope = None if body.approved_scope is None else [s.model_dump(exclude_none=True) for s in body.approved_scope]
    scenarios.bureau_review(session, case, actor=actor_of(principal), decision=body.decision,
                            reasons=body.reasons, approved_scope=scope)
    return scenarios.view(session, case)


# --- tool deployment -------------------------------------------------------------------------------

@router.get("/tools")
def list_tool_requests(session: SessionDep, authorizer: AuthorizerDep,
                       principal: Annotated[Principal, require("todo.read")], state: str | None = None):
    return [workflow.view(session, c) for c in tools.list_cases(session, principal.org_id,
                                                                 cross_org=_cross(authorizer, principal),
                                                                 state=state)]


@router.post("/tools", status_code=201)
def apply_tool(body: ToolIn, session: SessionDep, principal: Annotated[Principal, require("tool.apply")]):
    """Apply to deploy an own tool with a security pledge (accepted by the hash of its text)."""
    case = tools.apply(session, actor=actor_of(principal), body=body.model_dump())
    return workflow.view(session, case)


@router.post("/tools/{case_id}/resubmit")
def resubmit_tool(case_id: ObjectId, body: ToolIn, session: SessionDep, authorizer: AuthorizerDep,
                  principal: Annotated[Principal, require("tool.apply")]):
    case = _case(session, case_id, tools.KIND, principal, authorizer)
    tools.resubmit(session, case, actor=actor_of(principal), body=body.model_dump())
    return workflow.view(session, case)


@router.post("/tools/{case_id}/review")
def review_tool(case_id: ObjectId, body: DecisionIn, session: SessionDep, authorizer: AuthorizerDep,
                principal: Annotated[Principal, require("review.final")]):
    """The bureau approves, rejects or returns the request, with reasons."""
    case = _case(session, case_id, tools.KIND, principal, authorizer)
    tools.review(session, case, actor=actor_of(principal), decision=body.decision, reasons=body.reasons)
    return workflow.view(session, case)
