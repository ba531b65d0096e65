"""Synthetic source data: schemas, checks, keys, links between tables, planted signals, mocks."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from authops.core.data.identifiers import valid_mask
from authops.core.data.schema import Kind, arrow_schema
from authops.platform.catalog.csvload import BUILTIN, load_definitions
from authops.platform.synth import SIGNALS, generate, mock, write

SCALE = 0.005  # 500 enterprises, 5,000 persons, 1,000 trucks, 50,000 settlements
IDENTIFIERS = (Kind.IDENTIFIER_PERSON, Kind.IDENTIFIER_ENTERPRISE, Kind.IDENTIFIER_VEHICLE, Kind.PHONE,
               Kind.BANK_ACCOUNT)


@pytest.fixture(scope="module")
def definitions():
    return load_definitions(BUILTIN)


@pytest.fixture(scope="module")
def tables(definitions) -> dict[str, pa.Table]:
    return dict(generate(definitions, scale=SCALE, seed=11))


@pytest.fixture(scope="module")
def frames(tables):
    cache: dict[str, pd.DataFrame] = {}

    def get(code: str) -> pd.DataFrame:
        if code not in cache:
            cache[code] = tables[code].to_pandas()
        return cache[code]
    return get


def test_every_resource_has_rows_of_exactly_its_schema(definitions, tables):
    assert set(tables) == {d.code for d in definitions}
    for d in definitions:
        t = tables[d.code]
        assert t.schema == arrow_schema(d.schema), d.code
        assert t.num_rows > 0, d.code
        for f in d.schema.fields:
            if f.required:
                assert t.column(f.name).null_count == 0, (d.code, f.name)


def test_categories_checks_and_keys_hold(definitions, tables):
    for d in definitions:
        t = tables[d.code]
        for f in d.schema.fields:
            col = t.column(f.name)
            if f.enum:
                assert set(pc.unique(col.drop_null()).to_pylist()) <= set(f.enum), (d.code, f.name)
            if f.check:
                assert valid_mask(f.check, col).all(), (d.code, f.name)
        if d.schema.key:
            assert t.group_by(list(d.schema.key)).aggregate([]).num_rows == t.num_rows, d.code


def test_an_enterprise_is_the_same_firm_everywhere(frames):
    basic = frames("enterprise_basic_info").set_index("uscc")
    for code in ("enterprise_tax", "enterprise_social_insurance_payments", "enterprise_housing_fund_payments",
                 "court_cases", "enterprise_credit_rating", "enterprise_annual_reports", "vehicle_basic_info"):
        df = frames(code)
        assert df.uscc.isin(basic.index).mean() > 0.99, code
        assert (df.enterprise_name == basic.enterprise_name.reindex(df.uscc).to_numpy()).all(), code
    winners = frames("tendering_bidding_records").winning_bidder
    assert winners.isin(basic.enterprise_name).all()
    reps = frames("legal_rep_blacklist").merge(frames("enterprise_blacklist"), on="legal_rep_name")
    assert len(reps) >= len(frames("legal_rep_blacklist"))  # each listed person runs a listed firm


def test_a_person_is_the_same_person_everywhere(frames):
    people = frames("household_population").set_index("id_number")
    enrolled = frames("medical_insurance_enrollment").set_index("id_number")
    for code in ("medical_insurance_settlements", "hospital_outpatient_records",
                 "chronic_special_disease_registrations"):
        df = frames(code)
        assert df.id_number.isin(people.index).mean() > 0.99, code
        if "sex" in df:
            assert (df.sex == people.sex.reindex(df.id_number).to_numpy()).all(), code
            assert (df.birth_date == people.birth_date.reindex(df.id_number).to_numpy()).all(), code
        known = df.id_number.isin(enrolled.index)
        assert (df.name[known] == enrolled.person.reindex(df.id_number[known]).to_numpy()).all(), code
    s = frames("medical_insurance_settlements")
    born = pd.to_datetime(s.birth_date)
    settled = s.settled_at.dt.tz_convert(None)
    assert ((settled - born).dt.days // 366 <= s.age).all() and (s.age <= (settled - born).dt.days // 365).all()


def test_a_truck_is_the_same_truck_everywhere(frames):
    trucks = frames("vehicle_basic_info").set_index("vin")
    for code in ("truck_violations", "vehicle_accident_history", "truck_routes", "vehicle_annual_inspection"):
        df = frames(code)
        assert df.vin.isin(trucks.index).all(), code
        assert (df.plate_number == trucks.plate_number.reindex(df.vin).to_numpy()).all(), code


def test_firms_with_tax_arrears_and_lawsuits_default_more_often(frames):
    tax, cases, rating = frames("enterprise_tax"), frames("court_cases"), frames("enterprise_credit_rating")
    troubled = rating.uscc.isin(tax.uscc[tax.has_violation_record]) | rating.uscc.isin(cases.uscc)
    risky = rating.has_major_risk
    assert troubled.sum() >= 20
    assert risky[troubled].mean() > 3 * risky[~troubled].mean()
    low_grade = rating.credit_grade.isin(["C", "D"])
    assert low_grade[troubled].mean() > 2 * low_grade[~troubled].mean()
    listed = rating.uscc.isin(frames("enterprise_blacklist").uscc)
    assert risky[listed].mean() > 0.5 > risky.mean()


def test_trucks_with_many_violations_have_more_accidents(frames):
    trucks = frames("vehicle_basic_info")[["vin"]]
    violations = trucks.vin.map(frames("truck_violations").vin.value_counts()).fillna(0)
    accidents = trucks.vin.map(frames("vehicle_accident_history").vin.value_counts()).fillna(0)
    assert accidents[violations >= 5].mean() > 3 * accidents[violations == 0].mean()


def test_a_few_institutions_bill_abnormally(frames):
    s = frames("medical_insurance_settlements")
    s = s[~s.refund_settlement_flag]
    per = s.groupby("designated_institution_code").agg(
        grade=("hospital_grade", "first"), cost=("total_medical_cost", "mean"),
        per_visit=("visit_id", lambda v: len(v) / v.nunique()))
    odd = per.per_visit > 2
    assert 1 <= odd.sum() <= max(1, round(0.03 * len(per)))
    assert (per.per_visit[odd] >= SIGNALS["abnormal_split"] - 0.2).all()
    for code, row in per[odd].iterrows():
        peers = per[~odd & (per.grade == row.grade)]
        assert row.cost > 2 * peers.cost.mean(), code


def test_values_look_like_a_chinese_city(frames):
    people, firms = frames("household_population"), frames("enterprise_basic_info")
    assert people.birth_date.between(dt.date(1940, 1, 1), dt.date(2024, 12, 31)).all()
    assert firms.establishment_date.between(dt.date(1990, 1, 1), dt.date(2025, 12, 31)).all()
    assert firms.enterprise_address.str.startswith("江苏省苏州市").all()
    assert firms.enterprise_name.is_unique
    names = frames("medical_insurance_enrollment").person
    assert names.str.fullmatch(r"[\u4e00-\u9fff]{2,4}").all()
    assert names.str[0].value_counts().index[0] in "王李张刘陈"  # the commonest surnames lead
    sexes = people.sex.value_counts(normalize=True)
    assert 0.45 < sexes["男"] < 0.57
    settled = frames("medical_insurance_settlements")
    money = settled.total_medical_cost[~settled.refund_settlement_flag]
    assert (money > 0).all() and 100 * 100 < money.median() < 1000 * 100  # a typical bill: 100-1000 yuan, in fen
    text = frames("trading_penalties").penalty_info
    assert text.str.contains("罚款|没收").all() and text.str.len().between(20, 200).all()


def test_mock_data_shares_no_identifier_with_generated_data(definitions, tables):
    for d in definitions:
        m = mock(d, rows=200, seed=11)
        assert m.schema == arrow_schema(d.schema), d.code
        assert m.num_rows == 200, d.code
        for f in d.schema.fields:
            if f.check:
                assert valid_mask(f.check, m.column(f.name)).all(), (d.code, f.name)
            keyed = f.name in d.schema.key and f.kind != Kind.NAME_PERSON
            if (f.kind in IDENTIFIERS or keyed) and pa.types.is_string(m.schema.field(f.name).type):
                shown = set(m.column(f.name).drop_null().to_pylist())
                assert not shown & set(tables[d.code].column(f.name).drop_null().to_pylist()), (d.code, f.name)


def test_same_seed_same_data_and_tables_do_not_depend_on_each_other(definitions, tables):
    pick = {"enterprise_tax", "truck_violations", "medical_insurance_settlements", "court_cases"}
    again = dict(generate(definitions, scale=SCALE, seed=11, only=pick))
    assert set(again) == pick
    assert all(again[c].equals(tables[c]) for c in pick)
    other = dict(generate(definitions, scale=SCALE, seed=12, only={"enterprise_tax"}))["enterprise_tax"]
    assert not other.equals(tables["enterprise_tax"])


def test_write_stores_one_parquet_file_per_resource(definitions, tmp_path):
    few = [d for d in definitions if d.code in {"enterprise_basic_info", "medical_insurance_settlements"}]
    counts = write(few, tmp_path, scale=0.002, seed=3)
    assert counts["medical_insurance_settlements"] == 20_000
    for d in few:
        t = pq.read_table(tmp_path / f"{d.code}.parquet")
        assert t.schema == arrow_schema(d.schema) and t.num_rows == counts[d.code]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{d.code}.parquet" for d in few)


def test_scale_sets_the_size_of_the_city(definitions):
    small = dict(generate(definitions, scale=0.002, seed=0, only={"household_population", "enterprise_tax"}))
    assert small["household_population"].num_rows == 2_000
    assert small["enterprise_tax"].num_rows == 200 * 12
    assert np.unique(small["enterprise_tax"].column("tax_period").to_numpy()).size == 12


def test_a_resource_the_generator_does_not_know_still_gets_valid_rows(definitions):
    base = next(d for d in definitions if d.code == "medical_insurance_enrollment")
    custom = dataclasses.replace(base, code="village_health_register")
    t = dict(generate([custom], scale=SCALE, seed=1))["village_health_register"]
    assert t.schema == arrow_schema(custom.schema) and t.num_rows == 50
    assert valid_mask(custom.schema.field("id_number").check, t.column("id_number")).all()
    assert len(t.column("id_number").unique()) == t.num_rows
    people = set(dict(generate(definitions, scale=SCALE, seed=1, only={"household_population"}))[
        "household_population"].column("id_number").to_pylist())
    assert set(t.column("id_number").to_pylist()) <= people
