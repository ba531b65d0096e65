"""Supervision routes for the bureau (and read-only for supervising departments).

Rules: list (anomaly.review), tune (anomaly.configure). Cases: list and read (incident.read),
confirm or release with a reason (anomaly.review). Blocks: list (incident.read), lift
(anomaly.review). Incidents: list (incident.read), record (incident.record).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlmodel import Session

from authops.audit.anomaly import rules as anomaly_rules
from authops.audit.anomaly import service as anomaly
from authops.audit.anomaly.models import AnomalyCase, AnomalyRule
from authops.core.clock import as_utc
from authops.core.errors import NotFound
from authops.core.identity import Principal
from authops.platform.deps import ObjectId, SessionDep, actor_of, require
from authops.platform.identity.models import Organisation
from authops.platform.supervision import schemas

router = APIRouter(prefix="/supervision", tags=["supervision"])
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=100_000)]


def _cases_out(session: Session, cases: list[AnomalyCase]) -> list[schemas.CaseOut]:
    ids = {c.rule_id for c in cases}
    names = dict(session.execute(select(AnomalyRule.id, AnomalyRule.name).where(AnomalyRule.id.in_(ids))).all()) \
        if ids else {}
    return [schemas.CaseOut.model_validate(c).model_copy(update={"rule_name": names.get(c.rule_id, "")})
            for c in cases]


def _org_exists(session: Session, org_id: int | None) -> None:
    if org_id is not None and session.get(Organisation, org_id) is None:
        raise NotFound(f"organisation {org_id} not found", details={"field": "org_id"})


# --- rules --------------------------------------------------------------------------------
@router.get("/rules", response_model=list[schemas.RuleOut])
def list_rules(session: SessionDep, principal: Annotated[Principal, require("anomaly.review")]):
    """The anomaly rules, built-in ones included, with their thresholds and consequences."""
    return anomaly_rules.ensure_default_rules(session)


@router.patch("/rules/{rule_id}", response_model=schemas.RuleOut)
def update_rule(rule_id: ObjectId, body: schemas.RuleUpdate, session: SessionDep,
                principal: Annotated[Principal, require("anomaly.configure")]):
    """Tune a rule (threshold, window, alert/throttle/block, enabled, params); audited."""
    return anomaly_rules.update_rule(session, rule_id, actor=actor_of(principal),
                                     **body.model_dump(exclude_unset=True))


# --- cases --------------------------------------------------------------------------------
@router.get("/cases", response_model=list[schemas.CaseOut])
def list_cases(session: SessionDep, principal: Annotated[Principal, require("incident.read")],
               state: Literal["open", "confirmed", "released"] | None = None,
               org_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
               limit: Limit = 50, offset: Offset = 0):
    """Anomaly cases, newest first; `state=open` is the review queue."""
    return _cases_out(session, anomaly.list_cases(session, state=state, org_id=org_id, limit=limit,
                                                  offset=offset))


@router.get("/cases/{case_id}", response_model=schemas.CaseOut)
def get_case(case_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("incident.read")]):
    return _cases_out(session, [anomaly.get_case(session, case_id)])[0]


@router.post("/cases/{case_id}/confirm", response_model=schemas.ConfirmOut)
def confirm_case(case_id: ObjectId, body: schemas.ConfirmIn, session: SessionDep,
                 principal: Annotated[Principal, require("anomaly.review")]):
    """The anomaly is real: the block stays and an incident is recorded with its severity."""
    _org_exists(session, body.org_id)
    case, incident = anomaly.confirm_case(session, case_id, actor=actor_of(principal), reason=body.reason,
                                          severity=body.severity, title=body.title, org_id=body.org_id)
    return schemas.ConfirmOut(case=_cases_out(session, [case])[0],
                              incident=schemas.IncidentOut.model_validate(incident))


@router.post("/cases/{case_id}/release", response_model=schemas.CaseOut)
def release_case(case_id: ObjectId, body: schemas.DecisionIn, session: SessionDep,
                 principal: Annotated[Principal, require("anomaly.review")]):
    """A false alarm: the case closes and its block is lifted at once."""
    case = anomaly.release_case(session, case_id, actor=actor_of(principal), reason=body.reason)
    return _cases_out(session, [case])[0]


# --- blocks -------------------------------------------------------------------------------
@router.get("/blocks", response_model=list[schemas.BlockOut])
def list_blocks(session: SessionDep, principal: Annotated[Principal, require("incident.read")],
                active: bool | None = None, limit: Limit = 50, offset: Offset = 0):
    return anomaly.list_blocks(session, active=active, limit=limit, offset=offset)


@router.post("/blocks/{block_id}/lift", response_model=schemas.BlockOut)
def lift_block(block_id: ObjectId, body: schemas.DecisionIn, session: SessionDep,
               principal: Annotated[Principal, require("anomaly.review")]):
    """Lift a block whose case is decided (e.g. after rectification) or that had no case."""
    return anomaly.lift_block(session, block_id, actor=actor_of(principal), reason=body.reason)


# --- incidents ----------------------------------------------------------------------------
@router.get("/incidents", response_model=list[schemas.IncidentOut])
def list_incidents(session: SessionDep, principal: Annotated[Principal, require("incident.read")],
                   org_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
                   severity: Literal["minor", "major", "critical"] | None = None,
                   limit: Limit = 50, offset: Offset = 0):
    return anomaly.list_incidents(session, org_id=org_id, severity=severity, limit=limit, offset=offset)


@router.post("/incidents", response_model=schemas.IncidentOut, status_code=201)
def record_incident(body: schemas.IncidentIn, session: SessionDep,
                    principal: Annotated[Principal, require("incident.record")]):
    """Record a security incident (also one found outside the rules); major ones weigh on renewal."""
    _org_exists(session, body.org_id)
    occurred = as_utc(body.occurred_at).replace(tzinfo=None) if body.occurred_at else None
    return anomaly.record_incident(session, actor=actor_of(principal), severity=body.severity,
                                   title=body.title, description=body.description, org_id=body.org_id,
                                   case_id=body.case_id, occurred_at=occurred)
