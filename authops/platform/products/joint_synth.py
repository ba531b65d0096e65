"""A bank's loan outcomes drawn from the synthetic city, for tests and the demo of joint modelling.

`synthetic_labels(tables, n, seed)` picks n enterprises (the bank's borrowers) and gives each a
label 1 (the loan went bad) or 0, with a planted relation to the public data:

    logit P(bad) = BASE + 1.1 * tax-violation months + 1.0 * social-insurance arrears months + N(0, NOISE)

These borrowers went through the bank's own vetting, so the records the generic credit score
weighs most (blacklist 30 points, major risk 25, a revoked registration 40, low ratings) carry no
extra risk in this book, and neither do lawsuits (a trade-finance book: the firms mostly sue to
collect receivables); while the cash-flow signs the generic score caps at "3+" (tax and
social-insurance months) keep raising the risk month after month. A score built without the
bank's labels ranks blacklisted and litigating firms among the worst and cannot tell 3 months of
arrears from 9; a model trained on these labels learns the bank's weights, so it ranks the
holdout better. The labels depend on the public data only through those two counts (nothing
latent), plus the noise term and the Bernoulli draw.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

BASE = -5.0
WEIGHTS = {"tax_violation_months": 1.1, "si_arrears_months": 1.0}
NOISE = 0.5
RESOURCES = ("enterprise_basic_info", "enterprise_tax", "enterprise_social_insurance_payments", "court_cases")


def _counts(tables: Mapping[str, pa.Table]) -> pl.DataFrame:
    firms = pl.from_arrow(tables["enterprise_basic_info"].select(["uscc"])).unique(maintain_order=True)
    tax = (pl.from_arrow(tables["enterprise_tax"].select(["uscc", "has_violation_record"]))
           .group_by("uscc").agg(pl.col("has_violation_record").sum().alias("tax_violation_months")))
    si = (pl.from_arrow(tables["enterprise_social_insurance_payments"].select(["uscc", "contribution_status"]))
          .group_by("uscc").agg((pl.col("contribution_status") == "欠缴").sum().alias("si_arrears_months")))
    court = (pl.from_arrow(tables["court_cases"].select(["uscc", "case_number"]))
             .group_by("uscc").agg(pl.col("case_number").n_unique().alias("lawsuits")))
    out = firms
    for t in (tax, si, court):
        out = out.join(t, on="uscc", how="left")
    return out.fill_null(0)


def synthetic_labels(tables: Mapping[str, pa.Table], n: int, seed: int) -> list[tuple[str, int]]:
    """n distinct enterprises (USCC, label 0/1) of the city in `tables` (RESOURCES), reproducibly by seed."""
    counts = _counts(tables)
    if n > counts.height:
        raise ValueError(f"the city has {counts.height} enterprises; cannot label {n}")
    rng = np.random.default_rng(seed)
    pick = counts[np.sort(rng.choice(counts.height, n, replace=False))]
    logit = BASE + rng.normal(0.0, NOISE, n)
    for col, w in WEIGHTS.items():
        logit = logit + w * pick[col].to_numpy().astype(float)
    bad = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return list(zip(pick["uscc"].to_list(), bad.astype(int).tolist()))


def labels_csv(labels: list[tuple[str, int]]) -> bytes:
    """The upload file a bank would send: `uscc,label`."""
    return ("uscc,label\n" + "".join(f"{u},{y}\n" for u, y in labels)).encode()
