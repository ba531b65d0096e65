"""A resource's Excel import template: what a provider department downloads, fills and uploads.

Sheet `数据 data` has a bilingual two-row header (Chinese names, then English names; data from
row 3), frozen panes, a cell format per column (text '@' for identifiers so ID numbers keep
leading zeros and a final X; dates yyyy-mm-dd; money 0.00) and data validation per field: a
drop-down for enumerations (values on the hidden sheet `_lists`, referenced by range so lists may
pass Excel's 255-character inline limit), 是/否 for flags, dates, whole numbers >= 0, decimals,
the fixed length of checked identifiers. Pop-up hints name type, required-ness, check and grade.
Sheet `说明 instructions` lists every field and the rules `excel.read_upload` enforces.
"""

from __future__ import annotations

import io
from datetime import date, datetime

import xlsxwriter
from xlsxwriter.utility import xl_col_to_name

from authops.core.data.schema import Check, Grade, Kind, ResourceSchema
from authops.core.errors import InvalidInput

DATA_SHEET, INFO_SHEET, LIST_SHEET = "数据 data", "说明 instructions", "_lists"
HEADER_ROWS = 2
MAX_DATA_ROWS = 1_048_576 - HEADER_ROWS

KIND_LABEL: dict[Kind, tuple[str, str]] = {
    Kind.IDENTIFIER_PERSON: ("个人证件号码/标识", "person identifier"),
    Kind.IDENTIFIER_ENTERPRISE: ("机构代码", "organisation code"),
    Kind.IDENTIFIER_VEHICLE: ("车辆标识", "vehicle identifier"),
    Kind.NAME_PERSON: ("姓名", "person name"), Kind.NAME_ORG: ("机构名称", "organisation name"),
    Kind.PHONE: ("电话号码", "phone number"), Kind.ADDRESS: ("地址", "address"),
    Kind.DATE: ("日期 yyyy-mm-dd", "date yyyy-mm-dd"),
    Kind.DATETIME: ("日期时间 yyyy-mm-dd hh:mm:ss", "date-time yyyy-mm-dd hh:mm:ss"),
    Kind.MONEY: ("金额（元，最多2位小数）", "amount in yuan, up to 2 decimals"),
    Kind.COUNT: ("非负整数", "whole number >= 0"),
    Kind.RATIO: ("比例（小数，如 0.85）", "ratio as a decimal, e.g. 0.85"),
    Kind.CATEGORY: ("分类", "category"), Kind.TEXT: ("文本", "text"), Kind.CODE: ("编码", "code"),
    Kind.FLAG: ("是/否", "yes/no (是/否)"), Kind.BANK_ACCOUNT: ("银行账号", "bank account number"),
}
CHECK_LABEL: dict[Check, tuple[str, str]] = {
    Check.RESIDENT_ID: ("18位身份证号，校验位按 GB 11643", "18-character resident ID, check digit per GB 11643"),
    Check.USCC: ("18位统一社会信用代码，校验位按 GB 32100", "18-character USCC, check digit per GB 32100"),
    Check.VIN: ("17位车辆识别代号，校验位按 ISO 3779", "17-character VIN, check digit per ISO 3779"),
    Check.PLATE: ("机动车号牌，如 京A12345", "plate number, e.g. 京A12345"),
    Check.PHONE: ("手机号（1开头11位）或座机（0xx-xxxxxxx）", "mobile (11 digits, 1...) or landline 0xx-xxxxxxx"),
}
CHECK_LENGTH = {Check.RESIDENT_ID: 18, Check.USCC: 18, Check.VIN: 17}
GRADE_LABEL = {Grade.L1: ("公开", "public"), Grade.L2: ("内部", "internal"), Grade.L3: ("敏感", "sensitive"),
               Grade.L4: ("高度敏感", "highly sensitive")}
RULES = [
    ("每行一条记录，从第3行开始填写；空行会被忽略。", "One record per row, from row 3 on; empty rows are ignored."),
    ("不要修改第1行（中文名）和第2行（英文名）表头；列可以调换顺序，选填列可以删除，必填列（红色）不能删除。",
     "Do not change the header rows (1: Chinese, 2: English names); columns may be reordered and optional "
     "ones deleted, required ones (red) may not."),
    ("不要使用公式；以 = 开头、或以 + - @ 加字母或括号开头的内容会被当作公式而拒收。",
     "No formulas: a cell starting with =, or with + - @ followed by a letter or '(', is rejected as a formula."),
    (f"每个文件最多 {MAX_DATA_ROWS:,} 行数据。", f"At most {MAX_DATA_ROWS:,} data rows per file."),
    ("金额以元为单位，最多两位小数，如 1234.56；不要带千分位、货币符号或“万元”。",
     "Money in yuan with at most 2 decimals, e.g. 1234.56; no thousands separators, currency signs or 万元."),
    ("日期写 yyyy-mm-dd，日期时间写 yyyy-mm-dd hh:mm:ss；是否类字段填“是”或“否”。",
     "Dates as yyyy-mm-dd, date-times as yyyy-mm-dd hh:mm:ss; yes/no fields take 是 or 否."),
    ("证件号码等文本列已设为文本格式，请勿改为数字格式，以免丢失前导0或末位X。",
     "Text columns (ID numbers etc.) are formatted as text: keep them so, or leading zeros and a final X are lost."),
    ("任何一行不合格，整个文件都会被拒收；报告列出出错的行、列和规则，不显示单元格内容。",
     "If any row is invalid the whole file is rejected; the report names row, column and rule, never a cell's "
     "content."),
]


def _hint(f, lang: str) -> str:
    z = lang == "zh"
    parts = [("类型：" if z else "Type: ") + KIND_LABEL[f.kind][0 if z else 1],
             ("必填" if f.required else "选填") if z else ("required" if f.required else "optional")]
    if f.check:
        parts.append(("校验：" if z else "Check: ") + CHECK_LABEL[f.check][0 if z else 1])
    if f.enum:
        parts.append("从下拉列表选择" if z else "pick from the drop-down list")
    parts.append(("分级：" if z else "Grade: ") + f"{f.grade.value} {GRADE_LABEL[f.grade][0 if z else 1]}"
                 + (("；个人信息" if z else "; personal information") if f.pii else ""))
    return "\n".join(parts)[:255]


def _validation(f, list_ref: str | None) -> dict:
    if list_ref:
        return {"validate": "list", "source": list_ref}
    if f.kind == Kind.FLAG:
        return {"validate": "list", "source": ["是", "否"]}
    if f.kind in (Kind.DATE, Kind.DATETIME):
        return {"validate": "date", "criteria": "between", "minimum": date(1900, 1, 1),
                "maximum": datetime(2100, 12, 31, 23, 59, 59)}
    if f.kind == Kind.COUNT:
        return {"validate": "integer", "criteria": ">=", "value": 0}
    if f.kind in (Kind.MONEY, Kind.RATIO):
        return {"validate": "decimal", "criteria": "between", "minimum": -1e13, "maximum": 1e13}
    if f.check in CHECK_LENGTH:
        return {"validate": "length", "criteria": "==", "value": CHECK_LENGTH[f.check]}
    return {"validate": "any"}


def build_template(*, code: str, name_zh: str, name_en: str, schema: ResourceSchema, lang: str = "zh") -> bytes:
    """The .xlsx import template of one resource; `lang` ("zh"/"en") picks the pop-up hints' language."""
    if lang not in ("zh", "en"):
        raise InvalidInput(f"lang must be 'zh' or 'en', not {lang!r}")
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws, info, lists = (wb.add_worksheet(DATA_SHEET), wb.add_worksheet(INFO_SHEET), wb.add_worksheet(LIST_SHEET))
    fmt = {k: wb.add_format(v) for k, v in {
        "zh": {"bold": True, "bg_color": "#DDEBF7", "border": 1, "num_format": "@"},
        "zh_req": {"bold": True, "bg_color": "#DDEBF7", "border": 1, "font_color": "#C00000", "num_format": "@"},
        "en": {"italic": True, "font_color": "#595959", "bg_color": "#F2F2F2", "border": 1, "num_format": "@"},
        "text": {"num_format": "@"}, "date": {"num_format": "yyyy-mm-dd"},
        "datetime": {"num_format": "yyyy-mm-dd hh:mm:ss"}, "money": {"num_format": "0.00"},
        "count": {"num_format": "0"}, "ratio": {"num_format": "0.0000"}, "title": {"bold": True, "font_size": 14},
        "bold": {"bold": True}, "wrap": {"text_wrap": True, "valign": "top"}, "grey": {"italic": True,
                                                                                        "font_color": "#595959"},
    }.items()}
    list_col = 0
    for c, f in enumerate(schema.fields):
        width = max(len(f.name_zh) * 2 + 2, len(f.name) + 2, 12)
        if f.kind in (Kind.DATE, Kind.DATETIME, Kind.MONEY, Kind.COUNT, Kind.RATIO):
            cell = fmt[f.kind.value]
            width = max(width, 21 if f.kind == Kind.DATETIME else 13)
        else:
            cell = fmt["text"]
            width = max(width, 22 if f.check in CHECK_LENGTH or f.kind == Kind.ADDRESS else 14)
        ws.set_column(c, c, min(width, 50), cell)
        ws.write_string(0, c, f.name_zh, fmt["zh_req" if f.required else "zh"])
        ws.write_string(1, c, f.name, fmt["en"])
        list_ref = None
        if f.enum:
            col = xl_col_to_name(list_col)
            lists.write_string(0, list_col, f.name)
            for i, v in enumerate(f.enum, start=1):
                lists.write_string(i, list_col, v)
            list_ref = f"='{LIST_SHEET}'!${col}$2:${col}${len(f.enum) + 1}"
            list_col += 1
        title = (f.name_zh if lang == "zh" else f.name)[:32]
        hint = {"input_title": title, "input_message": _hint(f, lang)}
        ws.data_validation(0, c, 1, c, {"validate": "any", **hint})
        v = _validation(f, list_ref)
        if v["validate"] != "any":
            v.update(error_title=title, error_message=_hint(f, lang))
        ws.data_validation(HEADER_ROWS, c, MAX_DATA_ROWS + 1, c, {**v, **hint})
    ws.freeze_panes(HEADER_ROWS, 0)
    ws.activate()
    lists.hide()

    info.set_column(0, 0, 6)
    info.set_column(1, 2, 26)
    info.set_column(3, 3, 30)
    info.set_column(4, 4, 12)
    info.set_column(5, 6, 40)
    info.set_column(7, 8, 16)
    info.write_string(0, 0, f"{name_zh} {name_en}（{code}）数据导入模板 Import template", fmt["title"])
    info.write_string(1, 0, f"数据填写在“{DATA_SHEET}”工作表。Fill in the data on sheet '{DATA_SHEET}'.")
    info.write_string(3, 0, "填写规则 Rules", fmt["bold"])
    r = 4
    for i, (zh, en) in enumerate(RULES, start=1):
        info.write_number(r, 0, i)
        info.write_string(r, 1, zh)
        info.write_string(r + 1, 1, en, fmt["grey"])
        r += 2
    r += 1
    info.write_string(r, 0, "字段 Fields", fmt["bold"])
    heads = ["序号 No.", "中文名 Chinese name", "英文名 English name", "类型 Type", "必填 Required",
             "允许值 Allowed values", "校验 Check", "分级 Grade", "个人信息 Personal info"]
    info.write_row(r + 1, 0, heads, fmt["bold"])
    for i, f in enumerate(schema.fields, start=1):
        kz, ke = KIND_LABEL[f.kind]
        allowed = " | ".join(f.enum) if f.enum else ("是 / 否" if f.kind == Kind.FLAG else "")
        check = " / ".join(CHECK_LABEL[f.check]) if f.check else ""
        gz, ge = GRADE_LABEL[f.grade]
        info.write_row(r + 1 + i, 0, [i, f.name_zh, f.name, f"{kz} / {ke}", "是 yes" if f.required else "否 no",
                                      allowed, check, f"{f.grade.value} {gz} {ge}", "是 yes" if f.pii else "否 no"],
                       fmt["wrap"])
    wb.close()
    return buf.getvalue()
