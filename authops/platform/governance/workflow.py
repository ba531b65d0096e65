"""The workflow engine every governance lifecycle runs on.

A `Machine` names a case kind's states and the steps between them. `transition()` is the only
way a case changes state: it refuses an action the current state does not allow (naming the
state and what is allowed), refuses a reviewer acting on its own organisation's application,
appends the step to the case's history and to the audit trail (actor, time, before and after
states, reason) in the caller's transaction, and updates who must act next and by when.

Domain modules (operator, partners, scenarios, products, tools) define their machines and the
rules a step needs beyond its state (which department, which quorum); this module knows none.
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.platform.governance.models import Case, CaseDocument, CaseTransition, Review

# Modules that register machines; imported on first lookup so every kind is known.
MACHINE_MODULES = [
    "authops.platform.governance.operator",
    "authops.platform.governance.partners",
    "authops.platform.governance.scenarios",
    "authops.platform.governance.products",
    "authops.platform.governance.tools",
]


class IllegalTransition(Conflict):
    code = "illegal_transition"


class OwnApplication(Forbidden):
    """A reviewer may not decide on its own organisation's application."""

    code = "own_application"


class WrongReviewer(Forbidden):
    """The actor is not among those who must act on this case at this stage."""

    code = "wrong_reviewer"


class Expired(Conflict):
    code = "expired"


@dataclass(frozen=True)
class Step:
    action: str
    sources: tuple[str, ...]
    target: str
    # applicant: only the applicant's organisation; reviewer: anyone but the applicant;
    # system: the platform itself (deadlines, automatic vetoes).
    by: str = "reviewer"
    needs_reason: bool = False
    zh: str = ""


@dataclass(frozen=True)
class Machine:
    kind: str
    prefix: str  # case numbers: {prefix}-{year}-{id:05d}
    initial: str
    states: tuple[str, ...]
    steps: tuple[Step, ...]
    final: frozenset[str] = field(default_factory=frozenset)
    zh: str = ""
    en: str = ""

    def __post_init__(self) -> None:
        for s in self.steps:
            unknown = [x for x in (*s.sources, s.target) if x not in self.states]
            if unknown:
                raise ValueError(f"{self.kind}.{s.action}: unknown states {unknown}")

    def allowed(self, state: str) -> list[str]:
        return [s.action for s in self.steps if state in s.sources]

    def step(self, state: str, action: str, *, number: str = "") -> Step:
        for s in self.steps:
            if s.action == action and state in s.sources:
                return s
        what = f"{self.en or self.kind} {number}".strip()
        known = [s for s in self.steps if s.action == action]
        if not known:
            raise InvalidInput(f"{what}: there is no action {action!r}; actions are "
                               f"{sorted({s.action for s in self.steps})}", details={"field": "action"})
        allowed = self.allowed(state)
        sources = sorted({x for s in known for x in s.sources})
        raise IllegalTransition(
            f"{what} is {state}; {action!r} is allowed only when it is {' or '.join(sources)}"
            + (f". Allowed now: {', '.join(allowed)}" if allowed else ". Nothing more can happen to it"),
            details={"state": state, "action": action, "allowed": allowed})


MACHINES: dict[str, Machine] = {}
_loaded = False


def register(machine: Machine) -> Machine:
    MACHINES[machine.kind] = machine
    return machine


def machine(kind: str) -> Machine:
    global _loaded
    if kind not in MACHINES and not _loaded:
        for name in MACHINE_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:  # a lifecycle not built yet
                if e.name != name:
                    raise
        _loaded = True
    try:
        return MACHINES[kind]
    except KeyError:
        raise InvalidInput(f"unknown case kind {kind!r}") from None



def _number(m: Machine, at: datetime, case_id: int) -> str:
    """Unique by construction (the row id), so two filings at once never collide."""
    return f"{m.prefix}-{at.year}-{case_id:05d}"


def open_case(session: Session, *, kind: str, applicant_org_id: int, title: str, payload: dict[str, Any],
              actor: audit_log.Actor | Principal, call_id: int | None = None, parent_case_id: int | None = None,
              awaiting_orgs: Iterable[int] = (), due_at: datetime | None = None,
              facts: dict[str, Any] | None = None, reason: str = "") -> Case:
    """File a new application: it starts in the machine's initial state, with a first history row."""
    m = machine(kind)
    who = audit_log.as_actor(actor)
    if not title.strip():
        raise InvalidInput("give the application a title", details={"field": "title"})
    now = utcnow()
    case = Case(kind=kind, number=f"{m.prefix}-pending-{uuid.uuid4().hex[:16]}", state=m.initial, applicant_org_id=applicant_org_id,
                call_id=call_id, parent_case_id=parent_case_id, title=title.strip()[:300], payload=payload,
                facts=dict(facts or {}), awaiting_orgs=sorted(set(awaiting_orgs)), due_at=due_at,
                created_by=who.name[:64], created_at=now, updated_at=now)
    session.add(case)
    session.flush()
    case.number = _number(m, now, int(case.id))  # type: ignore[arg-type]
    session.add(case)
    _history(session, case, who, "submit", "", m.initial, reason, {"title": case.title})
    return case


def _history(session: Session, case: Case, who: audit_log.Actor, action: str, before: str, after: str,
             reason: str, data: dict[str, Any]) -> CaseTransition:
    seq = session.exec(select(func.count()).select_from(CaseTransition)
                       .where(CaseTransition.case_id == case.id)).one() + 1
    row = CaseTransition(case_id=case.id, seq=seq, action=action, from_state=before, to_state=after,
                         actor_kind=who.kind, actor_id=who.id, actor_name=who.name[:100], actor_org_id=who.org_id,
                         reason=reason, data=data, at=utcnow())
    session.add(row)
    extra = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))}
    audit_log.record(session, who, f"gov.{case.kind}.{action}", object_type=case.kind, object_id=case.id,
                     details={**extra, "number": case.number, "before": before or None, "after": after,
                              "round": case.round, "reason_sha256": _digest(reason) if reason else None})
    session.flush()
    _notify(session, case, row)
    return row


def _notify(session: Session, case: Case, row: CaseTransition) -> None:
    """Tell the organisations that must act now, and the applicant, in the same transaction."""
    try:
        from authops.platform.governance import notifications
    except ModuleNotFoundError as e:  # notifications not built yet
        if e.name != "authops.platform.governance.notifications":
            raise
        return
    notifications.on_transition(session, case, row)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_not_applicant(case: Case, actor: audit_log.Actor | Principal) -> None:
    who = audit_log.as_actor(actor)
    if who.org_id is not None and who.org_id == case.applicant_org_id:
        raise OwnApplication(f"{case.number} is your own organisation's application; "
                             "another organisation must review it", details={"case": case.number})


def ensure_applicant(case: Case, actor: audit_log.Actor | Principal) -> None:
    who = audit_log.as_actor(actor)
    if who.kind != "system" and who.org_id != case.applicant_org_id:
        raise NotFound(f"no {case.kind} case {case.id}")


def transition(session: Session, case: Case, action: str, *, actor: audit_log.Actor | Principal,
               reason: str = "", data: dict[str, Any] | None = None, target: str | None = None,
               awaiting_orgs: Iterable[int] | None = None, due_at: datetime | None | str = "keep",
               facts: dict[str, Any] | None = None) -> CaseTransition:
    """Move `case` by `action`, or raise with what is allowed. `target` overrides the step's target
    (a returned application goes back to the stage that returned it)."""
    m = machine(case.kind)
    who = audit_log.as_actor(actor)
    step = m.step(case.state, action, number=case.number)
    if step.by == "applicant":
        ensure_applicant(case, who)
    elif step.by == "reviewer":
        ensure_not_applicant(case, who)
    elif step.by == "system" and who.kind != "system":
        raise Forbidden(f"{action!r} is done by the platform itself, not by a person", code="system_only")
    if step.needs_reason and not reason.strip():
        raise InvalidInput(f"{action!r} needs written reasons", details={"field": "reason"})
    after = target or step.target
    if after not in m.states:
        raise ValueError(f"{case.kind}: unknown state {after}")
    before = case.state
    # Compare-and-set on the stored state *and* the version the caller read (updated_at, which
    # every transition moves strictly forward): of two steps on one case at once -- same-state
    # steps included, e.g. two departments approving, two objections -- the second finds the case
    # changed and is refused with case_changed, so nothing the first wrote is lost and a decision
    # taken on stale reviews never lands. PostgreSQL holds the row lock until commit, so the second
    # UPDATE waits and then matches no row; SQLite serialises writers.
    seen = case.updated_at
    stamp = max(utcnow(), seen + timedelta(microseconds=1)) if seen is not None else utcnow()
    moved = session.execute(update(Case).where(Case.id == case.id, Case.state == before, Case.updated_at == seen)
                            .values(state=after, updated_at=stamp).execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise Conflict(f"{case.number} was changed by someone else meanwhile (another step was recorded after "
                       "you loaded it); nothing of yours was recorded: reload it and try again",
                       code="case_changed", details={"case": case.number})
    case.state = after
    case.updated_at = stamp
    if awaiting_orgs is not None:
        case.awaiting_orgs = sorted(set(awaiting_orgs))
    if due_at != "keep":
        case.due_at = due_at  # type: ignore[assignment]
    if facts:
        case.facts = {**case.facts, **facts}
    if after in m.final:
        case.decided_at = case.updated_at
        case.awaiting_orgs = []
        case.due_at = None
    session.add(case)
    row = _history(session, case, who, action, before, after, reason, dict(data or {}))
    session.flush()
    return row


def record_review(session: Session, case: Case, *, stage: str, actor: audit_log.Actor | Principal,
                  decision: str, reasons: str = "", score: int | None = None) -> Review:
    """One reviewer's decision at this stage and round; a second decision by the same reviewer is refused."""
    who = audit_log.as_actor(actor)
    if decision not in ("approve", "reject", "return", "score"):
        raise InvalidInput("decision must be approve, reject or return", details={"field": "decision"})
    if decision in ("reject", "return") and not reasons.strip():
        raise InvalidInput(f"{decision} needs written reasons", details={"field": "reasons"})
    if decision == "score" and score is None:
        raise InvalidInput("give a score from 0 to 100", details={"field": "score"})
    if score is not None and not 0 <= score <= 100:
        raise InvalidInput("score must be between 0 and 100", details={"field": "score"})
    user_id = who.id if who.kind == "user" and who.id else 0
    dup = session.exec(select(Review).where(Review.case_id == case.id, Review.stage == stage,
                                            Review.round == case.round, Review.reviewer_org_id == who.org_id,
                                            Review.reviewer_user_id == user_id)).first()
    if dup is not None:
        raise Conflict(f"you already decided on {case.number} at the {stage} stage ({dup.decision})",
                       code="already_reviewed")
    r = Review(case_id=case.id, stage=stage, round=case.round, reviewer_org_id=int(who.org_id or 0),
               reviewer_user_id=user_id, reviewer_name=who.name[:100], decision=decision, score=score,
               reasons=reasons)
    session.add(r)
    session.flush()
    return r


def reviews(session: Session, case: Case, stage: str | None = None, round_: int | None = None) -> list[Review]:
    q = select(Review).where(Review.case_id == case.id)
    if stage:
        q = q.where(Review.stage == stage)
    if round_ is not None:
        q = q.where(Review.round == round_)
    return list(session.exec(q.order_by(Review.id)))


def history(session: Session, case: Case) -> list[CaseTransition]:
    return list(session.exec(select(CaseTransition).where(CaseTransition.case_id == case.id)
                             .order_by(CaseTransition.seq)))


def get_case(session: Session, case_id: int, *, kind: str | None = None) -> Case:
    case = session.get(Case, case_id)
    if case is None or (kind and case.kind != kind):
        raise NotFound(f"no {kind or 'case'} {case_id}")
    return case


def overdue(case: Case, now: datetime | None = None) -> bool:
    return case.due_at is not None and (now or utcnow()) > case.due_at


def add_document(session: Session, store: Any, case: Case, *, material: str, filename: str, content: bytes,
                 actor: audit_log.Actor | Principal, content_type: str = "application/octet-stream") -> CaseDocument:
    """Store a material encrypted (the object store seals every object) and list it on the case."""
    who = audit_log.as_actor(actor)
    if not content:
        raise InvalidInput(f"{filename or material}: the file is empty", details={"field": "file"})
    digest = hashlib.sha256(content).hexdigest()
    key = f"governance/{case.kind}/{case.id}/{digest[:16]}"
    store.put(key, content, content_type=content_type)
    doc = CaseDocument(case_id=case.id, material=material[:100], filename=filename[:255] or material[:255],
                       content_type=content_type[:100], size=len(content), sha256=digest, object_key=key,
                       uploaded_by=who.name[:64])
    session.add(doc)
    session.flush()
    audit_log.record(session, who, "gov.document.upload", object_type="case_document", object_id=doc.id,
                     bytes=len(content), details={"case": case.number, "material": doc.material, "sha256": digest})
    return doc


def documents(session: Session, case: Case) -> list[CaseDocument]:
    return list(session.exec(select(CaseDocument).where(CaseDocument.case_id == case.id).order_by(CaseDocument.id)))


def missing_materials(session: Session, case: Case, checklist: Iterable[str]) -> list[str]:
    have = {d.material for d in documents(session, case)}
    return [m for m in checklist if m not in have]


def view(session: Session, case: Case, *, with_history: bool = True) -> dict[str, Any]:
    """A case as the API shows it: state, what can happen next, who must act, history, reviews."""
    from authops.core.clock import show

    from authops.platform.governance import workdays

    m = machine(case.kind)
    note = workdays.estimate_note(case.due_at)
    out: dict[str, Any] = {
        "id": case.id, "kind": case.kind, "number": case.number, "title": case.title, "state": case.state,
        "round": case.round, "applicant_org_id": case.applicant_org_id, "call_id": case.call_id,
        "parent_case_id": case.parent_case_id, "payload": case.payload, "facts": case.facts,
        "awaiting_orgs": case.awaiting_orgs, "due_at": case.due_at, "due_at_local": show(case.due_at),
        "due_at_estimated": note is not None, "due_at_note": note,
        "overdue": overdue(case), "allowed_actions": m.allowed(case.state), "created_at": case.created_at,
        "decided_at": case.decided_at,
        "documents": [{"id": d.id, "material": d.material, "filename": d.filename, "size": d.size,
                       "sha256": d.sha256} for d in documents(session, case)],
        "reviews": [{"stage": r.stage, "round": r.round, "org_id": r.reviewer_org_id, "reviewer": r.reviewer_name,
                     "decision": r.decision, "score": r.score, "reasons": r.reasons, "at": r.at}
                    for r in reviews(session, case)],
    }
    if with_history:
        out["history"] = [{"seq": t.seq, "action": t.action, "from": t.from_state, "to": t.to_state,
                           "actor": t.actor_name, "actor_org_id": t.actor_org_id, "reason": t.reason,
                           "at": t.at, "at_local": show(t.at)} for t in history(session, case)]
    return out
