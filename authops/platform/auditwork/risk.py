"""Re-identification risk of a record release, measured with anonymeter's three attacks.

`anonymeter` is imported only when a measurement runs; without it `measure` says so (with the
sizes of the samples it was given) instead of a number. The attacks follow anonymeter's protocol: `original` are source rows the release was made
from, `released` is what the release policy made of them, `control` are source rows held out of
the release; each risk is the attack's success on `original` above its success on `control`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

MAX_ATTACKS = 200


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


def measure(original: pa.Table, released: pa.Table, control: pa.Table, *, quasi_identifiers: list[str],
            secret: str | None, seed: int = 0) -> dict[str, Any]:
    """Singling-out, linkability (quasi-identifiers vs the other columns) and inference of `secret`."""
    sizes = {"original_rows": original.num_rows, "released_rows": released.num_rows,
             "control_rows": control.num_rows}
    reason = why_unavailable()
    if reason:
        return {"measured": False, "reason": reason, **sizes}
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
    import numpy as np

    np.random.seed(seed)  # anonymeter draws its attack queries from numpy's global generator
    ori, syn, ctl = _frame(original), _frame(released), _frame(control)
    n = min(MAX_ATTACKS, len(ctl), len(ori))
    out: dict[str, Any] = {"measured": True, "attacks": n, **sizes}
    so = SinglingOutEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n)
    so.evaluate(mode="univariate")
    out["singling_out"] = _risk(so)
    others = [c for c in ori.columns if c not in quasi_identifiers]
    if quasi_identifiers and others:
        link = LinkabilityEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n,
                                    aux_cols=(list(quasi_identifiers), others), n_neighbors=1)
        link.evaluate(n_jobs=1)
        out["linkability"] = _risk(link)
    if secret is not None and len(ori.columns) > 1:
        inf = InferenceEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, secret=secret,
                                 aux_cols=[c for c in ori.columns if c != secret])
        inf.evaluate(n_jobs=1)
        out["inference"] = {"secret": secret, **_risk(inf)}
    return out
