"""`authops jobs`: list background jobs, watch one with a progress bar, cancel one.

Two ways to reach the jobs:
  * over the HTTP API, with --url / AUTHOPS_API_URL and --api-key / AUTHOPS_API_KEY
    (an API key or a session token, sent as `Authorization: Bearer ...`): the caller's
    organisation's jobs, through GET /api/v1/jobs, GET /api/v1/jobs/{id}, POST .../cancel;
  * without a URL, straight from the database of AUTHOPS_DATABASE_URL: every organisation's
    jobs, for an operator on the server.

Times are stored as naive UTC and shown in Asia/Shanghai.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Optional, Protocol

import typer

jobs_app = typer.Typer(help="Background jobs: list, watch with a progress bar, cancel.",
                       no_args_is_help=True)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = {"succeeded", "failed", "cancelled"}
TZ_NAME = "Asia/Shanghai"
API_PREFIX = "/api/v1"
MAX_JOB_ID = 2**31 - 1  # the id column is a 32-bit INTEGER; PostgreSQL refuses larger values


class JobsError(Exception):
    """A problem to tell the user in one line (no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _clean(text: Any) -> str:
    """One line, no control characters (job text must not drive the terminal)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text or "")).strip()


# --- what we show of a job ------------------------------------------------------------------


@dataclass
class JobView:
    id: int
    kind: str
    state: str
    progress: float = 0.0
    message: str = ""
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def percent(self) -> int:
        return round(min(max(self.progress or 0.0, 0.0), 1.0) * 100)

    @classmethod
    def from_api(cls, body: Any) -> "JobView":
        if not isinstance(body, dict) or "id" not in body or "state" not in body:
            raise JobsError("the API answered something that is not a job; check --url")
        known = {"id", "kind", "state", "progress", "message", "error_code", "error_message", "attempts",
                 "result", "created_at", "started_at", "finished_at"}
        return cls(id=int(body["id"]), kind=str(body.get("kind") or ""), state=str(body["state"]),
                   progress=float(body.get("progress") or 0.0), message=body.get("message") or "",
                   error_code=body.get("error_code"), error_message=body.get("error_message"),
                   attempts=int(body.get("attempts") or 0), result=body.get("result"),
                   created_at=_parse_time(body.get("created_at")),
                   started_at=_parse_time(body.get("started_at")),
                   finished_at=_parse_time(body.get("finished_at")),
                   extra={k: v for k, v in body.items() if k not in known})

    @classmethod
    def from_row(cls, job: Any) -> "JobView":
        state = getattr(job.state, "value", job.state)
        return cls(id=job.id, kind=job.kind, state=str(state), progress=job.progress or 0.0,
                   message=job.message or "", error_code=job.error_code, error_message=job.error_message,
                   attempts=job.attempts, result=job.result, created_at=job.created_at,
                   started_at=job.started_at, finished_at=job.finished_at)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _show_time(dt: datetime | None) -> str:
    from authops.core.clock import show

    return show(dt) if dt is not None else "-"


# --- where the jobs come from ---------------------------------------------------------------


class JobSource(Protocol):
    def list(self, *, state: str | None, limit: int) -> list[JobView]: ...

    def get(self, job_id: int) -> JobView: ...

    def cancel(self, job_id: int) -> JobView: ...

    def close(self) -> None: ...


def api_base(url: str) -> str:
    """http://host:8000, http://host:8000/ and http://host:8000/api/v1 all mean the same API."""
    base = url.strip().rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        raise JobsError(f"--url must start with http:// or https:// (got {url!r})")
    if not base.endswith(API_PREFIX):
        base += API_PREFIX
    return base


class HttpJobs:
    """The generic jobs routes of a running authops API."""

    def __init__(self, url: str, api_key: str, *, transport: Any = None, timeout: float = 15.0) -> None:
        import httpx

        self.base = api_base(url)
        key = api_key.strip()
        if not key:
            raise JobsError("the API key is empty: pass --api-key or set AUTHOPS_API_KEY")
        if not key.isascii() or not key.isprintable() or " " in key:
            raise JobsError("the API key contains characters no key has; check --api-key / AUTHOPS_API_KEY")
        self._httpx = httpx
        self.client = httpx.Client(base_url=self.base, transport=transport, timeout=timeout,
                                   headers={"Authorization": f"Bearer {key}",
                                            "Accept": "application/json", "User-Agent": "authops-cli"})

    def _call(self, method: str, path: str, **params: Any) -> Any:
        httpx = self._httpx
        try:
            r = self.client.request(method, path, params=params or None)
        except httpx.TimeoutException:
            raise JobsError(f"the API at {self.base} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise JobsError(f"cannot reach the API at {self.base} ({type(exc).__name__}: {exc}); "
                            "check --url / AUTHOPS_API_URL") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("message"):
                message = _clean(error["message"])
                raise JobsError(message if r.status_code < 500 else f"the API failed: {message}")
            raise JobsError(f"the API at {self.base} answered HTTP {r.status_code} without an authops "
                            "error; check --url")
        if body is None:
            raise JobsError(f"the API at {self.base} did not answer with JSON; check --url")
        return body

    def list(self, *, state: str | None, limit: int) -> list[JobView]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        body = self._call("GET", "/jobs", **params)
        if not isinstance(body, list):
            raise JobsError("the API answered something that is not a list of jobs; check --url")
        return [JobView.from_api(item) for item in body]

    def get(self, job_id: int) -> JobView:
        return JobView.from_api(self._call("GET", f"/jobs/{job_id}"))

    def cancel(self, job_id: int) -> JobView:
        return JobView.from_api(self._call("POST", f"/jobs/{job_id}/cancel"))

    def close(self) -> None:
        self.client.close()


class LocalJobs:
    """The job table of this server's database (every organisation's jobs)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def _run(self, fn):
        from sqlalchemy.exc import SQLAlchemyError

        from authops.core.db import session_scope
        from authops.core.errors import AuthopsError

        try:
            with session_scope(self.settings) as session:
                return fn(session)
        except AuthopsError as exc:
            raise JobsError(exc.message) from None
        except SQLAlchemyError as exc:
            raise JobsError(f"cannot use the job table ({type(exc).__name__}) in the database at "
                            f"{_safe_url(self.settings.effective_database_url)}; is it up and migrated "
                            "(`authops db upgrade`)? To use a remote API instead, pass --url") from None

    def list(self, *, state: str | None, limit: int) -> list[JobView]:
        from sqlalchemy import select

        from authops.core.jobs.models import Job

        def go(session):
            stmt = select(Job).order_by(Job.id.desc()).limit(limit)
            if state:
                stmt = stmt.where(Job.state == state)
            return [JobView.from_row(job) for job in session.exec(stmt).scalars().all()]

        return self._run(go)

    def get(self, job_id: int) -> JobView:
        from authops.core.jobs import service

        return self._run(lambda session: JobView.from_row(service.get_job(session, job_id)))

    def cancel(self, job_id: int) -> JobView:
        from authops.audit import log as audit_log
        from authops.core.jobs import service

        def go(session):
            job = service.cancel_job(session, job_id)
            audit_log.record(session, audit_log.Actor(kind="system", name="cli", org_id=job.org_id),
                             "job.cancel", object_type="job", object_id=job.id)
            return JobView.from_row(job)

        return self._run(go)

    def close(self) -> None:
        pass


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return "(unparsable URL)"


def open_source(url: str | None, api_key: str | None) -> JobSource:
    if url and url.strip():
        if not api_key:
            raise JobsError("the API needs a key: pass --api-key or set AUTHOPS_API_KEY "
                            "(an API key with job.read / job.submit, or a session token)")
        return HttpJobs(url, api_key)
    if api_key:
        raise JobsError("an API key was given but no API URL: pass --url or set AUTHOPS_API_URL "
                        "(or unset AUTHOPS_API_KEY to read this server's database)")
    from authops.core.settings import get_settings

    return LocalJobs(get_settings())


UrlOption = Annotated[Optional[str], typer.Option(
    "--url", envvar="AUTHOPS_API_URL", show_default=False,
    help="The authops API, e.g. http://127.0.0.1:8000 (without it: this server's database)")]
KeyOption = Annotated[Optional[str], typer.Option(
    "--api-key", envvar="AUTHOPS_API_KEY", show_default=False,
    help="API key or session token for --url, sent as a Bearer token")]
JobIdArgument = Annotated[int, typer.Argument(min=1, help="The job's id", show_default=False)]


def _with_source(url: str | None, api_key: str | None, fn, *, job_id: int | None = None):
    if job_id is not None and job_id > MAX_JOB_ID:
        _fail(f"job {job_id} not found")  # no such id can exist; don't make the database refuse it
    try:
        source = open_source(url, api_key)
    except JobsError as exc:
        _fail(exc.message)
    try:
        return fn(source)
    except JobsError as exc:
        _fail(exc.message)
    finally:
        source.close()


# --- list --------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    state: Annotated[Optional[str], typer.Option(
        help="Only jobs in this state: queued, running, succeeded, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first")] = 50,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List jobs, newest first, with state, progress and current stage (times in Asia/Shanghai)."""
    if state is not None:
        state = state.strip().lower()
        if state not in STATES:
            _fail(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    jobs = _with_source(url, api_key, lambda source: source.list(state=state, limit=limit))
    if not jobs:
        typer.echo(f"no {state} jobs" if state else "no jobs")
        return
    headers = ("ID", "KIND", "STATE", "PROGRESS", f"CREATED ({TZ_NAME})", "FINISHED", "STAGE / ERROR")
    rows = [(str(j.id), _clean(j.kind), j.state, f"{j.percent}%", _show_time(j.created_at),
             _show_time(j.finished_at),
             f"{j.error_code}: {_clean(j.error_message)}" if j.state == "failed" and j.error_code
             else _clean(j.message)) for j in jobs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    for line in (headers, *rows):
        cells = [c.rjust(w) if i in (0, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        typer.echo("  ".join([*cells, line[-1]]).rstrip())


# --- watch --------------------------------------------------------------------------------------


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _plain_watch(job: JobView, poll) -> JobView:
    """One line per change of (state, percent, stage): for CI logs and pipes."""
    last = None
    while True:
        seen = (job.state, job.percent, _clean(job.message))
        if seen != last:
            typer.echo(f"job {job.id}: {job.state} {job.percent}%" + (f" {seen[2]}" if seen[2] else ""))
            last = seen
        if job.state in TERMINAL:
            return job
        job = poll(job)


def _bar_watch(job: JobView, poll) -> JobView:
    from rich.console import Console
    from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn)

    console = Console(file=sys.stdout)
    columns = (SpinnerColumn(finished_text="•"),
               TextColumn(f"job {job.id} " + "{task.fields[state]:<9}", markup=False),
               BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}", markup=False))
    with Progress(*columns, console=console, refresh_per_second=8) as bar:
        task = bar.add_task(_clean(job.message), total=100, completed=job.percent, state=job.state)
        while True:
            bar.update(task, description=_clean(job.message), completed=job.percent, state=job.state)
            if job.state in TERMINAL:
                bar.stop_task(task)
                return job
            job = poll(job)


@jobs_app.command("watch")
def jobs_watch(
    job_id: JobIdArgument,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls")] = 0.5,
    timeout: Annotated[Optional[float], typer.Option(
        min=0, help="Give up after this many seconds (exit 1); the job itself goes on")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Follow a job until it ends: a live progress bar with its stage (plain lines when not a terminal).

    Exit code 0 when it succeeded; 1 when it failed or was cancelled, or on --timeout.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def follow(source: JobSource) -> JobView:
        def poll(job: JobView) -> JobView:
            wait = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _TimedOut(job)
                wait = min(interval, left)
            time.sleep(wait)
            return source.get(job_id)

        first = source.get(job_id)
        return (_bar_watch if _stdout_is_tty() else _plain_watch)(first, poll)

    try:
        job = _with_source(url, api_key, follow, job_id=job_id)
    except _TimedOut as stop:
        j = stop.job
        _fail(f"gave up watching job {j.id} after {timeout:g} s: it is still {j.state} at {j.percent}% "
              "(the job itself goes on)")
    except KeyboardInterrupt:
        typer.echo("", err=True)
        _fail(f"stopped watching job {job_id}; the job itself goes on", code=130)
    when = f" at {_show_time(job.finished_at)} ({TZ_NAME})" if job.finished_at else ""
    if job.state == "succeeded":
        typer.secho(f"job {job.id} succeeded{when}", fg="green")
        return
    typer.secho(f"job {job.id} {job.state}{when}", fg="red" if job.state == "failed" else "yellow")
    if job.state == "failed":
        _fail(f"{job.error_code or 'unknown_error'}: {_clean(job.error_message) or 'no message recorded'}")
    raise typer.Exit(1)


class _TimedOut(Exception):
    def __init__(self, job: JobView) -> None:
        super().__init__(job.id)
        self.job = job


# --- cancel -------------------------------------------------------------------------------------


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobIdArgument, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel a queued or running job (a running handler's result is then refused)."""
    job = _with_source(url, api_key, lambda source: source.cancel(job_id), job_id=job_id)
    typer.echo(f"job {job.id} {job.state}")
