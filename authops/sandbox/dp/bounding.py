"""Bounding each privacy unit's contribution, and the bounded partial aggregates noise is added to.

The rule (the same whichever way the rows are split into partitions):
  1. a unit keeps its first `max_contributions` (K) rows in storage order (files in the order
     given, rows in file order);
  2. of those, it keeps the rows of its `groups_per_unit` (g) lowest cells (cells ordered by
     their `by` values);
  3. every measured value is clamped to its measure's [lower, upper] (a null sums as 0, clamped;
     nulls are left out of quantiles and histograms).
So one unit changes the bounded row multiset by at most K rows in at most g cells: the L1
sensitivity of counts is K and of a clamped sum K * max(|lower|, |upper|).

Why not OpenDP's own truncation (`int_range().over(id) < K` in a `make_private_lazyframe`
plan): on 10^7 rows with 10^6 people it costs 5-7x a plain group-by (a window over a
high-cardinality string column), 30x with the per-group and group-count filters, and its
group-count filter `rank() < g` keeps g - 1 cells (Polars' dense rank starts at 1) while being
charged for g. Here a count-min sketch does the bulk: every unit's rows fall in one bucket of
each of two hash-bucket count arrays, so a bucket count <= T proves that unit has <= T rows and
needs no truncation (T = min(K, g): such a unit is within both bounds). Only the rows of the remaining
units, usually a small share, go through the exact window. The result is identical to
applying rules 1-2 to every unit; collisions only send more units down the exact path.
Units are told apart by a 64-bit hash of their id computed inside the Parquet scan (the id
strings are never held in memory). Two ids with one hash (~3e-8 for a million people) would
be bounded as one unit: that only removes rows, it never lets a unit exceed its bounds. A
null id is one unit.

Fan-out: contribution bounding holds across partitions only if each unit lives in one
partition. Write partition p of P with the rows where `unit_partition(unit, P) == p`;
`partial_aggregate(..., partition=(p, P))` checks every row and refuses a file that breaks it,
and `merge_partials` refuses partials of different specs or repeated partitions. Partial
aggregates hold exact (un-noised) statistics: they never leave the trusted process.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from authops.core.errors import InvalidInput
from authops.sandbox.dp.spec import AggregateSpec, Measure

_UNIT_SEED = 0x5EED_D1FF
_PARTITION_SEED = 0xA17_0B5
UNIT, PART = "_unit", "_part"
N = "_n"  # bounded row count of a cell (or of a cell's bin)
BIN = "_bin"
Source = str | Path | Sequence[str | Path] | pl.LazyFrame  # Parquet file(s), or a lazy plan over them


def unit_partition(unit_column: str, partitions: int) -> pl.Expr:
    """The partition (0 .. partitions-1) a unit's rows belong in. Stable for the pinned Polars."""
    return (pl.col(unit_column).hash(seed=_PARTITION_SEED) % partitions).cast(pl.Int64)


def sum_column(i: int) -> str:
    return f"_sum{i}"


@dataclass
class Partial:
    """Exact bounded aggregates of one partition (or of all data when partition == (0, 1))."""

    fingerprint: str
    partition: tuple[int, int]
    cells: pl.DataFrame  # by..., _n, _sum0, _sum1, ...
    bins: dict[str, pl.DataFrame] = field(default_factory=dict)  # quantile/histogram: by..., _bin, _n
    rows_kept: int = 0


def _paths(source: Source) -> list[str]:
    if isinstance(source, (str, Path)):
        return [str(source)]
    paths = [str(p) for p in source]
    if not paths:
        raise InvalidInput("no input files")
    return paths


def _columns(spec: AggregateSpec) -> list[str]:
    cols = list(spec.by)
    for m in spec.measures:
        if m.column and m.column not in cols:
            cols.append(m.column)
    return cols


def read_rows(source: Source, spec: AggregateSpec, partitions: int = 1) -> pl.DataFrame:
    """`UNIT` (the unit id's 64-bit hash, computed in the scan) and the columns the spec needs,
    via `scan_parquet` with projection pushed down; with partitions > 1 also `PART`. A LazyFrame
    (e.g. a job spec's output plan) is read the same way, without materializing it first."""
    lf = source if isinstance(source, pl.LazyFrame) else pl.scan_parquet(_paths(source))
    schema = lf.collect_schema()
    cols = _columns(spec)
    missing = [c for c in [spec.unit_column, *cols] if c not in schema]
    if missing:
        raise InvalidInput(f"columns missing from the dataset: {', '.join(missing)}", details={"missing": missing})
    for m in spec.measures:
        if m.kind != "count" and not schema[m.column].is_integer():
            raise InvalidInput(f"measure {m.name!r}: column {m.column!r} is {schema[m.column]}, not an integer; "
                               "store money as integer fen", details={"column": m.column})
    extra = [unit_partition(spec.unit_column, partitions).alias(PART)] if partitions > 1 else []
    return lf.select(pl.col(spec.unit_column).hash(seed=_UNIT_SEED).alias(UNIT), *cols, *extra).collect()


def keep_mask(df: pl.DataFrame, spec: AggregateSpec) -> np.ndarray:
    """Which rows of `read_rows` output survive contribution bounding (rules 1-2 above)."""
    n = df.height
    k, g = spec.max_contributions, spec.groups_per_unit
    if n == 0:
        return np.zeros(0, dtype=bool)
    bits = max(10, min(21, int(n - 1).bit_length()))
    unit = df.get_column(UNIT).to_numpy()

    def may_be_over(row: int) -> np.ndarray:  # rows whose bucket in this sketch row counts > min(K, g)
        bucket = ((unit >> np.uint64(64 - bits * (row + 1))) & np.uint64((1 << bits) - 1)).view(np.int64)
        return (np.bincount(bucket, minlength=1 << bits) > min(k, g))[bucket]

    with ThreadPoolExecutor(2) as pool:  # a count-min sketch of two rows, one thread each
        first, second = pool.map(may_be_over, (0, 1))
    heavy_rows = first & second
    keep = ~heavy_rows
    heavy = np.flatnonzero(heavy_rows)
    if heavy.size:
        sub = df.select(UNIT, *spec.by)[heavy].lazy().with_columns(_i=pl.Series(heavy))
        sub = sub.filter(pl.int_range(pl.len()).over(UNIT) < k)
        if spec.by and g < k:
            sub = sub.filter(pl.struct(*spec.by).rank("dense").over(UNIT) <= g)
        keep[sub.select("_i").collect().get_column("_i").to_numpy()] = True
    return keep


def _codes(values: np.ndarray, m: Measure) -> np.ndarray:
    """Histogram bin index, or the quantile position code (see `release.quantile_scores`)."""
    c = np.asarray(m.candidates(), dtype=np.int64)
    if m.kind == "histogram":
        x = np.clip(values, c[0], c[-1])
        return np.minimum(np.searchsorted(c, x, side="right") - 1, len(c) - 2)
    left = np.searchsorted(c, values, side="left")
    equal = c[np.minimum(left, len(c) - 1)] == values
    return 2 * left + (equal & (left < len(c)))


def _check_overflow(rows: int, spec: AggregateSpec) -> None:
    for _, lo, hi in spec.sum_keys():
        if rows * max(abs(lo), abs(hi)) >= 2**62:
            raise InvalidInput("clamp bounds too wide for this many rows: an int64 sum could overflow")


def aggregate_rows(df: pl.DataFrame, spec: AggregateSpec, partition: tuple[int, int] = (0, 1)) -> Partial:
    """Bound the rows, then aggregate per cell: bounded count, clamped integer sums, bins."""
    keep = keep_mask(df, spec)
    rows = int(keep.sum())
    _check_overflow(rows, spec)
    kept = df.lazy().filter(pl.Series(keep)) if df.height else df.lazy()
    aggs = [pl.len().cast(pl.Int64).alias(N)]
    aggs += [pl.col(c).fill_null(0).clip(lo, hi).cast(pl.Int64).sum().alias(sum_column(i))
             for i, (c, lo, hi) in enumerate(spec.sum_keys())]
    # the streaming engine's group-by is about 1.5-2x faster than the in-memory one here
    cells = (kept.group_by(spec.by).agg(aggs) if spec.by else kept.select(aggs)).collect(engine="streaming")
    bins: dict[str, pl.DataFrame] = {}
    for m in spec.measures:
        if m.kind in ("quantile", "histogram"):
            part = kept.select(*spec.by, m.column).drop_nulls(m.column).collect()
            codes = _codes(part.get_column(m.column).to_numpy(), m)
            part = part.select(spec.by).with_columns(pl.Series(BIN, codes, dtype=pl.Int64))
            bins[m.name] = part.group_by([*spec.by, BIN]).agg(pl.len().cast(pl.Int64).alias(N))
    return Partial(spec.fingerprint(), partition, cells, bins, rows)


def partial_aggregate(source: Source, spec: AggregateSpec, *, partition: tuple[int, int] | None = None) -> Partial:
    """Bounded partial aggregate of one partition: the files of units with unit_partition == p."""
    spec.validate()
    p, total = partition or (0, 1)
    if not 0 <= p < total:
        raise InvalidInput(f"partition {p} is not in 0..{total - 1}")
    df = read_rows(source, spec, total)
    if total > 1 and df.height:
        wrong = int((df.get_column(PART) != p).sum())
        if wrong:
            raise InvalidInput(f"partition {p}/{total} holds {wrong} rows of units of other partitions; "
                                     "write partitions with unit_partition() so each unit is in exactly one")
        df = df.drop(PART)
    return aggregate_rows(df, spec, (p, total))


def _sum_frames(frames: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    frames = [f for f in frames if f.height] or frames[:1]
    merged = pl.concat(frames, how="vertical_relaxed")
    if not keys:
        return merged.sum()
    return merged.group_by(keys).agg(pl.exclude(keys).sum())


def merge_partials(partials: Sequence[Partial], spec: AggregateSpec) -> Partial:
    """Add partial aggregates of disjoint unit partitions (before any noise)."""
    if not partials:
        raise InvalidInput("no partial aggregates to merge")
    fp = spec.fingerprint()
    if any(pa.fingerprint != fp for pa in partials):
        raise InvalidInput("partial aggregates were computed for a different spec")
    totals = {pa.partition[1] for pa in partials}
    indices = [pa.partition[0] for pa in partials]
    if len(totals) != 1 or len(set(indices)) != len(indices) or len(partials) > totals.pop():
        raise InvalidInput("partials must come from distinct partitions of one unit partitioning "
                                 "(each privacy unit in exactly one partition)")
    if len(partials) == 1:
        return partials[0]
    cells = _sum_frames([pa.cells for pa in partials], spec.by)
    bins = {name: _sum_frames([pa.bins[name] for pa in partials], [*spec.by, BIN]) for name in partials[0].bins}
    rows = sum(pa.rows_kept for pa in partials)
    _check_overflow(rows, spec)
    return Partial(fp, (0, 1), cells, bins, rows)


def exact_aggregate(source: Source, spec: AggregateSpec) -> Partial:
    """Single-pass bounded aggregate without noise: for tests and benchmarks inside the jail only."""
    spec.validate()
    return aggregate_rows(read_rows(source, spec), spec)
