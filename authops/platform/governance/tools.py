"""Tool deployment requests (BRIEF.md section 11): an operator or partner that wants its own tool on
the platform files an application with a security pledge; the bureau approves or rejects it with
reasons before any resource is opened for the tool.

The pledge's exact text is accepted by its SHA-256 hash, like an agreement. Other code asks
`require_tool_approved(session, org_id, tool_name)` before it opens anything for a tool.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.errors import Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.governance import partners, workflow
from authops.platform.governance.models import Case
from authops.platform.governance.partners import actor_of, invalid, sha256, text
from authops.platform.governance.workflow import Machine, Step

KIND = "tool_deployment"

MACHINE = workflow.register(Machine(
    kind=KIND, prefix="TL", initial="bureau_review", zh="自有工具部署申请", en="tool deployment request",
    states=("bureau_review", "returned", "approved", "rejected", "withdrawn"),
    steps=(
        Step("resubmit", ("returned",), "bureau_review", by="applicant", zh="修改后重新提交"),
        Step("bureau_approve", ("bureau_review",), "approved", zh="数据局同意部署"),
        Step("bureau_reject", ("bureau_review",), "rejected", needs_reason=True, zh="数据局不同意部署"),
        Step("bureau_return", ("bureau_review",), "returned", needs_reason=True, zh="数据局退回修改"),
        Step("withdraw", ("bureau_review", "returned"), "withdrawn", by="applicant", zh="撤回"),
        Step("flag_overdue", ("bureau_review",), "bureau_review", by="system", zh="标记逾期"),
    ),
    final=frozenset({"approved", "rejected", "withdrawn"}),
))


def _validate(session: Session, body: dict[str, Any]) -> dict[str, Any]:
    """name, description, resources it would touch (known codes), the pledge text and its hash."""
    from authops.platform.catalog import service as catalog

    problems: list[tuple[str, str]] = []
    name = text(body.get("name"))
    if not name:
        problems.append(("name", "name the tool"))
    elif len(name) > 100:
        problems.append(("name", "at most 100 characters"))
    if not text(body.get("description")):
        problems.append(("description", "describe what the tool does and how it runs"))
    resources = body.get("resources")
    if not isinstance(resources, list) or not resources:
        problems.append(("resources", "list the data resources the tool would touch"))
        resources = []
    for i, code in enumerate(resources):
        try:
            catalog.get_resource(session, str(code))
        except NotFound:
            problems.append((f"resources[{i}]", f"no data resource with code {code!r}"))
    pledge = text(body.get("pledge"))
    if not pledge:
        problems.append(("pledge", "the security pledge is required: write out what the tool will and will "
                                   "not do with the data"))
    elif body.get("pledge_sha256") != sha256(pledge):
        problems.append(("pledge_sha256", "accept the pledge by sending the SHA-256 of its exact text"))
    invalid(problems)
    return {"name": name, "description": text(body.get("description")), "resources": sorted(set(map(str, resources))),
            "pledge": pledge, "pledge_sha256": sha256(pledge), "version": text(body.get("version"))}


def apply(session: Session, *, actor: audit_log.Actor | Principal, body: dict[str, Any]) -> Case:
    """Apply to deploy an own tool; the request waits for the bureau."""
    who = actor_of(actor)
    org = partners.require_kind(session, who.org_id, OrgKind.OPERATOR, OrgKind.PARTNER,
                                doing="a tool deployment request")
    if org.kind == OrgKind.OPERATOR.value:  # an operator acts only under an authorization in force
        partners.require_authorized(session, int(org.id))  # type: ignore[arg-type]
    payload = _validate(session, body)
    pledge = {"sha256": payload["pledge_sha256"], "by": who.name, "actor_id": who.id, "org_id": who.org_id,
              "at": utcnow().isoformat(), "ip": who.ip}
    case = workflow.open_case(session, kind=KIND, applicant_org_id=int(who.org_id),
                              title=f"tool {payload['name']}", payload=payload, actor=who,
                              awaiting_orgs=partners.bureau_org_ids(session), due_at=partners.stage_deadline("bureau"),
                              facts={"pledge_accepted": pledge})
    _audit_pledge(session, who, case)
    return case


def _audit_pledge(session: Session, who: audit_log.Actor, case: Case) -> None:
    audit_log.record(session, who, "gov.tool_deployment.pledge", object_type=KIND, object_id=case.id,
                     details={"number": case.number, "tool": case.payload["name"],
                              "pledge_sha256": case.payload["pledge_sha256"], "round": case.round})


def resubmit(session: Session, case: Case, *, actor: audit_log.Actor | Principal, body: dict[str, Any]) -> Case:
    who = actor_of(actor)
    MACHINE.step(case.state, "resubmit", number=case.number)
    workflow.ensure_applicant(case, who)
    case.payload = _validate(session, body)
    case.round += 1
    workflow.transition(session, case, "resubmit", actor=who, awaiting_orgs=partners.bureau_org_ids(session),
                        due_at=partners.stage_deadline("bureau"),
                        facts={"pledge_accepted": {"sha256": case.payload["pledge_sha256"], "by": who.name,
                                                   "actor_id": who.id, "org_id": who.org_id,
                                                   "at": utcnow().isoformat(), "ip": who.ip}})
    _audit_pledge(session, who, case)
    return case


def review(session: Session, case: Case, *, actor: audit_log.Actor | Principal, decision: str,
           reasons: str = "") -> Case:
    """The bureau approves, rejects or returns with reasons; nothing is opened for the tool before."""
    who = actor_of(actor)
    if decision not in ("approve", "reject", "return"):
        raise InvalidInput("decision must be approve, reject or return", details={"field": "decision"})
    if not text(reasons):
        raise InvalidInput(f"{decision} needs written reasons", details={"field": "reasons"})
    MACHINE.step(case.state, f"bureau_{decision}", number=case.number)
    workflow.ensure_not_applicant(case, who)
    partners.require_kind(session, who.org_id, OrgKind.BUREAU, doing="deciding a tool deployment")
    partners.one_per_org(session, case, "bureau", who.org_id)
    workflow.record_review(session, case, stage="bureau", actor=who, decision=decision, reasons=reasons)
    facts = {"returned_from": "bureau_review"} if decision == "return" else None
    if decision == "approve":
        facts = {"approved_resources": case.payload["resources"], "approved_at": utcnow().isoformat()}
    workflow.transition(session, case, f"bureau_{decision}", actor=who, reason=reasons, facts=facts,
                        awaiting_orgs=[case.applicant_org_id] if decision == "return" else [], due_at=None)
    return case


def withdraw(session: Session, case: Case, *, actor: audit_log.Actor | Principal, reason: str = "") -> Case:
    workflow.transition(session, case, "withdraw", actor=actor, reason=reason)
    return case


def approved_tool(session: Session, org_id: int, tool_name: str) -> Case | None:
    rows = session.exec(select(Case).where(Case.kind == KIND, Case.applicant_org_id == org_id,
                                           Case.state == "approved").order_by(Case.id.desc()))
    return next((c for c in rows if c.payload.get("name") == tool_name), None)


def require_tool_approved(session: Session, org_id: int, tool_name: str, resource: str | None = None) -> Case:
    """Refuse (403 tool_not_approved) unless the bureau approved this organisation's tool (and, when
    `resource` is given, approved it for that resource)."""
    case = approved_tool(session, org_id, tool_name)
    if case is not None and resource is not None:
        # Approvals add up: any approved request for this tool that names the resource will do.
        rows = session.exec(select(Case).where(Case.kind == KIND, Case.applicant_org_id == org_id,
                                               Case.state == "approved").order_by(Case.id.desc()))
        case = next((c for c in rows if c.payload.get("name") == tool_name
                     and resource in c.facts.get("approved_resources", [])), case)
    if case is None:
        raise Forbidden(f"tool {tool_name!r} is not approved for deployment; file a tool deployment request with a "
                        "security pledge and wait for the bureau's approval", code="tool_not_approved",
                        details={"tool": tool_name})
    if resource is not None and resource not in case.facts.get("approved_resources", []):
        raise Forbidden(f"tool {tool_name!r} was approved for {', '.join(case.facts.get('approved_resources', []))}, "
                        f"not {resource}", code="tool_not_approved", details={"tool": tool_name, "resource": resource})
    return case


def visible(case: Case, org_id: int | None, *, cross_org: bool = False) -> bool:
    return case.kind == KIND and (cross_org or org_id == case.applicant_org_id)


def list_cases(session: Session, org_id: int | None, *, cross_org: bool = False,
               state: str | None = None) -> list[Case]:
    q = select(Case).where(Case.kind == KIND).order_by(Case.id)
    if state:
        q = q.where(Case.state == state)
    return [c for c in session.exec(q) if visible(c, org_id, cross_org=cross_org)]
