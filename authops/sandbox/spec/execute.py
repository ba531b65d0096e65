"""Run a planned job on its inputs with polars, lazily, and hand each output to the gate.

Each output is the *pre-release* table: the release gate, not this module, turns it into
what leaves the sandbox. Aggregate outputs are rows (group columns, measured columns and
the privacy unit), because the DP engine bounds each unit's contribution and aggregates
itself; verify, record and model outputs are the rows their policy releases from.

Runs inside the jail on raw rows, so errors never quote the engine's message (which can
carry values): they name the input, output or step, and the kind of failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import polars as pl
import pyarrow as pa

from authops.core.data.schema import arrow_type
from authops.sandbox.spec.check import POLARS
from authops.sandbox.spec.errors import SpecError
from authops.sandbox.spec.plan import DerivePlan, FilterPlan, JoinPlan, Plan, PlannedInput, PlannedOutput, SummarizePlan

InputData = Union[pl.LazyFrame, pl.DataFrame, pa.Table, str, Path]
_AGG = {"count": lambda c: pl.len().cast(pl.Int64),
        "count_distinct": lambda c: pl.col(c).drop_nulls().n_unique().cast(pl.Int64),
        "sum": lambda c: pl.col(c).sum(), "mean": lambda c: pl.col(c).mean(),
        "min": lambda c: pl.col(c).min(), "max": lambda c: pl.col(c).max(),
        "any": lambda c: pl.col(c).any(), "all": lambda c: pl.col(c).all()}


def _source(inputs: Mapping[str, InputData], inp: PlannedInput) -> InputData:
    if inp.alias in inputs:
        return inputs[inp.alias]
    if inp.resource in inputs:
        return inputs[inp.resource]
    raise SpecError(f"no data given for inputs[{inp.alias}] (resource {inp.resource!r}); pass it by alias or code")


def _lazy(data: InputData, inp: PlannedInput) -> pl.LazyFrame:
    """The input as a lazy frame of its declared fields, typed as its schema says, named alias.field."""
    if isinstance(data, str | Path):
        lf = pl.scan_parquet(data)  # streams; only the declared fields are read
    elif isinstance(data, pa.Table):
        lf = pl.from_arrow(data).lazy()  # type: ignore[union-attr]
    elif isinstance(data, pl.DataFrame):
        lf = data.lazy()
    elif isinstance(data, pl.LazyFrame):
        lf = data
    else:
        raise SpecError(f"inputs[{inp.alias}]: give a polars frame, an Arrow table or a Parquet path, "
                        f"not {type(data).__name__}")
    try:
        have = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SpecError(f"inputs[{inp.alias}]: the data cannot be read ({type(exc).__name__})") from None
    missing = [f for f in inp.fields if f not in have]
    if missing:
        raise SpecError(f"inputs[{inp.alias}]: the data of {inp.resource!r} v{inp.version} has no column "
                        f"{missing[0]!r}")
    cols = []
    for name in inp.fields:
        want = POLARS[inp.schema.field(name).dtype]
        e = pl.col(name) if have[name] == want else pl.col(name).cast(want)
        cols.append(e.alias(f"{inp.alias}.{name}"))
    return lf.select(cols)


def _agg(fn: str, col: str | None, cond: pl.Expr | None) -> pl.Expr:
    """One aggregate, over the rows where `cond` holds when there is one."""
    if cond is None:
        return _AGG[fn](col)
    cond = cond.fill_null(False)
    if fn == "count":
        return cond.sum().cast(pl.Int64)
    return _FILTERED[fn](pl.col(col).filter(cond))


_FILTERED = {"count_distinct": lambda e: e.drop_nulls().n_unique().cast(pl.Int64), "sum": lambda e: e.sum(),
             "mean": lambda e: e.mean(), "min": lambda e: e.min(), "max": lambda e: e.max(),
             "any": lambda e: e.any(), "all": lambda e: e.all()}
_EMPTY = {"count": 0, "count_distinct": 0, "any": False}  # a left join's unmatched rows: no rows aggregated


def _join(lf: pl.LazyFrame, right: pl.LazyFrame, step: JoinPlan, values: Mapping[str, Any]) -> pl.LazyFrame:
    if not step.aggregate:
        return lf.join(right, left_on=list(step.left), right_on=list(step.right), how=step.how,
                       coalesce=False, nulls_equal=False)
    grouped = right.group_by(list(step.right)).agg(
        [_agg(a.fn, a.column, a.where.build(values) if a.where else None).alias(a.name) for a in step.aggregate])
    out = lf.join(grouped, left_on=list(step.left), right_on=list(step.right), how=step.how,
                  coalesce=False, nulls_equal=False).drop(list(step.right))
    fill = [pl.col(a.name).fill_null(_EMPTY[a.fn]) for a in step.aggregate if a.fn in _EMPTY]
    return out.with_columns(fill) if fill and step.how == "left" else out


def lazy_outputs(plan: Plan, inputs: Mapping[str, InputData],
                 params: Mapping[str, Any] | None = None) -> dict[str, pl.LazyFrame]:
    """The outputs as lazy frames, for callers that stream them (e.g. `sink_parquet`)."""
    values = plan.bind(params)
    frames = {alias: _lazy(_source(inputs, inp), inp) for alias, inp in plan.inputs.items()}
    lf = frames[plan.base]
    for step in plan.steps:
        if isinstance(step, JoinPlan):
            lf = _join(lf, frames[step.alias], step, values)
        elif isinstance(step, DerivePlan):
            lf = lf.with_columns(step.expr.build(values).alias(step.name))
        elif isinstance(step, FilterPlan):
            lf = lf.filter(step.expr.build(values))
        elif isinstance(step, SummarizePlan):
            lf = lf.group_by(list(step.by), maintain_order=True).agg(
                [_agg(fn, col, step.where[name].build(values) if name in step.where else None).alias(name)
                 for name, fn, col in step.aggregates])
    return {name: lf.select([pl.col(c.key).alias(c.name) for c in o.columns]) for name, o in plan.outputs.items()}


def _arrow(df: pl.DataFrame, o: PlannedOutput) -> pa.Table:
    schema = pa.schema([pa.field(c.name, arrow_type(c.dtype)) for c in o.columns])
    return df.to_arrow().cast(schema)


def execute(plan: Plan, inputs: Mapping[str, InputData], params: Mapping[str, Any] | None = None, *,
            streaming: bool = True) -> dict[str, pa.Table]:
    """Compute every output's pre-release table; inputs are keyed by input alias or resource code."""
    lazies = lazy_outputs(plan, inputs, params)
    names = list(lazies)
    try:
        frames = pl.collect_all([lazies[n] for n in names], engine="streaming" if streaming else "auto")
    except pl.exceptions.PolarsError as exc:
        raise SpecError(f"the job {plan.spec.name!r} failed while computing its outputs ({type(exc).__name__}); "
                        f"check that the data matches the resources' schemas") from None
    return {n: _arrow(df, plan.outputs[n]) for n, df in zip(names, frames)}
