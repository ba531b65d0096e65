"""The review's findings, each as the behaviour a user (or an attacker) would notice: forged consent,
lost updates on one case, objection floods, operators acting without an authorization, huge ids,
unbounded consents, one-request destruction, product revisions skipping the operator, double-counted
vetoes, silently estimated deadlines and the committee shown to everyone."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text as sql
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import db as core_db
from authops.core.clock import utcnow
from authops.core.errors import AuthopsError, Conflict, InvalidInput
from authops.core.identity import OrgKind
from authops.core.settings import Mode
from authops.core.storage.store import get_object_store
from authops.platform.governance import (agreements, consent, destruction, notifications, operator, partners,
                                         products, scenarios, workdays, workflow)
from authops.platform.governance.models import Case, CaseTransition, Consent, Review
from tests.platform.governance.matrix_products import (ID_A, ID_B, authorize_operator, certificate, consent_terms,
                                                       draft_fields, give_consent, keypair, lab, registered_product,
                                                       sign, usage_agreement, who)
from tests.platform.governance.matrix_scenarios import attach_all, org_actor, publish_call
from tests.support.builders import login, make_org, make_user

G = "/api/v1/governance"


def _as(org):
    return audit_log.Actor(kind="user", id=1, name="t", org_id=org.id)


# --- 1. consent: the subject's key must be certified by a trusted identity provider --------------------

@pytest.fixture
def shop(session, db_settings):
    bureau, op, partner, cust = (make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER,
                                                                OrgKind.CUSTOMER))
    session.commit()
    authorize_operator(session, op.id, bureau.id)
    p1 = registered_product(session, partner_id=partner.id, operator_id=op.id, personal=True)
    p2 = registered_product(session, partner_id=partner.id, operator_id=op.id, personal=True)
    session.commit()
    return {"p1": p1, "p2": p2, "customer": cust, "operator": op, "bureau": bureau}


def _args(terms):
    return {k: v for k, v in terms.items() if k != "product_id"}


def _text(session, settings, product, cust, cert, terms=None, **kw):
    return consent.prepare_text(session, settings, product=product, customer_org_id=cust.id,
                                subject_certificate=cert, **(terms or _args(consent_terms(product, **kw))))["text"]


def test_a_key_the_customer_made_itself_is_not_the_subjects(session, db_settings, shop):
    p, cust = shop["p1"], shop["customer"]
    sk, _ = keypair()
    rogue = Ed25519PrivateKey.generate()  # the customer plays identity provider
    forged = certificate(db_settings, sk, ID_A, issuer=rogue)
    with pytest.raises(consent.BadCertificate) as exc:
        _text(session, db_settings, p, cust, forged)
    assert "not a trusted identity provider" in exc.value.message
    # no certificate at all
    with pytest.raises(consent.BadCertificate) as exc:
        consent.grant(session, db_settings, product=p, customer_org_id=cust.id, actor=who(cust), signature="x",
                      **_args(consent_terms(p)))
    assert "required" in exc.value.message and exc.value.details == {"field": "subject_certificate"}
    assert session.exec(select(Consent)).all() == []


def test_a_certificate_binds_one_subject_and_one_key(session, db_settings, shop):
    p, cust = shop["p1"], shop["customer"]
    sk, _ = keypair()
    cert_b = certificate(db_settings, sk, ID_B)  # a real certificate, of subject B
    with pytest.raises(consent.BadCertificate) as exc:
        _text(session, db_settings, p, cust, cert_b)  # used for A
    assert "another subject" in exc.value.message and exc.value.details["field"] == "subject_id"
    cert_a = certificate(db_settings, sk, ID_A)
    terms = _args(consent_terms(p))  # one set of terms: the text signed is the text granted, whatever the clock does
    text = _text(session, db_settings, p, cust, cert_a, terms)
    other, other_pk = keypair()  # signed by a key the certificate does not certify
    with pytest.raises(consent.BadSignature):
        consent.grant(session, db_settings, product=p, customer_org_id=cust.id, actor=who(cust),
                      subject_certificate=cert_a, signature=sign(other, text), **terms)
    with pytest.raises(consent.BadCertificate) as exc:  # naming another key than the certified one
        consent.grant(session, db_settings, product=p, customer_org_id=cust.id, actor=who(cust),
                      subject_certificate=cert_a, public_key=other_pk, signature=sign(sk, text), **terms)
    assert exc.value.details == {"field": "public_key"}
    expired = certificate(db_settings, sk, ID_A, valid_until=utcnow() - timedelta(minutes=1))
    with pytest.raises(consent.BadCertificate) as exc:
        _text(session, db_settings, p, cust, expired)
    assert "expired" in exc.value.message
    tampered = {**cert_a, "certificate": cert_a["certificate"].replace('"person"', '"enterprise"')}
    with pytest.raises(consent.BadCertificate) as exc:
        _text(session, db_settings, p, cust, tampered, subject_kind="enterprise")
    assert "does not verify" in exc.value.message
    c = consent.grant(session, db_settings, product=p, customer_org_id=cust.id, actor=who(cust),
                      subject_certificate=cert_a, signature=sign(sk, text), **terms)
    v = consent.view(c)
    cert_sha = hashlib.sha256(cert_a["certificate"].encode()).hexdigest()
    assert v["subject_certificate"] == {"issuer": consent.issuer_id(consent.demo_issuer_key(db_settings).public_key()),
                                        "sha256": cert_sha}
    assert ID_A not in c.signed_text and cert_sha in c.signed_text
    assert "subject_id_sha256" not in c.signed_text  # the certificate itself is not stored


def test_the_configured_issuers_are_the_only_ones_trusted(session, db_settings, shop, monkeypatch, tmp_path):
    p, cust = shop["p1"], shop["customer"]
    city_app = Ed25519PrivateKey.generate()
    pem = city_app.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    path = tmp_path / "issuers.pem"
    path.write_text(pem)
    monkeypatch.setattr(db_settings, "consent_issuers", str(path))
    sk, _ = keypair()
    with pytest.raises(consent.BadCertificate):  # the demo issuer is no longer trusted
        _text(session, db_settings, p, cust, certificate(db_settings, sk, ID_A))
    text = _text(session, db_settings, p, cust, certificate(db_settings, sk, ID_A, issuer=city_app))
    assert consent.issuer_id(city_app.public_key()) in text
    monkeypatch.setattr(db_settings, "consent_issuers", pem)  # inline works too
    assert _text(session, db_settings, p, cust, certificate(db_settings, sk, ID_A, issuer=city_app)) == text
    monkeypatch.setattr(db_settings, "consent_issuers", "")
    monkeypatch.setattr(db_settings, "mode", Mode.PRODUCTION)  # no demo issuer in production
    with pytest.raises(consent.BadCertificate) as exc:
        _text(session, db_settings, p, cust, certificate(db_settings, sk, ID_A, issuer=city_app))
    assert "AUTHOPS_CONSENT_ISSUERS" in exc.value.message


def test_a_document_signature_binds_the_terms_and_cannot_be_replayed(session, db_settings, shop):
    p1, p2, cust = shop["p1"], shop["p2"], shop["customer"]
    sk, _ = keypair()
    cert = certificate(db_settings, sk, ID_A)
    doc = "个人授权书：本人同意查询缴费记录，用于贷前核验。".encode()
    digest = hashlib.sha256(doc).hexdigest()
    terms = _args(consent_terms(p1))  # one set of terms for the text and the grants, whatever the clock does
    text = consent.prepare_text(session, db_settings, product=p1, customer_org_id=cust.id, subject_certificate=cert,
                                document_sha256=digest, **terms)["text"]
    assert digest in text and p1.code in text
    with pytest.raises(consent.BadSignature):  # the bare document's signature is not a consent any more
        consent.grant_document(session, db_settings, product=p1, customer_org_id=cust.id, actor=who(cust),
                               document=doc, filename="d.txt", subject_certificate=cert, signature=sign(sk, doc),
                               **terms)
    c = consent.grant_document(session, db_settings, product=p1, customer_org_id=cust.id, actor=who(cust),
                               document=doc, filename="d.txt", subject_certificate=cert, signature=sign(sk, text),
                               **terms)
    assert c.method == "document" and c.document_sha256 == digest
    for product, purpose in ((p2, "贷前核验"), (p1, "营销")):  # the same signature for other terms
        with pytest.raises(consent.BadSignature):
            consent.grant_document(session, db_settings, product=product, customer_org_id=cust.id, actor=who(cust),
                                   document=doc, filename="d.txt", subject_certificate=cert, signature=sign(sk, text),
                                   **_args(consent_terms(product, purpose=purpose)))
    with pytest.raises(consent.BadSignature):  # another document under the same signature
        consent.grant_document(session, db_settings, product=p1, customer_org_id=cust.id, actor=who(cust),
                               document=doc + b" ", filename="d.txt", subject_certificate=cert,
                               signature=sign(sk, text), **terms)
    assert len(session.exec(select(Consent)).all()) == 1


# --- 7. consent limits and the purpose ---------------------------------------------------------------

def test_consent_validity_is_bounded(session, db_settings, shop):
    p, cust = shop["p1"], shop["customer"]
    sk, _ = keypair()
    cert = certificate(db_settings, sk, ID_A)
    with pytest.raises(InvalidInput) as exc:
        _text(session, db_settings, p, cust, cert, valid_until=utcnow() + timedelta(days=365 * 100))
    assert exc.value.details["field"] == "valid_until" and "at most 366 days" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        _text(session, db_settings, p, cust, cert, valid_from=utcnow() - timedelta(hours=1))
    assert exc.value.details["field"] == "valid_from" and "in the past" in exc.value.message
    a = usage_agreement(session, p, cust.id, ends_on=agreements.today() + timedelta(days=30))
    with pytest.raises(InvalidInput) as exc:
        _text(session, db_settings, p, cust, cert, valid_until=utcnow() + timedelta(days=60))
    assert exc.value.details["agreement"] == a.number and "never outlasts" in exc.value.message
    assert _text(session, db_settings, p, cust, cert, valid_until=utcnow() + timedelta(days=20))


def test_the_purpose_is_required_and_matched(session, db_settings, shop, client):
    p, cust = shop["p1"], shop["customer"]
    usage_agreement(session, p, cust.id)
    c, _ = give_consent(session, db_settings, p, cust.id, purpose="贷前 核验 Credit")
    session.commit()
    assert consent.check(session, p.id, cust.id, ID_A, purpose="  贷前   核验 credit ").id == c.id
    with pytest.raises(consent.NoConsent) as exc:
        consent.check(session, p.id, cust.id, ID_A)
    assert "names no purpose" in exc.value.message
    with pytest.raises(consent.NoConsent):
        consent.check(session, p.id, cust.id, ID_A, purpose="营销")
    user = make_user(session, cust, "customer_integrator")
    session.commit()
    h = login(client, user.username)
    r = client.post(f"{G}/products/{p.id}/call-check", headers=h, json={"subject_id": ID_A})
    assert r.status_code == 422 and "purpose" in r.json()["error"]["message"]
    r = client.post(f"{G}/products/{p.id}/call-check", headers=h, json={"subject_id": ID_A, "purpose": "贷前  核验 CREDIT"})
    assert r.json()["allowed"] is True, r.text


def test_consent_routes_need_the_certificate(session, db_settings, shop, client):
    p, cust = shop["p1"], shop["customer"]
    user = make_user(session, cust, "customer_admin")
    session.commit()
    h = login(client, user.username)
    terms = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in consent_terms(p).items()}
    r = client.post(f"{G}/consents/text", headers=h, json=terms)
    assert r.status_code == 422 and "subject_certificate" in r.json()["error"]["message"]
    sk, pk = keypair()
    cert = certificate(db_settings, sk, ID_A)
    text = client.post(f"{G}/consents/text", headers=h, json={**terms, "subject_certificate": cert}).json()["text"]
    forged_sk, forged_pk = keypair()
    r = client.post(f"{G}/consents", headers=h, json={**terms, "public_key": forged_pk,
                                                      "subject_certificate": certificate(db_settings, forged_sk, ID_A,
                                                                                         issuer=forged_sk),
                                                      "signature": sign(forged_sk, text)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_certificate"
    r = client.post(f"{G}/consents", headers=h, json={**terms, "subject_certificate": cert,
                                                      "signature": sign(sk, text)})
    assert r.status_code == 201 and r.json()["public_key"] == pk


# --- 2. concurrent steps on one case -------------------------------------------------------------------

def _publicity(session, settings):
    bureau, op, ex = make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.OPERATOR), make_org(session,
                                                                                                      OrgKind.EXPERT)
    session.commit()
    call = operator.publish_notice(session, actor=_as(bureau), title="n", deadline_at=utcnow() + timedelta(days=30),
                                   committee_org_ids=[ex.id], materials=["plan"])
    case = operator.file_application(session, call=call, actor=_as(op), title="a",
                                     payload={"security_officer": {"name": "x"}, "internal_security_rules": ["r"]})
    operator.add_document(session, get_object_store(settings), case, material="plan", filename="p.pdf",
                          content=b"plan", actor=_as(op))
    operator.submit(session, case, actor=_as(op))
    ends = utcnow() + timedelta(days=9)
    workflow.transition(session, case, "qualify", actor=audit_log.SYSTEM)
    workflow.transition(session, case, "select", actor=audit_log.SYSTEM,
                        facts={"publicity": {"starts_at": utcnow().isoformat(),
                                             "ends_at": ends.replace(microsecond=0).isoformat(), "ends_local": ""},
                               "objections": []})
    session.commit()
    return case


def _public(ip):
    return audit_log.Actor(kind="anonymous", name="public", ip=ip)


def test_a_step_on_a_case_read_before_another_step_is_refused(session, db_settings):
    """Same-state steps included: the second of two objections filed on one loaded case is not lost."""
    case = _publicity(session, db_settings)
    eng = core_db.get_engine(db_settings)
    with Session(eng, expire_on_commit=False) as s1, Session(eng, expire_on_commit=False) as s2:
        c1, c2 = s1.get(Case, case.id), s2.get(Case, case.id)
        operator.file_objection(s2, c2, text="objection B long enough", contact="b@x", actor=_public("10.0.0.2"))
        s2.commit()
        with pytest.raises(Conflict) as exc:
            operator.file_objection(s1, c1, text="objection A long enough", contact="a@x", actor=_public("10.0.0.1"))
        s1.rollback()
        assert exc.value.code == "case_changed" and "reload it and try again" in exc.value.message
        c1 = s1.get(Case, case.id)
        operator.file_objection(s1, c1, text="objection A long enough", contact="a@x", actor=_public("10.0.0.1"))
        s1.commit()
    with Session(eng) as s:
        c = s.get(Case, case.id)
        rows = s.exec(select(CaseTransition).where(CaseTransition.case_id == case.id,
                                                   CaseTransition.action == "object")).all()
        assert len(c.facts["objections"]) == len(rows) == 2


def _pg_only(db_settings):
    if db_settings.is_sqlite:
        pytest.skip("two writers at once on one row: PostgreSQL (SQLite serialises writers)")


def _wait_for_lock(eng, timeout=10.0):
    """Until some backend waits on a row lock (the second writer reached its UPDATE)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with eng.connect() as c:
            if c.execute(sql("select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                             "and datname = current_database()")).scalar():
                return
        time.sleep(0.05)
    raise AssertionError("the second writer never waited for the row lock")


def _race(eng, first, second):
    """`first` acts and holds its transaction; `second` acts in a thread (it blocks on the row); then `first`
    commits. Returns the second's outcome (None or the exception) after it finished."""
    out: dict = {}
    s1 = Session(eng, expire_on_commit=False)
    s2 = Session(eng, expire_on_commit=False)
    first(s1, "load")
    second(s2, "load")
    first(s1, "act")

    def run():
        try:
            second(s2, "act")
            s2.commit()
            out["result"] = None
        except Exception as e:  # noqa: BLE001 - the outcome is what the test asserts
            s2.rollback()
            out["result"] = e

    t = threading.Thread(target=run)
    t.start()
    _wait_for_lock(eng)
    s1.commit()
    t.join(30)
    s1.close()
    s2.close()
    return out["result"]


def test_two_objections_at_once_on_postgresql(session, db_settings):
    _pg_only(db_settings)
    case = _publicity(session, db_settings)
    eng = core_db.get_engine(db_settings)
    held: dict = {}

    def filer(name, ip):
        def step(s, phase):
            if phase == "load":
                held[name] = s.get(Case, case.id)
            else:
                operator.file_objection(s, held[name], text=f"objection {name} long enough", contact=f"{name}@x",
                                        actor=_public(ip))
        return step

    loser = _race(eng, filer("a", "10.0.0.1"), filer("b", "10.0.0.2"))
    assert isinstance(loser, Conflict) and loser.code == "case_changed"
    with Session(eng) as s:
        c = s.get(Case, case.id)
        rows = s.exec(select(CaseTransition).where(CaseTransition.case_id == case.id,
                                                   CaseTransition.action == "object")).all()
        assert len(c.facts["objections"]) == len(rows) == 1  # the loser's objection left no trace at all


def test_the_last_two_departments_approving_at_once_on_postgresql(session, db_settings):
    """Both read the reviews before either committed: the second is refused, retries, and the case moves on."""
    _pg_only(db_settings)
    partner, d1, d2 = (make_org(session, k) for k in (OrgKind.PARTNER, OrgKind.PROVIDER, OrgKind.PROVIDER))
    make_org(session, OrgKind.EXPERT)
    session.commit()
    case = workflow.open_case(session, kind=scenarios.KIND, applicant_org_id=partner.id, title="race",
                              payload={}, actor=_as(partner),
                              facts={"departments": [d1.id, d2.id], "request": [{"resource": "r", "fields": ["a"],
                                                                                 "share_modes": ["query"],
                                                                                 "epsilon": 1.0}]})
    workflow.transition(session, case, "submit", actor=_as(partner), awaiting_orgs=[d1.id, d2.id])
    session.commit()
    eng = core_db.get_engine(db_settings)
    held: dict = {}

    def approver(org):
        def step(s, phase):
            if phase == "load":
                held[org.id] = s.get(Case, case.id)
            else:
                scenarios.provider_review(s, held[org.id], actor=_as(org), decision="approve")
        return step

    loser = _race(eng, approver(d1), approver(d2))
    assert isinstance(loser, Conflict) and loser.code == "case_changed"
    with Session(eng) as s:
        c = s.get(Case, case.id)
        assert c.state == "provider_review" and c.awaiting_orgs == [d2.id]  # d2's approval was not kept
        assert [r.reviewer_org_id for r in s.exec(select(Review).where(Review.case_id == case.id))] == [d1.id]
        scenarios.provider_review(s, c, actor=_as(d2), decision="approve")  # d2 tries again
        s.commit()
        assert c.state == "expert_review"


# --- 3. objections: bounded ---------------------------------------------------------------------------

def test_objections_are_bounded(session, db_settings, client, monkeypatch):
    case = _publicity(session, db_settings)
    url = f"/api/v1/public/operator/applications/{case.id}/objections"
    r = client.post(url, json={"text": "x" * 2001, "contact": "a@x"})
    assert r.status_code == 422 and "at most 2000 characters" in r.json()["error"]["message"]
    r = client.post(url, json={"text": "a fair objection", "contact": "c" * 101})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "contact"
    codes = [client.post(url, json={"text": f"objection number {i}", "contact": "a@x"}).status_code for i in range(4)]
    assert codes == [201, 201, 201, 429]
    r = client.post(url, json={"text": "objection number 5", "contact": "a@x"})
    assert r.json()["error"]["code"] == "rate_limited" and "objection_per_ip_per_day = 3" in r.json()["error"]["message"]
    session.expire_all()
    for i in range(17):  # from other addresses, up to the open limit
        operator.file_objection(session, session.get(Case, case.id), text=f"objection from {i}",
                                contact="x@y", actor=_public(f"192.0.2.{i}"))
    session.commit()
    with pytest.raises(Conflict) as exc:
        operator.file_objection(session, session.get(Case, case.id), text="one objection too many", contact="x@y",
                                actor=_public("198.51.100.1"))
    assert exc.value.code == "too_many_objections" and "20 open objections" in exc.value.message
    session.rollback()
    c = session.get(Case, case.id)
    assert len(c.facts["objections"]) == 20
    for t in workflow.history(session, c):  # the address is kept only as a keyed digest
        assert "192.0.2." not in str(t.data) and "testclient" not in str(t.data)


# --- 5. an operator acts only under an authorization in force ----------------------------------------

@pytest.fixture
def recruiting(session):
    orgs = {k: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.EXPERT)}
    ag = authorize_operator(session, orgs[OrgKind.OPERATOR].id, orgs[OrgKind.BUREAU].id)
    session.commit()
    return {**{k.value: v for k, v in orgs.items()}, "agreement": ag}


def _expire(session, ag):
    ag.starts_on, ag.ends_on = ag.starts_on - timedelta(days=2000), workdays.shanghai_date(utcnow()) - timedelta(days=1)
    session.add(ag)
    session.flush()


def test_an_operator_whose_authorization_ended_reviews_nothing(session, recruiting):
    w = recruiting
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=org_actor(w["partner"]), call_id=call.id, title="申请",
                          payload={"profile": "金融科技公司"})
    attach_all(session, case, org_actor(w["partner"]))
    partners.submit(session, case, actor=org_actor(w["partner"]))
    _expire(session, w["agreement"])
    for attempt in (lambda: partners.operator_review(session, case, actor=org_actor(w["operator"]), decision="approve"),
                    lambda: partners.appoint_experts(session, case, actor=org_actor(w["operator"]),
                                                     expert_org_ids=[w["expert"].id])):
        with pytest.raises(AuthopsError) as exc:
            attempt()
        assert exc.value.status_code == 403 and exc.value.code == "no_active_authorization"
        assert "expired" in exc.value.message
    assert case.state == "operator_review" and workflow.reviews(session, case) == []
    # the bureau may still appoint experts: it needs no operator authorization
    partners.appoint_experts(session, case, actor=org_actor(w["bureau"]), expert_org_ids=[w["expert"].id])


def test_an_exited_operator_offers_no_agreement_and_files_no_tool(session, recruiting):
    w = recruiting
    call = publish_call(session, w["operator"])
    case = partners.apply(session, actor=org_actor(w["partner"]), call_id=call.id, title="申请",
                          payload={"profile": "金融科技公司"})
    attach_all(session, case, org_actor(w["partner"]))
    partners.submit(session, case, actor=org_actor(w["partner"]))
    partners.operator_review(session, case, actor=org_actor(w["operator"]), decision="approve")
    partners.bureau_review(session, case, actor=org_actor(w["bureau"]), decision="approve")
    ag = w["agreement"]
    ag.state, ag.terms = "exited", {**ag.terms, "exit_on": str(workdays.shanghai_date(utcnow()) - timedelta(days=1))}
    session.add(ag)
    session.flush()
    with pytest.raises(AuthopsError) as exc:
        partners.offer_agreement(session, case, actor=org_actor(w["operator"]), terms={})
    assert exc.value.code == "no_active_authorization" and "exited" in exc.value.message
    from authops.platform.governance import tools

    with pytest.raises(AuthopsError) as exc:
        tools.apply(session, actor=org_actor(w["operator"]), body={})
    assert exc.value.code == "no_active_authorization"


# --- 6. ids out of range are a 422 naming the field -------------------------------------------------

def test_huge_ids_are_refused_naming_the_field(session, client):
    bureau, partner = (make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.PARTNER))
    ub, up = make_user(session, bureau, "bureau_admin"), make_user(session, partner, "partner_admin")
    session.commit()
    hb, hp = login(client, ub.username), login(client, up.username)
    big = 10**30
    probes = [
        (hb, "post", f"{G}/operator/notices", {"title": "t", "deadline_at": "2030-01-01T00:00:00+08:00",
                                               "committee_org_ids": [big]}, "body.committee_org_ids.0"),
        (hb, "post", f"{G}/operator/facts", {"operator_org_id": big, "kind": "fraud", "summary": "s"},
         "body.operator_org_id"),
        (hb, "post", f"{G}/operator/exits/forced", {"operator_org_id": 10**12, "cause": "fraud", "reasons": "r"},
         "body.operator_org_id"),
        (hp, "post", f"{G}/partners/applications", {"call_id": big, "title": "t", "payload": {}}, "body.call_id"),
        (hb, "post", f"{G}/scenarios/1/experts", {"expert_org_ids": [big]}, "body.expert_org_ids.0"),
        (hb, "get", f"{G}/operator/facts?operator_org_id={big}", None, "query.operator_org_id"),
        (hp, "post", f"{G}/agreements/usage", {"product_id": big, "scenario": "s"}, "body.product_id"),
    ]
    for h, method, url, body, field in probes:
        r = getattr(client, method)(url, headers=h, **({"json": body} if body is not None else {}))
        assert r.status_code == 422, (url, r.status_code, r.text)
        assert field in [d["field"] for d in r.json()["error"]["details"]], (url, r.text)


# --- 8. destruction needs an explicit confirmation --------------------------------------------------

def test_destruction_needs_the_agreement_number_and_says_whose_signature_it_is(session, db_settings):
    bureau, op = make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.OPERATOR)
    b = _as(bureau)
    ag = agreements.create(session, kind=operator.AGREEMENT_KIND, party_a_org_id=bureau.id, party_b_org_id=op.id,
                           terms={"exit_on": str(workdays.shanghai_date(utcnow()) - timedelta(days=1))},
                           starts_on=date(2025, 1, 1), ends_on=date(2027, 12, 31), actor=b, text="t", state="exited")
    store = get_object_store(db_settings)
    store.put("datasets/x/1", b"raw rows")
    session.commit()
    for confirm in (None, "yes", "OA-0000-00000"):
        with pytest.raises(InvalidInput) as exc:
            destruction.destroy_operation(session, store, ag, actor=b, settings=db_settings, returned="returned",
                                          confirm=confirm)
        assert exc.value.code == "confirmation_required" and ag.number in exc.value.message
    assert store.get("datasets/x/1") == b"raw rows"  # nothing was touched
    cert = destruction.destroy_operation(session, store, ag, actor=b, settings=db_settings, returned="returned",
                                         confirm=ag.number)
    body = destruction.certificate_view(cert)["body"]
    assert "platform's own signing key" in body["signature_note"] and "re-reads" in body["signature_note"]


# --- 9. a revised product goes back to the operator when what it checked changed -------------------

@pytest.fixture
def product_world(session, db_settings):
    orgs = {k: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.PROVIDER)}
    session.commit()
    authorize_operator(session, orgs[OrgKind.OPERATOR].id, orgs[OrgKind.BUREAU].id)
    session.commit()
    return {**{k.value: v for k, v in orgs.items()},
            "lab": lab(session, db_settings, orgs[OrgKind.PARTNER], orgs[OrgKind.PROVIDER])}


def test_a_price_change_after_a_bureau_return_goes_back_to_the_operator(session, db_settings, product_world):
    w = product_world
    p = products.create_draft(session, partner_org_id=w["partner"].id, code="payer_records", actor=who(w["partner"]),
                              settings=db_settings, **draft_fields(w["lab"], w["operator"].id))
    products.submit(session, p, actor=who(w["partner"]), settings=db_settings)
    products.operator_check(session, p, actor=who(w["operator"]), decision="approve")
    products.bureau_file(session, p, actor=who(w["bureau"]), decision="return", reasons="补充场景说明")
    products.update_draft(session, p, actor=who(w["partner"]), settings=db_settings, price_fen=9900,
                          pricing_basis="成本加成 30%")
    case = products.submit(session, p, actor=who(w["partner"]), settings=db_settings)
    assert case.state == "operator_check" and case.awaiting_orgs == [w["operator"].id]
    last = workflow.history(session, case)[-1]
    assert last.action == "resubmit" and "price" in last.reason and "operator checks it again" in last.reason
    products.operator_check(session, p, actor=who(w["operator"]), decision="approve")
    products.bureau_file(session, p, actor=who(w["bureau"]), decision="return", reasons="再补充")
    products.update_draft(session, p, actor=who(w["partner"]), settings=db_settings, manner_of_use="批量文件交付")
    assert products.submit(session, p, actor=who(w["partner"]), settings=db_settings).state == "operator_check"


# --- 10. the veto counts assessed years ---------------------------------------------------------------

def test_two_unqualified_results_for_one_year_are_one(session):
    bureau, op = make_org(session, OrgKind.BUREAU), make_org(session, OrgKind.OPERATOR)
    ag = authorize_operator(session, op.id, bureau.id)
    for _ in range(2):
        operator.record_fact(session, operator_org_id=op.id, kind="assessment_unqualified", year=2026,
                             summary="不合格", actor=_as(bureau))
    assert operator.vetoes(session, op.id, ag) == []
    operator.record_fact(session, operator_org_id=op.id, kind="assessment_unqualified", year=2027,
                         summary="不合格", actor=_as(bureau))
    assert operator.vetoes(session, op.id, ag) == ["assessment_unqualified: 2 years in total (years 2026, 2027)"]


# --- 11. deadlines in a year the calendar does not know ----------------------------------------------

def test_a_deadline_in_an_unknown_year_says_it_is_estimated(session, client):
    assert not workdays.known(date(2027, 3, 1))
    partner, bureau = make_org(session, OrgKind.PARTNER), make_org(session, OrgKind.BUREAU)
    late = workflow.open_case(session, kind="tool_deployment", applicant_org_id=partner.id, title="t",
                              payload={}, actor=_as(partner), awaiting_orgs=[bureau.id],
                              due_at=datetime(2027, 3, 1, 15, 59))
    soon = workflow.open_case(session, kind="tool_deployment", applicant_org_id=partner.id, title="t2",
                              payload={}, actor=_as(partner), awaiting_orgs=[bureau.id],
                              due_at=datetime(2026, 3, 2, 15, 59))
    session.commit()
    note = "(estimated: the State Council's holiday schedule for 2027 is not yet in the calendar)"
    v = workflow.view(session, late)
    assert v["due_at_estimated"] is True and v["due_at_note"] in note
    assert workflow.view(session, soon)["due_at_estimated"] is False
    items = {c["number"]: c for c in notifications.todo(session, _as(bureau))["cases"]}
    assert items[late.number]["due_at_local"].endswith(note) and items[late.number]["due_at_estimated"] is True
    assert "estimated" not in items[soon.number]["due_at_local"]
    titles = [n.title for n in notifications.list_notifications(session, bureau.id)]
    assert any(late.number in t and note in t for t in titles)


# --- 12. the committee is the bureau's to see -------------------------------------------------------

def test_only_the_bureau_sees_the_committee_of_a_notice(session, client):
    bureau, op, ex = (make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.EXPERT))
    operator.publish_notice(session, actor=_as(bureau), title="n", deadline_at=utcnow() + timedelta(days=30),
                            committee_org_ids=[ex.id], materials=["plan"])
    ub, uo = make_user(session, bureau, "bureau_admin"), make_user(session, op, "operator_admin")
    session.commit()
    hb, ho = login(client, ub.username), login(client, uo.username)
    [seen_by_bureau] = client.get(f"{G}/operator/notices", headers=hb).json()
    assert seen_by_bureau["committee_org_ids"] == [ex.id] and seen_by_bureau["applications"] == 0
    [seen_by_operator] = client.get(f"{G}/operator/notices", headers=ho).json()
    assert "committee_org_ids" not in seen_by_operator and "applications" not in seen_by_operator
    assert seen_by_operator["title"] == "n"

