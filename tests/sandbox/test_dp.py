"""Differential privacy for aggregates: features, budget maps, bounding, suppression, fan-out, attacks."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from authops.core.data.schema import FieldSpec, Grade, Kind, PrivacyUnit, ResourceSchema
from authops.core.errors import InvalidInput
from authops.sandbox import dp as sdp
from authops.sandbox.dp import (
    FORBIDDEN_FEATURES, AggregateSpec, Measure, ensure_features, exact_aggregate, merge_and_release, merge_partials,
    partial_aggregate, release_aggregate, release_partial, unit_partition,
)
from authops.sandbox.dp import bounding
from authops.sandbox.dp.release import laplace_threshold, laplace_vector, noisy_max, quantile_scores

INSTS = ["H001", "H002", "H003"]
MONTHS = [202401, 202402, 202403, 202404]


def settlements(n_people: int = 400, rows: int = 4, seed: int = 1) -> pl.DataFrame:
    """Settlement-like rows: person, institution, month, amount in fen (people in random order)."""
    rng = np.random.default_rng(seed)
    person = rng.integers(0, n_people, n_people * rows)
    return pl.DataFrame({
        "person_id": [f"3205{p:014d}" for p in person],
        "institution": rng.choice(INSTS, person.size),
        "month": rng.choice(MONTHS, person.size).astype(np.int64),
        "amount": rng.integers(1_000, 50_000, person.size),
    })


def person(pid: str, n: int, institution: str = "H001", month: int = 202401, amount: int = 10**9) -> pl.DataFrame:
    return pl.DataFrame({"person_id": [pid] * n, "institution": [institution] * n, "month": [month] * n,
                         "amount": [amount] * n})


def write(df: pl.DataFrame, path: Path) -> Path:
    df.write_parquet(path)
    return path


def spec(**kw) -> AggregateSpec:
    base = dict(by=["institution", "month"], public_keys={"institution": INSTS, "month": MONTHS},
                measures=[Measure("n", "count"), Measure("total", "sum", "amount", 0, 50_000)],
                unit_column="person_id", epsilon=1.0, max_contributions=2, min_cell=0)
    base.update(kw)
    return AggregateSpec(**base)


def reference_keep(df: pl.DataFrame, s: AggregateSpec) -> np.ndarray:
    """The bounding rule applied to every unit with OpenDP's own truncation expressions."""
    lf = df.lazy().with_row_index("_i").filter(pl.int_range(pl.len()).over(s.unit_column) < s.max_contributions)
    if s.groups_per_unit < s.max_contributions:
        lf = lf.filter(pl.struct(*s.by).rank("dense").over(s.unit_column) <= s.groups_per_unit)
    keep = np.zeros(df.height, dtype=bool)
    keep[lf.select("_i").collect().get_column("_i").to_numpy()] = True
    return keep


# --- features -----------------------------------------------------------------------------------

def test_only_contrib_is_enabled(tmp_path):
    import opendp.prelude as dp

    before = set(dp.GLOBAL_FEATURES)
    try:
        dp.enable_features("honest-but-curious", "idealized-numerics")  # as if something else had
        assert "contrib" in ensure_features() and not (ensure_features() & FORBIDDEN_FEATURES)
        release_aggregate(write(settlements(), tmp_path / "d.parquet"), spec())
        assert "contrib" in dp.GLOBAL_FEATURES
        assert not (dp.GLOBAL_FEATURES & FORBIDDEN_FEATURES), dp.GLOBAL_FEATURES
    finally:
        dp.GLOBAL_FEATURES.clear()
        dp.GLOBAL_FEATURES.update(before)


def test_no_code_enables_a_forbidden_feature():
    package = Path(sdp.__file__).resolve().parents[2]
    offenders = []
    for path in [*package.rglob("*.py"), *(package.parent / "bench").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"enable_features\(([^)]*)\)", text):
            if any(f in call for f in FORBIDDEN_FEATURES):
                offenders.append(str(path))
    assert not offenders


# --- budget -------------------------------------------------------------------------------------

def test_epsilon_is_what_the_maps_say_and_matches_opendp_polars(tmp_path):
    import opendp.prelude as dp

    s = spec(max_contributions=3, measures=[Measure("n", "count"), Measure("total", "sum", "amount", 0, 50_000),
                                            Measure("avg", "mean", "amount", 0, 50_000)])
    path = write(settlements(), tmp_path / "d.parquet")
    r = release_aggregate(path, s)
    s_count, s_sum = r.scales["n"], r.scales["total"]
    again = laplace_vector(s_count).map(3) + laplace_vector(s_sum).map(3 * 50_000)
    assert r.epsilon == pytest.approx(again) and again <= s.epsilon
    assert r.delta == 0.0 and r.epsilon == pytest.approx(1.0, rel=1e-6)  # mean is post-processing: 2 components

    # OpenDP's own analysis of the same query, truncation and scales (its Polars path) spends the same
    schema = pl.scan_parquet(path).collect_schema()
    types = {pl.String: "String", pl.Int64: "i64"}
    domain = dp.lazyframe_domain([dp.series_domain(c, dp.option_domain(dp.atom_domain(T=types[t])))
                                  for c, t in schema.items()])
    domain = dp.with_margin(domain, dp.polars.Margin(by=[], max_length=2**31))
    plan = (pl.LazyFrame(schema=schema).filter(pl.int_range(pl.len()).over("person_id") < 3)
            .group_by(s.by).agg(dp.len(scale=s_count, signed=True),
                                pl.col("amount").fill_null(0).dp.sum((0, 50_000), scale=s_sum)))
    keys = pl.DataFrame({"institution": INSTS}).join(pl.DataFrame({"month": MONTHS}), how="cross")
    plan = keys.lazy().join(plan, on=s.by, how="left", nulls_equal=True)
    m = dp.m.make_private_lazyframe(domain, dp.symmetric_id_distance(pl.col("person_id")), dp.max_divergence(),
                                    plan)
    assert m.map(1) == pytest.approx(r.epsilon, rel=1e-9)


def test_partition_selection_spends_delta_within_the_spec(tmp_path):
    s = spec(public_keys=None, delta=1e-6, max_contributions=2, max_groups_per_unit=1, min_cell=5)
    r = release_aggregate(write(settlements(2000), tmp_path / "d.parquet"), s)
    assert 0 < r.delta <= 1e-6 and r.epsilon <= 1.0
    assert r.threshold == max(5, r.threshold)
    e, d = laplace_threshold(r.scales["n"], r.threshold).map((1, 2, 2))
    assert (e, d) == (pytest.approx(0.5, rel=1e-6), r.delta)
    assert laplace_threshold(r.scales["n"], r.threshold - 1).map((1, 2, 2))[1] > 1e-6 or r.threshold == 5


def test_maps_used_for_parallel_cells_are_linear():
    for m in (laplace_vector(3.0), noisy_max(7.0)):
        assert m.map(5) == pytest.approx(5 * m.map(1))


# --- bounding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k,g", [(1, None), (3, None), (4, 2), (6, 1)])
def test_sketch_bounding_equals_exact_truncation(tmp_path, seed, k, g):
    rng = np.random.default_rng(seed)
    df = settlements(3000, 3, seed)
    heavy = [person(f"X{i}", int(rng.integers(5, 40)), INSTS[i % 3], MONTHS[i % 4], 100) for i in range(30)]
    nulls = person("", 30, "H002", 202402, 7).with_columns(person_id=pl.lit(None, dtype=pl.String))
    df = pl.concat([df, *heavy, nulls]).sample(fraction=1.0, shuffle=True, seed=seed)
    s = spec(max_contributions=k, max_groups_per_unit=g)
    rows = bounding.read_rows(write(df, tmp_path / "d.parquet"), s)
    assert (bounding.keep_mask(rows, s) == reference_keep(df, s)).all()


def test_each_unit_is_bounded_and_clamped(tmp_path):
    base = settlements()
    big = pl.concat([person("X", 500, "H001", 202401), person("X", 50, "H002", 202402),
                     person("X", 50, "H003", 202403, amount=-10**9)])
    s = spec(max_contributions=4, max_groups_per_unit=2)
    without = exact_aggregate(write(base, tmp_path / "a.parquet"), s).cells
    with_x = exact_aggregate(write(pl.concat([base, big]), tmp_path / "b.parquet"), s).cells
    diff = with_x.join(without, on=s.by, how="full", coalesce=True, suffix="_0").fill_null(0).with_columns(
        dn=pl.col("_n") - pl.col("_n_0"), ds=pl.col("_sum0") - pl.col("_sum0_0")).filter(pl.col("dn") != 0)
    assert diff.height <= 2 and diff["dn"].sum() <= 4
    assert diff["ds"].abs().sum() <= 4 * 50_000  # each row clamped to [0, 50000]


def test_sums_need_integer_columns(tmp_path):
    df = settlements().with_columns(pl.col("amount").cast(pl.Float64))
    with pytest.raises(InvalidInput, match="integer"):
        release_aggregate(write(df, tmp_path / "f.parquet"), spec())


def test_spec_takes_the_unit_from_the_catalogue():
    fields = (FieldSpec(name="person_id", name_zh="人", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4),
              FieldSpec(name="institution", name_zh="机构", kind=Kind.CODE, grade=Grade.L1),
              FieldSpec(name="month", name_zh="月", kind=Kind.COUNT, grade=Grade.L1),
              FieldSpec(name="amount", name_zh="金额", kind=Kind.MONEY, grade=Grade.L3))
    schema = ResourceSchema(fields=fields, privacy_unit=PrivacyUnit.PERSON, unit_field="person_id")
    s = AggregateSpec.for_resource(schema, by=["institution"], public_keys={"institution": INSTS}, epsilon=1.0,
                                   measures=[Measure("total", "sum", "amount", 0, 10)])
    assert s.unit_column == "person_id"
    with pytest.raises(InvalidInput):
        AggregateSpec.for_resource(schema.model_copy(update={"privacy_unit": PrivacyUnit.NONE}), by=[],
                                   epsilon=1.0, measures=[])
    with pytest.raises(InvalidInput, match="delta"):
        spec(public_keys=None).validate()


# --- release policy -----------------------------------------------------------------------------

def test_cells_under_min_cell_never_appear(tmp_path):
    df = settlements(600, 4).filter(~((pl.col("institution") == "H003") & pl.col("month").is_in([202403, 202404])))
    df = pl.concat([df, person("Y", 1, "H003", 202404, 5)])  # one near-empty cell, one empty
    hist = Measure("spread", "histogram", "amount", 0, 50_000, bins=5)
    s = spec(min_cell=25, epsilon=4.0, measures=[Measure("n", "count"), hist])  # noise scale 1
    partial = partial_aggregate(write(df, tmp_path / "d.parquet"), s)
    for _ in range(200):
        r = release_partial(partial, s)
        t = pl.from_arrow(r.table)
        assert (t["n"] >= 25).all()
        assert t.filter((pl.col("institution") == "H003") & pl.col("month").is_in([202403, 202404])).height == 0
        assert (pl.from_arrow(r.histograms["spread"])["count"] >= 25).all()
        assert r.suppressed + t.height == len(INSTS) * len(MONTHS)


def test_unknown_keys_release_only_cells_of_many_units(tmp_path):
    rng = np.random.default_rng(5)
    common = pl.DataFrame({"person_id": [f"P{i}" for i in range(3000)],
                           "institution": rng.choice(INSTS, 3000), "month": rng.choice(MONTHS, 3000),
                           "amount": rng.integers(0, 1000, 3000)})
    rare = [person(f"R{i}", 300, f"RARE{i % 5}", 202401, 10) for i in range(8)]  # <= 2 units per rare cell
    s = spec(public_keys=None, delta=1e-7, max_contributions=1, min_cell=10)
    partial = partial_aggregate(write(pl.concat([common, *rare]), tmp_path / "d.parquet"), s)
    seen = set()
    for _ in range(200):
        t = pl.from_arrow(release_partial(partial, s).table)
        seen |= set(t["institution"].to_list())
        assert (t["n"] >= 10).all()
    assert seen == set(INSTS)  # every common institution appears, no RARE one ever does


def test_quantile_scores_and_median(tmp_path):
    values = np.array([1, 3, 3, 5, 9])
    cands = [0, 3, 5, 10]
    m = Measure("q", "quantile", "v", alpha=0.5, bins=cands)
    codes = bounding._codes(values, m)
    counts = np.bincount(codes, minlength=2 * len(cands) + 1)[None, :]
    got = quantile_scores(counts, 0.5)[0]
    want = [abs(0.5 * (values < c).sum() - 0.5 * (values > c).sum()) * 1_000_000 for c in cands]
    assert list(got) == want
    df = settlements(2000, 3).with_columns(amount=pl.col("amount") // 1000 * 1000)
    s = spec(epsilon=20.0, max_contributions=3, measures=[Measure("med", "quantile", "amount", 0, 50_000,
                                                                  alpha=0.5, bins=50)])
    t = pl.from_arrow(release_aggregate(write(df, tmp_path / "q.parquet"), s).table)
    truth = df.group_by(s.by).agg(pl.col("amount").median().alias("true"))
    gap = t.join(truth, on=s.by).select((pl.col("med") - pl.col("true")).abs().max()).item()
    assert gap <= 3_000


# --- fan-out ------------------------------------------------------------------------------------

def test_fan_out_merge_equals_single_pass_before_noise(tmp_path):
    df = pl.concat([settlements(1500, 5), person("X", 90, "H002", 202402), person("X", 9, "H001", 202403)])
    df = df.sample(fraction=1.0, shuffle=True, seed=3)
    q = Measure("med", "quantile", "amount", 0, 50_000, alpha=0.5)
    h = Measure("h", "histogram", "amount", 0, 50_000, bins=7)
    s = spec(max_contributions=3, max_groups_per_unit=2,
             measures=[Measure("n", "count"), Measure("total", "sum", "amount", 0, 40_000), q, h])
    parts = 4
    tagged = df.with_columns(_p=unit_partition("person_id", parts))
    files = [write(tagged.filter(pl.col("_p") == p).drop("_p"), tmp_path / f"p{p}.parquet") for p in range(parts)]
    single = exact_aggregate(write(df, tmp_path / "all.parquet"), s)
    merged = merge_partials([partial_aggregate(f, s, partition=(p, parts)) for p, f in enumerate(files)], s)

    def same(a: pl.DataFrame, b: pl.DataFrame) -> None:
        key = [c for c in a.columns if not c.startswith("_n") and not c.startswith("_sum")]
        assert a.sort(key).equals(b.select(a.columns).sort(key))

    same(single.cells, merged.cells)
    for name in ("med", "h"):
        same(single.bins[name], merged.bins[name])
    r = merge_and_release([partial_aggregate(f, s, partition=(p, parts)) for p, f in enumerate(files)], s)
    assert release_aggregate(files[0], s, partitioned=True).epsilon <= 1.0  # one file: a single pass
    assert r.epsilon <= 1.0 and release_aggregate(files, s, partitioned=True).epsilon <= 1.0


def test_fan_out_refuses_broken_partitions(tmp_path):
    df = settlements()
    s = spec()
    whole = write(df, tmp_path / "all.parquet")
    with pytest.raises(InvalidInput):
        partial_aggregate(whole, s, partition=(0, 2))
    one = partial_aggregate(whole, s)
    with pytest.raises(InvalidInput):
        merge_partials([one, one], s)
    with pytest.raises(InvalidInput):
        merge_partials([one], spec(max_contributions=5))


# --- attack -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_differencing_attack_is_bounded_by_epsilon(tmp_path):
    """Two releases over data with and without one person who has 500 rows: the attacker's best
    (likelihood-ratio) guess of which was released is right at most e^eps / (1 + e^eps) of the time."""
    s = spec(epsilon=1.0, max_contributions=2)
    base = settlements(300, 3)
    target = person("3205VICTIM", 500, "H001", 202401, amount=40_000)
    p0 = partial_aggregate(write(base, tmp_path / "d0.parquet"), s)
    p1 = partial_aggregate(write(pl.concat([base, target]), tmp_path / "d1.parquet"), s)
    cell = (pl.col("institution") == "H001") & (pl.col("month") == 202401)
    c0, c1 = (p.cells.filter(cell).row(0, named=True) for p in (p0, p1))
    assert c1["_n"] - c0["_n"] == 2 and c1["_sum0"] - c0["_sum0"] == 80_000  # 500 rows bounded to 2

    rng = np.random.default_rng(11)
    trials, right = 1000, 0
    for _ in range(trials):
        secret = int(rng.integers(0, 2))
        r = release_partial(p1 if secret else p0, s)
        row = pl.from_arrow(r.table).filter(cell).row(0, named=True)
        sc, ss = r.scales["n"], r.scales["total"]
        llr = ((abs(row["n"] - c0["_n"]) - abs(row["n"] - c1["_n"])) / sc
               + (abs(row["total"] - c0["_sum0"]) - abs(row["total"] - c1["_sum0"])) / ss)
        right += int((llr > 0) == bool(secret))
    bound = math.exp(s.epsilon) / (1 + math.exp(s.epsilon))
    slack = 4 * math.sqrt(bound * (1 - bound) / trials)
    assert right / trials <= bound + slack
    assert right / trials > 0.5 - slack  # the test has power: it is a real attacker, not a coin
