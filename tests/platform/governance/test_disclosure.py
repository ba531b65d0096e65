"""The public disclosure page (no login) and publishing audit results."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

import pytest
from sqlmodel import select

from authops.audit import checkpoints
from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.platform.governance import disclosure
from authops.platform.governance.models import Agreement, Call, Case, Product
from tests.support.builders import login, make_org, make_user

URL = "/api/v1/public/disclosure"


def _agreement(session, kind, a, b, state="active", n=[0], **terms):
    n[0] += 1
    text = f"text {n[0]}"
    ag = Agreement(kind=kind, number=f"AG-D-{n[0]:05d}", party_a_org_id=a.id, party_b_org_id=b.id, terms=terms,
                   text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest(), starts_on=date(2026, 1, 1),
                   ends_on=date(2028, 12, 31), state=state)
    session.add(ag)
    session.flush()
    return ag


@pytest.fixture
def w(session):
    bureau, operator, old_operator = (make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.OPERATOR),
                                      make_org(session, OrgKind.OPERATOR))
    p1, p2, p3 = (make_org(session, OrgKind.PARTNER) for _ in range(3))
    auth = _agreement(session, "operator_authorization", bureau, operator, scope="whole-city public data operation")
    _agreement(session, "operator_authorization", bureau, old_operator, state="exited", scope="old")
    call = Call(kind="partner_recruitment", number="PR-2026-00001", publisher_org_id=operator.id,
                title="Finance partners", industry="finance", deadline_at=utcnow() + timedelta(days=30))
    session.add(call)
    session.flush()
    case = Case(kind="partner", number="PA-2026-00001", state="approved", applicant_org_id=p2.id, call_id=call.id,
                title="apply")
    session.add(case)
    session.flush()
    _agreement(session, "partner", operator, p1, industry="insurance")
    _agreement(session, "partner", operator, p2).case_id = case.id
    _agreement(session, "partner", operator, p3, state="pending", industry="transport")
    products = [
        Product(code="credit-eval", registration_number="DP-2026-0001", partner_org_id=p1.id, operator_org_id=operator.id,
                name_zh="银行信贷评估", name_en="Bank credit evaluation", category="industry", price_fen=12345,
                price_unit="call", state="registered", registered_at=utcnow(), spec={"secret": "internal spec"}),
        Product(code="med-supervision", registration_number="DP-2026-0002", partner_org_id=p1.id,
                name_zh="医保支出监管", name_en="Medical-insurance spending supervision",
                category="public_governance", price_fen=0, state="registered", registered_at=utcnow()),
        Product(code="draft-one", partner_org_id=p1.id, name_zh="未登记产品", state="draft", price_fen=100),
    ]
    session.add_all(products)
    session.commit()
    return {"bureau": bureau, "operator": operator, "partners": (p1, p2, p3), "auth": auth}


def test_the_page_is_public_and_lists_who_is_authorized(client, session, w):
    r = client.get(URL)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["lang"] == "zh" and page["labels"]["authorized"] == "授权运营机构"
    assert page["authorized"] == [{
        "number": w["auth"].number, "operator": w["operator"].name_zh, "grantor": w["bureau"].name_zh,
        "scope": "whole-city public data operation", "starts_on": "2026-01-01", "ends_on": "2028-12-31",
        "state": "有效"}]
    p1, p2, _ = w["partners"]
    assert [(p["name"], p["industry"]) for p in page["partners"]] == [(p1.name_zh, "insurance"), (p2.name_zh, "finance")]
    # no cap or price set yet: each registered product listed with no units (free ones say so)
    assert {x["registration_number"] for x in page["price_caps"]} == {"DP-2026-0001", "DP-2026-0002"}
    assert all(x["units"] == [] for x in page["price_caps"]) and "上限" in page["price_caps_note"]
    text = json.dumps(page, ensure_ascii=False)
    assert "DP-2026-0001" in text and "DP-2026-0002" in text and "未登记产品" not in text
    assert "internal spec" not in text


def test_english_labels_and_unknown_language(client, w):
    page = client.get(URL, params={"lang": "en"}).json()
    assert page["labels"]["authorized"] == "Authorized operator"
    assert page["authorized"][0]["operator"] == w["operator"].name_en and page["authorized"][0]["state"] == "active"
    r = client.get(URL, params={"lang": "fr"})
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "lang"}


def test_registered_products_with_prices_when_the_products_module_is_absent(session, w, monkeypatch):
    real = disclosure.importlib.import_module

    def without_products(name, *a, **kw):
        if name == "authops.platform.governance.products":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **kw)

    monkeypatch.setattr(disclosure.importlib, "import_module", without_products)
    rows = disclosure.public_disclosure(session, lang="zh")["products"]
    assert [(p["registration_number"], p["name"], p["price_fen"], p["price_yuan"], p["price_unit"], p["free"])
            for p in rows] == [("DP-2026-0001", "银行信贷评估", 12345, "123.45", "次", False),
                               ("DP-2026-0002", "医保支出监管", 0, "0.00", "次", True)]
    assert rows[1]["category"] == "公共治理（免费）"
    en = disclosure.public_disclosure(session, lang="en")["products"]
    assert en[0]["name"] == "Bank credit evaluation" and en[0]["price_unit"] == "call"


def test_yuan_formatting():
    assert [disclosure.yuan(f) for f in (0, 5, 100, 12345, -250)] == ["0.00", "0.05", "1.00", "123.45", "-2.50"]


def test_bureau_publishes_an_audit_result(client, session, w):
    admin = make_user(session, w["bureau"], "bureau_admin")
    reviewer = make_user(session, w["bureau"], "bureau_reviewer")
    session.commit()
    h = login(client, admin.username)
    digest = hashlib.sha256(b"2025 audit report").hexdigest()
    body = {"title": "2025 年度脱敏有效性与日志完整性审计结果", "body": "审计结论：合格", "year": 2025,
            "document_sha256": digest}
    r = client.post("/api/v1/governance/disclosures", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["number"].startswith("DS-") and r.json()["category"] == "audit_result"
    [item] = client.get(URL).json()["audit_results"]
    assert (item["title"], item["year"], item["document_sha256"], item["body"]) == (
        body["title"], 2025, digest, "审计结论：合格")
    [ev] = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.disclosure.publish")).all()
    assert ev.org_id == w["bureau"].id
    for bad, field in (({"document_sha256": "xyz"}, "document_sha256"), ({"year": 1990}, "year"),
                       ({"title": "  "}, "title")):
        r = client.post("/api/v1/governance/disclosures", json={**body, **bad}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["details"] == {"field": field}, bad
    r = client.post("/api/v1/governance/disclosures", json=body, headers=login(client, reviewer.username))
    assert r.status_code == 403
    assert len(client.get(URL).json()["audit_results"]) == 1
    # Disclosures are not calls for applications: no other call kind is disturbed.
    assert session.exec(select(Call).where(Call.kind == "partner_recruitment")).one().number == "PR-2026-00001"


def test_the_latest_signed_checkpoint_and_its_keys_are_public(client, session, db_settings, w):
    assert client.get(URL).json()["audit_log"] is None
    cp = checkpoints.create_checkpoint(session, db_settings, force=True)
    session.commit()
    log = client.get(URL).json()["audit_log"]
    assert log["tree_size"] == cp.tree_size and log["root_hash"] == cp.root_hash
    assert cp.key_id in [k["key_id"] for k in log["public_keys"]]
    assert all(k["public_pem"].startswith("-----BEGIN PUBLIC KEY-----") for k in log["public_keys"])
