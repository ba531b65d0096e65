"""Product pages from the catalogue: each product's contract, examples, price and a Python client.

`page(p)` is the structured page of one `ProductDef` (what the console, the public API and the
OpenAPI document show); `markdown(p)` renders it with a runnable Python client (httpx, the API key
from the environment, an Idempotency-Key per call, the error body's code and message on failure);
`index_markdown()` is the table of all seven. `python -m authops.products.docs` writes
docs/products/; `--check` exits 1 when the committed files differ from the rendering.

The answer documented is the catalogue contract (`ProductDef.response`, `response_schema()`),
which the call API answers in (runtime.shaping → `ProductDef.shape`); a report's rows are
documented from the spec's aggregate outputs (group columns, noisy measures, post-noise flags).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from authops.products.catalog import PRODUCTS, ProductDef

API = "/api/v1/products"
DEFAULT_OUT = Path("docs/products")
REGISTRATION_FORMAT = "SZDP-<year>-<nnnn>"
EXAMPLE_REGISTRATION = "SZDP-2026-0001"

CATEGORY = {"industry": ("行业产品", "industry product"),
            "public_governance": ("公共治理产品（免费）", "public governance product (free)")}
SUBJECT = {"enterprise": ("企业（统一社会信用代码）", "enterprise (USCC)"),
           "person": ("个人（居民身份证号码）", "person (resident ID number)"),
           "vehicle": ("车辆（车架号或号牌）", "vehicle (VIN or plate number)"),
           "none": ("无（聚合统计）", "none (aggregate statistics)")}
INVOCATION = {"sync": ("同步调用", "synchronous call"), "report": ("异步报告", "asynchronous report")}
UNIT = {"call": ("次", "call"), "record": ("条", "record"), "month": ("月", "month"), "batch": ("批", "batch")}
ERRORS = (
    (401, "missing_credential / unauthenticated", "没有或无效的 API 密钥 no or an unknown API key"),
    (403, "no_active_agreement", "没有生效的使用协议 no active usage agreement for this product"),
    (403, "no_consent", "主体未授权或授权已失效 the subject's consent is missing, expired or for another purpose"),
    (403, "product_not_registered", "产品未登记或已下架 the product is not (or no longer) registered"),
    (404, "not_found", "没有该产品 no such product"),
    (409, "idempotency_conflict", "同一 Idempotency-Key 用于了不同请求 the key was used for another request"),
    (409, "budget_exhausted", "隐私预算已用尽（报告） the privacy budget is spent (reports)"),
    (422, "invalid_input", "请求字段有误，details 指出字段 a field is wrong; details name it"),
)


# --- the contract -------------------------------------------------------------------------------

def price_text(price_fen: int, unit: str) -> str:
    """'8.00 元/次 (per call)', or '免费 free'."""
    if price_fen == 0:
        return "免费 free"
    zh, en = UNIT.get(unit, (unit, unit))
    return f"{price_fen // 100}.{price_fen % 100:02d} 元/{zh} (per {en})"


def answer_fields(p: ProductDef) -> list[dict[str, Any]]:
    """The answer's fields (the catalogue contract): name, JSON schema, meaning, allowed values, bounds."""
    if p.invocation == "report":
        return []
    props = p.response_schema()["properties"]
    return [{"name": f.name, "schema": props[f.name], "meaning": f.meaning,
             "values": list(f.values) if f.values else None,
             "bounds": list(f.bounds) if f.bounds else None} for f in p.response]


def answer_schema(p: ProductDef) -> dict[str, Any]:
    """JSON Schema of the `answer` a call returns (sync), or of a finished report (report products)."""
    return _report_schema(p) if p.invocation == "report" else p.response_schema()


def report_columns(p: ProductDef) -> dict[str, list[dict[str, Any]]]:
    """Per report (an aggregate output): its row's columns with meaning and allowed values."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in p.spec.outputs:
        r = o.release
        if r.policy != "aggregate":
            continue
        cols = [{"name": g, "schema": {"type": ["string", "integer"]}, "meaning": "分组列 group column", "values": None}
                for g in r.group_by]
        for m in r.measures:
            what = "persons' rows" if m.fn == "count" else f"{m.column}"
            bounds = f", each contribution clamped to {list(m.bounds)}" if m.bounds else ""
            cols.append({"name": m.name, "schema": {"type": "number"}, "values": None,
                         "meaning": f"{m.fn} of {what} with differential-privacy noise{bounds}"})
        for c in r.post:
            cols.append({"name": c.name, "values": list(c.values) if c.values else None,
                         "schema": {"type": "string", "enum": list(c.values)} if c.values else {"type": "number"},
                         "meaning": c.description or f"computed from the noisy figures: {c.expr}"})
        out[o.name] = cols
    return out


def _report_schema(p: ProductDef) -> dict[str, Any]:
    rows = [{"type": "object", "title": name, "additionalProperties": False,
             "required": [c["name"] for c in cols],
             "properties": {c["name"]: {**c["schema"], "description": c["meaning"]} for c in cols}}
            for name, cols in report_columns(p).items()]
    return {"type": "object", "required": ["rows"],
            "properties": {"rows": {"type": "array", "items": {"anyOf": rows}}}}


# --- the examples -------------------------------------------------------------------------------

def call_body(p: ProductDef, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The call API body for a request in the product's own contract (subject = the product's claim)."""
    request = p.example_request if request is None else request
    if p.invocation == "report":
        body = {"report": request["report"]}
    else:
        _, subject = p.claim(request)  # type: ignore[misc]
        body = {"subject": subject}
    if request.get("purpose"):
        body["purpose"] = request["purpose"]
    return body


def subject_forms(p: ProductDef) -> list[str]:
    """How `subject` is written, e.g. '<USCC>' or '<USCC>|<PROJECT_NUMBER>'."""
    if p.claim is None:
        return []
    props = p.request_schema.get("properties", {})
    alternatives = [a["required"] for a in p.request_schema.get("oneOf", [])] or [p.request_schema["required"]]
    forms = []
    for names in alternatives:
        placeholder = {n: f"<{n}>" for n in props if n in names and n != "purpose"}
        forms.append(p.claim(placeholder)[1])
    return forms


def example_answer(p: ProductDef) -> dict[str, Any]:
    """The catalogue's example answer (a call's `answer`, or a report's `rows`)."""
    return dict(p.example_response)


def example_response(p: ProductDef) -> dict[str, Any]:
    """The whole response body of the example call (or of the finished report)."""
    if p.invocation == "report":
        r = next(o.release for o in p.spec.outputs if o.name == p.example_request["report"])
        return {"id": 1, "request_id": "req_5f0c2a9d81e64b7a3c11d2e0", "product": p.code,
                "registration_number": EXAMPLE_REGISTRATION, "report": p.example_request["report"], "state": "done",
                "stale": False, "rows": p.example_response["rows"],
                "columns": [c["name"] for c in report_columns(p)[p.example_request["report"]]],
                "privacy": {"epsilon": r.epsilon, "delta": r.delta, "min_cell": r.min_cell, "unit": "person"}}
    return {"request_id": "req_5f0c2a9d81e64b7a3c11d2e0", "registration_number": EXAMPLE_REGISTRATION,
            "product": p.code, "answer": example_answer(p),
            "served_from": {"answer_set": 3, "built_at": "2026-06-30T18:00:00Z"},
            "metered": {"units": 1, "amount_fen": p.price_fen if p.price_unit == "call" else 0}, "replayed": False}


def _py(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_FAIL = '''def fail(r: httpx.Response) -> None:
    """Stop with the API's error code and message (the body is {"error": {"code", "message", "details"}})."""
    try:
        error = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {"code": "http_error", "message": r.text[:200]}
    raise SystemExit(f"HTTP {r.status_code} {error['code']}: {error['message']}")'''

_HEAD = '''import os
{extra}

import httpx

BASE_URL = os.environ.get("AUTHOPS_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["AUTHOPS_API_KEY"]  # an API key with the product.call scope, under a usage agreement


'''


def python_example(p: ProductDef, body: dict[str, Any] | None = None) -> str:
    """A runnable client for the product (`body`: the call body, by default the example's)."""
    body = call_body(p) if body is None else body
    if p.invocation == "report":
        return (_HEAD.format(extra="import time") + _FAIL + f'''


BODY = {_py(body)}

with httpx.Client(base_url=BASE_URL, headers={{"Authorization": f"Bearer {{API_KEY}}"}}, timeout=30) as client:
    r = client.post("{API}/{p.code}/reports", json=BODY)
    if r.status_code != 202:
        fail(r)
    report = r.json()
    while report["state"] in ("queued", "running"):
        time.sleep(2)
        r = client.get(f"{API}/{p.code}/reports/{{report['id']}}")
        if r.status_code != 200:
            fail(r)
        report = r.json()
    if report["state"] != "done":
        raise SystemExit(f"report {{report['state']}}: {{report['error']['code']}}: {{report['error']['message']}}")
    print("registration number:", report["registration_number"])
    for row in report["rows"]:
        print(row)
''')
    return (_HEAD.format(extra="import uuid") + _FAIL + f'''


BODY = {_py(body)}

with httpx.Client(base_url=BASE_URL, headers={{"Authorization": f"Bearer {{API_KEY}}"}}, timeout=10) as client:
    key = str(uuid.uuid4())  # resend the same key to retry: the stored answer comes back, charged once
    r = client.post("{API}/{p.code}/calls", json=BODY, headers={{"Idempotency-Key": key}})
    if r.status_code != 200:
        fail(r)
    result = r.json()
    print("registration number:", result["registration_number"])
    print("request id:", result["request_id"])
    print("answer:", result["answer"])
''')


# --- the page -----------------------------------------------------------------------------------

def _request_fields(p: ProductDef) -> list[dict[str, Any]]:
    props, required = p.request_schema.get("properties", {}), set(p.request_schema.get("required", []))
    alternatives = [a["required"][0] for a in p.request_schema.get("oneOf", [])]
    out = []
    for name, s in props.items():
        allowed = s.get("enum") or (f"pattern {s['pattern']}" if "pattern" in s else None)
        if "maxLength" in s and not allowed:
            allowed = f"at most {s['maxLength']} characters"
        out.append({"name": name, "type": s.get("type", "string"), "description": s.get("description", ""),
                    "required": "yes" if name in required else ("one of " + " / ".join(alternatives)
                                                              if name in alternatives else "no"),
                    "allowed": allowed})
    return out


def page(p: ProductDef) -> dict[str, Any]:
    """The structured page of one product (JSON-ready)."""
    report = p.invocation == "report"
    path = f"{API}/{p.code}/reports" if report else f"{API}/{p.code}/calls"
    return {
        "code": p.code, "no": p.no, "name_zh": p.name_zh, "name_en": p.name_en, "description": p.description,
        "category": p.category, "category_label": CATEGORY[p.category],
        "subject_kind": p.subject_kind, "subject_label": SUBJECT[p.subject_kind],
        "share_mode": p.share_mode, "invocation": p.invocation, "invocation_label": INVOCATION[p.invocation],
        "consent": {"required": p.consent_required, "personal_information": p.personal_information,
                    "text": consent_text(p)},
        "resources": list(p.resources),
        "request": {"schema": p.request_schema, "fields": _request_fields(p), "subject_forms": subject_forms(p)},
        "answer": {"schema": answer_schema(p), "fields": answer_fields(p), "reports": report_columns(p)},
        "release": {"policy": p.release_policy, "notes": p.release_notes},
        "pricing": {"basis": p.pricing_basis, "suggested_price_fen": p.price_fen, "price_unit": p.price_unit,
                    "free": p.free, "text": price_text(p.price_fen, p.price_unit)},
        "how_to_call": {"method": "POST", "path": path,
                        "poll": f"GET {API}/{p.code}/reports/{{id}}" if report else None,
                        "headers": {"Authorization": "Bearer <API key>",
                                    **({} if report else {"Idempotency-Key": "<a new uuid4 per request>"})}},
        "example": {"request": p.example_request, "body": call_body(p), "response": example_response(p)},
        "errors": [{"status": s, "code": c, "meaning": m} for s, c, m in ERRORS],
        "python": python_example(p),
    }


# --- Markdown -----------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, (list, tuple)):
        value = ", ".join(f"`{v}`" for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _json_block(value: Any) -> str:
    return "```json\n" + json.dumps(value, ensure_ascii=False, indent=2) + "\n```"


def consent_text(p: ProductDef) -> tuple[str, str]:
    """What authorization a call needs, (zh, en)."""
    if p.personal_information:
        return ("必须：每次调用前核验主体签署的授权，purpose 须与授权用途一致",
                "required: the subject's signed consent is checked on every call and `purpose` must match its "
                "purpose")
    if p.consent_required:
        return ("必须：每次调用前核验企业签署的对该客户的授权，purpose 须与授权用途一致",
                "required: the enterprise's signed authorization of the customer is checked on every call and "
                "`purpose` must match its purpose")
    return "不需要（不涉及个人信息）", "not required (no personal information)"


def markdown(p: ProductDef) -> str:
    """The product's page in Markdown (Chinese first, English beside)."""
    pg = page(p)
    report = p.invocation == "report"
    out = [f"# {p.name_zh} · {p.name_en}", "",
           f"<!-- generated by `python -m authops.products.docs` from authops/products/catalog.py and "
           f"specs/{p.code}.yaml; do not edit -->", "",
           p.description, "",
           _table(["项目 Item", "内容 Value"], [
               ["产品代码 Code", f"`{p.code}`"], ["序号 No.", p.no],
               ["类别 Category", " · ".join(CATEGORY[p.category])],
               ["主体 Subject", " · ".join(SUBJECT[p.subject_kind])],
               ["调用方式 Invocation", f"{' · '.join(INVOCATION[p.invocation])}: `POST {pg['how_to_call']['path']}`"],
               ["共享方式 Share mode", p.share_mode],
               ["授权 Consent", " ".join(consent_text(p))],
               ["建议价格 Suggested price", pg["pricing"]["text"]],
               ["登记编号 Registration number",
                f"数据局备案时核发 issued by the bureau on filing ({REGISTRATION_FORMAT}); the live number and "
                f"price: `GET /api/v1/public/products/{p.code}` or `/products/{p.code}`"],
               ["数据来源 Resources read", list(p.resources)]]), ""]
    out += ["## 请求 Request", "",
            "产品请求契约 The product's request contract:", "",
            _table(["字段 Field", "类型 Type", "必填 Required", "说明 Description", "取值 Allowed"],
                   [[f"`{f['name']}`", f["type"], f["required"], f["description"], f["allowed"]]
                    for f in pg["request"]["fields"]]), ""]
    if report:
        out += [f"调用体 Call body: `POST {pg['how_to_call']['path']}` with `{{\"report\": <report name>, "
                "\"purpose\": <text>}` → `202 {id, state, ...}`; poll "
                f"`{pg['how_to_call']['poll']}` until `state` is `done` (or `failed`). Everyone asking about the "
                "same data gets the same release: asking again spends no privacy budget.", ""]
    else:
        forms = " or ".join(f"`{f}`" for f in pg["request"]["subject_forms"])
        out += [f"调用体 Call body (`POST {pg['how_to_call']['path']}`): `subject` = {forms} (spaces and case do "
                "not matter; never stored) and `purpose` = the purpose of use (for a personal-information "
                "product it must match the subject's consent). Send a new "
                "`Idempotency-Key` per request; resending it returns the stored response (`replayed: true`) "
                "without a second charge.", ""]
    out += ["## 应答 Answer", ""]
    if report:
        for name, cols in pg["answer"]["reports"].items():
            out += [f"报告 Report `{name}` — 每行 each row:", "",
                    _table(["列 Column", "含义 Meaning", "取值 Values"],
                           [[f"`{c['name']}`", c["meaning"], c["values"]] for c in cols]), ""]
    else:
        out += ["`answer` 的字段 Fields of `answer`:", "",
                _table(["字段 Field", "类型 Type", "含义 Meaning", "取值 Values"],
                        [[f"`{f['name']}`", _type(f["schema"]), f["meaning"],
                          f["values"] or (f"{f['bounds'][0]:g}–{f['bounds'][1]:g}" if f.get("bounds") else None)]
                         for f in pg["answer"]["fields"]]), ""]
    out += ["## 示例 Example", "", "请求 Request (call body):", "", _json_block(pg["example"]["body"]), "",
            "应答 Response:", "", _json_block(pg["example"]["response"]), "",
            "## 发布策略 Release policy", "", f"`{p.release_policy}`: {p.release_notes}", "",
            "## 定价 Pricing", "", f"建议价格 Suggested price: {pg['pricing']['text']}.", "",
            f"定价依据 Basis: {p.pricing_basis}", "",
            "实际价格以使用协议为准，不高于数据局核定的价格上限 The price in force is the one in your usage "
            "agreement, at or below the bureau's cap.", "",
            "## 错误 Errors", "",
            "错误应答体 Error body: `{\"error\": {\"code\", \"message\", \"details\"}}`; a refused call is never "
            "charged.", "",
            _table(["HTTP", "code", "含义 Meaning"], [[s, f"`{c}`", m] for s, c, m in ERRORS]), "",
            "## Python 客户端 Python client", "",
            "```bash\npip install httpx\nexport AUTHOPS_URL=https://authops.example.gov.cn  # the platform\n"
            "export AUTHOPS_API_KEY=...  # from the console: API keys, scope product.call\n```", "",
            "```python\n" + pg["python"] + "```", ""]
    return "\n".join(out)


def _type(schema: dict[str, Any]) -> str:
    if "oneOf" in schema:
        return "string or object"
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    base = "array of string" if types[0] == "array" else types[0]
    return base + (" or null" if "null" in types else "")


def index_markdown() -> str:
    """docs/products/README.md: the seven products in one table."""
    rows = [[p.no, p.name_zh, p.name_en, " · ".join(CATEGORY[p.category]), " · ".join(SUBJECT[p.subject_kind]),
             " · ".join(INVOCATION[p.invocation]), price_text(p.price_fen, p.price_unit), f"[{p.code}]({p.code}.md)"]
            for p in sorted(PRODUCTS.values(), key=lambda x: x.no)]
    return "\n".join([
        "# 数据产品目录 Product catalogue", "",
        "<!-- generated by `python -m authops.products.docs`; do not edit -->", "",
        "首批七个数据产品（实施方案附件 3）。每页列出请求与应答契约、示例、发布策略、定价和 Python 客户端示例。"
        " The plan's first seven products (annex 3); each page has the request and answer contract, an example, "
        "the release policy, the price and a Python client.", "",
        _table(["序号 No.", "名称", "Name", "类别 Category", "主体 Subject", "调用 Invocation",
                "建议价格 Price", "页面 Page"], rows), "",
        "登记编号和现行价格以平台公示为准 The registration numbers and the prices in force are published by the "
        "platform: `GET /api/v1/public/products` and `/products/<code>` (HTML).", ""])


def render() -> dict[str, str]:
    """File name -> content of every page and the index."""
    files = {f"{p.code}.md": markdown(p) for p in PRODUCTS.values()}
    files["README.md"] = index_markdown()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m authops.products.docs",
                                     description="Write the product pages (docs/products/).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (default: docs/products)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed page differs from the rendering")
    args = parser.parse_args(argv)
    files = render()
    stale = [n for n, text in files.items()
             if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text]
    if args.check:
        for n in stale:
            print(f"{args.out / n} is out of date: run `python -m authops.products.docs`", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n in stale:
        (args.out / n).write_text(files[n], encoding="utf-8")
    print(f"{len(stale)} of {len(files)} pages written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
