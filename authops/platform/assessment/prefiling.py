"""Pre-filing (事前备案): the operator files a risk-assessment report per resource or scenario on the
bureau's schedule (BRIEF.md 10, "before").

A schedule has a first due date and a period in months (0: once); its due dates are
first_due_on + k * period. A filing answers the earliest due date not yet filed (the next report may
be filed ahead of its date, one at a time); it is on time when filed on or before that date
(Asia/Shanghai). A due date that has passed without a filing is overdue: `flag_overdue` (the
maintenance loop) notifies the operator once per due date, and `require_prefiled` refuses new
sandbox jobs on a resource covered by a schedule that says `blocks_jobs` (the resource's own, or a
scenario's whose application names the resource) while any of its filings is overdue. The report's
bytes are encrypted in the object store, like governance documents.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any, Iterable

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.assessment.models import Prefiling, PrefilingSchedule
from authops.platform.catalog.models import DataResource
from authops.platform.governance import notifications, operator, workdays
from authops.platform.governance.models import Case
from authops.platform.identity.models import Organisation

TARGET_KINDS = ("resource", "scenario")
MAX_PERIOD_MONTHS = 36


class NotPrefiled(Forbidden):
    code = "prefiling_overdue"


def _today(now: datetime | None = None) -> date:
    return workdays.shanghai_date(now or utcnow())


def _check_target(session: Session, kind: str, target: str) -> str:
    if kind not in TARGET_KINDS:
        raise InvalidInput(f"target_kind must be one of {', '.join(TARGET_KINDS)}", details={"field": "target_kind"})
    target = (target or "").strip()
    if kind == "resource":
        if session.exec(select(DataResource).where(DataResource.code == target)).first() is None:
            raise InvalidInput(f"no data resource {target!r} in the catalogue", details={"field": "target"})
    elif session.exec(select(Case).where(Case.number == target, Case.kind == "scenario")).first() is None:
        raise InvalidInput(f"no scenario application {target!r}", details={"field": "target"})
    return target


def set_schedule(session: Session, *, actor: audit_log.Actor | Principal, operator_org_id: int, target_kind: str,
                 target: str, first_due_on: date, period_months: int = 0, blocks_jobs: bool = False
                 ) -> PrefilingSchedule:
    """The bureau sets (or replaces) the filing schedule for one resource or scenario."""
    who = audit_log.as_actor(actor)
    org = session.get(Organisation, operator_org_id)
    if org is None or OrgKind(org.kind) is not OrgKind.OPERATOR:
        raise InvalidInput(f"organisation {operator_org_id} is not an operator", details={"field": "operator_org_id"})
    target = _check_target(session, target_kind, target)
    if not 0 <= period_months <= MAX_PERIOD_MONTHS:
        raise InvalidInput(f"period_months must be 0 (once) to {MAX_PERIOD_MONTHS}", details={"field": "period_months"})
    for old in session.exec(select(PrefilingSchedule).where(
            PrefilingSchedule.operator_org_id == operator_org_id, PrefilingSchedule.target_kind == target_kind,
            PrefilingSchedule.target == target, PrefilingSchedule.active == True)):  # noqa: E712
        old.active = False
        session.add(old)
    sched = PrefilingSchedule(operator_org_id=operator_org_id, target_kind=target_kind, target=target,
                              first_due_on=first_due_on, period_months=period_months, blocks_jobs=blocks_jobs,
                              created_by=who.name[:64])
    session.add(sched)
    session.flush()
    audit_log.record(session, who, "assessment.prefiling.schedule", object_type="prefiling_schedule",
                     object_id=sched.id, details={"operator": operator_org_id, "target_kind": target_kind,
                                                  "target": target, "first_due_on": str(first_due_on),
                                                  "period_months": period_months, "blocks_jobs": blocks_jobs})
    return sched


def due_dates(sched: PrefilingSchedule, until: date) -> list[date]:
    """Every due date on or before `until`, and the first one after it (the next to file for)."""
    out = [sched.first_due_on]
    while out[-1] <= until and sched.period_months:
        out.append(workdays.add_months(sched.first_due_on, sched.period_months * len(out)))
    return out


def _filed(session: Session, sched: PrefilingSchedule) -> dict[date, Prefiling]:
    return {f.due_on: f for f in session.exec(select(Prefiling).where(Prefiling.schedule_id == sched.id))}


def overdue_dates(session: Session, sched: PrefilingSchedule, today: date) -> list[date]:
    filed = _filed(session, sched)
    return [d for d in due_dates(sched, today) if d < today and d not in filed]


def schedules_of(session: Session, operator_org_id: int | None = None) -> list[PrefilingSchedule]:
    q = select(PrefilingSchedule).where(PrefilingSchedule.active == True)  # noqa: E712
    if operator_org_id is not None:
        q = q.where(PrefilingSchedule.operator_org_id == operator_org_id)
    return list(session.exec(q.order_by(PrefilingSchedule.id)))  # type: ignore[arg-type]


def get_schedule(session: Session, schedule_id: int, principal: Principal | None = None) -> PrefilingSchedule:
    """A schedule; for an operator only its own (another's answers 404)."""
    sched = session.get(PrefilingSchedule, schedule_id)
    if sched is None or (principal is not None and sched.operator_org_id != principal.org_id):
        raise NotFound(f"no pre-filing schedule {schedule_id}")
    return sched


def file_report(session: Session, store: Any, sched: PrefilingSchedule, *, actor: audit_log.Actor | Principal,
                filename: str, content: bytes, content_type: str = "application/octet-stream",
                now: datetime | None = None) -> Prefiling:
    """The operator files the risk-assessment report for the schedule's earliest unfiled due date."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    today = _today(now)
    operator.require_active_authorization(session, sched.operator_org_id, today)
    if not sched.active:
        raise Conflict(f"pre-filing schedule {sched.id} was replaced; file against the current one",
                       code="schedule_replaced")
    if not content:
        raise InvalidInput(f"{filename or 'the report'}: the file is empty", details={"field": "file"})
    filed = _filed(session, sched)
    open_ = [d for d in due_dates(sched, today) if d not in filed]
    if not open_:
        last = max(filed)
        if not sched.period_months:
            raise Conflict(f"the one-off risk-assessment report for {sched.target_kind} {sched.target} is already "
                           "filed", code="already_filed")
        raise Conflict(f"the report for {sched.target_kind} {sched.target} due on {last} is already filed; the next "
                       f"one (due {workdays.add_months(sched.first_due_on, sched.period_months * len(filed))}) can "
                       f"be filed from {last}", code="already_filed")
    due = open_[0]
    digest = hashlib.sha256(content).hexdigest()
    key = f"assessment/prefiling/{sched.id}/{due.isoformat()}/{digest[:16]}"
    store.put(key, content, content_type=content_type)
    row = Prefiling(schedule_id=sched.id, operator_org_id=sched.operator_org_id, due_on=due, on_time=today <= due,
                    filename=(filename or "report")[:255], content_type=content_type[:100], size=len(content),
                    sha256=digest, object_key=key, filed_by=who.name[:64], filed_at=now)
    session.add(row)
    session.flush()
    audit_log.record(session, who, "assessment.prefiling.file", object_type="prefiling", object_id=row.id,
                     bytes=len(content), details={"schedule": sched.id, "target": sched.target,
                                                  "due_on": str(due), "on_time": row.on_time, "sha256": digest})
    return row


def schedule_view(session: Session, sched: PrefilingSchedule, now: datetime | None = None) -> dict[str, Any]:
    today = _today(now)
    filed = _filed(session, sched)
    dates = due_dates(sched, today)
    return {"id": sched.id, "operator_org_id": sched.operator_org_id, "target_kind": sched.target_kind,
            "target": sched.target, "first_due_on": sched.first_due_on, "period_months": sched.period_months,
            "blocks_jobs": sched.blocks_jobs,
            "due": [{"due_on": d, "filed_at": filed[d].filed_at if d in filed else None,
                     "on_time": filed[d].on_time if d in filed else None,
                     "sha256": filed[d].sha256 if d in filed else None,
                     "overdue": d < today and d not in filed} for d in dates]}


def flag_overdue(session: Session, now: datetime | None = None) -> list[tuple[int, date]]:
    """Notify the operator once per overdue due date (the maintenance loop calls this)."""
    today = _today(now)
    out = []
    for sched in schedules_of(session):
        late = [d for d in overdue_dates(session, sched, today) if d.isoformat() not in sched.flagged]
        for d in late:
            notifications.notify(session, [sched.operator_org_id], "prefiling_overdue",
                                 f"风险评估报告逾期未备案 / risk-assessment report overdue: {sched.target_kind} "
                                 f"{sched.target}, due {d}",
                                 body="new sandbox jobs on the resource are blocked" if sched.blocks_jobs else "")
            audit_log.record(session, audit_log.SYSTEM, "assessment.prefiling.overdue",
                             object_type="prefiling_schedule", object_id=sched.id,
                             details={"target": sched.target, "due_on": str(d), "blocks_jobs": sched.blocks_jobs})
            out.append((int(sched.id or 0), d))
        if late:
            sched.flagged = [*sched.flagged, *(d.isoformat() for d in late)]
            session.add(sched)
    session.flush()
    return out


def _resources_of(session: Session, sched: PrefilingSchedule) -> set[str]:
    """The resources a schedule covers: its resource, or the resources its scenario application names."""
    if sched.target_kind == "resource":
        return {sched.target}
    case = session.exec(select(Case).where(Case.number == sched.target, Case.kind == "scenario")).first()
    items = (case.payload.get("resources") if case is not None else None) or []
    return {str(i.get("resource")) for i in items if isinstance(i, dict) and i.get("resource")}


def require_prefiled(session: Session, resources: Iterable[str], now: datetime | None = None) -> None:
    """Refuse (Forbidden, code "prefiling_overdue") when a blocking schedule covering one of `resources`
    (the resource's own, or a scenario's that names it) has a risk-assessment report overdue; the
    message names the resource, the filing and its due date."""
    today = _today(now)
    codes = set(resources)
    if not codes:
        return
    blocking = session.exec(select(PrefilingSchedule).where(PrefilingSchedule.active == True,  # noqa: E712
                                                            PrefilingSchedule.blocks_jobs == True)  # noqa: E712
                            .order_by(PrefilingSchedule.id))  # type: ignore[arg-type]
    for sched in blocking:
        hit = sorted(codes & _resources_of(session, sched))
        late = overdue_dates(session, sched, today) if hit else []
        if late:
            filing = "" if sched.target_kind == "resource" else f" for scenario {sched.target}"
            raise NotPrefiled(f"resource {hit[0]}: the risk-assessment report{filing} due on {late[0]} has not been "
                              "filed (事前风险评估报告逾期未备案); new jobs on it are blocked until it is filed",
                              details={"resource": hit[0], "due_on": str(late[0]), "schedule": sched.id,
                                       "target_kind": sched.target_kind, "target": sched.target})
