"""Searching and exporting the log over HTTP: scope by organisation, files, proofs."""

from __future__ import annotations

import io

from authops.audit import merkle
from authops.core.identity import OrgKind
from tests.support.builders import login, make_org, make_user


def test_search_is_scoped_exports_open_and_proofs_verify(client, session):
    bank, other = make_org(session, OrgKind.CUSTOMER), make_org(session, OrgKind.CUSTOMER)
    bank_admin, other_admin = make_user(session, bank), make_user(session, other)
    auditor = make_user(session, make_org(session, OrgKind.AUDITOR), "auditor")
    session.commit()
    mine, theirs, aud = (login(client, u.username) for u in (bank_admin, other_admin, auditor))
    client.post("/api/v1/api-keys", headers=mine, json={"name": "k", "scopes": ["self.read"]})
    client.post("/api/v1/api-keys", headers=theirs, json={"name": "k", "scopes": ["self.read"]})

    own = client.get("/api/v1/audit/events", headers=mine).json()
    assert own and {e["org_id"] for e in own} == {bank.id}
    # Asking for another organisation's events gives nothing, not an error that confirms them.
    assert client.get(f"/api/v1/audit/events?org_id={other.id}", headers=mine).json() == []
    everyone = client.get("/api/v1/audit/events?action=apikey.create", headers=aud).json()
    assert {e["org_id"] for e in everyone} == {bank.id, other.id}
    page = client.get("/api/v1/audit/events?limit=1", headers=aud).json()
    older = client.get(f"/api/v1/audit/events?limit=1&before_seq={page[0]['seq']}", headers=aud).json()
    assert older[0]["seq"] < page[0]["seq"]
    assert client.get("/api/v1/audit/events?limit=100000", headers=aud).status_code == 422

    csv_text = client.get("/api/v1/audit/events.csv?action=apikey.create", headers=aud).content.decode("utf-8-sig")
    assert csv_text.splitlines()[0].startswith("seq,") and len(csv_text.splitlines()) == 3
    from openpyxl import load_workbook
    wb = load_workbook(io.BytesIO(client.get("/api/v1/audit/events.xlsx", headers=aud).content))
    assert wb.active.max_row >= 3

    cp = client.post("/api/v1/audit/checkpoints", headers=aud).json()
    proof = client.get(f"/api/v1/audit/proofs/inclusion?seq=2&tree_size={cp['tree_size']}", headers=aud).json()
    assert merkle.verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 1, proof["tree_size"],
                                   [bytes.fromhex(h) for h in proof["proof"]], bytes.fromhex(cp["root_hash"]))
    assert "BEGIN PUBLIC KEY" in client.get("/api/v1/audit/public-keys").text
