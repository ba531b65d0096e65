"""Job lifecycle: create, dispatch (outbox), claim with a lease, heartbeat, finish, reap.

The job table is the truth; a broker message only says "look at job N". Every state change
is a conditional UPDATE, so duplicate messages, dead workers and expired leases are harmless.
Functions taking a session flush and never commit; those taking settings own their sessions.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exc as sa_exc, or_, select, update
from sqlmodel import Session

from authops.core.broker import RUN_JOB_TASK, celery_config
from authops.core.clock import utcnow
from authops.core.db import session_scope
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound, Unavailable
from authops.core.jobs import registry
from authops.core.jobs.models import Job, JobAttempt, JobState
from authops.core.jobs.registry import JobContext, LeaseLost
from authops.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
DISPATCH_BATCH = 500


def _transient_types() -> tuple[type[BaseException], ...]:
    """Errors worth retrying: the service or a connection was briefly unavailable."""
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    return (Unavailable, sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
            sa_exc.TimeoutError, KombuOperationalError, RedisConnectionError, ConnectionError,
            TimeoutError)


# --- API side -----------------------------------------------------------------------------


def create_job(session: Session, *, kind: str, params: dict[str, Any], org_id: int | None = None,
               created_by: int | None = None, max_attempts: int | None = None) -> Job:
    """Insert a queued job; after commit, call dispatch_pending(settings, job_ids=[job.id])."""
    registry.get_handler(kind)
    if not isinstance(params, dict):
        raise InvalidInput("job parameters must be a JSON object")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput(f"parameters of a {kind!r} job must be JSON-serialisable") from None
    attempts = get_settings().job_max_attempts if max_attempts is None else max_attempts
    if attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    job = Job(kind=kind, params=params, org_id=org_id, created_by=created_by, max_attempts=attempts)
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int, *, org_id: int | None = None) -> Job:
    """The job, or NotFound (also when it belongs to another organisation)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or (org_id is not None and job.org_id != org_id):
        raise NotFound(f"job {job_id} not found")
    return job


def cancel_job(session: Session, job_id: int, *, org_id: int | None = None) -> Job:
    """Cancel a queued or running job; a running handler's finish is then refused."""
    job = get_job(session, job_id, org_id=org_id)
    now = utcnow()
    done = session.exec(update(Job).where(Job.id == job_id, Job.state.in_([QUEUED, RUNNING]))
                        .values(state=JobState.CANCELLED.value, lease_token=None,
                                lease_expires_at=None, finished_at=now, message="cancelled")
                        .execution_options(synchronize_session=False))
    if done.rowcount == 0:
        session.refresh(job)
        raise Conflict(f"job {job_id} is already {JobState(job.state).value}")
    _close_attempts(session, job_id, "cancelled")
    registry.notify(session, job_id, "cancelled")
    session.flush()
    return get_job(session, job_id)


def dispatch_pending(settings: Settings, job_ids: Iterable[int] | None = None) -> int:
    """Send a message for each queued job not sent recently (all when job_ids is None).

    Never raises for broker trouble: the job stays unsent and maintain() retries it.
    Returns how many messages were sent.
    """
    ids = None if job_ids is None else list(job_ids)
    if ids == []:
        return 0
    cutoff = utcnow() - timedelta(seconds=settings.job_redispatch_seconds)
    stamp = utcnow()
    due = and_(Job.state == QUEUED, or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))
    try:
        with session_scope(settings) as session:
            query = select(Job.id).where(due).order_by(Job.id).limit(DISPATCH_BATCH)
            if ids is not None:
                query = query.where(Job.id.in_(ids))
            candidates = list(session.exec(query).scalars())
            # Stamp first (conditionally) so concurrent dispatchers rarely send twice.
            stamped = [job_id for job_id in candidates if session.exec(
                update(Job).where(Job.id == job_id, due).values(enqueued_at=stamp)
                .execution_options(synchronize_session=False)).rowcount]
    except sa_exc.SQLAlchemyError:
        log.exception("job dispatch: database unavailable; maintenance will retry")
        return 0
    sent = 0
    try:
        app = _sender(settings)
        for job_id in stamped:
            app.send_task(RUN_JOB_TASK, args=[job_id])
            sent += 1
    except Exception as error:  # broker down or misconfigured: the outbox keeps the job
        log.warning("job dispatch: broker unavailable (%s); %d job(s) left for maintenance",
                    type(error).__name__, len(stamped) - sent)
        _unstamp(settings, stamped[sent:], stamp)
    return sent


def maintain(settings: Settings) -> dict[str, int]:
    """Reap expired leases, then send every queued job not sent recently. Safe to run anywhere."""
    with session_scope(settings) as session:
        reaped = reap_expired(session)
    return {**reaped, "dispatched": dispatch_pending(settings)}


# --- worker side --------------------------------------------------------------------------


def claim(session: Session, job_id: int, worker: str, *, lease_seconds: int | None = None) -> str | None:
    """Take the job with a fresh lease (one conditional UPDATE); None if it isn't ours to run."""
    now = utcnow()
    lease = lease_seconds or get_settings().job_lease_seconds
    token = secrets.token_hex(16)
    claimed = session.exec(
        update(Job)
        .where(Job.id == job_id, Job.attempts < Job.max_attempts,
               or_(Job.state == QUEUED, and_(Job.state == RUNNING, Job.lease_expires_at < now)))
        .values(state=RUNNING, lease_token=token, lease_owner=worker[:200],
                lease_expires_at=now + timedelta(seconds=lease), heartbeat_at=now,
                attempts=Job.attempts + 1, started_at=now, finished_at=None)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        return None
    _close_attempts(session, job_id, "lost")  # a previous holder whose lease expired
    attempt = session.exec(select(Job.attempts).where(Job.id == job_id)).scalar_one()
    session.add(JobAttempt(job_id=job_id, attempt=attempt, lease_token=token, worker=worker[:200]))
    session.flush()
    return token


def heartbeat(session: Session, job_id: int, lease_token: str, *, progress: float | None = None,
              message: str | None = None, lease_seconds: int | None = None) -> bool:
    """Extend our lease (and record progress); False when the lease is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {
        "heartbeat_at": now,
        "lease_expires_at": now + timedelta(seconds=lease_seconds or get_settings().job_lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    if message is not None:
        values["message"] = message[:500]
    done = session.exec(update(Job).where(Job.id == job_id, Job.state == RUNNING,
                                          Job.lease_token == lease_token)
                        .values(**values).execution_options(synchronize_session=False))
    return done.rowcount == 1


def finish(session: Session, job_id: int, lease_token: str, *, result: dict[str, Any]) -> None:
    """Mark success in the handler's own transaction; raises LeaseLost if the lease isn't ours.

    The caller must then roll back, discarding the handler's writes with it.
    """
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput("the job handler returned a result that is not JSON-serialisable") from None
    done = session.exec(update(Job).where(Job.id == job_id, Job.state == RUNNING,
                                          Job.lease_token == lease_token)
                        .values(state=JobState.SUCCEEDED.value, result=result, progress=1.0,
                                finished_at=utcnow(), lease_token=None, lease_expires_at=None,
                                error_code=None, error_message=None)
                        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        raise LeaseLost(f"job {job_id} lost its lease before finishing; its work is discarded")
    _close_attempts(session, job_id, "succeeded", lease_token)
    registry.notify(session, job_id, "succeeded")
    session.flush()


def fail(session: Session, job_id: int, lease_token: str, error: BaseException) -> str | None:
    """Record a handler error under our lease: permanent → failed, transient → queued again.

    Returns the new state, or None if the lease was no longer ours.
    """
    transient = isinstance(error, _transient_types())
    if type(error).__name__ == "SoftTimeLimitExceeded":  # Celery's soft time limit
        transient, code = False, "time_limit"
        message = f"the job ran longer than its limit of {get_settings().job_time_limit_seconds} s and was stopped"
    elif isinstance(error, AuthopsError):
        code, message = error.code, error.message  # our messages never carry data values
    else:
        # Foreign exception text may quote data; keep only the type (the log has the rest).
        code = "unavailable" if transient else "internal_error"
        message = f"{type(error).__name__} while running the job; see the worker log"
    job = session.exec(select(Job).where(Job.id == job_id)
                       .execution_options(populate_existing=True)).scalar_one_or_none()
    if job is None:
        return None
    retry = transient and job.attempts < job.max_attempts
    if transient and not retry:
        message = f"gave up after {job.attempts} attempts: {message}"
    values: dict[str, Any] = {"state": QUEUED if retry else JobState.FAILED.value,
                              "error_code": code[:64], "error_message": message[:2000],
                              "lease_token": None, "lease_expires_at": None}
    if retry:
        values["enqueued_at"] = None  # the maintenance loop sends it again
    else:
        values["finished_at"] = utcnow()
    done = session.exec(update(Job).where(Job.id == job_id, Job.state == RUNNING,
                                          Job.lease_token == lease_token)
                        .values(**values).execution_options(synchronize_session=False))
    if done.rowcount != 1:
        return None
    _close_attempts(session, job_id, "retry" if retry else "failed", lease_token)
    registry.notify(session, job_id, "retry" if retry else "failed")
    session.flush()
    return values["state"]


def reap_expired(session: Session) -> dict[str, int]:
    """Running jobs whose lease expired: back to queued, or failed when out of attempts."""
    now = utcnow()
    expired = session.exec(select(Job.id, Job.lease_token, Job.attempts, Job.max_attempts)
                           .where(Job.state == RUNNING, Job.lease_expires_at < now)).all()
    counts = {"requeued": 0, "failed": 0}
    for job_id, token, attempts, max_attempts in expired:
        if attempts < max_attempts:
            values: dict[str, Any] = {"state": QUEUED, "enqueued_at": None}
        else:
            values = {"state": JobState.FAILED.value, "finished_at": now, "error_code": "worker_lost",
                      "error_message": f"worker stopped heartbeating {attempts} times"}
        # Conditional on the token we saw: a worker re-claiming it meanwhile wins.
        done = session.exec(update(Job).where(Job.id == job_id, Job.state == RUNNING,
                                              Job.lease_token == token, Job.lease_expires_at < now)
                            .values(lease_token=None, lease_expires_at=None, **values)
                            .execution_options(synchronize_session=False))
        if done.rowcount == 1:
            _close_attempts(session, job_id, "lost", token)
            counts["requeued" if values["state"] == QUEUED else "failed"] += 1
            if values["state"] != QUEUED:
                registry.notify(session, job_id, "failed")
    session.flush()
    return counts


def run_job(settings: Settings, job_id: int, *, worker: str) -> str:
    """Claim, run the handler with a heartbeat, and finish in the handler's transaction.

    Returns what happened: skipped, succeeded, failed, queued (retry) or lease_lost.
    """
    with session_scope(settings) as session:
        token = claim(session, job_id, worker, lease_seconds=settings.job_lease_seconds)
        kind = session.exec(select(Job.kind).where(Job.id == job_id)).scalar_one_or_none()
    if token is None or kind is None:
        return "skipped"  # duplicate message, someone else's lease, or terminal
    ctx = JobContext(job_id=job_id, lease_token=token,
                     report=lambda fraction, message: _beat(settings, job_id, token, fraction, message))
    beater = _Heartbeat(settings, job_id, token, ctx.lost)
    beater.start()
    try:
        handler = registry.get_handler(kind)
        with session_scope(settings) as session:
            job = session.exec(select(Job).where(Job.id == job_id)).scalar_one()
            result = handler(session, job, ctx)
            if not isinstance(result, dict):
                raise InvalidInput(f"the {kind!r} handler returned {type(result).__name__}, not an object")
            finish(session, job_id, token, result=result)
        return "succeeded"
    except LeaseLost:
        log.warning("job %s: lease lost; its work was rolled back", job_id)
        return "lease_lost"
    except Exception as error:
        log.warning("job %s (%s) raised %s", job_id, kind, type(error).__name__, exc_info=True)
        with session_scope(settings) as session:
            state = fail(session, job_id, token, error)
        return state or "lease_lost"
    finally:
        beater.stop()


# --- internals ----------------------------------------------------------------------------


class _Heartbeat(threading.Thread):
    """Extends the lease every lease/3 seconds until stopped or the lease is lost."""

    def __init__(self, settings: Settings, job_id: int, token: str, lost: threading.Event) -> None:
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self.settings, self.job_id, self.token, self.lost = settings, job_id, token, lost
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = max(self.settings.job_lease_seconds / 3, 0.2)
        while not self._stop_event.wait(interval):
            try:
                if not _beat(self.settings, self.job_id, self.token, None, None):
                    self.lost.set()
                    return
            except Exception:  # the database blinked; the next beat may succeed
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _beat(settings: Settings, job_id: int, token: str, progress: float | None,
          message: str | None) -> bool:
    with session_scope(settings) as session:
        return heartbeat(session, job_id, token, progress=progress, message=message,
                         lease_seconds=settings.job_lease_seconds)


def _close_attempts(session: Session, job_id: int, outcome: str, token: str | None = None) -> None:
    """Set the outcome of open attempt rows (ours when token is given, else all others)."""
    condition = [JobAttempt.job_id == job_id, JobAttempt.outcome.is_(None)]
    if token is not None:
        condition.append(JobAttempt.lease_token == token)
    session.exec(update(JobAttempt).where(*condition).values(outcome=outcome)
                 .execution_options(synchronize_session=False))


def _unstamp(settings: Settings, job_ids: list[int], stamp: datetime) -> None:
    if not job_ids:
        return
    try:
        with session_scope(settings) as session:
            session.exec(update(Job).where(Job.id.in_(job_ids), Job.enqueued_at == stamp)
                         .values(enqueued_at=None).execution_options(synchronize_session=False))
    except sa_exc.SQLAlchemyError:
        log.exception("job dispatch: could not clear enqueued_at; jobs wait for the redispatch delay")


_senders: dict[str, Any] = {}
_senders_lock = threading.Lock()
# A forked process must not share its parent's broker connections.
os.register_at_fork(after_in_child=_senders.clear)


def _sender(settings: Settings) -> Any:
    """A Celery app used only to send messages by task name (core cannot import the worker)."""
    from celery import Celery

    config = celery_config(settings)
    with _senders_lock:
        app = _senders.get(config["broker_url"])
        if app is None:
            app = Celery("authops-sender", set_as_current=False)
            app.conf.update(config)
            _senders[config["broker_url"]] = app
        return app
