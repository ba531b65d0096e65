"""Start and stop real Celery worker subprocesses for tests, and find their pool processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from celery import Celery

from authops.core.broker import ensure_broker
from authops.core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def broker_url_for(env: dict[str, str]) -> str:
    """The broker a worker started with `env` will use (starting the embedded one if needed)."""
    if env.get("AUTHOPS_BROKER_URL"):
        return env["AUTHOPS_BROKER_URL"]
    return ensure_broker(Settings(data_dir=Path(env["AUTHOPS_DATA_DIR"]), broker_url=""))


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment (the AUTHOPS_* variables tests set) plus `extra`."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def pool_children(pid: int) -> list[int]:
    """Pids of the direct children of `pid` (a prefork worker's pool processes), via /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return sorted(children)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _wait_ready(proc: subprocess.Popen[bytes], name: str, broker_url: str, log_path: Path,
                timeout: float) -> None:
    app = Celery("authops-test-ping", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = 2.0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}:\n{tail(log_path)}")
            with contextlib.suppress(Exception):
                replies = app.control.ping(timeout=1.0)
                if any(key.startswith(f"{name}@") for reply in replies for key in reply):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"worker {name} not ready after {timeout:.0f} s:\n{tail(log_path)}")
    finally:
        app.close()


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL the worker's whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # The group is the one we created for this worker (start_new_session): pool leftovers.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def running_worker(env: dict[str, str], concurrency: int = 2, *, name: str | None = None,
                   ready_timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """A ready `celery worker` subprocess with `env`; stopped (with its children) on exit."""
    name = name or f"test-{uuid.uuid4().hex[:8]}"
    env = worker_env(env)
    log_dir = Path(env.get("AUTHOPS_DATA_DIR", REPO_ROOT / ".authops"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{name}.log"
    cmd = [sys.executable, "-m", "celery", "-A", "authops.worker:celery_app", "worker",
           "--loglevel=WARNING", f"--concurrency={concurrency}", "--pool=prefork", "-n", f"{name}@%h",
           "--without-mingle", "--without-gossip"]  # as run_worker: saves a second at startup
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]  # for failure messages
    try:
        _wait_ready(proc, name, broker_url_for(env), log_path, ready_timeout)
        yield proc
    finally:
        stop_worker(proc)
