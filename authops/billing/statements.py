"""Usage and monthly statements: what each customer used and owes, per usage agreement.

A statement covers one Asia/Shanghai calendar month, one customer and one usage agreement; its line
items group the usage records by product, channel, unit and unit price (and the rule that set the
price), so the lines always add up to the records: `total_fen` is the sum of the records' amounts.
Names (organisations, products, agreement numbers) are supplied by the caller (`labels`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from authops.billing import render
from authops.billing.models import UsageRecord
from authops.billing.rating import month_bounds
from authops.core.clock import show
from authops.core.errors import InvalidInput

SOURCE_ZH = {"agreement": "协议价", "price": "公示价", "cap": "价格上限", "free": "免费"}
CHANNEL_ZH = {"call": "接口调用", "batch": "批量交付", "subscription": "订阅"}


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def check_period(year: Any, month: Any) -> tuple[int, int]:
    if not isinstance(year, int) or not 2000 <= year <= 2100:
        raise InvalidInput("year is a calendar year, e.g. 2026", details={"field": "year"})
    if not isinstance(month, int) or not 1 <= month <= 12:
        raise InvalidInput("month is 1 to 12", details={"field": "month"})
    return year, month


def records(session: Session, *, start: datetime, end: datetime, customer_org_id: int | None = None,
            operator_org_id: int | None = None, agreement_id: int | None = None,
            product_id: int | None = None, limit: int | None = None) -> list[UsageRecord]:
    q = select(UsageRecord).where(UsageRecord.at >= start, UsageRecord.at < end)
    for col, value in ((UsageRecord.customer_org_id, customer_org_id), (UsageRecord.operator_org_id, operator_org_id),
                       (UsageRecord.agreement_id, agreement_id), (UsageRecord.product_id, product_id)):
        if value is not None:
            q = q.where(col == value)
    q = q.order_by(UsageRecord.at, UsageRecord.id)
    if limit:
        q = q.limit(limit)
    return list(session.execute(q).scalars())


def monthly(session: Session, *, year: int, month: int, customer_org_id: int | None = None,
            operator_org_id: int | None = None, agreement_id: int | None = None,
            labels: dict[str, dict[int, str]] | None = None) -> list[dict[str, Any]]:
    """The month's statements (one per customer and agreement) visible under the given filters."""
    year, month = check_period(year, month)
    start, end = month_bounds(year, month)
    labels = labels or {}

    def names(kind: str, key: int) -> str:
        return labels.get(kind, {}).get(key, str(key))

    groups: dict[tuple[int, int], list[UsageRecord]] = defaultdict(list)
    for r in records(session, start=start, end=end, customer_org_id=customer_org_id,
                     operator_org_id=operator_org_id, agreement_id=agreement_id):
        groups[(r.customer_org_id, r.agreement_id)].append(r)
    out = []
    for (customer, agreement), recs in sorted(groups.items()):
        lines: dict[tuple, dict[str, Any]] = {}
        for r in recs:
            key = (r.product_id, r.channel, r.unit, r.unit_price_fen, r.price_source)
            line = lines.setdefault(key, {"product_id": r.product_id, "product": names("product", r.product_id),
                                          "channel": r.channel, "unit": r.unit or r.pricing_method,
                                          "unit_price_fen": r.unit_price_fen, "price_source": r.price_source,
                                          "uses": 0, "units": 0, "amount_fen": 0})
            line["uses"] += 1
            line["units"] += r.units
            line["amount_fen"] += r.amount_fen
        operator = recs[0].operator_org_id
        out.append({"period": f"{year}-{month:02d}", "customer_org_id": customer,
                    "customer": names("org", customer), "operator_org_id": operator,
                    "operator": names("org", operator) if operator else "", "agreement_id": agreement,
                    "agreement": names("agreement", agreement), "lines": list(lines.values()),
                    "uses": len(recs), "total_fen": sum(r.amount_fen for r in recs),
                    "total_yuan": yuan(sum(r.amount_fen for r in recs)),
                    "from_local": show(start), "to_local": show(end)})
    return out


def document(found: list[dict[str, Any]], *, period: str, reader: str = "") -> render.Document:
    """The month's statements as one printable document (月度账单 monthly statements): a summary row
    per statement (customer and agreement) and every line item."""
    summary = [[s["customer"], s["agreement"], s["operator"], s["uses"], s["total_yuan"]] for s in found]
    rows = [[s["customer"], s["agreement"], x["product"], CHANNEL_ZH.get(x["channel"], x["channel"]), x["unit"],
             yuan(x["unit_price_fen"]), SOURCE_ZH.get(x["price_source"], x["price_source"]), x["uses"], x["units"],
             yuan(x["amount_fen"])] for s in found for x in s["lines"]]
    first = found[0] if found else None
    return render.Document(
        title=f"数据产品使用月度账单 Monthly statement {period}",
        facts=[("账期 Period", f"{period}（{first['from_local']} 至 to {first['to_local']}，北京时间 Beijing time）"
                if first else period), ("查阅单位 For", reader), ("账单数 Statements", len(found)),
               ("应付合计（元）Total due (yuan)", yuan(sum(s["total_fen"] for s in found)))],
        sections=[render.Section("账单 Statements", ["使用单位 Customer", "使用协议 Agreement", "运营机构 Operator",
                                                    "次数 Uses", "金额（元）Amount"], summary),
                  render.Section("明细 Line items", ["使用单位 Customer", "使用协议 Agreement", "产品 Product",
                                                   "方式 Channel", "计价单位 Unit", "单价（元）Unit price",
                                                   "定价依据 Price rule", "次数 Uses", "数量 Units", "金额（元）Amount"],
                                 rows)],
        note="金额以分为单位计算，单价取协议价、公示价与价格上限中的最低者。Amounts are computed in integer fen; "
             "the unit price is the lowest of the agreement price, the published price and the cap in force.")
