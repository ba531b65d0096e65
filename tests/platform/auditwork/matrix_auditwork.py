"""Route-matrix cases for audit work: the audit's checks, findings (recorded about each caller's own
organisation, so its admins can read and answer them), and the reports of the home or away operator."""

from __future__ import annotations

from sqlmodel import Session

from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.platform.auditwork import findings
from authops.platform.identity.models import Organisation
from tests.platform.governance.matrix_products import who
from tests.support.matrix import Case, World


def _st(w: World) -> dict:
    return w.__dict__.setdefault("_auditwork", {})


def _year() -> int:
    return to_shanghai(utcnow()).year


def _operator(w: World, org: Organisation) -> Organisation:
    """The operator a caller of `org`'s side points at: its own organisation if it is one."""
    side = w.away if org.id == w.away[OrgKind(org.kind)].id else w.home
    return side[OrgKind.OPERATOR]


def _new_finding(session: Session, w: World, org: Organisation) -> None:
    """A fresh open finding about the caller's organisation (answering or publishing consumes one)."""
    auditor = w.home[OrgKind.AUDITOR]
    f = findings.record(session, actor=who(auditor), org_id=org.id, year=_year(), severity="minor",
                        title="matrix finding", text="访问日志保留期限不足", related=[{"type": "org", "id": org.id}])
    session.commit()
    _st(w)[("finding", org.id)] = f.id


def _assessment(session: Session, w: World, org: Organisation) -> None:
    """A draft assessment of last year for the home and the away operator (computed once)."""
    from authops.platform.assessment import service

    st = _st(w)
    if "assessment" in st:
        return
    year = _year() - 1
    bureau = w.home[OrgKind.BUREAU]
    service.set_year_settings(session, actor=who(bureau), year=year, excellent=90, qualified=60,
                              metrics_={"products": {"weight": 1, "target": 3}})
    for side in (w.home, w.away):
        op = side[OrgKind.OPERATOR]
        st[("assessment", op.id)] = service.run(session, actor=who(bureau), operator_org_id=op.id, year=year).id
    st["assessment"] = True
    session.commit()


def _finding(w: World, org: Organisation) -> dict:
    return {"finding_id": _st(w)[("finding", org.id)]}


def _op(w: World, org: Organisation) -> dict:
    return {"org_id": _operator(w, org).id}


AUDIT = "audit.verify"
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/api/v1/auditwork/log-verification"): Case(),
    ("GET", "/api/v1/auditwork/deidentification"): Case(),
    ("GET", "/api/v1/auditwork/operators/{org_id}/reconciliation"): Case(params=_op, cross_org=AUDIT),
    ("POST", "/api/v1/auditwork/findings"): Case(body=lambda w, org: {
        "org_id": _operator(w, org).id, "year": _year(), "severity": "major", "title": "抑制率过高",
        "text": "记录级发布的抑制率超过 30%", "related": [{"type": "release", "id": 1}]}),
    ("GET", "/api/v1/auditwork/findings"): Case(),
    ("GET", "/api/v1/auditwork/findings/{finding_id}"): Case(prepare=_new_finding, params=_finding,
                                                              cross_org="audit.read_all"),
    ("POST", "/api/v1/auditwork/findings/{finding_id}/response"): Case(
        prepare=_new_finding, params=_finding, body=lambda w, org: {"response": "已整改"}),
    ("POST", "/api/v1/auditwork/findings/{finding_id}/publish"): Case(
        prepare=_new_finding, params=_finding, cross_org="disclosure.publish"),
    ("GET", "/api/v1/auditwork/operators/{org_id}/reports/audit"): Case(
        params=_op, cross_org=AUDIT, query=lambda w, org: {"format": "html"}),
    ("GET", "/api/v1/auditwork/operators/{org_id}/reports/operating"): Case(params=_op, cross_org=AUDIT),
    ("GET", "/api/v1/auditwork/reports/operating"): Case(query=lambda w, org: {"format": "xlsx"}),
    ("GET", "/api/v1/auditwork/assessments/{assessment_id}/report"): Case(
        prepare=_assessment, params=lambda w, org: {"assessment_id": _st(w)[("assessment", _operator(w, org).id)]},
        cross_org=AUDIT),
}
