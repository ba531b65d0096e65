"""Spec language additions for the products: pre-aggregating joins, filtered aggregates, labels on
verify/model outputs, post-processed aggregate columns, and concat/least/greatest/reasons/fixed."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from authops.core.data.schema import DType
from authops.sandbox import gate
from authops.sandbox.spec import JSON_SCHEMA, SpecError, build_plan, execute, lazy_outputs, load_spec
from authops.sandbox.spec.check import compile_expr
from authops.sandbox.spec.errors import ExprError
from tests.sandbox.test_spec import SCHEMAS

KEY = b"k" * 32
FIRMS = pa.table({"uscc": ["A", "B", "C"], "sector": ["farm", "mine", "shop"], "capital": [10, 20, 30]})
TAX = pa.table({"uscc": ["A", "A", "A", "B", "Z"], "period": pa.array([1, 2, 3, 1, 1], pa.int32()).cast(pa.date32()),
                "vat": [5, 7, 9, 11, 13], "flagged": [True, False, True, False, True]})


def _spec(steps, release, inputs=None) -> dict:
    return {"spec_version": 1, "name": "job",
            "inputs": inputs or [{"resource": "firms", "version": 1, "fields": ["uscc", "sector", "capital"]},
                                 {"resource": "tax", "version": 2, "fields": ["uscc", "vat", "flagged"]}],
            "steps": steps, "outputs": [{"name": "out", "release": release}]}


AGG_JOIN = {"join": {"input": "tax", "how": "left", "keys": ["uscc"], "aggregate": [
    {"name": "months", "fn": "count"}, {"name": "flagged_months", "fn": "count", "where": "flagged"},
    {"name": "vat_total", "fn": "sum", "column": "vat"}, {"name": "any_flag", "fn": "any", "column": "flagged"}]}}
SCORE = {"policy": "model", "key": "uscc", "score": "s", "bounds": [0, 100]}


def _fields():
    return {(code, f.name): f for code, (_, s) in SCHEMAS.items() for f in s.fields}


def test_schema_publishes_the_additions():
    defs = JSON_SCHEMA["$defs"]
    assert "aggregate" in defs["join"]["properties"] and "where" in defs["summary_aggregate"]["properties"]
    assert "labels" in defs["model"]["properties"] and "labels" in defs["verify"]["properties"]
    assert "post" in defs["aggregate"]["properties"]


def test_pre_aggregated_left_join_keeps_rows_and_fills_counts():
    plan = build_plan(load_spec(_spec([AGG_JOIN, {"derive": {"name": "s", "expr": "flagged_months * 10"}}], SCORE)),
                      SCHEMAS)
    out = pl.from_arrow(execute(plan, {"firms": FIRMS, "tax": TAX})["out"]).sort("uscc")
    assert out["uscc"].to_list() == ["A", "B", "C"]  # one row per firm, C kept, Z never enters
    assert out["s"].to_list() == [20, 0, 0]  # counts are 0, not null, for an unmatched firm
    lin = plan.outputs["out"].lineage()
    assert lin["s"] == frozenset({("tax", "flagged")})
    assert ("tax", "uscc") in plan.outputs["out"].influences
    assert not [w for w in plan.warnings if "tax" in w]  # the aggregated fields count as used


def test_aggregated_input_fields_do_not_enter_the_flow():
    with pytest.raises(SpecError, match="aggregated in its join"):
        build_plan(load_spec(_spec([AGG_JOIN, {"derive": {"name": "s", "expr": "tax.vat"}}], SCORE)), SCHEMAS)
    bad = {"join": {"input": "tax", "keys": ["uscc"], "aggregate": [{"name": "n", "fn": "count",
                                                                       "where": "capital > 1"}]}}
    with pytest.raises((SpecError, ExprError), match="capital"):
        build_plan(load_spec(_spec([bad], SCORE)), SCHEMAS)
    dup = {"join": {"input": "tax", "keys": ["uscc"], "aggregate": [{"name": "capital", "fn": "count"}]}}
    with pytest.raises(SpecError, match="already a column"):
        build_plan(load_spec(_spec([dup], SCORE)), SCHEMAS)


def test_summarize_where_counts_only_matching_rows():
    steps = [{"join": {"input": "firms", "keys": ["uscc"]}},
             {"summarize": {"by": ["tax.uscc"], "aggregates": [
                 {"name": "n", "fn": "count", "where": "flagged"},
                 {"name": "v", "fn": "sum", "column": "vat", "where": "not flagged"}]}},
             {"derive": {"name": "s", "expr": "n + coalesce(v, 0)"}}]
    spec = _spec(steps, {"policy": "model", "key": "tax.uscc", "score": "s"},
                 inputs=[{"resource": "tax", "version": 2, "fields": ["uscc", "vat", "flagged"]},
                         {"resource": "firms", "version": 1, "fields": ["uscc"]}])
    out = pl.from_arrow(execute(build_plan(load_spec(spec), SCHEMAS), {"firms": FIRMS, "tax": TAX})["out"])
    assert dict(zip(out["uscc"], out["s"])) == {"A": 2 + 7, "B": 0 + 11}


def test_labels_released_with_claims_and_checked():
    steps = [AGG_JOIN, {"derive": {"name": "s", "expr": "least(100, flagged_months * 40)"}},
             {"derive": {"name": "band", "expr": "case when flagged_months > 0 then 'risky' else 'clean' end"}},
             {"derive": {"name": "why", "expr": "reasons(flagged_months > 0, 'FLAG', months > 2, 'MANY')"}}]
    release = {**SCORE, "labels": [{"column": "band", "values": ["risky", "clean"]},
                                   {"column": "why", "values": ["FLAG", "MANY"], "separator": ";"}]}
    plan = build_plan(load_spec(_spec(steps, release)), SCHEMAS)
    table = execute(plan, {"firms": FIRMS, "tax": TAX})["out"]
    rel = gate.release(plan.outputs["out"], table, token_key=KEY, fields=_fields(), claims=["a", "C", "Q"])
    got = rel.table.to_pylist()
    assert got[0] == {"claim": "a", "score": 80.0, "band": "risky", "why": "FLAG;MANY"}
    assert got[1]["band"] == "clean" and got[1]["why"] == ""
    assert got[2]["score"] is None and got[2]["band"] is None
    batch = gate.release(plan.outputs["out"], table, token_key=KEY, fields=_fields())
    assert batch.table.column_names == ["uscc", "s", "band", "why"] and "A" not in batch.table["uscc"].to_pylist()
    # a value outside the declared set is refused
    narrow = {**SCORE, "labels": [{"column": "why", "values": ["FLAG"], "separator": ";"}]}
    plan2 = build_plan(load_spec(_spec(steps, narrow)), SCHEMAS)
    with pytest.raises(gate.ReleaseRefused, match="outside"):
        gate.release(plan2.outputs["out"], execute(plan2, {"firms": FIRMS, "tax": TAX})["out"], token_key=KEY,
                     fields=_fields(), claims=["A"])


def test_label_plan_checks():
    steps = [AGG_JOIN, {"derive": {"name": "s", "expr": "months"}},
             {"derive": {"name": "band", "expr": "case when months > 0 then 'x' else 'y' end"}}]
    with pytest.raises(SpecError, match="'y', which is not among"):
        build_plan(load_spec(_spec(steps, {**SCORE, "labels": [{"column": "band", "values": ["x"]}]})), SCHEMAS)
    with pytest.raises(SpecError, match="a label is text"):
        build_plan(load_spec(_spec(steps, {**SCORE, "labels": [{"column": "months", "values": ["1"]}]})), SCHEMAS)
    with pytest.raises(SpecError, match="already released"):
        load_spec(_spec(steps, {**SCORE, "labels": [{"column": "s", "values": ["1"]}]}))


def test_verify_labels():
    steps = [AGG_JOIN, {"derive": {"name": "key", "expr": "concat(uscc, '|', sector)"}},
             {"derive": {"name": "answer", "expr": "'yes'"}},
             {"derive": {"name": "size", "expr": "bucket(capital, [15, 25], ['s', 'm', 'l'])"}}]
    release = {"policy": "verify", "claim": "key", "answer": "answer", "values": ["yes", "no"], "absent": "no",
               "labels": [{"column": "size", "values": ["s", "m", "l"]}]}
    plan = build_plan(load_spec(_spec(steps, release)), SCHEMAS)
    table = execute(plan, {"firms": FIRMS, "tax": TAX})["out"]
    rel = gate.release(plan.outputs["out"], table, token_key=KEY, fields=_fields(), claims=["B|mine", "B|farm"])
    assert rel.table.to_pylist() == [{"claim": "B|mine", "answer": "yes", "size": "m"},
                                     {"claim": "B|farm", "answer": "no", "size": None}]


def test_aggregate_post_columns_are_computed_after_noise():
    rows = pl.DataFrame({"uscc": [f"U{i}" for i in range(400)], "sector": ["farm"] * 200 + ["mine"] * 200,
                         "capital": [1] * 200 + [0] * 200})
    spec = {"spec_version": 1, "name": "job",
            "inputs": [{"resource": "firms", "version": 1, "fields": ["uscc", "sector", "capital"]}],
            "outputs": [{"name": "out", "release": {
                "policy": "aggregate", "group_by": ["sector"], "epsilon": 5.0, "min_cell": 10,
                "measures": [{"name": "n", "fn": "count"}, {"name": "c", "fn": "sum", "column": "capital",
                                                              "bounds": [0, 1]}],
                "post": [{"name": "share", "expr": "c / greatest(n, 1)"},
                         {"name": "flag", "expr": "case when share >= 0.5 then 'high' else 'low' end",
                          "values": ["low", "high"]}]}}]}
    plan = build_plan(load_spec(spec), SCHEMAS)
    lf = lazy_outputs(plan, {"firms": rows})["out"]
    rel = gate.release(plan.outputs["out"], lf, token_key=KEY, fields=_fields())
    got = {r["sector"]: r for r in rel.table.to_pylist()}
    assert got["farm"]["flag"] == "high" and got["mine"]["flag"] == "low"
    assert rel.summary["post"] == ["share", "flag"]
    bad = {**spec["outputs"][0]["release"], "post": [{"name": "f", "expr": "uscc = 'x'"}]}
    with pytest.raises(ExprError, match="unknown column"):
        build_plan(load_spec({**spec, "outputs": [{"name": "out", "release": bad}]}), SCHEMAS)
    bad = {**spec["outputs"][0]["release"], "post": [{"name": "f", "expr": "case when n > 1 then 'a' else 'b' end",
                                                     "values": ["a"]}]}
    with pytest.raises(SpecError, match="not among"):
        build_plan(load_spec({**spec, "outputs": [{"name": "out", "release": bad}]}), SCHEMAS)


@pytest.mark.parametrize("expr,expected", [
    ("concat(s, '-', s)", ["x-x", "y-y", None]),
    ("least(a, 2)", [1, 2, 2]),
    ("greatest(a, f)", [1.5, 5.0, 3.0]),
    ("reasons(a > 2, 'BIG', f > 1, 'F')", ["F", "BIG", "BIG;F"]),
    ("fixed(f * 2, 2)", ["3.00", "0.50", "4.00"]),
])
def test_new_functions(expr, expected):
    df = pl.DataFrame({"a": [1, 5, 3], "f": [1.5, 0.25, 2.0], "s": ["x", "y", None]})
    typed = compile_expr(expr, {"a": DType.INT, "f": DType.FLOAT, "s": DType.STRING})
    assert df.select(typed.build({}).alias("r"))["r"].to_list() == expected


@pytest.mark.parametrize("expr,msg", [
    ("reasons(a > 1, 'X', a > 2)", "pairs"), ("reasons(a > 1, s)", "code"), ("reasons(a > 1, 'X', a > 2, 'X')", "differ"),
    ("fixed(a, 9)", "decimals"), ("concat(a, 'x')", "string"), ("least(s, 1)", "number"),
])
def test_new_function_errors(expr, msg):
    with pytest.raises(ExprError, match=msg):
        compile_expr(expr, {"a": DType.INT, "s": DType.STRING})
