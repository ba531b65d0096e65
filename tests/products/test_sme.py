"""SME credit services over the HTTP API on the synthetic enterprise city: the white list holds exactly
the healthy firms that authorized the bank (risky and unauthorized firms never; a withdrawn consent
drops a firm from the next push), USCC and grade only; pre-credit bands fall with risk and are
refused without agreement or consent; a financing request reaches exactly the banks whose products
fit, each bank sees and moves only its own match, and the enterprise follows them all in one view."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import polars as pl
import pytest
from sqlmodel import Session, select

from authops.audit.models import AuditEvent
from authops.billing.models import UsageRecord
from authops.core import db as core_db
from authops.core.clock import utcnow
from authops.core.errors import Conflict
from authops.core.identity import OrgKind
from authops.platform.catalog.csvload import BUILTIN, load_definitions
from authops.platform.governance import consent
from authops.platform.governance.models import Notification
from authops.platform.products import sme, sme_financing, sme_whitelist
from authops.platform.products.sme_models import FinancingMatch
from authops.platform.synth import World
from authops.products.catalog import LIMIT_BANDS
from tests.platform.governance.matrix_products import authorize_operator, sign, usage_agreement, who
from tests.platform.products.matrix_sme import (PRECREDIT_PURPOSE, RESOURCES, SCALE, SEED, enterprise_consent,
                                                enterprise_org, load_enterprises, raw, serve_products)
from tests.support import leakscan
from tests.support.builders import login, make_org, make_user

REVOKED = ("吊销", "注销", "撤销")
HALTED = ("停业", "清算")


def _ids(df: pl.DataFrame) -> set[str]:
    return set(df["uscc"].to_list())


def _reference(session, settings) -> SimpleNamespace:
    """Firm sets read from the raw data, with grades that follow from the spec's rules alone: no adverse
    record scores 100 (A); tax-violation months and lawsuits and nothing else score 70 to 84 (B)."""
    t = {code: pl.from_arrow(raw(session, settings, code)) for code in RESOURCES}
    basic = t["enterprise_basic_info"]
    tax = t["enterprise_tax"].filter(pl.col("has_violation_record")).group_by("uscc").len()
    suits = t["court_cases"].group_by("uscc").agg(pl.col("case_number").n_unique().alias("len"))
    blacklisted = _ids(t["enterprise_blacklist"].filter(pl.col("listed_at").is_not_null()))
    dishonest = _ids(t["serious_dishonest_enterprises"].filter(pl.col("serious_violation_removed_at").is_null()))
    abnormal = _ids(t["enterprise_abnormal_operations"].filter(pl.col("removed_at").is_null()))
    rating = t["enterprise_credit_rating"]
    major = _ids(rating.filter(pl.col("has_major_risk")))
    low_rated = _ids(rating.filter(pl.col("credit_grade").is_in(["C", "D"])))
    arrears = (_ids(t["enterprise_social_insurance_payments"].filter(pl.col("contribution_status") == "欠缴"))
               | _ids(t["enterprise_housing_fund_registration"].filter(pl.col("contribution_status") == "欠缴")))
    revoked = _ids(basic.filter(pl.col("registration_status").is_in(REVOKED)))
    halted = _ids(basic.filter(pl.col("registration_status").is_in(HALTED)))
    flagged = blacklisted | dishonest | abnormal | major
    other_adverse = flagged | low_rated | arrears | revoked | halted
    clean = _ids(basic) - other_adverse - _ids(tax) - _ids(suits)
    grade_b = (_ids(tax) & _ids(suits)) - other_adverse
    return SimpleNamespace(clean=sorted(clean), grade_b=sorted(grade_b), blacklisted=sorted(blacklisted - major),
                           abnormal=sorted(abnormal), major=sorted(major), revoked=sorted(revoked),
                           flagged=flagged, tables=t)


@pytest.fixture
def town(session, db_settings):
    orgs = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER)}
    banks = {name: make_org(session, OrgKind.CUSTOMER) for name in ("a", "b", "c", "d")}
    session.commit()
    authorize_operator(session, orgs["operator"].id, orgs["bureau"].id)
    session.commit()
    load_enterprises(session, db_settings)
    products = serve_products(session, db_settings, partner_id=orgs["partner"].id, operator_id=orgs["operator"].id)
    credit = products[sme.CREDIT]
    for name in ("a", "b"):  # c and d hold no usage agreement for the credit product
        usage_agreement(session, credit, banks[name].id)
    officers = {name: make_user(session, bank, "bank_credit_officer") for name, bank in banks.items()}
    session.commit()
    return SimpleNamespace(credit=credit, banks=banks, officers=officers, ref=_reference(session, db_settings),
                           settings=db_settings)


def _as(client, user) -> dict[str, str]:
    return login(client, user.username)


def _rows(body) -> list[dict]:
    """A JSON body as flat rows for the leak scan: each object's scalar fields, nested objects as rows."""
    if isinstance(body, list):
        return [r for item in body for r in _rows(item)]
    if not isinstance(body, dict):
        return []
    flat = {k: v for k, v in body.items() if not isinstance(v, (dict, list)) or
            (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))}
    return [flat, *(r for v in body.values() if isinstance(v, (dict, list)) for r in _rows(v))]


def _leaks(town, body, public=("uscc",)) -> list[str]:
    """Raw source values anywhere in a response body; the USCC a white list or a request names is public by
    design (the enterprise authorized it), so it is exempt where `public` says so."""
    sources = {code: df.to_arrow() for code, df in town.ref.tables.items()}
    return leakscan.scan(_rows(body), sources, load_definitions(BUILTIN), public=public)


def _text(e: AuditEvent) -> str:
    return e.canonical.decode() if isinstance(e.canonical, bytes) else e.canonical


def _events(session, action):
    session.expire_all()
    return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


# --- the white list ----------------------------------------------------------------------------------

def test_the_white_list_holds_exactly_the_healthy_firms_that_authorized_the_bank(client, session, town):
    ref, a, b = town.ref, town.banks["a"], town.banks["b"]
    clean, grade_b = ref.clean[:5], ref.grade_b[:2]
    risky = ref.blacklisted[:2] + ref.abnormal[:2] + ref.major[:2] + ref.revoked[:1]
    assert len(clean) == 5 and len(grade_b) == 2 and len(risky) == 7, "the city lacks a planted group"
    keys = {}
    for uscc in clean + grade_b + risky:
        keys[uscc] = enterprise_consent(session, town.settings, town.credit, a.id, uscc,
                                        sme_whitelist.WHITELIST_PURPOSE)
    # consents that do not count: another purpose, another bank
    enterprise_consent(session, town.settings, town.credit, a.id, ref.clean[5], "贷前核验")
    enterprise_consent(session, town.settings, town.credit, b.id, ref.clean[6], sme_whitelist.WHITELIST_PURPOSE)
    headers = _as(client, town.officers["a"])
    r = client.post("/api/v1/sme/whitelist/subscriptions", json={"min_grade": "B"}, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["consent_purpose"] == sme_whitelist.WHITELIST_PURPOSE and r.json()["latest_delivery"] is None
    strict = client.post("/api/v1/sme/whitelist/subscriptions", json={"min_grade": "A"}, headers=headers).json()

    pushed = sme_whitelist.push_due(town.settings)
    assert len(pushed) == 2
    assert sme_whitelist.push_due(town.settings) == []  # not due again within its interval
    subs = client.get("/api/v1/sme/whitelist/subscriptions", headers=headers).json()
    by_grade = {s["min_grade"]: s["latest_delivery"]["id"] for s in subs}
    body = client.get(f"/api/v1/sme/whitelist/deliveries/{by_grade['B']}", headers=headers).json()
    assert body["version"] == 1 and body["count"] == 7
    assert {e["uscc"]: e["grade"] for e in body["entries"]} == {**{u: "A" for u in clean}, **{u: "B" for u in grade_b}}
    assert all(set(e) == {"uscc", "grade"} for e in body["entries"])
    assert _leaks(town, body) == []
    only_a = client.get(f"/api/v1/sme/whitelist/deliveries/{by_grade['A']}", headers=headers).json()
    assert {e["uscc"] for e in only_a["entries"]} == set(clean) and strict["min_grade"] == "A"

    # the enterprise withdraws (signing the revocation with its key): gone from the next push
    c, sk = keys[clean[0]]
    consent.revoke_by_subject(session, c.id, signature=sign(sk, consent.revocation_text(c)))
    session.commit()
    later = utcnow() + timedelta(hours=25)
    assert len(sme_whitelist.push_due(town.settings, now=later)) == 2
    subs = client.get("/api/v1/sme/whitelist/subscriptions", headers=headers).json()
    second = next(s["latest_delivery"] for s in subs if s["min_grade"] == "B")
    body2 = client.get(f"/api/v1/sme/whitelist/deliveries/{second['id']}", headers=headers).json()
    assert body2["version"] == 2 and body2["removed"] == 1 and body2["added"] == 0
    assert {e["uscc"] for e in body2["entries"]} == set(clean[1:] + grade_b)

    # each push notified the bank (counts only) and was audited without a USCC; reads are audited too
    session.expire_all()
    notes = list(session.exec(select(Notification).where(Notification.org_id == a.id,
                                                         Notification.kind == sme_whitelist.NOTIFICATION)))
    assert len(notes) == 4 and not any(u in n.title + n.body for n in notes for u in clean + grade_b)
    pushes = _events(session, "sme.whitelist.push")
    assert len(pushes) == 4 and not any(u in _text(e) for e in pushes for u in clean + grade_b)
    assert len(_events(session, "sme.whitelist.read")) == 3  # the three reads above
    # bank b's own list holds its own consenting firm only; a's deliveries do not exist for b
    headers_b = _as(client, town.officers["b"])
    assert client.get(f"/api/v1/sme/whitelist/deliveries/{by_grade['B']}", headers=headers_b).status_code == 404


def test_subscribing_needs_an_agreement_and_a_cancelled_subscription_is_not_pushed(client, session, town):
    r = client.post("/api/v1/sme/whitelist/subscriptions", json={}, headers=_as(client, town.officers["c"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    headers = _as(client, town.officers["a"])
    bad = client.post("/api/v1/sme/whitelist/subscriptions", json={"min_grade": "C"}, headers=headers)
    assert bad.status_code == 422 and "min_grade" in bad.json()["error"]["message"]
    sub = client.post("/api/v1/sme/whitelist/subscriptions", json={}, headers=headers).json()
    assert client.post(f"/api/v1/sme/whitelist/subscriptions/{sub['id']}/cancel", headers=headers).json()["state"] \
        == "cancelled"
    again = client.post(f"/api/v1/sme/whitelist/subscriptions/{sub['id']}/cancel", headers=headers)
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    assert sme_whitelist.push_due(town.settings) == []


# --- pre-credit ----------------------------------------------------------------------------------------

def test_precredit_bands_fall_with_risk_on_the_planted_signals(session, town):
    profiles = sme.Profiles(session, town.settings)
    usccs = town.ref.tables["enterprise_basic_info"]["uscc"].to_list()
    found = {u: profiles.get(u) for u in usccs}
    assert all(p is not None for p in found.values())
    levels = {u: p.precredit_level for u, p in found.items()}
    by_grade = {g: [levels[u] for u, p in found.items() if p.grade == g] for g in sme.GRADES}
    means = {g: sum(v) / len(v) for g, v in by_grade.items() if v}
    print(f"mean pre-credit level by grade: {means}")
    ordered = [means[g] for g in sme.GRADES if g in means]
    assert ordered == sorted(ordered, reverse=True) and means["A"] > means["B"] > means.get("C", 0)
    assert all(levels[u] == 0 for u in town.ref.flagged)  # blacklisted, dishonest, abnormal, major risk: none
    world = World(SCALE, SEED).enterprises
    default = dict(zip(world.uscc.to_pylist(), world.default))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    gap = mean([levels[u] for u in usccs if not default[u]]) - mean([levels[u] for u in usccs if default[u]])
    print(f"latent defaulters get {gap:.2f} levels less")
    assert gap >= 1.0
    # the same scale, a worse grade: never a higher band
    for u, p in found.items():
        assert p.precredit_level <= min(LIMIT_BANDS.index(p.scale_band), sme.GRADE_CAP[p.grade])


def test_a_precredit_call_answers_a_band_metered_and_audited(client, session, town):
    firm = town.ref.clean[0]
    enterprise_consent(session, town.settings, town.credit, town.banks["a"].id, firm, PRECREDIT_PURPOSE)
    headers = _as(client, town.officers["a"])
    r = client.post("/api/v1/sme/precredit", json={"uscc": firm.lower(), "purpose": PRECREDIT_PURPOSE},
                    headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    answer = body["answer"]
    assert answer["found"] is True and answer["grade"] == "A"
    band = answer["precredit_band"]
    assert band["code"] in sme.BANDS and band["zh"] == sme.BANDS[band["code"]].zh and 1 <= band["level"] <= 5
    assert body["registration_number"] == town.credit.registration_number and body["request_id"].startswith("req_")
    assert _leaks(town, body, public=()) == []
    session.expire_all()
    usage = list(session.exec(select(UsageRecord).where(UsageRecord.customer_org_id == town.banks["a"].id)))
    assert len(usage) == 1 and usage[0].amount_fen == 100 == body["metered"]["amount_fen"]
    assert usage[0].request_id == body["request_id"]
    [event] = _events(session, "sme.precredit")
    assert consent.subject_key(town.settings, firm) in _text(event) and firm not in _text(event)


def test_precredit_is_refused_without_consent_or_agreement_and_charges_nothing(client, session, town):
    firm = town.ref.clean[1]
    enterprise_consent(session, town.settings, town.credit, town.banks["a"].id, firm, PRECREDIT_PURPOSE)
    body = {"uscc": firm, "purpose": PRECREDIT_PURPOSE}
    other = client.post("/api/v1/sme/precredit", json={**body, "uscc": town.ref.clean[2]},
                        headers=_as(client, town.officers["a"]))
    assert other.status_code == 403 and other.json()["error"]["code"] == "no_consent"
    wrong_purpose = client.post("/api/v1/sme/precredit", json={**body, "purpose": "营销"},
                                headers=_as(client, town.officers["a"]))
    assert wrong_purpose.status_code == 403 and "purpose" in wrong_purpose.json()["error"]["message"]
    no_deal = client.post("/api/v1/sme/precredit", json=body, headers=_as(client, town.officers["c"]))
    assert no_deal.status_code == 403 and no_deal.json()["error"]["code"] == "no_active_agreement"
    bad = client.post("/api/v1/sme/precredit", json={**body, "uscc": "123"}, headers=_as(client, town.officers["a"]))
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "uscc"
    session.expire_all()
    assert session.exec(select(UsageRecord)).all() == []
    assert len(_events(session, "sme.precredit.refused")) == 2 and len(_events(session, "gov.call.refused")) == 1


# --- financing requests -----------------------------------------------------------------------------

def _loan(client, officer, **kw):
    body = {"name": "经营贷", "min_amount_fen": 1_000_000_00, "max_amount_fen": 3_000_000_00, "min_term_months": 6,
            "max_term_months": 36, "industries": [], "min_grade": "C", **kw}
    r = client.post("/api/v1/sme/loan-products", json=body, headers=_as(client, officer))
    assert r.status_code == 201, r.text
    return r.json()


REQUEST = {"amount_band": "1m_3m", "term_months": 24, "industry": "manufacturing", "purpose": "购置生产设备",
           "authorize_sharing": True}


@pytest.fixture
def market(client, session, town):
    """Loan products: a fits, b fits (manufacturing only), c wants grade A, d's terms are too short, and
    a product of c's that was withdrawn; the enterprise is a grade-B firm."""
    o = town.officers
    _loan(client, o["a"], name="a 经营贷", min_grade="B")
    _loan(client, o["b"], name="b 制造贷", min_amount_fen=500_000_00, max_amount_fen=10_000_000_00,
          industries=["manufacturing"])
    _loan(client, o["c"], name="c 优选贷", min_grade="A")
    _loan(client, o["d"], name="d 短期贷", max_term_months=12)
    gone = _loan(client, o["c"], name="c 旧产品")
    r = client.patch(f"/api/v1/sme/loan-products/{gone['id']}", json={"active": False}, headers=_as(client, o["c"]))
    assert r.status_code == 200 and r.json()["active"] is False
    firm = enterprise_org(session, town.ref.grade_b[0])
    user = make_user(session, firm, "enterprise_finance")
    session.commit()
    return SimpleNamespace(firm=firm, user=user)


def test_a_request_reaches_exactly_the_banks_whose_products_fit(client, session, town, market):
    headers = _as(client, market.user)
    r = client.post("/api/v1/sme/financing/requests", json=REQUEST, headers=headers)
    assert r.status_code == 201, r.text
    req = r.json()
    assert {m["bank_org_id"] for m in req["matches"]} == {town.banks["a"].id, town.banks["b"].id}
    assert {m["state"] for m in req["matches"]} == {"received"}
    assert req["shared_profile"]["grade"] == "B" and req["uscc"] == market.firm.uscc
    # what the matched bank sees: the request and bands, no source value but the enterprise's own USCC
    seen = client.get("/api/v1/sme/financing/matches", headers=_as(client, town.officers["a"])).json()
    assert [m["request_number"] for m in seen] == [req["number"]]
    view = seen[0]
    assert view["profile"]["grade"] == "B" and "none" not in (view["profile"]["tax_violation_band"],
                                                              view["profile"]["lawsuit_band"])
    assert set(view["profile"]) == {"found", "grade", "tax_violation_band", "social_insurance_arrears_band",
                                    "lawsuit_band", "adverse_listing_flag", "precredit_band"}
    assert _leaks(town, seen) == []
    # a bank that was not matched sees nothing of it
    a_match = next(m["match_id"] for m in req["matches"] if m["bank_org_id"] == town.banks["a"].id)
    assert client.get(f"/api/v1/sme/financing/matches/{a_match}", headers=_as(client, town.officers["c"])).status_code \
        == 404
    assert client.get("/api/v1/sme/financing/matches", headers=_as(client, town.officers["c"])).json() == []
    # another enterprise does not see the request either
    stranger = make_user(session, enterprise_org(session, town.ref.clean[0]), "enterprise_finance")
    session.commit()
    assert client.get(f"/api/v1/sme/financing/requests/{req['id']}", headers=_as(client, stranger)).status_code == 404
    session.expire_all()
    notes = list(session.exec(select(Notification).where(Notification.kind == sme_financing.NOTIFICATION_MATCHED)))
    assert sorted(n.org_id for n in notes) == sorted([town.banks["a"].id, town.banks["b"].id])


def test_progress_moves_step_by_step_and_the_enterprise_sees_every_bank(client, session, town, market):
    req = client.post("/api/v1/sme/financing/requests", json=REQUEST, headers=_as(client, market.user)).json()
    match = {m["bank_org_id"]: m["match_id"] for m in req["matches"]}
    a, b = _as(client, town.officers["a"]), _as(client, town.officers["b"])
    url = f"/api/v1/sme/financing/matches/{match[town.banks['a'].id]}/progress"

    jump = client.post(url, json={"state": "approved"}, headers=a)
    assert jump.status_code == 409 and jump.json()["error"]["code"] == "illegal_transition"
    assert "is received; it can move to reviewing or declined, not approved" in jump.json()["error"]["message"]
    unknown = client.post(url, json={"state": "lost"}, headers=a)
    assert unknown.status_code == 422 and unknown.json()["error"]["details"]["field"] == "state"
    assert client.post(url, json={"state": "reviewing"}, headers=a).json()["state"] == "reviewing"
    stale = client.post(url, json={"state": "approved", "version": 1}, headers=a)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "match_changed"
    no_reason = client.post(url, json={"state": "declined"}, headers=a)
    assert no_reason.status_code == 422 and no_reason.json()["error"]["details"]["field"] == "note"
    for state in ("approved", "disbursed"):
        r = client.post(url, json={"state": state, "note": "ok"}, headers=a)
        assert r.status_code == 200 and r.json()["state"] == state
    final = client.post(url, json={"state": "reviewing"}, headers=a)
    assert final.status_code == 409 and "final state" in final.json()["error"]["message"]
    # bank b cannot move a's match; it declines its own
    assert client.post(url, json={"state": "reviewing"}, headers=b).status_code == 404
    b_url = f"/api/v1/sme/financing/matches/{match[town.banks['b'].id]}/progress"
    assert client.post(b_url, json={"state": "declined", "note": "行业额度已满"}, headers=b).status_code == 200

    mine = client.get(f"/api/v1/sme/financing/requests/{req['id']}", headers=_as(client, market.user)).json()
    states = {m["bank_org_id"]: (m["state"], [h["to"] for h in m["history"]]) for m in mine["matches"]}
    assert states == {town.banks["a"].id: ("disbursed", ["received", "reviewing", "approved", "disbursed"]),
                      town.banks["b"].id: ("declined", ["received", "declined"])}
    session.expire_all()
    assert len(_events(session, "sme.financing.progress")) == 4
    notes = list(session.exec(select(Notification).where(Notification.org_id == market.firm.id)))
    assert len(notes) == 4 and all(req["number"] in n.title for n in notes)


def test_two_steps_at_once_the_second_is_refused(session, town, market, db_settings):
    req = sme_financing.submit(session, db_settings, principal=who(market.firm), **REQUEST)
    session.commit()
    m_id = next(m.id for m in sme_financing.matches_of(session, req.id) if m.bank_org_id == town.banks["a"].id)
    bank = town.banks["a"].id
    with Session(core_db.get_engine(db_settings)) as s1, Session(core_db.get_engine(db_settings)) as s2:
        first, second = (sme_financing.get_match(s, m_id, org_id=bank) for s in (s1, s2))
        sme_financing.progress(s1, first, "reviewing", principal=who(bank, "officer 1"))
        s1.commit()
        with pytest.raises(Conflict, match="changed by someone else"):
            sme_financing.progress(s2, second, "declined", principal=who(bank, "officer 2"), note="no")
        s2.rollback()
    session.expire_all()
    assert session.get(FinancingMatch, m_id).state == "reviewing"


def test_bad_requests_name_the_field_and_record_nothing(client, session, town, market):
    headers = _as(client, market.user)
    cases = {"amount_band": {**REQUEST, "amount_band": "lots"}, "industry": {**REQUEST, "industry": "mining"},
             "authorize_sharing": {**REQUEST, "authorize_sharing": False}}
    for field, body in cases.items():
        r = client.post("/api/v1/sme/financing/requests", json=body, headers=headers)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    nameless = make_user(session, make_org(session, OrgKind.CUSTOMER), "enterprise_finance")
    session.commit()
    r = client.post("/api/v1/sme/financing/requests", json=REQUEST, headers=_as(client, nameless))
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_uscc"
    bad_product = client.post("/api/v1/sme/loan-products", headers=_as(client, town.officers["a"]), json={
        "name": "x", "min_amount_fen": 500, "max_amount_fen": 100, "min_term_months": 1, "max_term_months": 2})
    assert bad_product.status_code == 422 and bad_product.json()["error"]["details"]["field"] == "max_amount_fen"
    assert client.get("/api/v1/sme/financing/requests", headers=headers).json() == []
