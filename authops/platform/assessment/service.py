"""The annual assessment of the operator and its consequences (BRIEF.md 9, 2, 3).

Settings: the bureau sets, per year, each metric's weight and target (metrics.METRICS), the
expert scores' weight and the grade thresholds. A metric scores min(100, 100 x value / target);
the total is the weighted mean of the metric scores and, when expert_weight > 0, the mean expert
score:  total = (sum(w_i x s_i) + w_e x mean(expert)) / (sum(w_i) + w_e).  The grade is
excellent when total >= excellent, qualified when total >= qualified, else unqualified. Raising a
weight of a metric that scores below the total lowers the total; raising a threshold above the
total lowers the grade (the property tests check both).

Lifecycle: run (a draft, computed after the year has ended; may be run again while a draft) ->
expert scores -> sign. Signing is the bureau's decision: the platform's Ed25519 audit key signs the
canonical JSON of the result (year, operator, period, settings, metrics with their sources, expert
scores, total, grade, signer, time); `verify` checks it. A signed assessment never changes.

Consequences, applied in the signing transaction through the operator lifecycle
(governance.operator):

* an annual result is recorded as the operator fact ``assessment_<grade>`` for the year; two
  unqualified years in total veto renewal (operator.vetoes, applied to open renewals at once);
* an unqualified annual result opens a rectification: the plan is due 30 calendar days after the
  signing date (Asia/Shanghai; the plan says 30 days, not working days);
* two consecutive unqualified years: forced exit for failing assessment (operator.force_exit,
  which exits the agreement and bans the organisation for Settings.operator_ban_years);
* the re-assessment runs once the plan is submitted, or once its due date has passed (then without
  a plan it is unqualified whatever its score: "no rectification plan filed within 30 days"); it
  measures the 12 months up to the re-assessment against the assessed year's settings;
* an unqualified re-assessment is recorded as the fact ``reassessment_unqualified`` and terminates
  the authorization with the ban (operator.force_exit, cause failed_assessment).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.audit.signing import key_id_of, load_signing_keys
from authops.core.clock import utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings, get_settings
from authops.platform.assessment import metrics
from authops.platform.assessment.models import Assessment, Rectification, YearSettings
from authops.platform.governance import notifications, operator, workdays
from authops.platform.governance.models import Case
from authops.platform.identity.models import Organisation

ActorLike = audit_log.Actor | Principal

GRADES = {"excellent": "优秀", "qualified": "合格", "unqualified": "不合格"}
RECTIFICATION_DAYS = 30  # calendar days (整改方案30日内提交)
REASSESSMENT_FACT = "reassessment_unqualified"
MAX_EXPERT_COMMENT = 2000


# --- settings -----------------------------------------------------------------------------------------
def set_year_settings(session: Session, *, actor: ActorLike, year: int, metrics_: dict[str, dict[str, float]],
                      excellent: float, qualified: float, expert_weight: float = 0.0,
                      indicators: dict[str, Any] | None = None) -> YearSettings:
    """The bureau sets the year's weights, targets and thresholds (refused once the year is signed)."""
    who = audit_log.as_actor(actor)
    if not 2000 <= year <= 2100:
        raise InvalidInput("year must be between 2000 and 2100", details={"field": "year"})
    clean: dict[str, dict[str, float]] = {}
    for key, conf in (metrics_ or {}).items():
        if key not in metrics.METRICS:
            raise InvalidInput(f"metrics.{key}: unknown metric; one of {', '.join(metrics.METRICS)}",
                               details={"field": f"metrics.{key}"})
        weight, target = float(conf.get("weight", 0)), float(conf.get("target", 0))
        if weight < 0:
            raise InvalidInput(f"metrics.{key}.weight must not be negative", details={"field": f"metrics.{key}.weight"})
        if target <= 0:
            raise InvalidInput(f"metrics.{key}.target must be greater than 0", details={"field": f"metrics.{key}.target"})
        clean[key] = {"weight": weight, "target": target}
    if not any(c["weight"] > 0 for c in clean.values()):
        raise InvalidInput("give at least one metric a weight above 0", details={"field": "metrics"})
    if expert_weight < 0:
        raise InvalidInput("expert_weight must not be negative", details={"field": "expert_weight"})
    if not 0 < qualified < excellent <= 100:
        raise InvalidInput("thresholds must satisfy 0 < qualified < excellent <= 100", details={"field": "qualified"})
    signed = session.exec(select(Assessment).where(Assessment.year == year, Assessment.state == "signed")).first()
    if signed is not None:
        raise Conflict(f"the {year} assessment is signed; its settings can no longer change", code="year_signed")
    row = session.exec(select(YearSettings).where(YearSettings.year == year)).first() or YearSettings(year=year)
    row.metrics, row.excellent, row.qualified, row.expert_weight = clean, excellent, qualified, expert_weight
    row.indicators = dict(indicators or {})
    row.updated_by, row.updated_at = who.name[:64], utcnow()
    session.add(row)
    session.flush()
    audit_log.record(session, who, "assessment.settings.set", object_type="assessment_year", object_id=year,
                     details={"metrics": sorted(clean), "excellent_x100": round(excellent * 100),
                              "qualified_x100": round(qualified * 100)})
    return row


def year_settings(session: Session, year: int) -> YearSettings:
    row = session.exec(select(YearSettings).where(YearSettings.year == year)).first()
    if row is None:
        raise Conflict(f"no weights and thresholds are set for {year}: the bureau sets them first "
                       f"(PUT /assessment/years/{year}/settings)", code="no_settings", details={"year": year})
    return row


def settings_view(row: YearSettings) -> dict[str, Any]:
    return {"year": row.year, "metrics": row.metrics, "expert_weight": row.expert_weight,
            "excellent": row.excellent, "qualified": row.qualified, "indicators": row.indicators,
            "updated_by": row.updated_by, "updated_at": row.updated_at}


# --- computing ----------------------------------------------------------------------------------------
def grade_of(total: float, excellent: float, qualified: float) -> str:
    return "excellent" if total >= excellent else "qualified" if total >= qualified else "unqualified"


def total_of(metric_rows: list[dict[str, Any]], expert_scores: list[dict[str, Any]], expert_weight: float) -> float:
    num = sum(m["weight"] * m["score"] for m in metric_rows)
    den = sum(m["weight"] for m in metric_rows)
    if expert_weight > 0 and expert_scores:
        num += expert_weight * sum(e["score"] for e in expert_scores) / len(expert_scores)
        den += expert_weight
    return round(num / den, 2) if den else 0.0


def _compute(session: Session, a: Assessment, conf: YearSettings) -> None:
    period = metrics.Period(a.period_start, a.period_end, a.operator_org_id, conf.indicators)
    rows = []
    for key, c in conf.metrics.items():
        m = metrics.METRICS[key]
        value, sources = m.compute(session, period)
        rows.append({"key": key, "name_zh": m.name_zh, "name_en": m.name_en, "value": value, "unit": m.unit,
                     "weight": c["weight"], "threshold": c["target"], "score": metrics.score(value, c["target"]),
                     "sources": sources})
    a.settings = settings_view(conf) | {"updated_at": str(conf.updated_at)}
    a.metrics = rows
    _regrade(a)
    a.computed_at = utcnow()


def _regrade(a: Assessment) -> None:
    s = a.settings
    a.total_score = total_of(a.metrics, a.expert_scores, float(s["expert_weight"]))
    a.grade = "unqualified" if a.grade_reason else grade_of(a.total_score, float(s["excellent"]),
                                                            float(s["qualified"]))


def _operator(session: Session, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or OrgKind(org.kind) is not OrgKind.OPERATOR:
        raise InvalidInput(f"organisation {org_id} is not an operator", details={"field": "operator_org_id"})
    return org


def run(session: Session, *, actor: ActorLike, operator_org_id: int, year: int, now: datetime | None = None
        ) -> Assessment:
    """Compute (or recompute, while a draft) the annual assessment of `year`, after the year has ended."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    _operator(session, operator_org_id)
    start, end = metrics.year_period(year)
    if now < end:
        raise Conflict(f"the {year} assessment runs after the year has ended (from {year + 1}-01-01)",
                       code="year_not_ended", details={"field": "year"})
    conf = year_settings(session, year)
    a = session.exec(select(Assessment).where(Assessment.year == year, Assessment.operator_org_id == operator_org_id,
                                              Assessment.kind == "annual")).first()
    if a is not None and a.state == "signed":
        raise Conflict(f"the {year} assessment of organisation {operator_org_id} is signed (assessment {a.id})",
                       code="already_signed", details={"assessment": a.id})
    a = a or Assessment(year=year, operator_org_id=operator_org_id, kind="annual", period_start=start,
                        period_end=end, created_by=who.name[:64])
    _compute(session, a, conf)
    session.add(a)
    session.flush()
    audit_log.record(session, who, "assessment.run", object_type="assessment", object_id=a.id,
                     details={"year": year, "operator": operator_org_id, "kind": a.kind, "grade": a.grade,
                              "total_x100": round(a.total_score * 100)})
    return a


def get(session: Session, assessment_id: int) -> Assessment:
    a = session.get(Assessment, assessment_id)
    if a is None:
        raise NotFound(f"no assessment {assessment_id}")
    return a


def _draft(a: Assessment) -> None:
    if a.state != "draft":
        raise Conflict(f"assessment {a.id} is signed and can no longer change", code="already_signed")


def add_expert_score(session: Session, a: Assessment, *, actor: ActorLike, expert: str, score: float,
                     comment: str = "") -> Assessment:
    """The bureau records one expert's score (0-100) with a comment; a second score by the same expert replaces it."""
    who = audit_log.as_actor(actor)
    _draft(a)
    expert = (expert or "").strip()
    if not expert:
        raise InvalidInput("name the expert", details={"field": "expert"})
    if not 0 <= score <= 100:
        raise InvalidInput("an expert score is from 0 to 100", details={"field": "score"})
    if len(comment or "") > MAX_EXPERT_COMMENT:
        raise InvalidInput(f"the comment is longer than {MAX_EXPERT_COMMENT} characters", details={"field": "comment"})
    scores = [e for e in a.expert_scores if e["expert"] != expert]
    a.expert_scores = [*scores, {"expert": expert[:100], "score": float(score), "comment": (comment or "").strip()}]
    _regrade(a)
    session.add(a)
    session.flush()
    audit_log.record(session, who, "assessment.expert_score", object_type="assessment", object_id=a.id,
                     details={"expert": expert[:100], "score_x100": round(score * 100)})
    return a


# --- signing ------------------------------------------------------------------------------------------
def body(a: Assessment) -> bytes:
    """The canonical JSON the signature covers."""
    doc = {"assessment": a.id, "year": a.year, "operator_org_id": a.operator_org_id, "kind": a.kind,
           "parent_id": a.parent_id, "period": [a.period_start.isoformat(), a.period_end.isoformat()],
           "settings": a.settings, "metrics": a.metrics, "expert_scores": a.expert_scores,
           "total_score": a.total_score, "grade": a.grade, "grade_reason": a.grade_reason,
           "signed_by": a.signed_by, "signed_at": a.signed_at.isoformat() if a.signed_at else None}
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def verify(a: Assessment, settings: Settings | None = None) -> bool:
    """True when the signature matches the stored result under one of the platform's signing keys."""
    if a.state != "signed":
        return False
    for key in load_signing_keys(settings or get_settings()):
        public = key.private.public_key()
        if key_id_of(public) != a.key_id:
            continue
        try:
            public.verify(base64.b64decode(a.signature), body(a))
            return True
        except Exception:  # cryptography's InvalidSignature
            return False
    return False


def sign(session: Session, a: Assessment, *, actor: ActorLike, now: datetime | None = None,
         settings: Settings | None = None) -> Assessment:
    """The bureau signs the result; the consequences (module docstring) follow in the same transaction."""
    settings = settings or get_settings()
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    _draft(a)
    if float(a.settings.get("expert_weight", 0)) > 0 and not a.expert_scores:
        raise Conflict(f"the {a.year} settings give expert scores a weight: add the experts' scores before signing",
                       code="expert_scores_missing", details={"field": "expert_scores"})
    a.state, a.signed_by, a.signed_at = "signed", who.name[:64], now
    data = body(a)
    key = load_signing_keys(settings)[0]
    a.body_sha256 = hashlib.sha256(data).hexdigest()
    a.signature = base64.b64encode(key.sign(data)).decode()
    a.key_id = key.key_id
    session.add(a)
    session.flush()
    audit_log.record(session, who, "assessment.sign", object_type="assessment", object_id=a.id,
                     details={"year": a.year, "kind": a.kind, "grade": a.grade, "sha256": a.body_sha256,
                              "key_id": a.key_id})
    a.consequences = _consequences(session, a, who, now, settings)
    session.add(a)
    session.flush()
    return a


def _consequences(session: Session, a: Assessment, who: audit_log.Actor, now: datetime,
                  settings: Settings) -> list[str]:
    if a.kind == "reassessment":
        return _after_reassessment(session, a, who, now, settings)
    return _after_annual(session, a, who, now, settings)


def _terminate(session: Session, a: Assessment, who: audit_log.Actor, now: datetime, settings: Settings,
               reasons: str) -> str:
    """Forced exit for failing assessment (operator.force_exit bans for Settings.operator_ban_years)."""
    if not _active(session, a, workdays.shanghai_date(now)):
        return "no authorization in force to terminate"
    case = operator.force_exit(session, operator_org_id=a.operator_org_id, cause="failed_assessment",
                               reasons=reasons, actor=who, now=now, settings=settings)
    return f"authorization terminated by forced exit {case.number}, banned for {settings.operator_ban_years} years"


def _after_reassessment(session: Session, a: Assessment, who: audit_log.Actor, now: datetime,
                        settings: Settings) -> list[str]:
    rect = session.exec(select(Rectification).where(Rectification.reassessment_id == a.id)).one()
    rect.state = "reassessed"
    session.add(rect)
    if a.grade != "unqualified":
        return [f"re-assessment {a.grade}: the rectification of assessment {a.parent_id} is accepted"]
    operator.record_fact(session, operator_org_id=a.operator_org_id, kind=REASSESSMENT_FACT, actor=who,
                         summary=f"{a.year} re-assessment {a.id} unqualified after rectification", year=a.year, now=now)
    return ["re-assessment unqualified: " + _terminate(
        session, a, who, now, settings, f"re-assessment {a.id} of {a.year} unqualified after rectification "
                                        "(整改后复评仍不合格)")]


def _after_annual(session: Session, a: Assessment, who: audit_log.Actor, now: datetime,
                  settings: Settings) -> list[str]:
    renewals = _open_renewals(session, a.operator_org_id)
    operator.record_fact(session, operator_org_id=a.operator_org_id, kind=f"assessment_{a.grade}", actor=who,
                         summary=f"{a.year} annual assessment {a.id}: {a.grade} ({a.total_score})", year=a.year,
                         now=now)
    out = [f"recorded assessment_{a.grade} for {a.year}"]
    out += [f"renewal {c.number} vetoed" for c in renewals if c.state == "vetoed"]
    if a.grade != "unqualified":
        return out
    due = workdays.shanghai_date(now) + timedelta(days=RECTIFICATION_DAYS)
    rect = Rectification(assessment_id=int(a.id or 0), operator_org_id=a.operator_org_id, due_on=due)
    session.add(rect)
    session.flush()
    notifications.notify(session, [a.operator_org_id], "rectification_due",
                         f"{a.year}年度评估不合格，请于{due}前提交整改方案 / {a.year} assessment unqualified: "
                         f"submit a rectification plan by {due}", due_at=workdays.end_of_day_utc(due))
    audit_log.record(session, who, "assessment.rectification.open", object_type="rectification", object_id=rect.id,
                     details={"assessment": a.id, "due_on": str(due)})
    out.append(f"rectification plan due on {due}")
    if _unqualified_years(session, a.operator_org_id) >= {a.year - 1, a.year}:
        out.append("two consecutive unqualified years: " + _terminate(
            session, a, who, now, settings, f"unqualified in {a.year - 1} and {a.year} (连续2年年度评估不合格)"))
    return out


def _unqualified_years(session: Session, org_id: int) -> set[int]:
    return {int(f.year) for f in operator.facts_of(session, org_id)
            if f.kind == "assessment_unqualified" and f.year is not None}


def _active(session: Session, a: Assessment, today: date) -> bool:
    try:
        operator.require_active_authorization(session, a.operator_org_id, today)
    except operator.NoActiveAuthorization:
        return False
    return True


def _open_renewals(session: Session, org_id: int) -> list[Case]:
    return list(session.exec(select(Case).where(Case.kind == operator.RENEWAL, Case.applicant_org_id == org_id,
                                                Case.state.in_(("draft", "submitted")))))  # type: ignore[attr-defined]


# --- rectification ------------------------------------------------------------------------------------
def rectification_of(session: Session, rect_id: int, principal: Principal | None = None) -> Rectification:
    rect = session.get(Rectification, rect_id)
    if rect is None or (principal is not None and rect.operator_org_id != principal.org_id):
        raise NotFound(f"no rectification {rect_id}")
    return rect


def submit_plan(session: Session, rect: Rectification, *, actor: ActorLike, plan: str,
                now: datetime | None = None) -> Rectification:
    """The operator submits its rectification plan, on or before the due date (Asia/Shanghai)."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    today = workdays.shanghai_date(now)
    plan = (plan or "").strip()
    if len(plan) < 20:
        raise InvalidInput("the rectification plan needs its measures in words (at least 20 characters)",
                           details={"field": "plan"})
    if rect.state != "due":
        raise Conflict(f"rectification {rect.id} is {rect.state}; the plan was already submitted",
                       code="already_submitted")
    if today > rect.due_on:
        raise Conflict(f"the rectification plan was due on {rect.due_on} ({RECTIFICATION_DAYS} days after the "
                       "assessment was signed); it can no longer be submitted", code="plan_overdue",
                       details={"due_on": str(rect.due_on)})
    rect.plan, rect.plan_sha256 = plan, hashlib.sha256(plan.encode()).hexdigest()
    rect.state, rect.submitted_by, rect.submitted_at = "submitted", who.name[:64], now
    session.add(rect)
    session.flush()
    audit_log.record(session, who, "assessment.rectification.submit", object_type="rectification",
                     object_id=rect.id, details={"assessment": rect.assessment_id, "sha256": rect.plan_sha256})
    return rect


def reassess(session: Session, rect: Rectification, *, actor: ActorLike, now: datetime | None = None) -> Assessment:
    """The bureau runs the re-assessment: the 12 months up to now, against the assessed year's settings."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    today = workdays.shanghai_date(now)
    parent = get(session, rect.assessment_id)
    if rect.state == "reassessed":
        raise Conflict(f"rectification {rect.id} was already re-assessed", code="already_reassessed")
    if rect.state == "due" and today <= rect.due_on:
        raise Conflict(f"the rectification plan is due on {rect.due_on}: re-assess once it is submitted or the "
                       "date has passed", code="plan_pending", details={"due_on": str(rect.due_on)})
    a = session.get(Assessment, rect.reassessment_id) if rect.reassessment_id else None
    if a is None:
        a = Assessment(year=parent.year, operator_org_id=parent.operator_org_id, kind="reassessment",
                       parent_id=parent.id, period_start=now - timedelta(days=365), period_end=now,
                       created_by=who.name[:64])
    _compute(session, a, year_settings(session, parent.year))
    if rect.state == "due":
        a.grade_reason = f"no rectification plan filed by {rect.due_on} (30 days)"
        _regrade(a)
    session.add(a)
    session.flush()
    rect.reassessment_id = a.id
    session.add(rect)
    audit_log.record(session, who, "assessment.reassess", object_type="assessment", object_id=a.id,
                     details={"parent": parent.id, "rectification": rect.id, "grade": a.grade})
    return a


def rectification_view(rect: Rectification) -> dict[str, Any]:
    return {"id": rect.id, "assessment_id": rect.assessment_id, "operator_org_id": rect.operator_org_id,
            "due_on": rect.due_on, "state": rect.state, "plan_sha256": rect.plan_sha256 or None,
            "submitted_at": rect.submitted_at, "reassessment_id": rect.reassessment_id}
