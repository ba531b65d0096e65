"""In-process supervision: evaluate rules as audit events commit, block, review, incidents.

`install()` subscribes the evaluator to the audit log (done when this package is imported,
which the app, the worker and the CLI all do through the model registry). After every
commit that appended events, the enabled rules look at the new events; a hit opens one case
per rule and subject (while that case is open, later events of the same subject are added
to it) and, per the rule, a throttle or a block. `check_access` reads the active blocks on
every authenticated request (and for job handlers), so a block takes effect on the next
request in every process (the read is folded into the credential lookup: `block_named`).
Services flush; the caller commits.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, cast, exists, false, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.audit.anomaly import rules as rules_mod
from authops.audit.anomaly.models import SEVERITIES, AccessBlock, AnomalyCase, AnomalyRule, Incident
from authops.audit.models import AuditEvent
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import Principal

log = logging.getLogger(__name__)

SUPERVISION = audit_log.Actor(kind="system", name="supervision")
OWN_PREFIX = "supervision."  # events this module writes; never evaluated
# An organisation-wide block suspends data access; its people may still see who they are
# and clean up (revoke keys, disable users, read their log and invoices).
ORG_BLOCK_ALLOWS = frozenset({"self.read", "org.read", "user.read", "user.manage", "apikey.manage",
                              "audit.read", "billing.read"})
CONTACT = "contact the data bureau's supervision desk (数据局监管处)"
_BLOCK = AccessBlock.__table__


# --- evaluation ----------------------------------------------------------------------------
def install() -> None:
    """Evaluate the rules after every commit that appends audit events (once per process)."""
    audit_log.subscribe(_enqueue)


# Evaluation runs on one background thread per process, not in the committing request: the
# rules cost several queries, and a product call should not wait for them. The thread gathers
# the commits of the next GATHER_SECONDS after the first one and evaluates them together, so
# under load the rules run a few dozen times a second, not once per call. A block still lands
# within GATHER_SECONDS plus one evaluation (well under the one second promised).
GATHER_SECONDS = 0.25
_queue: queue.Queue[tuple[Engine, list[int]]] = queue.Queue()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def _enqueue(engine: Engine, seqs: list[int]) -> None:
    _queue.put((engine, seqs))
    _start_thread_if_dead()


def _start_thread_if_dead() -> None:
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_evaluator, name="authops-anomaly", daemon=True)
            _thread.start()


def _evaluator() -> None:
    while True:
        batch = [_queue.get()]
        try:
            time.sleep(GATHER_SECONDS)
            while True:
                try:
                    batch.append(_queue.get_nowait())
                except queue.Empty:
                    break
            by_engine: dict[Engine, list[int]] = {}
            for engine, seqs in batch:
                by_engine.setdefault(engine, []).extend(seqs)
            for engine, seqs in by_engine.items():
                try:
                    _on_append(engine, sorted(seqs))
                except Exception:  # keep evaluating later events; the log still has these
                    log.exception("anomaly evaluation failed for events %s..%s", min(seqs), max(seqs))
        finally:  # whatever ends this batch, it is done: settle() must never wait for it forever
            for _ in batch:
                _queue.task_done()


def settle() -> None:
    """Wait until every event committed so far in this process has been evaluated."""
    if _queue.unfinished_tasks:
        _start_thread_if_dead()  # the evaluator died (it logged why): a new one takes the rest
    _queue.join()


def _reset_after_fork() -> None:
    global _queue, _thread
    _queue, _thread = queue.Queue(), None


os.register_at_fork(after_in_child=_reset_after_fork)


def _on_append(engine: Engine, seqs: list[int]) -> None:
    for attempt in (1, 2):
        with Session(engine, expire_on_commit=False) as session:
            try:
                evaluate(session, seqs)
                session.commit()
                return
            except IntegrityError:
                # Another process opened the same case (or seeded the same rule) first:
                # evaluate again, which now finds it.
                session.rollback()
                if attempt == 2:
                    raise


def _load(session: Session, seqs: list[int]) -> list[rules_mod.Ev]:
    rows = session.execute(select(
        AuditEvent.seq, AuditEvent.ts, AuditEvent.actor_kind, AuditEvent.actor_id, AuditEvent.org_id,
        AuditEvent.action, AuditEvent.outcome, AuditEvent.ip, AuditEvent.region, AuditEvent.subjects,
        AuditEvent.canonical).where(AuditEvent.seq.in_(seqs)).order_by(AuditEvent.seq)).all()
    return [rules_mod.Ev(*row) for row in rows
            if not row.action.startswith(OWN_PREFIX) and row.outcome != "blocked"]


def evaluate(session: Session, seqs: list[int]) -> list[AnomalyCase]:
    """Run the enabled rules over the events `seqs`; returns the cases opened (flushes)."""
    events = _load(session, seqs)
    if not events:
        return []
    opened: list[AnomalyCase] = []
    for rule in rules_mod.ensure_default_rules(session):
        kind = rules_mod.KINDS.get(rule.kind)
        if not rule.enabled or kind is None:
            continue
        per = rules_mod.param(rule, "per")
        groups: dict[rules_mod.Subject, list[rules_mod.Ev]] = {}
        for ev in events:
            subject = rules_mod.subject_of(ev, per) if kind.watches(rule, ev) else None
            if subject is not None:
                groups.setdefault(subject, []).append(ev)
        for subject, group in groups.items():
            latest = _latest_case(session, rule.id, subject)
            if latest is not None and latest.state == "open":
                _absorb(session, latest, group)
                continue
            floor = (latest.last_seq or 0) if latest is not None else 0
            hit = kind.detect(session, rule, subject, group, floor)
            if hit is None:
                continue
            org_id = int(subject[1]) if subject[0] == "org" else group[-1].org_id
            last = max([e.seq for e in group] + [hit.last_seq or 0])
            opened.append(open_case(session, rule=rule, subject_type=subject[0], subject_id=subject[1],
                                    org_id=org_id, evidence=hit.evidence, first_seq=hit.first_seq,
                                    last_seq=last))
    return opened


def _latest_case(session: Session, rule_id: int, subject: rules_mod.Subject) -> AnomalyCase | None:
    return session.execute(select(AnomalyCase).where(
        AnomalyCase.rule_id == rule_id, AnomalyCase.subject_type == subject[0],
        AnomalyCase.subject_id == subject[1]).order_by(AnomalyCase.id.desc()).limit(1)).scalars().first()


def _absorb(session: Session, case_: AnomalyCase, group: list[rules_mod.Ev]) -> None:
    """Later events of an open case's subject belong to that case, not to a new one."""
    fresh = [e.seq for e in group if e.seq > (case_.last_seq or 0)]
    if fresh:
        case_.last_seq = max(fresh)
        case_.evidence = {**case_.evidence, "later_events": int(case_.evidence.get("later_events", 0)) + len(fresh)}
        session.add(case_)
        session.flush()


def open_case(session: Session, *, rule: AnomalyRule, subject_type: str, subject_id: str,
              org_id: int | None, evidence: dict, first_seq: int | None = None,
              last_seq: int | None = None) -> AnomalyCase:
    """Open a case (or return the open one for this rule and subject) and apply the rule's
    consequence: alert = the case only, throttle or block = also an access block."""
    existing = _latest_case(session, rule.id, (subject_type, subject_id))
    if existing is not None and existing.state == "open":
        return existing
    case_ = AnomalyCase(rule_id=rule.id, subject_type=subject_type, subject_id=subject_id, org_id=org_id,
                        open_key=f"{rule.id}:{subject_type}:{subject_id}", evidence=dict(evidence),
                        first_seq=first_seq, last_seq=last_seq)
    session.add(case_)
    session.flush()
    audit_log.record(session, SUPERVISION, "supervision.case_opened", object_type="anomaly_case",
                     object_id=case_.id, details={"rule": rule.name, "action": rule.action,
                                                  "subject_type": subject_type, "subject_id": subject_id})
    if rule.action in ("block", "throttle"):
        limit = int(rules_mod.param(rule, "throttle_per_minute") or rules_mod.THROTTLE_DEFAULT)
        block = create_block(session, subject_type=subject_type, subject_id=subject_id, org_id=org_id,
                             mode=rule.action, limit_per_minute=limit if rule.action == "throttle" else None,
                             case_id=case_.id, reason=f"rule {rule.name}")
        case_.block_id = block.id
        session.add(case_)
        session.flush()
    log.warning("anomaly case %s opened: rule %s on %s %s", case_.id, rule.name, subject_type, subject_id)
    return case_


def create_block(session: Session, *, subject_type: str, subject_id: str, mode: str = "block",
                 org_id: int | None = None, limit_per_minute: int | None = None, case_id: int | None = None,
                 reason: str = "", actor: audit_log.Actor = SUPERVISION) -> AccessBlock:
    if mode not in ("block", "throttle"):
        raise InvalidInput("mode must be block or throttle", details={"field": "mode"})
    if mode == "throttle" and not limit_per_minute:
        raise InvalidInput("a throttle needs limit_per_minute", details={"field": "limit_per_minute"})
    block = AccessBlock(subject_type=subject_type, subject_id=str(subject_id), org_id=org_id, mode=mode,
                        limit_per_minute=limit_per_minute, case_id=case_id, reason=reason[:300])
    session.add(block)
    session.flush()
    audit_log.record(session, actor, "supervision.block_created", object_type="access_block",
                     object_id=block.id, details={"mode": mode, "subject_type": subject_type,
                                                  "subject_id": str(subject_id), "case": case_id,
                                                  "limit_per_minute": limit_per_minute})
    return block


# --- enforcement ---------------------------------------------------------------------------
def check_access(session: Session, principal: Principal, *, action: str | None = None) -> None:
    """Refuse a blocked or over-limit principal (Forbidden: access_blocked, or 429 throttled)."""
    check_subjects(session, api_key_id=principal.id if principal.kind == "key" else None,
                   user_id=principal.id if principal.kind == "user" else None,
                   org_id=principal.org_id, ip=principal.ip, action=action)


def block_named(*, api_key_id: Any = None, user_id: Any = None, org_id: Any = None, ip: Any = None):
    """SQL: does an active block or throttle name any of these subjects? Each is a value, a bound
    parameter (text) or a column expression (cast to text), so a request's credential lookup folds the block check into
    its own query, read in the same statement as the credential. Only when it says yes does
    `check_access` run to decide (an org block spares housekeeping actions; a throttle counts)."""
    wanted = [("api_key", api_key_id), ("user", user_id), ("org", org_id), ("ip", ip)]
    conds = [and_(_BLOCK.c.subject_type == t, _BLOCK.c.subject_id == _text(i)) for t, i in wanted if i is not None]
    return exists().where(or_(*conds), _BLOCK.c.active.is_(True)) if conds else false()


def _text(value: Any) -> Any:
    if isinstance(value, BindParameter):
        return value
    return cast(value, String) if isinstance(value, ColumnElement) else str(value)


def check_subjects(session: Session, *, api_key_id: int | None = None, user_id: int | None = None,
                   org_id: int | None = None, ip: str | None = None, action: str | None = None) -> None:
    """The same check for job handlers and other callers without a request."""
    wanted = [("api_key", api_key_id), ("user", user_id), ("org", org_id), ("ip", ip)]
    conds = [and_(AccessBlock.subject_type == t, AccessBlock.subject_id == str(i))
             for t, i in wanted if i is not None]
    if not conds:
        return
    with session.no_autoflush:  # never flush the request's pending writes from here
        blocks = session.execute(select(AccessBlock).where(or_(*conds), AccessBlock.active.is_(True))
                                 .order_by(AccessBlock.id)).scalars().all()
    blocks = [b for b in blocks if not (b.subject_type == "org" and action in ORG_BLOCK_ALLOWS)]
    for block in blocks:
        if block.mode == "block":
            what = {"api_key": "this API key", "user": "this account", "org": "your organisation's data access",
                    "ip": "access from this address"}[block.subject_type]
            under = f"anomaly case {block.case_id}" if block.case_id else f"block {block.id}"
            raise Forbidden(f"{what} is blocked pending the data bureau's review of {under} "
                            f"(since {show(block.created_at)}); {CONTACT} quoting {under}",
                            code="access_blocked", details={"case_id": block.case_id, "block_id": block.id})
    for block in blocks:
        count = _count_request(session.get_bind(), block.id)
        if count > (block.limit_per_minute or 0):
            wait = 60 - int(_wall_seconds()) % 60
            under = f"anomaly case {block.case_id}" if block.case_id else f"block {block.id}"
            raise Forbidden(f"rate limited to {block.limit_per_minute} requests per minute pending the data "
                            f"bureau's review of {under}; retry in {wait} s or {CONTACT}",
                            code="throttled", status_code=429,
                            details={"case_id": block.case_id, "block_id": block.id, "retry_after_seconds": wait})


def _wall_seconds() -> float:
    """The wall clock of the per-minute throttle windows (a seam of its own: tests fix it without touching the
    `time` module the evaluator thread sleeps on)."""
    return time.time()


def _count_request(engine: Engine, block_id: int) -> int:
    """Count this request in the block's current minute, in its own short transaction."""
    minute = int(_wall_seconds() // 60)
    with Session(engine) as s:
        s.execute(update(AccessBlock).where(AccessBlock.id == block_id).values(
            window_count=case((AccessBlock.window_minute == minute, AccessBlock.window_count + 1), else_=1),
            window_minute=minute).execution_options(synchronize_session=False))
        count = s.execute(select(AccessBlock.window_count).where(AccessBlock.id == block_id)).scalar_one()
        s.commit()
    return int(count)


# --- review --------------------------------------------------------------------------------
def _by(actor: audit_log.Actor) -> str:
    return f"{actor.kind}:{actor.id}" if actor.id is not None else actor.kind


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if len(text) < 3:
        raise InvalidInput("give a reason for the decision (at least 3 characters)", details={"field": "reason"})
    return text[:1000]


def get_case(session: Session, case_id: int) -> AnomalyCase:
    case_ = session.get(AnomalyCase, case_id)
    if case_ is None:
        raise NotFound(f"anomaly case {case_id} not found")
    return case_


def list_cases(session: Session, *, state: str | None = None, org_id: int | None = None,
               limit: int = 50, offset: int = 0) -> list[AnomalyCase]:
    stmt = select(AnomalyCase).order_by(AnomalyCase.id.desc())
    if state:
        stmt = stmt.where(AnomalyCase.state == state)
    if org_id is not None:
        stmt = stmt.where(AnomalyCase.org_id == org_id)
    return list(session.execute(stmt.limit(limit).offset(offset)).scalars().all())


def _open(case_: AnomalyCase) -> None:
    if case_.state != "open":
        raise Conflict(f"anomaly case {case_.id} was already {case_.state} on {show(case_.decided_at)} "
                       f"by {case_.decided_by}; only open cases can be decided")


def _decide(session: Session, case_: AnomalyCase, state: str, actor: audit_log.Actor, reason: str) -> None:
    case_.state, case_.open_key = state, None
    case_.decided_by, case_.decision_reason, case_.decided_at = _by(actor), reason, utcnow()
    session.add(case_)
    session.flush()


def confirm_case(session: Session, case_id: int, *, actor: audit_log.Actor, reason: str, severity: str,
                 title: str | None = None, org_id: int | None = None) -> tuple[AnomalyCase, Incident]:
    """The anomaly is real: any block stays, and an incident is recorded."""
    case_ = get_case(session, case_id)
    _open(case_)
    reason = _reason(reason)
    rule = session.get(AnomalyRule, case_.rule_id)
    _decide(session, case_, "confirmed", actor, reason)
    incident = record_incident(
        session, actor=actor, severity=severity, case_id=case_.id, occurred_at=case_.opened_at,
        org_id=case_.org_id if org_id is None else org_id, description=reason,
        title=title or f"{rule.name if rule else 'anomaly'}: {case_.subject_type} {case_.subject_id}")
    audit_log.record(session, actor, "supervision.case_confirmed", object_type="anomaly_case",
                     object_id=case_.id, details={"incident": incident.id, "severity": severity,
                                                  "block": case_.block_id})
    return case_, incident


def release_case(session: Session, case_id: int, *, actor: audit_log.Actor, reason: str) -> AnomalyCase:
    """A false alarm: the case closes and its block is lifted."""
    case_ = get_case(session, case_id)
    _open(case_)
    reason = _reason(reason)
    _decide(session, case_, "released", actor, reason)
    audit_log.record(session, actor, "supervision.case_released", object_type="anomaly_case",
                     object_id=case_.id, details={"block": case_.block_id})
    if case_.block_id is not None:
        block = session.get(AccessBlock, case_.block_id)
        if block is not None and block.active:
            _lift(session, block, actor)
    return case_


def _lift(session: Session, block: AccessBlock, actor: audit_log.Actor) -> None:
    block.active, block.lifted_at, block.lifted_by = False, utcnow(), _by(actor)
    session.add(block)
    session.flush()
    audit_log.record(session, actor, "supervision.block_lifted", object_type="access_block",
                     object_id=block.id, details={"case": block.case_id})


def get_block(session: Session, block_id: int) -> AccessBlock:
    block = session.get(AccessBlock, block_id)
    if block is None:
        raise NotFound(f"access block {block_id} not found")
    return block


def lift_block(session: Session, block_id: int, *, actor: audit_log.Actor, reason: str) -> AccessBlock:
    """Lift a block (e.g. after rectification of a confirmed case, or a manual block)."""
    block = get_block(session, block_id)
    _reason(reason)
    if not block.active:
        raise Conflict(f"access block {block_id} was already lifted on {show(block.lifted_at)}")
    if block.case_id is not None and get_case(session, block.case_id).state == "open":
        raise Conflict(f"access block {block_id} belongs to open anomaly case {block.case_id}: "
                       "release or confirm the case instead")
    _lift(session, block, actor)
    return block


def list_blocks(session: Session, *, active: bool | None = None, limit: int = 50,
                offset: int = 0) -> list[AccessBlock]:
    stmt = select(AccessBlock).order_by(AccessBlock.id.desc())
    if active is not None:
        stmt = stmt.where(AccessBlock.active.is_(active))
    return list(session.execute(stmt.limit(limit).offset(offset)).scalars().all())


# --- incidents -----------------------------------------------------------------------------
def record_incident(session: Session, *, actor: audit_log.Actor, severity: str, title: str,
                    description: str = "", org_id: int | None = None, case_id: int | None = None,
                    occurred_at: datetime | None = None) -> Incident:
    if severity not in SEVERITIES:
        raise InvalidInput(f"severity must be one of {', '.join(SEVERITIES)}", details={"field": "severity"})
    if not title.strip():
        raise InvalidInput("give the incident a title", details={"field": "title"})
    if case_id is not None:
        get_case(session, case_id)
    incident = Incident(severity=severity, title=title.strip()[:200], description=description[:4000],
                        org_id=org_id, case_id=case_id, occurred_at=occurred_at or utcnow(),
                        recorded_by=_by(actor))
    session.add(incident)
    session.flush()
    audit_log.record(session, actor, "supervision.incident_recorded", object_type="incident",
                     object_id=incident.id, details={"severity": severity, "org": org_id, "case": case_id})
    return incident


def list_incidents(session: Session, *, org_id: int | None = None, severity: str | None = None,
                   limit: int = 50, offset: int = 0) -> list[Incident]:
    stmt = select(Incident).order_by(Incident.id.desc())
    if org_id is not None:
        stmt = stmt.where(Incident.org_id == org_id)
    if severity:
        stmt = stmt.where(Incident.severity == severity)
    return list(session.execute(stmt.limit(limit).offset(offset)).scalars().all())


def major_incidents(session: Session, org_id: int, since: datetime) -> list[Incident]:
    """Major and critical incidents of an organisation since a time: the renewal veto's input."""
    return list(session.execute(select(Incident).where(
        Incident.org_id == org_id, Incident.severity.in_(("major", "critical")),
        Incident.occurred_at >= since).order_by(Incident.occurred_at)).scalars().all())


install()
