"""The demo's products chapter: the plan's seven first products, registered and called.

Two partners build them: finrisk the enterprise and truck products, healthins the two medical
ones. Each partner signs a partner agreement for its data scope, files one scenario application
that passes the three-level review, and registers its products from the opened workspace with the
security self-review. The maintenance step builds each served product's answer set on a real
worker; two customers (the bank and the insurer) sign usage agreements, collect the subjects'
signed authorizations and call every product by API key; the medical-insurance bureau requests
the free supervision report. Each answer is printed beside a note of what stood behind it: how
many source rows of which resources the platform joined inside the domain (read here by the
narrator, never by the caller).
"""

from __future__ import annotations

import base64
import time as _time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core import db
from authops.core.clock import to_shanghai, utcnow
from authops.core.settings import Settings
from authops.demo.checks import demo_worker
from authops.demo.governance_story import _Logins, _json, _pdf, _refusal
from authops.products.catalog import PRODUCTS, ProductDef
from authops.sandbox.spec.models import parse_text

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

GOV = "/api/v1/governance"
PARTNERS = {
    "finrisk": ("金融与物流风控产品", ["bank_credit_assessment", "tech_finance", "bid_win_loan",
                                      "trading_limit_and_guarantee", "freight_truck_underwriting_pricing"]),
    "healthins": ("医疗保障数据产品", ["commercial_insurance_underwriting", "medical_insurance_spending_supervision"]),
}
CUSTOMERS = {  # customer -> (its admin and integrator, the products it buys, purpose of use)
    "scb": ("scb-admin", "scb-dev", ["bank_credit_assessment", "tech_finance", "bid_win_loan",
                                     "trading_limit_and_guarantee"], "小微企业贷前审查"),
    "pinsure": ("pinsure-admin", "pinsure-dev", ["commercial_insurance_underwriting",
                                                 "freight_truck_underwriting_pricing"], "保险核保定价"),
    "ybj": ("ybj-admin", "ybj-analyst", ["medical_insurance_spending_supervision"], "医保基金监管"),
}
SUBJECT_FIELD = {"enterprise": "uscc", "person": "id_number", "vehicle": "vin"}
SELF_REVIEW = {
    "beyond_purpose": "输入字段均在场景批准范围内；每次调用须有有效使用协议，需授权的产品须有主体签名授权。",
    "direct_exposure": "只输出评分、等级、区间、标志或差分隐私统计，不输出任何原始记录、金额、姓名或证件号。",
    "indirect_exposure": "评分经裁剪取整，统计加噪并设最小单元；答案预先计算，重复调用返回相同结果；调用全部审计。",
    "other_risks": "授权撤销后下一次调用即被拒绝；价格不高于登记价格；异常批量调用被实时拦截。",
}


def _spec(d: ProductDef) -> dict[str, Any]:
    return parse_text(d.spec_path.read_text(encoding="utf-8"))


def _scope(codes: list[str]) -> list[dict[str, Any]]:
    """The scenario's resources: every field the products read, the share modes their releases need."""
    fields: dict[str, set[str]] = {}
    modes: dict[str, set[str]] = {}
    for code in codes:
        d = PRODUCTS[code]
        for resource, names in d.fields_read.items():
            fields.setdefault(resource, set()).update(names)
            modes.setdefault(resource, set()).add(d.share_mode)
    eps = {"medical_insurance_settlements": 8.0}  # two DP report releases (epsilon 1 + 3 each)
    return [{"resource": r, "fields": sorted(f), "share_modes": sorted(modes[r]), "epsilon": eps.get(r, 0.5)}
            for r, f in sorted(fields.items())]


def _sources(settings: Settings) -> dict[str, pa.Table]:
    """The loaded datasets (the narrator's view inside the domain, for the notes)."""
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog.models import Dataset, DataResource

    needed = {r for d in PRODUCTS.values() for r in d.resources}
    store = get_object_store(settings)
    out = {}
    with db.session_scope(settings) as session:
        for res in session.query(DataResource).filter(DataResource.code.in_(needed)):
            if res.dataset_id:
                out[res.code] = read_dataset(store, session.get(Dataset, res.dataset_id).object_key)
    return out


def _behind(d: ProductDef, subject: str, tables: dict[str, pa.Table]) -> str:
    """How many rows about the subject each of the product's resources holds."""
    key = SUBJECT_FIELD[d.subject_kind]
    parts = []
    for resource in d.resources:
        t = tables.get(resource)
        if t is None or key not in t.column_names:
            continue
        n = pc.sum(pc.equal(t.column(key), subject)).as_py() or 0
        parts.append(f"{resource} {n}")
    return "; ".join(parts)


def _pick_subjects(tables: dict[str, pa.Table]) -> dict[str, list[str]]:
    """Two subjects of each kind from the synthetic city: one with adverse records, one without."""
    def by_count(resource: str, key: str, universe: pa.Array) -> list[str]:
        counts = {}
        t = tables[resource]
        vc = pc.value_counts(t.column(key))
        counts = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))
        ids = [v for v in universe.to_pylist() if v]
        busy = max(ids, key=lambda v: counts.get(v, 0))
        quiet = next(v for v in ids if counts.get(v, 0) == 0)
        return [busy, quiet]

    firms = by_count("court_cases", "uscc", tables["enterprise_basic_info"].column("uscc").combine_chunks())
    trucks = by_count("truck_violations", "vin", tables["vehicle_basic_info"].column("vin").combine_chunks())
    enrolled = tables["medical_insurance_enrollment"].column("id_number").combine_chunks()
    persons = by_count("medical_insurance_settlements", "id_number", pc.unique(enrolled))
    return {"enterprise": firms, "vehicle": trucks, "person": persons}


def _bid_claims(tables: dict[str, pa.Table]) -> tuple[str, str]:
    """A won tender of the synthetic city: (the winner's USCC, the project number)."""
    basic = tables["enterprise_basic_info"]
    uscc_of = dict(zip(basic.column("enterprise_name").to_pylist(), basic.column("uscc").to_pylist()))
    t = tables["tendering_bidding_records"]
    for name, project in zip(t.column("winning_bidder").to_pylist(), t.column("project_number").to_pylist()):
        if name in uscc_of and project:
            return uscc_of[name], str(project)
    raise RuntimeError("the synthetic city has no won tender")


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None]
        ) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """The chapter; returns each customer's API-key headers and the subjects called (for billing)."""
    ok = dict(fg="green")
    who = _Logins(client, password)
    orgs = {o["code"]: o for o in _json(client.get("/api/v1/orgs", headers=who("bureau-admin")))}
    by_id = {o["id"]: o for o in orgs.values()}
    today = to_shanghai(utcnow()).date()

    # --- partner agreements covering the products' data ------------------------------------------
    say("   partners and their data scope", bold=True)
    call = _json(client.post(f"{GOV}/partners/calls", headers=who("ops-admin"), json={
        "industry": "金融与保险", "title": "首批数据产品生态合伙人招募（二期）", "term_months": 36,
        "conditions": ["本市注册的独立法人", "具备风控或精算模型研发能力", "设立数据安全负责人"],
        "materials": ["business_licence", "security_commitment"], "deadline": str(today + timedelta(days=14))}))
    scopes: dict[str, dict] = {}
    for partner, (title, codes) in PARTNERS.items():
        h = who(f"{partner}-admin")
        scope = _scope(codes)
        scopes[partner] = {"resources": scope, "codes": codes, "title": title}
        app = _json(client.post(f"{GOV}/partners/applications", headers=h, json={
            "call_id": call["id"], "title": f"{by_id_code(orgs, partner)} {title}",
            "payload": {"profile": f"{title}研发团队"}}))
        for m in call["materials"]:
            _json(client.post(f"{GOV}/partners/applications/{app['id']}/documents", headers=h,
                              files={"file": (f"{m}.pdf", _pdf(m, partner), "application/pdf")}, data={"material": m}))
        app = _json(client.post(f"{GOV}/partners/applications/{app['id']}/submit", headers=h, json={}))
        _json(client.post(f"{GOV}/partners/applications/{app['id']}/operator-review", headers=who("ops-admin"),
                          json={"decision": "approve"}))
        _json(client.post(f"{GOV}/partners/applications/{app['id']}/bureau-review", headers=who("bureau-reviewer"),
                          json={"decision": "approve"}))
        terms = {"data_scope": [{"resource": r["resource"]} for r in scope],
                 "use_boundary": f"仅用于{title}研发，不得超范围使用或向第三方提供",
                 "development_duties": "按登记的产品说明持续维护", "quality": "产品可用率不低于99.5%",
                 "revenue_share_bp": 2000, "exit_terms": "移交开发成果并销毁全部衍生数据",
                 "security_duties": "发生安全事件2小时内报告",
                 "security_officer": {"name": "安全负责人", "contact": f"security@{partner}.example"}}
        ag = _json(client.post(f"{GOV}/partners/applications/{app['id']}/agreement", headers=who("ops-admin"),
                               json={"terms": terms}))
        ag = _json(client.post(f"{GOV}/partners/applications/{app['id']}/sign", headers=h,
                               json={"text_sha256": ag["text_sha256"]}))
        say(f"   {partner}-admin: partner agreement {ag['number']} -> {ag['state']}, data scope {len(scope)} "
            f"resources for {len(codes)} products", **ok)

    # --- one scenario per partner, three levels ----------------------------------------------------
    say("   scenario applications: provider departments → expert committee → bureau", bold=True)
    for partner, sc_info in scopes.items():
        h = who(f"{partner}-admin")
        names = "、".join(PRODUCTS[c].name_zh for c in sc_info["codes"])
        payload = {"goal": f"{sc_info['title']}：{names}", "resources": sc_info["resources"],
                   "product_design": "; ".join(f"{PRODUCTS[c].name_zh}: {PRODUCTS[c].description[:60]}"
                                               for c in sc_info["codes"]),
                   "processing_method": "沙箱内声明式计算，只输出评分、等级、区间、标志或差分隐私统计",
                   "security_measures": "数据不出域；调用逐次鉴权、授权核验并留痕；答案预先计算、结果取整",
                   "technical_route": "声明式规格 → 发布闸门 → 预计算答案集 → API 调用",
                   "expected_benefit": "减少企业与个人重复提交材料，提高审批效率"}
        sc = _json(client.post(f"{GOV}/scenarios", headers=h, json={"title": sc_info["title"], "payload": payload}))
        sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/submit", headers=h, json={}))
        depts = sorted({by_id[_json(client.get(f"/api/v1/catalog/resources/{r['resource']}", headers=h))["org_id"]]
                        ["code"] for r in sc_info["resources"]})
        for dept in depts:
            sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/provider-review", headers=who(f"{dept}-officer"),
                                   json={"decision": "approve", "reasons": "字段与用途相符，符合最小必要原则"}))
        for i in (1, 2, 3):
            sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/expert-review", headers=who(f"expert-{i}"),
                                   json={"decision": "approve", "reasons": "技术路线与安全措施可行"}))
        sc = _json(client.post(f"{GOV}/scenarios/{sc['id']}/bureau-review", headers=who("bureau-reviewer"),
                               json={"decision": "approve", "reasons": "同意开展"}))
        sc_info["case"], sc_info["ws"] = sc, sc["facts"]["workspace_id"]
        say(f"   {partner}-admin's {sc['number']} 「{sc_info['title']}」: {len(depts)} provider departments, "
            f"3 experts and the bureau approve -> {sc['state']}, workspace {sc_info['ws']} "
            f"({len(sc_info['resources'])} resources)", **ok)
    # DP group selection spends delta as well: the bureau adds it to the approved epsilon
    b = next(x for x in _json(client.put("/api/v1/sandbox/budgets", headers=who("bureau-admin"), json={
        "org_id": orgs["healthins"]["id"], "resource": "medical_insurance_settlements", "epsilon": 8.0,
        "delta": 1e-5, "note": "医保监管报告：差分隐私分组选择所需的 delta"})) if x["period"] != "lifetime")
    say(f"   bureau-admin sets healthins' budget on medical_insurance_settlements to ε {b['epsilon_cap']:g}, "
        f"δ {b['delta_cap']:g} (private group selection spends δ)", **ok)

    # --- registration --------------------------------------------------------------------------------
    say("   the seven products registered with their security self-reviews", bold=True)
    registered: dict[str, dict] = {}
    for partner, sc_info in scopes.items():
        h = who(f"{partner}-admin")
        for code in sc_info["codes"]:
            d = PRODUCTS[code]
            p = _json(client.post(f"{GOV}/products", headers=h, json={
                "code": code, "workspace_id": sc_info["ws"], "name_zh": d.name_zh, "name_en": d.name_en,
                "spec": _spec(d), "category": d.category, "price_fen": d.price_fen, "price_unit": d.price_unit,
                "pricing_basis": d.pricing_basis, "scenario_case_id": sc_info["case"]["id"],
                "scope_of_use": d.description[:500], "manner_of_use": "API 逐次调用" if d.invocation == "sync"
                else "异步统计报告", "consent_required": d.consent_required, "test_params": dict(d.params),
                "self_review": SELF_REVIEW}))
            tests = p["self_review"]["tests"]
            passed = sum(t["result"] == "pass" for t in tests)
            p = _json(client.post(f"{GOV}/products/{p['id']}/submit", headers=h))
            _json(client.post(f"{GOV}/products/{p['id']}/check", headers=who("ops-staff"),
                              json={"decision": "approve", "reasons": "定价依据与自评报告完整"}))
            p = _json(client.post(f"{GOV}/products/{p['id']}/file", headers=who("bureau-reviewer"),
                                  json={"decision": "approve", "reasons": "予以登记备案"}))
            registered[code] = p
            say(f"   {p['registration_number']}  {d.name_zh:<12} {p['release_policy']:<9} {p['price']:<14} "
                f"self-review {passed}/{len(tests)} tests passed", **ok)

    # --- answer sets, built ahead on a worker ------------------------------------------------------
    say("   precomputed answers (a job per product, on a real worker)", bold=True)
    from authops.platform.products import precompute

    started = _time.monotonic()
    with demo_worker(settings, concurrency=2):
        queued = precompute.refresh_due(settings)
        _wait_answer_sets(settings, [registered[c]["id"] for c in registered if PRODUCTS[c].invocation == "sync"])
        say(f"   the maintenance step queued {len(queued)} builds; all answer sets built in "
            f"{_time.monotonic() - started:.0f} s", **ok)
        with db.session_scope(settings) as session:
            for code, p in registered.items():
                a = precompute.current(session, p["id"])
                if a is not None:
                    say(f"     {code:<36} version {a.version}, {a.rows:>6,} subjects answered from "
                        f"{len(a.sources)} resources")

        # --- agreements, keys, consent ---------------------------------------------------------------
        say("   usage agreements, API keys and the subjects' authorizations", bold=True)
        keys: dict[str, dict[str, str]] = {}
        for customer, (admin, _dev, codes, purpose) in CUSTOMERS.items():
            for code in codes:
                d, p = PRODUCTS[code], registered[code]
                ua = _json(client.post(f"{GOV}/agreements/usage", headers=who(admin), json={
                    "product_id": p["id"], "scenario": purpose, "purpose": purpose, "delivery_method": "api"}))
                ua = _json(client.put(f"{GOV}/agreements/{ua['id']}/terms", headers=who("ops-admin"), json={
                    "delivery_method": "api", "pricing_method": "free" if d.free else "per_call",
                    "price_fen": d.price_fen, "scenario": purpose, "conditions": f"仅用于{purpose}",
                    "starts_on": str(today), "ends_on": str(today + timedelta(days=364)),
                    "security_duties": "专人管理接口密钥", "breach_liability": "违约方赔偿全部损失"}))
                for user in (admin, "ops-admin"):
                    ua = _json(client.post(f"{GOV}/agreements/{ua['id']}/accept", headers=who(user),
                                           json={"text_sha256": ua["text_sha256"]}))
            key = _json(client.post("/api/v1/api-keys", headers=who(admin),
                                    json={"name": f"{customer} integration", "scopes": ["product.call"]}))
            keys[customer] = {"Authorization": f"Bearer {key['key']}"}
            say(f"   {admin}: {len(codes)} usage agreements active; API key {key['prefix']}… for the integration",
                **ok)

        tables = _sources(settings)
        subjects = _pick_subjects(tables)
        consented = _consents(settings, client, who, registered, subjects, tables)
        say(f"   {consented} signed authorizations recorded (enterprises for the bank, persons for the insurer), "
            "each certified by the identity provider", **ok)

        # --- calls ----------------------------------------------------------------------------------
        say("   every product called (answers beside what stood behind them, seen only inside the domain)",
            bold=True)
        for customer, (_admin, _dev, codes, purpose) in CUSTOMERS.items():
            for code in codes:
                d = PRODUCTS[code]
                if d.invocation != "sync":
                    continue
                for subject in _subjects_for(d, subjects, tables):
                    r = client.post(f"/api/v1/products/{code}/calls", headers=keys[customer],
                                    json={"subject": subject, "purpose": purpose})
                    body = _json(r)
                    ans = _brief(body["answer"])
                    say(f"   {customer} {code} {_mask(subject)} -> {ans}  [{body['registration_number']}, "
                        f"{body['metered']['amount_fen']} fen]", **ok)
                    say(f"        behind it: {_behind(d, subject.split('|')[0], tables)}")
        r = client.post("/api/v1/products/bank_credit_assessment/calls", headers=keys["pinsure"],
                        json={"subject": subjects["enterprise"][0], "purpose": "保险核保定价"})
        say(f"   pinsure calls the bank's credit product (no agreement) -> {_refusal(r, 120)}",
            fg="green" if r.status_code == 403 else "red")
        stranger = subjects["enterprise"][1] if len(subjects["enterprise"]) > 1 else subjects["enterprise"][0]
        r = client.post("/api/v1/products/tech_finance/calls", headers=keys["scb"],
                        json={"subject": _unconsented(tables, stranger), "purpose": "小微企业贷前审查"})
        say(f"   scb asks about an enterprise that has not authorized it -> {_refusal(r, 120)}",
            fg="green" if r.status_code == 403 else "red")
        r = client.post("/api/v1/products/tech_finance/calls", headers={**keys["scb"], "Content-Type": "application/json"},
                        content=b'{"subject": "' + b"9" * (settings.max_body_bytes + 1) + b'"}')
        say(f"   scb sends a call body over {settings.max_body_bytes // 1024 // 1024} MiB -> {_refusal(r, 120)}",
            fg="green" if r.status_code == 413 else "red")
        # A batch upload the customer retries (it never saw the answer): the Idempotency-Key makes it one batch.
        scb_purpose = CUSTOMERS["scb"][3]
        listed = ("subject\n" + "\n".join(subjects["enterprise"][:3]) + "\n").encode()
        sent = [client.post("/api/v1/products/bank_credit_assessment/batches",
                            headers={**keys["scb"], "Idempotency-Key": "scb-batch-0001"}, data={"purpose": scb_purpose},
                            files={"file": ("subjects.csv", listed, "text/csv")}) for _ in range(2)]
        same = sent[1].status_code == 200 and _json(sent[1])["id"] == _json(sent[0])["id"]
        say(f"   scb uploads a batch of 3 enterprises, then retries the upload with the same Idempotency-Key -> "
            f"{sent[0].status_code}, then {sent[1].status_code} {'the same batch, charged once' if same else 'A SECOND BATCH'}",
            fg="green" if sent[0].status_code == 202 and same else "red")

        _joint_model(client, who, keys, subjects, tables, say)

        # --- the free supervision report --------------------------------------------------------------
        say("   the medical-insurance bureau's supervision report (differentially private, free)", bold=True)
        code = "medical_insurance_spending_supervision"
        rep = _json(client.post(f"/api/v1/products/{code}/reports", headers=keys["ybj"],
                                json={"report": "institution_billing", "purpose": "医保基金监管"}))
        deadline = _time.monotonic() + 300
        while rep["state"] in ("queued", "running") and _time.monotonic() < deadline:
            _time.sleep(0.5)
            rep = _json(client.get(f"/api/v1/products/{code}/reports/{rep['id']}", headers=keys["ybj"]))
        rows = rep.get("rows") or []
        flagged = [r_["designated_institution_code"] for r_ in rows if r_["billing_flag"] == "anomalous"]
        say(f"   report {rep['id']} {rep['state']}: {len(rows)} institutions released (each with ≥ "
            f"{rep.get('privacy', {}).get('min_cell')} person-months, ε {rep.get('privacy', {}).get('epsilon')}), "
            f"flagged as anomalous billing: {', '.join(flagged) or 'none'}",
            fg="green" if rep["state"] == "done" else "red")
        again = _json(client.post(f"/api/v1/products/{code}/reports", headers=keys["ybj"],
                                  json={"report": "institution_billing"}))
        say(f"   asked again -> {again['state']} at once with the same figures "
            f"({'identical' if again.get('rows') == rows else 'DIFFERENT'}): no new budget spent, no noise to "
            "average away", fg="green" if again.get("rows") == rows else "red")
    _ratings(client, who, say)
    return keys, subjects


def _ratings(client, who, say: Callable[..., None]) -> None:
    """After use, the customers rate what they used (the assessment's user satisfaction)."""
    ratings = [("scb-admin", "bank_credit_assessment", 5, "结果稳定，审批效率显著提升"),
               ("scb-admin", "tech_finance", 4, "科技标签有用，希望增加更多维度"),
               ("pinsure-admin", "commercial_insurance_underwriting", 4, "核保时效提升"),
               ("pinsure-admin", "freight_truck_underwriting_pricing", 5, "定价因子区分度好"),
               ("ybj-admin", "medical_insurance_spending_supervision", 5, "异常机构线索准确")]
    for user, code, score, comment in ratings:
        _json(client.put(f"/api/v1/assessment/ratings/{code}", headers=who(user),
                         json={"score": score, "comment": comment}))
    r = client.put("/api/v1/assessment/ratings/bid_win_loan", headers=who("pinsure-admin"), json={"score": 1})
    say(f"   the customers rate what they used ({len(ratings)} ratings, mean "
        f"{sum(x[2] for x in ratings) / len(ratings):.1f} of 5); pinsure rating a product it never used -> "
        f"{_refusal(r, 100)}", fg="green" if r.status_code == 403 else "red")


def _joint_model(client, who, keys: dict[str, dict[str, str]], subjects: dict[str, list[str]],
                 tables: dict[str, pa.Table], say: Callable[..., None]) -> None:
    """The bank's own loan outcomes train a model inside; only metrics and a scoring endpoint leave."""
    from authops.platform.products.joint_synth import labels_csv, synthetic_labels

    ok = dict(fg="green")
    say("   joint modelling: the bank's loan outcomes stay inside", bold=True)
    labels = synthetic_labels(tables, 800, seed=1)
    bad = sum(y for _, y in labels)
    m = _json(client.post("/api/v1/products/joint-models", headers=keys["scb"], data={"name": "小微贷款违约模型"},
                          files={"file": ("loan-outcomes.csv", labels_csv(labels), "text/csv")}))
    say(f"   scb uploads {len(labels)} loan outcomes ({bad} went bad), encrypted into the sandbox -> model "
        f"{m['id']} {m['state']}", **ok)
    deadline = _time.monotonic() + 300
    while m["state"] in ("queued", "training", "running") and _time.monotonic() < deadline:
        _time.sleep(0.5)
        m = _json(client.get(f"/api/v1/products/joint-models/{m['id']}", headers=keys["scb"]))
    mt, bl = m.get("metrics") or {}, m.get("baseline_metrics") or {}
    say(f"   trained inside on {len(m.get('features') or [])} public-data features ({', '.join((m.get('features') or [])[:4])}, …), {m.get('matched')} matched firms; holdout of "
        f"{mt.get('holdout')}: AUC {mt.get('auc')} / KS {mt.get('ks')} against the label-free credit score's "
        f"AUC {bl.get('auc')} / KS {bl.get('ks')}",
        fg="green" if m["state"] == "ready" and (mt.get("auc") or 0) > (bl.get("auc") or 1) else "red")
    firm = subjects["enterprise"][0]
    r = client.post(f"/api/v1/products/joint-models/{m['id']}/scores", headers=keys["scb"],
                    json={"subject": firm, "purpose": "小微企业贷前审查"})
    body = _json(r)
    say(f"   scb scores {_mask(firm)} with its own model -> score {body.get('score')}, grade {body.get('grade')}",
        **ok)
    peek = client.get(f"/api/v1/products/joint-models/{m['id']}", headers=who("ops-admin"))
    other = client.post(f"/api/v1/products/joint-models/{m['id']}/scores", headers=keys["pinsure"],
                        json={"subject": firm, "purpose": "核保"})
    say(f"   the operator reads the bank's model -> {peek.status_code}; the insurer scores with it -> "
        f"{other.status_code}; no route returns the labels or the coefficients to anyone",
        fg="green" if peek.status_code in (403, 404) and other.status_code in (403, 404) else "red")


def by_id_code(orgs: dict[str, dict], code: str) -> str:
    return orgs[code]["name_zh"]


def _wait_answer_sets(settings: Settings, product_ids: list[int], timeout: float = 600) -> None:
    from authops.platform.products import precompute

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        with db.session_scope(settings) as session:
            if all(precompute.current(session, pid) is not None for pid in product_ids):
                return
        _time.sleep(0.5)
    raise RuntimeError("answer sets were not built in time")


def _subjects_for(d: ProductDef, subjects: dict[str, list[str]], tables: dict[str, pa.Table]) -> list[str]:
    if d.code == "bid_win_loan":
        uscc, project = _bid_claims(tables)
        return [f"{uscc}|{project}"]
    return subjects[d.subject_kind]


def _unconsented(tables: dict[str, pa.Table], avoid: str) -> str:
    ids = tables["enterprise_basic_info"].column("uscc").to_pylist()
    return ids[len(ids) // 2] if ids[len(ids) // 2] != avoid else ids[len(ids) // 2 + 1]


def _mask(subject: str) -> str:
    head = subject.split("|")[0]
    return head[:4] + "…" + head[-3:]


def _brief(answer: dict[str, Any]) -> str:
    keep = [f"{k}={v}" for k, v in answer.items() if v not in (None, [], "") and k != "status"]
    return ", ".join(keep)[:150]


def _consents(settings: Settings, client, who, registered: dict[str, dict], subjects: dict[str, list[str]],
              tables: dict[str, pa.Table]) -> int:
    """Each consent-requiring product's subjects sign an authorization for its customer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from authops.platform.governance import consent as consent_mod

    n = 0
    issuer = consent_mod.demo_issuer_key(settings)
    for customer, (_admin, dev, codes, purpose) in CUSTOMERS.items():
        for code in codes:
            d = PRODUCTS[code]
            if not d.consent_required:
                continue
            for subject in _subjects_for(d, subjects, tables):
                key = Ed25519PrivateKey.generate()
                cert = consent_mod.issue_subject_certificate(
                    issuer, subject_id=subject, subject_kind=d.subject_kind, public_key=key.public_key(),
                    valid_until=utcnow() + timedelta(days=365))
                terms = {"product_id": registered[code]["id"], "subject_id": subject, "subject_kind": d.subject_kind,
                         "purpose": purpose, "scope": [o.name for o in d.spec.outputs], "subject_certificate": cert,
                         "valid_from": utcnow().replace(microsecond=0).isoformat(),
                         "valid_until": (utcnow() + timedelta(days=180)).replace(microsecond=0).isoformat()}
                text = _json(client.post(f"{GOV}/consents/text", headers=who(dev), json=terms))
                sig = base64.b64encode(key.sign(text["text"].encode())).decode()
                _json(client.post(f"{GOV}/consents", headers=who(dev), json={**terms, "signature": sig}))
                n += 1
    return n
