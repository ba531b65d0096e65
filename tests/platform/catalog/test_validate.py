"""Row validation: every rule rejects the batch whole, names row/column/rule, never the value."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from authops.platform.catalog.report import IngestRejected
from authops.platform.catalog.validate import validate
from tests.support.catalog import IDS, NAMES, PERSON_SCHEMA, PHONES, person_rows


def _reject(raw: pa.Table, first_row: int = 2) -> dict:
    with pytest.raises(IngestRejected) as info:
        validate(PERSON_SCHEMA, raw, first_row=first_row)
    text = info.value.message + json.dumps(info.value.details, ensure_ascii=False)
    for secret in [*IDS, *NAMES, *PHONES, "110105194912310021", "13912345670X"]:
        assert secret not in text, "a rejection report echoed a value"
    return info.value.details


def _with(column: str, values: list) -> pa.Table:
    t = person_rows()
    return t.set_column(t.column_names.index(column), column, pa.array(values))


def test_a_valid_batch_converts_to_the_stored_types():
    t = validate(PERSON_SCHEMA, person_rows())
    assert t.schema.field("paid").type == pa.int64() and t.schema.field("paid_on").type == pa.date32()
    assert t.column("paid").to_pylist() == [123456, 1000, 50, 9999999]  # fen, exactly
    assert t.column("paid_on").to_pylist()[0] == date(2025, 1, 31)
    assert t.column("id_number").to_pylist()[0] == "11010519491231002X"


def test_a_wrong_check_digit_names_the_row_and_rule():
    d = _reject(_with("id_number", [IDS[0], "110105194912310021", IDS[2], IDS[3]]))
    assert d["errors"] == [{"row": 3, "column": "id_number", "rule": "check", "message": d["errors"][0]["message"]}]
    assert "GB 11643" in d["errors"][0]["message"]


def test_missing_required_value_and_missing_required_column():
    d = _reject(_with("id_number", [IDS[0], None, "  ", IDS[3]]))
    assert {(e["row"], e["rule"]) for e in d["errors"]} == {(3, "required"), (4, "required")}
    d = _reject(person_rows().drop_columns(["id_number"]))
    assert d["errors"][0]["rule"] == "header" and d["errors"][0]["column"] == "id_number"


def test_wrong_types_enums_and_impossible_dates():
    raw = _with("paid", ["12.345", "abc", "1e3", "10"])
    raw = raw.set_column(raw.column_names.index("sex"), "sex", pa.array(["男", "M", "女", "女"]))
    raw = raw.set_column(raw.column_names.index("paid_on"), "paid_on",
                         pa.array(["2025-02-30", "2025-13-01", "2025/3/1", "2025-04-30"]))
    d = _reject(raw)
    got = {(e["row"], e["column"], e["rule"]) for e in d["errors"]}
    assert got == {(2, "paid", "type"), (3, "paid", "type"), (4, "paid", "type"), (3, "sex", "enum"),
                   (2, "paid_on", "type"), (3, "paid_on", "type")}
    assert d["error_count"] == 6 and d["rows_rejected"] == 3


def test_duplicate_keys_point_at_the_first_row():
    d = _reject(_with("id_number", [IDS[0], IDS[1], IDS[0], IDS[3]]), first_row=3)
    (e,) = d["errors"]
    assert (e["row"], e["rule"]) == (5, "duplicate_key") and "row 3" in e["message"]


def test_unknown_columns_are_refused():
    d = _reject(person_rows().append_column("salary", pa.array(["1"] * 4)))
    assert d["errors"][0]["rule"] == "header" and "salary" in d["errors"][0]["message"]


def test_the_report_lists_100_errors_but_counts_all():
    n = 5000
    raw = pa.table({"id_number": [IDS[0][:-1] + "1"] * n})
    with pytest.raises(IngestRejected) as info:
        validate(PERSON_SCHEMA, raw)
    d = info.value.details
    assert len(d["errors"]) == 100 and d["error_count"] >= n


def test_typed_database_values_convert_without_a_text_round_trip():
    raw = pa.table({"id_number": pa.array(IDS[:2]), "paid": pa.array([12, 3], pa.int64()),
                    "paid_on": pa.array([date(2025, 1, 1), date(2025, 2, 1)])})
    t = validate(PERSON_SCHEMA, raw)
    assert t.column("paid").to_pylist() == [1200, 300]  # whole yuan to fen
    assert t.column("paid_on").to_pylist() == [date(2025, 1, 1), date(2025, 2, 1)]
    assert t.column("name").null_count == 2  # optional columns missing from the source are null


def test_local_times_are_beijing_and_stored_utc():
    from authops.core.data.schema import FieldSpec, Grade, Kind, ResourceSchema

    schema = ResourceSchema(fields=(FieldSpec(name="at", name_zh="时间", kind=Kind.DATETIME, grade=Grade.L2),))
    t = validate(schema, pa.table({"at": ["2025-03-01 08:00:00", "2025-03-01T08:00:00Z", "2025-03-01 08:00"]}))
    assert t.column("at").to_pylist() == [datetime(2025, 3, 1, 0, 0, tzinfo=timezone.utc),
                                          datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc),
                                          datetime(2025, 3, 1, 0, 0, tzinfo=timezone.utc)]


def test_rows_are_numbered_as_in_the_users_sheet_even_after_blank_rows():
    from authops.platform.catalog.excel import RawBatch

    raw = _with("id_number", [IDS[0], IDS[1], IDS[2][:-1] + "9", IDS[3]])
    batch = RawBatch(table=raw, first_row=3, source="upload.xlsx", row_numbers=pa.array([3, 4, 7, 8]))
    with pytest.raises(IngestRejected) as info:
        validate(PERSON_SCHEMA, batch)
    assert [e["row"] for e in info.value.details["errors"]] == [7]
