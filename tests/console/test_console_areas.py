"""The console's area pages over real data: the bureau (operator renewal, price caps, maximum revenue,
privacy budgets, assessments, review statistics), the partner (a scenario application and a product
registration drafted and submitted in forms), the customer (API keys, consents, batch progress,
marketplace), the operator (books, reconciliation, settlement) and the auditor (log verification,
reports). Each form goes through the API's service, refuses what the API refuses and needs its CSRF
token (tests/console/test_console_security.py walks every POST route for that)."""

from __future__ import annotations

import json
import re
from datetime import date

from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.billing.models import MaxRevenue, PriceCap, Settlement
from authops.billing.prices import year_of
from authops.core.jobs import service as job_service
from authops.platform.assessment import service as assessment
from authops.platform.assessment.models import Assessment
from authops.platform.governance import operator, scenarios, workflow
from authops.platform.governance.models import Case, Consent, Product
from authops.platform.identity.models import ApiKey
from authops.platform.products.models import ProductBatch
from authops.policies import budget
from tests.console.world import AWAY_PRIVATE, console_login
from tests.platform.governance.matrix_products import ANSWERS, record_spec
from tests.platform.governance.matrix_scenarios import actor


def _post(web, path: str, csrf: str, **form):
    return web.post(path, data={"csrf": csrf, **form}, follow_redirects=False)


def _fresh(session, model, key):
    session.expire_all()
    return session.get(model, key)


def _svg(html: str, label: str) -> str:
    return re.search(rf'<svg class="chart" role="img" aria-label="{re.escape(label)}".*?</svg>', html, re.S).group(0)


def test_the_bureau_decides_a_renewal_sets_caps_budgets_and_signs_an_assessment(web, world, session):
    op, bureau = world.orgs["operator"], world.orgs["bureau"]
    op_user, auth = world.users["operator_admin"], world.billing.authorization
    # A submitted renewal of the operator's authorization (its filing rules are tested in tests/platform/governance).
    case = workflow.open_case(session, kind=operator.RENEWAL, applicant_org_id=op.id, title="授权运营续期申请",
                              payload={}, actor=actor(op_user), awaiting_orgs=[op.id],
                              facts={"agreement_id": auth.id, "agreement": auth.number})
    workflow.transition(session, case, "submit", actor=actor(op_user), awaiting_orgs=[bureau.id])
    session.commit()

    csrf = console_login(web, world.users["bureau_admin"].username)
    home = web.get("/console/").text
    assert f'href="/console/operators#case-{case.id}"' in home  # the to-do list links the case to its page
    assert re.search(r'href="/console/operators">[^<]+</a> <span class="count waiting">\(1\)', home)
    page = web.get("/console/operators").text
    assert f'id="case-{case.id}"' in page and f'action="/console/operators/cases/{case.id}/decision"' in page
    assert auth.number in page
    decision = f"/console/operators/cases/{case.id}/decision"
    assert _post(web, decision, csrf, decision="reject", reasons="").status_code == 422  # reasons are required
    assert _fresh(session, Case, case.id).state == "submitted"
    assert _post(web, decision, csrf, decision="reject", reasons="运营报告未覆盖安全事件处置").status_code == 303
    assert _fresh(session, Case, case.id).state == "rejected"
    page = web.get("/console/operators").text
    assert "运营报告未覆盖安全事件处置" in page and f'action="{decision}"' not in page

    # A price cap typed in yuan is stored in fen, shown on the page and published on the disclosure.
    paid = world.billing.products["paid"]
    assert _post(web, "/console/price-caps", csrf, product_id=str(paid.id), unit="per_call", cap="12.505").status_code == 422
    assert _post(web, "/console/price-caps", csrf, product_id=str(paid.id), unit="per_call", cap="12.50",
                 reason="成本核定").status_code == 303
    cap = session.exec(select(PriceCap).where(PriceCap.product_id == paid.id)).one()
    assert cap.cap_fen == 1250 and cap.set_by == world.users["bureau_admin"].username
    shown = web.get("/console/price-caps", params={"done": "cap"}).text
    assert re.search(rf'id="product-{paid.id}">.*?上限 12\.50', shown, re.S) and 'role="status"' in shown
    assert "12.50" in web.get("/console/disclosure").text
    year = year_of()
    assert _post(web, "/console/price-caps/max-revenue", csrf, operator_org_id=str(op.id), year=str(year),
                 amount="1,000,000", drc_org_id=str(world.orgs["drc"].id)).status_code == 303
    assert session.exec(select(MaxRevenue).where(MaxRevenue.operator_org_id == op.id)).one().amount_fen == 100_000_000

    # A privacy budget for the partner, and its burn on the chart.
    partner, code = world.orgs["partner"], world.lab["code"]
    assert _post(web, "/console/budgets", csrf, org_id=str(world.orgs["customer"].id), resource=code,
                 epsilon="2").status_code == 422  # budgets are for partners
    assert _post(web, "/console/budgets", csrf, org_id=str(partner.id), resource=code, epsilon="4",
                 note="年度预算").status_code == 303
    assert [b["epsilon_cap"] for b in budget.balances(session, partner.id, code)] == [4.0]
    assert f"{partner.code} {code}"[:11] in _svg(web.get("/console/budgets").text, "隐私预算消耗（%）")

    # The year's assessment: computed, then signed; the auditor then finds its report.
    last = year - 1
    assessment.set_year_settings(session, actor=audit_log.SYSTEM, year=last,
                                 metrics_={"revenue": {"weight": 1.0, "target": 100_000}}, excellent=90, qualified=60)
    session.commit()
    assert _post(web, "/console/assessments", csrf, operator_org_id=str(op.id), year=str(last)).status_code == 303
    run = session.exec(select(Assessment).where(Assessment.operator_org_id == op.id)).one()
    assert f'id="assessment-{run.id}"' in web.get("/console/assessments", params={"year": last}).text
    assert _post(web, f"/console/assessments/{run.id}/sign", csrf).status_code == 303
    assert _fresh(session, Assessment, run.id).state == "signed"
    console_login(web, world.users["auditor"].username)
    assert f"/console/audit-reports/assessments/{run.id}.pdf" in web.get("/console/audit-reports",
                                                                          params={"year": last}).text
    html = web.get(f"/console/audit-reports/assessments/{run.id}.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")

    # Others may not: a bureau reviewer holds no authorization.manage, an operator no price.cap.set.
    csrf = console_login(web, world.users["bureau_reviewer"].username)
    assert _post(web, decision, csrf, decision="approve").status_code == 403
    csrf = console_login(web, op_user.username)
    assert _post(web, "/console/price-caps", csrf, product_id=str(paid.id), unit="per_call", cap="1").status_code == 403


def test_review_statistics_count_decided_applications_and_days_per_level(web, world, session):
    console_login(web, world.users["bureau_reviewer"].username)
    weekly = _svg(web.get("/console/review-stats").text, "每周办结的场景申请")
    assert weekly.count(">0<") == 8  # nothing decided yet
    scenarios.withdraw(session, world.away_scenario, actor=actor(world.away_users["partner2"]), reason="改期申请")
    session.commit()
    page = web.get("/console/review-stats").text
    assert _svg(page, "每周办结的场景申请").count(">1<") == 1  # this week's bar
    assert _svg(page, "每月办结的场景申请").count(">1<") == 1
    timeliness = _svg(page, "各级审核用时（工作日）与期限")
    assert "0 / 10" in timeliness  # decided the same day, against the 10 working days allowed
    row = re.search(r"<td>数源部门初审</td><td>(\d+)</td>", page)
    assert row and int(row.group(1)) == 2  # both applications entered the provider review
    assert "各级审核用时" in web.get("/console/").text  # on the bureau's home too


def test_a_partner_drafts_and_submits_a_scenario_and_a_product_in_forms(web, world, session):
    code = world.lab["code"]
    csrf = console_login(web, world.users["partner_admin"].username)
    form = web.get("/console/scenarios/new").text
    assert f'value="{code}/id_number"' in form and f'value="{code}/verify"' in form
    parts = {p: f"{p} 的说明" for p in scenarios.PARTS}
    request = {"resource": code, "field": [f"{code}/id_number", f"{code}/paid"], "mode": f"{code}/verify",
               "eps_for": code, "eps": "0.5"}
    incomplete = _post(web, "/console/scenarios/new", csrf, title="缺少目标的申请", **{**parts, "goal": ""}, **request)
    assert incomplete.status_code == 303
    draft_id = int(incomplete.headers["location"].rsplit("/", 1)[1])
    refused = _post(web, f"/console/scenarios/{draft_id}/submit", csrf)
    assert refused.status_code == 422 and "payload.goal" in refused.text
    assert _fresh(session, Case, draft_id).state == "draft"

    r = _post(web, "/console/scenarios/new", csrf, title="缴费核验场景", **parts, **request)
    case_id = int(r.headers["location"].rsplit("/", 1)[1])
    page = web.get(f"/console/scenarios/{case_id}").text
    assert "草稿" in page and 'id="submit-scenario"' in page
    assert _post(web, f"/console/scenarios/{case_id}/submit", csrf).status_code == 303
    case = _fresh(session, Case, case_id)
    assert case.state == "provider_review" and case.payload["resources"][0]["fields"] == ["id_number", "paid"]
    page = web.get(f"/console/scenarios/{case_id}", params={"done": "submitted"}).text
    assert "数源部门初审中" in page and 'id="submit-scenario"' not in page and page.count("<li><strong>") == 2

    # A product registration from the partner's workspace, with the four risk sections answered.
    assert f'<option value="{world.lab["ws"]}">' in web.get("/console/products/new").text
    fields = {"code": "console_payer_records", "workspace_id": str(world.lab["ws"]), "name_zh": "缴费记录查询",
              "name_en": "Payment records", "spec": json.dumps(record_spec(code)), "price": "1.50",
              "price_unit": "call", "pricing_basis": "成本加成", "scenario": "小微企业信贷",
              "scope_of_use": "银行信贷审批中核对缴费记录", "manner_of_use": "接口调用，逐条查询", **ANSWERS}
    assert _post(web, "/console/products/new", csrf, **{**fields, "price": "一元"}).status_code == 422
    r = _post(web, "/console/products/new", csrf, **fields)
    assert r.status_code == 303
    p = session.exec(select(Product).where(Product.code == "console_payer_records")).one()
    assert p.price_fen == 150 and p.state == "draft"
    page = web.get(f"/console/products/{p.id}").text
    assert 'id="submit-product"' in page and "自评完整" in page
    assert _post(web, f"/console/products/{p.id}/submit", csrf).status_code == 303
    page = web.get(f"/console/products/{p.id}").text
    assert "运营机构审核中" in page and 'id="submit-product"' not in page and 'class="timeline"' in page
    assert "console_payer_records" in web.get("/console/products").text
    # The partner's engineer may not draft; another partner does not see the product at all.
    console_login(web, world.users["partner_engineer"].username)
    assert web.get("/console/scenarios/new").status_code == 403
    console_login(web, world.away_users["partner2"].username)
    assert web.get(f"/console/products/{p.id}").status_code == 404


def test_a_customer_makes_and_revokes_a_key_revokes_a_consent_and_watches_a_batch(web, world, session):
    paid = world.billing.products["paid"]
    csrf = console_login(web, world.users["customer_admin"].username)
    refused = _post(web, "/console/api-keys", csrf, name="越权密钥", scopes="price.cap.set")
    assert refused.status_code == 403  # no wider than what the user holds
    made = _post(web, "/console/api-keys", csrf, name="集成测试密钥", scopes="product.call", ttl_days="30")
    assert made.status_code == 201
    secret = re.search(r'<code id="new-key" tabindex="0">([^<]+)</code>', made.text).group(1)
    assert secret not in web.get("/console/api-keys").text  # shown once
    key = session.exec(select(ApiKey).where(ApiKey.name == "集成测试密钥")).one()
    api = f"/api/v1/products/{paid.code}/batches/{world.batch_id}"
    assert web.get(api, headers={"Authorization": f"Bearer {secret}"}).status_code == 200  # the API's own key
    assert _post(web, f"/console/api-keys/{key.id}/revoke", csrf).status_code == 303
    assert web.get(api, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert _post(web, f"/console/api-keys/{world.away_ids['key']}/revoke", csrf).status_code == 404

    page = web.get("/console/consents").text
    assert f'id="consent-{world.consent_id}"' in page and AWAY_PRIVATE["purpose"] not in page
    assert _post(web, f"/console/consents/{world.consent_id}/revoke", csrf, reason="客户终止").status_code == 303
    assert _fresh(session, Consent, world.consent_id).state == "revoked"
    assert _post(web, f"/console/consents/{world.consent_id}/revoke", csrf).status_code == 409
    assert _post(web, f"/console/consents/{world.away_ids['consent']}/revoke", csrf).status_code == 404

    # A batch upload goes through the API's checks: this product serves no answers yet, so nothing is queued.
    batches = len(session.exec(select(ProductBatch)).all())
    upload = web.post("/console/batches", data={"csrf": csrf, "code": paid.code}, follow_redirects=False,
                      files={"file": ("subjects.csv", b"subject\n11010519491231002X\n", "text/csv")})
    assert upload.status_code == 503 and "未能办理" in upload.text and "precomputed answers" in upload.text
    assert len(session.exec(select(ProductBatch)).all()) == batches

    market = web.get("/console/marketplace").text
    assert paid.registration_number in market and world.billing.usage[("paid", world.orgs["customer"].id)].number in market

    # A batch's row is polled while its job runs and stops when it ends; its progress moves.
    console_login(web, world.users["customer_integrator"].username)  # product.call without job.read
    cell = f"/console/batches/{world.batch_id}/progress"
    assert f'hx-get="{cell}"' in web.get("/console/batches").text
    job_id = session.get(ProductBatch, world.batch_id).job_id
    token = job_service.claim(session, job_id, "console-test")
    job_service.heartbeat(session, job_id, token, progress=0.4)
    session.commit()
    running = web.get(cell).text
    assert 'value="40"' in running and "hx-trigger" in running and "运行中" in running
    job_service.cancel_job(session, job_id)
    session.commit()
    ended = web.get(cell).text
    assert "hx-trigger" not in ended and "失败" in ended
    assert web.get(f"/console/batches/{world.away_ids['batch']}/progress").status_code == 404
    assert web.get(f"/console/batches/{world.away_ids['batch']}/result.csv").status_code == 404


def test_the_operator_books_reconciles_and_settles_and_the_auditor_verifies(web, world, session):
    op = world.orgs["operator"]
    csrf = console_login(web, world.users["operator_admin"].username)
    page = web.get("/console/settlement").text
    assert ">5<" in _svg(page, "按月计量收入（元）") and "计量收入与账簿有差异" in page  # 5 calls at 1 yuan
    today = date.today()
    assert _post(web, "/console/settlement/books/metered", csrf, year=str(year_of()),
                 month=str(today.month)).status_code == 303
    assert _post(web, "/console/settlement/books", csrf, book="cost", category="staff", amount="1,200.5",
                 occurred_on=today.isoformat()).status_code == 303
    assert _post(web, "/console/settlement/books", csrf, book="cost", category="staff", amount="-3",
                 occurred_on=today.isoformat()).status_code == 422
    page = web.get("/console/settlement").text
    assert "计量收入与账簿一致" in page and '<td id="cost-total">1,200.50</td>' in page
    assert _post(web, "/console/settlement/run", csrf, year=str(year_of())).status_code == 409  # the year runs on
    assert _post(web, "/console/settlement/run", csrf, year=str(year_of() - 1), rule="equal").status_code == 303
    s = session.exec(select(Settlement).where(Settlement.operator_org_id == op.id)).one()
    assert _post(web, f"/console/settlement/{s.id}/file", csrf).status_code == 303
    assert _fresh(session, Settlement, s.id).filed_at is not None
    assert web.get("/console/settlement/settlements.pdf").content.startswith(b"%PDF")
    console_login(web, world.users["operator_staff"].username)
    assert web.get("/console/settlement").status_code == 403

    console_login(web, world.users["auditor"].username)
    page = web.get("/console/audit-reports", params={"verify": "1"}).text
    assert 'id="verify-result" class="ok"' in page
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "auditwork.log.verify")).first() is not None
    xlsx = web.get(f"/console/audit-reports/operators/{op.id}/operating.xlsx")
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    report = web.get(f"/console/audit-reports/operators/{op.id}/audit.html")
    assert report.status_code == 200 and op.name_zh in report.text
