"""After exit: every object of the operation is crypto-shredded and a signed certificate lists it;
the bureau verifies the certificate; a tampered certificate fails."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.governance import agreements, destruction, operator
from authops.platform.governance.models import DestructionCertificate
from tests.support.builders import make_org, make_user

EXIT_DAY = datetime(2027, 9, 1, 2, 0)
OBJECTS = {"datasets/MR_ENT_REG/v1/000001.parquet": b"raw enterprise rows",
           "mocks/MR_ENT_REG/v1.parquet": b"mock rows",
           "partials/7/score/0-of-2/sums.parquet": b"partial sums",
           "releases/7/score.parquet": b"released scores",
           "uploads/MR_ENT_REG/3.csv": b"uscc,name\n"}
KEEP = {"governance/operator_application/1/abc": b"an application's material",
        "audit/checkpoints/0001.json": b"{}"}


def _actor(user):
    return audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=user.org_id)


@pytest.fixture
def exited(session, db_settings):
    """An operator whose authorization ended with a forced exit on 1 September 2027, and its store."""
    bureau = make_org(session, OrgKind.BUREAU)
    op = make_org(session, OrgKind.OPERATOR)
    b, o = _actor(make_user(session, bureau, "bureau_admin")), _actor(make_user(session, op, "operator_admin"))
    ag = agreements.create(session, kind=operator.AGREEMENT_KIND, party_a_org_id=bureau.id, party_b_org_id=op.id,
                           terms={"scope": "whole city"}, starts_on=date(2026, 10, 16), ends_on=date(2029, 10, 15),
                           actor=b, text="authorization text")
    agreements.accept(session, ag, b)
    agreements.accept(session, ag, o)
    operator.record_fact(session, operator_org_id=op.id, kind="fraud", summary="falsified report", actor=b,
                         now=EXIT_DAY)
    operator.force_exit(session, operator_org_id=op.id, cause="fraud", reasons="falsified report", actor=b,
                        now=EXIT_DAY, settings=db_settings)
    store = get_object_store(db_settings)
    for key, data in {**OBJECTS, **KEEP}.items():
        store.put(key, data)
    session.commit()
    return {"agreement": ag, "bureau": b, "operator": o, "store": store, "settings": db_settings}


def _destroy(session, x, **kw):
    return destruction.destroy_operation(session, x["store"], x["agreement"], actor=x["bureau"],
                                         confirm=kw.pop("confirm", x["agreement"].number),
                                         settings=x["settings"], returned=kw.pop("returned", "raw data returned "
                                         "to the providing departments on 2027-09-03, receipts on file"),
                                         now=kw.pop("now", datetime(2027, 9, 10, 2, 0)))


def test_destruction_shreds_every_object_and_signs_the_list(session, exited):
    store = exited["store"]
    before = {k: store.stat(k) for k in OBJECTS}
    cert = _destroy(session, exited)
    body = json.loads(cert.body)
    assert cert.number.startswith("DC-") and cert.objects == len(OBJECTS) == body["count"]
    assert {o["key"] for o in body["objects"]} == set(OBJECTS)
    for o in body["objects"]:
        assert (o["size"], o["sha256"]) == (before[o["key"]].size, before[o["key"]].sha256)
    assert body["agreement"] == exited["agreement"].number and body["exit_on"] == "2027-09-01"
    assert body["due_on"] == "2027-10-01" and cert.due_on == date(2027, 10, 1) and body["late"] is False
    assert "returned to the providing departments" in body["raw_data_returned"]
    # A listed object can no longer be read: its key record (the wrapped data key) is gone, then its data.
    for key in OBJECTS:
        with pytest.raises(NotFound):
            store.get(key)
        assert not store.backend.exists(destruction._record_name(key)) and not store.backend.exists(key)
    # The bureau's records stay.
    assert {k: store.get(k) for k in KEEP} == KEEP
    # Verification: the signature holds and everything listed is gone.
    result = destruction.verify_certificate(session, store, cert, actor=exited["bureau"], settings=exited["settings"])
    assert result["valid"] is True and result["problems"] == [] and cert.verified_at is not None
    assert cert.verified_by == exited["bureau"].name
    session.commit()
    actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.action.like("gov.destruction.%"))
                                              .order_by(AuditEvent.seq))]
    assert actions == ["gov.destruction.object"] * len(OBJECTS) + ["gov.destruction.certify", "gov.destruction.verify"]
    with pytest.raises(Conflict) as exc:
        _destroy(session, exited)
    assert exc.value.code == "already_destroyed"


def test_crypto_shredding_alone_makes_the_ciphertext_unreadable(exited):
    store = exited["store"]
    key = "datasets/MR_ENT_REG/v1/000001.parquet"
    ciphertext = store.backend.read(key)
    store.backend.delete(destruction._record_name(key))  # the data key only, the ciphertext stays
    assert store.backend.exists(key)
    with pytest.raises(NotFound):
        store.get(key)
    store.backend.write(key, [ciphertext])  # even a surviving copy of the ciphertext has no key to open it
    assert destruction.is_unreadable(store, key)
    assert OBJECTS[key] not in ciphertext


def test_a_tampered_certificate_fails_verification(session, exited):
    cert = _destroy(session, exited)
    body = json.loads(cert.body)
    body["objects"] = body["objects"][1:]  # hide one object from the list
    body["count"] -= 1
    cert.body = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    result = destruction.verify_certificate(session, exited["store"], cert, actor=exited["bureau"],
                                            settings=exited["settings"])
    assert result["valid"] is False and cert.verified_at is None
    assert "the signature does not match the body: the certificate was altered" in result["problems"]
    session.commit()
    ev = session.exec(select(AuditEvent).where(AuditEvent.action == "gov.destruction.verify")).one()
    assert ev.outcome == "error"


def test_verification_fails_while_a_listed_object_is_readable(session, exited):
    cert = _destroy(session, exited)
    key = "releases/7/score.parquet"
    exited["store"].put(key, OBJECTS[key])  # a copy of the same data came back
    result = destruction.verify_certificate(session, exited["store"], cert, actor=exited["bureau"],
                                            settings=exited["settings"])
    assert result["valid"] is False and result["problems"] == [f"object {key} is still readable"]
    assert session.get(DestructionCertificate, cert.id).verified_at is None


def test_destruction_only_after_exit_and_with_the_return_recorded(session, exited):
    with pytest.raises(InvalidInput) as exc:
        _destroy(session, exited, returned=" ")
    assert exc.value.details == {"field": "returned"}
    with pytest.raises(Conflict) as exc:
        _destroy(session, exited, now=datetime(2027, 8, 1, 2, 0))  # before the exit date
    assert exc.value.code == "not_exited"
    late = _destroy(session, exited, now=datetime(2027, 10, 5, 2, 0))
    assert json.loads(late.body)["late"] is True  # past the 30 days: issued, and says so


def test_an_active_authorization_cannot_be_destroyed(session, db_settings):
    bureau = make_org(session, OrgKind.BUREAU)
    op = make_org(session, OrgKind.OPERATOR)
    b = _actor(make_user(session, bureau, "bureau_admin"))
    ag = agreements.create(session, kind=operator.AGREEMENT_KIND, party_a_org_id=bureau.id, party_b_org_id=op.id,
                           terms={}, starts_on=date(2026, 10, 16), ends_on=date(2029, 10, 15), actor=b, text="t")
    with pytest.raises(Conflict) as exc:
        destruction.destroy_operation(session, get_object_store(db_settings), ag, actor=b, settings=db_settings,
                                      returned="returned")
    assert exc.value.code == "not_exited" and "pending" in exc.value.message
