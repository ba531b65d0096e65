"""Job service on SQLite and PostgreSQL: claims, leases, finish, failures, reaper, outbox."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update
from sqlmodel import Session

from authops.core import db as core_db
from authops.core.broker import JOB_QUEUE, valkey_binary
from authops.core.clock import utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from authops.core.jobs import service
from authops.core.jobs.models import Job, JobAttempt, JobState
from authops.core.jobs.registry import JobContext, LeaseLost, job_handler, known_kinds
from authops.core.settings import Settings


# --- handlers used only by these tests (run in-process through service.run_job) ------------


@job_handler("test.write_then_fail")
def _write_then_fail(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    service.create_job(session, kind="system.echo", params={"child_of": job.id})
    raise InvalidInput("parameter 'column' names no column of the dataset")


@job_handler("test.write_and_succeed")
def _write_and_succeed(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    child = service.create_job(session, kind="system.echo", params={"child_of": job.id})
    return {"child": child.id}


@job_handler("test.transient")
def _transient(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    raise Unavailable("the object store is not answering")


@job_handler("test.crash")
def _crash(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    raise KeyError("alice@example.com")  # a bug quoting a data value


@job_handler("test.lose_lease")
def _lose_lease(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """Another worker steals the lease while we run; then we write and return."""
    settings = Settings()
    with core_db.session_scope(settings) as other:
        _expire(other, job.id)  # type: ignore[arg-type]
        assert service.claim(other, job.id, "thief") is not None  # type: ignore[arg-type]
    service.create_job(session, kind="system.echo", params={"child_of": job.id})
    return {"done": True}


# --- helpers ------------------------------------------------------------------------------


def _new_job(settings: Settings, kind: str = "system.echo", params: dict[str, Any] | None = None,
             **kwargs: Any) -> int:
    with core_db.session_scope(settings) as session:
        return service.create_job(session, kind=kind, params=params or {}, **kwargs).id  # type: ignore[return-value]


def _expire(session: Session, job_id: int) -> None:
    """Make the current lease look expired (as if its worker stopped heartbeating)."""
    session.exec(update(Job).where(Job.id == job_id)  # type: ignore[call-overload]
                 .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _job(settings: Settings, job_id: int) -> Job:
    with core_db.session_scope(settings) as session:
        return service.get_job(session, job_id)


def _attempts(settings: Settings, job_id: int) -> list[JobAttempt]:
    with core_db.session_scope(settings) as session:
        return list(session.exec(select(JobAttempt).where(JobAttempt.job_id == job_id)  # type: ignore[call-overload]
                                 .order_by(JobAttempt.id)).scalars())


def _count_jobs(settings: Settings) -> int:
    with core_db.session_scope(settings) as session:
        return len(session.exec(select(Job.id)).all())  # type: ignore[call-overload]


# --- creation -----------------------------------------------------------------------------


def test_create_job_validates_kind_and_params(session: Session) -> None:
    with pytest.raises(InvalidInput) as caught:
        service.create_job(session, kind="no.such.kind", params={})
    assert "no.such.kind" in caught.value.message and "system.sleep" in caught.value.message
    assert "system.echo" in known_kinds()
    with pytest.raises(InvalidInput, match="JSON"):
        service.create_job(session, kind="system.echo", params={"when": object()})
    with pytest.raises(InvalidInput, match="JSON"):
        service.create_job(session, kind="system.echo", params={"x": float("nan")})
    job = service.create_job(session, kind="system.echo", params={"a": [1, "b"]}, org_id=7,
                             created_by=3, max_attempts=2)
    assert job.id and job.state == JobState.QUEUED and job.max_attempts == 2 and job.enqueued_at is None
    session.commit()
    assert service.get_job(session, job.id, org_id=7).params == {"a": [1, "b"]}
    with pytest.raises(NotFound):
        service.get_job(session, job.id, org_id=8)  # another organisation's job does not exist


# --- claims and leases --------------------------------------------------------------------


def test_claim_is_exclusive_under_concurrency(db_settings: Settings) -> None:
    job_id = _new_job(db_settings)
    tokens: list[str | None] = []
    barrier = threading.Barrier(6)

    def contender(n: int) -> None:
        barrier.wait()
        with core_db.session_scope(db_settings) as session:
            tokens.append(service.claim(session, job_id, f"worker-{n}"))

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([t for t in tokens if t]) == 1, tokens
    job = _job(db_settings, job_id)
    assert job.state == JobState.RUNNING and job.attempts == 1 and job.lease_token in tokens
    assert [a.attempt for a in _attempts(db_settings, job_id)] == [1]


def test_expired_lease_is_reclaimed_and_old_holder_refused(db_settings: Settings) -> None:
    job_id = _new_job(db_settings)
    with core_db.session_scope(db_settings) as session:
        old = service.claim(session, job_id, "slow-worker", lease_seconds=1)
    assert old
    with core_db.session_scope(db_settings) as session:
        assert service.claim(session, job_id, "other") is None  # lease still valid
        assert service.heartbeat(session, job_id, old, progress=0.5, message="half", lease_seconds=1)
    time.sleep(1.2)  # real expiry: the heartbeat above extended it by one second
    with core_db.session_scope(db_settings) as session:
        new = service.claim(session, job_id, "fresh-worker")
    assert new and new != old
    with core_db.session_scope(db_settings) as session:
        assert not service.heartbeat(session, job_id, old)
        with pytest.raises(LeaseLost):
            service.finish(session, job_id, old, result={"stale": True})
    with core_db.session_scope(db_settings) as session:
        service.finish(session, job_id, new, result={"fresh": True})
    job = _job(db_settings, job_id)
    assert job.state == JobState.SUCCEEDED and job.result == {"fresh": True} and job.attempts == 2
    assert [(a.worker, a.outcome) for a in _attempts(db_settings, job_id)] == [
        ("slow-worker", "lost"), ("fresh-worker", "succeeded")]


def test_finish_with_lost_lease_rolls_back_the_handlers_writes(db_settings: Settings) -> None:
    job_id = _new_job(db_settings)
    with core_db.session_scope(db_settings) as session:
        old = service.claim(session, job_id, "a")
        _expire(session, job_id)
    with core_db.session_scope(db_settings) as session:
        assert service.claim(session, job_id, "b")
    before = _count_jobs(db_settings)
    with pytest.raises(LeaseLost):
        with core_db.session_scope(db_settings) as session:  # the handler's transaction
            service.create_job(session, kind="system.echo", params={"written": "by old holder"})
            service.finish(session, job_id, old, result={})  # type: ignore[arg-type]
    assert _count_jobs(db_settings) == before
    assert _job(db_settings, job_id).state == JobState.RUNNING


def test_run_job_lease_stolen_mid_run_discards_everything(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "test.lose_lease")
    assert service.run_job(db_settings, job_id, worker="victim") == "lease_lost"
    assert _count_jobs(db_settings) == 1  # the child job the handler created was rolled back
    job = _job(db_settings, job_id)
    assert job.state == JobState.RUNNING and job.lease_owner == "thief"


def test_run_job_success_commits_handler_writes_with_finish(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "test.write_and_succeed")
    assert service.run_job(db_settings, job_id, worker="w") == "succeeded"
    job = _job(db_settings, job_id)
    assert job.state == JobState.SUCCEEDED and job.lease_token is None and job.progress == 1.0
    assert _job(db_settings, job.result["child"]).params == {"child_of": job_id}  # type: ignore[index]
    assert service.run_job(db_settings, job_id, worker="w") == "skipped"  # duplicate message
    assert [a.outcome for a in _attempts(db_settings, job_id)] == ["succeeded"]


def test_sleep_reports_progress(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "system.sleep", {"seconds": 0.2, "steps": 4})
    assert service.run_job(db_settings, job_id, worker="w") == "succeeded"
    job = _job(db_settings, job_id)
    assert job.result == {"slept": 0.2} and job.message == "step 4/4" and job.heartbeat_at


# --- failures -----------------------------------------------------------------------------


def test_permanent_failure_rolls_back_and_keeps_only_the_message(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "test.write_then_fail")
    assert service.run_job(db_settings, job_id, worker="w") == "failed"
    job = _job(db_settings, job_id)
    assert (job.state, job.error_code) == (JobState.FAILED, "invalid_input")
    assert job.error_message == "parameter 'column' names no column of the dataset"
    assert job.finished_at and job.attempts == 1 and _count_jobs(db_settings) == 1


def test_unexpected_error_never_stores_its_text(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "test.crash")
    assert service.run_job(db_settings, job_id, worker="w") == "failed"
    job = _job(db_settings, job_id)
    assert job.error_code == "internal_error" and "alice" not in (job.error_message or "")
    assert "KeyError" in (job.error_message or "")


def test_transient_failure_retries_until_max_attempts(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, "test.transient", max_attempts=3)
    for attempt in (1, 2):
        assert service.run_job(db_settings, job_id, worker="w") == "queued"
        job = _job(db_settings, job_id)
        assert (job.state, job.attempts, job.enqueued_at) == (JobState.QUEUED, attempt, None)
        assert job.error_code == "unavailable"
    assert service.run_job(db_settings, job_id, worker="w") == "failed"
    job = _job(db_settings, job_id)
    assert job.state == JobState.FAILED and job.attempts == 3
    assert job.error_message == "gave up after 3 attempts: the object store is not answering"
    assert [a.outcome for a in _attempts(db_settings, job_id)] == ["retry", "retry", "failed"]
    assert service.run_job(db_settings, job_id, worker="w") == "skipped"


# --- reaper, max attempts, cancel ---------------------------------------------------------


def test_reaper_requeues_then_fails_when_out_of_attempts(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, max_attempts=2)
    for attempt in (1, 2):
        with core_db.session_scope(db_settings) as session:
            assert service.claim(session, job_id, f"w{attempt}")
            session.exec(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))  # type: ignore[call-overload]
            _expire(session, job_id)
        with core_db.session_scope(db_settings) as session:
            counts = service.reap_expired(session)
        job = _job(db_settings, job_id)
        if attempt == 1:
            assert counts == {"requeued": 1, "failed": 0}
            assert (job.state, job.enqueued_at, job.lease_token) == (JobState.QUEUED, None, None)
    assert counts == {"requeued": 0, "failed": 1}
    assert job.state == JobState.FAILED and job.error_code == "worker_lost"
    assert job.error_message == "worker stopped heartbeating 2 times"
    assert [a.outcome for a in _attempts(db_settings, job_id)] == ["lost", "lost"]
    with core_db.session_scope(db_settings) as session:
        assert service.reap_expired(session) == {"requeued": 0, "failed": 0}


def test_claim_refuses_expired_job_out_of_attempts(db_settings: Settings) -> None:
    job_id = _new_job(db_settings, max_attempts=1)
    with core_db.session_scope(db_settings) as session:
        assert service.claim(session, job_id, "w")
        _expire(session, job_id)
    with core_db.session_scope(db_settings) as session:
        assert service.claim(session, job_id, "w2") is None


def test_cancel(db_settings: Settings) -> None:
    queued, running = _new_job(db_settings), _new_job(db_settings)
    with core_db.session_scope(db_settings) as session:
        token = service.claim(session, running, "w")
    with core_db.session_scope(db_settings) as session:
        assert service.cancel_job(session, queued).state == JobState.CANCELLED
        assert service.cancel_job(session, running).state == JobState.CANCELLED
    with core_db.session_scope(db_settings) as session:
        with pytest.raises(Conflict, match="already cancelled"):
            service.cancel_job(session, queued)
        with pytest.raises(LeaseLost):
            service.finish(session, running, token, result={})  # type: ignore[arg-type]
    with core_db.session_scope(db_settings) as session:
        assert service.claim(session, queued, "w") is None
        with pytest.raises(NotFound):
            service.cancel_job(session, 999_999)


# --- the outbox ---------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def late_valkey(tmp_path: Path, free_port: int) -> Iterator[Any]:
    """A valkey server that starts on `free_port` only when the test calls start()."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> redis.Redis:
        folder = tmp_path / "late-valkey"
        folder.mkdir()
        procs.append(subprocess.Popen([str(valkey_binary()), "--bind", "127.0.0.1", "--port",
                                       str(free_port), "--save", "", "--dir", str(folder)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=free_port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("valkey did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
    shutil.rmtree(tmp_path / "late-valkey", ignore_errors=True)


def test_dispatch_with_broker_down_then_maintain_sends_it(db_settings: Settings, free_port: int,
                                                        late_valkey: Any) -> None:
    settings = db_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port}/0"})
    job_id = _new_job(settings)
    started = time.monotonic()
    assert service.dispatch_pending(settings, job_ids=[job_id]) == 0  # no exception
    assert time.monotonic() - started < 5, "enqueueing must fail fast when the broker is down"
    assert _job(settings, job_id).enqueued_at is None
    assert service.maintain(settings)["dispatched"] == 0

    client = late_valkey()  # the broker comes back
    assert service.maintain(settings) == {"requeued": 0, "failed": 0, "dispatched": 1}
    assert _job(settings, job_id).enqueued_at is not None
    messages = client.lrange(JOB_QUEUE, 0, -1)
    assert [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in messages] == [[job_id]]
    # Sent recently: neither a second dispatch nor maintenance sends it again...
    assert service.dispatch_pending(settings, job_ids=[job_id]) == 0
    assert service.maintain(settings)["dispatched"] == 0
    # ...until the redispatch delay passed (a broker that lost the message is covered).
    eager = settings.model_copy(update={"job_redispatch_seconds": 0})
    time.sleep(0.01)
    assert service.maintain(eager)["dispatched"] == 1
    assert client.llen(JOB_QUEUE) == 2  # a duplicate message: harmless, claim decides
    client.close()
