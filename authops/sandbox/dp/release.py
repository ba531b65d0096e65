"""Noise, added once per released cell to bounded aggregates, with OpenDP's mechanisms and maps.

Budget: epsilon is split evenly over the components the spec needs: the count (always: it
decides min-cell suppression), one per distinct clamped sum (a mean is noisy sum / noisy count,
post-processing), one per quantile, one per histogram. Each component's noise scale is set
directly from its sensitivity (no search), then the built measurement's privacy map is asked
what it spends; the release refuses to run if the maps add up to more than the spec allows.

  * counts, sums, histograms: `make_laplace` on int64 vectors (discrete Laplace), L1 distance;
  * unknown keys: `make_laplace_threshold` on the cell -> count map (partition selection, the
    L0/L1/Linf distance of one unit), threshold = max(smallest passing delta, min_cell); the
    cells it releases are public from then on, and the other components run on them;
  * quantiles: integer scores |(1-a)#(x<c) - a#(x>c)| of each candidate, `make_noisy_max`.
Sequential composition adds the components' epsilons; cells of one component compose in
parallel (each unit's K rows are split among cells, and every map here is linear in d_in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from authops.core.errors import AuthopsError, InvalidInput
from authops.sandbox.dp.bounding import (
    BIN, N, Partial, Source, merge_partials, partial_aggregate, sum_column,
)
from authops.sandbox.dp.spec import AggregateSpec, Measure, Release, ensure_features

ALPHA_DENOMINATOR = 1_000_000  # quantile alpha as a fraction: integer scores, no float sensitivity
_SLACK = 1e-9


class BudgetExceeded(AuthopsError):
    """The privacy maps report more than the spec allows (a bug here, never a data problem)."""

    status_code = 500
    code = "dp_budget_exceeded"


def _dp():
    import opendp.prelude as dp

    ensure_features()
    return dp


def _vector(dp, T=None):
    return dp.vector_domain(dp.atom_domain(T=T or dp.i64, nan=False))


def laplace_vector(scale: float):
    dp = _dp()
    return dp.m.make_laplace(_vector(dp), dp.l1_distance(T=dp.i64), scale)


def noisy_max(scale: float):
    dp = _dp()
    return dp.m.make_noisy_max(_vector(dp), dp.linf_distance(T=dp.i64), dp.max_divergence(), scale, negate=True)


def laplace_threshold(scale: float, threshold: int):
    dp = _dp()
    space = dp.map_domain(dp.atom_domain(T=dp.String), dp.atom_domain(T=dp.i64))
    return dp.m.make_laplace_threshold(space, dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
                                       scale, threshold)


def calibrate(make: Callable[[float], object], d_in, epsilon: float) -> tuple[object, float, float]:
    """(measurement, scale, epsilon spent): the scale set from the map's slope, then checked by it."""
    unit = make(1.0).map(d_in)  # type: ignore[attr-defined]
    unit = unit[0] if isinstance(unit, tuple) else unit
    scale = unit / epsilon * (1 + _SLACK)
    for _ in range(8):
        m = make(scale)
        spent = m.map(d_in)  # type: ignore[attr-defined]
        spent = spent[0] if isinstance(spent, tuple) else spent
        if spent <= epsilon:
            return m, scale, spent
        scale *= 1 + 1e-6
    raise BudgetExceeded("could not calibrate a noise scale within the budget")


def selection_threshold(scale: float, d_in: tuple[int, int, int], delta: float) -> int:
    """Smallest threshold whose map spends at most `delta` for partition selection."""
    def ok(t: int) -> bool:
        return laplace_threshold(scale, t).map(d_in)[1] <= delta

    lo, hi = d_in[2], d_in[2] + max(1, math.ceil(scale * math.log(max(d_in[0], 1) / delta)))
    while not ok(hi):
        lo, hi = hi, hi + (hi - d_in[2])
    while hi - lo > 1:  # invariant: ok(hi); lo unknown or failing
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _public_cells(spec: AggregateSpec, cells: pl.DataFrame) -> pl.DataFrame:
    if not spec.by:
        return cells  # one global cell, always present
    try:
        frames = [pl.Series(c, list(dict.fromkeys(spec.public_keys[c])), dtype=cells.schema[c]).to_frame()  # type: ignore[index]
                  for c in spec.by]
    except (TypeError, pl.exceptions.PolarsError) as exc:
        raise InvalidInput(f"public keys do not match the group-by columns' types: {exc}") from None
    grid = frames[0]
    for f in frames[1:]:
        grid = grid.join(f, how="cross")
    out = grid.join(cells, on=spec.by, how="left", nulls_equal=True)
    return out.with_columns(pl.exclude(spec.by).fill_null(0))


def quantile_scores(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Per cell x candidate: |(1-a)*#(x < c) - a*#(x > c)| in units of 1/ALPHA_DENOMINATOR.

    `counts[cell, code]` counts values by position code: 2j+1 = equal to candidate j, 2j = between
    candidates j-1 and j (0 below the first, 2m above the last).
    """
    num = round(alpha * ALPHA_DENOMINATOR)
    cum = np.cumsum(counts, axis=1)
    m = (counts.shape[1] - 1) // 2
    below = cum[:, 0:2 * m:2]  # values strictly below candidate j: codes 0 .. 2j
    above = cum[:, -1:] - cum[:, 1:2 * m:2]  # strictly above candidate j: codes 2j+2 .. 2m
    return np.abs((ALPHA_DENOMINATOR - num) * below - num * above)


def _bin_matrix(frame: pl.DataFrame, cells: pl.DataFrame, by: list[str], width: int) -> np.ndarray:
    """Counts per (released cell, bin) as a dense matrix in the order of `cells`."""
    out = np.zeros((cells.height, width), dtype=np.int64)
    if not frame.height or not cells.height:
        return out
    idx = cells.select(by).with_row_index("_row")
    hit = frame.join(idx, on=by, how="inner", nulls_equal=True) if by else frame.with_columns(_row=pl.lit(0))
    np.add.at(out, (hit.get_column("_row").to_numpy(), hit.get_column(BIN).to_numpy()), hit.get_column(N).to_numpy())
    return out


def _components(spec: AggregateSpec) -> list[str]:
    comps = ["count"] + [sum_column(i) for i, _ in enumerate(spec.sum_keys())]
    return comps + [m.name for m in spec.measures if m.kind in ("quantile", "histogram")]


def release_partial(merged: Partial, spec: AggregateSpec) -> Release:
    """Add noise once to a merged bounded aggregate and return what may be released."""
    spec.validate()
    k, g = spec.max_contributions, spec.groups_per_unit
    eps_each = spec.epsilon / len(_components(spec))
    scales: dict[str, float] = {}
    spent, delta, threshold = 0.0, 0.0, None
    count_name = spec.count_measure().name

    if spec.public_keys is not None or not spec.by:
        cells = _public_cells(spec, merged.cells)
        m, scale, e = calibrate(laplace_vector, k, eps_each)
        noisy_n = np.asarray(m(cells.get_column(N).to_list()), dtype=np.int64)  # type: ignore[operator]
    else:
        d_in = (g, k, k)
        _, scale, e = calibrate(lambda s: laplace_threshold(s, 2**62), d_in, eps_each)
        threshold = max(selection_threshold(scale, d_in, spec.delta), spec.min_cell)
        m = laplace_threshold(scale, threshold)
        e, delta = m.map(d_in)  # type: ignore[attr-defined]
        counts = merged.cells.get_column(N).to_list()
        out = m({str(i): c for i, c in enumerate(counts)})  # type: ignore[operator]
        rows = sorted(int(i) for i in out)
        cells = merged.cells[rows] if rows else merged.cells.clear()
        noisy_n = np.asarray([out[str(i)] for i in rows], dtype=np.int64)
    scales[count_name] = scale
    spent += e

    values: dict[str, np.ndarray] = {}
    for i, key in enumerate(spec.sum_keys()):
        m, scale, e = calibrate(laplace_vector, k * max(abs(key[1]), abs(key[2])), eps_each)
        values[sum_column(i)] = np.asarray(m(cells.get_column(sum_column(i)).to_list()), dtype=np.int64)  # type: ignore[operator]
        for meas in spec.measures:  # a mean is its sum's noise divided by the noisy count
            if meas.kind in ("sum", "mean") and (meas.column, *meas.clamp) == key:
                scales[meas.name] = scale
        spent += e

    histograms = {}
    for meas in spec.measures:
        if meas.kind == "quantile":
            values[meas.name], e, scales[meas.name] = _quantiles(merged, cells, spec, meas, eps_each)
            spent += e
        elif meas.kind == "histogram":
            histograms[meas.name], e, scales[meas.name] = _histogram(merged, cells, spec, meas, eps_each)
            spent += e

    if spent > spec.epsilon * (1 + 1e-6) or delta > spec.delta * (1 + 1e-6) + 1e-300:
        raise BudgetExceeded(f"privacy maps report ({spent}, {delta}), above ({spec.epsilon}, {spec.delta})")
    return _assemble(spec, cells, noisy_n, values, histograms, scales, spent, delta, threshold)


def _quantiles(merged: Partial, cells: pl.DataFrame, spec: AggregateSpec, meas: Measure, eps: float):
    cands = meas.candidates()
    counts = _bin_matrix(merged.bins[meas.name], cells, spec.by, 2 * len(cands) + 1)
    num = round(meas.alpha * ALPHA_DENOMINATOR)  # type: ignore[operator]
    per_row = max(num, ALPHA_DENOMINATOR - num)
    # one unit moves <= k_c rows of cell c, sum k_c <= K: the cells' maps add up to map(K * per_row)
    m, scale, e = calibrate(noisy_max, spec.max_contributions * per_row, eps)
    picks = [cands[m(list(map(int, row)))] for row in quantile_scores(counts, meas.alpha)]  # type: ignore[operator]
    return np.asarray(picks, dtype=np.int64), e, scale / ALPHA_DENOMINATOR


def _histogram(merged: Partial, cells: pl.DataFrame, spec: AggregateSpec, meas: Measure, eps: float):
    edges = meas.candidates()
    width = len(edges) - 1
    counts = _bin_matrix(merged.bins[meas.name], cells, spec.by, width)
    m, scale, e = calibrate(laplace_vector, spec.max_contributions, eps)
    noisy = np.asarray(m(counts.ravel().tolist()), dtype=np.int64).reshape(counts.shape)  # type: ignore[operator]
    rep = cells.select(spec.by)[np.repeat(np.arange(cells.height), width)] if spec.by else pl.DataFrame()
    b = np.tile(np.arange(width), cells.height)
    lower = np.asarray(edges[:-1])[b]
    upper = np.asarray(edges[1:])[b]
    frame = rep.with_columns(pl.Series("bin", b), pl.Series("bin_lower", lower), pl.Series("bin_upper", upper),
                             pl.Series("count", noisy.ravel()))
    return frame, e, scale


def _assemble(spec, cells, noisy_n, values, histograms, scales, spent, delta, threshold) -> Release:
    keep = noisy_n >= spec.min_cell
    out = cells.select(spec.by).filter(pl.Series(keep)) if spec.by else pl.DataFrame().with_columns()
    sums = {key: sum_column(i) for i, key in enumerate(spec.sum_keys())}
    cols = []
    for meas in spec.measures:
        if meas.kind == "count":
            v = noisy_n
        elif meas.kind == "sum":
            v = values[sums[(meas.column, *meas.clamp)]]
            lower, upper = meas.clamp
            # post-processing: a sum of values clamped to [lower, upper] has the sign they share
            v = np.maximum(v, 0) if lower >= 0 else (np.minimum(v, 0) if upper <= 0 else v)
        elif meas.kind == "mean":
            v = values[sums[(meas.column, *meas.clamp)]] / np.maximum(noisy_n, 1)
            v = np.clip(v, *meas.clamp)  # post-processing: a mean of clamped values lies in the clamp range
        elif meas.kind == "quantile":
            v = values[meas.name]
        else:
            continue
        cols.append(pl.Series(meas.name, v[keep]))
    if spec.count_measure() not in spec.measures:
        cols.insert(0, pl.Series(spec.count_measure().name, noisy_n[keep]))
    out = out.with_columns(cols) if spec.by else pl.DataFrame(cols)
    hists = {}
    kept_cells = cells.select(spec.by).filter(pl.Series(keep))
    for name, frame in histograms.items():
        frame = frame.filter(pl.col("count") >= spec.min_cell)
        if spec.by:
            frame = frame.join(kept_cells, on=spec.by, how="semi", nulls_equal=True)
        elif not keep.all():
            frame = frame.clear()
        hists[name] = frame.to_arrow()
    return Release(out.to_arrow(), hists, spent, delta, scales, threshold, int((~keep).sum()),
                   {"noise": "discrete Laplace (integers); quantiles by noisy max",
                    "max_contributions": spec.max_contributions, "max_groups_per_unit": spec.groups_per_unit})


def merge_and_release(partials: Sequence[Partial], spec: AggregateSpec) -> Release:
    """Merge the bounded partial aggregates of disjoint unit partitions, then add noise once."""
    return release_partial(merge_partials(partials, spec), spec)


def release_aggregate(source: Source, spec: AggregateSpec, *, partitioned: bool = False) -> Release:
    """DP aggregate of Parquet file(s): bound each unit, aggregate, add noise once, suppress.

    With `partitioned=True`, file i must hold exactly the units of partition i of len(source)
    (see `unit_partition`); files are then bounded one at a time, so memory follows the largest
    file, not the whole dataset.
    """
    spec.validate()
    if isinstance(source, pl.LazyFrame):
        return merge_and_release([partial_aggregate(source, spec)], spec)
    files = [source] if isinstance(source, (str, Path)) else list(source)
    if partitioned and len(files) > 1:
        partials = [partial_aggregate(f, spec, partition=(i, len(files))) for i, f in enumerate(files)]
        return merge_and_release(partials, spec)
    return merge_and_release([partial_aggregate(source, spec)], spec)


__all__ = ["BudgetExceeded", "calibrate", "merge_and_release", "release_aggregate", "release_partial"]
