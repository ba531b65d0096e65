"""Notifications: every party's inbox and to-do list, and the email/webhook messages they cause.

`on_transition` runs inside `workflow.transition` (and `open_case`) for every step: the
organisations that must act next get "<number> awaits your review, due <Shanghai time>", the
applicant gets a note on every change of state, and for each notification the outbox receives
one email per user of the organisation with an address and one webhook message per active
webhook, all in the caller's transaction (see outbox.py for delivery). Notifications carry
titles, numbers, states and deadlines only: never what an application or a dataset contains.

`todo` assembles one organisation's to-do list; `flag_due` (run periodically) adds the
one-time reminders: overdue reviews, open renewal windows and agreements about to expire.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.db import session_scope
from authops.core.errors import NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.platform.governance import outbox, workdays, workflow
from authops.platform.governance.models import Acceptance, Agreement, Case, CaseTransition, Notification

# Notification kinds (stable: webhook consumers and the UI switch on them).
AWAITING = "case.awaiting"  # your organisation must act on a case
CHANGED = "case.changed"  # your application moved to another state
DECIDED = "case.decided"  # your application reached a final state
OVERDUE = "case.overdue"  # a review you owe is past its deadline
RENEWAL_OPEN = "authorization.renewal_open"  # the renewal window of an authorization opened
EXPIRING = "agreement.expiring"  # an agreement ends within EXPIRY_NOTICE_DAYS

EXPIRY_NOTICE_DAYS = 30


def _when(at: datetime | None) -> str:
    return f"{show(at)} (Asia/Shanghai)" if at else ""


def _label(case: Case) -> str:
    return f'{case.number} "{case.title}"'


# --- writing notifications -------------------------------------------------------------------

def notify(session: Session, org_ids: Iterable[int], kind: str, title: str, body: str = "", *,
           case: Case | None = None, agreement: Agreement | None = None,
           due_at: datetime | None = None) -> list[Notification]:
    """Add one notification per organisation and queue its email/webhook messages (same transaction).

    Other modules use this for their own events (renewal windows, agreement expiry, exits...).
    Put titles, numbers and dates in `title`/`body`, never data values."""
    out = []
    for org_id in dict.fromkeys(int(o) for o in org_ids if o):
        n = Notification(org_id=org_id, kind=kind[:48], title=title[:300], body=body,
                         case_id=case.id if case else None, agreement_id=agreement.id if agreement else None,
                         due_at=due_at, created_at=utcnow())
        session.add(n)
        session.flush()
        outbox.enqueue(session, n, case_number=case.number if case else None,
                       agreement_number=agreement.number if agreement else None)
        out.append(n)
    return out


def _notified_since(session: Session, org_id: int, case: Case, kind: str, since: datetime | None) -> bool:
    q = select(Notification.id).where(Notification.org_id == org_id, Notification.case_id == case.id,
                                      Notification.kind == kind)
    if since is not None:
        q = q.where(Notification.created_at >= since)
    return session.exec(q.limit(1)).first() is not None


def _last_state_change(session: Session, case: Case, before_seq: int) -> datetime | None:
    row = session.exec(select(CaseTransition.at).where(
        CaseTransition.case_id == case.id, CaseTransition.seq < before_seq,
        CaseTransition.from_state != CaseTransition.to_state).order_by(CaseTransition.seq.desc()).limit(1)).first()
    return row


def on_transition(session: Session, case: Case, row: CaseTransition) -> list[Notification]:
    """Called by the workflow engine after each step (the history row is `row`)."""
    changed = row.from_state != row.to_state
    out: list[Notification] = []
    awaiting = [int(o) for o in case.awaiting_orgs or []]
    since = None if changed else _last_state_change(session, case, row.seq)
    for org_id in awaiting:
        # A step that leaves the state as it is (one of several reviewers decided) does not
        # re-announce the case to organisations already told about this stage.
        if not changed and _notified_since(session, org_id, case, AWAITING, since):
            continue
        note = workdays.estimate_note(case.due_at)
        due = (f", due {_when(case.due_at)}" + (f" ({note})" if note else "")) if case.due_at else ""
        if org_id == case.applicant_org_id:
            title = f"{_label(case)} is {case.state} and awaits your action{due}"
        else:
            title = f"{_label(case)} awaits your review{due}"
        body = (f"{case.kind} {case.number}: {row.action} ({row.from_state or 'new'} -> {row.to_state}). "
                f"Open /api/v1/governance/cases/{case.id}.")
        out += notify(session, [org_id], AWAITING, title, body, case=case, due_at=case.due_at)
    if changed and case.applicant_org_id not in awaiting:
        final = case.state in workflow.machine(case.kind).final
        if row.from_state == "":
            title = f"{_label(case)} was filed (state: {case.state})"
        elif final:
            title = f"{_label(case)} is {case.state} (final decision, {row.action})"
        else:
            title = f"{_label(case)}: {row.action}, now {case.state}"
        body = f"{case.kind} {case.number}: {row.from_state or 'new'} -> {row.to_state}"
        if row.reason and not final and row.to_state != row.from_state:
            body += " (the reasons are on the case)"
        body += f". Open /api/v1/governance/cases/{case.id}."
        out += notify(session, [case.applicant_org_id], DECIDED if final else CHANGED, title, body, case=case)
    return out


# --- reading ----------------------------------------------------------------------------------

def notification_view(n: Notification) -> dict[str, Any]:
    return {"id": n.id, "kind": n.kind, "title": n.title, "body": n.body, "case_id": n.case_id,
            "agreement_id": n.agreement_id, "due_at": n.due_at, "due_at_local": show(n.due_at),
            "created_at": n.created_at, "created_at_local": show(n.created_at), "read_at": n.read_at}


def list_notifications(session: Session, org_id: int, *, unread_only: bool = False, limit: int = 50,
                       offset: int = 0) -> list[Notification]:
    q = select(Notification).where(Notification.org_id == org_id)
    if unread_only:
        q = q.where(Notification.read_at.is_(None))  # type: ignore[union-attr]
    return list(session.exec(q.order_by(Notification.id.desc()).offset(offset).limit(limit)))  # type: ignore[union-attr]


def mark_read(session: Session, org_id: int, notification_id: int) -> Notification:
    """Mark one of the organisation's notifications read (another organisation's is not found)."""
    n = session.get(Notification, notification_id)
    if n is None or n.org_id != org_id:
        raise NotFound(f"no notification {notification_id}")
    if n.read_at is None:
        n.read_at = utcnow()
        session.add(n)
        session.flush()
    return n


def _today(now: datetime) -> date:
    return workdays.shanghai_date(now)


def _agreement_view(a: Agreement, org_id: int, today: date) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "number": a.number, "state": a.state, "starts_on": a.starts_on,
            "ends_on": a.ends_on, "days_left": (a.ends_on - today).days,
            "role": "party_a" if a.party_a_org_id == org_id else "party_b",
            "counterparty_org_id": a.party_b_org_id if a.party_a_org_id == org_id else a.party_a_org_id,
            "text_sha256": a.text_sha256}


def renewal_window(a: Agreement) -> tuple[date, date]:
    """When the operator may file its renewal (operator.renewal_window: 12 to 6 months before the end)."""
    from authops.platform.governance import operator

    return operator.renewal_window(a)


def renewal_opens_on(a: Agreement) -> date:
    return renewal_window(a)[0]


def _renewal_open(a: Agreement, today: date) -> bool:
    opens, closes = renewal_window(a)
    return opens <= today <= closes


def todo(session: Session, principal: Principal | audit_log.Actor, now: datetime | None = None) -> dict[str, Any]:
    """The organisation's to-do list: cases it must act on (with deadline and overdue flag),
    unread notifications, agreements awaiting its acceptance or about to end, and (for the
    authorized operator) an open renewal window."""
    now = now or utcnow()
    today = _today(now)
    org_id = int(principal.org_id or 0)
    cases = []
    for c in session.exec(select(Case).where(Case.decided_at.is_(None)).order_by(Case.id)):  # type: ignore[union-attr]
        if org_id not in (c.awaiting_orgs or []):
            continue
        try:
            allowed = workflow.machine(c.kind).allowed(c.state)
        except Exception:  # a kind whose module is not installed: still listed
            allowed = []
        note = workdays.estimate_note(c.due_at)
        cases.append({"id": c.id, "kind": c.kind, "number": c.number, "title": c.title, "state": c.state,
                      "round": c.round, "applicant_org_id": c.applicant_org_id, "due_at": c.due_at,
                      "due_at_local": show(c.due_at) + (f" ({note})" if note else ""),
                      "due_at_estimated": note is not None, "overdue": workflow.overdue(c, now),
                      "allowed_actions": allowed})
    cases.sort(key=lambda c: (not c["overdue"], c["due_at"] or datetime.max))

    mine = list(session.exec(select(Agreement).where(
        (Agreement.party_a_org_id == org_id) | (Agreement.party_b_org_id == org_id)).order_by(Agreement.id)))
    accepted = {a for a in session.exec(select(Acceptance.agreement_id).where(Acceptance.org_id == org_id))}
    to_accept = [_agreement_view(a, org_id, today) for a in mine if a.state == "pending" and a.id not in accepted]
    expiring = [_agreement_view(a, org_id, today) for a in mine
                if a.state == "active" and today <= a.ends_on <= today + timedelta(days=EXPIRY_NOTICE_DAYS)]
    renewals = []
    for a in mine:
        if a.kind == "operator_authorization" and a.state == "active" and a.party_b_org_id == org_id \
                and _renewal_open(a, today):
            renewals.append({**_agreement_view(a, org_id, today), "renewal_opens_on": renewal_opens_on(a),
                             "renewal_closes_on": renewal_window(a)[1],
                             "needs": ["operating report", "third-party evaluation report", "3-year plan"]})
    unread = list_notifications(session, org_id, unread_only=True, limit=50)
    unread_count = session.exec(select(func.count()).select_from(Notification).where(
        Notification.org_id == org_id, Notification.read_at.is_(None))).one()  # type: ignore[union-attr]
    return {"org_id": org_id, "now": now, "now_local": show(now),
            "cases": cases, "overdue": sum(1 for c in cases if c["overdue"]),
            "notifications": {"unread": unread_count, "items": [notification_view(n) for n in unread]},
            "agreements_to_accept": to_accept, "agreements_expiring": expiring, "renewals": renewals}


# --- periodic reminders -----------------------------------------------------------------------

def _exists(session: Session, org_id: int, kind: str, *, case_id: int | None = None,
            agreement_id: int | None = None, due_at: datetime | None = None) -> bool:
    q = select(Notification.id).where(Notification.org_id == org_id, Notification.kind == kind)
    if case_id is not None:
        q = q.where(Notification.case_id == case_id)
    if agreement_id is not None:
        q = q.where(Notification.agreement_id == agreement_id)
    if due_at is not None:
        q = q.where(Notification.due_at == due_at)
    return session.exec(q.limit(1)).first() is not None


def flag_due(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Add the one-time reminders that are due; safe to run often and on several workers.

    - "overdue": each organisation still awaited on a case past its deadline, once per deadline
      (a new stage with a new deadline can be overdue again);
    - "renewal window open": the operator of an active authorization, once, from 6 months
      before it ends;
    - "expires in 30 days": both parties of an active agreement, once.
    Rows are taken with FOR UPDATE SKIP LOCKED (PostgreSQL) so two workers never add the same
    reminder; the caller commits."""
    now = now or utcnow()
    today = _today(now)
    counts = {"overdue": 0, "renewal_open": 0, "expiring": 0}
    overdue_cases = session.exec(select(Case).where(Case.decided_at.is_(None), Case.due_at.is_not(None),  # type: ignore[union-attr]
                                                    Case.due_at < now).order_by(Case.id)
                                 .with_for_update(skip_locked=True)).all()
    for c in overdue_cases:
        for org_id in c.awaiting_orgs or []:
            if _exists(session, org_id, OVERDUE, case_id=c.id, due_at=c.due_at):
                continue
            notify(session, [org_id], OVERDUE, f"{_label(c)} is overdue: it was due {_when(c.due_at)}",
                   f"{c.kind} {c.number} ({c.state}) is past its deadline. "
                   f"Open /api/v1/governance/cases/{c.id}.", case=c, due_at=c.due_at)
            counts["overdue"] += 1
    active = session.exec(select(Agreement).where(Agreement.state == "active").order_by(Agreement.id)
                          .with_for_update(skip_locked=True)).all()
    for a in active:
        if a.kind == "operator_authorization" and _renewal_open(a, today) \
                and not _exists(session, a.party_b_org_id, RENEWAL_OPEN, agreement_id=a.id):
            notify(session, [a.party_b_org_id], RENEWAL_OPEN,
                   f"Authorization {a.number} ends on {a.ends_on}: the renewal window is open",
                   "Apply for renewal with an operating report, a third-party evaluation report and a "
                   f"3-year plan by {renewal_window(a)[1]} (at least 6 months before the term ends).", agreement=a)
            counts["renewal_open"] += 1
        if today <= a.ends_on <= today + timedelta(days=EXPIRY_NOTICE_DAYS):
            for org_id in (a.party_a_org_id, a.party_b_org_id):
                if _exists(session, org_id, EXPIRING, agreement_id=a.id):
                    continue
                notify(session, [org_id], EXPIRING,
                       f"Agreement {a.number} ({a.kind}) expires on {a.ends_on}, in {(a.ends_on - today).days} days",
                       "", agreement=a)
                counts["expiring"] += 1
    session.flush()
    return counts


def flag_due_now(settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """`flag_due` in its own transaction: what the worker's maintenance loop calls."""
    with session_scope(settings) as session:
        return flag_due(session, now)
