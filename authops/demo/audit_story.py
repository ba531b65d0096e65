"""Demo: the auditor takes the log away and verifies it offline; tampering is caught."""

from __future__ import annotations

from collections.abc import Callable

from authops.core.settings import Settings


def auditor_verifies(settings: Settings, say: Callable[..., None]) -> None:
    from authops.audit.export import export
    from authops.audit.signing import load_signing_keys
    from authops.audit.verify import load_keys, verify_file

    folder = settings.data_path / "auditor"
    folder.mkdir(exist_ok=True)
    path = folder / "audit-log.jsonl.gz"
    result = export(settings, path)
    pub = folder / "audit-signing.pub"
    pub.write_text("".join(k.public_pem for k in load_signing_keys(settings)))
    say(f"   auditor-1 exports {result['events']} events with {result['checkpoints']} signed checkpoints "
        f"-> {path.name}")
    keys = load_keys([pub.read_bytes()])
    report = verify_file(path, keys)
    say(f"   `authops audit verify {path.name} --public-key {pub.name}`: {report.summary()}",
        fg="green" if report.ok else "red")
    import gzip

    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    victim = len(lines) // 2
    bad = folder / "audit-log-edited.jsonl"
    bad.write_bytes(b"".join(lines[:victim] + lines[victim + 1:]))  # one event quietly removed
    report = verify_file(bad, keys)
    say(f"   the same file with one event removed: {report.summary()}",
        fg="green" if not report.ok else "red")


def night_burst_blocked(settings: Settings, client, bank_admin: dict, bureau: dict,
                        say: Callable[..., None]) -> None:
    """A bank key pulls hundreds of records at 02:00; the rule blocks it; the bureau confirms."""
    from datetime import datetime, timedelta, timezone

    from sqlmodel import Session

    from authops.audit import log as audit_log
    from authops.core.clock import SHANGHAI, show
    from authops.core.db import get_engine

    key = client.post("/api/v1/api-keys", headers=bank_admin,
                      json={"name": "overnight batch", "scopes": ["self.read", "product.call"]}).json()
    as_key = {"Authorization": f"Bearer {key['key']}"}
    me = client.get("/api/v1/me", headers=as_key).json()
    # The key's product calls (the products arrive with a later issue; the rule watches their events).
    now_sh = datetime.now(SHANGHAI)
    night = now_sh.replace(hour=2, minute=0, second=0, microsecond=0)
    if night > now_sh:
        night -= timedelta(days=1)
    start = night.astimezone(timezone.utc).replace(tzinfo=None)
    actor = audit_log.Actor(kind="key", id=key["id"], name=key["name"], org_id=me["org"]["id"],
                            ip="10.20.30.40", region="intranet")
    with Session(get_engine(settings)) as s:
        for i in range(240):
            ev = audit_log.record(s, actor, "product.call", object_type="product",
                                  object_id="bank_credit_assessment", rows=1, subjects=1)
            ev.ts = start + timedelta(seconds=2 * i)
        s.commit()
    from authops.audit.anomaly import service as anomaly_service

    anomaly_service.settle()  # the rules run on a background thread; a block lands in milliseconds
    say(f"   the bank's key {key['prefix']} makes 240 credit-assessment calls from {show(start)} "
        "(Asia/Shanghai night)")
    r = client.get("/api/v1/me", headers=as_key)
    say(f"   its next request -> {r.status_code} {r.json()['error']['code']}: {r.json()['error']['message'][:90]}…",
        fg="green" if r.status_code == 403 else "red")
    cases = client.get("/api/v1/supervision/cases?state=open", headers=bureau).json()
    case = next(c for c in cases if c["subject_id"] == str(key["id"]))
    say(f"   bureau-reviewer sees case {case['id']} ({case['rule_name']}: "
        f"{case['evidence'].get('count', '?')} calls in the window)")
    decision = client.post(f"/api/v1/supervision/cases/{case['id']}/confirm", headers=bureau,
                           json={"reason": "批量夜间调用，未报备；确认异常", "severity": "major"}).json()
    incident = decision.get("incident") or {}
    say(f"   the bureau confirms: the key stays blocked, incident {incident.get('id', '?')} "
        f"recorded as {incident.get('severity', '?')}", fg="green")
