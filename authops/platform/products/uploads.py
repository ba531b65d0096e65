"""Customers' CSV uploads (batch subjects, joint-model labels): size, encoding, the header line."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from authops.core.errors import InvalidInput


def csv_lines(data: bytes, max_bytes: int, *, lower: bool = False) -> tuple[list[str], Iterator[list[str]]]:
    """(the header's column names, stripped; the reader of the other lines) of a UTF-8 CSV file of at
    most `max_bytes`, or InvalidInput naming the file."""
    if len(data) > max_bytes:
        raise InvalidInput(f"the file is {len(data)} bytes; at most {max_bytes}", details={"field": "file"})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the file must be UTF-8 CSV", details={"field": "file"}) from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() if lower else h.strip() for h in next(reader, [])]
    return header, reader
