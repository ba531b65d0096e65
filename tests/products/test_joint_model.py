"""Joint modelling over the HTTP API: a bank's labels go in and stay in; the model trained on the public
data beats the label-free credit score on the holdout; only the bank can score with it, under its
agreement and the enterprise's consent; no route gives anyone the labels or the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlmodel import select

from authops.app import iter_routes
from authops.audit.models import AuditEvent
from authops.core.data import identifiers
from authops.core.identity import OrgKind
from authops.core.jobs.models import Job
from authops.core.storage.store import get_object_store
from authops.platform.products import joint
from authops.platform.products.joint_models import JointModel
from authops.platform.products.joint_synth import labels_csv, synthetic_labels
from authops.products.catalog import PRODUCTS
from tests.platform.governance.matrix_products import authorize_operator, usage_agreement
from tests.platform.products.matrix_joint import (CODE, PURPOSE, bank_product, city_tables, enterprise_consent,
                                                  load_city, run)
from tests.support import leakscan
from tests.support.builders import login, make_org, make_user

SCALE, SEED = 0.02, 11  # 2,000 firms
N_LABELS, LABEL_SEED = 1500, 1
URL = "/api/v1/products/joint-models"


def _orgs(session):
    w = {k.value: make_org(session, k) for k in (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)}
    w["stranger"] = make_org(session, OrgKind.CUSTOMER)
    session.commit()
    authorize_operator(session, w["operator"].id, w["bureau"].id)
    w["product"] = bank_product(session, partner_id=w["partner"].id, operator_id=w["operator"].id)
    for c in (w["customer"], w["stranger"]):
        usage_agreement(session, w["product"], c.id)
    w["users"] = {"bank": make_user(session, w["customer"], "customer_integrator"),
                  "bank_admin": make_user(session, w["customer"], "customer_admin"),
                  "stranger": make_user(session, w["stranger"], "customer_admin"),
                  "operator": make_user(session, w["operator"], "operator_staff"),
                  "partner": make_user(session, w["partner"], "partner_admin"),
                  "bureau": make_user(session, w["bureau"])}
    session.commit()
    return w


@pytest.fixture
def bank(session, db_settings):
    """The product and the parties, without data (uploads are checked before anything is read)."""
    return _orgs(session)


@pytest.fixture
def city(session, db_settings):
    load_city(session, db_settings, scale=SCALE, seed=SEED)
    w = _orgs(session)
    w["tables"] = city_tables(scale=SCALE, seed=SEED)
    w["labels"] = synthetic_labels(w["tables"], N_LABELS, LABEL_SEED)
    return w


def _upload(client, headers, data: bytes, name: str = "对公贷款违约模型"):
    return client.post(URL, files={"file": ("loans.csv", data, "text/csv")}, data={"name": name}, headers=headers)


def _events(session, action):
    session.expire_all()
    return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def _text(e) -> str:
    return e.canonical.decode() if isinstance(e.canonical, bytes) else e.canonical


def _trained(client, session, db_settings, w) -> dict:
    headers = login(client, w["users"]["bank"].username)
    r = _upload(client, headers, labels_csv(w["labels"]))
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "queued" and r.json()["labels"] == N_LABELS
    assert run(db_settings, r.json()["job_id"]) == "succeeded"
    return client.get(f"{URL}/{r.json()['id']}", headers=headers).json()


def _unknown_usccs(n: int) -> list[str]:
    return [f"91320000{i:09d}" + identifiers.uscc_check_char(f"91320000{i:09d}") for i in range(n)]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _leaks(w, bodies) -> list[str]:
    return leakscan.scan([_flat(b) for b in bodies], {r: w["tables"][r] for r in PRODUCTS[CODE].resources},
                         _definitions())


def _definitions():
    from authops.platform.catalog.csvload import BUILTIN, load_definitions

    return load_definitions(BUILTIN)


# --- training ---------------------------------------------------------------------------------------

def test_the_joint_model_beats_the_label_free_score_on_the_holdout(client, session, db_settings, city):
    model = _trained(client, session, db_settings, city)
    assert model["state"] == "ready", model
    m, b = model["metrics"], model["baseline_metrics"]
    print(f"\nholdout of {m['holdout']} (of {model['matched']} matched labels):"
          f"\n  {'':<26}{'AUC':>7}{'KS':>7}{'accuracy':>10}"
          f"\n  {'joint model (bank labels)':<26}{m['auc']:>7.3f}{m['ks']:>7.3f}{m['accuracy']:>10.3f}"
          f"\n  {'credit score (no labels)':<26}{b['auc']:>7.3f}{b['ks']:>7.3f}{b['accuracy']:>10.3f}")
    assert m["holdout"] == b["holdout"] and m["holdout"] == pytest.approx(0.3 * N_LABELS, abs=2)
    assert model["matched"] == N_LABELS  # every labelled firm is in the public data
    assert m["auc"] > b["auc"] > 0.5  # the generic score ranks too, the bank's own labels rank better
    assert m["ks"] > b["ks"]
    # what the bank sees: counts, metrics and the feature names; no label, no coefficient
    assert set(model) == {"id", "name", "customer_org_id", "product", "state", "error", "job_id", "labels",
                          "matched", "scored", "features", "metrics", "baseline_metrics", "created_at",
                          "trained_at"}
    assert "tax_violation_months" in model["features"] and "score" not in model["features"]
    assert all(isinstance(v, (int, float)) and round(v, 3) == v for v in m.values())
    assert _leaks(city, [model]) == []
    trained = _events(session, "product.joint.train")
    assert len(trained) == 1 and json.loads(_text(trained[0]))["details"]["auc"] == str(m["auc"])
    assert _events(session, "product.joint.upload")


def test_the_labels_and_the_model_are_stored_sealed_and_keyed_by_digest(client, session, db_settings, city):
    model = _trained(client, session, db_settings, city)
    row = session.get(JointModel, model["id"])
    store = get_object_store(db_settings)
    digests = joint.rt.read_table(store.get(row.labels_object_key))
    assert digests.column_names == ["digest", "label"] and digests.num_rows == N_LABELS
    some = [u for u, _ in city["labels"][:50]]
    for key in (row.labels_object_key, row.model_object_key, row.scores_object_key):
        at_rest = store.backend.read(key)  # what the disk (or the S3 bucket) holds
        assert b"PAR1" not in at_rest[:64] and b"weights" not in at_rest  # ciphertext, not Parquet or JSON
        assert not any(u.encode() in at_rest for u in some)
    # even decrypted, the label table holds keyed digests, not USCCs
    assert not any(u.encode() in b"".join(digests.column("digest").to_pylist()) for u in some)


def test_training_fails_clearly_when_too_few_labels_match_the_public_data(client, session, db_settings, city):
    known = city["labels"][:150]
    unknown = [(u, i % 2) for i, u in enumerate(_unknown_usccs(150))]  # valid codes the city does not have
    headers = login(client, city["users"]["bank"].username)
    r = _upload(client, headers, labels_csv(known + unknown))
    assert r.status_code == 202, r.text
    assert run(db_settings, r.json()["job_id"]) == "failed"
    got = client.get(f"{URL}/{r.json()['id']}", headers=headers).json()
    assert got["state"] == "failed" and "150 labels" in got["error"] and "at least 200" in got["error"]
    assert got["metrics"] is None
    row = session.get(JointModel, r.json()["id"])
    session.refresh(row)
    assert row.model_object_key is None and row.scores_object_key is None


# --- scoring ------------------------------------------------------------------------------------------

def test_only_the_owner_scores_under_its_agreement_and_the_enterprises_consent(client, session, db_settings, city):
    model = _trained(client, session, db_settings, city)
    users = city["users"]
    bank_h = login(client, users["bank"].username)
    risky = max(city["labels"], key=lambda x: x[1])[0]  # a firm whose loan went bad
    url = f"{URL}/{model['id']}/scores"
    body = {"subject": risky, "purpose": PURPOSE}
    r = client.post(url, json=body, headers=bank_h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_consent", r.text
    refused = _events(session, "gov.call.refused")
    assert refused and risky not in _text(refused[-1])
    enterprise_consent(session, db_settings, city["product"], city["customer"].id, risky)
    session.commit()
    r = client.post(url, json=body, headers=bank_h)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"request_id", "model", "registration_number", "status", "score", "grade"}
    assert answer["status"] == "found" and 0 <= answer["score"] <= 100 and answer["grade"] in "ABCDE"
    assert answer["model"] == model["id"] and answer["request_id"].startswith("req_")
    # the scores rank like the bank's outcomes: the labelled bad firms score lower on average
    scores = {}
    for uscc, y in city["labels"][:120]:
        enterprise_consent(session, db_settings, city["product"], city["customer"].id, uscc)
    session.commit()
    for uscc, y in city["labels"][:120]:
        got = client.post(url, json={"subject": uscc, "purpose": PURPOSE}, headers=bank_h).json()
        scores.setdefault(y, []).append(got["score"])
    assert np.mean(scores[1]) < np.mean(scores[0]) - 10
    assert _leaks(city, [answer]) == []
    events = _events(session, "product.joint.score")
    assert len(events) == 121 and not any(risky in _text(e) for e in events)
    # another customer (even with its own agreement for the product), the operator, the partner: no
    r = client.post(url, json=body, headers=login(client, users["stranger"].username))
    assert r.status_code == 404
    for role in ("operator", "partner", "bureau"):
        assert client.post(url, json=body, headers=login(client, users[role].username)).status_code == 403
    # a terminated agreement ends the scoring too
    from authops.platform.governance import agreements
    from tests.platform.governance.matrix_products import who

    a = agreements.get_active(session, "usage", party_b=city["customer"].id, product_id=city["product"].id)
    agreements.terminate(session, a, who(city["operator"]), reason="合同解除")
    session.commit()
    r = client.post(url, json=body, headers=bank_h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"


def test_no_route_gives_anyone_the_labels_or_the_model(client, session, db_settings, city, app):
    model = _trained(client, session, db_settings, city)
    row = session.get(JointModel, model["id"])
    store = get_object_store(db_settings)
    coefficients = json.loads(store.get(row.model_object_key))
    secrets_ = [repr(float(w)) for w in [*coefficients["weights"], coefficients["intercept"]] if abs(w) > 1e-6]
    secrets_ += [row.labels_object_key, row.model_object_key, row.scores_object_key]
    labelled = [u for u, _ in city["labels"]]
    enterprise_consent(session, db_settings, city["product"], city["customer"].id, labelled[0])
    session.commit()
    routes = [(m, p) for m, p, _ in iter_routes(app.routes) if p.startswith(URL)]
    assert len(routes) == 5
    seen = {}
    for name, user in city["users"].items():
        headers = login(client, user.username)
        for method, path in routes:
            url = path.format(model_id=model["id"])
            if method == "POST" and path == URL:
                r = _upload(client, headers, b"uscc,label\n")
            else:
                r = client.request(method, url, json={"subject": labelled[0], "purpose": PURPOSE}, headers=headers)
            seen[(name, method, path)] = r.status_code
            text = r.text
            assert not any(s in text for s in secrets_), (name, method, path)
            assert not any(u in text for u in labelled), (name, method, path)
            assert "weights" not in text and "intercept" not in text and '"label"' not in text
    # the owner reads its model; the operator sees the metrics for oversight; others nothing
    assert seen[("bank", "GET", URL + "/{model_id}")] == 200
    assert seen[("operator", "GET", URL + "/{model_id}/oversight")] == 200
    assert seen[("stranger", "GET", URL + "/{model_id}")] == 404
    assert seen[("partner", "GET", URL + "/{model_id}")] == 403
    assert seen[("partner", "GET", URL + "/{model_id}/oversight")] == 403
    stranger_list = client.get(URL, headers=login(client, city["users"]["stranger"].username)).json()
    assert stranger_list == []


# --- upload checks ------------------------------------------------------------------------------------

def _nothing_stored(session, db_settings):
    session.expire_all()
    assert session.exec(select(JointModel)).all() == []
    assert [j for j in session.exec(select(Job)) if j.kind == joint.KIND] == []
    assert get_object_store(db_settings).list("products/joint/") == []


def _valid(n: int = 300) -> list[tuple[str, int]]:
    return [(u, int(i % 5 == 0)) for i, u in enumerate(_unknown_usccs(n))]


@pytest.mark.parametrize("bad,field,line,words", [
    (lambda rows: rows[:7] + [(rows[7][0][:-1] + ("0" if rows[7][0][-1] != "0" else "1"), 0)] + rows[8:],
     "uscc", 9, "check digit"),
    (lambda rows: rows[:20] + [(rows[20][0], 2)] + rows[21:], "label", 22, "0 or 1"),
    (lambda rows: rows[:30] + [(rows[3][0], 1)] + rows[31:], "uscc", 32, "same USCC as line 5"),
])
def test_a_bad_upload_is_refused_whole_naming_the_line_and_field(client, session, db_settings, bank, bad, field,
                                                                 line, words):
    headers = login(client, bank["users"]["bank"].username)
    r = _upload(client, headers, labels_csv(bad(_valid())))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["details"]["field"] == field and err["details"]["line"] == line
    assert words in err["message"] and f"line {line}" in err["message"]
    _nothing_stored(session, db_settings)


def test_too_few_labels_or_too_few_of_a_class_are_refused(client, session, db_settings, bank):
    headers = login(client, bank["users"]["bank"].username)
    r = _upload(client, headers, labels_csv(_valid(150)))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "too_few_labels" and r.json()["error"]["details"]["rule"] == "min_labels"
    rows = [(u, int(i < 20)) for i, (u, _) in enumerate(_valid(400))]
    r = _upload(client, headers, labels_csv(rows))
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "min_class"
    assert "20 labels 1" in r.json()["error"]["message"]
    r = _upload(client, headers, b"id,outcome\n")
    assert r.status_code == 422 and "uscc,label" in r.json()["error"]["message"]
    _nothing_stored(session, db_settings)


def test_an_upload_without_an_agreement_is_refused_and_audited(client, session, db_settings, bank):
    other = make_org(session, OrgKind.CUSTOMER)
    user = make_user(session, other, "customer_admin")
    session.commit()
    r = _upload(client, login(client, user.username), labels_csv(_valid()))
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_active_agreement"
    refused = _events(session, "gov.call.refused")
    assert refused and json.loads(_text(refused[-1]))["details"]["channel"] == "joint_model"
    _nothing_stored(session, db_settings)
