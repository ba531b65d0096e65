"""Public product pages: each catalogue product's contract beside its live registration (no login).

    GET /api/v1/public/products          every catalogue product with its registration state
    GET /api/v1/public/products/{code}   the page (authops.products.docs.page) with the live
                                         registration number, price in force and state
    GET /products/{code}                 the same page as HTML (Chinese; ?lang=en for English)

A product not registered yet (or no longer) shows `registration_number: null` and
`state: "not registered"`; nothing about drafts or reviews is disclosed. `extend_openapi(app)`
adds every product's named request and response example to the call (or report) operation and
its answer schema as the component `ProductAnswer_<code>`, so /docs shows each contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, select

from authops.core.errors import NotFound
from authops.platform.deps import SessionDep
from authops.platform.governance import products as gov_products
from authops.platform.governance.models import Product
from authops.products import docs
from authops.products.catalog import PRODUCTS, ProductDef

public_router = APIRouter(prefix="/public/products", tags=["public"])
page_router = APIRouter(tags=["public"])
router = APIRouter()  # nothing behind a permission: the pages are public

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
NOT_REGISTERED = "not registered"


# Page headings and labels in each language (content from the catalogue is shown as written).
WORDS = {
    "summary": ("概要", "Summary"), "item": ("项目", "Item"), "value": ("内容", "Value"),
    "code": ("产品代码", "Code"), "category": ("类别", "Category"), "subject": ("主体", "Subject"),
    "invocation": ("调用方式", "Invocation"), "consent": ("主体授权", "Consent"),
    "registration": ("登记编号", "Registration number"), "state": ("登记状态", "Registration state"),
    "registered": ("已登记", "registered"), "not_registered": ("尚未登记", "not registered yet"),
    "price": ("现行价格", "Price in force"),
    "suggested": ("建议价格", "Suggested price"), "basis": ("定价依据", "Pricing basis"),
    "request": ("请求", "Request"), "field": ("字段", "Field"), "type": ("类型", "Type"),
    "required_col": ("必填", "Required"), "description": ("说明", "Description"), "allowed": ("取值", "Allowed"),
    "answer": ("应答", "Answer"), "meaning": ("含义", "Meaning"), "allowed_values": ("取值", "Values"),
    "report": ("报告", "Report"), "column": ("列", "Column"),
    "example": ("示例", "Example"), "example_request": ("请求示例", "Example request"),
    "example_response": ("应答示例", "Example response"), "release": ("发布策略", "Release policy"),
    "pricing": ("定价", "Pricing"), "resources": ("数据来源", "Resources read"), "errors": ("错误", "Errors"),
    "python": ("Python 客户端示例", "Python client"), "other_lang": ("English", "中文"),
    "language": ("语言", "Language"),
    "request_caption": ("产品请求契约", "The product's request contract"),
    "answer_caption": ("应答字段", "Fields of the answer"), "error_caption": ("错误代码", "Error codes"),
    "subject_forms": ("调用体 subject 写法", "The call body's subject"),
}


def _words(lang: str) -> dict[str, str]:
    return {k: v[0] if lang == "zh" else v[1] for k, v in WORDS.items()}


def _catalogue_product(code: str) -> ProductDef:
    p = PRODUCTS.get(code)
    if p is None:
        raise NotFound(f"no product {code!r} in the catalogue; see GET /api/v1/public/products",
                       details={"field": "code"})
    return p


def live(session: Session, code: str) -> dict[str, Any]:
    """The registration as the public may see it: number, price in force and state."""
    row = session.exec(select(Product).where(Product.code == code)).first()
    if row is None or row.state != "registered":
        return {"state": NOT_REGISTERED, "registration_number": None, "registered_at": None,
                "price_fen": None, "price_unit": None, "price": None}
    view = gov_products.public_view(session, row)
    return {k: view[k] for k in ("state", "registration_number", "registered_at", "price_fen", "price_unit", "price")}


def product_page(session: Session, p: ProductDef) -> dict[str, Any]:
    """The docs page with the live registration; its example shows the real registration number."""
    page = docs.page(p)
    registration = live(session, p.code)
    if registration["registration_number"]:
        page["example"]["response"]["registration_number"] = registration["registration_number"]
    return {**page, **registration}


def summary(p: ProductDef, registration: dict[str, Any]) -> dict[str, Any]:
    return {"code": p.code, "no": p.no, "name_zh": p.name_zh, "name_en": p.name_en, "category": p.category,
            "subject_kind": p.subject_kind, "invocation": p.invocation,
            "suggested_price": docs.price_text(p.price_fen, p.price_unit), **registration,
            "page": f"/products/{p.code}", "api": f"/api/v1/public/products/{p.code}"}


@public_router.get("")
def list_products(session: SessionDep) -> list[dict[str, Any]]:
    """Every product of the catalogue with its registration state and, once registered, its number and price."""
    return [summary(p, live(session, p.code)) for p in sorted(PRODUCTS.values(), key=lambda x: x.no)]


@public_router.get("/{code}")
def get_product_page(code: str, session: SessionDep) -> dict[str, Any]:
    """The product's page: contract, examples, release policy, pricing, Python client, live registration."""
    return product_page(session, _catalogue_product(code))


@page_router.get("/products/{code}", response_class=HTMLResponse)
def product_html(code: str, request: Request, session: SessionDep,
                 lang: Annotated[Literal["zh", "en"], Query(description="zh (default) or en")] = "zh"):
    """The product's page as HTML (no login, no external assets)."""
    page = product_page(session, _catalogue_product(code))
    return TEMPLATES.TemplateResponse(request, "product.html", {
        "p": page, "lang": lang, "t": _words(lang),
        "example_body": json.dumps(page["example"]["body"], ensure_ascii=False, indent=2),
        "example_response": json.dumps(page["example"]["response"], ensure_ascii=False, indent=2, default=str)})


# --- OpenAPI --------------------------------------------------------------------------------------

def add_products(schema: dict[str, Any]) -> None:
    """Add each product's answer schema and its named examples to an OpenAPI document (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    paths = schema.get("paths", {})
    for p in sorted(PRODUCTS.values(), key=lambda x: x.no):
        name = f"ProductAnswer_{p.code}"
        components[name] = {"title": f"{p.name_en} ({p.code})", "description": p.description,
                            **docs.answer_schema(p)}
        suffix = "reports" if p.invocation == "report" else "calls"
        operation = (paths.get(f"{docs.API}/{{code}}/{suffix}") or {}).get("post")
        if operation is None:
            continue
        summary_text = f"{p.name_zh} · {p.name_en}"
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            body.setdefault("examples", {})[p.code] = {"summary": summary_text, "value": docs.call_body(p)}
        status = "202" if p.invocation == "report" else "200"
        response = operation.get("responses", {}).get(status, {}).setdefault("content", {}).setdefault(
            "application/json", {})
        response.setdefault("examples", {})[p.code] = {
            "summary": summary_text, "value": docs.example_response(p),
            "description": f"`answer`: see the schema {name}; the page: /products/{p.code}"}
        operation["description"] = (operation.get("description", "") + f"\n\n- `{p.code}` ({summary_text}): "
                                    f"answer schema `{name}`, page `/products/{p.code}`")


def extend_openapi(app: FastAPI) -> None:
    """Make app.openapi() include every product's contract (built once, like FastAPI's own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_products(build())  # FastAPI's builder caches the document in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
