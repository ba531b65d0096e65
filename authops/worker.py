"""The Celery worker: one task that runs a job by id, plus the in-worker maintenance loop.

Start with `authops worker` (run_worker) or
`python -m celery -A authops.worker:celery_app worker --pool=prefork`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery, signals

from authops.audit import log as audit_log
from authops.audit.checkpoints import checkpoint_now
from authops.core import db as core_db
from authops.core.broker import JOB_QUEUE, RUN_JOB_TASK, celery_config
from authops.core.jobs import registry, service
from authops.core.jobs.models import Job
from authops.core.models_registry import import_all_models
from authops.core.settings import Settings, get_settings
from authops.platform.catalog import tasks as catalog_tasks
from authops.platform.governance import maintenance as governance_maintenance

log = logging.getLogger(__name__)

# Handlers may touch any table, and the worker must know every job kind.
import_all_models()
registry.load_handlers()

_settings_override: Settings | None = None


def _audit_job(session, job_id: int, outcome: str) -> None:
    """Every job's end is an audit event, in the same transaction as its effects."""
    job = session.get(Job, job_id)
    actor = audit_log.Actor(kind="system", name="worker", org_id=job.org_id if job else None)
    audit_log.record(session, actor, f"job.{outcome}", outcome="ok" if outcome == "succeeded" else "error",
                     object_type="job", object_id=job_id,
                     details={"kind": job.kind if job else None,
                              "error_code": job.error_code if job and outcome != "succeeded" else None})


registry.observe(_audit_job)


def current_settings() -> Settings:
    """The settings run_worker was given, else the environment's."""
    return _settings_override or get_settings()


celery_app = Celery("authops", set_as_current=False)
# Lazy: the broker URL (possibly starting the embedded broker) is resolved only when the
# configuration is first needed, not when this module is imported.
celery_app.add_defaults(lambda: celery_config(current_settings()))


@celery_app.task(name=RUN_JOB_TASK, bind=True, ignore_result=True)
def run_job(self: Any, job_id: int) -> str:
    """Run job `job_id` if it is ours to run; duplicates and stale messages are no-ops."""
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    outcome = service.run_job(current_settings(), int(job_id), worker=worker)
    log.info("job %s: %s", job_id, outcome)
    return outcome


# --- maintenance --------------------------------------------------------------------------
# Reaping expired leases and re-sending unsent or lost messages must happen somewhere.
# Rather than requiring a separate `celery beat` process (one more thing to deploy and keep
# unique), every worker's main process runs the loop in a thread: maintain() is built from
# conditional updates, so several workers doing it at once is harmless, and as long as any
# worker is alive, jobs keep moving.


class _Maintenance(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="authops-maintenance", daemon=True)
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        last_checkpoint = time.monotonic()
        while not self.stopping.wait(self.settings.maintenance_interval_seconds):
            try:
                counts = service.maintain(self.settings)
                counts["pulls_scheduled"] = catalog_tasks.schedule_due(self.settings)
                counts.update(governance_maintenance.run_due(self.settings))
                if any(counts.values()):
                    log.info("maintenance: %s", counts)
                if time.monotonic() - last_checkpoint >= self.settings.audit_checkpoint_seconds:
                    last_checkpoint = time.monotonic()
                    checkpoint_now(self.settings)  # several workers racing is harmless
            except Exception:  # keep looping: the database or broker may come back
                log.exception("maintenance pass failed")


_maintenance: _Maintenance | None = None


@signals.worker_ready.connect
def _start_maintenance(sender: Any = None, **_: Any) -> None:
    global _maintenance
    if sender is not None and getattr(sender, "app", celery_app) is not celery_app:
        return
    if _maintenance is None:
        _maintenance = _Maintenance(current_settings())
        _maintenance.start()


@signals.worker_shutdown.connect
def _stop_maintenance(**_: Any) -> None:
    if _maintenance is not None:
        _maintenance.stopping.set()
        _maintenance.join(timeout=10)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pool processes are forked from the main process, whose maintenance thread holds
    # database connections: drop the inherited pool without closing the parent's sockets.
    core_db.get_engine(current_settings()).dispose(close=False)


def run_worker(settings: Settings, *, concurrency: int = 2, loglevel: str = "INFO",
               queues: list[str] | None = None) -> None:
    """Run a prefork worker in this process until it is stopped (for `authops worker`)."""
    global _settings_override
    _settings_override = settings
    celery_app.conf.update(celery_config(settings))
    # Mingle and gossip synchronise revokes and cluster state between workers; we keep that
    # state in the job table, so they would only slow startup and add broker chatter.
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "--pool=prefork",
            f"--queues={','.join(queues or [JOB_QUEUE])}", "--without-mingle", "--without-gossip"]
    celery_app.worker_main(argv)
