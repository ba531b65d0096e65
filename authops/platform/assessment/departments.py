"""The yearly assessment of provider departments (BRIEF.md 9): timeliness, completeness and accuracy
of each department's data, from the catalogue's own figures, as percentages.

For a department and an Asia/Shanghai year (up to now when the year is still running):

* timeliness: each of its resources' update cycle (catalogue ``update_cycle``; real-time counts as
  daily) cuts the part of the year the resource existed into periods of that many days; timeliness
  is the share of periods, over all its resources, holding at least one succeeded load.
* completeness: 100 x (1 - mean null rate) over the datasets its loads produced in the year (each
  dataset's mean null rate over its fields, as recorded on load).
* accuracy: 100 x (1 - rows rejected / rows received) over its succeeded and rejected loads in the year.
* score: the mean of the three figures that exist (a figure without records is None).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from authops.core.clock import utcnow
from authops.core.data.schema import UpdateCycle
from authops.core.identity import OrgKind
from authops.platform.assessment.metrics import year_period
from authops.platform.catalog.models import DataResource, Dataset, IngestRun
from authops.platform.identity.models import Organisation


def _cycle_days(cycle: str) -> float:
    return max(UpdateCycle(cycle).days, 1.0)


def _timeliness(res: DataResource, runs: list[IngestRun], start: datetime, end: datetime) -> tuple[int, int]:
    """(periods with a succeeded load, periods) for one resource in [start, end)."""
    begin = max(start, res.created_at)
    if begin >= end:
        return 0, 0
    days = _cycle_days(res.update_cycle)
    n = math.ceil((end - begin).total_seconds() / (days * 86400))
    hit = {int((r.finished_at - begin).total_seconds() // (days * 86400))
           for r in runs if r.state == "succeeded" and r.finished_at is not None and begin <= r.finished_at < end}
    return len(hit & set(range(n))), n


def department_row(session: Session, org: Organisation, year: int, now: datetime | None = None) -> dict[str, Any]:
    start, end = year_period(year)
    end = min(end, now or utcnow())
    resources = list(session.exec(select(DataResource).where(DataResource.org_id == org.id)
                                  .order_by(DataResource.id)))  # type: ignore[arg-type]
    runs = [r for r in session.exec(select(IngestRun).where(IngestRun.org_id == org.id).order_by(IngestRun.id))  # type: ignore[arg-type]
            if start <= r.created_at < end and r.state in ("succeeded", "rejected")]
    on_time = periods = 0
    for res in resources:
        hit, n = _timeliness(res, [r for r in runs if r.resource_id == res.id], start, end)
        on_time, periods = on_time + hit, periods + n
    made = [d for d in session.exec(select(Dataset).where(Dataset.load_id.in_([r.id for r in runs])))  # type: ignore[union-attr]
            ] if runs else []
    fills = [1 - sum(n.values()) / len(n) for d in made if (n := (d.quality or {}).get("null_rate"))]
    received = sum(r.rows_received for r in runs)
    rejected = sum(r.rows_rejected for r in runs)
    timeliness = round(100.0 * on_time / periods, 2) if periods else None
    completeness = round(100.0 * sum(fills) / len(fills), 2) if fills else None
    accuracy = round(100.0 * (1 - rejected / received), 2) if received else None
    present = [x for x in (timeliness, completeness, accuracy) if x is not None]
    return {"org": org.id, "code": org.code, "name_zh": org.name_zh, "timeliness": timeliness,
            "completeness": completeness, "accuracy": accuracy,
            "score": round(sum(present) / len(present), 2) if present else None,
            "sources": {"resources": [r.code for r in resources], "periods": periods, "periods_on_time": on_time,
                        "ingest_runs": [r.id for r in runs], "datasets": [d.id for d in made],
                        "rows_received": received, "rows_rejected": rejected}}


def table(session: Session, year: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per provider department, in code order."""
    orgs = session.exec(select(Organisation).where(Organisation.kind == OrgKind.PROVIDER.value)
                        .order_by(Organisation.code))  # type: ignore[arg-type]
    return [department_row(session, org, year, now) for org in orgs]
