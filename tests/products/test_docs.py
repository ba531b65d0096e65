"""Product documentation: the committed pages equal the rendering, every example matches the
contracts, the documented Python clients run against a live app (six products registered on
synthetic data, answers precomputed), and the public pages and OpenAPI document show the
contract beside the live registration."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import jsonschema
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from authops.core.identity import OrgKind
from authops.platform.governance.models import Product
from authops.platform.products import pages
from authops.platform.products.report_router import ReportIn
from authops.platform.products.router import CallIn
from authops.products import docs
from authops.products.catalog import PRODUCTS
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import authorize_operator, give_consent, usage_agreement
from tests.platform.products.matrix_products_calls import build_answers, product
from tests.products.test_reports import world  # noqa: F401 - the supervision product's world (a fixture)
from tests.support.builders import login, make_org, make_user

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "products"
SYNC = sorted(c for c, p in PRODUCTS.items() if p.invocation == "sync")


def _python_block(markdown: str) -> str:
    return re.search(r"```python\n(.*?)```", markdown, re.S).group(1)


# --- the committed pages ---------------------------------------------------------------------------

def test_committed_pages_equal_the_rendering():
    files = docs.render()
    assert sorted(p.name for p in PAGES.iterdir()) == sorted(files)
    for name, text in files.items():
        assert (PAGES / name).read_text(encoding="utf-8") == text, \
            f"docs/products/{name} is out of date: run `python -m authops.products.docs`"


def test_check_fails_until_the_pages_are_written(tmp_path, capsys):
    assert docs.main(["--check", "--out", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert docs.main(["--out", str(tmp_path)]) == 0
    assert docs.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "bid_win_loan.md").write_text("edited", encoding="utf-8")
    assert docs.main(["--check", "--out", str(tmp_path)]) == 1


def test_the_index_links_every_product_with_its_price():
    index = (PAGES / "README.md").read_text(encoding="utf-8")
    for p in PRODUCTS.values():
        row = next(line for line in index.splitlines() if f"]({p.code}.md)" in line)
        assert p.name_zh in row and p.name_en in row and docs.price_text(p.price_fen, p.price_unit) in row
    assert "免费 free" in next(line for line in index.splitlines() if "medical_insurance" in line)


# --- the examples and the contracts ----------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(PRODUCTS))
def test_the_example_response_follows_the_documented_answer(code):
    p = PRODUCTS[code]
    schema = docs.answer_schema(p)
    jsonschema.Draft202012Validator.check_schema(schema)
    example = docs.example_response(p)
    jsonschema.Draft202012Validator(schema).validate(example if p.invocation == "report" else example["answer"])
    for f in docs.answer_fields(p):
        assert f["meaning"] and f["meaning"] != f["name"], f"{code}: {f['name']} has no meaning"


@pytest.mark.parametrize("code", sorted(PRODUCTS))
def test_the_example_request_fits_both_contracts(code):
    p = PRODUCTS[code]
    jsonschema.Draft202012Validator(p.request_schema).validate(p.example_request)
    body = docs.call_body(p)
    (ReportIn if p.invocation == "report" else CallIn).model_validate(body)
    python = _python_block(docs.markdown(p))
    compile(python, f"{code}.md", "exec")
    assert repr(body["report" if p.invocation == "report" else "subject"])[1:-1] in python


def test_a_wrong_answer_is_refused_by_the_documented_schema():
    p = PRODUCTS["bank_credit_assessment"]
    validator = jsonschema.Draft202012Validator(docs.answer_schema(p))
    good = docs.example_answer(p)
    unknown = {**{k: None for k in good}, "found": False, "reason_codes": []}
    assert validator.is_valid(good) and validator.is_valid(unknown)
    assert not validator.is_valid({**good, "grade": "F"})
    assert not validator.is_valid({**good, "score": 101})
    assert not validator.is_valid({**good, "uscc": "91320505MA1XY8KP3T"})  # no echo of the subject


def test_subject_forms_follow_the_products_claims():
    assert docs.subject_forms(PRODUCTS["bid_win_loan"]) == ["<USCC>|<PROJECT_NUMBER>"]
    assert docs.subject_forms(PRODUCTS["freight_truck_underwriting_pricing"]) == ["<VIN>", "<PLATE_NUMBER>"]
    assert docs.call_body(PRODUCTS["bid_win_loan"])["subject"] == "91320505MA1XY8KP3T|JSGC2024-000123"


# --- the documented clients, run against a live app ------------------------------------------------

def _first(table, column):
    return next(v for v in table.column(column).to_pylist() if v)


def _subjects(settings, session) -> dict[str, str]:
    """A subject each product knows, read from the loaded source data (the test may see it)."""
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog import service
    from authops.platform.catalog.models import Dataset

    def table(code):
        res = service.get_resource(session, code)
        return read_dataset(get_object_store(settings), session.get(Dataset, res.dataset_id).object_key)

    firms, tenders = table("enterprise_basic_info"), table("tendering_bidding_records")
    names = dict(zip(firms.column("enterprise_name").to_pylist(), firms.column("uscc").to_pylist()))
    won = next((names[w], n) for w, n in zip(tenders.column("winning_bidder").to_pylist(),
                                            tenders.column("project_number").to_pylist()) if w in names and n)
    trucks = table("truck_violations")
    vin = pc.unique(trucks.column("vin")).to_pylist()[0]
    uscc = _first(firms, "uscc")
    return {"bank_credit_assessment": uscc, "tech_finance": uscc, "trading_limit_and_guarantee": uscc,
            "bid_win_loan": f"{won[0]}|{won[1]}", "freight_truck_underwriting_pricing": vin,
            "commercial_insurance_underwriting": _first(table("medical_insurance_enrollment"), "id_number")}


@pytest.fixture
def served(session, db_settings):
    """The six per-subject catalogue products registered, sold to one customer, answers built."""
    from authops.platform.catalog import csvload, flows, service
    from tests.support.catalog import ACTOR

    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(db_settings, scale=0.01, seed=5, only={r for c in SYNC for r in PRODUCTS[c].resources})
    w = {k: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    session.commit()
    authorize_operator(session, w[OrgKind.OPERATOR].id, w[OrgKind.BUREAU].id)
    subjects = _subjects(db_settings, session)
    rows = {}
    for code in SYNC:
        d = PRODUCTS[code]
        spec = parse_text(d.spec_path.read_text(encoding="utf-8"))
        p = product(session, partner_id=w[OrgKind.PARTNER].id, operator_id=w[OrgKind.OPERATOR].id, spec=spec,
                    policy=d.release_policy, personal=d.personal_information, price_fen=d.price_fen)
        p.code, p.name_zh, p.name_en = d.code, d.name_zh, d.name_en
        session.add(p)
        usage_agreement(session, p, w[OrgKind.CUSTOMER].id, price_fen=d.price_fen)
        rows[code] = p
    personal = PRODUCTS["commercial_insurance_underwriting"]
    for subject in (subjects[personal.code], personal.example_request["id_number"]):  # the data's, the page's
        give_consent(session, db_settings, rows[personal.code], w[OrgKind.CUSTOMER].id, subject_id=subject,
                     purpose=personal.example_request["purpose"], scope=["underwriting"])
    admin = make_user(session, w[OrgKind.CUSTOMER], "customer_admin")
    session.commit()
    for code, p in rows.items():
        build_answers(db_settings, p.id, PRODUCTS[code].params)
    return {"rows": rows, "subjects": subjects, "admin": admin.username}


def _run(code: str, app, monkeypatch, key: str) -> dict:
    """Execute the Python client of the committed page with httpx.Client bound to the app."""
    source = _python_block((PAGES / f"{code}.md").read_text(encoding="utf-8"))
    return _exec(source, app, monkeypatch, key)


def _exec(source: str, app, monkeypatch, key: str) -> dict:
    def client(base_url, headers, timeout):  # the example's own arguments; the transport is the app
        assert timeout > 0
        return TestClient(app, base_url=base_url, headers=headers)

    monkeypatch.setattr(httpx, "Client", client)
    monkeypatch.setenv("AUTHOPS_API_KEY", key)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source, "client.py", "exec"), namespace)  # noqa: S102 - the documented example, on purpose
    return namespace


def _api_key(client, admin: str) -> str:
    r = client.post("/api/v1/api-keys", json={"name": "文档示例", "scopes": ["product.call"]},
                    headers=login(client, admin))
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_every_documented_client_runs_against_the_live_api(app, client, served, monkeypatch, capsys):
    key = _api_key(client, served["admin"])
    for code in SYNC:
        p, row = PRODUCTS[code], served["rows"][code]
        validator = jsonschema.Draft202012Validator(docs.answer_schema(p))
        # the page's code as committed (its example subject is not in the synthetic data)
        result = _run(code, app, monkeypatch, key)["result"]
        assert result["registration_number"] == row.registration_number and result["product"] == code
        validator.validate(result["answer"])
        assert result["answer"]["won" if p.release_policy == "verify" else "found"] in ("no", False)
        # the same code about a subject the data knows: a full answer in the documented shape
        body = {**docs.call_body(p), "subject": served["subjects"][code]}
        found = _exec(docs.python_example(p, body), app, monkeypatch, key)["result"]
        validator.validate(found["answer"])
        if p.release_policy == "verify":
            assert found["answer"]["won"] == "yes", found["answer"]
        else:
            assert found["answer"]["found"] is True and found["answer"]["score"] is not None, (code, found)
        out = capsys.readouterr().out
        assert f"registration number: {row.registration_number}" in out and found["request_id"] in out


def test_a_documented_client_stops_with_the_error_code_and_message(app, client, served, monkeypatch):
    key = _api_key(client, served["admin"])
    p = PRODUCTS["commercial_insurance_underwriting"]
    with pytest.raises(SystemExit) as refused:  # a person who gave no consent
        _exec(docs.python_example(p, {**docs.call_body(p), "subject": "11010519491231002X"}), app, monkeypatch, key)
    assert str(refused.value).startswith("HTTP 403 no_consent: ")
    with pytest.raises(SystemExit) as unknown:
        _run("bank_credit_assessment", app, monkeypatch, "not-a-key")
    assert str(unknown.value).startswith("HTTP 401 ")


def test_the_documented_report_client_runs_against_the_live_api(app, client, session, db_settings, world,
                                                                 monkeypatch, capsys):
    """The report client posts, polls while a worker builds the release, and prints the rows."""
    import time

    from authops.core.db import session_scope
    from authops.core.jobs import service as job_service
    from authops.platform.products.report_models import ProductReport

    def worker_runs_while_the_client_waits(_seconds):
        with session_scope(db_settings) as s:
            jobs = [rep.job_id for rep in s.exec(select(ProductReport))]
        for job_id in jobs:
            job_service.run_job(db_settings, job_id, worker="test")

    monkeypatch.setattr(time, "sleep", worker_runs_while_the_client_waits)
    admin = make_user(session, world["customer"], "customer_admin")
    session.commit()
    code = "medical_insurance_spending_supervision"
    report = _run(code, app, monkeypatch, _api_key(client, admin.username))["report"]
    assert report["state"] == "done" and report["registration_number"] == world["product"].registration_number
    jsonschema.Draft202012Validator(docs.answer_schema(PRODUCTS[code])).validate(report)
    assert report["rows"] and f"registration number: {report['registration_number']}" in capsys.readouterr().out


# --- the public pages and the OpenAPI document -----------------------------------------------------

@pytest.fixture
def public_app(app):
    """The app, which includes the public product pages (authops/app.py)."""
    return app


def _register(session, code: str, number: str, price_fen: int) -> Product:
    partner = make_org(session, OrgKind.PARTNER)
    session.flush()
    p = Product(code=code, registration_number=number, partner_org_id=partner.id, name_zh="x", name_en="x",
                category="industry", price_fen=price_fen, price_unit="call", state="registered")
    session.add(p)
    session.commit()
    return p


def test_public_pages_show_the_contract_and_the_live_registration(public_app, session):
    with TestClient(public_app) as c:
        listing = c.get("/api/v1/public/products")
        assert listing.status_code == 200
        assert [x["code"] for x in listing.json()] == [p.code for p in sorted(PRODUCTS.values(), key=lambda p: p.no)]
        assert {x["state"] for x in listing.json()} == {"not registered"}
        page = c.get("/api/v1/public/products/bank_credit_assessment").json()
        assert page["registration_number"] is None and page["state"] == "not registered"
        assert page["answer"]["schema"] == docs.answer_schema(PRODUCTS["bank_credit_assessment"])
        _register(session, "bank_credit_assessment", "SZDP-2026-0042", 750)
        page = c.get("/api/v1/public/products/bank_credit_assessment").json()
        assert page["registration_number"] == "SZDP-2026-0042" and page["state"] == "registered"
        assert page["price_fen"] == 750 and page["pricing"]["suggested_price_fen"] == 800
        assert page["example"]["response"]["registration_number"] == "SZDP-2026-0042"
        listed = {x["code"]: x for x in c.get("/api/v1/public/products").json()}
        assert listed["bank_credit_assessment"]["registration_number"] == "SZDP-2026-0042"
        assert listed["tech_finance"]["state"] == "not registered"
        missing = c.get("/api/v1/public/products/no_such_product")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_product_that_left_the_register_is_not_shown_as_registered(public_app, session):
    p = _register(session, "tech_finance", "SZDP-2026-0007", 500)
    p.state = "withdrawn"
    session.add(p)
    session.commit()
    with TestClient(public_app) as c:
        page = c.get("/api/v1/public/products/tech_finance").json()
    assert page["state"] == "not registered" and page["registration_number"] is None and page["price"] is None


def test_the_html_page_is_chinese_by_default_english_on_request_and_escaped(public_app, session):
    _register(session, "bid_win_loan", "SZDP-2026-0003", 300)
    with TestClient(public_app) as c:
        zh = c.get("/products/bid_win_loan")
        en = c.get("/products/bid_win_loan", params={"lang": "en"})
        bad = c.get("/products/bid_win_loan", params={"lang": "fr"})
    assert zh.status_code == 200 and zh.headers["content-type"].startswith("text/html")
    assert '<html lang="zh-CN">' in zh.text and "<h1>企业“中标贷”数据产品服务</h1>" in zh.text
    assert "SZDP-2026-0003" in zh.text and "3.00 元/call" in zh.text
    assert '<html lang="en">' in en.text and "<h1>Enterprise bid-win loan data product</h1>" in en.text
    assert "<caption>" in zh.text and 'scope="col"' in zh.text
    # request values such as "<1M" and the Python client's code are escaped, never markup
    assert "<1M" not in zh.text and "&lt;1M" in zh.text
    assert "<script" not in zh.text and "<link" not in zh.text and "src=" not in zh.text  # no external assets
    assert bad.status_code == 422


def test_openapi_shows_each_products_answer_schema_and_examples(public_app):
    with TestClient(public_app) as c:
        doc = c.get("/openapi.json").json()
        again = c.get("/openapi.json").json()
    assert doc == again  # built once, examples not added twice
    schemas = doc["components"]["schemas"]
    call = doc["paths"]["/api/v1/products/{code}/calls"]["post"]
    examples = call["requestBody"]["content"]["application/json"]["examples"]
    responses = call["responses"]["200"]["content"]["application/json"]["examples"]
    for code in SYNC:
        assert schemas[f"ProductAnswer_{code}"]["title"].endswith(f"({code})")
        assert examples[code]["value"] == docs.call_body(PRODUCTS[code])
        assert responses[code]["value"]["answer"] == docs.example_answer(PRODUCTS[code])
    report = doc["paths"]["/api/v1/products/{code}/reports"]["post"]
    assert report["requestBody"]["content"]["application/json"]["examples"][
        "medical_insurance_spending_supervision"]["value"] == {"report": "institution_billing"}
    assert "ProductAnswer_medical_insurance_spending_supervision" in schemas
