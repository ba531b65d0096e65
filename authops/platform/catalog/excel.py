"""Reading an upload: a filled Excel template (.xlsx) or a UTF-8 CSV, into a `RawBatch`.

`read_upload` streams the sheet's XML with expat (`xlsxstream`; about 4x openpyxl's read-only
mode, which has no lxml here) into string columns, a few thousand rows at a time;
`read_csv_upload` does the same with pyarrow's streaming CSV reader. Both check the file's shape
only (format, size, header, formulas, row limit) and reject the whole file with one
`IngestRejected` listing row, column and rule; the values' types and checks are `validate`'s.
No message names a cell's value: uploads hold ID numbers, names and phones.
The template itself is `template.build_template`, re-exported here.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from xml.parsers import expat

import pyarrow as pa
import pyarrow.compute as pc
from xlsxwriter.utility import xl_col_to_name

from authops.core.data.schema import Kind, ResourceSchema
from authops.platform.catalog import xlsxstream as xs
from authops.platform.catalog.report import ErrorReport, IngestRejected
from authops.platform.catalog.template import DATA_SHEET, HEADER_ROWS, INFO_SHEET, LIST_SHEET, build_template

__all__ = ["DATA_SHEET", "INFO_SHEET", "LIST_SHEET", "IngestRejected", "RawBatch", "build_template",
           "read_csv_upload", "read_upload"]

CHUNK_ROWS = 8_192  # rows held as Python strings before they become Arrow arrays
FORMULA_RE = r"^[\t\r\n ]*(=.|[+\-@][A-Za-z(])"  # what a spreadsheet would evaluate


def _rejection(report: ErrorReport) -> IngestRejected:
    """The report as one IngestRejected whose message is its first error (never a value)."""
    d = report.details()
    more = f" (and {report.count - 1} more)" if report.count > 1 else ""
    return IngestRejected(f"the upload was rejected: {d['errors'][0]['message']}{more}", details=d)


def _check(report: ErrorReport) -> None:
    if report:
        raise _rejection(report)


def _reject(rule: str, message: str, row: int | None = None, column: str | None = None) -> IngestRejected:
    report = ErrorReport()
    report.add(rule, message, row=row, column=column)
    return _rejection(report)


@dataclass(frozen=True)
class RawBatch:
    """An upload's rows as string columns (schema order, null = empty cell), before validation.

    `row_numbers[i]` is the sheet row (CSV record, header included) of table row i; it differs
    from `first_row + i` once empty rows were skipped. Dates are ISO strings, numbers plain.
    """

    table: pa.Table
    first_row: int
    source: str
    row_numbers: pa.Array

    def row_of(self, i: int) -> int:
        return self.row_numbers[i].as_py()


# ---------------------------------------------------------------- header

def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().rstrip("*＊").strip().casefold()


def _label(col: int, text: str) -> str:
    """A header cell for a message: its letter, and its text unless that could be a value."""
    show = len(text) <= 40 and not re.search(r"\d{4}", text) and not re.match(FORMULA_RE, text)
    return f"{xl_col_to_name(col)} ({text!r})" if show else xl_col_to_name(col)


def _resolve_header(schema: ResourceSchema, row1: dict[int, str], row2: dict[int, str],
                    errors: ErrorReport) -> tuple[dict[int, int], int]:
    """Map sheet columns to field positions from the first one or two rows; return (map, header rows)."""
    lookup: dict[str, int] = {}
    for i, f in enumerate(schema.fields):
        lookup.setdefault(_norm(f.name), i)
        lookup.setdefault(_norm(f.name_zh), i)
    m1 = {c: lookup.get(_norm(t)) for c, t in row1.items() if t.strip()}
    m2 = {c: lookup.get(_norm(t)) for c, t in row2.items() if t.strip()}
    two = bool(m2) and all(v is not None for v in m2.values())
    if not any(v is not None for v in m1.values()) and not two:
        errors.add("header", "row 1 holds no column header of this resource (a field's Chinese or English "
                   "name); keep the template's header rows", row=1)
        _check(errors)
    colmap: dict[int, int] = {}
    for c in sorted(set(m1) | (set(m2) if two else set())):
        a, b = m1.get(c), m2.get(c) if two else None
        if a is not None and b is not None and a != b:
            errors.add("header", f"column {xl_col_to_name(c)}: row 1 names field {schema.fields[a].name}, "
                       f"row 2 names {schema.fields[b].name}", row=2, column=xl_col_to_name(c))
        elif a is None and b is None:
            errors.add("header", f"column {_label(c, row1[c])} is not a field of this resource; remove it or fix "
                       "its header", row=1, column=xl_col_to_name(c))
        else:
            colmap[c] = a if a is not None else b
    seen: dict[int, int] = {}
    for c, i in colmap.items():
        if i in seen:
            errors.add("header", f"field {schema.fields[i].name} ({schema.fields[i].name_zh}) appears twice: "
                       f"columns {xl_col_to_name(seen[i])} and {xl_col_to_name(c)}", column=schema.fields[i].name)
        seen.setdefault(i, c)
    for i, f in enumerate(schema.fields):
        if f.required and i not in seen:
            errors.add("header", f"required column {f.name_zh} / {f.name} is missing", column=f.name)
    _check(errors)
    return colmap, 2 if two else 1


# ---------------------------------------------------------------- shared tail

def _normalize(cols: list, nums: pa.Array) -> tuple[list, pa.Array]:
    """One chunk's columns (an array or None per field) trimmed, blanks null, empty rows dropped."""
    out, keep = [], None
    for c in cols:
        if c is not None and c.null_count < len(c):
            c = pc.utf8_trim_whitespace(c)
            c = pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)
            keep = pc.is_valid(c) if keep is None else pc.or_(keep, pc.is_valid(c))
            out.append(c)
        else:
            out.append(None)
    if keep is None:
        return out, nums.slice(0, 0)
    if not pc.all(keep).as_py():
        nums, out = nums.filter(keep), [None if c is None else c.filter(keep) for c in out]
    return out, nums


def _finish(schema: ResourceSchema, parts: list[tuple[list, pa.Array]], max_rows: int, errors: ErrorReport,
            source: str) -> RawBatch:
    """Flag formula-like text, check the row count and assemble the batch from normalized chunks."""
    parts = [(cols, nums) for cols, nums in parts if len(nums)]
    if not parts:
        _check(errors)
        raise _reject("empty", "the sheet has no data rows (data starts below the header rows)")
    nums = pa.concat_arrays([n for _, n in parts])
    if len(nums) > max_rows:
        errors.add("row_limit", f"more than {max_rows:,} data rows; split the file")
    columns = []
    for i, f in enumerate(schema.fields):
        col = pa.chunked_array([cols[i] if cols[i] is not None else pa.nulls(len(n), pa.string())
                                for cols, n in parts], pa.string())
        hits = pc.indices_nonzero(pc.fill_null(pc.match_substring_regex(col, FORMULA_RE), False))
        if len(hits):
            errors.add_rows("formula", f"{f.name} ({f.name_zh}): text starting with =, or + - @ and a letter, "
                            "is taken for a formula; remove the leading sign", nums.take(hits).to_pylist(),
                            column=f.name)
        columns.append(col)
    _check(errors)
    return RawBatch(table=pa.table(columns, names=schema.names), first_row=nums[0].as_py(), source=source,
                    row_numbers=nums)


# ---------------------------------------------------------------- xlsx

class _RowLimit(Exception):
    pass


def read_upload(data: bytes, schema: ResourceSchema, *, max_bytes: int = 200 * 1024 * 1024,
                max_rows: int = 1_048_576) -> RawBatch:
    """Read a filled template (.xlsx) into a RawBatch, or raise IngestRejected."""
    if len(data) > max_bytes:
        raise _reject("file_size", f"the file has {len(data):,} bytes; the limit is {max_bytes:,}")
    try:
        zf = xs.open_zip(data)
    except xs.XlsxError as exc:
        raise _reject(exc.rule, exc.message) from None
    errors = ErrorReport()
    fields = schema.fields
    modes = [{Kind.DATE: xs.DATE_ONLY, Kind.DATETIME: xs.DATE_TIME}.get(f.kind, xs.AUTO) for f in fields]
    hdr: dict[int, list] = {}
    state: dict = {"colmap": None, "count": 0}
    buf: list[list] = []
    rows: list[int] = []
    parts: list[tuple[list, pa.Array]] = []
    stray: dict[int, int] = {}

    def flush():
        if buf:
            parts.append(_normalize([pa.array(c, pa.string()) for c in zip(*buf)], pa.array(rows, pa.int64())))
            buf.clear()
            rows.clear()

    def data_row(r, cells):
        colmap = state["colmap"]
        vals = [None] * len(fields)
        for col, t, s, text, f in cells:
            i = colmap.get(col)
            if f:
                name = xl_col_to_name(col) if i is None else f"{fields[i].name} ({fields[i].name_zh})"
                errors.add("formula", f"row {r}, column {name}: the cell holds a formula; paste values only",
                           row=r, column=xl_col_to_name(col) if i is None else fields[i].name)
            elif i is None:
                if text.strip():
                    stray.setdefault(col, r)
            elif t == "s":
                vals[i] = sst[int(text)]
            elif t is None or t == "n":
                vals[i] = xs.render_number(text, skind.get(s), modes[i], epoch)
            elif t == "b":
                vals[i] = "TRUE" if text == "1" else "FALSE"
            else:
                vals[i] = text.replace("T", " ") if t == "d" else text
        state["count"] += 1
        if state["count"] > max_rows:
            raise _RowLimit
        buf.append(vals)
        rows.append(r)
        if len(buf) >= CHUNK_ROWS:
            flush()

    def resolve():
        text = {r: {c: (sst[int(x)] if t == "s" else x) for c, t, _, x, _ in hdr.get(r, ())} for r in (1, 2)}
        for r, cells in hdr.items():
            for c, *_, f in cells:
                if f:
                    errors.add("formula", f"row {r}, column {xl_col_to_name(c)}: a header cell holds a formula",
                               row=r, column=xl_col_to_name(c))
        state["colmap"], n = _resolve_header(schema, text[1], text[2], errors)
        if n == 1 and 2 in hdr:
            data_row(2, hdr[2])

    def on_row(r, cells):
        if state["colmap"] is None:
            if r <= HEADER_ROWS:
                hdr[r] = list(cells)
                return
            resolve()
        data_row(r, cells)

    try:
        book = xs.read_book(zf, DATA_SHEET)
        sst, skind, epoch = book.strings, book.date_styles, book.epoch
        xs.iter_sheet(zf, book.member, on_row)
        if state["colmap"] is None:
            resolve()
    except _RowLimit:
        raise _reject("row_limit", f"more than {max_rows:,} data rows; split the file") from None
    except (xs.BadXml, expat.ExpatError, zipfile.BadZipFile, zlib.error, KeyError, ValueError, IndexError,
            EOFError, NotImplementedError, RuntimeError):
        raise _reject("file_format", "the workbook is damaged or not a plain .xlsx (unreadable XML, missing "
                      "part or bad reference); open it in Excel and save it again as .xlsx") from None
    flush()
    for c, r in sorted(stray.items()):
        errors.add("header", f"column {xl_col_to_name(c)} has values (first in row {r}) but no header",
                   row=r, column=xl_col_to_name(c))
    return _finish(schema, parts, max_rows, errors, f"xlsx sheet {book.sheet!r}")


# ---------------------------------------------------------------- csv

def _bad_utf8_line(data: bytes, start: int) -> int | None:
    dec = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    step = 1 << 22
    for off in range(start, len(data), step):
        pending = len(dec.getstate()[0])
        try:
            dec.decode(view[off:off + step], final=off + step >= len(data))
        except UnicodeDecodeError as exc:
            return data.count(b"\n", 0, max(off - pending + exc.start, 0)) + 1
    return None


def read_csv_upload(data: bytes, schema: ResourceSchema, *, max_bytes: int = 200 * 1024 * 1024,
                    max_rows: int = 1_048_576) -> RawBatch:
    """Read a UTF-8 CSV (BOM optional) with the template's header into a RawBatch, or raise IngestRejected."""
    import pyarrow.csv as pacsv

    if len(data) > max_bytes:
        raise _reject("file_size", f"the file has {len(data):,} bytes; the limit is {max_bytes:,}")
    start = 3 if data[:3] == codecs.BOM_UTF8 else 0
    line = _bad_utf8_line(data, start)
    if line is not None:
        raise _reject("encoding", f"the file is not UTF-8 text (first invalid byte on line {line}); save it "
                      "as 'CSV UTF-8'", row=line)
    head = bytes(memoryview(data)[start:start + (1 << 20)]).decode("utf-8", "ignore")
    try:
        recs = [r for _, r in zip(range(2), csv.reader(io.StringIO(head)))]
    except csv.Error:
        recs = []
    if not recs or not any(x.strip() for x in recs[0]):
        raise _reject("header" if head.strip() else "empty", "the file has no header row", row=1)
    errors = ErrorReport()
    colmap, nh = _resolve_header(schema, dict(enumerate(recs[0])),
                                 dict(enumerate(recs[1])) if len(recs) > 1 else {}, errors)
    ncols = len(recs[0])
    names = [f"c{i}" for i in range(ncols)]

    def bad_row(row):
        errors.add("file_format", f"row {row.number}: {row.actual_columns} fields where the header has "
                   f"{row.expected_columns}", row=row.number)
        return "skip"
    parts: list[tuple[list, pa.Array]] = []
    stray: set[int] = set()
    seen = 0
    try:
        reader = pacsv.open_csv(
            pa.BufferReader(pa.py_buffer(memoryview(data)[start:])),
            read_options=pacsv.ReadOptions(skip_rows=nh, column_names=names, use_threads=False, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False,
                                             invalid_row_handler=bad_row),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                 strings_can_be_null=False))
        for batch in reader:
            for c in range(ncols):
                if c not in colmap and c not in stray and \
                        pc.any(pc.not_equal(pc.utf8_trim_whitespace(batch.column(c)), "")).as_py():
                    stray.add(c)
            cols = [None] * len(schema.fields)
            for c, i in colmap.items():
                cols[i] = batch.column(c)
            nums = pa.array(range(nh + 1 + seen, nh + 1 + seen + batch.num_rows), pa.int64())
            seen += batch.num_rows
            parts.append(_normalize(cols, nums))
            if sum(len(n) for _, n in parts) > max_rows:
                raise _reject("row_limit", f"more than {max_rows:,} data rows; split the file")
    except pa.ArrowException:  # its message quotes the row: never pass it on
        errors.add("file_format", "the file is not well-formed CSV (unbalanced quotes or broken rows)")
    _check(errors)
    for c in sorted(stray):
        errors.add("header", f"column {xl_col_to_name(c)} has values but no header", column=xl_col_to_name(c))
    return _finish(schema, parts, max_rows, errors, "csv")

