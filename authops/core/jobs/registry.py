"""Job kinds: `@job_handler("kind")` maps a kind to `fn(session, job, ctx) -> dict`."""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from authops.core.errors import Conflict, InvalidInput
from authops.core.jobs.models import Job

# Modules whose import registers handlers. The worker imports all of them so it knows
# every kind; areas append their own `tasks.py` here when they add kinds. Importing
# upward from core is deliberate and only for handler discovery (like models_registry).
HANDLER_MODULES: list[str] = [
    "authops.core.jobs.registry",
    "authops.platform.catalog.tasks",
    "authops.platform.sandbox.jobs",
    "authops.platform.products.tasks",
]


class LeaseLost(Conflict):
    """The job's lease is no longer ours (expired and re-claimed, or cancelled)."""

    code = "lease_lost"


@dataclass
class JobContext:
    """What a handler gets besides its session and job: progress reporting and the lease."""

    job_id: int
    lease_token: str
    # Writes progress and extends the lease in its own short transaction; False = lease lost.
    report: Callable[[float, str], bool]
    lost: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0..1); raises LeaseLost when the job is no longer ours, so we stop."""
        if self.lost.is_set() or not self.report(min(max(float(fraction), 0.0), 1.0), message[:500]):
            self.lost.set()
            raise LeaseLost(f"job {self.job_id} lost its lease (expired, re-claimed or cancelled)")


Handler = Callable[[Session, Job, JobContext], dict[str, Any]]

_handlers: dict[str, Handler] = {}
_loaded = False
_load_lock = threading.Lock()


# Called as observer(session, job_id, outcome) inside the transaction that changes a job's
# state ("succeeded", "failed", "retry", "cancelled"): higher layers (the audit log) observe without core
# importing them.
JobObserver = Callable[[Session, int, str], None]
observers: list[JobObserver] = []


def observe(observer: JobObserver) -> None:
    if observer not in observers:
        observers.append(observer)


def notify(session: Session, job_id: int, outcome: str) -> None:
    for observer in list(observers):
        observer(session, job_id, outcome)


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register `fn(session, job, ctx) -> dict` as the handler of `kind`."""
    if not kind or len(kind) > 64:
        raise ValueError(f"job kind must be 1..64 characters, got {kind!r}")

    def register(fn: Handler) -> Handler:
        existing = _handlers.get(kind)
        # Re-importing the same module (reloads, tests) re-registers the same function.
        if existing is not None and (existing.__module__, existing.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ValueError(f"job kind {kind!r} is already handled by "
                             f"{existing.__module__}.{existing.__qualname__}")
        _handlers[kind] = fn
        return fn

    return register


def load_handlers() -> None:
    """Import every module in HANDLER_MODULES (once) so all kinds are registered."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            for name in HANDLER_MODULES:
                importlib.import_module(name)
            _loaded = True


def known_kinds() -> list[str]:
    load_handlers()
    return sorted(_handlers)


def get_handler(kind: str) -> Handler:
    """The handler for `kind`, or InvalidInput naming it and listing the known kinds."""
    load_handlers()
    try:
        return _handlers[kind]
    except KeyError:
        raise InvalidInput(f"unknown job kind {kind!r}; known kinds: {', '.join(known_kinds())}",
                           details={"kind": kind, "known_kinds": known_kinds()}) from None


# --- built-in kinds, for operations and tests -------------------------------------------


def _number(params: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise InvalidInput(f"parameter {name!r} must be a number between {low:g} and {high:g}")
    return float(value)


@job_handler("system.sleep")
def sleep_handler(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """Sleep `seconds` in `steps` steps, reporting progress after each."""
    seconds = _number(job.params, "seconds", 1.0, 0.0, 3600.0)
    steps = int(_number(job.params, "steps", 1, 1, 1000))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.progress(step / steps, f"step {step}/{steps}")
    return {"slept": job.params.get("seconds", 1.0)}


@job_handler("system.echo")
def echo_handler(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    """Return the parameters unchanged."""
    return dict(job.params)
