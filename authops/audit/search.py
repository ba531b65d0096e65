"""Searching the log for supervisors and auditors; CSV and Excel exports of a search."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from authops.audit import canonical
from authops.audit.models import AuditEvent
from authops.core.clock import show
from authops.core.errors import InvalidInput

MAX_PAGE = 500
MAX_EXPORT = 100_000
COLUMNS = ("seq", "time (Asia/Shanghai)", "actor_kind", "actor_id", "actor_name", "org_id", "action",
           "object_type", "object_id", "outcome", "ip", "region", "rows", "bytes", "subjects", "hash")


@dataclass
class Filter:
    org_id: int | None = None
    actor_kind: str | None = None
    actor_id: int | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _query(f: Filter, *, only_org: int | None):
    stmt = select(AuditEvent)
    if only_org is not None:
        stmt = stmt.where(AuditEvent.org_id == only_org)
    for name in ("org_id", "actor_kind", "actor_id", "object_type", "object_id", "outcome"):
        value = getattr(f, name)
        if value is not None:
            stmt = stmt.where(getattr(AuditEvent, name) == value)
    if f.action:
        # "product." matches every product action; otherwise an exact action name.
        stmt = stmt.where(AuditEvent.action.startswith(f.action) if f.action.endswith(".")
                          else AuditEvent.action == f.action)
    if f.since:
        stmt = stmt.where(AuditEvent.ts >= f.since)
    if f.until:
        stmt = stmt.where(AuditEvent.ts < f.until)
    return stmt


def search(session: Session, f: Filter, *, only_org: int | None, limit: int = 100,
           before_seq: int | None = None) -> list[AuditEvent]:
    """Newest first; page with before_seq (the last seq of the previous page), never offsets."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", details={"field": "limit"})
    stmt = _query(f, only_org=only_org)
    if before_seq is not None:
        stmt = stmt.where(AuditEvent.seq < before_seq)
    return list(session.exec(stmt.order_by(AuditEvent.seq.desc()).limit(limit)).scalars().all())


def details_of(event: AuditEvent) -> dict:
    return canonical.decode(bytes(event.canonical)).get("details", {})


def _rows(session: Session, f: Filter, only_org: int | None):
    stmt = _query(f, only_org=only_org).order_by(AuditEvent.seq).limit(MAX_EXPORT + 1)
    for n, e in enumerate(session.exec(stmt).scalars()):
        if n == MAX_EXPORT:
            raise InvalidInput(f"more than {MAX_EXPORT} events match; narrow the time range",
                               details={"field": "since"})
        yield (e.seq, show(e.ts), e.actor_kind, e.actor_id, e.actor_name, e.org_id, e.action, e.object_type,
               e.object_id, e.outcome, e.ip, e.region, e.rows, e.nbytes, e.subjects, e.hash)


def export_csv(session: Session, f: Filter, *, only_org: int | None) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(_rows(session, f, only_org))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens Chinese text correctly


def export_xlsx(session: Session, f: Filter, *, only_org: int | None) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("audit log")
    ws.append(COLUMNS)
    for row in _rows(session, f, only_org):
        ws.append(list(row))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
