"""The demo's supervision chapter: the year closes and the bureau assesses it.

Before: the bureau's pre-filing schedule and the operator's risk-assessment report, on time.
During the year (the demo's chapters 3-9, compressed into a few weeks of the process clock):
calls, jobs, reviews, billing, customers' ratings. After: the bureau sets the
year's weights and targets, runs the assessment from the platform's records, adds the expert
committee's score and signs it (the operator comes out qualified); a second assessment, of the
operator's pre-authorization pilot year 2025 with nothing on record, comes out unqualified and
shows the consequence path: a rectification plan within 30 days, then the re-assessment; the
provider departments' figures; the third-party auditor's finding, answered and published; and the
assessment, operating and audit reports written to the data folder (PDF, HTML, Excel).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from authops.core import db
from authops.core.clock import show, to_shanghai, travel, utcnow
from authops.core.settings import Settings
from authops.demo.governance_story import _Logins, _json, _refusal

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

A = "/api/v1/assessment"
W = "/api/v1/auditwork"
TARGETS = {  # metric -> (weight, the value that scores 100): demo scale
    "products": (15, 7), "scenarios": (10, 3), "security_compliance": (20, 95), "satisfaction": (15, 4.5),
    "revenue": (15, 9_000), "social.subjects_served": (10, 8), "social.financing_disbursed": (5, 1),
    "social.public_governance_calls": (10, 2)}


def _metric_line(m: dict) -> str:
    value = m["value"]
    money = m["key"] == "revenue"
    shown = f"{value / 100:,.2f} yuan" if money and value is not None else f"{value}"
    target = f"{m['threshold'] / 100:,.2f} yuan" if money else f"{m['threshold']:g}"
    return (f"     {m['name_zh']:<16} {shown:>14}  target {target:<11} score {m['score']:>5.1f}  "
            f"(from {m['sources']['count']} records: {m['sources']['query'][:60]})")


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None]) -> None:
    ok = dict(fg="green")
    who = _Logins(client, password)
    orgs = {o["code"]: o for o in _json(client.get("/api/v1/orgs", headers=who("bureau-admin")))}
    operator = orgs["szdataops"]["id"]
    today = to_shanghai(utcnow()).date()
    year = today.year - 1

    def expect(r, status: int) -> dict:
        return dict(fg="green" if r.status_code == status else "red")

    # --- before: pre-filing -------------------------------------------------------------------------
    say("   before: pre-filing of risk assessments", bold=True)
    sched = _json(client.post(f"{A}/prefiling/schedules", headers=who("bureau-admin"), json={
        "operator_org_id": operator, "target_kind": "resource", "target": "medical_insurance_settlements",
        "first_due_on": str(today + timedelta(days=10)), "period_months": 12, "blocks_jobs": True}))
    filing = _json(client.post(f"{A}/prefiling/schedules/{sched['id']}/filings", headers=who("ops-admin"),
                               files={"file": ("risk-assessment.pdf", "医保结算数据使用风险评估报告".encode(),
                                               "application/pdf")}))
    say(f"   bureau-admin schedules a yearly risk-assessment report on medical_insurance_settlements (blocking "
        f"new jobs when overdue); ops-admin files it, encrypted -> due {filing['due_on']}, on time: "
        f"{filing['on_time']}", **ok)

    # --- the annual assessment ------------------------------------------------------------------------
    say(f"   the annual assessment of {year}", bold=True)
    settings_body = {"metrics": {k: {"weight": w, "target": t} for k, (w, t) in TARGETS.items()},
                     "excellent": 90, "qualified": 60, "expert_weight": 20,
                     "indicators": {"enterprise_products": ["bank_credit_assessment", "tech_finance", "bid_win_loan",
                                                            "trading_limit_and_guarantee"]}}
    _json(client.put(f"{A}/years/{year}/settings", headers=who("bureau-admin"), json=settings_body))
    a = _json(client.post(f"{A}/runs", headers=who("bureau-admin"), json={"operator_org_id": operator, "year": year}))
    say(f"   bureau-admin sets {year}'s weights and targets (qualified ≥ 60, excellent ≥ 90) and runs the assessment "
        f"of {orgs['szdataops']['name_zh']} from the platform's own records:", **ok)
    for m in a["metrics"]:
        say(_metric_line(m))
    for i, (score, comment) in enumerate(((86, "运营规范，产品覆盖面广"), (82, "安全合规，建议扩充公益场景")), 1):
        a = _json(client.post(f"{A}/runs/{a['id']}/expert-scores", headers=who("bureau-admin"),
                              json={"expert": f"expert-{i}", "score": score, "comment": comment}))
    a = _json(client.post(f"{A}/runs/{a['id']}/sign", headers=who("bureau-admin")))
    checked = _json(client.get(f"{A}/runs/{a['id']}", headers=who("bureau-admin")))
    say(f"   two expert scores added; total {a['total_score']:.1f} -> {a['grade']}; signed by the bureau "
        f"(Ed25519, key {a['key_id']}, signature valid: {checked['signature_valid']})",
        fg="green" if a["grade"] in ("qualified", "excellent") else "red")

    # --- the second scenario: unqualified, rectification, re-assessment --------------------------------
    say("   a second scenario: unqualified → rectification → re-assessment", bold=True)
    pilot = year - 1
    _json(client.put(f"{A}/years/{pilot}/settings", headers=who("bureau-admin"), json=settings_body))
    b = _json(client.post(f"{A}/runs", headers=who("bureau-admin"), json={"operator_org_id": operator, "year": pilot}))
    b = _json(client.post(f"{A}/runs/{b['id']}/expert-scores", headers=who("bureau-admin"),
                          json={"expert": "expert-1", "score": 40, "comment": "试点年度无运营记录"}))
    b = _json(client.post(f"{A}/runs/{b['id']}/sign", headers=who("bureau-admin")))
    rect = next(x for x in _json(client.get(f"{A}/rectifications/mine", headers=who("ops-admin")))
                if x["assessment_id"] == b["id"])
    say(f"   the pilot year {pilot} (before the authorization: nothing on record) scores {b['total_score']:.1f} -> "
        f"{b['grade']}; consequences: {', '.join(b['consequences']) or 'none'}; rectification plan due "
        f"{rect['due_on']} (30 days)", fg="green" if b["grade"] == "unqualified" else "red")
    r = client.post(f"{A}/rectifications/{rect['id']}/reassess", headers=who("bureau-admin"))
    say(f"   re-assessing before the plan is in -> {_refusal(r, 110)}", **expect(r, 409))
    rect = _json(client.post(f"{A}/rectifications/{rect['id']}/plan", headers=who("ops-admin"), json={
        "plan": "一、补齐风险评估报备；二、上线首批产品并建立满意度回访；三、每季度向数据局报送运营报告。"}))
    travel(timedelta(days=31))
    who.reset()
    again = _json(client.post(f"{A}/rectifications/{rect['id']}/reassess", headers=who("bureau-admin")))
    again = _json(client.post(f"{A}/runs/{again['id']}/expert-scores", headers=who("bureau-admin"),
                              json={"expert": "expert-1", "score": 80, "comment": "整改措施已落实"}))
    again = _json(client.post(f"{A}/runs/{again['id']}/sign", headers=who("bureau-admin")))
    say(f"   ops-admin files the plan ({rect['state']}); the clock moves 31 days to {show(utcnow())}; the "
        f"re-assessment over the 12 months to now scores {again['total_score']:.1f} -> {again['grade']} "
        f"(failing it would have ended the authorization with a ban)",
        fg="green" if again["grade"] in ("qualified", "excellent") else "red")

    # --- departments --------------------------------------------------------------------------------
    depts = _json(client.get(f"{A}/years/{year}/departments", headers=who("bureau-admin")))
    scored = [d for d in depts if d.get("score") is not None]
    best = sorted(scored, key=lambda d: -d["score"])[:3]
    say(f"   provider departments for {year}: {len(scored)} assessed on timeliness, completeness and accuracy; "
        "top: " + "; ".join(f"{d['name_zh']} {d['score']:.0f}" for d in best), **ok)

    # --- the auditor -----------------------------------------------------------------------------------
    say("   the third-party audit", bold=True)
    v = _json(client.get(f"{W}/log-verification", headers=who("auditor-1"),
                         params={"from_year": year, "to_year": today.year}))
    say(f"   auditor-1 verifies the log for {year}-{today.year}: {str(v.get('summary'))[:110]}",
        fg="green" if v.get("ok") else "red")
    f = _json(client.post(f"{W}/findings", headers=who("auditor-1"), json={
        "org_id": operator, "year": year, "severity": "minor", "title": "接口密钥轮换周期偏长",
        "text": "部分客户接口密钥超过180天未轮换，建议运营机构督促客户定期轮换。"}))
    _json(client.post(f"{W}/findings/{f['id']}/response", headers=who("ops-admin"),
                      json={"response": "已通知客户并上线到期提醒，计划一个月内完成轮换。"}))
    _json(client.post(f"{W}/findings/{f['id']}/publish", headers=who("bureau-admin")))
    page = _json(client.get("/api/v1/public/disclosure"))
    say(f"   auditor-1 records a finding, ops-admin answers, bureau-admin publishes it -> the disclosure page "
        f"lists {len(page.get('audit_results') or [])} audit result(s)", **ok)

    # --- the reports ------------------------------------------------------------------------------------
    from authops.platform.auditwork.reports import write_reports

    folder = settings.data_path / "reports" / str(year)
    with db.session_scope(settings) as session:
        paths = write_reports(session, settings, year, folder)
    kinds = sorted({p.name.split("-")[0] for p in paths})
    say(f"   {len(paths)} report files ({', '.join(kinds)}; PDF with Chinese text and charts, HTML with charts, "
        f"Excel with the numbers) -> {folder}", **ok)
