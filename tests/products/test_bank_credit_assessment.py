"""Bank credit assessment on planted signals: risky firms grade worse; no raw data in answers."""

from __future__ import annotations

import numpy as np
import polars as pl

from authops.products.catalog import PRODUCTS
from tests.products.conftest import responses

CODE = "bank_credit_assessment"


def _answers(city) -> pl.DataFrame:
    ent = city.world.enterprises
    usccs = ent.uscc.to_pylist()
    released = city.answer(CODE, "credit_assessment", usccs)
    df = pl.from_arrow(released)
    return df.with_columns(pl.Series("default", ent.default), pl.Series("stressed_arrears", ent.arrears),
                           pl.Series("stressed_lawsuit", ent.lawsuit))


def test_every_enterprise_answered_with_declared_values(city):
    df = _answers(city)
    assert df["score"].null_count() == 0
    assert df["score"].min() >= 0 and df["score"].max() <= 100
    assert set(df["grade"].unique()) <= set("ABCDE")
    codes = {c for s in df["reason_codes"] for c in s.split(";") if c}
    assert codes <= set(PRODUCTS[CODE].response[3].values)


def test_risky_firms_grade_worse(city):
    df = _answers(city)
    black = set(city.frame("enterprise_blacklist")["uscc"])
    major = set(city.frame("enterprise_credit_rating").filter(pl.col("has_major_risk"))["uscc"])
    df = df.with_columns(pl.col("claim").is_in(list(black)).alias("black"),
                         pl.col("claim").is_in(list(major)).alias("major"))
    clean = df.filter(~pl.col("black") & ~pl.col("major") & ~pl.col("default"))
    gap_black = clean["score"].mean() - df.filter("black")["score"].mean()
    gap_major = clean["score"].mean() - df.filter("major")["score"].mean()
    gap_default = df.filter(~pl.col("default"))["score"].mean() - df.filter("default")["score"].mean()
    print(f"mean score clean {clean['score'].mean():.1f}; gaps: blacklist {gap_black:.1f}, "
          f"major risk {gap_major:.1f}, latent default {gap_default:.1f}")
    assert gap_black >= 40 and gap_major >= 35 and gap_default >= 25
    bad = lambda d: d["grade"].is_in(["D", "E"]).mean()  # noqa: E731
    share_default, share_clean = bad(df.filter("default")), bad(clean)
    print(f"D/E share: defaulters {share_default:.2f}, clean firms {share_clean:.3f}")
    assert share_default >= 0.6 and share_clean <= 0.02
    # the planted tax-arrears x lawsuit interaction: firms with both score lowest
    both = df.filter(pl.col("stressed_arrears") & pl.col("stressed_lawsuit"))["score"].mean()
    neither = df.filter(~pl.col("stressed_arrears") & ~pl.col("stressed_lawsuit"))["score"].mean()
    assert both < neither - 20


def test_unknown_enterprise_is_not_found(city):
    released = city.answer(CODE, "credit_assessment", ["91320000MA00000000"])
    body = responses(CODE, released)[0]
    assert body["found"] is False and body["grade"] is None


def test_answers_hold_no_raw_data(city):
    usccs = city.world.enterprises.uscc.to_pylist()
    sample = [usccs[i] for i in np.random.default_rng(0).choice(len(usccs), 1500, replace=False)]
    bodies = responses(CODE, city.answer(CODE, "credit_assessment", sample))
    assert set(bodies[0]) == {f.name for f in PRODUCTS[CODE].response}
    assert city.leaks(CODE, bodies) == []
