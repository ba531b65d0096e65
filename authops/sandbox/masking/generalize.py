"""Generalization: ages to bands, dates to months or years, amounts to ranges; suppression; and
keyed per-subject date shifting. All vectorized (numpy on the Arrow buffers, or Arrow kernels)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data.identifiers import ascii_digits
from authops.core.errors import InvalidInput
from authops.sandbox.masking import tokens
from authops.sandbox.masking._arrow import (Values, as_arrow, labels_at, matrix_to_strings, null_like, per_chunk,
                                            validity)

SHANGHAI = "Asia/Shanghai"
_YUAN = 100  # fen per yuan
# Default money bands, in fen: 0, 1000, 5000 yuan, 1万, 5万, 10万, 50万, 100万, 500万, 1000万, 1亿 yuan.
AMOUNT_BANDS_FEN = tuple(y * _YUAN for y in (0, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
                                             5_000_000, 10_000_000, 100_000_000))


def suppress(values) -> Values:
    """All null, same type and length."""
    return null_like(as_arrow(values))


def _local(c: pa.Array) -> pa.Array:
    """Dates and timestamps as Arrow temporal values whose fields read in Shanghai time."""
    t = c.type
    if pa.types.is_timestamp(t) and t.tz is not None:
        return c.cast(pa.timestamp(t.unit, tz=SHANGHAI))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return c.cast(pa.date32())
        except pa.ArrowInvalid:
            raise InvalidInput("date strings must be ISO dates (YYYY-MM-DD)") from None
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return c
    raise InvalidInput(f"expected dates or timestamps, not {t}")


def date_to(values, unit: str) -> Values:
    """Dates or timestamps as "YYYY-MM" (unit "month") or "YYYY" ("year") strings; zoned timestamps
    are read in Asia/Shanghai. Years outside 1..9999 become null."""
    if unit not in ("month", "year"):
        raise InvalidInput('unit must be "month" or "year"')

    def one(c: pa.Array) -> pa.Array:
        c = _local(c)
        valid = c.is_valid().to_numpy(zero_copy_only=False) if c.null_count else np.ones(len(c), bool)
        year = pc.year(c).fill_null(1).to_numpy()
        valid &= (year >= 1) & (year <= 9999)
        y = np.clip(year, 0, 9999)
        if unit == "year":
            return matrix_to_strings(ascii_digits(y, 4), valid)
        m = np.empty((len(c), 7), dtype=np.uint8)
        m[:, :4] = ascii_digits(y, 4)
        m[:, 4] = ord("-")
        m[:, 5:] = ascii_digits(pc.month(c).fill_null(1).to_numpy(), 2)
        return matrix_to_strings(m, valid)

    return per_chunk(one, as_arrow(values), pa.string())


def _ages(c: pa.Array, as_of: dt.date) -> tuple[np.ndarray, np.ndarray | None]:
    t = c.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        age = pc.floor(c.cast(pa.float64())).fill_null(-1).to_numpy()
        ok = np.isfinite(age) if validity(c) is None else np.isfinite(age) & validity(c)
        return np.where(ok, age, -1).astype(np.int64), ok
    c = _local(c)
    y = pc.year(c).fill_null(0).to_numpy().astype(np.int64)
    md = (pc.month(c).fill_null(0).to_numpy() * 100 + pc.day(c).fill_null(0).to_numpy()).astype(np.int64)
    age = as_of.year - y - (md > as_of.month * 100 + as_of.day)
    return age, validity(c)


def age_band(values, width: int = 10, *, top: int = 90, as_of: dt.date | None = None) -> Values:
    """Ages, or birth dates (age on `as_of`, default today in Shanghai), as bands "30–39"; ages of
    `top` and above as "90+" (few people are that old, so exact old ages single them out).
    Negative ages (birth after `as_of`) become null."""
    if width < 1 or top < width or top % width:
        raise InvalidInput("width must be >= 1 and top a multiple of width")
    as_of = as_of or dt.datetime.now(ZoneInfo(SHANGHAI)).date()
    labels = [f"{lo}–{lo + width - 1}" if width > 1 else str(lo) for lo in range(0, top, width)] + [f"{top}+"]

    def one(c: pa.Array) -> pa.Array:
        age, valid = _ages(c, as_of)
        ok = age >= 0 if valid is None else valid & (age >= 0)
        return labels_at(labels, np.minimum(np.maximum(age, 0) // width, top // width), ok)

    return per_chunk(one, as_arrow(values), pa.string())


def yuan_label(fen: int) -> str:
    """An amount in fen as a short yuan figure: 100000000 -> "100万", 150000000 -> "150万", 1e10 -> "1亿"."""
    yuan = fen / _YUAN
    for unit, size in (("亿", 100_000_000), ("万", 10_000)):
        if abs(yuan) >= size:
            return f"{yuan / size:.4f}".rstrip("0").rstrip(".") + unit
    return f"{yuan:.2f}".rstrip("0").rstrip(".")


def amount_band(values_fen, bands: Sequence[int] = AMOUNT_BANDS_FEN) -> Values:
    """Integer fen amounts as range labels over `bands` (ascending fen edges, each range [lo, hi)):
    1234567 fen -> "1万–5万"; below the first edge "<0"; from the last edge "≥1亿"."""
    edges = np.asarray(bands, dtype=np.int64)
    if len(edges) < 1 or (np.diff(edges) <= 0).any():
        raise InvalidInput("bands must be strictly ascending fen amounts")
    labels = ([f"<{yuan_label(int(edges[0]))}"]
              + [f"{yuan_label(int(a))}–{yuan_label(int(b))}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
              + [f"≥{yuan_label(int(edges[-1]))}"])

    def one(c: pa.Array) -> pa.Array:
        if not pa.types.is_integer(c.type):
            raise InvalidInput(f"money is integer fen, not {c.type}")
        v = c.cast(pa.int64()).fill_null(0).to_numpy()
        return labels_at(labels, np.searchsorted(edges, v, side="right"), validity(c))

    return per_chunk(one, as_arrow(values_fen), pa.string())


def date_shift(values, subjects, key: bytes, *, domain: str, max_days: int = 30) -> Values:
    """Move each date by a keyed, per-subject number of days in ±1..max_days (never 0).

    One subject's dates all move by the same amount, so intervals between them are kept; the shift
    is a PRF of (key, domain, subject), so without the key it cannot be undone. Rows whose subject
    is null become null (there is nothing to key the shift on).
    """
    if not isinstance(max_days, int) or max_days < 1:
        raise InvalidInput("max_days must be a positive integer")
    values, subjects = as_arrow(values), as_arrow(subjects, pa.string())
    if len(values) != len(subjects):
        raise InvalidInput("values and subjects must have the same length")
    chunked = isinstance(values, pa.ChunkedArray)
    if chunked:
        values = values.combine_chunks()
    t = values.type
    if pa.types.is_date32(t):
        storage, step = pa.int32(), 1
    elif pa.types.is_timestamp(t):
        storage, step = pa.int64(), {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000,
                                     "ns": 86_400_000_000_000}[t.unit]
    else:
        raise InvalidInput(f"date_shift needs date32 or timestamp values, not {t}")
    mac, subject_ok = tokens.mac128(subjects, key, domain=f"date_shift/{domain}")
    r = (mac[:, :8].copy().view(">u8").ravel() % np.uint64(2 * max_days)).astype(np.int64)
    days = np.where(r < max_days, r - max_days, r - max_days + 1)
    raw = values.cast(storage).fill_null(0).to_numpy().astype(np.int64)
    valid = validity(values)
    ok = subject_ok if valid is None else (valid if subject_ok is None else valid & subject_ok)
    out = pa.array(raw + days * step, type=storage, mask=None if ok is None else ~ok).cast(t)
    return pa.chunked_array([out]) if chunked else out
