"""Figures for the console's charts, read from the platform's own records (no new data is kept).

- `review_throughput`: scenario applications decided (approved, rejected, withdrawn) per week or per
  month, from the cases' transition history (Asia/Shanghai calendar);
- `review_timeliness`: per review level (provider department, expert committee, bureau), the mean
  and the longest working days a stage took, against its deadline (settings.review_*_working_days);
  a stage still open counts up to now, so a late queue shows before it is decided;
- `department_quality`: the provider department's timeliness, completeness and accuracy for the year
  (authops.platform.assessment.departments, the figures the bureau's assessment uses).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from authops.core.clock import to_shanghai, utcnow
from authops.core.settings import Settings
from authops.platform.assessment import departments
from authops.platform.governance import scenarios, workdays
from authops.platform.governance.models import Case, CaseTransition
from authops.platform.identity.models import Organisation

LEVELS = ("provider", "expert", "bureau")  # scenarios.STAGES' values, in review order
STAGE_OF = {state: level for state, level in scenarios.STAGES.items()}
DECIDED = scenarios.MACHINE.final


def _transitions(session: Session, case_ids: list[int] | None = None) -> list[CaseTransition]:
    q = (select(CaseTransition).join(Case, Case.id == CaseTransition.case_id)
         .where(Case.kind == scenarios.KIND).order_by(CaseTransition.case_id, CaseTransition.seq))
    if case_ids is not None:
        q = q.where(CaseTransition.case_id.in_(case_ids))  # type: ignore[attr-defined]
    return list(session.exec(q))


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def review_throughput(session: Session, *, per: str = "week", periods: int = 8,
                      now: datetime | None = None) -> list[tuple[str, float]]:
    """Applications decided per week (Monday's date) or per month (YYYY-MM), the last `periods` of them."""
    today = to_shanghai(now or utcnow()).date()
    if per == "month":
        keys = []
        y, m = today.year, today.month
        for _ in range(periods):
            keys.append(f"{y}-{m:02d}")
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        keys.reverse()
    else:
        first = _week_start(today)
        keys = [(first - timedelta(weeks=i)).strftime("%m-%d") for i in reversed(range(periods))]
    counts: Counter[str] = Counter()
    for t in _transitions(session):
        if t.to_state not in DECIDED or t.from_state in DECIDED:
            continue
        day = to_shanghai(t.at).date()
        counts[day.strftime("%Y-%m") if per == "month" else _week_start(day).strftime("%m-%d")] += 1
    return [(k, float(counts.get(k, 0))) for k in keys]


def _deadlines(settings: Settings) -> dict[str, int]:
    return {"provider": settings.review_provider_working_days, "expert": settings.review_expert_working_days,
            "bureau": settings.review_bureau_working_days}


def review_timeliness(session: Session, settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per review level: stage visits, mean and longest working days taken, the deadline, visits past it."""
    now = now or utcnow()
    taken: dict[str, list[int]] = defaultdict(list)
    entered: dict[tuple[int, str], datetime] = {}
    for t in _transitions(session):
        before, after = STAGE_OF.get(t.from_state), STAGE_OF.get(t.to_state)
        if before == after:
            continue  # an expert's vote: the stage goes on
        if before is not None and (t.case_id, before) in entered:
            start = entered.pop((t.case_id, before))
            taken[before].append(workdays.working_days_between(workdays.shanghai_date(start),
                                                               workdays.shanghai_date(t.at)))
        if after is not None:
            entered[(t.case_id, after)] = t.at
    for (_, level), start in entered.items():  # stages still open count up to now
        taken[level].append(workdays.working_days_between(workdays.shanghai_date(start),
                                                           workdays.shanghai_date(now)))
    limits = _deadlines(settings)
    out = []
    for level in LEVELS:
        days = taken.get(level, [])
        out.append({"level": level, "visits": len(days), "deadline": limits[level],
                    "mean": round(sum(days) / len(days), 1) if days else 0.0, "longest": max(days, default=0),
                    "late": sum(1 for d in days if d > limits[level])})
    return out


def department_quality(session: Session, org: Organisation, now: datetime | None = None) -> dict[str, Any]:
    """This year's timeliness, completeness and accuracy (percent, None without records) of the department."""
    year = to_shanghai(now or utcnow()).year
    row = departments.department_row(session, org, year, now)
    return {"year": year, "timeliness": row["timeliness"], "completeness": row["completeness"],
            "accuracy": row["accuracy"], "score": row["score"], "periods": row["sources"]["periods"],
            "periods_on_time": row["sources"]["periods_on_time"]}
