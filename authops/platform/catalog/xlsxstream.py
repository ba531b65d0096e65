"""Streaming an .xlsx sheet's cells without openpyxl: zip checks, workbook parts, expat on the sheet.

openpyxl's read-only mode parses with ElementTree and builds a cell object per value; without
lxml that is ~7,000 rows/s on a 7-column sheet. expat with three small callbacks is about four
times that, in bounded memory: the sheet is fed 1 MB at a time and only the shared-string table
(which Excel keeps in one part) is held whole. Nothing here knows about resources or schemas;
errors are `XlsxError(rule, message)` and never quote the file's content.
"""

from __future__ import annotations

import io
import math
import posixpath
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.parsers import expat

MAX_UNZIPPED = 2 * 1024**3
MAX_RATIO = 100
RATIO_FLOOR = 10 * 1024**2  # below this much unzipped, any ratio is harmless
DATE_FMT_IDS = {*range(14, 18), 22, *range(27, 32), *range(34, 37), *range(50, 59)}
TIME_FMT_IDS = {18, 19, 20, 21, 32, 33, 45, 46, 47}
PREFERRED_SHEET = "数据 data"


class XlsxError(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


class BadXml(Exception):
    pass


@dataclass
class Book:
    sheet: str  # the sheet's name
    member: str  # its part in the zip
    epoch: datetime  # day 0 (1899-12-30, or 1904-01-01 for Mac-era workbooks)
    date_styles: dict[str, str]  # style index (as in the s attribute) -> "date" or "time"
    strings: list[str]  # the shared-string table


def open_zip(data: bytes) -> zipfile.ZipFile:
    if data[:4] == b"\xd0\xcf\x11\xe0":
        raise XlsxError("file_format", "this is a legacy .xls or a password-protected workbook; save it as "
                        ".xlsx without a password")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise XlsxError("file_format", "not an .xlsx file (not a zip archive); save it as Excel Workbook "
                        "(.xlsx)") from None
    total = sum(i.file_size for i in infos)
    if total > MAX_UNZIPPED or (total > RATIO_FLOOR and total > MAX_RATIO * len(data)):
        raise XlsxError("file_format", f"the archive unpacks to {total:,} bytes from {len(data):,} (limits: "
                        f"{MAX_UNZIPPED:,} bytes, {MAX_RATIO}x its size); refused as a possible zip bomb, "
                        "split the file")
    if "xl/workbook.xml" not in {i.filename for i in infos}:
        raise XlsxError("file_format", "a zip archive but not an Excel workbook (no xl/workbook.xml)")
    return zf


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def parser(start=None, end=None, chars=None):
    p = expat.ParserCreate()
    p.buffer_text = True
    p.buffer_size = 1 << 16

    def no_dtd(*_):  # entity tricks (billion laughs, external entities) need a DTD
        raise BadXml("DTD")
    p.StartDoctypeDeclHandler = no_dtd
    p.EntityDeclHandler = no_dtd
    if start:
        p.StartElementHandler = start
    if end:
        p.EndElementHandler = end
    if chars:
        p.CharacterDataHandler = chars
    return p


def feed(zf: zipfile.ZipFile, member: str, p) -> None:
    with zf.open(member) as fh:
        while chunk := fh.read(1 << 20):
            p.Parse(chunk, False)
    p.Parse(b"", True)


def format_kind(code: str) -> str | None:
    """'date', 'time' or None for an Excel number format code."""
    s = re.sub(r'"[^"]*"|\\.|\[(?![hms]+\])[^\]]*\]|General', "", code.split(";")[0], flags=re.I)
    if re.search(r"[dy]", s, re.I):
        return "date"
    return "time" if re.search(r"[hs]|\[m", s, re.I) else None


def read_book(zf: zipfile.ZipFile, preferred: str = PREFERRED_SHEET) -> Book:
    """The sheet to read (`preferred` if present, else the first visible one) and the parts it needs."""
    sheets: list[dict] = []
    pr: dict = {}

    def wb_start(name, attrs):
        n = _local(name)
        if n == "sheet":
            sheets.append({_local(k): v for k, v in attrs.items()})
        elif n == "workbookPr":
            pr.update(attrs)
    feed(zf, "xl/workbook.xml", parser(wb_start))
    if not sheets:
        raise BadXml("no sheet")
    sheet = next((s for s in sheets if s.get("name") == preferred), None) or \
        next((s for s in sheets if s.get("state", "visible") == "visible"), sheets[0])
    rels: dict[str, str] = {}
    feed(zf, "xl/_rels/workbook.xml.rels", parser(
        lambda name, a: rels.__setitem__(a.get("Id"), a.get("Target", "")) if _local(name) == "Relationship" else None))
    target = rels[sheet.get("id")]
    member = posixpath.normpath(target.lstrip("/") if target.startswith("/") else "xl/" + target)
    names = set(zf.namelist())
    fmts: dict[int, str] = {}
    kinds: list[str | None] = []
    where: list[str] = []

    def st_start(name, attrs):
        n = _local(name)
        where.append(n)
        if n == "numFmt":
            fmts[int(attrs.get("numFmtId", -1))] = attrs.get("formatCode", "")
        elif n == "xf" and len(where) > 1 and where[-2] == "cellXfs":
            i = int(attrs.get("numFmtId", 0))
            kinds.append(format_kind(fmts[i]) if i in fmts else
                         "date" if i in DATE_FMT_IDS else "time" if i in TIME_FMT_IDS else None)
    if "xl/styles.xml" in names:
        feed(zf, "xl/styles.xml", parser(st_start, lambda name: where.pop()))
    sst: list[str] = []
    part: list[str] = []
    state = [0, 0]  # inside a <t> that is not phonetic; depth in <rPh>

    def ss_start(name, attrs):
        n = _local(name)
        if n == "rPh":
            state[1] += 1
        elif n == "t" and not state[1]:
            state[0] = 1

    def ss_end(name):
        n = _local(name)
        if n == "si":
            sst.append("".join(part))
            part.clear()
        elif n == "t":
            state[0] = 0
        elif n == "rPh":
            state[1] -= 1
    if "xl/sharedStrings.xml" in names:
        feed(zf, "xl/sharedStrings.xml", parser(ss_start, ss_end, lambda d: part.append(d) if state[0] else None))
    epoch = datetime(1904, 1, 1) if pr.get("date1904") in ("1", "true") else datetime(1899, 12, 30)
    return Book(sheet=sheet.get("name", ""), member=member, epoch=epoch,
                date_styles={str(i): k for i, k in enumerate(kinds) if k}, strings=sst)


def iter_sheet(zf: zipfile.ZipFile, member: str, on_row) -> None:
    """Stream a sheet, calling on_row(row number, [(col, type, style, text, has formula)]) per row
    with a value; col is 0-based, text the raw <v> or inline-string text. The list is reused."""
    cells: list[tuple] = []
    ref = typ = sty = text = None
    formula = False
    capture = phonetic = row = 0
    col = -1
    cols = _COLS

    def start(name, attrs):
        nonlocal ref, typ, sty, text, formula, capture, phonetic, row, col
        if name == "c":
            ref, typ, sty, text, formula = attrs.get("r"), attrs.get("t"), attrs.get("s"), None, False
        elif name == "v" or (name == "t" and not phonetic):
            capture = 1
        elif name == "row":
            cells.clear()
            r = attrs.get("r")
            row, col = (int(r) if r else row + 1), -1
        elif name == "f":
            formula = True
        elif name == "rPh":
            phonetic += 1
        elif ":" in name:
            start(_local(name), attrs)

    def end(name):
        nonlocal capture, phonetic, col
        if name == "c":
            if ref:
                letters = ref.rstrip("0123456789")
                col = cols.get(letters)
                if col is None:
                    col = _col_index(letters)
            else:
                col += 1
            if text is not None or formula:
                cells.append((col, typ, sty, text or "", formula))
        elif name == "v" or name == "t":
            capture = 0
        elif name == "row":
            if cells:
                on_row(row, cells)
        elif name == "rPh":
            phonetic -= 1
        elif ":" in name:
            end(_local(name))

    def chars(data):
        nonlocal text
        if capture:
            text = data if text is None else text + data
    feed(zf, member, parser(start, end, chars))


_COLS: dict[str, int] = {}


def _col_index(letters: str) -> int:
    i = 0
    for ch in letters.upper():
        i = i * 26 + ord(ch) - 64
    if not 0 < i <= 16384:
        raise ValueError("bad cell reference")
    _COLS[letters] = i - 1
    return i - 1


AUTO, DATE_ONLY, DATE_TIME = 0, 1, 2


def render_number(text: str, kind: str | None, mode: int, epoch: datetime) -> str:
    """A number cell as the text a person sees: date-formatted ones ISO (per `mode`: DATE_ONLY,
    DATE_TIME, or AUTO = a date at midnight, else date and time), other numbers to Excel's 15
    significant digits (so 1234.5600000000001 is 1234.56), integral ones without '.0'."""
    if not kind and text.isdigit():
        return text
    try:
        x = float(text)
    except ValueError:
        return text
    if not math.isfinite(x):
        return text
    if kind and 0 <= x < 2958466:
        if epoch.year == 1899 and 0 < x < 60:
            x += 1  # Excel's phantom 1900-02-29
        if mode == DATE_ONLY:
            return (epoch + timedelta(days=math.floor(x))).date().isoformat()
        secs = round(x * 86400)
        t = epoch + timedelta(seconds=secs)
        if mode == AUTO and kind == "time" and x < 1:
            return t.time().isoformat()
        return t.isoformat(" ") if mode == DATE_TIME or secs % 86400 else t.date().isoformat()
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return format(x, ".15g")
