"""Audit findings: the auditor records them, the audited organisation answers, the bureau publishes.

Guarantees: a finding names its severity, text and the objects it is about; only the audited
organisation answers it (once, before it is published); publishing puts it on the public disclosure
page (an "audit_result" disclosure) exactly once; every step writes an audit event.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing.prices import year_of
from authops.core.clock import utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.platform.auditwork.models import AuditFinding
from authops.platform.governance import disclosure
from authops.platform.identity.models import Organisation

SEVERITIES = {"minor": ("一般", "minor"), "major": ("重要", "major"), "critical": ("重大", "critical")}
MAX_TEXT = 10_000
MAX_RELATED = 50


def _text(value: Any, field: str, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InvalidInput(f"{field} is required", details={"field": field})
    if len(text) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", details={"field": field})
    return text


def _related(items: Any) -> list[dict[str, str]]:
    if not isinstance(items, list) or len(items) > MAX_RELATED:
        raise InvalidInput(f"related is a list of at most {MAX_RELATED} objects", details={"field": "related"})
    out = []
    for i, item in enumerate(items):
        kind, ident = (item.get("type"), item.get("id")) if isinstance(item, dict) else (None, None)
        if not isinstance(kind, str) or not kind.strip() or len(kind) > 64 or ident in (None, "") \
                or len(str(ident)) > 128:
            raise InvalidInput(f"related[{i}] needs a type (text) and an id", details={"field": f"related[{i}]"})
        out.append({"type": kind.strip(), "id": str(ident)})
    return out


def record(session: Session, *, actor: Any, org_id: int, year: int, severity: str, title: str, text: str,
           related: list[dict[str, Any]] | None = None) -> AuditFinding:
    """A new open finding about organisation `org_id`."""
    who = audit_log.as_actor(actor)
    if severity not in SEVERITIES:
        raise InvalidInput(f"severity is one of {', '.join(SEVERITIES)}", details={"field": "severity"})
    if session.get(Organisation, org_id) is None:
        raise InvalidInput(f"no organisation {org_id}", details={"field": "org_id"})
    if not isinstance(year, int) or not 2000 <= year <= year_of():
        raise InvalidInput(f"year is between 2000 and {year_of()}", details={"field": "year"})
    f = AuditFinding(year=year, org_id=org_id, severity=severity, title=_text(title, "title", 300),
                     text=_text(text, "text", MAX_TEXT), related=_related(related or []),
                     recorded_by=who.name[:100], recorded_by_org_id=int(who.org_id))
    session.add(f)
    session.flush()
    audit_log.record(session, who, "auditwork.finding.record", object_type="audit_finding", object_id=f.id,
                     details={"org_id": org_id, "year": year, "severity": severity, "related": f.related})
    return f


def get(session: Session, finding_id: int, *, org_id: int | None = None) -> AuditFinding:
    """The finding; with `org_id`, only one about that organisation (else NotFound)."""
    f = session.get(AuditFinding, finding_id)
    if f is None or (org_id is not None and f.org_id != org_id):
        raise NotFound(f"no audit finding {finding_id}")
    return f


def listing(session: Session, *, year: int | None = None, org_id: int | None = None) -> list[AuditFinding]:
    q = select(AuditFinding)
    if year is not None:
        q = q.where(AuditFinding.year == year)
    if org_id is not None:
        q = q.where(AuditFinding.org_id == org_id)
    return list(session.exec(q.order_by(AuditFinding.year, AuditFinding.id)))


def respond(session: Session, finding: AuditFinding, *, actor: Any, response: str) -> AuditFinding:
    """The audited organisation's answer (once, and not after publication)."""
    who = audit_log.as_actor(actor)
    if finding.state != "open":
        raise Conflict(f"audit finding {finding.id} is already {finding.state}", code="finding_not_open")
    finding.response, finding.responded_by = _text(response, "response", MAX_TEXT), who.name[:100]
    finding.responded_at, finding.state = utcnow(), "responded"
    session.add(finding)
    session.flush()
    audit_log.record(session, who, "auditwork.finding.respond", object_type="audit_finding", object_id=finding.id,
                     details={"org_id": finding.org_id})
    return finding


def publish(session: Session, finding: AuditFinding, *, actor: Any) -> AuditFinding:
    """Publish on the disclosure page: severity, the finding and the audited organisation's answer."""
    who = audit_log.as_actor(actor)
    if finding.state == "published":
        raise Conflict(f"audit finding {finding.id} is already published", code="finding_published")
    org = session.get(Organisation, finding.org_id)
    zh, en = SEVERITIES[finding.severity]
    body = f"审计发现（{zh} {en}）— {org.name_zh}：{finding.text}"
    body += f"\n整改回复 response: {finding.response}" if finding.response else "\n（尚未回复 no response yet）"
    call = disclosure.publish(session, actor=who, title=f"审计发现 Audit finding: {finding.title}", body=body,
                              year=finding.year, category="audit_result")
    finding.disclosure_id, finding.published_at, finding.state = call.id, utcnow(), "published"
    session.add(finding)
    session.flush()
    audit_log.record(session, who, "auditwork.finding.publish", object_type="audit_finding", object_id=finding.id,
                     details={"disclosure": call.number})
    return finding


def view(f: AuditFinding) -> dict[str, Any]:
    return {"id": f.id, "year": f.year, "org_id": f.org_id, "severity": f.severity,
            "severity_zh": SEVERITIES[f.severity][0], "title": f.title, "text": f.text, "related": f.related,
            "state": f.state, "recorded_by": f.recorded_by, "recorded_at": f.recorded_at, "response": f.response,
            "responded_by": f.responded_by, "responded_at": f.responded_at, "disclosure_id": f.disclosure_id,
            "published_at": f.published_at}
