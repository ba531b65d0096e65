"""The operator assessment's metrics, each computed from the platform's own records over a period
[start, end) (UTC; an annual assessment's period is the Asia/Shanghai calendar year). Every metric
returns its value and the sources behind it: the query in words, the ids of the records it
counted and their count, so a reader (or a test) can recompute it.

The operator holds the whole-city authorization (one operator at a time), so platform-wide records
(scenarios, releases, incidents, anomaly cases) are the operator's year; products, usage and
filings are selected by the operator's organisation.

Metrics (key: definition):

* ``products``: products with a registration number whose operator is the assessed operator and
  whose ``registered_at`` falls in the period (产品数量).
* ``scenarios``: scenario applications (``gov_case`` kind ``scenario``) approved (state ``approved``)
  with ``decided_at`` in the period (场景数量).
* ``security_compliance`` (安全合规率, percent): 100 x (1 - nonconforming / checked), 100 when nothing
  was checked, where
  checked = release attempts (audit events ``sandbox.release`` + ``sandbox.refuse``)
  + pre-filing due dates in the period + anomaly cases decided in the period (confirmed or released)
  + security incidents that occurred in the period;
  nonconforming = refusals (``sandbox.refuse``: a job or release refused as out of scope, by the
  release policy, for an unapproved tool or an overdue pre-filing) + due dates in the period without
  a filing made on time + anomaly cases confirmed + incidents (every incident counts as nonconforming).
* ``satisfaction`` (用户满意度, 1-5): the mean of customers' ratings, for the years the period touches,
  of the operator's products; 0 when there is none.
* ``revenue`` (营业收入, fen): the sum of ``billing_usage.amount_fen`` of the operator with ``at`` in the
  period.
* ``social.subjects_served`` (服务企业数): distinct pseudonymous ``subject_key`` in ``product.call`` audit
  events of the operator's products in the period (only the products the year's settings list in
  ``indicators.enterprise_products``, when it lists any).
* ``social.financing_disbursed`` (促成融资笔数): SME financing requests with a bank match that moved to
  ``disbursed`` in the period.
* ``social.public_governance_calls`` (公共治理调用次数): usage records of the operator's
  public-governance and public-welfare products in the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable

from sqlmodel import Session, select

from authops.audit.anomaly.models import AnomalyCase, Incident
from authops.audit.models import AuditEvent
from authops.audit.search import details_of
from authops.billing.models import UsageRecord
from authops.core.clock import SHANGHAI, to_shanghai
from authops.platform.assessment.models import Prefiling, PrefilingSchedule, ProductRating
from authops.platform.governance.models import Case, Product
from authops.platform.products.sme_models import FinancingMatch


@dataclass(frozen=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    operator_org_id: int
    indicators: dict[str, Any]

    @property
    def years(self) -> list[int]:
        first, last = _local(self.start).year, _local(self.end - timedelta(microseconds=1)).year
        return list(range(first, last + 1))

    def has(self, at: datetime | None) -> bool:
        return at is not None and self.start <= at < self.end


def _local(at: datetime) -> datetime:
    return to_shanghai(at)


def year_period(year: int) -> tuple[datetime, datetime]:
    """The Asia/Shanghai calendar year as naive UTC [start, end)."""
    def utc(y: int) -> datetime:
        local = datetime(y, 1, 1, tzinfo=SHANGHAI)
        return (local - local.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
    return utc(year), utc(year + 1)


def _sources(query: str, ids: list[Any] | None, count: int, **parts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"query": query, "record_ids": ids, "count": count}
    if parts:
        out["parts"] = parts
    return out


def _operator_products(session: Session, p: Period) -> list[Product]:
    return list(session.exec(select(Product).where(Product.operator_org_id == p.operator_org_id)
                             .order_by(Product.id)))  # type: ignore[arg-type]


def products(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    ids = [int(x.id or 0) for x in _operator_products(session, p)
           if x.registration_number and p.has(x.registered_at)]
    return len(ids), _sources("gov_product: operator_org_id = operator, registration_number set, registered_at in "
                              "period", ids, len(ids))


def scenarios(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    ids = [int(c.id or 0) for c in session.exec(select(Case).where(Case.kind == "scenario", Case.state == "approved")
                                                .order_by(Case.id)) if p.has(c.decided_at)]  # type: ignore[arg-type]
    return len(ids), _sources("gov_case: kind = scenario, state = approved, decided_at in period", ids, len(ids))


def _events(session: Session, p: Period, actions: tuple[str, ...]) -> list[AuditEvent]:
    return list(session.exec(select(AuditEvent).where(AuditEvent.action.in_(actions),  # type: ignore[attr-defined]
                                                      AuditEvent.ts >= p.start, AuditEvent.ts < p.end)
                             .order_by(AuditEvent.seq)))  # type: ignore[arg-type]


def filings_due(session: Session, p: Period) -> list[tuple[PrefilingSchedule, date, Prefiling | None]]:
    """Every (schedule, due date, filing or None) of the operator's active schedules due in the period."""
    from authops.platform.assessment.prefiling import due_dates

    first, last = _local(p.start).date(), _local(p.end - timedelta(microseconds=1)).date()
    out = []
    for sched in session.exec(select(PrefilingSchedule).where(PrefilingSchedule.operator_org_id == p.operator_org_id,
                                                              PrefilingSchedule.active == True)  # noqa: E712
                              .order_by(PrefilingSchedule.id)):  # type: ignore[arg-type]
        filed = {f.due_on: f for f in session.exec(select(Prefiling).where(Prefiling.schedule_id == sched.id))}
        out += [(sched, d, filed.get(d)) for d in due_dates(sched, last) if first <= d <= last]
    return out


def security_compliance(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    events = _events(session, p, ("sandbox.release", "sandbox.refuse"))
    refused = [e for e in events if e.action == "sandbox.refuse"]
    due = filings_due(session, p)
    late = [(s, d) for s, d, f in due if f is None or not f.on_time]
    decided = [c for c in session.exec(select(AnomalyCase).where(AnomalyCase.state.in_(("confirmed", "released"))))  # type: ignore[attr-defined]
               if p.has(c.decided_at)]
    confirmed = [c for c in decided if c.state == "confirmed"]
    incidents = [i for i in session.exec(select(Incident)) if p.has(i.occurred_at)]
    checked = len(events) + len(due) + len(decided) + len(incidents)
    bad = len(refused) + len(late) + len(confirmed) + len(incidents)
    rate = 100.0 if checked == 0 else round(100.0 * (1 - bad / checked), 2)
    ids = ([f"audit:{e.seq}" for e in events] + [f"prefiling_due:{s.id}:{d}" for s, d, _ in due]
           + [f"anomaly_case:{c.id}" for c in decided] + [f"incident:{i.id}" for i in incidents])
    return rate, _sources("100 x (1 - nonconforming / checked); checked = audit sandbox.release + sandbox.refuse in "
                          "period + pre-filing due dates in period + anomaly cases decided in period + incidents "
                          "occurred in period; nonconforming = sandbox.refuse + filings missing or late + anomaly "
                          "cases confirmed + incidents", ids, checked,
                          release_attempts=len(events), releases_refused=len(refused), filings_due=len(due),
                          filings_late_or_missing=len(late), anomaly_cases_decided=len(decided),
                          anomaly_cases_confirmed=len(confirmed), incidents=len(incidents), nonconforming=bad)


def satisfaction(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    mine = {x.id for x in _operator_products(session, p)}
    rows = [r for r in session.exec(select(ProductRating).where(ProductRating.year.in_(p.years))  # type: ignore[attr-defined]
                                    .order_by(ProductRating.id)) if r.product_id in mine]  # type: ignore[arg-type]
    mean = round(sum(r.score for r in rows) / len(rows), 2) if rows else 0.0
    return mean, _sources(f"assessment_rating: year in {p.years}, product of the operator; mean of score",
                          [int(r.id or 0) for r in rows], len(rows))


def revenue(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    rows = list(session.exec(select(UsageRecord).where(UsageRecord.operator_org_id == p.operator_org_id,
                                                       UsageRecord.at >= p.start, UsageRecord.at < p.end)
                             .order_by(UsageRecord.id)))  # type: ignore[arg-type]
    return sum(r.amount_fen for r in rows), _sources(
        "billing_usage: operator_org_id = operator, at in period; sum of amount_fen", [int(r.id or 0) for r in rows],
        len(rows))


def subjects_served(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    only = set(p.indicators.get("enterprise_products") or [])
    mine = {str(x.id) for x in _operator_products(session, p) if not only or x.code in only}
    events = [e for e in _events(session, p, ("product.call",)) if e.object_id in mine]
    keys = {details_of(e).get("subject_key") for e in events} - {None}
    return len(keys), _sources("audit product.call events in period for the operator's products"
                               + (f" among {sorted(only)}" if only else "") + "; distinct details.subject_key",
                               [f"audit:{e.seq}" for e in events], len(events))


def _disbursed_at(m: FinancingMatch) -> datetime | None:
    for step in m.history:
        if step.get("to") == "disbursed":
            return datetime.fromisoformat(step["at"]).replace(tzinfo=None)
    return None


def financing_disbursed(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    matches = [m for m in session.exec(select(FinancingMatch).where(FinancingMatch.state == "disbursed")
                                       .order_by(FinancingMatch.id)) if p.has(_disbursed_at(m))]  # type: ignore[arg-type]
    requests = sorted({m.request_id for m in matches})
    return len(requests), _sources("sme_financing_match: state = disbursed, history step to disbursed in period; "
                                   "distinct request_id", requests, len(requests))


def public_governance_calls(session: Session, p: Period) -> tuple[float, dict[str, Any]]:
    public = {x.id for x in _operator_products(session, p) if x.category in ("public_governance", "public_welfare")}
    rows = [r for r in session.exec(select(UsageRecord).where(UsageRecord.at >= p.start, UsageRecord.at < p.end)
                                    .order_by(UsageRecord.id)) if r.product_id in public]  # type: ignore[arg-type]
    return len(rows), _sources("billing_usage: product of the operator with category public_governance or "
                               "public_welfare, at in period; count", [int(r.id or 0) for r in rows], len(rows))


@dataclass(frozen=True)
class Metric:
    key: str
    name_zh: str
    name_en: str
    unit: str
    compute: Callable[[Session, Period], tuple[float, dict[str, Any]]]


METRICS: dict[str, Metric] = {m.key: m for m in [
    Metric("products", "产品数量", "Products registered", "products", products),
    Metric("scenarios", "场景数量", "Scenarios approved", "scenarios", scenarios),
    Metric("security_compliance", "安全合规率", "Security compliance rate", "%", security_compliance),
    Metric("satisfaction", "用户满意度", "User satisfaction", "1-5", satisfaction),
    Metric("revenue", "营业收入", "Operating revenue", "fen", revenue),
    Metric("social.subjects_served", "服务企业数（社会效益）", "Subjects served (social benefit)", "subjects",
           subjects_served),
    Metric("social.financing_disbursed", "促成融资笔数（社会效益）", "Financing disbursed (social benefit)",
           "requests", financing_disbursed),
    Metric("social.public_governance_calls", "公共治理调用次数（社会效益）",
           "Public-governance calls (social benefit)", "calls", public_governance_calls),
]}


def score(value: float, target: float) -> float:
    """A metric's score out of 100: value / target, capped at 100."""
    return round(min(100.0, 100.0 * value / target), 2)
