"""Real Celery worker processes running jobs: Redis, RabbitMQ and the embedded broker; kill -9."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest
import redis
from sqlalchemy import select

from authops.core import db as core_db
from authops.core.broker import EmbeddedBroker
from authops.core.jobs import service
from authops.core.jobs.models import TERMINAL_STATES, Job, JobAttempt, JobState
from authops.core.settings import Settings, reset_settings
from tests.support.services import RABBITMQ_URL, REDIS_URL, need_rabbitmq, need_redis
from tests.support.workers import pool_children, running_worker, tail

# Redis database numbers reserved for these tests (flushed before use).
REDIS_DB_BASIC, REDIS_DB_KILL, REDIS_DB_LIMIT = 13, 14, 12


def _use(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Put AUTHOPS_* variables in this process's environment (workers inherit it)."""
    for key, value in env.items():
        monkeypatch.setenv(f"AUTHOPS_{key.upper()}", value)
    reset_settings()
    return Settings()


def _fresh_redis(db: int) -> str:
    need_redis()
    url = f"{REDIS_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def _submit(settings: Settings, count: int, kind: str = "system.sleep", **params: object) -> list[int]:
    with core_db.session_scope(settings) as session:
        ids = [service.create_job(session, kind=kind, params=dict(params), max_attempts=10).id
               for _ in range(count)]
    # A running worker's maintenance loop may send some of them first; between the two,
    # every job must have been handed to the broker exactly once from the outbox.
    sent = service.dispatch_pending(settings, job_ids=ids)  # type: ignore[arg-type]
    with core_db.session_scope(settings) as session:
        stamped = session.exec(select(Job).where(Job.id.in_(ids), Job.enqueued_at.is_not(None))).all()
    assert sent <= count and len(stamped) == count
    return ids  # type: ignore[return-value]


def _states(settings: Settings, ids: list[int]) -> dict[int, str]:
    with core_db.session_scope(settings) as session:
        rows = session.exec(select(Job.id, Job.state).where(Job.id.in_(ids))).all()  # type: ignore[call-overload,union-attr]
    return {job_id: JobState(state).value for job_id, state in rows}


def _wait_done(settings: Settings, ids: list[int], timeout: float, workers: list = ()) -> dict[int, str]:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while True:
        states = _states(settings, ids)
        if all(JobState(s) in TERMINAL_STATES for s in states.values()):
            return states
        if time.monotonic() > deadline:
            logs = "\n".join(tail(w.log_path) for w in workers)
            pytest.fail(f"jobs not done after {timeout:.0f} s: {Counter(states.values())}\n{logs}")
        time.sleep(0.2)


def _attempt_outcomes(settings: Settings, ids: list[int]) -> dict[int, list[str | None]]:
    with core_db.session_scope(settings) as session:
        rows = session.exec(select(JobAttempt.job_id, JobAttempt.outcome)  # type: ignore[call-overload]
                            .where(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.id)).all()
    outcomes: dict[int, list[str | None]] = {job_id: [] for job_id in ids}
    for job_id, outcome in rows:
        outcomes[job_id].append(outcome)
    return outcomes


@pytest.mark.services
@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_worker_on_redis_and_postgres_runs_30_jobs(db_settings: Settings, monkeypatch) -> None:
    settings = _use(monkeypatch, broker_url=_fresh_redis(REDIS_DB_BASIC),
                    maintenance_interval_seconds="0.5")
    with running_worker({}, concurrency=4) as worker:
        ids = _submit(settings, 30, seconds=0.3, steps=3)
        states = _wait_done(settings, ids, 60, [worker])
    assert Counter(states.values()) == {"succeeded": 30}
    assert all(outcomes == ["succeeded"] for outcomes in _attempt_outcomes(settings, ids).values())
    with core_db.session_scope(settings) as session:
        results = session.exec(select(Job.result, Job.progress).where(Job.id.in_(ids))).all()  # type: ignore[call-overload,union-attr]
    assert all(result == {"slept": 0.3} and progress == 1.0 for result, progress in results)


@pytest.mark.services
@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_worker_on_rabbitmq(db_settings: Settings, monkeypatch) -> None:
    need_rabbitmq()
    settings = _use(monkeypatch, broker_url=RABBITMQ_URL, maintenance_interval_seconds="0.5")
    with running_worker({}, concurrency=2) as worker:
        ids = _submit(settings, 6, seconds=0.1)
        ids += _submit(settings, 2, kind="system.echo", word="hello")
        states = _wait_done(settings, ids, 60, [worker])
    assert Counter(states.values()) == {"succeeded": 8}
    with core_db.session_scope(settings) as session:
        assert session.get(Job, ids[-1]).result == {"word": "hello"}  # type: ignore[union-attr]


@pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)
def test_worker_with_embedded_broker_on_sqlite(db_settings: Settings, monkeypatch) -> None:
    assert not db_settings.broker_url  # no AUTHOPS_BROKER_URL: the private valkey broker
    settings = _use(monkeypatch, maintenance_interval_seconds="0.5")
    with EmbeddedBroker(settings) as embedded, running_worker({}, concurrency=2) as worker:
        ids = _submit(settings, 3, seconds=0.2, steps=2)
        ids += _submit(settings, 1, kind="system.echo", n=1)
        states = _wait_done(settings, ids, 60, [worker])
        assert embedded.started  # the worker reused the broker this test started
    assert Counter(states.values()) == {"succeeded": 4}


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_killed_pool_processes_lose_no_job_and_finish_each_once(db_settings: Settings,
                                                                 monkeypatch) -> None:
    settings = _use(monkeypatch, broker_url=_fresh_redis(REDIS_DB_KILL), job_lease_seconds="3",
                    maintenance_interval_seconds="0.5", job_redispatch_seconds="5")
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    submitted, target_kills, kills = 64, 8, 0
    started = time.monotonic()
    with running_worker({}, concurrency=2, name="kill-a") as first, \
            running_worker({}, concurrency=2, name="kill-b") as second:
        workers = [first, second]
        ids = _submit(settings, submitted, seconds=1.0, steps=4)
        while kills < target_kills and time.monotonic() - started < 40:
            time.sleep(rng.uniform(0.4, 1.5))
            worker = rng.choice(workers)
            children = pool_children(worker.pid)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills += 1
        states = _wait_done(settings, ids, 80 - (time.monotonic() - started), workers)
    elapsed = time.monotonic() - started

    outcomes = _attempt_outcomes(settings, ids)
    completed = sum(1 for s in states.values() if s == "succeeded")
    rerun = sum(1 for o in outcomes.values() if len(o) > 1)
    lost = submitted - completed
    print(f"\nkill test (seed {seed}): submitted={submitted} completed={completed} re-run={rerun} "
          f"lost={lost} kills={kills} attempts={sum(map(len, outcomes.values()))} "
          f"elapsed={elapsed:.1f}s")
    assert kills >= 6
    assert lost == 0 and completed == submitted, Counter(states.values())
    # Exactly one successful finish per job; every other attempt was a worker that died.
    assert all(o.count("succeeded") == 1 and set(o) <= {"succeeded", "lost"} for o in outcomes.values()), \
        {job_id: o for job_id, o in outcomes.items() if o.count("succeeded") != 1}
    assert rerun >= 1, "no kill hit a running job"


@pytest.mark.services
@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_a_job_over_its_time_limit_is_stopped_with_a_clear_error(db_settings: Settings, monkeypatch) -> None:
    settings = _use(monkeypatch, broker_url=_fresh_redis(REDIS_DB_LIMIT), maintenance_interval_seconds="0.5",
                    job_time_limit_seconds="2")
    with running_worker({}, concurrency=1) as worker:
        slow = _submit(settings, 1, seconds=30, steps=30)
        quick = _submit(settings, 1, seconds=0.2, steps=1)
        states = _wait_done(settings, slow + quick, 40, [worker])
    assert states == {slow[0]: "failed", quick[0]: "succeeded"}
    with core_db.session_scope(settings) as session:
        job = session.get(Job, slow[0])
        assert job.error_code == "time_limit" and "limit of 2 s" in job.error_message
        assert job.attempts == 1  # not retried: the limit is the job's, not the worker's fault
