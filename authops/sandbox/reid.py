"""Re-identification risk of a record release, measured with anonymeter before it is released.

anonymeter (Giomi et al., "A Unified Framework for Quantifying Privacy Risk in Synthetic Data",
PoPETs 2023) runs three attacks and reports, for each, the attacker's success on the records the
release was made from *above* its success on held-out records of the same population (so what
anyone could guess from the population alone does not count):

- singling-out: predicates over up to three released columns that match exactly one person;
- linkability: the release used to join what an attacker knows of a person from two sources
  (the quasi-identifiers on one side, the other columns on the other);
- inference: guessing a column the attacker does not know from the ones it does.

How the gate uses it (`assess`): the rows the job produced are sampled (at most SAMPLE_ROWS,
in random order) and CONTROL_SHARE of the sample held out; the attacks read the released form of
the rest (each column masked by its field, k-anonymity over the quasi-identifiers decided on the
whole release) and are scored on its source rows against the held-out ones. The attacker's
knowledge of a person is its source row generalized by the same public rules (a date as its year,
an address as its district, a name as its masked form), which it can reproduce itself; it cannot
reproduce keyed tokens, so its view is tokenized under a key the release does not use and token
columns are left out of the attacks.

A record release is refused when a risk is over its threshold (THRESHOLDS) with 95 % confidence:
the lower end of anonymeter's confidence interval is compared, not the point estimate. A small
sample gives a wide interval and point estimates that stray by ±0.2 for a harmless release (300
rows: 60 attacks), so the point estimate would refuse good releases at random; the lower bound
refuses what is clearly risky at any size and tightens as releases grow (2,000 sampled rows: 200
attacks, about ±0.07). The thresholds are low, because a release the engine made k-anonymous
over the columns an attacker can know measures about 0, while one whose quasi-identifiers were
not declared or not generalized measures far above them (tests/attacks: singling-out 0.97).

Cost: anonymeter compiles its distance kernel (numba) on first use in a process (a few seconds);
after that the measurement takes about 0.4-2 s whatever the release's size, since at most
SAMPLE_ROWS rows are measured (bench/privacy.py: +0.9 s on a 200,000-row release; the singling-out
query search is capped by QUERY_ATTEMPTS). Releases under MIN_ROWS rows are not measured (too few
held-out rows for any estimate): their protection is k-anonymity alone, and the summary says so.
Without anonymeter installed, record releases are refused (it is pinned in requirements.lock).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

# The gate refuses a record release whose measured risk is above these with 95 % confidence
# (the lower end of anonymeter's confidence interval; see the module docstring):
THRESHOLDS: dict[str, float] = {
    "singling_out": 0.05,  # at most 5 in 100 singling-out predicates beyond what the population gives
    "linkability": 0.05,   # at most 5 in 100 records linkable beyond chance
    "inference": 0.10,     # at most 10 % better guesses of an unknown column than from the population
}
SAMPLE_ROWS = 2000      # rows of the output measured (the rest is not read again)
CONTROL_SHARE = 0.2     # of the sample, held out of what the attacks read: anonymeter's control
MIN_ROWS = 50           # below this the estimate means nothing: not measured
MAX_ATTACKS = 200       # per attack (at most the held-out rows)
MAX_SECRETS = 2         # columns tried as the inference attack's secret
QUERY_ATTEMPTS = 5000   # singling-out predicates tried to find MAX_ATTACKS unique ones
RISKS = ("singling_out", "linkability", "inference")
NOT_ATTACKED = frozenset({"token", "suppressed"})  # treatments an attacker cannot match


def why_unavailable() -> str | None:
    """None when anonymeter can run here, else why not."""
    try:
        import anonymeter  # noqa: F401
    except ImportError as exc:
        return f"anonymeter is not installed ({exc}); the re-identification risk was not measured"
    return None


def _frame(table: pa.Table):
    """Every column as text, so a masked value and a raw one compare as different categories."""
    df = table.to_pandas()
    return df.astype("string").fillna("∅").astype(object)


def _risk(evaluator) -> dict[str, float]:
    r = evaluator.risk()
    return {"value": round(float(r.value), 4), "ci_low": round(float(r.ci[0]), 4),
            "ci_high": round(float(r.ci[1]), 4)}


def measure(original: pa.Table, released: pa.Table, control: pa.Table, *, quasi_identifiers: Sequence[str],
            secrets: Sequence[str] = (), columns: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """anonymeter's three risks of `released` (made from `original`; `control` held out).

    `columns` are the ones attacked (default: all); singling-out uses up to three of them at a
    time, linkability joins the quasi-identifiers with the other columns (or, without any, one half
    of the columns with the other), inference guesses each of `secrets` from the other columns.
    """
    sizes = {"original_rows": original.num_rows, "released_rows": released.num_rows,
             "control_rows": control.num_rows}
    reason = why_unavailable()
    if reason:
        return {"measured": False, "reason": reason, **sizes}
    cols = list(columns if columns is not None else original.column_names)
    n = min(MAX_ATTACKS, control.num_rows, original.num_rows)
    out: dict[str, Any] = {"measured": True, "attacks": n, "columns": cols, **sizes}
    if not cols or n == 0:
        for name in RISKS:
            out[name] = {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        out["note"] = "no attackable column" if not cols else "no held-out rows"
        return out
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator

    ori, syn, ctl = (_frame(t.select(cols)) for t in (original, released, control))
    with warnings.catch_warnings():  # anonymeter warns on small samples and when few queries are found
        warnings.simplefilter("ignore")
        logging.getLogger("anonymeter").setLevel(logging.ERROR)
        np.random.seed(seed)  # linkability and inference sample with numpy's global generator
        so = SinglingOutEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, n_cols=min(3, len(cols)),
                                  max_attempts=QUERY_ATTEMPTS, seed=seed)
        so.evaluate(mode="multivariate" if len(cols) > 1 else "univariate")
        out["singling_out"] = _risk(so)
        qis = [c for c in quasi_identifiers if c in cols]
        others = [c for c in cols if c not in qis]
        sides = (qis, others) if qis and others else (cols[: len(cols) // 2], cols[len(cols) // 2:])
        if sides[0] and sides[1]:
            link = LinkabilityEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n,
                                        aux_cols=(list(sides[0]), list(sides[1])), n_neighbors=1)
            link.evaluate(n_jobs=1)
            out["linkability"] = {"aux": [list(sides[0]), list(sides[1])], **_risk(link)}
        worst = None
        for secret in [s for s in secrets if s in cols][:MAX_SECRETS]:
            aux = [c for c in cols if c != secret]
            if not aux:
                continue
            inf = InferenceEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, secret=secret, aux_cols=aux)
            inf.evaluate(n_jobs=1)
            got = {"secret": secret, **_risk(inf)}
            if worst is None or got["value"] > worst["value"]:
                worst = got
        if worst is not None:
            out["inference"] = worst
    return out


def over(result: dict[str, Any], thresholds: dict[str, float] | None = None) -> list[tuple[str, float, float, float]]:
    """(risk, value, lower confidence bound, threshold) for each risk above its threshold with 95 %
    confidence (its lower bound above it), worst first."""
    limits = THRESHOLDS if thresholds is None else thresholds
    if not result.get("measured"):
        return []
    bad = [(name, float(result[name]["value"]), float(result[name]["ci_low"]), limits[name]) for name in RISKS
           if name in result and name in limits and float(result[name]["ci_low"]) > limits[name]]
    return sorted(bad, key=lambda x: x[2] - x[3], reverse=True)


def assess(rows: pa.Table, released: pa.Table, view: Callable[[pa.Table], pa.Table], *,
           quasi_identifiers: Sequence[str], treatments: dict[str, str], seed: int = 0,
           sample_rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Measure `released`, the release made of `rows` (row i of one is row i of the other).

    A random sample of the rows is split: the released form of the first part is what the attacks
    read (so suppression is what the whole release has), the second part is held out. `view` is
    the attacker's own generalization of source rows (the policy without k-anonymity, under a key
    the release does not use): what it compares the release with.
    """
    total = rows.num_rows
    if total < MIN_ROWS:
        return {"measured": False, "reason": f"{total} rows: too few to measure (at least {MIN_ROWS})",
                "rows": total}
    reason = why_unavailable()
    if reason:
        return {"measured": False, "reason": reason, "rows": total}
    rng = np.random.default_rng(seed)
    pick = rng.choice(total, size=min(total, sample_rows), replace=False)  # random order
    cut = int(round(len(pick) * (1 - CONTROL_SHARE)))
    ori, ctl = pa.array(pick[:cut]), pa.array(pick[cut:])
    attacked = [c for c in rows.column_names if treatments.get(c) not in NOT_ATTACKED
                and released.column(c).null_count < released.num_rows]
    syn = released.take(ori)
    view_ori, view_ctl = view(rows.take(ori)), view(rows.take(ctl))
    qis = [c for c in quasi_identifiers if c in attacked]
    secrets = [c for c in attacked if c not in qis] or list(attacked)
    got = measure(view_ori, syn, view_ctl, quasi_identifiers=qis, secrets=secrets, columns=attacked, seed=seed)
    got["rows"] = total
    got["thresholds"] = dict(THRESHOLDS)
    return got
