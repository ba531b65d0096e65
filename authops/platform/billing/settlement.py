"""Yearly settlement and the bureau's report to the DRC (BRIEF 8), with governance's terms.

`run` (the operator, once the year has ended): each product's metered revenue of the year is split
(authops.billing.sharing) among the partner (its partner agreement's revenue_share_bp; the
authorization's "partners" percentage when the agreement names none), the operator and the public
(the authorization's revenue_distribution.shares_pct "operator" and "public"), and the provider
departments whose resources the product's spec reads, by the chosen rule:
    declared: the number of fields the spec declares from each department's resources;
    rows:     the rows each department's resources hold in their current datasets (what the
              product's answer sets are built from; per-call row provenance is not recorded);
    equal:    one share each.
The rule, every product's terms and the measured inputs are stored with the settlement. One
settlement per operator and year (unique), written in one transaction: running it again returns
the stored one unchanged; a crash before the commit leaves nothing. `file` files it with the
bureau (the authorization's grantor); the public share is marked non-tax revenue.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import books, render, sharing
from authops.billing import prices as rules
from authops.billing.models import Settlement, SettlementLine, UsageRecord
from authops.billing.rating import year_bounds
from authops.billing.statements import yuan
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, NotFound
from authops.core.identity import OrgKind, Principal
from authops.platform.catalog.models import DataResource, Dataset
from authops.platform.governance import agreements, notifications
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation

ActorLike = audit_log.Actor | Principal
PARTY_ZH = {"partner": "合伙人", "operator": "运营机构", "public": "公共收益（非税收入）", "provider": "数源部门"}


class YearNotEnded(Conflict):
    code = "year_not_ended"


def _latest(session: Session, kind: str, *, party_b: int, party_a: int | None = None, by: date) -> Agreement | None:
    q = select(Agreement).where(Agreement.kind == kind, Agreement.party_b_org_id == party_b,
                                Agreement.starts_on <= by,
                                Agreement.state.in_(("active", "expired", "exited", "terminated")))  # type: ignore[attr-defined]
    if party_a is not None:
        q = q.where(Agreement.party_a_org_id == party_a)
    return session.exec(q.order_by(Agreement.starts_on.desc(), Agreement.id.desc())).first()  # type: ignore[attr-defined]


def authorization(session: Session, operator_org_id: int, year: int) -> Agreement:
    a = _latest(session, "operator_authorization", party_b=operator_org_id, by=date(year, 12, 31))
    shares = ((a.terms or {}).get("revenue_distribution") or {}).get("shares_pct") if a else None
    if a is None or not isinstance(shares, dict):
        raise Conflict(f"operator {operator_org_id} has no authorization with revenue distribution terms in {year}",
                       code="no_distribution_terms", details={"rule": "revenue_distribution"})
    return a


def measured(session: Session, p: Product, rule: str) -> dict[int, int]:
    """Per provider department: declared fields or dataset rows of the resources p's spec reads."""
    out: dict[int, int] = defaultdict(int)
    for item in (p.spec or {}).get("inputs", []) or []:
        res = session.exec(select(DataResource).where(DataResource.code == item.get("resource"))).first()
        if res is None:
            continue
        if rule == "rows":
            ds = session.get(Dataset, res.dataset_id) if res.dataset_id else None
            out[res.org_id] += ds.rows if ds is not None else 0
        else:
            out[res.org_id] += max(len(item.get("fields") or []), 1)
    return dict(out)


def product_terms(session: Session, p: Product, operator_org_id: int, year: int, rule: str,
                  auth: Agreement | None) -> tuple[sharing.Terms, dict[str, Any]]:
    assert auth is not None  # run() looks the authorization up whenever there is revenue
    pct = auth.terms["revenue_distribution"]["shares_pct"]
    pa = _latest(session, "partner", party_b=p.partner_org_id, party_a=operator_org_id, by=date(year, 12, 31))
    bp = (pa.terms or {}).get("revenue_share_bp") if pa is not None else None
    partner_bp = int(bp) if isinstance(bp, int) else int(pct.get("partners", 0)) * 100
    raw = measured(session, p, rule)
    t = sharing.Terms(partner_org_id=p.partner_org_id, operator_org_id=operator_org_id, partner_bp=partner_bp,
                      operator_bp=int(pct.get("operator", 0)) * 100, public_bp=int(pct.get("public", 0)) * 100,
                      department_weights=sharing.department_weights(rule, raw), rule=rule)
    inputs = {"product": p.code, "authorization": auth.number, "shares_pct": pct,
              "partner_agreement": pa.number if pa else None,
              "partner_bp_source": "partner_agreement" if isinstance(bp, int) else "authorization",
              "partner_bp": t.partner_bp, "operator_bp": t.operator_bp, "public_bp": t.public_bp,
              "rule": rule, "measured": {str(k): v for k, v in raw.items()},
              "department_weights": {str(k): v for k, v in t.department_weights.items()}}
    return t, inputs


def revenue_by_product(session: Session, operator_org_id: int, year: int) -> dict[int, int]:
    start, end = year_bounds(year)
    rows = session.exec(select(UsageRecord.product_id, func.sum(UsageRecord.amount_fen))
                        .where(UsageRecord.operator_org_id == operator_org_id, UsageRecord.at >= start,
                               UsageRecord.at < end).group_by(UsageRecord.product_id)).all()
    return {pid: int(total) for pid, total in rows if total}


def find(session: Session, operator_org_id: int, year: int) -> Settlement | None:
    return session.exec(select(Settlement).where(Settlement.operator_org_id == operator_org_id,
                                                 Settlement.year == year)).first()


def run(session: Session, *, operator_org_id: int, year: int, rule: str = "declared", actor: ActorLike) -> Settlement:
    """Settle the operator's `year` (see the module docstring); the stored one if it was settled before."""
    who = audit_log.as_actor(actor)
    existing = find(session, operator_org_id, year)
    if existing is not None:
        return existing
    if rule not in sharing.RULES:
        sharing.department_weights(rule, {})  # raises naming the rule
    if rules.year_of() <= year:
        raise YearNotEnded(f"{year} has not ended (Asia/Shanghai); settle it from 1 January {year + 1}",
                           details={"field": "year"})
    revenue = revenue_by_product(session, operator_org_id, year)
    auth = authorization(session, operator_org_id, year) if revenue else None
    s = Settlement(number=f"ST-{year}-{operator_org_id:05d}", operator_org_id=operator_org_id, year=year,
                   revenue_fen=sum(revenue.values()), rule=rule, created_by=who.name[:100], inputs={})
    session.add(s)
    session.flush()
    inputs: dict[str, Any] = {}
    for pid, amount in sorted(revenue.items()):
        p = session.get(Product, pid)
        terms, inputs[str(pid)] = product_terms(session, p, operator_org_id, year, rule, auth)
        for party, org, fen in sharing.split(amount, terms):
            session.add(SettlementLine(settlement_id=s.id, product_id=pid, party=party, party_org_id=org,
                                       amount_fen=fen, non_tax=party == "public",
                                       basis={"revenue_fen": amount, "rule": rule}))
    s.inputs = inputs
    session.add(s)
    session.flush()
    audit_log.record(session, who, "billing.settlement.run", object_type="settlement", object_id=s.id,
                     details={"number": s.number, "year": year, "revenue_fen": s.revenue_fen, "rule": rule,
                              "products": len(revenue)})
    return s


def get(session: Session, settlement_id: int, org_id: int | None) -> Settlement:
    """The settlement for its operator or the bureau (others: 404)."""
    s = session.get(Settlement, settlement_id)
    org = session.get(Organisation, org_id) if org_id else None
    if s is None or org is None or (s.operator_org_id != org.id and OrgKind(org.kind) != OrgKind.BUREAU):
        raise NotFound(f"no settlement {settlement_id}")
    return s


def file(session: Session, s: Settlement, *, actor: ActorLike) -> Settlement:
    """File the distribution details with the bureau that granted the authorization (once)."""
    who = audit_log.as_actor(actor)
    if who.org_id != s.operator_org_id:
        raise NotFound(f"no settlement {s.id}")
    if s.filed_at is not None:
        raise Conflict(f"settlement {s.number} was filed on {show(s.filed_at)}", code="already_filed")
    bureau = authorization(session, s.operator_org_id, s.year).party_a_org_id
    s.filed_at, s.filed_with_org_id = utcnow(), bureau
    session.add(s)
    notifications.notify(session, [bureau], "billing.settlement.filed",
                         f"收益分配明细已报备 Settlement {s.number} ({s.year}) filed",
                         f"{agreements.org_name(session, s.operator_org_id)}: revenue {yuan(s.revenue_fen)} yuan")
    audit_log.record(session, who, "billing.settlement.file", object_type="settlement", object_id=s.id,
                     details={"number": s.number, "filed_with_org_id": bureau})
    session.flush()
    return s


def lines(session: Session, s: Settlement) -> list[SettlementLine]:
    return list(session.exec(select(SettlementLine).where(SettlementLine.settlement_id == s.id)
                             .order_by(SettlementLine.product_id, SettlementLine.id)))


def view(session: Session, s: Settlement) -> dict[str, Any]:
    ls = lines(session, s)
    by_party: dict[str, int] = defaultdict(int)
    for x in ls:
        by_party[x.party] += x.amount_fen
    codes = {p.id: p.code for p in session.exec(select(Product).where(Product.id.in_({x.product_id for x in ls})))} \
        if ls else {}  # type: ignore[union-attr]
    return {"id": s.id, "number": s.number, "operator_org_id": s.operator_org_id,
            "operator": agreements.org_name(session, s.operator_org_id), "year": s.year,
            "revenue_fen": s.revenue_fen, "revenue_yuan": yuan(s.revenue_fen), "rule": s.rule, "inputs": s.inputs,
            "filed_at": s.filed_at, "filed_with_org_id": s.filed_with_org_id,
            "by_party_fen": dict(by_party), "non_tax_fen": by_party.get("public", 0),
            "lines": [{"product": codes.get(x.product_id), "party": x.party, "party_zh": PARTY_ZH[x.party],
                       "party_org_id": x.party_org_id,
                       "party_name": agreements.org_name(session, x.party_org_id) if x.party_org_id else "公共 public",
                       "amount_fen": x.amount_fen, "amount_yuan": yuan(x.amount_fen), "non_tax": x.non_tax}
                      for x in ls]}


def document(views: list[dict[str, Any]], *, reader: str = "") -> render.Document:
    """Settlements (as `view` or `visible` give them) as one printable distribution document."""
    rows = [[v["year"], v["number"], v["operator"], x["product"], x["party_zh"], x["party_name"], x["amount_yuan"],
             "是 yes" if x["non_tax"] else ""] for v in views for x in v["lines"]]
    summary = [[v["year"], v["number"], v["operator"], v["revenue_yuan"], v["rule"], yuan(v["non_tax_fen"]),
                show(v["filed_at"]) if v["filed_at"] else "未报备 not filed"] for v in views]
    return render.Document(
        title="收益分配明细 Revenue distribution",
        facts=[("查阅单位 For", reader), ("结算数 Settlements", len(views))],
        sections=[render.Section("年度结算 Settlements", ["年度 Year", "编号 Number", "运营机构 Operator",
                                                        "年度收入（元）Revenue", "数源部门规则 Department rule",
                                                        "非税收入（元）Non-tax", "报备 Filed"], summary),
                  render.Section("分配明细 Distribution", ["年度 Year", "编号 Number", "运营机构 Operator",
                                                        "产品 Product", "参与方 Party", "单位 Organisation",
                                                        "金额（元）Amount", "非税收入 Non-tax"], rows)],
        note="分配以分为单位，采用最大余数法取整，各方金额之和等于收入。Shares are integer fen by the largest-remainder "
             "rule and add up to the revenue exactly.")


# --- the bureau's report to the DRC -----------------------------------------------------------------

def drc_report(session: Session, year: int) -> dict[str, Any]:
    """The previous year's operation for the DRC: per operator its maximum revenue, metered revenue,
    books, products with caps and prices in force at year end, and the settlement's distribution."""
    _, end = year_bounds(year)
    at = min(end, utcnow())
    operators = session.exec(select(Agreement.party_b_org_id).where(
        Agreement.kind == "operator_authorization", Agreement.starts_on <= date(year, 12, 31),
        Agreement.ends_on >= date(year, 1, 1)).distinct()).all()
    out = []
    for op in sorted(set(operators)):
        cap = rules.max_revenue_in_force(session, op, year)
        products = []
        for p in session.exec(select(Product).where(Product.operator_org_id == op).order_by(Product.id)):
            units = []
            for unit in rules.UNITS:
                c = rules.cap_in_force(session, p.id, unit, at)
                pr = rules.price_in_force(session, op, p.id, unit, at)
                if c or pr:
                    units.append({"unit": unit, "cap_fen": c.cap_fen if c else None,
                                  "price_fen": pr.price_fen if pr else None, "trial": bool(pr and pr.kind == "trial")})
            products.append({"code": p.code, "name_zh": p.name_zh, "category": p.category, "units": units})
        s = find(session, op, year)
        out.append({"operator_org_id": op, "operator": agreements.org_name(session, op),
                    "max_revenue_fen": cap.amount_fen if cap else None,
                    "revenue_fen": rules.year_revenue(session, op, year),
                    "books": books.totals(session, op, year), "products": products,
                    "settlement": view(session, s) if s is not None else None})
    return {"year": year, "generated_at": utcnow(), "operators": out}


def drc_document(report: dict[str, Any]) -> render.Document:
    year = report["year"]
    overview, prices, costs, dist = [], [], [], []
    for o in report["operators"]:
        b = o["books"]
        overview.append([o["operator"], yuan(o["max_revenue_fen"]) if o["max_revenue_fen"] is not None else "未设定",
                         yuan(o["revenue_fen"]), yuan(b["cost_total_fen"]), yuan(b["revenue_total_fen"])])
        for p in o["products"]:
            for u in p["units"] or [{"unit": "—", "cap_fen": None, "price_fen": None, "trial": False}]:
                prices.append([o["operator"], p["name_zh"], p["category"], u["unit"],
                               yuan(u["cap_fen"]) if u["cap_fen"] is not None else "",
                               yuan(u["price_fen"]) if u["price_fen"] is not None else "",
                               "试行价 trial" if u["trial"] else ""])
        for book in ("cost", "revenue"):
            for cat, fen in b[book].items():
                costs.append([o["operator"], book, books.CATEGORIES[book][cat][0], yuan(fen)])
        for x in (o["settlement"] or {}).get("lines", []):
            dist.append([o["operator"], x["product"], x["party_zh"], x["party_name"], x["amount_yuan"]])
    return render.Document(
        title=f"{year}年度公共数据授权运营情况报告 Report on {year}'s authorized operation (to the DRC)",
        facts=[("年度 Year", year), ("运营机构数 Operators", len(report["operators"])),
               ("生成时间 Generated", show(report["generated_at"]))],
        sections=[render.Section("收入与成本 Revenue and costs", ["运营机构 Operator", "最高准许收入（元）Max revenue",
                                                                  "计量收入（元）Metered revenue", "成本合计（元）Costs",
                                                                  "账簿收入（元）Booked revenue"], overview),
                  render.Section("产品、价格与上限 Products, prices, caps", ["运营机构", "产品 Product", "类别 Category",
                                                                       "计价单位 Unit", "上限（元）Cap",
                                                                       "价格（元）Price", "备注 Note"], prices),
                  render.Section("成本收益账 Books", ["运营机构", "账簿 Book", "科目 Category", "金额（元）Amount"], costs),
                  render.Section("收益分配 Distribution", ["运营机构", "产品 Product", "参与方 Party", "单位 Organisation",
                                                        "金额（元）Amount"], dist)])


def visible(session: Session, org_id: int | None, year: int | None = None) -> list[dict[str, Any]]:
    """Settlements as an organisation may read them: the operator its own, the bureau all, a provider
    department or partner only its own lines of filed settlements; anyone else nothing."""
    org = session.get(Organisation, org_id) if org_id else None
    if org is None:
        return []
    kind = OrgKind(org.kind)
    q = select(Settlement)
    if year is not None:
        q = q.where(Settlement.year == year)
    if kind == OrgKind.OPERATOR:
        q = q.where(Settlement.operator_org_id == org.id)
    elif kind in (OrgKind.PROVIDER, OrgKind.PARTNER):
        q = q.where(Settlement.filed_at.is_not(None))  # type: ignore[union-attr]
    elif kind != OrgKind.BUREAU:
        return []
    out = []
    for s in session.exec(q.order_by(Settlement.year, Settlement.id)):
        v = view(session, s)
        if kind in (OrgKind.PROVIDER, OrgKind.PARTNER):
            v["lines"] = [x for x in v["lines"] if x["party_org_id"] == org.id]
            if not v["lines"]:
                continue
            v.pop("inputs")
            v["by_party_fen"] = {}
        out.append(v)
    return out
