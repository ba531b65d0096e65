"""Re-identification risk of a record release, measured with anonymeter's three attacks.

The measurement itself lives with the release gate (`authops.sandbox.reid`), which runs it on every
record release before it leaves and refuses one over its thresholds; the audit measures the year's
releases again with the same attacks. `anonymeter` is imported only when a measurement runs;
without it `measure` says so (with the sizes of the samples it was given) instead of a number.
The attacks follow anonymeter's protocol: `original` are source rows the release was made from,
`released` is what the release policy made of them, `control` are source rows held out of the
release; each risk is the attack's success on `original` above its success on `control`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from authops.sandbox import reid

MAX_ATTACKS = reid.MAX_ATTACKS
THRESHOLDS = reid.THRESHOLDS
why_unavailable = reid.why_unavailable
over = reid.over


def measure(original: pa.Table, released: pa.Table, control: pa.Table, *, quasi_identifiers: list[str],
            secret: str | None, seed: int = 0) -> dict[str, Any]:
    """Singling-out, linkability (quasi-identifiers vs the other columns) and inference of `secret`."""
    out = reid.measure(original, released, control, quasi_identifiers=quasi_identifiers,
                       secrets=[secret] if secret is not None else [], seed=seed)
    out.pop("columns", None)
    return out
