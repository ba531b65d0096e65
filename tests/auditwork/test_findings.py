"""Audit findings over HTTP: the auditor records, only the audited organisation answers, the bureau
publishes, and a published finding is on the public disclosure page (with the answer)."""

from __future__ import annotations

from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from tests.support.builders import login, make_org, make_user


def _as(client, session, org, *roles):
    user = make_user(session, org, *roles)
    session.commit()
    return login(client, user.username)


def test_a_finding_goes_from_auditor_to_operator_to_the_public_page(client, session):
    auditor_org, bureau = make_org(session, OrgKind.AUDITOR), make_org(session, OrgKind.BUREAU)
    operator, other = make_org(session, OrgKind.OPERATOR), make_org(session, OrgKind.OPERATOR)
    auditor, bureau_admin = _as(client, session, auditor_org), _as(client, session, bureau)
    op_admin, other_admin = _as(client, session, operator), _as(client, session, other)
    year = utcnow().year
    body = {"org_id": operator.id, "year": year, "severity": "major", "title": "抑制率过高",
            "text": "记录级发布 17/rows 的抑制率为 38%，准标识符需先泛化。", "related": [{"type": "release", "id": 17}]}

    r = client.post("/api/v1/auditwork/findings", headers=auditor, json={**body, "related": [{"type": "release"}]})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "related[0]"
    r = client.post("/api/v1/auditwork/findings", headers=auditor, json={**body, "org_id": 2_000_000})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "org_id"
    r = client.post("/api/v1/auditwork/findings", headers=op_admin, json=body)
    assert r.status_code == 403  # the audited operator cannot write its own findings
    r = client.post("/api/v1/auditwork/findings", headers=auditor, json=body)
    assert r.status_code == 201, r.text
    finding = r.json()
    assert (finding["state"], finding["related"]) == ("open", [{"type": "release", "id": "17"}])
    fid = finding["id"]

    assert [f["id"] for f in client.get("/api/v1/auditwork/findings", headers=op_admin).json()] == [fid]
    assert client.get("/api/v1/auditwork/findings", headers=other_admin).json() == []
    assert client.get(f"/api/v1/auditwork/findings/{fid}", headers=other_admin).status_code == 404
    r = client.post(f"/api/v1/auditwork/findings/{fid}/response", headers=other_admin, json={"response": "不是我们"})
    assert r.status_code == 404
    r = client.post(f"/api/v1/auditwork/findings/{fid}/response", headers=op_admin, json={"response": " "})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "response"
    r = client.post(f"/api/v1/auditwork/findings/{fid}/response", headers=op_admin,
                    json={"response": "已将出生日期泛化为年龄段，下月重新发布。"})
    assert r.status_code == 200 and r.json()["state"] == "responded"
    r = client.post(f"/api/v1/auditwork/findings/{fid}/response", headers=op_admin, json={"response": "再答一次"})
    assert r.status_code == 409

    def published_titles():
        page = client.get("/api/v1/public/disclosure").json()
        return {d["title"]: d for d in page["audit_results"]}

    assert "审计发现 Audit finding: 抑制率过高" not in published_titles()
    assert client.post(f"/api/v1/auditwork/findings/{fid}/publish", headers=auditor).status_code == 403
    r = client.post(f"/api/v1/auditwork/findings/{fid}/publish", headers=bureau_admin)
    assert r.status_code == 200 and r.json()["state"] == "published"
    shown = published_titles()["审计发现 Audit finding: 抑制率过高"]
    assert shown["year"] == year and "38%" in shown["body"] and "泛化为年龄段" in shown["body"]
    assert operator.name_zh in shown["body"] and "重要" in shown["body"]
    assert client.post(f"/api/v1/auditwork/findings/{fid}/publish", headers=bureau_admin).status_code == 409

    actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.object_type == "audit_finding",
                                                                       AuditEvent.object_id == str(fid))
                                              .order_by(AuditEvent.seq))]
    assert actions == ["auditwork.finding.record", "auditwork.finding.respond", "auditwork.finding.publish"]
