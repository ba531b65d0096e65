"""The console's workflows over real data: the three-level scenario review with reasons, usage and
statement downloads, live job progress, anomaly case handling and the charts' figures."""

from __future__ import annotations

import io
import re

import openpyxl
from sqlalchemy import func
from sqlmodel import select

from authops.audit.anomaly.models import AnomalyCase
from authops.audit.models import AuditEvent
from authops.billing.models import UsageRecord
from authops.console import charts
from authops.core.jobs import service as job_service
from authops.platform.governance.models import Case
from tests.console.world import AWAY_TITLE, HOME_TITLE, console_login, filled_template


def _post(web, path: str, csrf: str, **form):
    return web.post(path, data={"csrf": csrf, **form}, follow_redirects=False)


def _case(session, case_id: int) -> Case:
    session.expire_all()
    return session.get(Case, case_id)


def test_three_levels_review_a_scenario_and_the_partner_sees_each_decision(web, world, session):
    sid = world.scenario.id
    page = f"/console/scenarios/{sid}"
    csrf = console_login(web, world.users["provider_data_officer"].username)
    assert 'action="/console/scenarios/%d/provider-review"' % sid in web.get(page).text
    # Returning without reasons is refused with the rule, and nothing changes.
    refused = _post(web, f"{page}/provider-review", csrf, decision="return", reasons="")
    assert refused.status_code in (409, 422) and _case(session, sid).state == "provider_review"
    assert _post(web, f"{page}/provider-review", csrf, decision="approve", reasons="字段已最小化").status_code == 303
    assert _case(session, sid).state == "expert_review"
    assert "字段已最小化" in web.get(page).text and "review-h" not in web.get(page).text  # no second form

    for i, expert in enumerate(world.experts):
        csrf = console_login(web, expert.username)
        assert web.get("/console/").text.count(HOME_TITLE) >= 1  # in the expert's queue
        r = _post(web, f"{page}/expert-review", csrf, decision="approve", reasons="", score=str(80 + i))
        assert r.status_code == 303
    assert _case(session, sid).state == "bureau_review"

    csrf = console_login(web, world.users["bureau_reviewer"].username)
    r = _post(web, f"{page}/bureau-review", csrf, decision="return", reasons="请补充安全措施说明")
    assert r.status_code == 303 and _case(session, sid).state == "returned"

    console_login(web, world.users["partner_engineer"].username)
    seen = web.get(page).text
    assert "已退回修改" in seen and "请补充安全措施说明" in seen and "字段已最小化" in seen
    assert all(f">{80 + i}<" in seen for i in range(3))  # each expert's score on the timeline's reviews


def test_a_reviewer_of_another_department_or_the_wrong_stage_cannot_decide(web, world, session):
    sid = world.scenario.id
    # A department whose data the scenario does not request: it does not exist for them.
    away = world.away_users["provider2"]
    csrf = console_login(web, away.username)
    assert _post(web, f"/console/scenarios/{sid}/provider-review", csrf, decision="approve").status_code == 404
    # An expert before the expert stage: refused by the workflow, state unchanged.
    csrf = console_login(web, world.users["expert"].username)
    assert _post(web, f"/console/scenarios/{sid}/expert-review", csrf, decision="approve").status_code == 404
    # A partner holds no review action at all.
    csrf = console_login(web, world.users["partner_admin"].username)
    assert _post(web, f"/console/scenarios/{sid}/provider-review", csrf, decision="approve").status_code == 403
    assert _case(session, sid).state == "provider_review" and len(_case(session, sid).awaiting_orgs) == 1


def test_a_customer_sees_its_usage_and_downloads_its_statement(web, world, session):
    console_login(web, world.users["customer_integrator"].username)
    page = web.get("/console/billing").text
    own = session.exec(select(func.count()).select_from(UsageRecord)
                       .where(UsageRecord.customer_org_id == world.orgs["customer"].id)).one()
    assert f"({own})" in page  # the usage section's count is the customer's own uses
    assert world.orgs["customer2"].name_zh not in page
    pdf = web.get("/console/billing/statements.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].startswith("attachment;")
    xlsx = web.get("/console/billing/statements.xlsx")
    book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    cells = {str(c.value) for ws in book.worksheets for row in ws.iter_rows() for c in row if c.value is not None}
    assert any(world.orgs["customer"].name_zh in c for c in cells)
    assert not any(world.orgs["customer2"].name_zh in c for c in cells)
    assert web.get("/console/billing", params={"month": "2026-13"}).status_code == 422


def test_job_progress_is_polled_until_the_job_ends(web, world, session):
    console_login(web, world.users["partner_engineer"].username)
    part = f"/console/jobs/{world.job_id}/progress"
    token = job_service.claim(session, world.job_id, "test-worker")
    job_service.heartbeat(session, world.job_id, token, progress=0.4, message="loading")
    session.commit()
    running = web.get(part).text
    assert 'value="40"' in running and 'hx-get="%s"' % part in running and "hx-trigger" in running
    job_service.finish(session, world.job_id, token, result={"ok": True})
    session.commit()
    done = web.get(part).text
    assert "hx-trigger" not in done and "已完成" in done
    assert 'src="/console/static/htmx.min.js"' in web.get("/console/jobs").text
    js = web.get("/console/static/htmx.min.js")
    assert js.status_code == 200 and js.text.startswith("/*! htmx.org") and "0BSD" in js.text[:300]


def test_the_bureau_handles_an_anomaly_case_with_reasons(web, world, session):
    cid = world.anomaly_case_id
    csrf = console_login(web, world.users["customer_admin"].username)
    assert _post(web, f"/console/anomalies/{cid}/release", csrf, reason="not mine").status_code == 403
    csrf = console_login(web, world.users["bureau_reviewer"].username)
    assert f'id="case-{cid}"' in web.get("/console/anomalies").text
    assert _post(web, f"/console/anomalies/{cid}/release", csrf, reason="x").status_code == 422  # reason too short
    r = _post(web, f"/console/anomalies/{cid}/confirm", csrf, reason="确认为批量试探", severity="major")
    assert r.status_code == 303
    session.expire_all()
    assert session.get(AnomalyCase, cid).state == "confirmed"
    assert f'id="case-{cid}"' not in web.get("/console/anomalies").text
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "supervision.case_confirmed")
                         .order_by(AuditEvent.seq.desc())).first()
    assert event is not None and event.actor_name == world.users["bureau_reviewer"].username


def test_the_operators_revenue_chart_shows_the_metered_amount(web, world, session):
    console_login(web, world.users["operator_admin"].username)
    home = web.get("/console/").text
    total = session.exec(select(func.sum(UsageRecord.amount_fen))
                         .where(UsageRecord.operator_org_id == world.orgs["operator"].id)).one()
    assert total > 0
    svg = re.search(r'<svg class="chart".*?</svg>', home, re.S).group(0)
    assert 'role="img"' in svg and f">{charts.label(total / 100)}<" in svg


def test_the_public_disclosure_needs_no_login(web, world):
    r = web.get("/console/disclosure")
    assert r.status_code == 200
    assert world.billing.products["paid"].registration_number in r.text
    assert AWAY_TITLE not in r.text
    assert "Authorized operator" in web.get("/console/disclosure", params={"lang": "en"}).text


def test_a_department_sees_its_resources_loads_and_quality_and_no_other_departments(web, world, session):
    from authops.platform.catalog.models import DataResource

    own = session.exec(select(DataResource).where(DataResource.org_id == world.orgs["provider"].id)).one()
    other = session.exec(select(DataResource).where(DataResource.org_id == world.orgs["provider2"].id)).one()
    console_login(web, world.users["provider_admin"].username)
    home = web.get("/console/").text
    row = re.search(rf"<code>{own.code}</code>.*?</tr>", home, re.S).group(0)
    assert f"<td>{world.loaded_rows}</td>" in row and "100.0%" in row  # rows loaded; every field filled
    assert other.code not in home
    assert 'aria-label="各资源完整性（%）"' in home


def test_a_department_loads_data_by_excel_template_and_sees_only_counts(web, world, session, db_settings):
    from authops.platform.catalog.models import DataResource, IngestRun
    from tests.support.catalog import IDS, NAMES, PHONES

    res = session.exec(select(DataResource).where(DataResource.org_id == world.orgs["provider"].id)).one()
    page = f"/console/resources/{res.code}"
    csrf = console_login(web, world.users["provider_data_officer"].username)
    template = web.get(f"{page}/template.xlsx")
    assert template.status_code == 200 and template.content[:2] == b"PK"
    rows = [{"id_number": IDS[i], "name": NAMES[i], "phone": PHONES[i], "sex": "女", "paid": 20.5,
             "paid_on": "2025-02-28"} for i in range(3)]
    runs_before = session.exec(select(func.count()).select_from(IngestRun)).one()
    files = {"file": ("batch.xlsx", filled_template(template.content, rows), "application/octet-stream")}
    assert web.post(f"{page}/uploads", files=files, data={"mode": "replace"}, follow_redirects=False).status_code == 403
    assert session.exec(select(func.count()).select_from(IngestRun)).one() == runs_before  # nothing staged
    r = web.post(f"{page}/uploads", files=files, data={"mode": "replace", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == page
    session.expire_all()
    run = session.exec(select(IngestRun).order_by(IngestRun.id.desc())).first()
    shown = web.get(page).text
    assert f'id="job-{run.job_id}"' in shown and "hx-trigger" in shown  # its progress is polled
    assert job_service.run_job(db_settings, run.job_id, worker="console-test") == "succeeded"
    shown = web.get(page).text
    assert '<td id="rows">3</td>' in shown and "hx-trigger" not in shown
    assert not [v for v in (*IDS, *NAMES, *PHONES) if v in shown]
    # Another department's resource does not exist here; a partner may not load data at all.
    other = session.exec(select(DataResource).where(DataResource.org_id == world.orgs["provider2"].id)).one()
    assert web.get(f"/console/resources/{other.code}").status_code == 404
    console_login(web, world.users["partner_admin"].username)
    assert web.get(page).status_code == 403


def test_a_customer_reads_and_accepts_an_agreement_by_its_exact_text(web, world, session):
    from authops.platform.governance.models import Acceptance, Agreement

    aid = world.pending_agreement_id
    page = f"/console/agreements/{aid}"
    csrf = console_login(web, world.users["customer_admin"].username)
    assert f'href="{page}"' in web.get("/console/").text  # on the to-do list
    shown = web.get(page).text
    agreement = session.get(Agreement, aid)
    assert agreement.text_sha256 in shown and 'id="accept"' in shown

    def accepted() -> int:
        session.expire_all()
        return len(session.exec(select(Acceptance).where(Acceptance.agreement_id == aid)).all())

    before = accepted()
    assert web.post(f"{page}/accept", data={"text_sha256": agreement.text_sha256},
                    follow_redirects=False).status_code == 403  # no CSRF token
    wrong = web.post(f"{page}/accept", data={"csrf": csrf, "text_sha256": "0" * 64}, follow_redirects=False)
    assert wrong.status_code in (409, 422) and accepted() == before
    ok = web.post(f"{page}/accept", data={"csrf": csrf, "text_sha256": agreement.text_sha256},
                  follow_redirects=False)
    assert ok.status_code == 303 and accepted() == before + 1
    assert 'id="accept"' not in web.get(page).text
    console_login(web, world.users["customer_integrator"].username)
    assert web.get(page).status_code == 403  # agreement.sign is needed, as in the API
    console_login(web, world.away_users["customer2"].username)
    assert web.get(page).status_code == 404
