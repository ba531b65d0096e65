"""The three yearly reports (issue 9 item 6), built from the records, as `documents.Report`s.

- assessment: the annual assessment of the operator, from `assessment.report_data`'s dict (metrics
  with their sources, expert scores, departments, grade against the thresholds, signature);
- operating: the operator's year: revenue by product and month and calls by customer (billing usage
  records), budget burn by partner (privacy budget ledger), products with prices and caps in force;
- audit: log verification, de-identification effectiveness, cost-revenue reconciliation, findings.

Money is integer fen in the records; tables show yuan text next to the fen (the workbook's numbers).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from authops.billing import books
from authops.billing.models import UsageRecord
from authops.billing.rating import year_bounds
from authops.billing.render import Section
from authops.core.clock import to_shanghai
from authops.core.errors import NotFound
from authops.core.identity import OrgKind
from authops.core.settings import Settings
from authops.platform.auditwork import deid, findings, integrity
from authops.platform.auditwork.charts import Chart
from authops.platform.auditwork.documents import Report, write
from authops.platform.billing.pricing import published_prices
from authops.platform.governance.disclosure import yuan
from authops.platform.governance.models import Product
from authops.platform.identity.models import Organisation
from authops.policies.budget_models import MICRO, PrivacyBudget

MONTHS = [f"{m}月" for m in range(1, 13)]
GRADES = {"excellent": "优秀", "qualified": "合格", "unqualified": "不合格"}


def operator(session: Session, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or OrgKind(org.kind) != OrgKind.OPERATOR:
        raise NotFound(f"no operator {org_id}")
    return org


# --- the annual assessment ------------------------------------------------------------------------

def assessment_report(data: dict[str, Any]) -> Report:
    """The assessment report from `assessment.report_data(session, assessment_id)`."""
    th, signed = data["thresholds"], data.get("signed")
    metrics = data["metrics"]
    facts = [("年度 Year", data["year"]), ("运营机构 Operator", data["operator"]["name_zh"]),
             ("评估等级 Grade", f"{data['grade_zh']}（{data['grade']}）"), ("总分 Total score", data["total_score"]),
             ("等级阈值 Thresholds", f"优秀 excellent ≥ {th['excellent']}，合格 qualified ≥ {th['qualified']}"),
             ("签署 Signed", f"{signed['by']} {signed['at']}" if signed else "未签署 not signed")]
    lines = [("优秀 excellent", float(th["excellent"])), ("合格 qualified", float(th["qualified"]))]
    charts = [Chart("总分与等级阈值 Total score against thresholds", ["总分 total"],
                    [("总分 score", [float(data["total_score"])])], lines=lines),
              Chart("各项指标得分与等级阈值 Metric scores against thresholds", [m["name_zh"] for m in metrics],
                    [("得分 score", [float(m["score"]) for m in metrics])], lines=lines)]
    sections = [
        Section("考核指标 Metrics", ["指标 metric", "数值 value", "单位 unit", "权重 weight", "达标线 threshold",
                                     "得分 score", "依据记录数 records", "依据 source"],
                [[f"{m['name_zh']} {m['name_en']}", m["value"], m["unit"], m["weight"], m["threshold"], m["score"],
                  m["sources"]["count"], m["sources"]["query"]] for m in metrics]),
        Section("专家评分 Expert scores", ["专家 expert", "评分 score", "意见 comment"],
                [[e["expert"], e["score"], e["comment"]] for e in data.get("expert_scores", [])]),
        Section("数源部门评估 Provider departments", ["部门 department", "及时性 timeliness", "完整性 completeness",
                                                     "准确性 accuracy", "得分 score"],
                [[d["name_zh"], d["timeliness"], d["completeness"], d["accuracy"], d["score"]]
                 for d in data.get("departments", [])]),
    ]
    if data.get("rectification"):
        sections.append(Section("整改 Rectification", ["项目 item", "内容 value"],
                                [[k, "" if v is None else str(v)] for k, v in data["rectification"].items()]))
    return Report(f"{data['year']}年度授权运营考核评估报告 Annual assessment report", f"assessment-{data['year']}-"
                  f"{data['operator']['id']}-{data.get('kind', 'annual')}", facts, charts, sections,
                  note="每项指标的数值均可由其依据记录（source 查询与记录编号）重新计算。")


# --- the operator's operating report --------------------------------------------------------------

def _usage(session: Session, org_id: int, year: int) -> list[tuple[int, int, Any, int, int]]:
    start, end = year_bounds(year)
    return list(session.execute(select(UsageRecord.product_id, UsageRecord.customer_org_id, UsageRecord.at,
                                       UsageRecord.units, UsageRecord.amount_fen)
                                .where(UsageRecord.operator_org_id == org_id, UsageRecord.at >= start,
                                       UsageRecord.at < end)).all())


def revenue_by_product_month(session: Session, org_id: int, year: int) -> dict[int, list[int]]:
    """Product id -> twelve months of metered revenue in fen (Asia/Shanghai months)."""
    out: dict[int, list[int]] = defaultdict(lambda: [0] * 12)
    for product_id, _, at, _, amount in _usage(session, org_id, year):
        out[product_id][to_shanghai(at).month - 1] += amount
    return dict(out)


def calls_by_customer(session: Session, org_id: int, year: int) -> dict[int, dict[str, int]]:
    """Customer id -> {"calls": usage records, "units": units billed, "amount_fen": revenue}."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: {"calls": 0, "units": 0, "amount_fen": 0})
    for _, customer, _, units, amount in _usage(session, org_id, year):
        c = out[customer]
        c["calls"], c["units"], c["amount_fen"] = c["calls"] + 1, c["units"] + units, c["amount_fen"] + amount
    return dict(out)


def budget_by_partner(session: Session, org_id: int, year: int) -> dict[int, dict[str, int]]:
    """Partner id -> the year's ε cap and spent (micro-ε) summed over resources, for the operator's partners."""
    partners = select(Product.partner_org_id).where(Product.operator_org_id == org_id)
    rows = session.execute(select(PrivacyBudget.org_id, func.sum(PrivacyBudget.epsilon_cap),
                                  func.sum(PrivacyBudget.epsilon_spent))
                           .where(PrivacyBudget.period == str(year), PrivacyBudget.org_id.in_(partners))
                           .group_by(PrivacyBudget.org_id)).all()
    return {pid: {"cap_micro": int(cap), "spent_micro": int(spent)} for pid, cap, spent in rows}


def _names(session: Session, model: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {o.id: o.name_zh for o in session.exec(select(model).where(model.id.in_(ids)))}


def operating_report(session: Session, org_id: int, year: int) -> Report:
    org = operator(session, org_id)
    revenue = revenue_by_product_month(session, org_id, year)
    calls = calls_by_customer(session, org_id, year)
    burn = budget_by_partner(session, org_id, year)
    products = _names(session, Product, set(revenue))
    customers = _names(session, Organisation, set(calls))
    partners = _names(session, Organisation, set(burn))
    total = sum(sum(m) for m in revenue.values())
    facts = [("年度 Year", year), ("运营机构 Operator", org.name_zh), ("营业收入 Revenue", f"{yuan(total)} 元"),
             ("计费调用 Billed calls", sum(c["calls"] for c in calls.values())),
             ("客户数 Customers", len(calls))]
    charts = [
        Chart("按产品和月份的收入 Revenue by product and month", MONTHS,
              [(products[p], [fen / 100 for fen in months]) for p, months in sorted(revenue.items())],
              unit="元 yuan", stacked=True),
        Chart("按客户的调用量 Calls by customer", [customers[c] for c in sorted(calls)],
              [("调用 calls", [calls[c]["calls"] for c in sorted(calls)])]),
        Chart("合伙人隐私预算消耗 Budget burn by partner", [partners[p] for p in sorted(burn)],
              [("上限 cap ε", [burn[p]["cap_micro"] / MICRO for p in sorted(burn)]),
               ("已用 spent ε", [burn[p]["spent_micro"] / MICRO for p in sorted(burn)])]),
    ]
    own = {p.id for p in session.exec(select(Product).where(Product.operator_org_id == org_id))}
    priced = [p for p in published_prices(session) if p["product_id"] in own]
    sections = [
        Section("按产品和月份的收入（分）Revenue by product and month (fen)", ["产品 product", *MONTHS, "合计 total"],
                [[products[p], *months, sum(months)] for p, months in sorted(revenue.items())]),
        Section("按客户的调用量 Calls by customer", ["客户 customer", "调用 calls", "计费单位 units", "金额（分）fen",
                                                   "金额（元）yuan"],
                [[customers[c], v["calls"], v["units"], v["amount_fen"], yuan(v["amount_fen"])]
                 for c, v in sorted(calls.items())]),
        Section("合伙人隐私预算 Budget burn by partner", ["合伙人 partner", "上限 cap ε", "已用 spent ε", "消耗 %"],
                [[partners[p], b["cap_micro"] / MICRO, b["spent_micro"] / MICRO,
                  round(100 * b["spent_micro"] / b["cap_micro"], 1) if b["cap_micro"] else 0.0]
                 for p, b in sorted(burn.items())]),
        Section("产品、价格与上限 Products, prices and caps", ["产品 product", "编号 code", "计价单位 unit",
                                                            "价格（分）price fen", "上限（分）cap fen", "试行 trial"],
                [[p["name_zh"], p["code"], u["unit_zh"], u["price_fen"], u["cap_fen"], "是" if u["trial"] else ""]
                 for p in priced for u in p["units"]] +
                [[p["name_zh"], p["code"], "免费 free", 0, 0, ""] for p in priced if p["free"]]),
    ]
    return Report(f"{org.name_zh} {year}年度运营报告 Operating report", f"operating-{year}-{org_id}", facts, charts,
                  sections, note="收入与调用来自计费记录（billing_usage），预算来自隐私预算台账。")


# --- the audit report -------------------------------------------------------------------------------

def _risk_text(r: dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"未测量 not measured: {r.get('reason', '')}"
    parts = [f"{name} {r[name]['value']:.3f}" for name in ("singling_out", "linkability", "inference") if name in r]
    return "; ".join(parts) + f" ({r['attacks']} attacks)"


def audit_data(session: Session, settings: Settings, year: int, org_id: int, *, measure: bool = True,
               shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the audit report states, as data. `shared` (from `shared_audit_data`) saves
    verifying the log and measuring the releases again for each operator."""
    shared = shared or shared_audit_data(session, settings, year, measure=measure)
    return {"year": year, "operator": operator(session, org_id).name_zh, **shared,
            "reconciliation": books.reconcile(session, org_id, year),
            "findings": [findings.view(f) for f in findings.listing(session, year=year)]}


def shared_audit_data(session: Session, settings: Settings, year: int, *, measure: bool = True) -> dict[str, Any]:
    """The parts of the audit that are the same for every operator: log verification, releases."""
    return {"verification": integrity.verify_years(session, settings, year, year),
            "deidentification": deid.report(session, settings, year, measure=measure)}


def audit_report(data: dict[str, Any], org_id: int) -> Report:
    v, d, rec = data["verification"], data["deidentification"], data["reconciliation"]
    year = data["year"]
    facts = [("年度 Year", year), ("运营机构 Operator", data["operator"]),
             ("日志完整性 Log integrity", ("通过 OK" if v["ok"] else "未通过 FAILED") + f" — {v['summary']}"),
             ("本年度日志事件 Events in the year", v["events_in_range"]),
             ("成本收益核对 Reconciliation", ("一致 reconciled" if rec["reconciled"] else "有差异 differences") +
              f"，差额 {yuan(rec['difference_fen'])} 元"),
             ("审计发现 Findings", len(data["findings"]))]
    charts = [Chart("计量收入与账簿收入 Metered vs booked revenue", MONTHS,
                    [("计量 metered", [m["metered_fen"] / 100 for m in rec["months"]]),
                     ("入账 booked", [m["booked_fen"] / 100 for m in rec["months"]])], unit="元 yuan")]
    if d["budgets"]:
        charts.append(Chart("隐私预算消耗 Budget spent per partner and resource",
                            [f"{b['partner']} {b['resource']}" for b in d["budgets"]],
                            [("上限 cap ε", [b["epsilon_cap"] for b in d["budgets"]]),
                             ("已用 spent ε", [b["epsilon_spent"] for b in d["budgets"]])]))
    sections = [
        Section("记录级发布的去标识化效果 Record-level releases", ["发布 release", "合伙人 partner", "行数 rows",
                                                               "准标识符 quasi-identifiers", "要求 k", "实际 k",
                                                               "抑制行 suppressed", "抑制率 rate", "重识别风险 risk"],
                [[f"{r['job_id']}/{r['output']}", r["partner"], r["rows"], ", ".join(r["quasi_identifiers"]),
                  r["k_required"], r["k_achieved"], r["suppressed_rows"], r["suppression_rate"], _risk_text(r["risk"])]
                 for r in d["record_releases"]]),
        Section("聚合发布的差分隐私参数 Aggregate releases", ["发布 release", "合伙人 partner", "单元格 cells", "ε", "δ",
                                                           "最小单元 threshold", "抑制单元 suppressed"],
                [[f"{a['job_id']}/{a['output']}", a["partner"], a["rows"], a["epsilon"], a["delta"], a["threshold"],
                  a["suppressed_cells"]] for a in d["aggregate_releases"]]),
        Section("隐私预算 Privacy budgets", ["合伙人 partner", "资源 resource", "期间 period", "上限 cap ε",
                                           "已用 spent ε", "消耗 %"],
                [[b["partner"], b["resource"], b["period"], b["epsilon_cap"], b["epsilon_spent"], b["spent_pct"]]
                 for b in d["budgets"]]),
        Section("成本收益核对（分）Reconciliation (fen)", ["月份 month", "计量 metered", "入账 booked", "差额 difference"],
                [[MONTHS[m["month"] - 1], m["metered_fen"], m["booked_fen"], m["difference_fen"]]
                 for m in rec["months"]]),
        Section("审计发现 Findings", ["编号 id", "严重程度 severity", "标题 title", "内容 text", "回复 response", "状态 state"],
                [[f["id"], f["severity_zh"], f["title"], f["text"], f["response"], f["state"]]
                 for f in data["findings"]]),
    ]
    return Report(f"{year}年度第三方审计报告 Third-party audit report", f"audit-{year}-{org_id}", facts, charts,
                  sections, note="日志由导出文件和公钥离线验证；重识别风险由 anonymeter 在留出样本上测量。")


# --- everything into a folder ------------------------------------------------------------------------

def write_reports(session: Session, settings: Settings, year: int, folder: Path) -> list[Path]:
    """Every operator's operating and audit report, and each assessment of the year, in all formats."""
    paths: list[Path] = []
    shared = shared_audit_data(session, settings, year)
    for org in session.exec(select(Organisation).where(Organisation.kind == OrgKind.OPERATOR.value)
                            .order_by(Organisation.id)):
        paths += write(operating_report(session, org.id, year), folder)
        paths += write(audit_report(audit_data(session, settings, year, org.id, shared=shared), org.id), folder)
    for data in assessment_data(session, year):
        paths += write(assessment_report(data), folder)
    return paths


def assessment_data(session: Session, year: int) -> list[dict[str, Any]]:
    """The year's signed assessments (annual and re-assessments) as report dicts."""
    from authops.platform.assessment import report_data
    from authops.platform.assessment.models import Assessment

    ids = session.exec(select(Assessment.id).where(Assessment.year == year, Assessment.state == "signed")
                       .order_by(Assessment.id)).all()
    return [report_data(session, i) for i in ids]
