"""The demo's billing chapter: regulated prices, metering under the ceiling, statements, books and
the yearly settlement.

The DRC and the bureau set the operator's maximum permitted revenue for the year; the bureau caps
each product's price per call; the operator, in its first (trial) year, files its trial prices
with the DRC before they take effect; a price above the cap and a price for the free supervision
product are refused. Calls are billed at the lowest of the agreement price, the operator's price
and the cap; near the maximum the warnings go out and the order that would pass it is refused.
The bank downloads its monthly statement (PDF, Excel); the operator books its costs and the
metered revenue; after the year ends it runs the settlement, files it with the bureau, and the
bureau produces its report to the DRC. The files land in the demo's data folder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

from authops.core.clock import SHANGHAI, show, to_shanghai, utcnow
from authops.core.settings import Settings
from authops.demo.governance_story import _Logins, _json, _refusal, _travel_to

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

BILLING = "/api/v1/billing"
CAPS_FEN = {"bank_credit_assessment": 800, "tech_finance": 500, "bid_win_loan": 300,
            "trading_limit_and_guarantee": 600, "commercial_insurance_underwriting": 1000,
            "freight_truck_underwriting_pricing": 200}
PRICES_FEN = {"bank_credit_assessment": 600, "tech_finance": 400, "bid_win_loan": 300,
              "trading_limit_and_guarantee": 500, "commercial_insurance_underwriting": 900,
              "freight_truck_underwriting_pricing": 150}
COSTS = [("platform", 1_200_000, "平台运维（云资源、安全运维）"), ("staff", 800_000, "运营团队人员成本"),
         ("data_handling", 300_000, "数据传输、存储与治理"), ("period", 100_000, "期间费用")]


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def _save(folder: Path, name: str, data: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return str(folder / name)


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None],
        keys: dict[str, dict[str, str]], subjects: dict[str, list[str]]) -> None:
    ok = dict(fg="green")
    who = _Logins(client, password)
    orgs = {o["code"]: o for o in _json(client.get("/api/v1/orgs", headers=who("bureau-admin")))}
    products = {p["code"]: p for p in _json(client.get("/api/v1/governance/products", headers=who("ops-admin")))}
    operator, drc = orgs["szdataops"]["id"], orgs["drc-price"]["id"]
    year = to_shanghai(utcnow()).year
    out_dir = settings.data_path / "reports" / "billing"

    def expect(r, status: int) -> dict:
        return dict(fg="green" if r.status_code == status else "red")

    # --- regulated prices ---------------------------------------------------------------------------
    say("   regulated prices", bold=True)
    rev = _json(client.get(f"{BILLING}/revenue", headers=who("ops-admin"), params={"year": year}))
    so_far = rev[0]["revenue_fen"] if rev else 0
    ceiling = so_far + 3_500
    _json(client.post(f"{BILLING}/max-revenue", headers=who("bureau-admin"), json={
        "operator_org_id": operator, "year": year, "amount_fen": ceiling, "drc_org_id": drc, "warn_at_pct": [80, 95],
        "reason": "市发展改革委会同数据局核定（演示规模）"}))
    say(f"   bureau-admin with the DRC sets {year}'s maximum permitted revenue: {_yuan(ceiling)} yuan "
        f"(demo scale; {_yuan(so_far)} already billed), warnings at 80% and 95%", **ok)
    for code, cap in CAPS_FEN.items():
        _json(client.post(f"{BILLING}/caps", headers=who("bureau-admin"), json={
            "product_id": products[code]["id"], "unit": "per_call", "cap_fen": cap, "reason": "成本加合理利润"}))
    say(f"   bureau-admin caps six products per call: " + ", ".join(f"{c} {_yuan(v)}" for c, v in CAPS_FEN.items()),
        **ok)
    free = products["medical_insurance_spending_supervision"]
    r = client.post(f"{BILLING}/caps", headers=who("bureau-admin"), json={
        "product_id": free["id"], "unit": "per_call", "cap_fen": 100})
    say(f"   a cap for the free supervision product -> {_refusal(r, 130)}", **expect(r, 422))
    r = client.post(f"{BILLING}/prices", headers=who("ops-admin"), json={
        "product_id": products["bank_credit_assessment"]["id"], "unit": "per_call", "price_fen": 900,
        "basis": "成本加成"})
    say(f"   ops-admin prices bank_credit_assessment at 9.00 yuan (cap 8.00) -> {_refusal(r, 130)}",
        **expect(r, 422))
    filed = []
    for code, price in PRICES_FEN.items():
        p = _json(client.post(f"{BILLING}/prices", headers=who("ops-admin"), json={
            "product_id": products[code]["id"], "unit": "per_call", "price_fen": price, "basis": "成本加成，试行价格"}))
        f = _json(client.post(f"{BILLING}/prices/{p['id']}/filing", headers=who("ops-admin"), json={"drc_org_id": drc}))
        filed.append(f["number"])
    say(f"   the operator has not completed an operating year: its six prices are trial prices, in force once "
        f"filed with the DRC ({filed[0]} … {filed[-1]})", **ok)
    page = _json(client.get("/api/v1/public/disclosure"))
    priced = [x for x in page["price_caps"] if x["units"]]
    say(f"   the public disclosure page lists {len(priced)} products with cap and price "
        f"(e.g. {priced[0]['name_zh']}: cap {_yuan(priced[0]['units'][0]['cap_fen'])}, "
        f"price {_yuan(priced[0]['units'][0]['price_fen'])}{' trial' if priced[0]['units'][0]['trial'] else ''})",
        **ok)

    # --- calls billed at the price in force, up to the ceiling ------------------------------------------------
    say("   metering under the ceiling", bold=True)
    code, firm = "bank_credit_assessment", subjects["enterprise"][1]
    charged, refused = [], None
    for _ in range(12):
        r = client.post(f"/api/v1/products/{code}/calls", headers=keys["scb"],
                        json={"subject": firm, "purpose": "小微企业贷前审查"})
        if r.status_code != 200:
            refused = r
            break
        charged.append(r.json()["metered"]["amount_fen"])
    say(f"   scb calls {code} {len(charged)} times: each billed {_yuan(charged[0]) if charged else '-'} yuan "
        f"(agreement 8.00, trial price 6.00, cap 8.00: the lowest applies)", **ok)
    rev = _json(client.get(f"{BILLING}/revenue", headers=who("ops-admin"), params={"year": year}))[0]
    warned = ", ".join(f"{w['threshold_pct']}%" for w in rev["warnings"])
    say(f"   revenue {_yuan(rev['revenue_fen'])} of {_yuan(rev['ceiling_fen'])} yuan ({rev['used_pct']}%); "
        f"warnings raised at {warned or 'none'}", **ok)
    if refused is not None:
        say(f"   the next paid call -> {_refusal(refused, 150)} (nothing charged)", **expect(refused, 403))
    else:
        say("   the ceiling was not reached", fg="red")

    # --- statements --------------------------------------------------------------------------------
    say("   monthly statements", bold=True)
    month = to_shanghai(utcnow()).month
    st = _json(client.get(f"{BILLING}/statements", headers=who("scb-admin"), params={"year": year, "month": month}))
    total = sum(s["total_fen"] for s in st) if st and "total_fen" in st[0] else None
    pdf = client.get(f"{BILLING}/statements", headers=who("scb-admin"),
                     params={"year": year, "month": month, "format": "pdf"})
    xlsx = client.get(f"{BILLING}/statements", headers=who("scb-admin"),
                      params={"year": year, "month": month, "format": "xlsx"})
    a = _save(out_dir, f"scb-statements-{year}-{month:02d}.pdf", pdf.content)
    _save(out_dir, f"scb-statements-{year}-{month:02d}.xlsx", xlsx.content)
    say(f"   scb-admin: {len(st)} statements for {year}-{month:02d}"
        + (f", {_yuan(total)} yuan in all" if total is not None else "") + f"; PDF and Excel -> {a[:-4]}.*",
        fg="green" if pdf.status_code == 200 and xlsx.status_code == 200 else "red")

    # --- books ---------------------------------------------------------------------------------------
    say("   cost and revenue books", bold=True)
    day = str(to_shanghai(utcnow()).date())
    for category, fen, text in COSTS:
        _json(client.post(f"{BILLING}/books", headers=who("ops-admin"), json={
            "book": "cost", "category": category, "amount_fen": fen, "occurred_on": day, "description": text}))
    wrong = _json(client.post(f"{BILLING}/books", headers=who("ops-admin"), json={
        "book": "cost", "category": "staff", "amount_fen": 80_000, "occurred_on": day, "description": "重复录入"}))
    _json(client.post(f"{BILLING}/books/{wrong['id']}/reversal", headers=who("ops-admin"),
                      json={"reason": "重复录入，冲销"}))
    _json(client.post(f"{BILLING}/books/metered", headers=who("ops-admin"), json={"year": year, "month": month}))
    books = _json(client.get(f"{BILLING}/books", headers=who("ops-admin"), params={"year": year}))
    t, rec = books["totals"], books["reconciliation"]
    say(f"   ops-admin books {len(COSTS)} costs, one wrong entry corrected by a reversing entry (entries are never "
        f"edited), and the month's metered revenue: costs {_yuan(t['cost_total_fen'])} yuan, product sales "
        f"{_yuan(t['revenue']['product_sales'])} yuan; metered {_yuan(rec['metered_fen'])} = booked "
        f"{_yuan(rec['booked_product_sales_fen'])}", fg="green" if rec["metered_fen"] == rec["booked_product_sales_fen"]
        else "red")

    # --- the yearly settlement ---------------------------------------------------------------------------
    say("   the yearly settlement", bold=True)
    r = client.post(f"{BILLING}/settlements", headers=who("ops-admin"), json={"year": year})
    say(f"   settling {year} before it ends -> {_refusal(r, 120)}", **expect(r, 409))
    _travel_to(datetime.combine(datetime(year + 1, 1, 5).date(), time(9, 0), tzinfo=SHANGHAI))
    who.reset()
    say(f"   the demo's clock moves to {show(utcnow())} (Asia/Shanghai): {year} has ended", fg="yellow")
    s = _json(client.post(f"{BILLING}/settlements", headers=who("ops-admin"), json={"year": year, "rule": "declared"}))
    s = _json(client.post(f"{BILLING}/settlements/{s['id']}/filing", headers=who("ops-admin")))
    parties: dict[str, int] = defaultdict(int)
    for line in s["lines"]:
        parties[f"{line['party_zh']} {line['party_name']}"] += line["amount_fen"]
    say(f"   ops-admin settles {year} ({s['number']}): revenue {s['revenue_yuan']} yuan, departments' share by "
        f"each product's declared use of their data; filed with the bureau -> "
        f"{'filed ' + show(datetime.fromisoformat(str(s['filed_at']))) if s['filed_at'] else 'not filed'}", **ok)
    for party, fen in sorted(parties.items(), key=lambda x: -x[1]):
        say(f"     {party:<44} {_yuan(fen):>10} yuan")
    say(f"   shares sum to {_yuan(sum(parties.values()))} = revenue {s['revenue_yuan']} yuan exactly (integer fen, "
        f"largest remainder); the public share {_yuan(s['non_tax_fen'])} yuan is non-tax revenue",
        fg="green" if sum(parties.values()) == s["revenue_fen"] else "red")
    report = _json(client.get(f"{BILLING}/reports/drc", headers=who("bureau-admin"), params={"year": year}))
    for fmt in ("xlsx", "pdf"):
        r = client.get(f"{BILLING}/reports/drc", headers=who("bureau-admin"), params={"year": year, "format": fmt})
        path = _save(out_dir, f"drc-report-{year}.{fmt}", r.content)
    say(f"   bureau-admin generates the report on {year}'s operation to the DRC ({', '.join(sorted(report)[:6])}, …) "
        f"-> {path[:-4]}.xlsx / .pdf", **ok)
