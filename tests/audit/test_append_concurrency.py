"""Concurrent appends from several threads and a second process still form one exact chain.

On PostgreSQL a single event is chained inside the database (one statement builds the canonical
bytes around the tip's hash and hashes them); the verifier's rule (the hash is SHA-256 of the
canonical bytes, which name the previous hash and the seq) must hold byte for byte, also for
details that look like the chain's own fields.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from authops.audit import canonical
from authops.audit import log as audit_log
from authops.audit.models import AuditEvent, AuditHead
from authops.core.db import get_engine

ROOT = Path(__file__).resolve().parents[2]
PER_WRITER = 15
TRICKY = {"note": '","prev":"' + "0" * 64 + '","seq":0,', "名字": "数据局 ✓", "n": 7, "nested": {"seq": 1}}

OTHER_PROCESS = f"""
from sqlmodel import Session
from authops.audit import log as audit_log
from authops.core.db import get_engine
for i in range({PER_WRITER}):
    with Session(get_engine()) as s:
        audit_log.record(s, audit_log.Actor(kind="system", name="other process"), "test.process", object_id=i,
                         details={{"i": i}})
        s.commit()
"""


def _write(engine, name: str, errors: list) -> None:
    try:
        for i in range(PER_WRITER):
            with Session(engine) as s:
                audit_log.record(s, audit_log.Actor(kind="system", name=name), "test.thread", object_id=i,
                                 details={**TRICKY, "i": i})
                if i % 5 == 4:  # now and then two events in one transaction
                    audit_log.record(s, audit_log.Actor(kind="system", name=name), "test.pair", object_id=i)
                s.commit()
    except Exception as exc:  # reported by the test thread
        errors.append(exc)


def test_concurrent_appends_from_threads_and_another_process_form_one_chain(db_settings, session):
    engine = get_engine(db_settings)
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS], cwd=ROOT, env=dict(os.environ))
    errors: list = []
    threads = [threading.Thread(target=_write, args=(engine, f"writer {n}", errors)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other.wait(timeout=120) == 0
    assert errors == []

    events = list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all())
    expected = 4 * (PER_WRITER + PER_WRITER // 5) + PER_WRITER
    assert [e.seq for e in events] == list(range(1, expected + 1))
    prev = canonical.GENESIS
    for e in events:
        body = canonical.decode(e.canonical)
        assert (body["seq"], body["prev"], e.prev_hash) == (e.seq, prev, prev)
        assert canonical.chain_hash(e.canonical) == e.hash
        assert body["action"] == e.action and body["actor"]["name"] == e.actor_name
        prev = e.hash
    tricky = next(e for e in events if e.action == "test.thread")
    assert {k: v for k, v in canonical.decode(tricky.canonical)["details"].items() if k != "i"} == TRICKY
    head = session.get(AuditHead, 1)
    assert (head.seq, head.hash) == (expected, events[-1].hash)
