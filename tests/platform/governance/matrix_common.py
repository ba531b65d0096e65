"""Route-matrix cases for the common governance routes (authops/platform/governance/routes_common.py)."""

from __future__ import annotations

from authops.audit import log as audit_log
from authops.core.settings import get_settings
from authops.core.storage.store import get_object_store
from authops.platform.governance import notifications, outbox, workflow
from authops.platform.governance.workflow import Machine, Step
from tests.support.matrix import Case

P = "/api/v1/governance"
KIND = "matrix_common"
workflow.register(Machine(kind=KIND, prefix="MX", initial="submitted", states=("submitted", "done"),
                          steps=(Step("finish", ("submitted",), "done"),), final=frozenset({"done"})))

_last: dict[tuple[str, int], int] = {}


def _case(session, w, org):
    case = workflow.open_case(session, kind=KIND, applicant_org_id=org.id, title="matrix case",
                              payload={}, actor=audit_log.SYSTEM)
    _last[("case", org.id)] = case.id
    session.commit()
    return case


def _document(session, w, org):
    case = _case(session, w, org)
    doc = workflow.add_document(session, get_object_store(get_settings()), case, material="plan",
                                filename="plan.txt", content=b"matrix plan", actor=audit_log.SYSTEM)
    _last[("document", org.id)] = doc.id
    session.commit()


def _notification(session, w, org):
    [n] = notifications.notify(session, [org.id], "matrix.test", "matrix notification")
    _last[("notification", org.id)] = n.id
    session.commit()


def _webhook(session, w, org):
    hook, _ = outbox.create_webhook(session, get_settings(), org_id=org.id, url="https://93.184.215.14/m",
                                    actor=audit_log.SYSTEM)
    _last[("webhook", org.id)] = hook.id
    session.commit()


CASES: dict[tuple[str, str], Case] = {
    ("GET", f"{P}/todo"): Case(),
    ("GET", f"{P}/notifications"): Case(),
    ("POST", f"{P}/notifications/{{notification_id}}/read"): Case(
        prepare=_notification, params=lambda w, org: {"notification_id": _last[("notification", org.id)]}),
    ("POST", f"{P}/webhooks"): Case(body=lambda w, org: {"url": "https://93.184.215.14/authops"}),
    ("GET", f"{P}/webhooks"): Case(),
    ("DELETE", f"{P}/webhooks/{{webhook_id}}"): Case(
        prepare=_webhook, params=lambda w, org: {"webhook_id": _last[("webhook", org.id)]}),
    ("GET", f"{P}/cases/{{case_id}}"): Case(
        prepare=_case, params=lambda w, org: {"case_id": _last[("case", org.id)]}, cross_org="review.final"),
    ("GET", f"{P}/cases/{{case_id}}/documents/{{document_id}}"): Case(
        prepare=_document, cross_org="review.final",
        params=lambda w, org: {"case_id": _last[("case", org.id)], "document_id": _last[("document", org.id)]}),
    ("POST", f"{P}/disclosures"): Case(body=lambda w, org: {"title": "2025 audit result", "body": "qualified",
                                                            "year": 2025}),
}
