"""Commercial-insurance underwriting: the risk class rises with chronic/special disease registrations."""

from __future__ import annotations

import polars as pl

from authops.products.catalog import PRODUCTS
from tests.products.conftest import responses

CODE = "commercial_insurance_underwriting"
ORDER = {"preferred": 0, "standard": 1, "rated": 2, "refer": 3}


def test_risk_class_rises_with_registrations(city):
    assert PRODUCTS[CODE].consent_required and PRODUCTS[CODE].personal_information
    enrolled = city.frame("medical_insurance_enrollment")["id_number"].to_list()
    regs = city.frame("chronic_special_disease_registrations").group_by("id_number").len()
    df = pl.from_arrow(city.answer(CODE, "underwriting", enrolled))
    df = df.join(regs, left_on="claim", right_on="id_number", how="left").with_columns(
        pl.col("len").fill_null(0).alias("regs"), pl.col("risk_class").replace_strict(ORDER).alias("lv"))
    by = df.group_by(pl.col("regs").clip(0, 2)).agg(pl.col("lv").mean(), pl.col("score").mean(),
                                                   (pl.col("risk_class") == "preferred").mean().alias("pref"))
    by = by.sort("regs")
    print("risk level / score / preferred share by registrations 0,1,2+:", by.rows())
    lv = by["lv"].to_list()
    assert lv[0] < lv[1] <= lv[-1]
    assert by["pref"][0] > 0.3 and by["pref"][1] == 0.0
    assert df["risk_class"].null_count() == 0


def test_answers_hold_no_diagnosis_or_raw_data(city):
    ids = city.frame("chronic_special_disease_registrations")["id_number"].to_list()[:500]
    ids += city.frame("medical_insurance_enrollment")["id_number"].to_list()[:1000]
    bodies = responses(CODE, city.answer(CODE, "underwriting", ids))
    assert set(bodies[0]) == {f.name for f in PRODUCTS[CODE].response}
    catalogue = set(city.frame("chronic_special_disease_registrations")["chronic_special_disease_catalogue"])
    assert not any(v in catalogue for b in bodies for v in b.values() if isinstance(v, str))
    assert city.leaks(CODE, bodies) == []
