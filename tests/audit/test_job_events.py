"""A job's end is logged in the same transaction as its effects."""

from __future__ import annotations

from sqlalchemy import select

import authops.worker  # noqa: F401 - registers the audit observer, as in every worker
from authops.audit.models import AuditEvent
from authops.core.db import session_scope
from authops.core.jobs import service


def test_job_outcomes_are_audited(db_settings, session):
    with session_scope(db_settings) as s:
        ok = service.create_job(s, kind="system.echo", params={"a": 1}, org_id=5).id
        bad = service.create_job(s, kind="system.sleep", params={"seconds": "x"}, org_id=5, max_attempts=1).id
    assert service.run_job(db_settings, ok, worker="test") == "succeeded"
    assert service.run_job(db_settings, bad, worker="test") == "failed"
    events = session.exec(select(AuditEvent).where(AuditEvent.action.startswith("job."))
                          .order_by(AuditEvent.seq)).scalars().all()
    assert [(e.action, e.object_id, e.org_id) for e in events] == \
        [("job.succeeded", str(ok), 5), ("job.failed", str(bad), 5)]


def test_a_job_failed_by_the_reaper_is_audited(db_settings, session):
    from datetime import timedelta

    from sqlalchemy import update

    from authops.core.clock import utcnow
    from authops.core.jobs.models import Job

    with session_scope(db_settings) as s:
        job_id = service.create_job(s, kind="system.echo", params={}, org_id=5, max_attempts=1).id
    with session_scope(db_settings) as s:
        assert service.claim(s, job_id, "dead-worker")
    with session_scope(db_settings) as s:
        s.exec(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with session_scope(db_settings) as s:
        assert service.reap_expired(s)["failed"] == 1
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "job.failed")).scalars().all()
    assert [e.object_id for e in events] == [str(job_id)]
