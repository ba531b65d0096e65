"""Product registration: the draft and its self-review report, submission rules, operator check,
bureau filing with registration numbers, returns, illegal transitions, pricing, the catalogue,
and the call guard. Real workspaces, real mock datasets, the real release gate."""

from __future__ import annotations

import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.audit.search import details_of
from authops.core.errors import AuthopsError, Forbidden, NotFound
from authops.core.identity import OrgKind
from authops.platform.governance import agreements, products, selfreview, workflow
from authops.platform.governance.models import CaseTransition, Product
from authops.platform.sandbox import workspace as ws_service
from authops.policies import budget
from tests.platform.governance.matrix_products import (ANSWERS, authorize_operator, draft_fields, give_consent, lab,
                                                       leaky_spec, record_spec, registered_product, usage_agreement,
                                                       verify_spec, who)
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR


@pytest.fixture
def world(session, db_settings):
    orgs = {k: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.PROVIDER,
                                             OrgKind.CUSTOMER)}
    orgs["other_partner"] = make_org(session, OrgKind.PARTNER)
    orgs["other_operator"] = make_org(session, OrgKind.OPERATOR)
    session.commit()
    authorize_operator(session, orgs[OrgKind.OPERATOR].id, orgs[OrgKind.BUREAU].id)
    session.commit()
    l = lab(session, db_settings, orgs[OrgKind.PARTNER], orgs[OrgKind.PROVIDER])
    return {"bureau": orgs[OrgKind.BUREAU], "operator": orgs[OrgKind.OPERATOR], "partner": orgs[OrgKind.PARTNER],
            "provider": orgs[OrgKind.PROVIDER], "customer": orgs[OrgKind.CUSTOMER],
            "other_partner": orgs["other_partner"], "other_operator": orgs["other_operator"], "lab": l}


def _draft(session, db_settings, world, code="payer_records", **kw) -> Product:
    p = products.create_draft(session, partner_org_id=world["partner"].id, code=code, actor=who(world["partner"]),
                              settings=db_settings, **draft_fields(world["lab"], world["operator"].id, **kw))
    session.commit()
    return p


def _test(report, name):
    return next(t for t in report["tests"] if t["name"] == name)


def _register(session, db_settings, world, code="payer_records", **kw) -> Product:
    p = _draft(session, db_settings, world, code=code, **kw)
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    products.operator_check(session, p, actor=who(world["operator"]), decision="approve")
    products.bureau_file(session, p, actor=who(world["bureau"]), decision="approve")
    session.commit()
    return p


# --- the self-review report -------------------------------------------------------------------------

def test_the_self_review_is_filled_from_the_plan_the_grants_and_a_mock_run(session, db_settings, world):
    p = _draft(session, db_settings, world)
    code = world["lab"]["code"]
    r = p.self_review
    assert set(r["sections"]) == set(selfreview.SECTIONS)  # the four risks the plan names
    out = r["facts"]["outputs"][0]
    assert out["policy"] == "record" and out["k"] == 2
    id_col = next(c for c in out["columns"] if c["name"] == "id_number")
    assert id_col["sources"] == [{"field": f"{code}.id_number", "kind": "identifier_person", "grade": "L4",
                                  "personal": True}]
    assert id_col["treatment"] == "token" and out["tokenized"] == ["id_number"]
    assert r["facts"]["personal_information"] is True and p.personal_information is True
    assert p.release_policy == "record" and p.share_mode == "query"
    results = {t["name"]: t["result"] for t in r["tests"]}
    assert results == {"scope_within_grants": "pass", "release_preflight:rows": "pass", "mock_release:rows": "pass"}
    mock = _test(r, "mock_release:rows")
    assert "raw-identifier scan" in mock["tried"] and mock["summary"]["treatments"]["id_number"] == "token"
    assert selfreview.problems(r) == []
    # the raw IDs of the mock data appear nowhere in the report
    from tests.support.catalog import IDS
    assert not any(i in str(r) for i in IDS)


def test_an_aggregate_reports_dp_parameters_and_the_partners_budget(session, db_settings, world):
    code = world["lab"]["code"]
    spec = {"spec_version": 1, "name": "payers_by_sex", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": ["id_number", "sex", "paid"]}],
            "outputs": [{"name": "by_sex", "release": {
                "policy": "aggregate", "group_by": ["sex"], "epsilon": 0.5, "min_cell": 5,
                "measures": [{"name": "payers", "fn": "count"},
                             {"name": "paid_total", "fn": "sum", "column": "paid", "bounds": [0, 100000]}]}}]}
    p = _draft(session, db_settings, world, spec=spec)
    r = p.self_review
    assert r["facts"]["min_cell"] == 5 and r["facts"]["epsilon_per_release"] == 0.5
    dp = r["facts"]["outputs"][0]["dp"]
    assert dp["measures"][1]["bounds"] == [0, 100000] and dp["privacy_unit"] == "person"
    assert _test(r, "budget_covers_release")["result"] == "fail"  # no budget is set yet
    assert "no privacy budget is set" in _test(r, "budget_covers_release")["detail"]
    with pytest.raises(AuthopsError) as e:
        products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    assert e.value.code == "self_review_incomplete" and "budget_covers_release" in e.value.message
    session.rollback()
    budget.set_budget(session, org_id=world["partner"].id, resource_code=code, epsilon=2.0, actor=ACTOR)
    session.commit()
    p = session.get(Product, p.id)
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)  # the tests re-run
    b = p.self_review["facts"]["budget"][0]
    assert b["resource"] == code and b["releases_left"] == 4
    assert _test(p.self_review, "budget_covers_release")["result"] == "pass"
    assert _test(p.self_review, "mock_release:by_sex")["result"] == "pass"


def test_submission_is_refused_naming_empty_sections_and_failed_tests(session, db_settings, world):
    p = _draft(session, db_settings, world, answers={"beyond_purpose": "范围内", "direct_exposure": "  "})
    with pytest.raises(AuthopsError) as e:
        products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    assert e.value.code == "self_review_incomplete"
    assert "direct_exposure" in e.value.message and "indirect_exposure" in e.value.message
    assert "other_risks" in e.value.message and "beyond_purpose" not in e.value.message
    session.rollback()
    leaky = _draft(session, db_settings, world, code="leaky_names", spec=leaky_spec(world["lab"]["code"]))
    failed = [t for t in leaky.self_review["tests"] if t["result"] == "fail"]
    assert {t["name"] for t in failed} == {"release_preflight:rows", "mock_release:rows"}
    assert "cannot be masked" in failed[0]["detail"]
    with pytest.raises(AuthopsError) as e:
        products.submit(session, leaky, actor=who(world["partner"]), settings=db_settings)
    assert "automated test release_preflight:rows failed" in e.value.message
    session.rollback()
    assert session.get(Product, leaky.id).case_id is None  # nothing was filed


def test_a_verify_product_probes_claims_on_the_mock_data(session, db_settings, world):
    p = _draft(session, db_settings, world, spec=verify_spec(world["lab"]["code"]))
    mock = _test(p.self_review, "mock_release:has_paid")
    assert mock["result"] == "pass" and mock["summary"]["claims"] >= 2
    assert p.share_mode == "verify" and p.release_policy == "verify"


def test_the_spec_must_be_in_the_partners_own_active_workspace_and_grants(session, db_settings, world):
    code = world["lab"]["code"]
    outside = record_spec(code)
    outside["inputs"][0]["fields"] = ["id_number", "sex", "no_such_field"]
    with pytest.raises(AuthopsError) as e:
        _draft(session, db_settings, world, spec=outside)
    assert "no_such_field" in e.value.message
    session.rollback()
    narrow = ws_service.create_workspace(session, org_id=world["partner"].id, name="narrow",
                                         grants=[{"resource": code, "fields": ["sex"]}], actor=ACTOR)
    session.commit()
    with pytest.raises(ws_service.OutOfScope) as e:
        products.create_draft(session, partner_org_id=world["partner"].id, code="narrow_one",
                              actor=who(world["partner"]),
                              settings=db_settings, **{**draft_fields(world["lab"], world["operator"].id),
                                                       "workspace_id": narrow.id})
    assert f"{code}.id_number" in e.value.message and "outside the approved scope" in e.value.message
    session.rollback()
    with pytest.raises(NotFound):  # another partner's workspace
        products.create_draft(session, partner_org_id=world["other_partner"].id, code="not_mine",
                              actor=who(world["other_partner"]), settings=db_settings,
                              **draft_fields(world["lab"], world["operator"].id))
    session.rollback()
    ws = ws_service.get_workspace(session, world["lab"]["ws"])
    ws_service.set_state(session, ws, "suspended", actor=ACTOR)
    session.commit()
    with pytest.raises(AuthopsError) as e:
        _draft(session, db_settings, world, code="suspended_ws")
    assert "suspended" in e.value.message


def test_public_products_are_free_and_prices_are_integer_fen(session, db_settings, world):
    with pytest.raises(AuthopsError) as e:
        _draft(session, db_settings, world, category="public_welfare", price_fen=100)
    assert e.value.details == {"field": "price_fen"} and "free" in e.value.message
    session.rollback()
    with pytest.raises(AuthopsError) as e:
        _draft(session, db_settings, world, price_fen=1.5)
    assert e.value.details == {"field": "price_fen"}
    session.rollback()
    p = _draft(session, db_settings, world, category="public_governance", price_fen=0)
    assert p.category == "public_governance" and p.price_fen == 0


# --- the workflow -------------------------------------------------------------------------------------

def test_operator_check_then_bureau_filing_registers_with_a_sequential_number(session, db_settings, world):
    p = _register(session, db_settings, world)
    assert p.state == "registered" and p.registered_at is not None
    year = p.registered_at.year
    assert p.registration_number == f"SZDP-{year}-0001"
    q = _register(session, db_settings, world, code="payer_records_2")
    assert q.registration_number == f"SZDP-{year}-0002"
    case = workflow.get_case(session, p.case_id)
    assert case.state == "registered" and case.decided_at is not None
    hist = [(t.action, t.from_state, t.to_state) for t in workflow.history(session, case)]
    assert hist == [("submit", "", "operator_check"), ("operator_approve", "operator_check", "bureau_filing"),
                    ("bureau_file", "bureau_filing", "registered")]
    events = session.exec(select(AuditEvent).where(AuditEvent.object_type == "product_registration",
                                                   AuditEvent.object_id == str(case.id))).all()
    filed = next(e for e in events if e.action == "gov.product_registration.bureau_file")
    d = details_of(filed)
    assert d["before"] == "bureau_filing" and d["after"] == "registered"
    assert d["registration_number"] == p.registration_number and filed.org_id == world["bureau"].id
    cat = products.public_catalogue(session)
    assert [c["registration_number"] for c in cat] == [p.registration_number, q.registration_number]
    assert cat[0]["price_fen"] == 150 and cat[0]["price"] == "1.50 元/call"
    assert cat[0]["partner"] == world["partner"].name_zh


def test_illegal_transitions_are_refused(session, db_settings, world):
    p = _draft(session, db_settings, world)
    with pytest.raises(AuthopsError) as e:  # checking a draft that was never submitted
        products.operator_check(session, p, actor=who(world["operator"]), decision="approve")
    assert e.value.code == "illegal_transition"
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    session.commit()
    with pytest.raises(AuthopsError) as e:  # the bureau cannot file before the operator's check
        products.bureau_file(session, p, actor=who(world["bureau"]), decision="approve")
    assert e.value.code == "illegal_transition" and e.value.status_code == 409
    assert "operator_check" in e.value.message and "operator_approve" in e.value.message
    session.rollback()
    with pytest.raises(AuthopsError) as e:  # the partner cannot check its own product
        products.operator_check(session, p, actor=who(world["partner"]), decision="approve")
    assert e.value.code == "own_application"
    with pytest.raises(NotFound):  # nor can an operator it was not filed with
        products.operator_check(session, p, actor=who(world["other_operator"]), decision="approve")
    with pytest.raises(AuthopsError) as e:  # the bureau does not do the operator's check
        products.operator_check(session, p, actor=who(world["bureau"]), decision="approve")
    assert e.value.code == "wrong_reviewer"
    with pytest.raises(AuthopsError) as e:  # a second submission
        products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    assert e.value.code == "illegal_transition"
    products.operator_check(session, p, actor=who(world["operator"]), decision="approve")
    with pytest.raises(AuthopsError) as e:  # only the bureau files
        products.bureau_file(session, p, actor=who(world["operator"]), decision="approve")
    assert e.value.code == "wrong_reviewer"
    with pytest.raises(AuthopsError) as e:  # a return needs reasons
        products.bureau_file(session, p, actor=who(world["bureau"]), decision="return")
    assert e.value.details == {"field": "reasons"}
    session.rollback()
    assert session.get(Product, p.id).state == "submitted"


def test_operator_actions_need_an_active_authorization(session, db_settings, world):
    p = _draft(session, db_settings, world, operator_org_id=world["other_operator"].id)
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    session.commit()
    with pytest.raises(Forbidden) as e:
        products.operator_check(session, p, actor=who(world["other_operator"]), decision="approve")
    assert e.value.code == "no_active_authorization"


def test_a_returned_product_comes_back_to_the_stage_that_returned_it(session, db_settings, world):
    p = _draft(session, db_settings, world)
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    products.operator_check(session, p, actor=who(world["operator"]), decision="return", reasons="定价依据不充分")
    assert p.state == "returned"
    case = workflow.get_case(session, p.case_id)
    assert case.round == 2 and case.awaiting_orgs == [world["partner"].id]
    products.update_draft(session, p, actor=who(world["partner"]), settings=db_settings,
                          pricing_basis="成本加成 10%，附测算表")
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    assert case.state == "operator_check" and p.pricing_basis == "成本加成 10%，附测算表"
    products.operator_check(session, p, actor=who(world["operator"]), decision="approve")
    products.bureau_file(session, p, actor=who(world["bureau"]), decision="return", reasons="补充场景说明")
    assert case.round == 3
    products.update_draft(session, p, actor=who(world["partner"]), settings=db_settings, scenario="小微企业贷前核验")
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    assert case.state == "bureau_filing"  # straight back to the bureau, not to the operator
    products.bureau_file(session, p, actor=who(world["bureau"]), decision="approve")
    session.commit()
    assert p.state == "registered"
    actions = [t.action for t in session.exec(select(CaseTransition).where(CaseTransition.case_id == case.id)
                                               .order_by(CaseTransition.seq))]
    assert actions == ["submit", "operator_return", "resubmit", "operator_approve", "bureau_return", "resubmit",
                       "bureau_file"]


def test_a_rejected_product_stays_out_of_the_catalogue(session, db_settings, world):
    p = _draft(session, db_settings, world)
    products.submit(session, p, actor=who(world["partner"]), settings=db_settings)
    products.operator_check(session, p, actor=who(world["operator"]), decision="reject", reasons="与场景不符")
    session.commit()
    assert p.state == "rejected" and products.public_catalogue(session) == []
    with pytest.raises(AuthopsError) as e:
        products.update_draft(session, p, actor=who(world["partner"]), settings=db_settings, name_en="again")
    assert e.value.code == "illegal_transition"


# --- the API --------------------------------------------------------------------------------------

def test_the_registration_over_the_api(client, session, db_settings, world):
    users = [make_user(session, world["partner"], "partner_admin"),
             make_user(session, world["operator"], "operator_staff"),
             make_user(session, world["bureau"], "bureau_reviewer"),
             make_user(session, world["other_partner"], "partner_admin")]
    session.commit()
    partner, operator, bureau, stranger = (login(client, u.username) for u in users)
    G = "/api/v1/governance"
    body = {"code": "api_product", **draft_fields(world["lab"], world["operator"].id, answers={})}
    r = client.post(f"{G}/products", json=body, headers=partner)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert len(r.json()["blocking"]) == 4 and r.json()["self_review"]["tests"][0]["result"] == "pass"
    assert client.get(f"{G}/products/{pid}", headers=stranger).status_code == 404  # a draft is private
    assert client.get(f"{G}/products/{pid}", headers=operator).status_code == 404  # not submitted yet
    r = client.post(f"{G}/products/{pid}/submit", headers=partner)
    assert r.status_code == 422 and r.json()["error"]["code"] == "self_review_incomplete"
    r = client.put(f"{G}/products/{pid}", json={"self_review": ANSWERS}, headers=partner)
    assert r.status_code == 200 and r.json()["blocking"] == []
    assert client.post(f"{G}/products/{pid}/submit", headers=partner).json()["state"] == "submitted"
    r = client.post(f"{G}/products/{pid}/file", json={"decision": "approve"}, headers=bureau)
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"
    assert client.post(f"{G}/products/{pid}/check", json={"decision": "approve"}, headers=operator).status_code == 200
    r = client.post(f"{G}/products/{pid}/file", json={"decision": "approve"}, headers=bureau)
    assert r.status_code == 200 and r.json()["registration_number"].startswith("SZDP-")
    r = client.get(f"{G}/products/{pid}", headers=stranger)  # registered: public, without the file
    assert r.status_code == 200 and r.json()["price"] == "1.50 元/call" and "self_review" not in r.json()


# --- the call guard -----------------------------------------------------------------------------------

def test_guard_call_refuses_without_agreement_or_consent_and_after_revocation(session, db_settings, world):
    from authops.platform.governance import consent
    from tests.platform.governance.matrix_products import ID_A, ID_B

    p = _register(session, db_settings, world)
    cust = world["customer"].id
    with pytest.raises(Forbidden) as e:
        products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A, settings=db_settings)
    assert e.value.code == "no_active_agreement" and "has no usage agreement" in e.value.message
    session.commit()  # the refusal's audit event
    usage_agreement(session, p, cust)
    with pytest.raises(Forbidden) as e:
        products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A, settings=db_settings)
    assert e.value.code == "no_consent" and "given no consent" in e.value.message
    with pytest.raises(Forbidden) as e:
        products.guard_call(session, customer_org_id=cust, product_id=p.id, settings=db_settings)
    assert e.value.code == "no_consent" and "subject_id" in e.value.message
    c, _ = give_consent(session, db_settings, p, cust, scope=["rows"])
    ok = products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A.lower(),
                             purpose="贷前核验", settings=db_settings)
    assert ok["consent_id"] == c.id and ok["agreement"].startswith("UA-")
    with pytest.raises(Forbidden):  # another subject
        products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_B, settings=db_settings)
    consent.revoke_by_customer(session, c, actor=who(cust))
    with pytest.raises(Forbidden) as e:
        products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A, settings=db_settings)
    assert e.value.code == "no_consent" and "revoked" in e.value.message
    session.commit()
    denied = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.call.refused")).all()
    assert [d.outcome for d in denied] == ["denied"] * 5
    assert [details_of(d)["code"] for d in denied] == ["no_active_agreement", "no_consent", "no_consent",
                                                       "no_consent", "no_consent"]
    assert not any(ID_A in bytes(d.canonical).decode() or ID_B in bytes(d.canonical).decode() for d in denied)
    assert details_of(denied[1])["subject_key"] == consent.subject_key(db_settings, ID_A)


def test_call_check_route_answers_and_logs(client, session, db_settings, world):
    p = registered_product(session, partner_id=world["partner"].id, operator_id=world["operator"].id)
    user = make_user(session, world["customer"], "customer_integrator")
    session.commit()
    h = login(client, user.username)
    url = f"/api/v1/governance/products/{p.id}/call-check"
    r = client.post(url, json={}, headers=h)  # every call names its purpose
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.purpose"
    r = client.post(url, json={"purpose": "贷前核验"}, headers=h)
    assert r.status_code == 200 and r.json()["allowed"] is False and r.json()["code"] == "no_active_agreement"
    a = usage_agreement(session, p, world["customer"].id)
    session.commit()
    r = client.post(url, json={"purpose": "贷前核验"}, headers=h)
    assert r.json()["allowed"] is True and r.json()["agreement"] == a.number
    agreements.terminate(session, a, who(world["customer"]), "业务终止")
    session.commit()
    r = client.post(url, json={"purpose": "贷前核验"}, headers=h)
    assert r.json()["allowed"] is False and "terminated" in r.json()["reason"]
    assert len(session.exec(select(AuditEvent).where(AuditEvent.action == "gov.call.refused")).all()) == 2
    draft = Product(code="not_registered", partner_org_id=world["partner"].id, name_zh="草稿", state="draft")
    session.add(draft)
    session.commit()
    assert client.post(f"/api/v1/governance/products/{draft.id}/call-check", json={"purpose": "贷前核验"}, headers=h).status_code == 404
