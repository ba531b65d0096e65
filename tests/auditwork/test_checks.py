"""The audit's checks: the log verified from an export (and tampering found), de-identification
effectiveness of real record releases (k achieved, suppression, the held-out risk sample, budgets),
and the cost-revenue reconciliation — over HTTP for the auditor, refused to others."""

from __future__ import annotations

import pytest
from sqlalchemy import text as sql
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.billing import books
from authops.core.clock import to_shanghai, utcnow
from authops.core.identity import OrgKind
from authops.platform.auditwork import deid, risk
from authops.sandbox.models import SandboxJob, SandboxRelease
from tests.auditwork.world import people, record_release, spend_budget
from tests.billing.test_metering import charge
from tests.billing.world import build
from tests.platform.governance.matrix_products import who
from tests.support.builders import login, make_org, make_user


def _as(client, session, org, *roles):
    user = make_user(session, org, *roles)
    session.commit()
    return login(client, user.username)


def test_the_log_is_verified_from_its_export_and_the_years_events_counted(client, session, db_settings):
    auditor = _as(client, session, make_org(session, OrgKind.AUDITOR))
    customer = _as(client, session, make_org(session, OrgKind.CUSTOMER))
    year = to_shanghai(utcnow()).year
    assert client.get("/api/v1/auditwork/log-verification", headers=customer).status_code == 403
    events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
    r = client.get("/api/v1/auditwork/log-verification", headers=auditor,
                   params={"from_year": year, "to_year": year})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["ok"] and got["summary"].startswith("OK")
    # Every event before the call is verified (signing the export's checkpoint may add more).
    assert got["events_verified"] >= len(events) > 0 and got["checkpoints"] >= 1
    assert got["events_in_range"] >= len(events) and got["first_seq"] == events[0].seq
    r = client.get("/api/v1/auditwork/log-verification", headers=auditor,
                   params={"from_year": year, "to_year": year - 1})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "from_year"
    if db_settings.effective_database_url.startswith("sqlite"):
        # Edit one event behind the log's back (the append-only trigger removed first): found.
        session.execute(sql("DROP TRIGGER audit_event_no_update"))
        session.execute(sql("UPDATE audit_event SET canonical = :c WHERE seq = 2"), {"c": events[0].canonical})
        session.commit()
        bad = client.get("/api/v1/auditwork/log-verification", headers=auditor,
                         params={"from_year": year, "to_year": year}).json()
        assert not bad["ok"] and "TAMPERED" in bad["summary"] and "event 2" in bad["summary"]


def test_record_releases_show_k_achieved_suppression_and_a_held_out_sample(client, session, db_settings):
    provider, partner = make_org(session, OrgKind.PROVIDER), make_org(session, OrgKind.PARTNER)
    auditor = _as(client, session, make_org(session, OrgKind.AUDITOR))
    partner_admin = _as(client, session, partner)
    source = people(60, women=2)
    code, job_id = record_release(session, db_settings, provider, partner, source, k=3, quasi_identifiers=["sex"])
    spend_budget(session, partner, code, cap=5.0, spent=1.5)
    year = to_shanghai(utcnow()).year
    assert client.get("/api/v1/auditwork/deidentification", headers=partner_admin).status_code == 403
    r = client.get("/api/v1/auditwork/deidentification", headers=auditor, params={"year": year})
    assert r.status_code == 200, r.text
    rec = {x["job_id"]: x for x in r.json()["record_releases"]}[job_id]
    # The two women form a group smaller than k = 3: both suppressed, the 58 men remain one group.
    assert (rec["rows"], rec["k_required"], rec["k_achieved"], rec["suppressed_rows"]) == (60, 3, 58, 2)
    assert rec["suppression_rate"] == round(2 / 60, 4) and rec["quasi_identifiers"] == ["sex"]
    assert rec["treatments"]["id_number"] != "as is"
    # The policy re-applied to 80 % of the source; 20 % held out as the attack's control.
    assert (rec["risk"]["original_rows"], rec["risk"]["released_rows"], rec["risk"]["control_rows"]) == (48, 48, 12)
    if risk.why_unavailable():
        assert rec["risk"]["measured"] is False and "anonymeter" in rec["risk"]["reason"]
    [b] = [b for b in r.json()["budgets"] if b["resource"] == code]
    assert (b["epsilon_cap"], b["epsilon_spent"], b["spent_pct"]) == (5.0, 1.5, 30.0)
    operator = make_org(session, OrgKind.OPERATOR)
    session.commit()
    page = client.get(f"/api/v1/auditwork/operators/{operator.id}/reports/audit", headers=auditor,
                      params={"year": year, "format": "html"}).text
    row = next(tr for tr in page.split("<tr>") if f"{job_id}/rows" in tr)
    assert '<td class="num">58</td>' in row and '<td class="num">0.0333</td>' in row
    assert ("singling_out" in row) if rec["risk"]["measured"] else ("未测量 not measured" in row)
    for raw in source.column("id_number").to_pylist() + source.column("name").to_pylist():
        assert raw not in r.text and raw not in page


def test_anonymeter_finds_a_raw_copy_risky_and_the_masked_release_not(session, db_settings):
    import anonymeter  # noqa: F401 - pinned in requirements.lock; without it the reports say "not measured"
    provider, partner = make_org(session, OrgKind.PROVIDER), make_org(session, OrgKind.PARTNER)
    source = people(300, women=120)
    _, job_id = record_release(session, db_settings, provider, partner, source, k=3, quasi_identifiers=["sex"])
    rel = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)).one()
    sj = session.get(SandboxJob, rel.sandbox_job_id)
    masked = deid.release_risk(session, db_settings, rel, sj)
    assert masked["measured"] and masked["singling_out"]["value"] < 0.1
    raw = source.select(["id_number", "sex"])
    copied = risk.measure(raw.slice(0, 240), raw.slice(0, 240), raw.slice(240), quasi_identifiers=["sex"],
                          secret="id_number")
    assert copied["singling_out"]["value"] > 0.5


def test_the_reconciliation_compares_metered_revenue_with_the_book(client, session):
    w = build(session, price_fen=300)
    for _ in range(3):
        charge(session, w, w.customer)
    session.commit()
    auditor = _as(client, session, make_org(session, OrgKind.AUDITOR))
    operator = _as(client, session, w.operator)
    now = to_shanghai(utcnow())
    url = f"/api/v1/auditwork/operators/{w.operator.id}/reconciliation"
    assert client.get(url, headers=operator).status_code == 403
    assert client.get(f"/api/v1/auditwork/operators/{w.customer.id}/reconciliation", headers=auditor).status_code == 404
    got = client.get(url, headers=auditor, params={"year": now.year}).json()
    assert (got["metered_fen"], got["booked_product_sales_fen"], got["reconciled"]) == (900, 0, False)
    assert got["months"][now.month - 1]["difference_fen"] == -900
    books.book_metered_month(session, operator_org_id=w.operator.id, year=now.year, month=now.month,
                             actor=who(w.operator))
    session.commit()
    assert client.get(url, headers=auditor, params={"year": now.year}).json()["reconciled"]
    audit_log.record(session, audit_log.SYSTEM, "test.done")  # the log keeps working after the checks
    session.commit()
