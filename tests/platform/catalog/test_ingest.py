"""Loading data: whole batches or nothing, immutable encrypted versions, quality figures."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.data import datasets as ds_store
from authops.core.data.schema import FieldSpec, Grade, Kind, ResourceSchema
from authops.core.errors import InvalidInput
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest, service
from authops.platform.catalog.models import Dataset, IngestRun
from tests.support.builders import make_org
from tests.support.catalog import ACTOR, IDS, NAMES, PERSON_SCHEMA, PHONES, make_resource, person_rows

from authops.platform.catalog.csvload import BUILTIN  # noqa: E402 - the same annex, vendored

SHARED = Path(__file__).resolve().parents[4] / "shared" / "catalog"
CATALOG = SHARED if SHARED.is_dir() else BUILTIN


def _load(session, settings, res, raw, mode="replace"):
    run = ingest.new_run(session, res, path="bulk", mode=mode, actor=ACTOR)
    run = ingest.load(session, get_object_store(settings), res, raw, run=run, actor=ACTOR)
    session.commit()
    return run


def _read(settings, session, res) -> pa.Table:
    ds = session.get(Dataset, res.dataset_id)
    return ds_store.read_dataset(get_object_store(settings), ds.object_key)


def test_the_plans_catalogue_loads_and_reloads(session):
    counts = service.load_catalog(session, CATALOG, actor=ACTOR)
    session.commit()
    assert (counts["resources"], counts["registered"]) == (53, 53)
    assert counts["departments"] == 13  # the annex names 13 distinct departments (see the issue note)
    tax = service.get_resource(session, "enterprise_tax")
    schema = service.schema_of(session, tax)
    assert schema.privacy_unit.value == "enterprise" and schema.key == ("uscc", "tax_period")
    assert schema.field("uscc").check.value == "gb32100" and tax.grade == "L3"
    again = service.load_catalog(session, CATALOG, actor=ACTOR)
    assert (again["registered"], again["unchanged"]) == (0, 53)


def test_replace_then_upsert_make_new_immutable_versions(session, db_settings):
    res = make_resource(session, make_org(session, OrgKind.PROVIDER))
    first = _load(session, db_settings, res, person_rows(3))
    assert first.state == "succeeded" and _read(db_settings, session, res).num_rows == 3
    v1 = session.get(Dataset, res.dataset_id)
    change = pa.table({"id_number": [IDS[2], IDS[3]], "paid": ["1.00", "2.00"]})
    second = _load(session, db_settings, res, change, mode="upsert")
    assert second.state == "succeeded"
    t = _read(db_settings, session, res).to_pandas().set_index("id_number")
    assert len(t) == 4 and t.loc[IDS[2], "paid"] == 100 and t.loc[IDS[0], "paid"] == 123456
    # the first version is still there, unchanged
    assert ds_store.read_dataset(get_object_store(db_settings), v1.object_key).num_rows == 3
    assert [d.version for d in service.datasets(session, res)] == [2, 1]


def test_datasets_are_ciphertext_at_rest(session, db_settings):
    res = make_resource(session, make_org(session, OrgKind.PROVIDER))
    _load(session, db_settings, res, person_rows())
    blobs = b"".join(p.read_bytes() for p in Path(db_settings.data_dir).rglob("*") if p.is_file()
                     and "sqlite" not in p.name)
    assert blobs and b"PAR1" not in blobs
    for value in [*IDS, *NAMES, *PHONES]:
        assert value.encode() not in blobs


def test_a_rejected_batch_stores_nothing_and_counts_against_accuracy(session, db_settings):
    res = make_resource(session, make_org(session, OrgKind.PROVIDER))
    _load(session, db_settings, res, person_rows(2))
    before = get_object_store(db_settings).list("datasets/")
    bad = person_rows().set_column(0, "id_number", pa.array([IDS[0], IDS[1][:-1] + "9", IDS[2], IDS[3]]))
    run = _load(session, db_settings, res, bad)
    assert run.state == "rejected" and run.rows_rejected == 1 and run.report["errors"][0]["row"] == 2
    assert get_object_store(db_settings).list("datasets/") == before
    assert session.get(Dataset, res.dataset_id).version == 1
    q = service.quality(session, res)
    assert q["rows"] == 2 and q["rows_received"] == 6 and q["rows_rejected"] == 1
    assert q["accuracy"] == round(1 - 1 / 6, 4) and q["loads_rejected"] == 1
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "data.ingest")).all()
    assert [(e.outcome, e.rows) for e in events] == [("ok", 2), ("error", 4)]


def test_completeness_and_timeliness(session, db_settings):
    res = make_resource(session, make_org(session, OrgKind.PROVIDER))
    assert service.quality(session, res)["timeliness"]["status"] == "never_loaded"
    _load(session, db_settings, res, pa.table({"id_number": IDS, "name": NAMES}))
    q = service.quality(session, res)
    assert q["timeliness"]["status"] == "on_time"
    assert q["null_rate"]["phone"] == 1.0 and q["null_rate"]["name"] == 0.0
    assert q["completeness"] == round(1 - 4 / 6, 4)  # 2 of 6 fields filled
    late = service.timeliness(res, utcnow() + timedelta(days=40))  # a monthly resource 40 days on
    assert late["status"] == "late" and late["days_late"] >= 8


def test_a_breaking_schema_change_keeps_old_data_readable(session, db_settings):
    res = make_resource(session, make_org(session, OrgKind.PROVIDER))
    _load(session, db_settings, res, person_rows())
    fields = [f for f in PERSON_SCHEMA.fields if f.name != "phone"]
    fields.append(FieldSpec(name="paid_on", name_zh="缴费时间", kind=Kind.DATETIME, grade=Grade.L4))
    new = ResourceSchema(fields=tuple(f for f in fields if not (f.name == "paid_on" and f.kind == Kind.DATE)),
                         key=("id_number",), privacy_unit="person", unit_field="id_number")
    row = service.change_schema(session, res, new, actor=ACTOR)
    session.commit()
    assert row.version == 2 and row.breaking and "phone" in row.note and "retyped" in row.note
    old = session.get(Dataset, res.dataset_id)
    assert old.schema_version == 1
    assert ds_store.read_dataset(get_object_store(db_settings), old.object_key).column_names == PERSON_SCHEMA.names
    with pytest.raises(InvalidInput, match="replace"):
        _load(session, db_settings, res, pa.table({"id_number": IDS[:1]}), mode="upsert")
    session.rollback()
    run = _load(session, db_settings, res, pa.table({"id_number": IDS[:2], "paid_on": ["2025-01-01 09:00"] * 2}))
    assert run.state == "succeeded" and session.get(Dataset, res.dataset_id).schema_version == 2
    assert service.change_schema(session, res, new, actor=ACTOR) is None  # no change, no version


def test_upsert_needs_a_key(session):
    schema = ResourceSchema(fields=(FieldSpec(name="notice", name_zh="公告", kind=Kind.TEXT, grade=Grade.L1),))
    res = make_resource(session, make_org(session, OrgKind.PROVIDER), schema=schema)
    with pytest.raises(InvalidInput, match="replaced whole"):
        ingest.new_run(session, res, path="bulk", mode="upsert", actor=ACTOR)
    assert session.exec(select(IngestRun)).all() == []


def test_sources_are_pulled_on_their_declared_cycle(session, db_settings):
    from authops.core.jobs.models import Job
    from authops.platform.catalog import tasks
    from authops.platform.catalog.models import IngestSource

    res = make_resource(session, make_org(session, OrgKind.PROVIDER))  # monthly
    src = tasks.add_source(session, db_settings, res, kind="api", config={"url": "http://127.0.0.1:9/x"},
                           incremental=False, updated_column=None, actor=ACTOR, display="http://127.0.0.1:9/x")
    session.commit()
    assert tasks.schedule_due(db_settings) == 1  # a new source is pulled at once
    assert tasks.schedule_due(db_settings) == 0  # and not again until its cycle comes round
    session.expire_all()
    src = session.get(IngestSource, src.id)
    assert timedelta(days=30) < src.next_run_at - utcnow() <= timedelta(days=31)
    jobs_ = session.exec(select(Job).where(Job.kind == "catalog.pull")).all()
    assert [j.params for j in jobs_] == [{"source_id": src.id}] and jobs_[0].org_id == res.org_id
    assert tasks.open_config(db_settings, src.config_sealed, f"ingest-source:{res.code}")["url"].endswith("/x")
    assert b"127.0.0.1" not in src.config_sealed  # the settings are sealed
