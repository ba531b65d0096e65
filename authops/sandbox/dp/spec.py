"""What an aggregate release asks for (`AggregateSpec`) and what it gives back (`Release`).

Vocabulary:
  * a *cell* is one combination of the group-by columns' values;
  * a *unit* is one privacy unit (person, enterprise, vehicle: the catalogue's `privacy_unit`),
    identified by `unit_column`; all rows of one unit are what differential privacy hides;
  * `max_contributions` bounds the rows a unit keeps (in total, across cells), and
    `max_groups_per_unit` the cells it may touch; every value is clamped to its measure's bounds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from authops.core.data.schema import DType, PrivacyUnit, ResourceSchema
from authops.core.errors import InvalidInput

Kind = Literal["count", "sum", "mean", "quantile", "histogram"]
KINDS: tuple[str, ...] = ("count", "sum", "mean", "quantile", "histogram")

# OpenDP features this code may run under. "honest-but-curious" and "idealized-numerics" weaken
# the guarantees (trusting callers, idealised floats), so they are switched off, never on.
ALLOWED_FEATURES = frozenset({"contrib"})
FORBIDDEN_FEATURES = frozenset({"honest-but-curious", "idealized-numerics"})


def ensure_features() -> frozenset[str]:
    """Enable OpenDP's "contrib" feature and nothing else; switch the forbidden ones off."""
    import opendp.prelude as dp

    dp.disable_features(*FORBIDDEN_FEATURES)
    dp.enable_features("contrib")
    return frozenset(dp.GLOBAL_FEATURES)


def _bad(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, details=details or None)


@dataclass(frozen=True)
class Measure:
    """One released statistic per cell.

    `lower`/`upper` clamp each value (integers: money in fen, counts); `alpha` is the quantile
    (0.5 = median) chosen among `bins` + 1 evenly spaced candidates (or the listed ones);
    a histogram counts values in `bins` equal-width bins over [lower, upper] (or between the
    listed edges, the last bin closed).
    """

    name: str
    kind: Kind
    column: str | None = None
    lower: int | None = None
    upper: int | None = None
    alpha: float | None = None
    bins: int | list[int] | None = None

    def candidates(self) -> list[int]:
        """Quantile candidates or histogram edges: public, sorted, distinct integers."""
        if isinstance(self.bins, list):
            return sorted(set(int(b) for b in self.bins))
        n = self.bins or (100 if self.kind == "quantile" else 10)
        lo, hi = int(self.lower), int(self.upper)  # type: ignore[arg-type]
        return sorted({lo + (hi - lo) * i // n for i in range(n + 1)})

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise _bad(f"measure {self.name!r}: kind must be one of {', '.join(KINDS)}", measure=self.name)
        if self.kind == "count":
            return
        if not self.column:
            raise _bad(f"measure {self.name!r}: a {self.kind} needs a column", measure=self.name)
        if isinstance(self.bins, list):
            if len(set(self.bins)) < 2:
                raise _bad(f"measure {self.name!r}: list at least two distinct bin edges/candidates")
        else:
            for b in (self.lower, self.upper):
                if not isinstance(b, int) or isinstance(b, bool):
                    raise _bad(f"measure {self.name!r}: lower and upper must be integers (money in fen)",
                               measure=self.name)
            if self.lower >= self.upper:  # type: ignore[operator]
                raise _bad(f"measure {self.name!r}: lower must be below upper", measure=self.name)
            if self.bins is not None and self.bins < 1:
                raise _bad(f"measure {self.name!r}: bins must be at least 1", measure=self.name)
        if self.kind in ("sum", "mean") and (self.lower is None or self.upper is None):
            raise _bad(f"measure {self.name!r}: a {self.kind} needs lower and upper clamp bounds")
        if self.kind == "quantile" and not (self.alpha is not None and 0.0 <= self.alpha <= 1.0):
            raise _bad(f"measure {self.name!r}: alpha must be in [0, 1]", measure=self.name)

    @property
    def clamp(self) -> tuple[int, int]:
        """The range values are clamped to before they are summed or binned."""
        if self.lower is not None and self.upper is not None:
            return int(self.lower), int(self.upper)
        c = self.candidates()
        return c[0], c[-1]


@dataclass
class AggregateSpec:
    """A grouped DP aggregate: cells `by`, statistics `measures`, bounds, budget, cell floor."""

    by: list[str]
    measures: list[Measure]
    unit_column: str
    epsilon: float
    public_keys: dict[str, list] | None = None  # every `by` column's known values; None = unknown
    max_contributions: int = 1  # rows a unit keeps, in total (first in storage order)
    max_groups_per_unit: int | None = None  # cells a unit keeps (its lowest); None = max_contributions
    delta: float = 0.0  # spent only on partition selection (unknown keys)
    min_cell: int = 10  # cells whose noisy count is below this are suppressed
    max_partition_rows: int = 2**31  # public cap on rows per input partition (integer sum overflow check)

    @classmethod
    def for_resource(cls, schema: ResourceSchema, **kw: Any) -> AggregateSpec:
        """A spec whose privacy unit is the one the catalogue declares for this resource."""
        if schema.privacy_unit == PrivacyUnit.NONE or not schema.unit_field:
            raise _bad("this resource declares no privacy unit; DP aggregates need one")
        spec = cls(unit_column=schema.unit_field, **kw)
        for col in [*spec.by, *(m.column for m in spec.measures if m.column)]:
            try:
                f = schema.field(col)
            except KeyError:
                raise _bad(f"column {col!r} is not a field of this resource", column=col) from None
            if f.name in {m.column for m in spec.measures if m.kind != "count"} and f.dtype != DType.INT:
                raise _bad(f"measure column {col!r} must be an integer field (money in fen, counts)",
                           column=col)
        return spec

    @property
    def groups_per_unit(self) -> int:
        g = self.max_groups_per_unit
        return self.max_contributions if g is None else min(g, self.max_contributions)

    def count_measure(self) -> Measure:
        for m in self.measures:
            if m.kind == "count":
                return m
        return Measure("count", "count")

    def sum_keys(self) -> list[tuple[str, int, int]]:
        """Distinct (column, lower, upper) clamped sums needed by sum and mean measures."""
        out: list[tuple[str, int, int]] = []
        for m in self.measures:
            if m.kind in ("sum", "mean"):
                key = (m.column, *m.clamp)
                if key not in out:
                    out.append(key)  # type: ignore[arg-type]
        return out

    def validate(self) -> None:
        if not self.measures:
            raise _bad("list at least one measure")
        names = [m.name for m in self.measures]
        if len(set(names)) != len(names) or set(names) & set(self.by):
            raise _bad("measure names must be distinct and differ from the group-by columns")
        if sum(m.kind == "count" for m in self.measures) > 1:
            raise _bad("list at most one count measure")
        if self.count_measure() not in self.measures and "count" in names:
            raise _bad("'count' names the implicit noisy count: name the other measure differently")
        for m in self.measures:
            m.validate()
        if self.unit_column in self.by:
            raise _bad("the privacy unit column cannot be a group-by column")
        if len(set(self.by)) != len(self.by):
            raise _bad("group-by columns repeat")
        if not (isinstance(self.max_contributions, int) and self.max_contributions >= 1):
            raise _bad("max_contributions must be a positive integer")
        if self.max_groups_per_unit is not None and self.max_groups_per_unit < 1:
            raise _bad("max_groups_per_unit must be a positive integer")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise _bad("epsilon must be a positive number")
        if self.public_keys is not None:
            missing = [c for c in self.by if not self.public_keys.get(c)]
            if missing or set(self.public_keys) - set(self.by):
                raise _bad("public_keys must list values for exactly the group-by columns", missing=missing)
        elif self.by and not (0.0 < self.delta < 1e-3):
            raise _bad("unknown keys need partition selection: set 0 < delta < 1e-3 (or give public_keys)")
        if self.min_cell < 0:
            raise _bad("min_cell must not be negative")

    def fingerprint(self) -> str:
        """Identifies what a partial aggregate computed, so partials of different specs never merge."""
        doc = {"by": self.by, "unit": self.unit_column, "k": self.max_contributions, "g": self.groups_per_unit,
               "sums": self.sum_keys(),
               "bins": [(m.name, m.column, m.clamp, m.candidates()) for m in self.measures
                        if m.kind in ("quantile", "histogram")]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Release:
    """The noisy result. Everything here may leave the jail: it is DP output, post-processed."""

    table: pa.Table  # one row per released cell: the `by` columns, then one column per measure
    histograms: dict[str, pa.Table]  # histogram measure -> cells x bins: by, bin, bin_lower, bin_upper, count
    epsilon: float  # spent, as the privacy maps of the measurements that ran report it
    delta: float
    scales: dict[str, float]  # noise scale per measure (count, sums, quantile, histogram)
    threshold: int | None = None  # partition-selection threshold on the noisy count (unknown keys)
    suppressed: int = 0  # cells dropped because their noisy count fell below min_cell
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The documentation part of a release (no values): budget, scales, threshold."""
        return {"epsilon": self.epsilon, "delta": self.delta, "scales": dict(self.scales),
                "threshold": self.threshold, "suppressed": self.suppressed, "cells": self.table.num_rows,
                "notes": dict(self.notes)}
