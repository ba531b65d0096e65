"""Provider departments' yearly timeliness, completeness and accuracy from the catalogue's records."""

from __future__ import annotations

import math
from datetime import timedelta

from authops.core.clock import travelled, utcnow
from authops.platform.assessment import departments
from authops.platform.assessment.metrics import year_period
from authops.platform.catalog.models import Dataset, IngestRun
from tests.assessment import world
from tests.assessment.test_annual import into_next_year, this_year


def test_department_figures_follow_loads_rejects_and_fill_rates(session):
    w = world.build(session)
    res = world.resource(session, w, cycle="daily")
    start = res.created_at
    for i, (state, received, rejected) in enumerate([("succeeded", 100, 0), ("succeeded", 100, 0),
                                                     ("rejected", 50, 50), ("succeeded", 100, 0)]):
        run = IngestRun(resource_id=res.id, org_id=w.provider.id, path="csv", mode="replace", state=state,
                        rows_received=received, rows_rejected=rejected, created_at=start + timedelta(hours=1 + i),
                        finished_at=start + timedelta(hours=1 + i))
        session.add(run)
        session.flush()
        if state == "succeeded":
            session.add(Dataset(resource_id=res.id, version=i + 1, schema_version=1, object_key=f"k{i}", rows=received,
                                nbytes=1, sha256="0" * 64, load_id=run.id,
                                quality={"null_rate": {"a": 0.1, "b": 0.3}}))
    session.commit()
    year = this_year()
    with travelled(into_next_year()):
        [row] = departments.table(session, year)
    periods = math.ceil((year_period(year)[1] - start).total_seconds() / 86400)
    on_time = len({int((h * 3600) // 86400) for h in (1, 2, 4)})  # the succeeded loads' days
    assert row["org"] == w.provider.id
    assert row["sources"]["periods"] == periods and row["sources"]["periods_on_time"] == on_time
    assert row["timeliness"] == round(100 * on_time / periods, 2)
    assert row["completeness"] == 80.0
    assert row["accuracy"] == round(100 * (1 - 50 / 350), 2)
    assert row["score"] == round((row["timeliness"] + 80.0 + row["accuracy"]) / 3, 2)


def test_a_department_without_records_has_no_figures(session):
    w = world.build(session)
    [row] = departments.table(session, this_year(), now=utcnow())
    assert (row["org"], row["timeliness"], row["completeness"], row["accuracy"], row["score"]) == \
        (w.provider.id, None, None, None, None)
