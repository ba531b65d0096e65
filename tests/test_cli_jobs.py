"""`authops jobs list | watch | cancel`, on the local database and over a running HTTP API.

A helper thread plays the worker (claim, heartbeat with progress and stage, finish) and waits
until the watcher has seen each stage before moving on, so no stage can be skipped by timing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from authops import cli_jobs
from authops.audit.models import AuditEvent
from authops.cli import app as cli
from authops.core.clock import to_shanghai
from authops.core.db import session_scope
from authops.core.errors import InvalidInput
from authops.core.identity import OrgKind
from authops.core.jobs import service
from authops.core.jobs.models import Job
from authops.core.settings import Settings
from authops.platform import bootstrap
from tests.support.builders import make_org

STAGES = [(0.25, "reading rows"), (0.75, "writing result")]
FAST = ["--interval", "0.05", "--timeout", "30"]


@pytest.fixture(autouse=True)
def _no_api_env(monkeypatch):
    monkeypatch.delenv("AUTHOPS_API_URL", raising=False)
    monkeypatch.delenv("AUTHOPS_API_KEY", raising=False)


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["jobs", *args], env=env)


def new_job(settings: Settings, *, org_id: int | None = None, kind: str = "system.echo") -> int:
    with session_scope(settings) as s:
        return service.create_job(s, kind=kind, params={}, org_id=org_id).id  # type: ignore[return-value]


def fail_job(settings: Settings, job_id: int) -> None:
    with session_scope(settings) as s:
        token = service.claim(s, job_id, "test-worker")
        assert token
        service.fail(s, job_id, token, InvalidInput("parameter 'column' names no column of the dataset"))


def state_of(settings: Settings, job_id: int) -> str:
    with session_scope(settings) as s:
        return s.get(Job, job_id).state


class Seen:
    """Wraps a source's get(): records each stage the watcher fetched, so a worker can wait on it."""

    def __init__(self, monkeypatch, source_cls: type) -> None:
        self.messages: list[str] = []
        self.cond = threading.Condition()
        original = source_cls.get

        def get(source, job_id):
            job = original(source, job_id)
            with self.cond:
                self.messages.append(job.message)
                self.cond.notify_all()
            return job

        monkeypatch.setattr(source_cls, "get", get)

    def wait_for(self, message: str, timeout: float = 20) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: message in self.messages, timeout), \
                f"the watcher never fetched stage {message!r}"


class Worker(threading.Thread):
    """Claims the job, reports each stage once the watcher saw the previous one, then finishes."""

    def __init__(self, settings: Settings, job_id: int, seen: Seen) -> None:
        super().__init__(daemon=True)
        self.settings, self.job_id, self.seen = settings, job_id, seen
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.seen.wait_for("")  # the watcher has started (queued job, empty stage)
            with session_scope(self.settings) as s:
                token = service.claim(s, self.job_id, "test-worker")
                assert token
            for progress, message in STAGES:
                with session_scope(self.settings) as s:
                    assert service.heartbeat(s, self.job_id, token, progress=progress, message=message)
                self.seen.wait_for(message)
            with session_scope(self.settings) as s:
                service.finish(s, self.job_id, token, result={"rows": 3})
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            self.error = exc

    def check(self) -> None:
        self.join(timeout=30)
        assert not self.is_alive()
        if self.error:
            raise self.error


def assert_stages_shown(output: str, job_id: int) -> None:
    lines = output.splitlines()
    assert f"job {job_id}: queued 0%" in lines
    assert f"job {job_id}: running 25% reading rows" in lines
    assert f"job {job_id}: running 75% writing result" in lines
    assert f"job {job_id}: succeeded 100% writing result" in lines
    assert lines[-1].startswith(f"job {job_id} succeeded at ") and lines[-1].endswith("(Asia/Shanghai)")
    assert len(lines) == len(set(lines)), "one line per change, no repeats"


# --- local database (an operator on the server) ------------------------------------------------


def test_list_shows_jobs_newest_first_in_shanghai_time(db_settings):
    first = new_job(db_settings, org_id=1)
    failed = new_job(db_settings, org_id=2, kind="system.sleep")
    fail_job(db_settings, failed)
    r = run("list")
    assert r.exit_code == 0, r.output
    header, *rows = r.output.splitlines()
    assert "CREATED (Asia/Shanghai)" in header
    assert [row.split()[0] for row in rows] == [str(failed), str(first)]
    assert "system.sleep" in rows[0] and "failed" in rows[0] and "invalid_input: parameter" in rows[0]
    assert "system.echo" in rows[1] and "queued" in rows[1] and "0%" in rows[1]
    with session_scope(db_settings) as s:
        created = s.get(Job, first).created_at
    assert to_shanghai(created).strftime("%Y-%m-%d %H:%M") in rows[1]

    only_failed = run("list", "--state", "failed", "--limit", "5")
    assert only_failed.exit_code == 0 and len(only_failed.output.splitlines()) == 2
    assert run("list", "--state", "running").output.strip() == "no running jobs"
    bad = run("list", "--state", "sleeping")
    assert bad.exit_code == 1 and "unknown state 'sleeping'" in bad.output and "Traceback" not in bad.output


def test_watch_prints_each_stage_and_exits_0(db_settings, monkeypatch):
    job_id = new_job(db_settings)
    worker = Worker(db_settings, job_id, Seen(monkeypatch, cli_jobs.LocalJobs))
    worker.start()
    r = run("watch", str(job_id), *FAST)
    worker.check()
    assert r.exit_code == 0, r.output
    assert_stages_shown(r.output, job_id)


def test_watch_of_a_failed_job_exits_1_with_the_error(db_settings):
    job_id = new_job(db_settings)
    fail_job(db_settings, job_id)
    r = run("watch", str(job_id), *FAST)
    assert r.exit_code == 1
    assert f"job {job_id} failed at " in r.stdout
    assert "error: invalid_input: parameter 'column' names no column of the dataset" in r.stderr


def test_watch_gives_up_at_the_timeout(db_settings):
    job_id = new_job(db_settings)
    started = time.monotonic()
    r = run("watch", str(job_id), "--interval", "0.05", "--timeout", "0.3")
    assert r.exit_code == 1 and time.monotonic() - started < 5
    assert f"gave up watching job {job_id} after 0.3 s: it is still queued at 0%" in r.stderr


def test_watch_of_an_unknown_job_is_a_clear_error(db_settings):
    r = run("watch", "4242", *FAST)
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: job 4242 not found"
    assert "Traceback" not in r.output
    assert run("watch", "seven").exit_code == 2  # not a number: a usage error, not a traceback
    # Beyond the 32-bit id column (PostgreSQL would refuse the query): still just "not found".
    for command in ("watch", "cancel"):
        assert run(command, "99999999999").stderr.strip() == "error: job 99999999999 not found"


def test_cancel_a_queued_job(db_settings):
    job_id = new_job(db_settings, org_id=3)
    r = run("cancel", str(job_id))
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"job {job_id} cancelled"
    assert state_of(db_settings, job_id) == "cancelled"
    with session_scope(db_settings) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "job.cancel")).scalars().one()
    assert (event.object_id, event.actor_name, event.org_id) == (str(job_id), "cli", 3)

    again = run("cancel", str(job_id))
    assert again.exit_code == 1 and f"job {job_id} is already cancelled" in again.stderr
    watched = run("watch", str(job_id), *FAST)
    assert watched.exit_code == 1 and f"job {job_id} cancelled" in watched.stdout
    assert run("cancel", "4242").stderr.strip() == "error: job 4242 not found"


def test_watch_on_a_terminal_draws_a_progress_bar(db_settings, monkeypatch):
    monkeypatch.setattr(cli_jobs, "_stdout_is_tty", lambda: True)
    job_id = new_job(db_settings)
    worker = Worker(db_settings, job_id, Seen(monkeypatch, cli_jobs.LocalJobs))
    worker.start()
    r = run("watch", str(job_id), *FAST)
    worker.check()
    assert r.exit_code == 0, r.output
    assert "100%" in r.output and "writing result" in r.output  # the bar's last frame
    assert f"job {job_id}: running" not in r.output  # no plain lines
    assert f"job {job_id} succeeded at " in r.output


def test_a_key_without_a_url_is_refused(db_settings):
    r = run("list", env={"AUTHOPS_API_KEY": "ak_x_y"})
    assert r.exit_code == 1 and "no API URL" in r.stderr


# --- over the HTTP API ----------------------------------------------------------------------------


@pytest.fixture
def api_url(app) -> Iterator[str]:
    """The application served by uvicorn on a free local port, in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def partner(db_settings, session) -> dict[str, Any]:
    """A partner organisation with an API key allowed to read and cancel its jobs."""
    org = make_org(session, OrgKind.PARTNER)
    other = make_org(session, OrgKind.PARTNER)
    session.commit()
    key = bootstrap.create_org_api_key(db_settings, org_code=org.code, name="ci", ttl_days=30,
                                       scopes=["job.read", "job.submit"])
    return {"org_id": org.id, "other_org_id": other.id, "key": key}


def test_http_list_watch_and_cancel(db_settings, api_url, partner, monkeypatch):
    env = {"AUTHOPS_API_URL": api_url, "AUTHOPS_API_KEY": partner["key"]}
    mine = new_job(db_settings, org_id=partner["org_id"])
    theirs = new_job(db_settings, org_id=partner["other_org_id"])
    to_cancel = new_job(db_settings, org_id=partner["org_id"])

    listed = run("list", env=env)
    assert listed.exit_code == 0, listed.output
    assert [row.split()[0] for row in listed.output.splitlines()[1:]] == [str(to_cancel), str(mine)]

    worker = Worker(db_settings, mine, Seen(monkeypatch, cli_jobs.HttpJobs))
    worker.start()
    watched = run("watch", str(mine), *FAST, env=env)
    worker.check()
    assert watched.exit_code == 0, watched.output
    assert_stages_shown(watched.output, mine)

    # Options work as well as the environment, and the URL may name the API root.
    cancelled = run("cancel", str(to_cancel), "--url", api_url + "/api/v1/", "--api-key", partner["key"])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.strip() == f"job {to_cancel} cancelled"
    assert state_of(db_settings, to_cancel) == "cancelled"
    again = run("cancel", str(to_cancel), env=env)
    assert again.exit_code == 1 and again.stderr.strip() == f"error: job {to_cancel} is already cancelled"

    # Another organisation's job does not exist for this key.
    for command in ("watch", "cancel"):
        r = run(command, str(theirs), env=env)
        assert r.exit_code == 1 and r.stderr.strip() == f"error: job {theirs} not found", r.output
    assert state_of(db_settings, theirs) == "queued"


def test_http_failed_job_and_errors_are_one_line(db_settings, api_url, partner):
    env = {"AUTHOPS_API_URL": api_url, "AUTHOPS_API_KEY": partner["key"]}
    job_id = new_job(db_settings, org_id=partner["org_id"])
    fail_job(db_settings, job_id)
    failed = run("watch", str(job_id), *FAST, env=env)
    assert failed.exit_code == 1
    assert "error: invalid_input: parameter 'column' names no column" in failed.stderr

    def error_of(r) -> str:
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        return r.stderr.strip()

    assert error_of(run("watch", "4242", env=env)) == "error: job 4242 not found"
    assert error_of(run("list", env={**env, "AUTHOPS_API_KEY": "ak_000000000000_nope"})) == \
        "error: unknown API key"
    assert error_of(run("list", env={**env, "AUTHOPS_API_KEY": "ak_short_nope"})) == \
        "error: malformed API key: expected ak_<prefix>_<secret>"
    assert "--api-key" in error_of(run("list", env={"AUTHOPS_API_URL": api_url}))
    assert "http://" in error_of(run("list", env={**env, "AUTHOPS_API_URL": "localhost:1"}))


def test_http_unreachable_api_is_a_clear_error(closed_port_url):
    r = run("watch", "1", env={"AUTHOPS_API_URL": closed_port_url, "AUTHOPS_API_KEY": "ak_a_b"})
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"error: cannot reach the API at {closed_port_url}/api/v1")


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
