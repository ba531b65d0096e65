"""Personal consent: keyed pseudonyms, Ed25519-signed consent texts and signed documents, the check
on every call, revocation by the subject (signed, public route) and by the customer."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlmodel import select

from authops.core.clock import travelled, utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.governance import consent, products
from authops.platform.governance.models import Consent
from tests.platform.governance.matrix_products import (ID_A, ID_B, authorize_operator, certificate, consent_terms,
                                                       give_consent,
                                                       keypair, registered_product, sign, signed_consent_body,
                                                       usage_agreement, who)
from tests.support.builders import login, make_org, make_user


@pytest.fixture
def world(session):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["other_customer"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    w["product"] = registered_product(session, partner_id=w["partner"].id, operator_id=w["operator"].id,
                                      personal=True)
    session.commit()
    return w


def _grant_args(body):
    return {k: v for k, v in body.items() if k != "product_id"}


def test_the_subject_is_a_keyed_pseudonym(db_settings):
    k = consent.subject_key(db_settings, ID_A)
    assert len(k) == 64 and ID_A not in k
    assert consent.subject_key(db_settings, " " + ID_A.lower() + " ") == k  # normalized: 32…x is 32…X
    assert consent.subject_key(db_settings, ID_B) != k
    import hashlib
    assert k != hashlib.sha256(ID_A.encode()).hexdigest()  # not an unkeyed hash anyone could recompute
    other = Settings(secret_key="another-secret-of-enough-length-0123456789")
    assert consent.subject_key(other, ID_A) != k


def test_an_ed25519_consent_is_verified_and_stored_without_the_raw_id(session, db_settings, world):
    body, _ = signed_consent_body(session, db_settings, world["product"], world["customer"].id)
    c = consent.grant(session, db_settings, product=world["product"], customer_org_id=world["customer"].id,
                      actor=who(world["customer"]), **_grant_args(body))
    session.commit()
    assert c.method == "ed25519" and c.state == "active" and c.subject_key == consent.subject_key(db_settings, ID_A)
    assert f'"subject":"{c.subject_key}"' in c.signed_text and f'"product":"{world["product"].code}"' in c.signed_text
    row = session.exec(select(Consent).where(Consent.id == c.id)).one()
    assert ID_A not in str(row.model_dump())
    assert consent.check(session, world["product"].id, world["customer"].id, ID_A, purpose="贷前核验").id == c.id


def test_a_signature_that_does_not_verify_is_refused(session, db_settings, world):
    p, cust = world["product"], world["customer"].id
    body, _ = signed_consent_body(session, db_settings, p, cust)
    _, other_pk = keypair()
    for bad, field, code in (({"public_key": other_pk}, "public_key", "bad_certificate"),  # not the certified key
                             ({"signature": sign(keypair()[0], "x")}, "signature", "bad_signature"),  # another key
                             ({"purpose": "营销推广"}, "signature", "bad_signature"),  # not the terms signed
                             ({"valid_until": body["valid_until"] + timedelta(days=1)}, "signature", "bad_signature"),
                             ({"signature": "not base64!"}, "signature", "invalid_input"),
                             ({"public_key": "AAAA"}, "public_key", "bad_certificate")):
        with pytest.raises(InvalidInput) as e:
            consent.grant(session, db_settings, product=p, customer_org_id=cust, actor=who(cust),
                          **_grant_args({**body, **bad}))
        assert e.value.details == {"field": field} and e.value.code == code, bad
    body_b, _ = signed_consent_body(session, db_settings, p, cust, subject_id=ID_B)
    with pytest.raises(consent.BadCertificate) as e:  # subject B's certified key does not speak for subject A
        consent.grant(session, db_settings, product=p, customer_org_id=cust, actor=who(cust),
                      **_grant_args({**body_b, "subject_id": ID_A}))
    assert "another subject" in e.value.message
    assert session.exec(select(Consent)).all() == []


def test_check_refuses_none_expired_other_purpose_and_revoked(session, db_settings, world):
    p, cust = world["product"], world["customer"].id

    def why(**kw) -> str:
        with pytest.raises(consent.NoConsent) as e:
            consent.check(session, p.id, cust, ID_A, settings=db_settings, **kw)
        assert e.value.code == "no_consent" and e.value.status_code == 403
        return e.value.message

    assert "given no consent" in why()
    c, sk = give_consent(session, db_settings, p, cust, valid_until=utcnow() + timedelta(days=10))
    assert consent.check(session, p.id, cust, ID_A, purpose="贷前核验", settings=db_settings) == c
    assert "covers the purpose '贷前核验', not '营销'" in why(purpose="营销")
    with pytest.raises(consent.NoConsent):  # another customer has no consent from this subject
        consent.check(session, p.id, world["other_customer"].id, ID_A, settings=db_settings)
    with travelled(timedelta(days=11)):
        assert "expired on" in why()
    consent.revoke_by_subject(session, c.id, signature=sign(sk, consent.revocation_text(c)))
    assert "was revoked on" in why() and "(subject)" in why()
    with pytest.raises(Conflict):
        consent.revoke_by_subject(session, c.id, signature=sign(sk, consent.revocation_text(c)))


def test_a_signed_document_is_verified_and_kept_encrypted(session, db_settings, world):
    p, cust = world["product"], world["customer"].id
    doc = "个人信息授权书：本人同意……签名：张三丰".encode() + os.urandom(16)
    sk, pk = keypair()
    terms = consent_terms(p)
    cert = certificate(db_settings, sk)
    import hashlib
    # the subject signs the consent text that names the document's SHA-256
    text = consent.prepare_text(session, db_settings, product=p, customer_org_id=cust, subject_certificate=cert,
                                document_sha256=hashlib.sha256(doc).hexdigest(), **_grant_args(terms))["text"]
    with pytest.raises(consent.BadSignature):
        consent.grant_document(session, db_settings, product=p, customer_org_id=cust, actor=who(cust), document=doc,
                               filename="授权书.pdf", subject_certificate=cert, signature=sign(sk, text + "x"),
                               **_grant_args(terms))
    c = consent.grant_document(session, db_settings, product=p, customer_org_id=cust, actor=who(cust), document=doc,
                               filename="授权书.pdf", public_key=pk, subject_certificate=cert,
                               signature=sign(sk, text), **_grant_args(terms))
    session.commit()
    assert c.method == "document" and c.document_sha256 == hashlib.sha256(doc).hexdigest()
    store = get_object_store(db_settings)
    assert store.get(f"governance/consents/{c.document_sha256}") == doc
    for root, _, files in os.walk(db_settings.data_dir):  # nothing of the document is on disk in clear
        for f in files:
            assert doc not in open(os.path.join(root, f), "rb").read(), f
    assert consent.check(session, p.id, cust, ID_A, purpose="贷前核验", settings=db_settings) == c


def test_revocation_takes_effect_on_the_next_call(session, db_settings, world):
    p, cust = world["product"], world["customer"].id
    usage_agreement(session, p, cust)
    c, _ = give_consent(session, db_settings, p, cust)
    assert products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A,
                               purpose="贷前核验")["consent_id"] == c.id
    with pytest.raises(NotFound):  # another customer cannot revoke it
        consent.revoke_by_customer(session, c, actor=who(world["other_customer"]))
    consent.revoke_by_customer(session, c, actor=who(cust), reason="客户关闭业务")
    with pytest.raises(consent.NoConsent) as e:
        products.guard_call(session, customer_org_id=cust, product_id=p.id, subject_id=ID_A, purpose="贷前核验")
    assert "revoked" in e.value.message


def test_consent_over_the_api_and_the_subjects_signed_revocation(client, session, db_settings, world):
    users = [make_user(session, world["customer"], "customer_integrator"),
             make_user(session, world["other_customer"], "customer_admin")]
    session.commit()
    h, other = (login(client, u.username) for u in users)
    G = "/api/v1/governance"
    p = world["product"]
    usage_agreement(session, p, world["customer"].id)
    session.commit()
    sk, pk = keypair()
    terms = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in consent_terms(p).items()}
    terms["subject_certificate"] = certificate(db_settings, sk)
    r = client.post(f"{G}/consents/text", json=terms, headers=h)
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert ID_A not in r.text
    r = client.post(f"{G}/consents", json={**terms, "public_key": pk, "signature": sign(sk, text + " ")}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_signature"
    r = client.post(f"{G}/consents", json={**terms, "public_key": pk, "signature": sign(sk, text)}, headers=h)
    assert r.status_code == 201 and ID_A not in r.text
    cid = r.json()["id"]
    assert client.get(f"{G}/consents/{cid}", headers=other).status_code == 404
    check = f"{G}/products/{p.id}/call-check"
    purpose = terms["purpose"]
    assert client.post(check, json={"subject_id": ID_A, "purpose": purpose}, headers=h).json()["allowed"] is True
    r = client.post(check, json={"subject_id": ID_B, "purpose": purpose}, headers=h).json()
    assert r["allowed"] is False and r["code"] == "no_consent"
    revocation = client.get(f"{G}/consents/{cid}", headers=h).json()["revocation_text"]
    r = client.post(f"/api/v1/public/consents/{cid}/revoke", json={"signature": sign(keypair()[0], revocation)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_signature"
    r = client.post(f"/api/v1/public/consents/{cid}/revoke", json={"signature": sign(sk, revocation)})
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = client.post(check, json={"subject_id": ID_A, "purpose": purpose}, headers=h).json()
    assert r["allowed"] is False and r["code"] == "no_consent" and "revoked" in r["reason"]
