"""Job specs: schema validation, the expression language, plans and lineage, scope checks, execution."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from jsonschema import Draft202012Validator

from authops.core.data.schema import DType, FieldSpec, Grade, Kind, PrivacyUnit, ResourceSchema, ShareMode
from authops.platform.catalog.csvload import load_definitions
from authops.sandbox.spec import (EXAMPLES, JSON_SCHEMA, SCHEMA_PATH, ExprError, SpecError, build_plan, check_scope,
                                  execute, load_spec, write_json_schema)
from authops.sandbox.spec.check import compile_expr
from authops.sandbox.spec.expr import Binary, Unary, parse
from authops.sandbox.spec.outputs import aggregate_spec

UTC = timezone.utc


def _f(name: str, kind: Kind, **kw) -> FieldSpec:
    return FieldSpec(name=name, name_zh=name, kind=kind, grade=kw.pop("grade", Grade.L3), **kw)


FIRMS = ResourceSchema(fields=(_f("uscc", Kind.IDENTIFIER_ENTERPRISE, required=True), _f("sector", Kind.CATEGORY,
                               enum=("farm", "mine", "shop")), _f("founded", Kind.DATE), _f("capital", Kind.MONEY)),
                       key=("uscc",), privacy_unit=PrivacyUnit.ENTERPRISE, unit_field="uscc")
TAX = ResourceSchema(fields=(_f("uscc", Kind.IDENTIFIER_ENTERPRISE, required=True), _f("period", Kind.DATE),
                             _f("vat", Kind.MONEY), _f("flagged", Kind.FLAG), _f("ratio", Kind.RATIO)),
                     key=("uscc", "period"), privacy_unit=PrivacyUnit.ENTERPRISE, unit_field="uscc")
SCHEMAS = {"firms": (1, FIRMS), "tax": (2, TAX)}
COLS = {"a": DType.INT, "f": DType.FLOAT, "s": DType.STRING, "d": DType.DATE, "t": DType.TIMESTAMP, "b": DType.BOOL}


def spec(steps=(), outputs=None, inputs=None, params=None) -> dict:
    return {"spec_version": 1, "name": "job", "params": params or {},
            "inputs": inputs or [{"resource": "tax", "version": 2, "fields": ["uscc", "period", "vat", "flagged"]},
                                 {"resource": "firms", "version": 1, "fields": ["uscc", "sector", "capital"]}],
            "steps": list(steps), "outputs": outputs or [
                {"name": "rows", "release": {"policy": "record", "columns": ["tax.uscc"], "k": 2}}]}


JOIN = {"join": {"input": "firms", "keys": ["uscc"]}}


def plan_of(steps=(), outputs=None, **kw):
    return build_plan(load_spec(spec(steps, outputs, **kw)), SCHEMAS)


def run(text: str, df: pl.DataFrame, params=None, ptypes=None) -> list:
    typed = compile_expr(text, {k: v for k, v in COLS.items() if k in df.columns}, ptypes)
    return df.select(typed.build(params or {}).alias("r"))["r"].to_list()


@pytest.fixture(scope="module")
def catalog():
    return {d.code: (1, d.schema) for d in load_definitions("/work/shared/catalog")}


# --- the published schema and loading -------------------------------------------------------------
def test_schema_is_valid_2020_12_and_written_out(tmp_path):
    Draft202012Validator.check_schema(JSON_SCHEMA)
    assert JSON_SCHEMA["$schema"].endswith("2020-12/schema") and JSON_SCHEMA["description"]
    out = write_json_schema(tmp_path / "job.schema.json")
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_examples_load_plan_and_agree_in_json_and_yaml(catalog):
    for path in EXAMPLES.glob("*.yaml"):
        s = load_spec(path)
        assert load_spec(json.dumps(s.model_dump(mode="json", exclude_unset=True)), fmt="json") == s
        plan = build_plan(s, catalog)
        assert plan.outputs and not plan.warnings


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d.pop("outputs"), "'outputs' is a required property"),
    (lambda d: d.update(colour="red"), "allowed here:"),
    (lambda d: d["steps"].append({"filter": "a", "derive": {"name": "x", "expr": "1"}}), "exactly one of join"),
    (lambda d: d["outputs"][0]["release"].update(k=1), "outputs[0].release.k"),
    (lambda d: d["outputs"].__setitem__(0, {"name": "agg", "release": {"policy": "aggregate", "epsilon": -1,
     "min_cell": 5, "measures": [{"name": "s", "fn": "sum", "column": "vat"}]}}), "'bounds' is a required property"),
    (lambda d: d["inputs"][0].update(version=0), "inputs[0].version"),
    (lambda d: d["outputs"].__setitem__(0, {"name": "v", "release": {"policy": "verify", "claim": "uscc",
     "answer": "x", "values": ["yes", "no"], "absent": "maybe"}}), "absent answer 'maybe' is not one of"),
    (lambda d: d["inputs"].append(json.loads(json.dumps(d["inputs"][0]))), "input aliases"),
])
def test_schema_errors_name_the_place_in_json_and_yaml(mutate, says):
    d = spec()
    mutate(d)
    for text, fmt in ((json.dumps(d), "json"), (yaml.safe_dump(d, allow_unicode=True), "yaml")):
        with pytest.raises(SpecError) as err:
            load_spec(text, fmt=fmt)
        assert says in err.value.message


def test_yaml_reads_yes_no_and_dates_as_text_and_refuses_tags_and_repeats():
    text = """
spec_version: 1
name: on_off
params: {since: {type: date, default: 2025-01-01}}
inputs: [{resource: tax, version: 2, fields: [uscc]}]
outputs:
  - name: v
    release: {policy: verify, claim: uscc, answer: s, values: [yes, no], absent: no}
"""
    s = load_spec(text)
    assert s.outputs[0].release.values == ("yes", "no") and s.params["since"].default == "2025-01-01"
    with pytest.raises(SpecError, match="appears twice"):
        load_spec("spec_version: 1\nname: a\nname: b\n")
    with pytest.raises(SpecError, match="appears twice"):
        load_spec('{"spec_version": 1, "name": "a", "name": "b"}')
    with pytest.raises(SpecError, match=re.escape("YAML aliases (*x) are not allowed")):
        load_spec("spec_version: 1\nname: &x a\ntitle: *x\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec("spec_version: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="line 1, column"):
        load_spec('{"spec_version": 1,,}')


# --- the expression language ----------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("10 - 4 - 3", 3), ("2 * 3 % 4", 2), ("-2 * 3", -6), ("7 / 2", 3.5),
    ("not false or true", True), ("true or true and false", True), ("not (true and false)", True),
    ("1 + 1 = 2 and 3 > 2", True), ("2 between 1 and 3", True), ("2 not in (1, 3)", True), ("'a''b'", "a'b"),
    ("case when 1 > 2 then 'x' when 2 > 1 then 'y' else 'z' end", "y"), ("coalesce(null, 4)", 4),
    ("abs(-2.5)", 2.5), ("round(2.5)", 3.0), ("round(-1.25, 1)", -1.3), ("length('数据')", 2),
    ("upper('ab')", "AB"), ("substr('abcdef', 2, 3)", "bcd"), ("contains('苏州物流', '物流')", True),
    ("null is null", True), ("date'2025-03-01' > date'2025-02-28'", True),
])
def test_precedence_and_values(text, value):
    assert run(text, pl.DataFrame({"z": [0]})) == [value]


def test_tree_shapes():
    t = parse("a or b and not c = 1 + 2 * d")
    assert isinstance(t, Binary) and t.op == "or" and t.right.op == "and"
    assert isinstance(t.right.right, Unary) and t.right.right.operand.op == "="
    assert t.right.right.operand.right.op == "+" and t.right.right.operand.right.right.op == "*"


@pytest.mark.parametrize("text, position, says", [
    ("__import__('os').system('ls')", 1, "names start with a letter"),
    ('"; drop table firms', 1, "single quotes"),
    ("a; drop table firms", 2, "not part of the language"),
    ("a.__class__", 3, "names start with a letter"),
    ("os.system('rm -rf /')", 10, "no attribute access"),
    ("coalesce(a, 1).real", 15, "no attribute access"),
    ("lambda x: x", 1, "cannot be defined"),
    ("eval('1')", 1, "unknown function 'eval'"),
    ("getattr(a, 'b')", 1, "unknown function"),
    ("a[0]", 2, "unexpected '['"),
    ("f'{a}'", 2, "expected an operator"),
    ("a < 2 < 3", 7, "do not chain"),
    ("a +", 4, "expected a value"),
    ("(a + 1", 7, "expected ')'"),
    ("'open", 1, "not closed"),
    ("date'2025-02-30'", 5, "not a valid date"),
    ("year(a, s)", 1, "takes 1 arguments"),
    ("case when b then 1", 19, "expected 'end'"),
    ("a in (null)", 7, "null never equals"),
    ("12abc", 3, "runs into a name"),
])
def test_parse_errors_give_position_and_fix(text, position, says):
    with pytest.raises(ExprError) as err:
        compile_expr(text, COLS)
    assert err.value.position == position and says in err.value.message
    assert f"at position {position}" in err.value.message


def test_deep_or_long_expressions_are_refused():
    for text in ("(" * 100 + "1" + ")" * 100, "-" * 3000 + "1", "not " * 500 + "true", "1+" * 2500 + "1"):
        with pytest.raises(ExprError, match="nests more than|characters"):
            parse(text)


@pytest.mark.parametrize("text, says", [
    ("s + 1", "'+' needs a number here, but this is column 's' (string)"),
    ("d > '2025-01-01'", "date'2025-01-31'"),
    ("t > d", "date(x)"),
    ("a = null", "is null"),
    ("case when a then 1 end", "'when' needs a bool"),
    ("case when b then 1 else 'x' end", "must have one type"),
    ("year(s)", "year() needs a date or timestamp"),
    ("b < true", "no order"),
    ("bucket(a, [3, 1])", "increase strictly"),
    ("bucket(a, [1, 2], ['x', 'y'])", "give that many labels"),
    ("round(f, a)", "whole number of digits"),
    ("substr(s, 0, 2)", "counts characters from 1"),
    ("a > :n", "unknown parameter :n"),
    ("nope + 1", "unknown column 'nope'"),
])
def test_type_errors(text, says):
    with pytest.raises(ExprError) as err:
        compile_expr(text, COLS)
    assert says in err.value.message and err.value.position


def test_date_parts_take_the_day_in_shanghai():
    ts = pl.Series([datetime(2024, 12, 31, 17, tzinfo=UTC), datetime(2024, 12, 31, 15, tzinfo=UTC), None])
    df = pl.DataFrame({"t": ts, "d": [date(2025, 1, 1), date(2024, 12, 31), None]})
    for e, want in [("year(t)", [2025, 2024, None]), ("month(t)", [1, 12, None]), ("day(t)", [1, 31, None]),
                    ("quarter(t)", [1, 4, None]), ("weekday(t)", [3, 2, None]), ("weekday(d)", [3, 2, None]),
                    ("date(t) = d", [True, True, None]), ("date_diff_days(date'2025-03-01', t)", [59, 60, None]),
                    ("t >= timestamp'2025-01-01 00:00:00'", [True, False, None])]:
        assert run(e, df) == want, e


def test_bucket_labels_and_case_domains():
    df = pl.DataFrame({"a": [-5, 0, 9, 10, 100, None], "f": [0.5, 2.5, 3.0, 1.0, 2.49, None]})
    assert run("bucket(a, [0, 10, 100])", df) == ["(-inf, 0)", "[0, 10)", "[0, 10)", "[10, 100)", "[100, +inf)", None]
    assert run("bucket(f, [1, 2.5], ['low', 'mid', 'high'])", df) == ["low", "high", "high", "mid", "mid", None]
    assert compile_expr("bucket(a, [0, 10])", COLS).domain == ("(-inf, 0)", "[0, 10)", "[10, +inf)")
    case = "case when a > 50 then 'big' when a > 5 then 'mid' end"
    assert run(case, df) == [None, None, "mid", "mid", "big", None]
    assert compile_expr(case, COLS).domain == ("big", "mid")
    assert compile_expr("coalesce(s, 'x')", COLS).domain is None
    assert run("a in (:lo, 100)", df, {"lo": 9}, {"lo": DType.INT}) == [False, False, True, False, True, None]


def test_lineage_of_an_expression():
    typed = compile_expr("case when b then a + f else abs(a) end > :n and not contains(s, 'x')", COLS,
                         {"n": DType.FLOAT})
    assert typed.dtype == DType.BOOL and typed.columns == {"a", "b", "f", "s"} and typed.params == {"n"}


# --- plans, joins and lineage ---------------------------------------------------------------------
@pytest.mark.parametrize("changes, says", [
    ({"inputs": [{"resource": "payroll", "version": 1, "fields": ["uscc"]}]}, "unknown resource 'payroll'"),
    ({"inputs": [{"resource": "tax", "version": 3, "fields": ["uscc"]}]}, "no schema version 3 (available: 2)"),
    ({"inputs": [{"resource": "tax", "version": 2, "fields": ["uscc", "salary"]}]}, "has no field 'salary'"),
    ({"steps": [{"filter": "vat > 0"}]}, "inputs[firms] is never joined"),
    ({"steps": [JOIN, {"filter": "uscc = 'x'"}]}, "write it as input.uscc"),
    ({"steps": [{"filter": "firms.capital > 0"}, JOIN]}, "not in the flow yet"),
    ({"steps": [JOIN, {"filter": "firms.founded > date'2020-01-01'"}]}, "add it to the fields of inputs[firms]"),
    ({"steps": [JOIN, {"filter": "vat"}]}, "a filter must be bool"),
    ({"steps": [JOIN, {"filter": "sector = 'bank'"}]}, "'bank' is never a value here"),
    ({"steps": [{"join": {"input": "firms", "keys": [{"left": "period", "right": "uscc"}]}}]},
     "join keys must have the same type"),
    ({"steps": [JOIN, {"derive": {"name": "vat", "expr": "1"}}]}, "already a column"),
    ({"steps": [JOIN, {"summarize": {"by": ["sector"], "aggregates": [{"name": "n", "fn": "count"}]}}],
      "outputs": [{"name": "a", "release": {"policy": "aggregate", "epsilon": 1, "min_cell": 5,
                                            "group_by": ["sector"], "measures": [{"name": "n", "fn": "count"}]}}]},
     "privacy unit tax.uscc is gone after the summarize"),
    ({"steps": [JOIN], "outputs": [{"name": "a", "release": {"policy": "aggregate", "epsilon": 1, "min_cell": 5,
      "group_by": ["period"], "measures": [{"name": "n", "fn": "count"}]}}]}, "set delta"),
    ({"steps": [JOIN], "outputs": [{"name": "a", "release": {"policy": "aggregate", "epsilon": 1, "min_cell": 5,
      "group_by": ["sector"], "measures": [{"name": "r", "fn": "sum", "column": "capital", "bounds": [0, 9]},
                                           {"name": "n", "fn": "count"}, {"name": "m", "fn": "count"}]}}]},
     "at most one count"),
    ({"steps": [JOIN], "outputs": [{"name": "a", "release": {"policy": "aggregate", "epsilon": 1, "min_cell": 5,
      "delta": 1e-6, "group_by": ["tax.uscc"], "measures": [{"name": "n", "fn": "count"}]}}]}, "is the privacy unit"),
    ({"steps": [JOIN], "outputs": [{"name": "v", "release": {"policy": "verify", "claim": "tax.uscc",
      "answer": "sector", "values": ["farm", "shop"], "absent": "shop"}}]}, "can be 'mine', which is not among"),
])
def test_plan_errors_name_what_to_fix(changes, says):
    with pytest.raises(SpecError) as err:
        build_plan(load_spec({**spec(), **changes}), SCHEMAS)
    assert says in err.value.message


def test_lineage_through_joins_derivations_filters_and_summaries():
    plan = plan_of([JOIN, {"derive": {"name": "burden", "expr": "vat / capital"}},
                    {"derive": {"name": "band", "expr": "bucket(burden * 100, [1, 5])"}},
                    {"filter": "flagged and year(period) = 2024"},
                    {"summarize": {"by": ["tax.uscc", "band"], "aggregates": [{"name": "total", "fn": "sum",
                                                                              "column": "vat"}]}}],
                   [{"name": "out", "release": {"policy": "record", "columns": ["uscc", "band", "total"], "k": 3,
                                                "quasi_identifiers": ["band"]}}])
    out = plan.outputs["out"]
    assert out.lineage() == {"uscc": {("tax", "uscc")},
                             "band": {("tax", "vat"), ("firms", "capital")},
                             "total": {("tax", "vat"), ("tax", "uscc"), ("firms", "capital")}}
    assert out.influences == {("tax", "uscc"), ("firms", "uscc"), ("tax", "flagged"), ("tax", "period")}
    assert out.column("uscc").field.kind == Kind.IDENTIFIER_ENTERPRISE and out.column("band").field is None
    assert out.roles["quasi_identifiers"] == ("band",)
    assert plan.uses[("firms", "capital")] == ("steps[1].derive[burden]",)
    assert plan.warnings == ("inputs[firms].fields lists 'sector', which nothing uses; remove it to read less",)


def test_plans_warn_where_the_gate_would_have_to_guess():
    plan = plan_of([JOIN, {"derive": {"name": "ok", "expr": "case when flagged then 'yes' else 'no' end"}}],
                   [{"name": "v", "release": {"policy": "verify", "claim": "tax.uscc", "answer": "ok",
                                              "values": ["yes", "no"], "absent": "no"}}])
    assert any("several rows may have the same tax.uscc" in w for w in plan.warnings)


def test_aggregate_output_carries_groups_measures_and_the_unit(catalog):
    plan = build_plan(load_spec(EXAMPLES / "tax_arrears_by_industry.yaml"), catalog)
    out = plan.outputs["vat_by_industry"]
    assert [c.name for c in out.columns] == ["industry", "vat_year", "_unit"]
    assert out.unit_column == "_unit" and out.privacy_unit == PrivacyUnit.ENTERPRISE
    assert out.measure_columns == {"vat_total_fen": "vat_year"} and "其他" in out.column("industry").domain
    assert out.lineage()["industry"] == {("enterprise_basic_info", "enterprise_name")}
    assert ("enterprise_tax", "has_violation_record") in out.influences
    dp = aggregate_spec(out)
    dp.validate()
    assert dp.by == ["industry"] and dp.unit_column == "_unit" and dp.max_contributions == 1
    assert dp.public_keys["industry"][-1] == "其他" and dp.measures[1].column == "vat_year"
    tax = pa.table({"uscc": ["U1", "U1", "U2", "U3"], "tax_period": pa.array([date(2024, m, 1) for m in (1, 2, 3, 4)]),
                    "vat_amount": [100, 200, 300, 400], "has_violation_record": [True, True, False, True]})
    basic = pa.table({"uscc": ["U1", "U2", "U3"], "enterprise_name": ["苏州云帆软件有限公司", "苏州顺达物流有限公司", "苏州某某有限公司"]})
    rows = execute(plan, {"tax": tax, "basic": basic})["vat_by_industry"]
    assert sorted(zip(*rows.to_pydict().values())) == [("信息传输、软件和信息技术服务业", 300, "U1"), ("其他", 400, "U3")]


def test_scope_check_names_the_field_where_it_is_used_and_the_share_mode(catalog):
    s = load_spec(EXAMPLES / "tax_arrears_by_industry.yaml")
    allowed = {"enterprise_tax": {"uscc", "tax_period", "vat_amount", "has_violation_record"},
               "enterprise_basic_info": {"uscc", "enterprise_name"}}
    plan = build_plan(s, catalog)
    assert check_scope(plan, allowed, [ShareMode.QUERY]) == []
    allowed["enterprise_basic_info"] = {"uscc"}
    problems = check_scope(s, allowed, {"enterprise_tax": ["query"], "enterprise_basic_info": ["verify"]},
                           schemas=catalog)
    assert len(problems) == 2
    assert "enterprise_basic_info.enterprise_name is outside the approved scope" in problems[0]
    assert "steps[2].derive[industry]" in problems[0] and "outputs[vat_by_industry] columns industry" in problems[0]
    assert "approved for verify; an aggregate output needs batch or query" in problems[1]
    assert "resource 'enterprise_basic_info'" in check_scope(plan, {"enterprise_tax": allowed["enterprise_tax"]})[0]


# --- execution ------------------------------------------------------------------------------------
def _tables(seed: int = 7, n: int = 60):
    rng = np.random.default_rng(seed)
    firms = pa.table({"uscc": [f"U{i:03d}" for i in range(20)] + [None],
                      "sector": rng.choice(["farm", "mine", "shop"], 21).tolist(),
                      "founded": pa.array([date(2000 + i % 20, 1, 1) for i in range(21)]),
                      "capital": rng.integers(1, 1000, 21).tolist()})
    tax = pa.table({"uscc": [f"U{i:03d}" for i in rng.integers(0, 25, n)],
                    "period": pa.array([date(2023 + i % 3, 1 + i % 12, 1) for i in range(n)]),
                    "vat": rng.integers(0, 5000, n).tolist(), "flagged": rng.random(n) < 0.5,
                    "ratio": rng.random(n).tolist()})
    return tax, firms


MEAN_VAT = {"name": "v", "fn": "mean", "column": "vat", "bounds": [0, 5000]}


@pytest.mark.parametrize("how", ["inner", "left"])
def test_execution_matches_a_pandas_reference(how, tmp_path):
    tax, firms = _tables()
    pq.write_table(firms, tmp_path / "firms.parquet")
    plan = plan_of([{"join": {"input": "firms", "keys": ["uscc"], "how": how}},
                    {"derive": {"name": "band", "expr": "case when capital >= 500 then 'large' else 'small' end"}},
                    {"derive": {"name": "yr", "expr": "year(period)"}},
                    {"filter": "flagged and vat > :floor"}],
                   [{"name": "rows", "release": {"policy": "record", "columns": ["tax.uscc", "yr", "vat", "band",
                                                                                  "sector"], "k": 2}},
                    {"name": "agg", "release": {"policy": "aggregate", "group_by": ["band"], "epsilon": 1, "min_cell": 3,
                                                "measures": [MEAN_VAT, {"name": "n", "fn": "count"}]}}],
                   params={"floor": {"type": "int", "default": 1000}})
    got = execute(plan, {"tax": tax, "firms": str(tmp_path / "firms.parquet")})
    t, f = tax.to_pandas(), firms.to_pandas()
    ref = t.merge(f, on="uscc", how=how)
    ref = ref[ref["flagged"] & (ref["vat"] > 1000)].copy()
    ref["band"] = np.where(ref["capital"].isna(), "small", np.where(ref["capital"] >= 500, "large", "small"))
    ref["yr"] = pd.to_datetime(ref["period"]).dt.year
    rows = got["rows"].to_pandas()
    key = ["uscc", "yr", "vat"]
    want = ref[["uscc", "yr", "vat", "band", "sector"]].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows.sort_values(key).reset_index(drop=True), want, check_dtype=False)
    assert got["rows"].schema.field("yr").type == pa.int64() and got["agg"].column_names == ["band", "vat", "_unit"]
    assert sorted(got["agg"].column("_unit").to_pylist()) == sorted(want["uscc"])
    assert (how == "left") == (len(rows) > len(ref.dropna(subset=["capital"])))


def test_summarize_and_verify_on_trucks(catalog):
    plan = build_plan(load_spec(EXAMPLES / "truck_violation_verify.yaml"), catalog)
    times = [datetime(2025, 6, 1, tzinfo=UTC)] * 4 + [datetime(2025, 6, 29, 16, 30, tzinfo=UTC)] * 2 + [
        datetime(2024, 6, 30, 16, 30, tzinfo=UTC)] * 3
    vins = ["V1"] * 4 + ["V2"] * 5
    data = pa.table({"vin": vins, "violation_time": pa.array(times, pa.timestamp("us", tz="UTC"))})
    out = execute(plan, {"truck_violations": data}, {"as_of": "2025-06-29"})["more_than_n_violations"]
    # V2's two 06-30 (Shanghai) are after as_of; its three 2024-07-01 are within the year
    assert sorted(zip(*out.to_pydict().values())) == [("V1", "yes"), ("V2", "no")]
    out = execute(plan, {"truck_violations": data}, {"as_of": date(2025, 6, 30), "n": 1})["more_than_n_violations"]
    ref = pd.DataFrame({"vin": vins, "t": times})
    day = ref["t"].dt.tz_convert("Asia/Shanghai").dt.date
    kept = ref[[(date(2025, 6, 30) - d).days in range(365) for d in day]].groupby("vin").size()
    assert dict(zip(*out.to_pydict().values())) == {v: "yes" if c > 1 else "no" for v, c in kept.items()}


def test_parameters_are_checked_and_errors_never_quote_data(catalog):
    plan = build_plan(load_spec(EXAMPLES / "truck_violation_verify.yaml"), catalog)
    data = pa.table({"vin": ["SECRETVIN00000001"], "violation_time": ["not-a-time SECRETVIN00000001"]})
    for params, says in [({}, "'as_of' (date) needs a value"), ({"as_of": "soon"}, "must be a date"),
                         ({"as_of": "2025-01-01", "m": 1}, "unknown parameter 'm'")]:
        with pytest.raises(SpecError, match=re.escape(says)):
            execute(plan, {"truck_violations": data}, params)
    with pytest.raises(SpecError) as err:
        execute(plan, {"truck_violations": data}, {"as_of": "2025-01-01"})
    assert "SECRET" not in str(err.value) and err.value.__cause__ is None
    with pytest.raises(SpecError, match="no column 'violation_time'"):
        execute(plan, {"truck_violations": data.drop_columns(["violation_time"])}, {"as_of": "2025-01-01"})
