"""Public disclosure (BRIEF.md sections 10 and 12): what anyone may read without logging in.

The page lists who is authorized to operate (operator, scope, term, state), the partners with an
active partner agreement (name, industry, term), the registered products with their prices,
the price caps, and the audit results and notices the bureau has published, plus the audit
log's latest signed checkpoint and the public keys that verify it.

Published disclosures are stored as `Call` rows with kind "disclosure" and state "published"
(publisher_org_id = the bureau, title, details = {category, body, year, document_sha256},
opens_at = published at). There is no table for them yet and Call has the right shape: a
dated, numbered publication by an organisation. A dedicated `gov_disclosure` table would be
cleaner; until then nothing else reads Call rows of this kind (calls for operators and partners
filter on their own kinds).
"""

from __future__ import annotations

import importlib
import re
from datetime import datetime
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import checkpoints
from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.errors import InvalidInput
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.platform.governance.models import Agreement, Call, Case, Product
from authops.platform.identity.models import Organisation

KIND = "disclosure"
PUBLISHED = "published"
CATEGORIES = ("audit_result", "notice", "resource_use", "assessment")
LANGS = ("zh", "en")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

LABELS: dict[str, dict[str, str]] = {
    "zh": {"title": "公共数据资源授权运营信息公开", "authorized": "授权运营机构", "partners": "生态合伙人",
           "products": "已登记数据产品及价格", "price_caps": "价格上限与运营机构价格", "audit_results": "审计结果与公告",
           "audit_log": "审计日志签名检查点", "operator": "运营机构", "scope": "授权范围", "term": "授权期限",
           "starts_on": "起始日", "ends_on": "终止日", "state": "状态", "industry": "行业", "name": "名称",
           "registration_number": "登记编号", "category": "类别", "price": "价格（元）", "price_unit": "计价单位",
           "free": "免费", "year": "年度", "published_at": "发布时间",
           "price_caps_note": "数据局核定的价格上限与运营机构在上限内的现行价格；公共治理、公益类产品免费"},
    "en": {"title": "Public data authorized operation: disclosure", "authorized": "Authorized operator",
           "partners": "Industry partners", "products": "Registered data products and prices",
           "price_caps": "Price caps and operator prices", "audit_results": "Audit results and notices",
           "audit_log": "Audit log signed checkpoint", "operator": "Operator", "scope": "Scope", "term": "Term",
           "starts_on": "Starts on", "ends_on": "Ends on", "state": "State", "industry": "Industry", "name": "Name",
           "registration_number": "Registration number", "category": "Category", "price": "Price (yuan)",
           "price_unit": "Price unit", "free": "Free", "year": "Year", "published_at": "Published at",
           "price_caps_note": "The bureau's price caps and the operator's prices in force within them; public-governance and public-welfare products are free"},
}
STATE_ZH = {"active": "有效", "pending": "待签署", "expired": "已到期", "terminated": "已终止", "exited": "已退出"}
CATEGORY_ZH = {"industry": "行业产品", "public_governance": "公共治理（免费）", "public_welfare": "公益（免费）"}
UNIT_ZH = {"call": "次", "record": "条", "month": "月", "batch": "批"}


def yuan(fen: int) -> str:
    """Integer fen as a yuan string: 12345 -> "123.45"."""
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def _name(org: Organisation | None, lang: str) -> str:
    if org is None:
        return ""
    return (org.name_en or org.name_zh) if lang == "en" else (org.name_zh or org.name_en)


# --- publishing ----------------------------------------------------------------------------------

def publish(session: Session, *, actor: audit_log.Actor | Principal, title: str, body: str = "",
            year: int | None = None, document_sha256: str = "", category: str = "audit_result") -> Call:
    """Publish an audit result or notice; it appears on the public disclosure page at once."""
    who = actor if isinstance(actor, audit_log.Actor) else audit_log.Actor.of(actor)
    if who.org_id is None:
        raise InvalidInput("a disclosure is published by an organisation (the bureau)")
    title = (title or "").strip()
    if not title:
        raise InvalidInput("give the disclosure a title", details={"field": "title"})
    if len(title) > 300:
        raise InvalidInput("the title is longer than 300 characters", details={"field": "title"})
    if len(body or "") > 20000:
        raise InvalidInput("the body is longer than 20000 characters; attach the full report by its "
                           "sha256 instead", details={"field": "body"})
    if category not in CATEGORIES:
        raise InvalidInput(f"category must be one of {', '.join(CATEGORIES)}", details={"field": "category"})
    now = utcnow()
    if year is not None and not 2000 <= year <= now.year + 1:
        raise InvalidInput(f"year must be between 2000 and {now.year + 1}", details={"field": "year"})
    digest = (document_sha256 or "").strip().lower()
    if digest and not _SHA256.match(digest):
        raise InvalidInput("document_sha256 must be 64 hexadecimal characters (the SHA-256 of the "
                           "published report)", details={"field": "document_sha256"})
    n = session.exec(select(func.count()).select_from(Call).where(Call.kind == KIND)).one() + 1
    call = Call(kind=KIND, number=f"DS-{now.year}-{n:05d}", publisher_org_id=int(who.org_id), title=title,
                details={"category": category, "body": body or "", "year": year, "document_sha256": digest},
                opens_at=now, deadline_at=now, state=PUBLISHED, created_by=who.name[:64], created_at=now)
    session.add(call)
    session.flush()
    audit_log.record(session, who, "gov.disclosure.publish", object_type="disclosure", object_id=call.id,
                     details={"number": call.number, "category": category, "year": year,
                              "document_sha256": digest or None})
    return call


def disclosure_view(c: Call) -> dict[str, Any]:
    d = c.details or {}
    return {"id": c.id, "number": c.number, "category": d.get("category", ""), "title": c.title,
            "body": d.get("body", ""), "year": d.get("year"), "document_sha256": d.get("document_sha256", ""),
            "published_at": c.opens_at, "published_at_local": show(c.opens_at)}


# --- the public page -----------------------------------------------------------------------------

def _orgs(session: Session, ids: set[int]) -> dict[int, Organisation]:
    if not ids:
        return {}
    return {o.id: o for o in session.exec(select(Organisation).where(Organisation.id.in_(ids)))}  # type: ignore[union-attr]


def _industry(session: Session, a: Agreement) -> str:
    industry = (a.terms or {}).get("industry")
    if industry:
        return str(industry)
    case = session.get(Case, a.case_id) if a.case_id else None
    call = session.get(Call, case.call_id) if case is not None and case.call_id else None
    return call.industry if call is not None else ""


def _products(session: Session, lang: str) -> list[dict[str, Any]]:
    """The products module's public catalogue when it is installed, else the registered rows."""
    try:
        products = importlib.import_module("authops.platform.governance.products")
    except ModuleNotFoundError as e:
        if e.name != "authops.platform.governance.products":
            raise
        products = None
    if products is not None and hasattr(products, "public_catalogue"):
        return list(products.public_catalogue(session))
    rows = session.exec(select(Product).where(Product.state == "registered").order_by(Product.id)).all()
    orgs = _orgs(session, {p.partner_org_id for p in rows} | {p.operator_org_id for p in rows if p.operator_org_id})
    out = []
    for p in rows:
        free = p.category != "industry" or p.price_fen == 0
        out.append({
            "registration_number": p.registration_number, "code": p.code,
            "name": (p.name_en or p.name_zh) if lang == "en" else p.name_zh,
            "category": p.category if lang == "en" else CATEGORY_ZH.get(p.category, p.category),
            "share_mode": p.share_mode, "price_fen": 0 if p.category != "industry" else p.price_fen,
            "price_yuan": yuan(0 if p.category != "industry" else p.price_fen),
            "price_unit": p.price_unit if lang == "en" else UNIT_ZH.get(p.price_unit, p.price_unit),
            "free": free, "partner": _name(orgs.get(p.partner_org_id), lang),
            "operator": _name(orgs.get(p.operator_org_id or 0), lang),
            "registered_at": p.registered_at, "registered_at_local": show(p.registered_at)})
    return out


def _checkpoint(session: Session, settings: Settings | None) -> dict[str, Any] | None:
    cp = checkpoints.latest(session)
    if cp is None:
        return None
    keys = []
    if settings is not None:
        from authops.audit.signing import load_signing_keys

        keys = [{"key_id": k.key_id, "public_pem": k.public_pem} for k in load_signing_keys(settings)]
    return {"tree_size": cp.tree_size, "root_hash": cp.root_hash, "key_id": cp.key_id,
            "signed_at": cp.created_at, "signed_at_local": show(cp.created_at), "public_keys": keys}


def public_disclosure(session: Session, settings: Settings | None = None, *, lang: str = "zh",
                      now: datetime | None = None) -> dict[str, Any]:
    """Everything the public page shows, labelled in `lang` (zh, the default, or en)."""
    if lang not in LANGS:
        raise InvalidInput("lang must be zh or en", details={"field": "lang"})
    now = now or utcnow()
    agreements = session.exec(select(Agreement).where(Agreement.state == "active",
                                                      Agreement.kind.in_(("operator_authorization", "partner")))  # type: ignore[union-attr]
                              .order_by(Agreement.starts_on, Agreement.id)).all()
    orgs = _orgs(session, {a.party_b_org_id for a in agreements} | {a.party_a_org_id for a in agreements})

    def state(s: str) -> str:
        return s if lang == "en" else STATE_ZH.get(s, s)

    authorized = [{"number": a.number, "operator": _name(orgs.get(a.party_b_org_id), lang),
                   "grantor": _name(orgs.get(a.party_a_org_id), lang),
                   "scope": (a.terms or {}).get("scope", ""), "starts_on": a.starts_on, "ends_on": a.ends_on,
                   "state": state(a.state)}
                  for a in agreements if a.kind == "operator_authorization"]
    partners = [{"number": a.number, "name": _name(orgs.get(a.party_b_org_id), lang),
                 "industry": _industry(session, a), "starts_on": a.starts_on, "ends_on": a.ends_on,
                 "state": state(a.state)}
                for a in agreements if a.kind == "partner"]
    published = session.exec(select(Call).where(Call.kind == KIND, Call.state == PUBLISHED)
                             .order_by(Call.opens_at.desc(), Call.id.desc())).all()  # type: ignore[attr-defined]
    labels = LABELS[lang]
    return {"lang": lang, "labels": labels, "generated_at": now, "generated_at_local": show(now),
            "authorized": authorized, "partners": partners, "products": _products(session, lang),
            "price_caps": _published_prices(session), "price_caps_note": labels["price_caps_note"],
            "audit_results": [disclosure_view(c) for c in published],
            "audit_log": _checkpoint(session, settings)}


def _published_prices(session: Session) -> list[dict[str, Any]]:
    from authops.platform.billing.pricing import published_prices  # billing builds on governance

    return published_prices(session)
