"""Arrow plumbing shared by the masking functions: input coercion, per-chunk application, byte views."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.errors import InvalidInput

Values = pa.Array | pa.ChunkedArray


def as_arrow(values, type_: pa.DataType | None = None) -> Values:
    """Arrow arrays pass through; lists, numpy arrays and pandas Series become an Arrow array."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    return pa.array(values, type=type_, from_pandas=True)


def as_strings(values) -> Values:
    """The values as Arrow `string`: dictionaries decoded, large_string narrowed (one chunk holds under
    2 GiB of text), anything else cast (IDs stored as integers; binary must be UTF-8)."""
    values = as_arrow(values, pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values if values.type == pa.string() else pc.cast(values, pa.string())


def per_chunk(fn: Callable[[pa.Array], pa.Array], values: Values, out_type: pa.DataType | None = None) -> Values:
    """Apply an Array -> Array function to every chunk, keeping the container (Array or ChunkedArray)."""
    if isinstance(values, pa.ChunkedArray):
        chunks = [fn(c) for c in values.chunks]
        if chunks:
            return pa.chunked_array(chunks)
        return pa.chunked_array([], type=out_type or fn(pa.array([], values.type)).type)
    return fn(values)


def null_like(values: Values, type_: pa.DataType | None = None) -> Values:
    """All-null values of the same length and chunking."""
    t = type_ or values.type
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([pa.nulls(len(c), t) for c in values.chunks], type=t)
    return pa.nulls(len(values), t)


def validity(c: pa.Array) -> np.ndarray | None:
    """Boolean numpy mask of valid entries, or None when there are no nulls."""
    if c.null_count == 0:
        return None
    return c.is_valid().to_numpy(zero_copy_only=False)


def string_buffers(c: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to data start, data bytes) of a string/binary array, honouring slices."""
    n = len(c)
    bufs = c.buffers()
    off_t = np.int64 if pa.types.is_large_string(c.type) or pa.types.is_large_binary(c.type) else np.int32
    if n == 0 or bufs[1] is None:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(bufs[1], dtype=off_t)[c.offset:c.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    return offsets - offsets[0], data[offsets[0]:offsets[-1]]


def matrix_to_strings(m: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """An (n, w) matrix of ASCII bytes as a string array of w-character values; `valid` False -> null."""
    n, w = m.shape
    offsets = np.arange(0, w * (n + 1), w, dtype=np.int32)
    bitmap = None
    null_count = 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int(n - valid.sum())
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets),
                                                 pa.py_buffer(np.ascontiguousarray(m, dtype=np.uint8))],
                                 null_count=null_count)


def labels_at(labels: list[str], index: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """labels[index] per row as a string array; rows where `valid` is False are null."""
    idx = pa.array(index.astype(np.int32, copy=False), mask=None if valid is None else ~valid)
    return pa.array(labels, type=pa.string()).take(idx)


def check_char(char: str) -> str:
    if not isinstance(char, str) or len(char) != 1:
        raise InvalidInput("the mask character must be exactly one character")
    return char
