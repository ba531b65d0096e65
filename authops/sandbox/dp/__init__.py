"""Differential privacy for aggregate releases: count, sum, mean, quantile and histogram per cell.

Public keys (region and industry code tables, catalogue enumerations) or, when keys are
unknown, DP partition selection; each privacy unit's contribution bounded (rows, cells) and
every value clamped; a minimum cell size on the noisy count; noise added exactly once per
released cell, after bounded partial aggregates of any number of partitions are merged.
See `bounding` for the contribution rule and `release` for the mechanisms and the budget.
"""

from authops.sandbox.dp.bounding import (
    Partial, exact_aggregate, merge_partials, partial_aggregate, unit_partition,
)
from authops.sandbox.dp.release import (
    BudgetExceeded, merge_and_release, release_aggregate, release_partial,
)
from authops.sandbox.dp.spec import (
    ALLOWED_FEATURES, FORBIDDEN_FEATURES, AggregateSpec, Measure, Release, ensure_features,
)

__all__ = [
    "ALLOWED_FEATURES", "FORBIDDEN_FEATURES", "AggregateSpec", "BudgetExceeded", "Measure", "Partial", "Release",
    "ensure_features", "exact_aggregate", "merge_and_release", "merge_partials", "partial_aggregate",
    "release_aggregate", "release_partial", "unit_partition",
]
