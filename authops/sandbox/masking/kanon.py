"""k-anonymity by local suppression of small quasi-identifier cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.errors import InvalidInput


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """Dense integer codes of a column's values (null is a value of its own) and how many there are."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    enc = column.dictionary_encode(null_encoding="encode")
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), max(len(enc.dictionary), 1)


def group_sizes(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Per row: how many rows share its combination of values in `columns` (nulls compare equal)."""
    n = table.num_rows
    code, card = np.zeros(n, dtype=np.int64), 1
    for name in columns:
        c, k = _codes(table.column(name))
        if card * k >= 1 << 62:  # re-densify before the mixed-radix code could overflow
            _, code = np.unique(code, return_inverse=True)
            card = int(code.max()) + 1 if n else 1
        code, card = code * k + c, card * k
    _, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()]


def k_anonymity(table: pa.Table, quasi_identifiers: Sequence[str], k: int, *,
                drop: bool = False) -> tuple[pa.Table, int]:
    """(table, rows suppressed): rows whose quasi-identifier combination occurs fewer than k times.

    By default those rows keep their other fields and have every quasi-identifier cell set to null
    (local suppression): row counts and non-identifying measures stay intact, and the suppressed
    rows share one all-null combination that points at nobody. With `drop=True` they are removed.
    Either way every remaining combination with a non-null quasi-identifier occurs at least k times.
    Generalize first (age_band, date_to, address_to_district) so fewer rows need suppressing.
    """
    if not isinstance(k, int) or k < 1:
        raise InvalidInput("k must be a positive integer")
    qis = list(quasi_identifiers)
    if not qis:
        raise InvalidInput("name at least one quasi-identifier")
    missing = [q for q in qis if q not in table.column_names]
    if missing:
        raise InvalidInput(f"quasi-identifiers not in the table: {', '.join(missing)}")
    small = group_sizes(table, qis) < k
    count = int(small.sum())
    if count == 0:
        return table, 0
    if drop:
        return table.filter(pa.array(~small)), count
    mask = pa.array(small)
    out = table
    for name in qis:
        i = out.column_names.index(name)
        col = out.column(i)
        out = out.set_column(i, out.field(i), pc.if_else(mask, pa.scalar(None, col.type), col))
    return out, count
