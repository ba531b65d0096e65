"""Validate a raw batch against a resource schema and convert it to the stored Arrow types.

Every ingestion path (Excel, CSV, database table, service interface) ends here. The
checks are vectorized with pyarrow/numpy so a million rows take about a second. The
report names row, column and rule; it never contains a value, because the values are
the sensitive data the platform exists to keep in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data import identifiers
from authops.core.data.schema import Check, DType, FieldSpec, ResourceSchema, arrow_schema, arrow_type
from authops.platform.catalog.report import ErrorReport

MAX_TEXT = 4000
SHANGHAI_OFFSET_US = 8 * 3600 * 1_000_000  # China has kept UTC+8 without DST since 1991

CHECK_HELP = {
    Check.RESIDENT_ID: "not a valid 18-digit resident ID number (GB 11643 check digit, birth date or region code)",
    Check.USCC: "not a valid 18-character unified social credit code (GB 32100 check character)",
    Check.VIN: "not a valid 17-character VIN (ISO 3779 check digit at position 9)",
    Check.PLATE: "not a mainland plate number (province character, letter, 5 or 6 characters)",
    Check.PHONE: "not a phone number (11-digit mobile or 0-prefixed landline)",
}
TYPE_HELP = {
    DType.INT: "must be a whole number",
    DType.FLOAT: "must be a number (a percentage like 12.5% is accepted)",
    DType.DATE: "must be a date written YYYY-MM-DD (YYYY-MM or YYYY for months and years)",
    DType.TIMESTAMP: "must be a date and time written YYYY-MM-DD HH:MM[:SS] (Beijing time unless an offset is given)",
    DType.BOOL: "must be 是 or 否 (Y/N, 1/0, true/false are accepted)",
}
TRUE = ["是", "y", "yes", "true", "t", "1", "有"]
FALSE = ["否", "n", "no", "false", "f", "0", "无"]


def _label(f: FieldSpec) -> str:
    return f"{f.name} ({f.name_zh})"


def _strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text form of a column, trimmed, with empty strings as null."""
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    col = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def _mask(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_int(s: pa.ChunkedArray) -> pa.ChunkedArray:
    ok = pc.match_substring_regex(s, r"^[+-]?\d{1,18}(\.0+)?$")
    head = pc.replace_substring_regex(s, r"\.0+$", "")
    return pc.if_else(ok, pc.cast(pc.if_else(ok, head, "0"), pa.int64()), pa.scalar(None, pa.int64()))


def _parse_money(s: pa.ChunkedArray) -> pa.ChunkedArray:
    """Yuan with up to two decimals (thousands separators allowed) to integer fen, exactly."""
    s = pc.replace_substring(pc.replace_substring(s, ",", ""), "¥", "")
    parts = pc.extract_regex(s, r"^(?P<sign>[+-]?)(?P<yuan>\d{1,15})(?:\.(?P<frac>\d{0,2}))?$")
    valid = pc.is_valid(parts)
    yuan = pc.cast(pc.if_else(valid, pc.struct_field(parts, "yuan"), "0"), pa.int64())
    frac = pc.utf8_rpad(pc.if_else(valid, pc.struct_field(parts, "frac"), ""), width=2, padding="0")
    fen = pc.add(pc.multiply(yuan, 100), pc.cast(frac, pa.int64()))
    fen = pc.if_else(pc.equal(pc.struct_field(parts, "sign"), "-"), pc.negate(fen), fen)
    return pc.if_else(valid, fen, pa.scalar(None, pa.int64()))


def _parse_float(s: pa.ChunkedArray) -> pa.ChunkedArray:
    pct = pc.ends_with(s, "%")
    body = pc.replace_substring_regex(s, "%$", "")
    ok = pc.match_substring_regex(body, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    val = pc.cast(pc.if_else(ok, body, "0"), pa.float64())
    val = pc.if_else(pct, pc.divide(val, 100.0), val)
    return pc.if_else(ok, val, pa.scalar(None, pa.float64()))


def _parse_date(s: pa.ChunkedArray) -> pa.ChunkedArray:
    parts = pc.extract_regex(
        s, r"^(?P<y>\d{4})(?:[-/.年]?(?P<m>\d{1,2})(?:[-/.月]?(?P<d>\d{1,2})日?)?月?)?(?:[ T]00:00(?::00)?)?$")
    valid = pc.is_valid(parts)
    m = pc.utf8_lpad(pc.if_else(pc.equal(pc.struct_field(parts, "m"), ""), "1", pc.struct_field(parts, "m")), 2, "0")
    d = pc.utf8_lpad(pc.if_else(pc.equal(pc.struct_field(parts, "d"), ""), "1", pc.struct_field(parts, "d")), 2, "0")
    text = pc.binary_join_element_wise(pc.struct_field(parts, "y"), m, d, "-")
    ts = pc.strptime(pc.if_else(valid, text, "x"), format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 02-30 over into March; a real date prints back as it was written.
    real = pc.equal(pc.strftime(ts, format="%Y-%m-%d"), text)
    out = pc.cast(ts, pa.date32())
    return pc.if_else(pc.and_kleene(valid, real), out, pa.scalar(None, pa.date32()))


def _parse_timestamp(s: pa.ChunkedArray) -> pa.ChunkedArray:
    s = pc.replace_substring_regex(s, r"^(\d{4})/(\d{1,2})/(\d{1,2})", r"\1-\2-\3")
    s = pc.replace_substring(s, "T", " ")
    s = pc.replace_substring_regex(s, r"(\.\d+)", "")  # sub-second precision is not kept
    s = pc.replace_substring_regex(s, r"Z$", "+0000")
    s = pc.replace_substring_regex(s, r"([+-]\d{2}):(\d{2})$", r"\1\2")
    s = pc.replace_substring_regex(s, r"^(\d{4}-\d{1,2}-\d{1,2} \d{1,2}:\d{2})($|[+-])", r"\1:00\2")
    s = pc.replace_substring_regex(s, r"^(\d{4}-\d{1,2}-\d{1,2})$", r"\1 00:00:00")
    utc = pa.timestamp("us", tz="UTC")
    with_tz = pc.strptime(s, format="%Y-%m-%d %H:%M:%S%z", unit="us", error_is_null=True)
    local = pc.strptime(s, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
    local_utc = pc.cast(pc.subtract(pc.cast(local, pa.int64()), SHANGHAI_OFFSET_US), pa.timestamp("us"))
    out = pc.coalesce(pc.cast(with_tz, utc), pc.cast(pc.assume_timezone(local_utc, "UTC"), utc))
    day = pc.replace_substring_regex(s, r"^(\d{4}-\d{1,2}-\d{1,2}) .*$", r"\1")
    real_day = pc.is_valid(_parse_date(day))  # strptime would roll 02-30 over into March
    return pc.if_else(real_day, out, pa.scalar(None, utc))


def _parse_bool(s: pa.ChunkedArray) -> pa.ChunkedArray:
    low = pc.utf8_lower(s)
    t, f = pc.is_in(low, pa.array(TRUE)), pc.is_in(low, pa.array(FALSE))
    return pc.if_else(t, True, pc.if_else(f, False, pa.scalar(None, pa.bool_())))


def _temporal(col: pa.ChunkedArray, f: FieldSpec) -> pa.ChunkedArray | None:
    """Direct conversion of typed database columns (no text round trip)."""
    t = col.type
    if f.dtype == DType.DATE and (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        return pc.cast(col, pa.date32()) if pa.types.is_date(t) or t.tz is None else \
            pc.cast(pc.cast(col, pa.timestamp("us", tz="Asia/Shanghai")).cast(pa.timestamp("us")), pa.date32())
    if f.dtype == DType.TIMESTAMP and pa.types.is_timestamp(t):
        if t.tz is not None:
            return pc.cast(col, pa.timestamp("us", tz="UTC"))
        us = pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64())
        return pc.cast(pc.cast(pc.subtract(us, SHANGHAI_OFFSET_US), pa.timestamp("us")), pa.timestamp("us", tz="UTC"))
    return None


PARSERS = {DType.INT: _parse_int, DType.FLOAT: _parse_float, DType.DATE: _parse_date,
           DType.TIMESTAMP: _parse_timestamp, DType.BOOL: _parse_bool}


def convert_column(col: pa.ChunkedArray, f: FieldSpec, report: ErrorReport, first_row,
                   stored_units: bool = False) -> pa.ChunkedArray:
    """Convert one column; record type/required/enum/check/length errors by row."""
    target = arrow_type(f.dtype)
    typed = f.dtype != DType.STRING and col.type == target and (stored_units or f.kind.value != "money")
    direct = col if typed else _temporal(col, f)
    if direct is not None:
        out, present = direct, _mask(pc.is_valid(direct))
        bad = np.zeros(len(col), dtype=bool)
    else:
        if f.kind.value == "money" and (pa.types.is_integer(col.type)):
            col = pc.multiply(pc.cast(col, pa.int64()), 100)
            s = _strings(col)
            out = pc.cast(col, pa.int64())
        elif f.dtype == DType.INT and pa.types.is_integer(col.type):
            s = _strings(col)
            out = pc.cast(col, pa.int64())
        elif f.dtype == DType.BOOL and pa.types.is_boolean(col.type):
            s = _strings(col)
            out = col
        else:
            s = _strings(col)
            if f.kind.value == "money":
                out = _parse_money(s)
            elif f.dtype in PARSERS:
                out = PARSERS[f.dtype](s)
            else:
                out = s
        present = _mask(pc.is_valid(s))
        bad = present & ~_mask(pc.is_valid(out))
    rows = np.flatnonzero(bad)
    if rows.size:
        help_ = "must be an amount in yuan with at most two decimals" if f.kind.value == "money" else TYPE_HELP[f.dtype]
        report.add_rows("type", f"{_label(f)} {help_}", _at(first_row, rows), column=f.name)
    if f.required:
        missing = np.flatnonzero(~present)
        if missing.size:
            report.add_rows("required", f"{_label(f)} is required; fill it in", _at(first_row, missing), column=f.name)
    if f.dtype == DType.STRING:
        long_ = np.flatnonzero(_mask(pc.greater(pc.utf8_length(out), MAX_TEXT)))
        if long_.size:
            report.add_rows("length", f"{_label(f)} is longer than {MAX_TEXT} characters", _at(first_row, long_),
                            column=f.name)
        if f.enum:
            off = np.flatnonzero(present & ~_mask(pc.is_in(out, pa.array(list(f.enum)))))
            if off.size:
                shown = "、".join(f.enum[:30]) + ("…" if len(f.enum) > 30 else "")
                report.add_rows("enum", f"{_label(f)} must be one of: {shown}", _at(first_row, off), column=f.name)
        if f.check:
            invalid = np.flatnonzero(present & ~identifiers.valid_mask(f.check, out))
            if invalid.size:
                report.add_rows("check", f"{_label(f)} is {CHECK_HELP[f.check]}", _at(first_row, invalid),
                                column=f.name)
    return pc.cast(out, target)


def _at(first_row, idx):
    """Source row numbers of table indices: `first_row + idx`, or a per-row map (blank rows skipped)."""
    if isinstance(first_row, np.ndarray):
        return first_row[idx]
    return idx + first_row


def _duplicates(table: pa.Table, schema: ResourceSchema, report: ErrorReport, first_row) -> None:
    if not schema.key or table.num_rows == 0:
        return
    keys = table.select(list(schema.key)).to_pandas()
    dup = keys.duplicated(keep="first").to_numpy()
    rows = np.flatnonzero(dup & keys.notna().all(axis=1).to_numpy())
    if rows.size:
        first = keys.reset_index().groupby(list(schema.key), dropna=True)["index"].transform("min").to_numpy()
        names = ", ".join(schema.key)
        for r in rows[:100]:
            report.add("duplicate_key", f"the key ({names}) repeats row {int(_at(first_row, first[r]))}; "
                       "keep one row per key", row=int(_at(first_row, r)), column=schema.key[0])
        if rows.size > 100:
            report.add_rows("duplicate_key", f"the key ({names}) repeats an earlier row", _at(first_row, rows[100:]),
                            column=schema.key[0])


def validate(schema: ResourceSchema, raw: pa.Table, *, first_row: int = 1,
             report: ErrorReport | None = None, what: str = "the batch", stored_units: bool = False) -> pa.Table:
    """Return `raw` converted to the schema's Arrow types, or raise IngestRejected with the report.

    `raw` holds one column per field it supplies (names as in the schema; missing optional
    fields become null). `first_row` is the source row number of the table's row 0 (2 for a
    CSV with a header, 3 for the Excel template), so the report points at the user's row.
    Money arrives in yuan, except with `stored_units` (tables already in the stored form,
    such as the synthetic generator's), where an int64 money column is already in fen.
    """
    report = report if report is not None else ErrorReport()
    first_row = getattr(raw, "first_row", first_row)
    numbers = getattr(raw, "row_numbers", None)
    if numbers is not None:
        first_row = np.asarray(numbers.to_numpy(zero_copy_only=False) if hasattr(numbers, "to_numpy")
                               else numbers, dtype=np.int64)
    raw = getattr(raw, "table", raw)
    unknown = [c for c in raw.column_names if c not in schema.names]
    if unknown:
        report.add("header", f"column(s) not in the resource schema: {', '.join(unknown)}")
    n = raw.num_rows
    columns = []
    for f in schema.fields:
        if f.name in raw.column_names:
            columns.append(convert_column(raw.column(f.name), f, report, first_row, stored_units))
        else:
            if f.required:
                report.add("header", f"required column {_label(f)} is missing", column=f.name)
            columns.append(pa.chunked_array([pa.nulls(n, arrow_type(f.dtype))]))
    if not any(e["rule"] == "header" for e in report.errors):
        table = pa.Table.from_arrays(columns, schema=arrow_schema(schema).with_metadata(None))
        _duplicates(table, schema, report, first_row)
    report.raise_if_any(what)
    return table
