"""The seven catalogue products end to end over the HTTP API: registered with their own specs,
answer sets built from the loaded synthetic city, called by a customer under agreements and consent.

Each answer matches the product's documented contract (its JSON schema), the planted signals show
(a defaulting firm grades worse than a clean one, a truck with many violations prices higher, a
person with heavy medical use is a worse risk), no answer carries a raw value of the source data,
and the refusals hold: no agreement, no consent, a claim about another project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from jsonschema import Draft202012Validator

from authops.core.data.datasets import read_dataset
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform import synth
from authops.platform.catalog import csvload, flows, service
from authops.platform.catalog.models import Dataset
from authops.platform.products import precompute
from authops.products.catalog import PRODUCTS
from authops.sandbox.spec.models import parse_text
from tests.platform.governance.matrix_products import (authorize_operator, give_consent, registered_product,
                                                       usage_agreement)
from tests.support import leakscan
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR

SCALE, SEED = 0.005, 2026
SYNC = [c for c, d in PRODUCTS.items() if d.invocation == "sync"]
PURPOSE = "贷前审查"


@pytest.fixture
def city(session, db_settings):
    """The needed resources loaded; every sync product registered under its own code and built."""
    needed = {r for c in SYNC for r in PRODUCTS[c].resources}
    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(db_settings, scale=SCALE, seed=SEED, only=needed)
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["other"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    w["products"] = {}
    for code in SYNC:
        d = PRODUCTS[code]
        p = registered_product(session, partner_id=w["partner"].id, operator_id=w["operator"].id,
                               personal=d.personal_information, price_fen=d.price_fen)
        p.code, p.spec = code, parse_text(Path(d.spec_path).read_text(encoding="utf-8"))
        p.consent_required = d.consent_required
        p.release_policy, p.share_mode = d.release_policy, d.share_mode
        session.add(p)
        session.commit()
        precompute.precompute_now(session, db_settings, p, dict(d.params))
        session.commit()
        usage_agreement(session, p, w["customer"].id, price_fen=d.price_fen)
        w["products"][code] = p
    store = get_object_store(db_settings)
    w["tables"] = {r: read_dataset(store, session.get(Dataset, service.get_resource(session, r).dataset_id).object_key)
                   for r in needed}
    w["user"] = make_user(session, w["customer"], "customer_integrator")
    w["other_user"] = make_user(session, w["other"], "customer_integrator")
    session.commit()
    return w


def _count(table: pa.Table, key: str) -> dict[str, int]:
    vc = pc.value_counts(table.column(key))
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


def _subjects(city) -> dict[str, tuple[str, str]]:
    """(adverse, clean) subject per kind, chosen from the planted signals of the synthetic world."""
    world, t = synth.World(SCALE, SEED), city["tables"]
    ent = world.enterprises
    loaded = set(t["enterprise_basic_info"].column("uscc").to_pylist())
    uscc = np.asarray(ent.uscc.to_pylist())
    adverse = next(u for u in uscc[ent.default & ent.lawsuit] if u in loaded)
    clean = next(u for u in uscc[~ent.default & ~ent.lawsuit & ~ent.arrears] if u in loaded)
    violations = _count(t["truck_violations"], "vin")
    vins = t["vehicle_basic_info"].column("vin").to_pylist()
    busy_truck = max(vins, key=lambda v: violations.get(v, 0))
    quiet_truck = next(v for v in vins if violations.get(v, 0) == 0)
    settlements = _count(t["medical_insurance_settlements"], "id_number")
    enrolled = t["medical_insurance_enrollment"].column("id_number").to_pylist()
    heavy = max(enrolled, key=lambda v: settlements.get(v, 0))
    light = next(v for v in enrolled if settlements.get(v, 0) == 0)
    return {"enterprise": (adverse, clean), "vehicle": (busy_truck, quiet_truck), "person": (heavy, light)}


def _call(client, headers, code, subject, **kw):
    return client.post(f"/api/v1/products/{code}/calls", headers=headers,
                       json={"subject": subject, "purpose": PURPOSE, **kw})


def test_every_product_answers_in_its_contract_with_the_planted_signals(client, session, db_settings, city):
    subjects = _subjects(city)
    h = login(client, city["user"].username)
    answers: dict[str, dict[str, dict]] = {}
    for code in SYNC:
        d, p = PRODUCTS[code], city["products"][code]
        if d.subject_kind == "enterprise" and code == "bid_win_loan":
            continue
        for subject in subjects[d.subject_kind]:
            if d.consent_required:
                give_consent(session, db_settings, p, city["customer"].id, subject, purpose=PURPOSE,
                             subject_kind=d.subject_kind)
                session.commit()
            r = _call(client, h, code, subject)
            assert r.status_code == 200, (code, r.text)
            body = r.json()
            assert body["registration_number"] == p.registration_number and body["request_id"].startswith("req_")
            Draft202012Validator(d.response_schema()).validate(body["answer"])
            answers.setdefault(code, {})[subject] = body["answer"]
    show = {c: {s[:6]: (a.get("score"), a.get("grade") or a.get("risk_level") or a.get("risk_class"))
                for s, a in v.items()} for c, v in answers.items()}
    print(show)
    (bad, good), (busy, quiet), (heavy, light) = subjects["enterprise"], subjects["vehicle"], subjects["person"]
    credit = answers["bank_credit_assessment"]
    assert credit[bad]["score"] < credit[good]["score"] and credit[bad]["grade"] > credit[good]["grade"]
    assert credit[bad]["reason_codes"] and not credit[good]["reason_codes"]
    limits = answers["trading_limit_and_guarantee"]
    assert limits[bad]["score"] < limits[good]["score"]
    trucks = answers["freight_truck_underwriting_pricing"]
    assert float(trucks[busy]["premium_factor"]) > float(trucks[quiet]["premium_factor"])
    assert trucks[busy]["score"] > trucks[quiet]["score"]
    insured = answers["commercial_insurance_underwriting"]
    assert insured[heavy]["score"] > insured[light]["score"]
    # nothing raw in any answer
    defs = csvload.load_definitions(csvload.BUILTIN)
    for code, by_subject in answers.items():
        sources = {r: city["tables"][r] for r in PRODUCTS[code].resources}
        problems = leakscan.scan(list(by_subject.values()), sources, defs)
        assert problems == [], (code, problems)


def test_bid_win_verifies_the_claimed_tender_only(client, session, db_settings, city):
    t = city["tables"]
    basic = t["enterprise_basic_info"]
    uscc_of = dict(zip(basic.column("enterprise_name").to_pylist(), basic.column("uscc").to_pylist()))
    tenders = t["tendering_bidding_records"]
    won = [(uscc_of[n], p_) for n, p_ in zip(tenders.column("winning_bidder").to_pylist(),
                                             tenders.column("project_number").to_pylist()) if n in uscc_of]
    (uscc, project), (_, other_project) = won[0], next(x for x in won[1:] if x[1] != won[0][1])
    p = city["products"]["bid_win_loan"]
    h = login(client, city["user"].username)
    for subject in (f"{uscc}|{project}", f"{uscc}|{other_project}"):
        give_consent(session, db_settings, p, city["customer"].id, subject, purpose=PURPOSE, subject_kind="enterprise")
    session.commit()
    yes = _call(client, h, "bid_win_loan", f"{uscc}|{project}").json()["answer"]
    no = _call(client, h, "bid_win_loan", f"{uscc}|{other_project}").json()["answer"]
    assert yes["won"] == "yes" and yes["amount_band"] is not None
    assert no == {"won": "no", "amount_band": None, "award_recency": None, "loan_limit_band": None}
    for a in (yes, no):
        Draft202012Validator(PRODUCTS["bid_win_loan"].response_schema()).validate(a)


def test_refusals_without_agreement_or_consent(client, session, db_settings, city):
    subjects = _subjects(city)
    uscc = subjects["enterprise"][1]
    r = _call(client, login(client, city["other_user"].username), "bank_credit_assessment", uscc)
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    h = login(client, city["user"].username)
    r = _call(client, h, "bank_credit_assessment", uscc)
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    # a product without personal information (trucks) needs no consent; one with it refuses without
    assert _call(client, h, "freight_truck_underwriting_pricing", subjects["vehicle"][0]).status_code == 200
    r = _call(client, h, "commercial_insurance_underwriting", subjects["person"][0])
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent"
    assert uscc not in r.text and subjects["person"][0] not in r.text
