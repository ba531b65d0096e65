"""Route-matrix cases for the assessment routes (authops/platform/assessment/router.py).

The bureau's cases work on operators made for the purpose (so no fact about the world's operators is
recorded); the operator's cases on its own schedules and rectifications; the customer's rating on a
catalogue product it used (products are not an organisation's objects, so rating one it used is
allowed from any customer organisation: cross_org)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.platform.assessment import prefiling, service
from authops.platform.assessment.models import Assessment, Rectification
from authops.platform.catalog.models import DataResource
from authops.platform.governance import workdays
from authops.platform.governance.models import Product
from tests.platform.governance.matrix_products import authorize_operator, registered_product, usage_agreement
from tests.support.builders import make_org
from tests.support.matrix import Case

P = "/api/v1/assessment"
YEAR = 2001  # the matrix's assessed year (long ended); SETTINGS_YEAR is only ever set, never signed
SETTINGS_YEAR = 2002
METRICS = {"revenue": {"weight": 1, "target": 1_000_000}}

_last: dict[tuple, object] = {}  # (what, world key or organisation id, ...) -> id, code or row


def _w(w) -> str:
    """This world's key (organisation codes are unique in the process; ids repeat across databases)."""
    return w.home[OrgKind.BUREAU].code


def _operator_of(w, org):
    """The operator a caller of `org`'s kind acts on: its own, else the home operator."""
    return org if OrgKind(org.kind) is OrgKind.OPERATOR else w.home[OrgKind.OPERATOR]


def _setup(session, w):
    """Once per world: the matrix years' settings and a catalogue resource."""
    if ("setup", _w(w)) in _last:
        return
    for year in (YEAR, SETTINGS_YEAR):
        service.set_year_settings(session, actor=audit_log.SYSTEM, year=year, metrics_=METRICS, excellent=90,
                                  qualified=60)
    res = DataResource(code=f"matrix_res_{uuid.uuid4().hex[:6]}", org_id=w.home[OrgKind.PROVIDER].id,
                       name_zh="矩阵资源", name_en="Matrix resource", grade="B", update_cycle="monthly")
    session.add(res)
    session.commit()
    _last[("setup", _w(w))] = res.code


def _resource(w) -> str:
    return str(_last[("setup", _w(w))])


def _draft(session, w) -> Assessment:
    """A draft annual assessment of a fresh operator."""
    _setup(session, w)
    op = make_org(session, OrgKind.OPERATOR)
    a = service.run(session, actor=audit_log.SYSTEM, operator_org_id=op.id, year=YEAR)
    session.commit()
    return a


def _expert_draft(session, w, org):
    key = ("expert", _w(w))
    if key not in _last:
        _last[key] = _draft(session, w).id


def _sign_draft(session, w, org):
    _last[("sign", org.id)] = _draft(session, w).id


def _schedule(session, w, org):
    _setup(session, w)
    op = _operator_of(w, org)
    if op.id == w.home[OrgKind.OPERATOR].id:
        authorize_operator(session, op.id, w.home[OrgKind.BUREAU].id)
    sched = prefiling.set_schedule(session, actor=audit_log.SYSTEM, operator_org_id=op.id, target_kind="resource",
                                   target=_resource(w), first_due_on=workdays.shanghai_date(utcnow()))
    session.commit()
    _last[("schedule", org.id)] = sched.id


def _rectification(session, w, org, *, state: str, operator_org_id: int) -> int:
    """A rectification of an unqualified assessment (rows made directly: no fact is recorded)."""
    _setup(session, w)
    now = utcnow()
    a = Assessment(year=YEAR, operator_org_id=operator_org_id, period_start=now - timedelta(days=365),
                   period_end=now, grade="unqualified", state="signed")
    session.add(a)
    session.flush()
    rect = Rectification(assessment_id=a.id, operator_org_id=operator_org_id, state=state,
                         due_on=workdays.shanghai_date(now) + timedelta(days=30),
                         plan="matrix plan" if state == "submitted" else "")
    session.add(rect)
    session.commit()
    return int(rect.id or 0)


def _own_rectification(session, w, org):
    _last[("plan", org.id)] = _rectification(session, w, org, state="due", operator_org_id=_operator_of(w, org).id)


def _submitted_rectification(session, w, org):
    op = make_org(session, OrgKind.OPERATOR)
    _last[("reassess", org.id)] = _rectification(session, w, org, state="submitted", operator_org_id=op.id)


def _used_product(session, w, org):
    """A product the home customer (and `org`, when a customer) has metered usage of."""
    key = ("product", _w(w))
    op, partner = w.home[OrgKind.OPERATOR], w.home[OrgKind.PARTNER]
    authorize_operator(session, op.id, w.home[OrgKind.BUREAU].id)
    if key not in _last:
        _last[key] = registered_product(session, partner_id=partner.id, operator_id=op.id)
    p = _last[key]
    assert isinstance(p, Product)
    customers = {w.home[OrgKind.CUSTOMER].id} | ({org.id} if OrgKind(org.kind) is OrgKind.CUSTOMER else set())
    for customer in sorted(customers):
        if ("used", _w(w), customer) not in _last:
            ag = usage_agreement(session, p, customer)
            metering.meter(session, customer_org_id=customer, product_id=p.id, agreement_id=ag.id,
                           request_id=uuid.uuid4().hex[:24], pricing_method="per_call", price_fen=100)
            _last[("used", _w(w), customer)] = True
    session.commit()


def _get(name: str, param: str, scope: str = "org"):
    def params(w, org):
        return {param: _last[(name, _w(w) if scope == "world" else org.id)]}
    return params


CASES = {
    ("POST", f"{P}/prefiling/schedules"): Case(
        prepare=lambda s, w, o: _setup(s, w),
        body=lambda w, org: {"operator_org_id": w.home[OrgKind.OPERATOR].id, "target_kind": "resource",
                             "target": _resource(w), "first_due_on": "2030-01-31", "period_months": 12,
                             "blocks_jobs": True}),
    ("GET", f"{P}/prefiling/schedules"): Case(),
    ("GET", f"{P}/prefiling/mine"): Case(),
    ("POST", f"{P}/prefiling/schedules/{{schedule_id}}/filings"): Case(
        prepare=_schedule, params=_get("schedule", "schedule_id"),
        files=lambda w, org: {"file": ("risk.pdf", b"%PDF-1.4 risk assessment", "application/pdf")}),
    ("PUT", f"{P}/ratings/{{product_code}}"): Case(
        prepare=_used_product, cross_org="product.rate",
        params=lambda w, org: {"product_code": getattr(_last[("product", _w(w))], "code")},
        body=lambda w, org: {"score": 4, "comment": "矩阵评价"}),
    ("PUT", f"{P}/years/{{year}}/settings"): Case(
        params=lambda w, org: {"year": SETTINGS_YEAR}, cross_org="assessment.manage",
        body=lambda w, org: {"metrics": METRICS, "excellent": 90, "qualified": 60}),
    ("GET", f"{P}/years/{{year}}/settings"): Case(
        prepare=lambda s, w, o: _setup(s, w), params=lambda w, org: {"year": SETTINGS_YEAR},
        cross_org="assessment.manage"),
    ("GET", f"{P}/years/{{year}}/departments"): Case(params=lambda w, org: {"year": YEAR},
                                                      cross_org="assessment.manage"),
    ("POST", f"{P}/runs"): Case(
        prepare=lambda s, w, o: _setup(s, w),
        body=lambda w, org: {"operator_org_id": w.home[OrgKind.OPERATOR].id, "year": SETTINGS_YEAR}),
    ("GET", f"{P}/runs"): Case(),
    ("GET", f"{P}/runs/{{assessment_id}}"): Case(
        prepare=_expert_draft, params=_get("expert", "assessment_id", "world"), cross_org="assessment.manage"),
    ("GET", f"{P}/runs/{{assessment_id}}/report"): Case(
        prepare=_expert_draft, params=_get("expert", "assessment_id", "world"), cross_org="assessment.manage"),
    ("POST", f"{P}/runs/{{assessment_id}}/expert-scores"): Case(
        prepare=_expert_draft, params=_get("expert", "assessment_id", "world"), cross_org="assessment.manage",
        body=lambda w, org: {"expert": "矩阵专家", "score": 70, "comment": "ok"}),
    ("POST", f"{P}/runs/{{assessment_id}}/sign"): Case(
        prepare=lambda s, w, o: _sign_draft(s, w, o) if OrgKind(o.kind) is OrgKind.BUREAU else None,
        params=lambda w, org: {"assessment_id": _last.get(("sign", org.id), 1)}, cross_org="assessment.manage"),
    ("GET", f"{P}/rectifications"): Case(),
    ("POST", f"{P}/rectifications/{{rect_id}}/reassess"): Case(
        prepare=lambda s, w, o: _submitted_rectification(s, w, o) if OrgKind(o.kind) is OrgKind.BUREAU else None,
        params=lambda w, org: {"rect_id": _last.get(("reassess", org.id), 1)}, cross_org="assessment.manage"),
    ("GET", f"{P}/rectifications/mine"): Case(),
    ("POST", f"{P}/rectifications/{{rect_id}}/plan"): Case(
        prepare=_own_rectification, params=_get("plan", "rect_id"),
        body=lambda w, org: {"plan": "1. 成立整改专班；2. 每月复盘；3. 三个月内完成整改。"}),
}
