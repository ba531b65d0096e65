"""Vectorized building blocks: Arrow string assembly, dates, times and amounts, no per-row Python."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data import identifiers as ids

TS = pa.timestamp("us", tz="UTC")
AS_OF = np.datetime64("2025-06-30")  # the data's "today": every date lies on or before it
BIRTH_END = np.datetime64("2024-12-31")  # births run 1940-2024
DAY_US = 86_400_000_000


def rng_for(seed: int, *names: object) -> np.random.Generator:
    """A generator that depends only on the seed and the names (not on what else was generated)."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(n).encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(words))


def strings(values: Sequence[str]) -> pa.Array:
    return pa.array(list(values), type=pa.string())


def take(values: Sequence[str] | pa.Array, idx: np.ndarray) -> pa.Array:
    """values[idx] as an Arrow string array; negative indices give nulls."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else strings(values)
    idx = np.asarray(idx)
    if idx.size and idx.min() < 0:
        return arr.take(pa.array(idx, mask=idx < 0))
    return arr.take(pa.array(idx))


def pick(rng: np.random.Generator, values: Sequence[str], n: int, p: Sequence[float] | None = None) -> pa.Array:
    """n draws from values (weights p, normalized) as Arrow strings."""
    return take(values, choice(rng, len(values), n, p))


def choice(rng: np.random.Generator, k: int, n: int, p: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """n draws from range(k) with weights p, through a lookup table (no search per draw)."""
    if p is None:
        return rng.integers(0, k, n)
    w = np.asarray(p, dtype=float)
    size = max(4 * k, 8192)
    cum = np.floor(np.cumsum(w) * (size / w.sum()) + 0.5).astype(np.int64)
    cum[-1] = size
    table = np.repeat(np.arange(k, dtype=np.int32 if k < 2**31 else np.int64), np.diff(cum, prepend=0))
    return table[rng.integers(0, size, n)]


def const(value: str, n: int) -> pa.Array:
    """n copies of one string."""
    return pa.repeat(pa.scalar(value, pa.string()), n)


def nulls(n: int, type_: pa.DataType = pa.string()) -> pa.Array:
    return pa.nulls(n, type=type_)


def sparse(values: pa.Array, where: np.ndarray) -> pa.Array:
    """A string array that holds `values` (one per True in `where`, in order) and nulls elsewhere."""
    n = len(where)
    values = values.cast(pa.string())
    if len(values) != int(where.sum()):
        raise ValueError("need one value per True in where")
    if len(values) == 0:
        return pa.nulls(n, pa.string())
    if values.null_count:
        values = values.fill_null("")
    vo = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + len(values) + 1]
    lens = np.zeros(n, dtype=np.int32)
    lens[where] = np.diff(vo)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    raw = values.buffers()[2]
    raw = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, dtype=np.uint8)
    data = pa.py_buffer(raw[vo[0]:vo[-1]].copy())
    valid = pa.py_buffer(np.packbits(where, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [valid, pa.py_buffer(offsets), data])


def num(values: np.ndarray, width: int = 0) -> pa.Array:
    """Non-negative integers as decimal strings, zero-padded to width (cut to the last width digits)."""
    if width:
        from authops.core.data.identifiers import ascii_digits, matrix_to_arrow

        return matrix_to_arrow(ascii_digits(values, width))
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def cat(*parts: str | pa.Array) -> pa.Array:
    """Element-wise concatenation of string arrays and literal strings."""
    arrays = [p for p in parts if isinstance(p, pa.Array | pa.ChunkedArray)]
    if not arrays:
        raise ValueError("cat needs at least one array")
    args = [p if isinstance(p, pa.Array | pa.ChunkedArray) else pa.scalar(p, pa.string()) for p in parts]
    return pc.binary_join_element_wise(*args, "")


def yuan(fen: np.ndarray, unit: str = "元") -> pa.Array:
    """Amounts in fen as "12345.67元" (or "123.45万元" when unit is "万元")."""
    fen = np.asarray(fen, dtype=np.int64)
    if unit == "万元":
        return cat(num(fen // 1_000_000), ".", num(fen // 10_000 % 100, 2), "万元")
    return cat(num(fen // 100), ".", num(fen % 100, 2), unit)


_YMD_BASE = np.datetime64("1900-01-01")


@functools.cache
def _ymd_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    days = _YMD_BASE + np.arange(73_414).astype("timedelta64[D]")  # 1900-2100
    y = days.astype("datetime64[Y]").astype(np.int64) + 1970
    m = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    d = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    return y.astype(np.int16), m.astype(np.int8), d.astype(np.int8)


def ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of datetime64[D] values in 1900-2100, by table look-up."""
    i = (np.asarray(days, dtype="datetime64[D]") - _YMD_BASE).astype(np.int64)
    y, m, d = _ymd_table()
    return y[i].astype(np.int64), m[i].astype(np.int64), d[i].astype(np.int64)


def date_zh(days: np.ndarray) -> pa.Array:
    """datetime64[D] as "2024年3月5日"."""
    y, m, d = ymd(days)
    return cat(num(y), "年", num(m), "月", num(d), "日")


def year_of(days: np.ndarray) -> np.ndarray:
    return ymd(days)[0]


def days_between(rng: np.random.Generator, lo: str, hi: str, n: int) -> np.ndarray:
    """Uniform dates in [lo, hi] as datetime64[D]."""
    a, b = np.datetime64(lo, "D"), np.datetime64(hi, "D")
    return a + rng.integers(0, int((b - a).astype(np.int64)) + 1, n).astype("timedelta64[D]")


def month_start(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype="datetime64[D]")
    return days - (ymd(days)[2] - 1).astype("timedelta64[D]")


def year_start(days: np.ndarray) -> np.ndarray:
    y = ymd(days)[0]
    return (y - 1970).astype("datetime64[Y]").astype("datetime64[D]")


def office_time(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """A time in office hours (08:30-17:30, Beijing time) on each date, as datetime64[us] UTC."""
    secs = rng.integers(8 * 3600 + 1800, 17 * 3600 + 1800, len(days)) - 8 * 3600
    return np.asarray(days, dtype="datetime64[D]").astype("datetime64[us]") + (secs * 1_000_000).astype(
        "timedelta64[us]")


def spread_times(rng: np.random.Generator, counts: np.ndarray, start, end: str) -> np.ndarray:
    """For groups of the given sizes, that many increasing instants in [start, end) per group.

    `start` is one date or one per group (e.g. when the truck was registered). The span is cut
    into equal slots per group and each instant falls in its own slot, so instants never repeat
    within a group (the basis of unique (id, time) keys).
    """
    counts = np.asarray(counts, dtype=np.int64)
    a = np.repeat(np.broadcast_to(np.asarray(start, dtype="datetime64[us]").astype(np.int64), counts.shape), counts)
    span = np.datetime64(end, "us").astype(np.int64) - a
    total = int(counts.sum())
    rank = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    slot = span // np.repeat(np.maximum(counts, 1), counts)
    secs = (a + rank * slot + (rng.random(total) * np.maximum(slot - 1_000_000, 0)).astype(np.int64)) // 1_000_000
    return (secs * 1_000_000).astype("datetime64[us]")


def group_rank(keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal keys (keys must be sorted)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, sizes)


def lognormal_fen(rng: np.random.Generator, median_yuan: float, sigma: float, n: int,
                  lo_yuan: float = 0.01) -> np.ndarray:
    """Amounts in fen with the given median (yuan) and log-spread, rounded to whole yuan above 1000."""
    x = np.maximum(median_yuan * np.exp(sigma * rng.standard_normal(n)), lo_yuan) * 100
    return np.where(x > 100_000, np.round(x, -2), np.round(x)).astype(np.int64)


def ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype="datetime64[us]"), type=TS)


def date_array(days: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(days, dtype="datetime64[D]"), type=pa.date32())


def luhn_digits(body: np.ndarray) -> np.ndarray:
    """Luhn check digit for rows of a digit matrix (values 0-9)."""
    rev = body[:, ::-1].astype(np.int64)
    dbl = rev[:, ::2] * 2
    total = np.where(dbl > 9, dbl - 9, dbl).sum(axis=1) + rev[:, 1::2].sum(axis=1)
    return (10 - total % 10) % 10


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)[:, None] // powers % 10


def digits_to_arrow(d: np.ndarray, prefix: bytes = b"") -> pa.Array:
    """A digit matrix (values 0-9) as fixed-width strings, with an optional ASCII prefix."""
    from authops.core.data.identifiers import matrix_to_arrow

    m = (d + 48).astype(np.uint8)
    if prefix:
        m = np.hstack([np.broadcast_to(np.frombuffer(prefix, dtype=np.uint8), (len(d), len(prefix))), m])
    return matrix_to_arrow(m)


def spread_days(rng: np.random.Generator, counts: np.ndarray, start, end: str) -> np.ndarray:
    """Like spread_times, in whole days: distinct increasing dates per group. `start` is one date
    or one per group; callers cap counts at the number of days available."""
    counts = np.asarray(counts, dtype=np.int64)
    a = np.broadcast_to(np.asarray(start, dtype="datetime64[D]"), counts.shape)
    span = np.maximum((np.datetime64(end, "D") - a).astype(np.int64), 1)
    rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    slot = np.repeat(span / np.maximum(counts, 1), counts)
    offset = np.floor(rank * slot) + np.floor(rng.random(len(rank)) * np.maximum(np.floor(slot), 1))
    return np.repeat(a, counts) + offset.astype(np.int64).astype("timedelta64[D]")


def codes(prefix: str, digits: np.ndarray) -> pa.Array:
    """ASCII prefix + a digit matrix (from ascii_digits / sequence_digits), as Arrow strings."""
    from authops.core.data.identifiers import matrix_to_arrow

    pb = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    m = np.empty((len(digits), len(pb) + digits.shape[1]), dtype=np.uint8)
    m[:, :len(pb)] = pb
    m[:, len(pb):] = digits
    return matrix_to_arrow(m)


def sequence_digits(start: int, n: int, width: int) -> np.ndarray:
    """ascii_digits(start + arange(n), width) without arithmetic per row (runs of repeated blocks)."""
    blocks = (width + 3) // 4
    out = np.empty((n, blocks), dtype=np.uint32)
    for b in range(blocks):  # b = 0 is the lowest four digits
        unit = 10 ** (4 * b)
        skip = start % unit
        first = start // unit
        runs = (n + skip + unit - 1) // unit
        if unit == 1:
            out[:, blocks - 1] = np.resize(np.roll(ids._QUAD, -(start % 10_000)), n)
            continue
        vals = ids._QUAD[(first + np.arange(runs)) % 10_000]
        counts = np.full(runs, unit, dtype=np.int64)
        counts[0] -= skip
        counts[-1] = n - counts[:-1].sum()
        out[:, blocks - 1 - b] = np.repeat(vals, counts)
    m = out.view(np.uint8).reshape(n, blocks * 4)
    return m if blocks * 4 == width else np.ascontiguousarray(m[:, blocks * 4 - width:])
