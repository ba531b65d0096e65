"""Freight-truck pricing on planted signals: violating and accident-prone trucks price higher."""

from __future__ import annotations

import numpy as np
import polars as pl

from authops.products.catalog import PREMIUM_FACTORS, PRODUCTS
from tests.products.conftest import responses

CODE = "freight_truck_underwriting_pricing"


def _answers(city) -> pl.DataFrame:
    veh = city.world.vehicles
    df = pl.from_arrow(city.answer(CODE, "by_vin", veh.vin.to_pylist()))
    return df.with_columns(pl.Series("true_violations", veh.violations), pl.Series("true_accidents", veh.accidents),
                           pl.col("premium_factor").cast(pl.Float64).alias("factor"))


def test_factor_in_steps_and_rises_with_violations(city):
    df = _answers(city)
    assert df["score"].null_count() == 0
    assert set(df["premium_factor"].unique()) <= set(PREMIUM_FACTORS)
    band = pl.when(pl.col("true_violations") == 0).then(0).when(pl.col("true_violations") <= 2).then(1).when(
        pl.col("true_violations") <= 5).then(2).when(pl.col("true_violations") <= 9).then(3).otherwise(4)
    means = df.group_by(band.alias("b")).agg(pl.col("factor").mean()).sort("b")["factor"].to_list()
    print("mean premium factor by violation band 0 / 1-2 / 3-5 / 6-9 / 10+:", [round(m, 3) for m in means])
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] - means[0] >= 0.6
    acc = df.group_by(pl.col("true_accidents") > 0).agg(pl.col("factor").mean())
    with_acc = acc.filter(pl.col("true_accidents"))["factor"][0]
    without = acc.filter(~pl.col("true_accidents"))["factor"][0]
    print(f"mean factor with accidents {with_acc:.3f}, without {without:.3f}")
    assert with_acc >= without + 0.3
    rho = np.corrcoef(df["score"].to_numpy(), df["true_violations"].to_numpy())[0, 1]
    assert rho > 0.6


def test_plate_and_vin_give_the_same_answer(city):
    veh = city.world.vehicles
    vins, plates = veh.vin.to_pylist()[:200], veh.plate.to_pylist()[:200]
    a = city.answer(CODE, "by_vin", vins).drop(["claim"])
    b = city.answer(CODE, "by_plate", plates).drop(["claim"])
    assert a.equals(b)
    assert PRODUCTS[CODE].claim({"plate_number": plates[0]})[0] == "by_plate"


def test_answers_hold_no_raw_data(city):
    vins = city.world.vehicles.vin.to_pylist()[:2000]
    bodies = responses(CODE, city.answer(CODE, "by_vin", vins))
    assert city.leaks(CODE, bodies) == []
