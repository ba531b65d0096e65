"""Tech finance, trading limit and bid-win loan on planted signals, with the leak scan."""

from __future__ import annotations

import polars as pl

from tests.products.conftest import responses


def _flags(city) -> pl.DataFrame:
    ent = city.world.enterprises
    dishonest = city.frame("serious_dishonest_enterprises").filter(pl.col("serious_violation_removed_at").is_null())
    black = set(city.frame("enterprise_blacklist")["uscc"]) | set(dishonest["uscc"])
    return pl.DataFrame({"claim": ent.uscc.to_pylist(), "default": ent.default}).with_columns(
        pl.col("claim").is_in(list(black)).alias("black"))


# --- tech finance ---------------------------------------------------------------------------------
def test_tech_profile_tags_and_bands(city):
    ent = city.world.enterprises
    df = pl.from_arrow(city.answer("tech_finance", "tech_profile", ent.uscc.to_pylist()))
    tags = city.frame("enterprise_tags")
    ht = set(tags.filter("is_high_tech_enterprise")["uscc"])
    df = df.with_columns(pl.col("claim").is_in(list(ht)).alias("ht"))
    assert (df.filter("ht")["high_tech_enterprise"] == "yes").all()
    gap = df.filter("ht")["score"].mean() - df.filter(~pl.col("ht"))["score"].mean()
    print(f"tech score: high-tech {df.filter('ht')['score'].mean():.1f} vs others "
          f"{df.filter(~pl.col('ht'))['score'].mean():.1f}")
    assert gap >= 20
    inv = city.frame("invention_patents").group_by("uscc").agg(pl.col("patent_number").n_unique().alias("n"))
    joined = df.join(inv, left_on="claim", right_on="uscc", how="left").with_columns(pl.col("n").fill_null(0))
    expect = pl.when(pl.col("n") == 0).then(pl.lit("0")).when(pl.col("n") < 3).then(pl.lit("1-2")).when(
        pl.col("n") < 10).then(pl.lit("3-9")).otherwise(pl.lit("10+"))
    assert (joined["invention_patent_band"] == joined.select(expect.alias("e"))["e"]).all()
    rd = set(city.frame("rd_project_applications")["uscc"])
    assert (df.filter(~pl.col("claim").is_in(list(rd)))["rd_intensity_band"] == "no_data").all()
    assert city.leaks("tech_finance", responses("tech_finance", city.answer(
        "tech_finance", "tech_profile", ent.uscc.to_pylist()[:1500]))) == []


# --- trading limit --------------------------------------------------------------------------------
def test_trading_limits_fall_with_risk(city):
    ent = city.world.enterprises
    df = pl.from_arrow(city.answer("trading_limit_and_guarantee", "trading_limit", ent.uscc.to_pylist()))
    df = df.join(_flags(city), on="claim")
    assert (df.filter("black")["transaction_limit_band"] == "none").all()
    assert (df.filter("black")["risk_level"] == "prohibited").all()
    order = {b: i for i, b in enumerate(["none", "<500k", "500k-2M", "2M-10M", "10M-50M", ">=50M"])}
    df = df.with_columns(pl.col("transaction_limit_band").replace_strict(order).alias("lv"),
                         pl.col("guarantee_band").replace_strict(order).alias("gv"))
    assert (df["gv"] <= df["lv"]).all()
    clean = df.filter(~pl.col("default") & ~pl.col("black"))
    print(f"mean limit level: defaulters {df.filter('default')['lv'].mean():.2f}, clean {clean['lv'].mean():.2f}")
    assert df.filter("default")["lv"].mean() < clean["lv"].mean() - 1.0
    assert city.leaks("trading_limit_and_guarantee", responses("trading_limit_and_guarantee", city.answer(
        "trading_limit_and_guarantee", "trading_limit", ent.uscc.to_pylist()[:1500]))) == []


# --- bid-win loan ---------------------------------------------------------------------------------
def test_bid_win_claims_verified(city):
    from authops.products.catalog import PRODUCTS

    p = PRODUCTS["bid_win_loan"]
    tenders = city.frame("tendering_bidding_records")
    basic = city.frame("enterprise_basic_info").select("enterprise_name", "uscc")
    won = tenders.join(basic, left_on="winning_bidder", right_on="enterprise_name").head(300)
    true_claims = [p.claim({"uscc": u, "project_number": n})[1] for u, n in zip(won["uscc"], won["project_number"])]
    other = basic["uscc"].to_list()
    false_claims = [p.claim({"uscc": other[(i * 7 + 3) % len(other)], "project_number": n})[1]
                    for i, n in enumerate(won["project_number"])]
    false_claims = [c for c, t in zip(false_claims, true_claims) if c != t]
    rel = pl.from_arrow(city.answer("bid_win_loan", "tender_verification", true_claims + false_claims))
    head, tail = rel.head(len(true_claims)), rel.tail(len(false_claims))
    assert (head["answer"] == "yes").all() and (tail["answer"] == "no").all()
    assert tail["loan_limit_band"].null_count() == len(false_claims)
    amount = won["winning_bid_amount"].to_list()
    bands = head["amount_band"].to_list()
    edges = [100_000_000, 500_000_000, 2_000_000_000, 10_000_000_000]
    labels = ["<1M", "1M-5M", "5M-20M", "20M-100M", ">=100M"]
    assert bands == [labels[sum(a >= e for e in edges)] for a in amount]
    old = head.filter(pl.col("award_recency") == "over_24m")
    assert (old["loan_limit_band"] == "none").all()
    print(f"bid-win: {len(true_claims)} true claims verified, {len(false_claims)} false refused; "
          f"loan bands {head['loan_limit_band'].value_counts().sort('loan_limit_band').rows()}")
    bodies = responses("bid_win_loan", pl.DataFrame(rel).to_arrow())
    assert set(bodies[0]) == {"won", "amount_band", "award_recency", "loan_limit_band"}
    assert city.leaks("bid_win_loan", bodies) == []
