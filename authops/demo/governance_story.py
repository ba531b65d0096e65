"""The demo's governance chapter: from the operator selection to a consented product call.

The bureau selects the operator (notice, applications with materials, qualification check, expert
scores, publicity with an objection, the 3-year authorization agreement); the operator recruits a
finance partner; the partner's scenario passes the three-level review (returned once by the expert
committee); the product built in the opened workspace is registered with its security self-review
report; a bank signs a usage agreement; an enterprise authorizes the calls about it and later
revokes. Everything goes through the HTTP API; the publicity period passes on the demo's own
forward-only clock (authops.core.clock.travel), so nothing here waits in real time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from authops.core import clock
from authops.core.clock import SHANGHAI, show, to_shanghai, utcnow
from authops.core.settings import Settings
from authops.demo.checks import login
from authops.platform.governance import workdays

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

GOV = "/api/v1/governance"
PUBLIC = "/api/v1/public"

OPERATOR_SHARES = {"shares_pct": {"provider_departments": 30, "operator": 40, "partners": 20, "public": 10}}
SCORES = {"szdataops": (88, 91, 86), "szcloud": (79, 74, 81)}
RULES = ["数据分类分级管理办法", "数据安全事件应急预案", "数据出域审批制度"]
PARTNER_MATERIALS = ["business_licence", "capability_statement", "security_commitment"]
RESOURCES = ("enterprise_tax", "enterprise_basic_info")
PURPOSE = "小微企业贷前审查"

# The scenario as first filed: it also asks for the enterprises' establishment dates.
SCENARIO = {
    "goal": "为银行小微企业贷前审查提供企业纳税合规核验，减少多头报送材料",
    "resources": [
        {"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "has_violation_record"],
         "share_modes": ["verify"], "epsilon": 0.5},
        {"resource": "enterprise_basic_info", "fields": ["uscc", "registration_status", "establishment_date"],
         "share_modes": ["verify"], "epsilon": 0.5},
    ],
    "product_design": "核验接口：输入统一社会信用代码与年度，返回该年度是否存在涉税违法记录（是/否）",
    "processing_method": "沙箱内声明式计算，只输出枚举答案，不输出任何原始记录",
    "security_measures": "数据不出域；调用逐次鉴权并留痕；须取得企业授权",
    "technical_route": "声明式规格 → 发布闸门（verify 策略）→ API 核验",
    "expected_benefit": "贷前审查由3天缩短到分钟级，覆盖全市小微企业",
}
REVISION = {
    **SCENARIO,
    "resources": [SCENARIO["resources"][0],
                  {**SCENARIO["resources"][1], "fields": ["uscc", "registration_status"]}],
    "security_measures": ("数据不出域；调用逐次鉴权并留痕；须取得企业签名授权；数据最小化：不再申请成立日期，"
                          "只读核验所需的三个税务字段；核验结果不落地保存"),
}

# The product: does the enterprise have a tax violation record in the year? (a verify product)
PRODUCT_SPEC = {
    "spec_version": 1, "name": "tax_violation_verify",
    "title": "Tax violation record in the year?",
    "params": {"year": {"type": "int", "default": 2025, "description": "the tax year"}},
    "inputs": [{"resource": "enterprise_tax", "version": 1,
                "fields": ["uscc", "tax_period", "has_violation_record"]}],
    "steps": [{"filter": "has_violation_record and year(tax_period) = :year"},
              {"summarize": {"by": ["uscc"], "aggregates": [{"name": "records", "fn": "count"}]}},
              {"derive": {"name": "answer", "expr": "case when records > 0 then 'yes' else 'no' end"}}],
    "outputs": [{"name": "has_tax_violation",
                 "release": {"policy": "verify", "claim": "uscc", "answer": "answer", "values": ["yes", "no"],
                             "absent": "no"}}],
}
SELF_REVIEW = {
    "beyond_purpose": "仅用于银行贷前审查；输入字段均在场景批准范围内，调用须有有效使用协议与企业授权。",
    "direct_exposure": "只返回是/否，不返回税务明细或任何原始记录；无记录的企业同样答“否”。",
    "indirect_exposure": "无模型与统计输出；逐次核验的调用量受协议约束并全部审计，异常批量调用会被拦截。",
    "other_risks": "企业授权可随时撤销，撤销后下一次调用即被拒绝；价格不高于登记价格。",
}


class _Logins:
    """One login per user, made when first needed (tokens expire: reset after the clock moves)."""

    def __init__(self, client: TestClient, password: str) -> None:
        self.client, self.password, self.tokens = client, password, {}

    def __call__(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            self.tokens[username] = login(self.client, username, self.password)
        return self.tokens[username]

    def reset(self) -> None:
        self.tokens.clear()


def _json(r) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:600]}")
    return r.json()


def _refusal(r, limit: int = 160) -> str:
    err = r.json()["error"]
    msg = err["message"]
    return f"{r.status_code} {err['code']}: {msg[:limit]}{'…' if len(msg) > limit else ''}"


def _pdf(title: str, owner: str) -> bytes:
    """A small synthetic PDF standing in for a scanned material."""
    return (f"%PDF-1.4\n% authops demo material: {title} of {owner} (synthetic)\n"
            "1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n").encode()


def _travel_to(at_local: datetime) -> None:
    clock.travel(at_local.astimezone(SHANGHAI).replace(tzinfo=None) - to_shanghai(utcnow()).replace(tzinfo=None))


def _short(h: str) -> str:
    return h[:12] + "…"


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None]) -> None:
    ok, warn = dict(fg="green"), dict(fg="yellow")
    who = _Logins(client, password)
    orgs = {o["code"]: o for o in _json(client.get("/api/v1/orgs", headers=who("bureau-admin")))}
    by_id = {o["id"]: o for o in orgs.values()}

    def zh(code_or_id: str | int) -> str:
        return (by_id[code_or_id] if isinstance(code_or_id, int) else orgs[code_or_id])["name_zh"]

    def expect(r, status: int) -> dict:
        return dict(fg="green" if r.status_code == status else "red")

    # --- 1. operator selection ----------------------------------------------------------------
    say("   operator selection", bold=True)
    deadline = datetime.combine(to_shanghai(utcnow()).date() + timedelta(days=3), time(17, 0), tzinfo=SHANGHAI)
    notice = _json(client.post(f"{GOV}/operator/notices", headers=who("bureau-admin"), json={
        "title": "苏州市公共数据授权运营机构遴选公告", "deadline_at": deadline.isoformat(),
        "committee_org_ids": [orgs["experts"]["id"]]}))
    materials = notice["materials"]
    say(f"   bureau-admin publishes notice {notice['number']} 「{notice['title']}」: "
        f"{len(notice['conditions'])} admission conditions, {len(materials)} materials "
        f"({', '.join(materials[:3])}, …), closing {notice['deadline_local']}", **ok)

    apps: dict[str, dict] = {}
    for code, user, officer in (("szdataops", "ops-admin", "王安全"), ("szcloud", "szcloud-admin", "蒋守信")):
        h = who(user)
        case = _json(client.post(f"{GOV}/operator/applications", headers=h, json={
            "call_id": notice["id"], "title": f"{zh(code)} 授权运营申报",
            "payload": {"security_officer": {"name": officer, "title": "首席数据安全官"},
                        "internal_security_rules": RULES}}))
        held_back = materials[-1] if code == "szcloud" else None
        for m in materials:
            if m != held_back:
                _json(client.post(f"{GOV}/operator/applications/{case['id']}/documents", headers=h,
                                  files={"file": (f"{m}.pdf", _pdf(m, code), "application/pdf")},
                                  data={"material": m}))
        if held_back:
            r = client.post(f"{GOV}/operator/applications/{case['id']}/submit", headers=h)
            say(f"   {user} submits {case['number']} with {held_back} missing -> {_refusal(r, 120)}", **expect(r, 422))
            _json(client.post(f"{GOV}/operator/applications/{case['id']}/documents", headers=h,
                              files={"file": (f"{held_back}.pdf", _pdf(held_back, code), "application/pdf")},
                              data={"material": held_back}))
        case = _json(client.post(f"{GOV}/operator/applications/{case['id']}/submit", headers=h))
        apps[code] = case
        say(f"   {user} ({zh(code)}) files {case['number']} with all {len(case['documents'])} materials "
            f"(synthetic PDFs, stored encrypted) -> {case['state']}", **ok)

    for code, case in apps.items():
        case = _json(client.post(f"{GOV}/operator/applications/{case['id']}/qualification",
                                 headers=who("bureau-admin"), json={"passed": True, "reasons": "主体资格、安全保障能力符合公告条件"}))
        met = sum(c["ok"] for c in case["facts"]["admission"])
        apps[code] = case
    say(f"   bureau-admin checks qualifications: {met} of {len(case['facts']['admission'])} admission conditions "
        f"met by each (registered in the city, valid USCC, named security officer, …) -> {case['state']}", **ok)
    for code, case in apps.items():
        for i, s in enumerate(SCORES[code], start=1):
            _json(client.post(f"{GOV}/operator/applications/{case['id']}/scores", headers=who(f"expert-{i}"),
                              json={"score": s, "comments": "运营方案、技术方案与安全保障能力已评审"}))
    say("   the committee scores both: " + "; ".join(f"{zh(c)} {'/'.join(map(str, SCORES[c]))}" for c in SCORES),
        **ok)
    r = client.post(f"{GOV}/operator/notices/{notice['id']}/conclude", headers=who("bureau-admin"), json={})
    say(f"   concluding before the deadline -> {_refusal(r, 110)}", **expect(r, 409))

    _travel_to(deadline + timedelta(hours=1))
    who.reset()
    say(f"   the demo's clock moves ahead to {show(utcnow())} (Asia/Shanghai): applications have closed", **warn)
    done = _json(client.post(f"{GOV}/operator/notices/{notice['id']}/conclude", headers=who("bureau-admin"),
                             json={"reasons": "按专家评分均分确定"}))
    res = done["result"]
    listed = {a["number"]: a for a in _json(client.get(f"{GOV}/operator/notices/{notice['id']}/applications",
                                                       headers=who("bureau-admin")))}
    other = listed[apps["szcloud"]["number"]]
    say(f"   bureau-admin concludes: {res['selected_case']} ({zh(res['selected_org_id'])}) selected with mean score "
        f"{res['mean_score']:g}; {other['number']} {other['state']} (mean {other['scores']['mean']:g})", **ok)
    start_day = to_shanghai(utcnow()).date()
    end_day = to_shanghai(datetime.fromisoformat(res["publicity_ends_at"])).date()
    days = [start_day + timedelta(days=i) for i in range(1, (end_day - start_day).days + 1)]
    off = sum(not workdays.is_working_day(d) for d in days)
    say(f"   publicity: 7 working days by the Chinese calendar from {show(utcnow())}, ending "
        f"{res['publicity_ends_local']} (Asia/Shanghai): {len(days)} calendar days, {off} weekend or holiday "
        "days skipped", **ok)
    selected = apps["szdataops"]
    pub = _json(client.get(f"{PUBLIC}/operator/notices"))
    under = [p for p in pub["publicity"] if p["number"] == selected["number"]]
    say(f"   the public notices page (no login) lists {under[0]['number']} under publicity until "
        f"{under[0]['publicity_ends_local']}", **ok)
    obj = _json(client.post(f"{PUBLIC}/operator/applications/{selected['id']}/objections", json={
        "text": "该公司实际办公地不在本市，请核实其本地运营能力。", "contact": "13900000000"}))
    say(f"   an objection is filed on the public route (no login) -> objection {obj['objection']} {obj['state']}")
    case = _json(client.post(f"{GOV}/operator/applications/{selected['id']}/objections/{obj['objection']}/resolve",
                             headers=who("bureau-admin"), json={
                                 "upheld": False, "reasons": "经核查营业执照与社保缴纳记录，该公司注册及经营地均在本市"}))
    o = case["facts"]["objections"][0]
    say(f"   bureau-admin resolves it: {o['state']}, 「{o['resolution']}」", **ok)
    r = client.post(f"{GOV}/operator/applications/{selected['id']}/agreement", headers=who("bureau-admin"),
                    json={"revenue_distribution": OPERATOR_SHARES})
    say(f"   the agreement before publicity ends -> {_refusal(r, 140)}", **expect(r, 409))

    ends = datetime.fromisoformat(res["publicity_ends_at"])
    _travel_to(datetime.combine(to_shanghai(ends).date() + timedelta(days=1), time(9, 0), tzinfo=SHANGHAI))
    who.reset()
    say(f"   seven working days later: the demo's clock (a forward-only process clock) moves ahead to "
        f"{show(utcnow())} (Asia/Shanghai); chapter 6's worker has stopped, so no job is queued from here", **warn)
    ag = _json(client.post(f"{GOV}/operator/applications/{selected['id']}/agreement", headers=who("bureau-admin"),
                           json={"revenue_distribution": OPERATOR_SHARES}))
    for user in ("bureau-admin", "ops-admin"):
        acc = _json(client.post(f"{GOV}/agreements/{ag['id']}/accept", headers=who(user),
                                json={"text_sha256": ag["text_sha256"]}))
    shares = ag["terms"]["revenue_distribution"]["shares_pct"]
    say(f"   authorization agreement {ag['number']}: term {ag['starts_on']} to {ag['ends_on']} "
        f"({ag['terms']['term_years']} years); revenue shares departments {shares['provider_departments']}% / "
        f"operator {shares['operator']}% / partners {shares['partners']}% / public {shares['public']}%", **ok)
    say(f"   bureau-admin and ops-admin accept its text (SHA-256 {_short(ag['text_sha256'])}) -> {acc['state']}",
        **ok)
    r = client.post(f"{GOV}/partners/calls", headers=who("szcloud-admin"), json={
        "industry": "金融", "title": "招募", "term_months": 12, "conditions": ["-"], "materials": ["profile"],
        "deadline": str(to_shanghai(utcnow()).date() + timedelta(days=14))})
    say(f"   szcloud-admin (not authorized) publishes a partner call -> {_refusal(r, 120)}", **expect(r, 403))

    # --- 2. partner recruitment -----------------------------------------------------------------
    say("   partner recruitment", bold=True)
    call = _json(client.post(f"{GOV}/partners/calls", headers=who("ops-admin"), json={
        "industry": "金融", "title": "金融行业生态合伙人招募", "term_months": 36,
        "conditions": ["本市注册的独立法人", "具备金融风控模型研发能力", "设立数据安全负责人"],
        "materials": PARTNER_MATERIALS, "deadline": str(to_shanghai(utcnow()).date() + timedelta(days=14))}))
    say(f"   ops-admin publishes partner call {call['number']} for the {call['industry']} industry "
        f"({call['term_months']}-month term, {len(call['materials'])} materials, closing {call['deadline_local']})",
        **ok)
    fh = who("finrisk-admin")
    pa = _json(client.post(f"{GOV}/partners/applications", headers=fh, json={
        "call_id": call["id"], "title": "苏州金融风控科技 生态合伙人申请",
        "payload": {"profile": "小微企业信贷风控模型研发，12人数据团队，ISO 27001 认证"}}))
    for m in PARTNER_MATERIALS:
        _json(client.post(f"{GOV}/partners/applications/{pa['id']}/documents", headers=fh,
                          files={"file": (f"{m}.pdf", _pdf(m, "finrisk"), "application/pdf")}, data={"material": m}))
    pa = _json(client.post(f"{GOV}/partners/applications/{pa['id']}/submit", headers=fh, json={}))
    pa = _json(client.post(f"{GOV}/partners/applications/{pa['id']}/operator-review", headers=who("ops-admin"),
                           json={"decision": "approve", "reasons": "能力与安全条件符合招募要求"}))
    pa = _json(client.post(f"{GOV}/partners/applications/{pa['id']}/bureau-review", headers=who("bureau-reviewer"),
                           json={"decision": "approve"}))
    say(f"   finrisk-admin applies ({pa['number']}, {len(PARTNER_MATERIALS)} materials); ops-admin approves, "
        f"bureau-reviewer approves -> {pa['state']}", **ok)
    terms = {"data_scope": [{"resource": r} for r in RESOURCES],
             "use_boundary": "仅用于金融行业风控产品研发，不得超范围使用或向第三方提供",
             "development_duties": "每年至少上线一个经登记的数据产品", "quality": "产品可用率不低于99.5%",
             "revenue_share_bp": 2500, "exit_terms": "提前3个月书面通知，移交开发成果并销毁全部衍生数据",
             "security_duties": "落实数据安全制度，发生安全事件2小时内报告",
             "security_officer": {"name": "钱安", "contact": "qian.an@finrisk.example"}}
    pag = _json(client.post(f"{GOV}/partners/applications/{pa['id']}/agreement", headers=who("ops-admin"),
                            json={"terms": terms}))
    pag = _json(client.post(f"{GOV}/partners/applications/{pa['id']}/sign", headers=fh,
                            json={"text_sha256": pag["text_sha256"]}))
    t = pag["terms"]
    say(f"   partner agreement {pag['number']} ({pag['starts_on']} to {pag['ends_on']}): data scope "
        f"{', '.join(s['resource'] for s in t['data_scope'])}; revenue share {t['revenue_share_bp'] / 100:.0f}%; "
        f"security officer {t['security_officer']['name']}; signed by ops-admin and finrisk-admin -> {pag['state']}",
        **ok)

    # --- 3. scenario application, three levels ---------------------------------------------------
    say("   scenario application: provider departments → expert committee → bureau", bold=True)
    depts = {}
    for code in RESOURCES:
        res_ = _json(client.get(f"/api/v1/catalog/resources/{code}", headers=fh))
        depts[code] = by_id[res_["org_id"]]
    sc = _json(client.post(f"{GOV}/scenarios", headers=fh, json={"title": "小微企业纳税信用核验", "payload": SCENARIO}))
    sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/submit", headers=fh, json={}))
    say(f"   finrisk-admin submits {sc['number']} 「{sc['title']}」 for "
        + ", ".join(f"{c} ({depts[c]['name_zh']})" for c in RESOURCES)
        + f" -> {sc['state']}, due {sc['due_at_local']}", **ok)
    r = client.post(f"{GOV}/scenarios/{sc['id']}/bureau-review", headers=who("bureau-admin"),
                    json={"decision": "approve"})
    say(f"   bureau-admin approves now, skipping two levels -> {_refusal(r, 220)}", **expect(r, 409))
    r = client.post(f"{GOV}/scenarios/{sc['id']}/provider-review", headers=fh, json={"decision": "approve"})
    say(f"   finrisk-admin approves its own application -> {_refusal(r, 130)}", **expect(r, 403))
    for code in RESOURCES:
        sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/provider-review",
                               headers=who(f"{depts[code]['code']}-officer"),
                               json={"decision": "approve", "reasons": f"{code} 字段与用途相符"}))
    say(f"   {' and '.join(depts[c]['name_zh'] for c in RESOURCES)} approve -> {sc['state']} "
        f"(committee quorum {sc['committee']['quorum']})", **ok)
    votes = [("expert-1", "return", "请说明为何需要企业成立日期；按最小必要原则删减字段"),
             ("expert-2", "return", "安全措施需写明核验结果不落地保存"),
             ("expert-3", "approve", "")]
    for user, decision, reasons in votes:
        sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/expert-review", headers=who(user),
                               json={"decision": decision, "reasons": reasons}))
    say(f"   expert-1 and expert-2 return it, expert-3 approves -> {sc['state']} (2 of 3 votes): "
        f"「{votes[0][2]}」", **ok)
    sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/submit", headers=fh, json={"payload": REVISION}))
    say(f"   finrisk-admin drops establishment_date, adds the safeguards and resubmits -> {sc['state']}, "
        f"round {sc['round']} (the departments' approvals stand)", **ok)
    todo = _json(client.get(f"{GOV}/todo", headers=who("expert-2")))
    first = todo["cases"][0]
    say(f"   expert-2's to-do list: {len(todo['cases'])} case(s) awaiting the committee, "
        f"{first['number']} due {first['due_at_local']}; {todo['notifications']['unread']} unread notifications")
    for i in (1, 2, 3):
        sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/expert-review", headers=who(f"expert-{i}"),
                               json={"decision": "approve", "reasons": "修改后符合最小必要原则"}))
    state_after_experts = sc["state"]
    sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/bureau-review", headers=who("bureau-reviewer"),
                           json={"decision": "approve", "reasons": "同意开展该场景"}))
    ws_id = sc["facts"]["workspace_id"]
    say(f"   three experts approve -> {state_after_experts}; bureau-reviewer approves -> {sc['state']}: "
        f"workspace {ws_id} opens with exactly the approved scope:", **ok)
    eng = who("finrisk-eng")
    ws = _json(client.get(f"/api/v1/sandbox/workspaces/{ws_id}", headers=eng))
    for g in ws["resources"]:
        say(f"     {g['resource']:<22} {', '.join(f['name'] for f in g['fields'])}  [{'/'.join(g['share_modes'])}]")
    budgets = [b for b in _json(client.get("/api/v1/sandbox/budgets", headers=eng)) if b["period"] != "lifetime"]
    say("   privacy budget, the approved ε 0.5 added to each: "
        + "; ".join(f"{b['resource']} ε {b['epsilon_cap']:g} ({b['period']})" for b in budgets), **ok)

    # --- 4. product registration ----------------------------------------------------------------
    say("   product registration with the security self-review", bold=True)
    p = _json(client.post(f"{GOV}/products", headers=fh, json={
        "code": "tax_violation_verify", "workspace_id": ws_id, "name_zh": "企业涉税违法记录核验",
        "name_en": "Tax violation record check", "spec": PRODUCT_SPEC, "category": "industry",
        "price_fen": 200, "price_unit": "call", "pricing_basis": "成本加成：每次核验的计算、运维与安全成本",
        "scenario_case_id": sc["id"], "scope_of_use": "银行小微企业贷前审查中核验企业年度涉税违法记录",
        "manner_of_use": "API 逐次核验，只返回是/否", "personal_information": True,
        "test_params": {"year": 2025}}))
    sr = p["self_review"]
    passed = [t for t in sr["tests"] if t["result"] == "pass"]
    say(f"   finrisk-admin drafts {p['code']} 「{p['name_zh']}」 ({p['release_policy']}, {p['price']}) from "
        f"workspace {ws_id}, declaring that each call needs the subject's signed authorization "
        "(personal_information: true)", **ok)
    mock = next((t for t in sr["tests"] if t["name"].startswith("mock_release")), None)
    say(f"   the platform fills the self-review: {len(sr['tests'])} automated tests ran, {len(passed)} passed ("
        + ", ".join(t["name"] for t in sr["tests"]) + ")" + (f"; mock run: {mock['detail']}" if mock else ""),
        **dict(fg="green" if len(passed) == len(sr["tests"]) else "red"))
    out = sr["facts"]["outputs"][0]
    def lineage(c: dict) -> str:
        grades = ", ".join(f"{s['field']} {s.get('grade', '')}".strip() for s in c["sources"])
        return (f"{c['name']} = {grades} (passed through)" if c["passed_through"]
                else f"{c['name']} computed from {grades or 'constants'}")

    rows = ", ".join(f"{s['field']} {s.get('grade', '')}".strip() for s in out["influences"])
    say(f"   fields reaching the output {out['name']}: {'; '.join(lineage(c) for c in out['columns'])}; "
        f"deciding which rows count: {rows}; personal fields read: {len(out['personal_fields'])}")
    r = client.post(f"{GOV}/products/{p['id']}/submit", headers=fh)
    say(f"   submitting with the four risk sections unanswered -> {_refusal(r, 110)}", **expect(r, 422))
    _json(client.put(f"{GOV}/products/{p['id']}", headers=fh, json={"self_review": SELF_REVIEW}))
    p = _json(client.post(f"{GOV}/products/{p['id']}/submit", headers=fh))
    say(f"   finrisk-admin answers them and submits -> {p['case']['number']} {p['case']['state']}", **ok)
    p = _json(client.post(f"{GOV}/products/{p['id']}/check", headers=who("ops-staff"),
                          json={"decision": "approve", "reasons": "定价依据与自评报告完整"}))
    checked = p["case"]["state"]
    p = _json(client.post(f"{GOV}/products/{p['id']}/file", headers=who("bureau-reviewer"),
                          json={"decision": "approve", "reasons": "予以登记备案"}))
    say(f"   ops-staff checks it -> {checked}; bureau-reviewer files it -> {p['state']}, "
        f"registration number {p['registration_number']}", **ok)
    page = _json(client.get(f"{PUBLIC}/disclosure"))
    listed_p = next(x for x in page["products"] if x["registration_number"] == p["registration_number"])
    auth = page["authorized"][0]
    say(f"   public disclosure page (no login): operator {auth['operator']} ({auth['starts_on']} to "
        f"{auth['ends_on']}); {len(page['partners'])} partner(s); product {listed_p['registration_number']} "
        f"{listed_p['name_zh']} at {listed_p['price']}", **ok)

    # --- 5. usage agreement ---------------------------------------------------------------------
    say("   usage agreement", bold=True)
    ua = _json(client.post(f"{GOV}/agreements/usage", headers=who("scb-admin"), json={
        "product_id": p["id"], "scenario": PURPOSE, "purpose": "核验借款企业纳税合规", "delivery_method": "api"}))
    today = to_shanghai(utcnow()).date()
    ua = _json(client.put(f"{GOV}/agreements/{ua['id']}/terms", headers=who("ops-admin"), json={
        "delivery_method": "api", "pricing_method": "per_call", "price_fen": 180, "scenario": PURPOSE,
        "conditions": "仅用于贷前审查，须持有企业授权，不得转售或留存核验结果以外的信息",
        "starts_on": str(today), "ends_on": str(today + timedelta(days=364)),
        "security_duties": "专人管理接口密钥，调用日志留存三年", "breach_liability": "违约方赔偿全部损失并承担法律责任"}))
    for user in ("scb-admin", "ops-admin"):
        ua = _json(client.post(f"{GOV}/agreements/{ua['id']}/accept", headers=who(user),
                               json={"text_sha256": ua["text_sha256"]}))
    say(f"   scb-admin applies to buy it; ops-admin drafts the terms ({ua['terms']['pricing']['price']}, "
        f"{ua['starts_on']} to {ua['ends_on']}); both accept the text (SHA-256 {_short(ua['text_sha256'])}) "
        f"-> {ua['number']} {ua['state']}", **ok)

    def check(user: str, subject: str | None) -> dict:
        return _json(client.post(f"{GOV}/products/{p['id']}/call-check", headers=who(user),
                                 json={"subject_id": subject, "purpose": PURPOSE}))

    from authops.demo import _uscc

    ent_a, ent_b = _uscc("91320505MA1XK7D3Q"), _uscc("91320506MA1YT2P6R")
    c = check("pinsure-admin", ent_a)
    say(f"   pinsure-admin's call-check (no agreement) -> refused, {c['code']}: {c['reason']}",
        fg="green" if not c["allowed"] else "red")

    # --- 6. consent -----------------------------------------------------------------------------
    say("   the subject's authorization", bold=True)
    c = check("scb-dev", ent_a)
    say(f"   scb-dev's call-check about enterprise {ent_a} -> refused, {c['code']}: {c['reason']}",
        fg="green" if not c["allowed"] else "red")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from authops.platform.governance import consent as consent_mod

    key = Ed25519PrivateKey.generate()
    # The identity provider's side (outside the platform; here the embedded demo issuer): after checking
    # the enterprise's real-name authentication it certifies that this key is the enterprise's.
    certificate = consent_mod.issue_subject_certificate(
        consent_mod.demo_issuer_key(settings), subject_id=ent_a, subject_kind="enterprise",
        public_key=key.public_key(), valid_until=utcnow() + timedelta(days=365))
    consent_terms = {"product_id": p["id"], "subject_id": ent_a, "subject_kind": "enterprise", "purpose": PURPOSE,
                     "scope": ["has_tax_violation"], "subject_certificate": certificate,
                     "valid_from": utcnow().replace(microsecond=0).isoformat(),
                     "valid_until": (utcnow() + timedelta(days=180)).replace(microsecond=0).isoformat()}
    forged_key = Ed25519PrivateKey.generate()  # a key scb-dev made itself, "certified" by nobody trusted
    forged_cert = consent_mod.issue_subject_certificate(
        Ed25519PrivateKey.generate(), subject_id=ent_a, subject_kind="enterprise",
        public_key=forged_key.public_key(), valid_until=utcnow() + timedelta(days=365))
    forged = client.post(f"{GOV}/consents/text", headers=who("scb-dev"),
                         json={**consent_terms, "subject_certificate": forged_cert})
    say(f"   scb-dev tries its own key for the enterprise -> refused, {_refusal(forged)}",
        fg="green" if forged.status_code == 422 else "red")
    text = _json(client.post(f"{GOV}/consents/text", headers=who("scb-dev"), json=consent_terms))
    signature = base64.b64encode(key.sign(text["text"].encode())).decode()
    consent = _json(client.post(f"{GOV}/consents", headers=who("scb-dev"), json={
        **consent_terms, "signature": signature}))
    say(f"   the identity provider certifies the enterprise's Ed25519 key (demo issuer "
        f"{consent['subject_certificate']['issuer']}); the enterprise signs the consent text with it; scb-dev "
        f"records it -> consent {consent['id']} {consent['state']} until {consent['valid_until_local']}, kept under "
        f"the pseudonym {_short(consent['subject_key'])} (never the USCC)", **ok)
    c = check("scb-dev", ent_a)
    say(f"   scb-dev's call-check about {ent_a} -> allowed under {c.get('agreement')} and consent "
        f"{c.get('consent_id')}", fg="green" if c["allowed"] else "red")
    c = check("scb-dev", ent_b)
    say(f"   about {ent_b} (no consent) -> refused, {c['code']}: {c['reason']}",
        fg="green" if not c["allowed"] else "red")
    revocation = base64.b64encode(key.sign(consent["revocation_text"].encode())).decode()
    rv = _json(client.post(f"{PUBLIC}/consents/{consent['id']}/revoke", json={"signature": revocation}))
    say(f"   the enterprise revokes on the public route, signing the revocation text -> consent {rv['id']} "
        f"{rv['state']}", **ok)
    c = check("scb-dev", ent_a)
    say(f"   scb-dev's next call-check about {ent_a} -> refused, {c['code']}: {c['reason']}",
        fg="green" if not c["allowed"] else "red")

    # --- the audit trail ------------------------------------------------------------------------
    n, before = 0, None
    while True:
        params: dict[str, Any] = {"action": "gov.", "limit": 500}
        if before:
            params["before_seq"] = before
        page_ = _json(client.get("/api/v1/audit/events", headers=who("bureau-admin"), params=params))
        n += len(page_)
        if len(page_) < 500:
            break
        before = page_[-1]["seq"]
    say(f"   the audit trail holds {n} governance events (gov.*), each transition with actor, time, before and "
        "after states", **ok)
